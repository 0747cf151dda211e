"""A fake upstream adapter for unit tests of the engine and the access decision: jobs end
when a test says so, every call is recorded."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from sync_gateway.core.errors import UpstreamRejected, UpstreamUnavailable
from sync_gateway.core.types import Created, CreateRequest, Credentials, JobRef, Progress, Snapshot
from sync_gateway.upstream.base import Adapter

RUNNING = Snapshot(False, "in_progress", "started")


class FakeAdapter(Adapter):
    """Jobs that finish when :meth:`finish` is called; steps block like a long poll."""

    flavour = "fake"
    needs_route = False

    def __init__(self, name: str = "fake", allowed: Iterable[Credentials] = ()) -> None:
        self.name = name
        self.allowed = set(allowed)
        self.steps: list[str] = []
        self.cancels: list[str] = []
        self.access_checks: list[tuple[str, Credentials]] = []
        self.failures: dict[str, int] = {}
        self._done: dict[str, asyncio.Event] = {}
        self._final: dict[str, Snapshot] = {}
        self._created = 0

    def finish(self, job_id: str, state: str = "success", output: str = "done") -> None:
        doc = {"id": job_id, "state": state, "lifecycle": "finished", "output": [output]}
        self._final[job_id] = Snapshot(True, state, "finished", doc)
        self._event(job_id).set()

    def fail_next_steps(self, job_id: str, times: int) -> None:
        self.failures[job_id] = times

    def _event(self, job_id: str) -> asyncio.Event:
        return self._done.setdefault(job_id, asyncio.Event())

    async def create(self, request: CreateRequest) -> Created:
        self._created += 1
        ref = JobRef(self.name, f"job{self._created}")
        return Created(ref, RUNNING, 200, b"{}", "application/json")

    async def step(self, ref: JobRef, credentials: Credentials, timeout: float) -> Progress:
        self.steps.append(ref.id)
        if self.failures.get(ref.id, 0) > 0:
            self.failures[ref.id] -= 1
            raise UpstreamUnavailable("a passing failure")
        try:
            await asyncio.wait_for(self._event(ref.id).wait(), timeout)
        except TimeoutError:
            return Progress(RUNNING, long_polled=True)
        return Progress(self._final[ref.id], long_polled=True)

    async def check_access(self, ref: JobRef, credentials: Credentials) -> None:
        self.access_checks.append((ref.id, credentials))
        if credentials not in self.allowed:
            raise UpstreamRejected(401, b'{"message":"Unauthorized"}', "application/json")

    async def cancel(self, ref: JobRef, credentials: Credentials) -> int | None:
        self.cancels.append(ref.id)
        return 204
