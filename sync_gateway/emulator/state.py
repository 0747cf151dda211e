"""In-memory state of the emulator: jobs, request counters, injected faults."""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from .recipe import Customer, Recipe, Task, derived_id

FINAL_LIFECYCLES = frozenset({"finished", "completed", "terminated", "canceled", "expired"})
# What autoremove never deletes (service/job/index.js removeExceededJobsCountByTask).
KEPT_LIFECYCLES = frozenset({"locked", "syncing", "ready", "assigned", "onhold"})
ROUTE_KINDS = ("create", "result", "job", "list", "cancel")
EVENT_KINDS = ("autoremoved", "hung", "list_hidden")
FAULT_ACTIONS = frozenset({"status", "reset", "reset_after_create", "garbage", "slow"})

_counter = itertools.count(int.from_bytes(os.urandom(3), "big"))
_process_random = os.urandom(5)


def new_object_id() -> str:
    """A 24-hex id shaped like a MongoDB ObjectId (time, random, counter)."""
    ts = int(time.time()).to_bytes(4, "big")
    count = (next(_counter) & 0xFFFFFF).to_bytes(3, "big")
    return (ts + _process_random + count).hex()


def iso_now() -> str:
    """Now as JavaScript's ``Date.toISOString()`` prints it (ms precision, ``Z``)."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


@dataclass
class Job:
    """One job: its public document plus the runtime handles the emulator needs."""

    doc: dict[str, Any]
    task: Task
    customer: Customer
    created_at: float
    finished_at: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    process: asyncio.subprocess.Process | None = None
    runner: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None
    on_finish: Callable[[Job], None] | None = None
    seq: int = 0  # creation order

    @property
    def id(self) -> str:
        return str(self.doc["id"])

    @property
    def secret(self) -> str:
        return str(self.doc["secret"])

    @property
    def finished(self) -> bool:
        return self.doc["lifecycle"] in FINAL_LIFECYCLES

    def set_lifecycle(self, lifecycle: str) -> None:
        self.doc["lifecycle"] = lifecycle
        self.doc["last_update"] = iso_now()

    def finish(self, state: str, lifecycle: str, output: list[str], result: dict[str, Any]) -> None:
        """Record the final state once; later calls are ignored (first one wins)."""
        if self.finished:
            return
        self.doc["state"] = state
        self.doc["output"] = output
        self.doc["result"] = result
        self.doc["trigger_name"] = state
        self.set_lifecycle(lifecycle)
        self.finished_at = time.time()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.done.set()
        if self.on_finish is not None:
            self.on_finish(self)


@dataclass
class Fault:
    route: str
    count: int
    action: str = "status"
    status: int = 503
    retry_after: str | None = None
    body: str | None = None
    seconds: float = 0.0

    @classmethod
    def from_json(cls, data: Any) -> Fault:
        if not isinstance(data, dict):
            raise ValueError("a fault is a JSON object")
        route = data.get("route", "any")
        if route not in (*ROUTE_KINDS, "any"):
            raise ValueError("route must be create, result, job, cancel or any")
        action = data.get("action", "status")
        if action not in FAULT_ACTIONS:
            raise ValueError(f"action must be one of {sorted(FAULT_ACTIONS)}")
        count = data.get("count", 1)
        status = data.get("status", 503)
        seconds = data.get("seconds", 0)
        body = data.get("body")
        retry_after = data.get("retry_after")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError("count must be a positive integer")
        if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
            raise ValueError("status must be an integer 100..599")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise ValueError("seconds must be a non-negative number")
        if body is not None and not isinstance(body, str):
            body = orjson.dumps(body).decode()
        return cls(
            route=route,
            count=count,
            action=action,
            status=status,
            retry_after=None if retry_after is None else str(retry_after),
            body=body,
            seconds=float(seconds),
        )


class EmulatorState:
    """Everything that must survive a stop()/start() of the HTTP server."""

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.jobs: dict[str, Job] = {}
        self.timings: dict[str, tuple[float, float | None]] = {}
        self.faults: list[Fault] = []
        self.api_url = "http://127.0.0.1:60080"
        self.counts: Counter[str] = Counter()
        self.per_job: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.faults_consumed = 0
        self.closing = False  # set by kill_all(): runners kill what they spawn
        self.runners: set[asyncio.Task[None]] = set()  # script runners still going
        self.hanging = 0  # long polls that will never be answered, still open
        self._seq = itertools.count(1)  # jobs' creation order
        # Per task: every job in creation order (the order of their ObjectIds), and the
        # finished ones autoremove may delete.
        self.by_task: defaultdict[str, dict[str, Job]] = defaultdict(dict)
        self.finished_by_task: defaultdict[str, dict[str, Job]] = defaultdict(dict)

    # -- counters -------------------------------------------------------------------
    def event(self, kind: str, n: int = 1) -> None:
        """Count something the supervisor did on its own (``EVENT_KINDS``)."""
        self.counts[kind] += n

    def count(self, kind: str | None, job_id: str | None) -> None:
        self.counts["total"] += 1
        if kind in ROUTE_KINDS:
            self.counts[kind] += 1
            if job_id is not None and kind in ("result", "job"):
                self.per_job[job_id][kind] += 1

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: self.counts[k] for k in (*ROUTE_KINDS, "total")}
        out["faults"] = self.faults_consumed
        out["per_job"] = {
            jid: {"result": c["result"], "job": c["job"]} for jid, c in self.per_job.items()
        }
        out["jobs"] = len(self.jobs)
        out["running"] = sum(1 for j in self.jobs.values() if not j.finished)
        out.update({k: self.counts[k] for k in EVENT_KINDS})
        out["hanging"] = self.hanging
        return out

    def reset_stats(self) -> None:
        self.counts.clear()
        self.per_job.clear()
        self.faults_consumed = 0

    # -- faults ---------------------------------------------------------------------
    def take_fault(self, kind: str | None) -> Fault | None:
        for fault in self.faults:
            if fault.route == "any" or fault.route == kind:
                fault.count -= 1
                if fault.count <= 0:
                    self.faults.remove(fault)
                self.faults_consumed += 1
                return fault
        return None

    # -- jobs -----------------------------------------------------------------------
    def timing(self, job_id: str) -> tuple[float, float | None] | None:
        job = self.jobs.get(job_id)
        if job is not None:
            return (job.created_at, job.finished_at)
        return self.timings.get(job_id)

    def forget(self, job: Job) -> None:
        """Drop a job (read_once retention, autoremove); its timing stays available."""
        self.timings[job.id] = (job.created_at, job.finished_at)
        self.jobs.pop(job.id, None)
        self.by_task[job.task.id].pop(job.id, None)
        self.finished_by_task[job.task.id].pop(job.id, None)

    def _finished(self, job: Job) -> None:
        if job.id in self.jobs:
            self.finished_by_task[job.task.id][job.id] = job

    def autoremove(self, task_id: str, limit: int) -> list[str]:
        """``removeExceededJobsCountByTask`` (core/service/job/index.js), run on every create
        of the task: when the task has more than ``limit`` jobs, the newest ``limit`` of them
        (by ``_id``, whatever their lifecycle, the new one included) are kept and every older
        one that is not ready/assigned/onhold/syncing/locked is deleted. The ids deleted."""
        jobs = self.by_task.get(task_id)
        if not jobs or len(jobs) <= limit:
            return []
        # the limit-th newest job; deleting "_id < lastDoc._id" is deleting older ones
        *_, cutoff = itertools.islice(reversed(jobs.values()), limit)
        older = [
            job
            for job in self.finished_by_task[task_id].values()
            if job.seq < cutoff.seq and job.doc["lifecycle"] not in KEPT_LIFECYCLES
        ]
        for job in older:
            self.forget(job)
        self.event("autoremoved", len(older))
        return [job.id for job in older]

    def new_job(self, task: Task, args: list[Any], origin: str) -> Job:
        customer = self.recipe.customers[task.customer]
        job_id = new_object_id()
        now = iso_now()
        host_id = derived_id("host", "emulator")
        doc: dict[str, Any] = {
            "order": 0,
            "task_arguments_values": args,
            "show_result": False,
            "assigned_users": [],
            "user_inputs": False,
            "user_inputs_members": [],
            "acl": list(task.acl),
            "empty_viewers": False,
            "acl_dynamic": False,
            "cancellable": True,
            "default_state_evaluation": "success",
            "agent_logging": False,
            "_type": "ScriptJob",
            "creation_date": now,
            "last_update": now,
            "secret": secrets.token_hex(32),
            "output": [],
            "env": {
                "THEEYE_JOB": orjson.dumps({"id": job_id, "task_id": task.id}).decode(),
                "THEEYE_JOB_USER": "{}",
                "THEEYE_JOB_WORKFLOW": "{}",
                "THEEYE_ORGANIZATION_NAME": orjson.dumps(customer.name).decode(),
                "THEEYE_API_URL": orjson.dumps(self.api_url).decode(),
            },
            "task": {
                "id": task.id,
                "_type": "ScriptTask",
                "type": "script",
                "task_arguments": [],
                "output_parameters": [],
            },
            "task_id": task.id,
            "host_id": host_id,
            "host": {"_id": host_id, "hostname": "emulator", "id": host_id},
            "name": task.name,
            "allows_dynamic_settings": False,
            "customer_id": customer.id,
            "customer_name": customer.name,
            "state": "in_progress",
            "lifecycle": "ready",
            "notify": True,
            "origin": origin,
            "triggered_by": None,
            "script_id": task.script_id,
            "script_runas": task.runas,
            "timeout": int(task.timeout * 1000),
            "id": job_id,
            "user": {},
        }
        job = Job(doc=doc, task=task, customer=customer, created_at=time.time())
        job.seq = next(self._seq)
        job.on_finish = self._finished
        self.jobs[job_id] = job
        self.by_task[task.id][job_id] = job
        return job
