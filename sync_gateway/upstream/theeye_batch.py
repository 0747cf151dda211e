"""Watching many TheEye jobs with few requests and no connection each.

An upstream long poll holds a connection (a file descriptor and some 13 KB) for every job
watched. Past ``upstream.max_long_polls`` of them, jobs are watched through the supervisor's
job listing instead: one ``GET /{customer}/job?where[_id][$in][]=…&where[lifecycle][$in][]=…``
every ``upstream.poll_interval`` seconds asks which of up to ``upstream.list_batch`` jobs have
finished, for every job of the same customer and caller at once. A job seen finished is then
read once (``GET /{customer}/job/{id}``: the listing leaves ``output`` and ``result`` out), so
a job watched this way costs its create, its share of the listings and one read.

The listing is an accelerator, never the only truth: it hides jobs from callers below admin
(their ACL) and may fail. So each job is *verified* every ``upstream.verify_interval``
seconds: a round lists the jobs due without the lifecycle filter, and a job it shows is known
to be there and still running; a job it does not show (hidden, deleted) or a listing that
failed sends the job back to its watch, which reads it by its own request.

A job waiting here is one entry in its group's table: no task, frame or timer of its own.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import structlog

from sync_gateway.core.errors import GatewayError
from sync_gateway.core.types import FINAL_LIFECYCLES, Credentials, Snapshot
from sync_gateway.upstream.http import UpstreamClient

log = structlog.get_logger("sync_gateway.upstream.theeye")

_FINAL = sorted(FINAL_LIFECYCLES)
# Listings of one round in flight at once: thousands of watched jobs are answered within a
# round's interval, without a burst of hundreds of requests on the supervisor.
CONCURRENT_LISTINGS = 8

# What a listing tells a watch: the job as listed (state and lifecycle; finished or not), or
# None when it cannot vouch for the job (hidden, gone, the listing failed or was refused): the
# watch then reads the job by its own request.
Listed = Snapshot | None


def listing_params(
    ids: list[str], query: dict[str, str], finished_only: bool = True
) -> list[tuple[str, str]]:
    """The query of one listing: which of ``ids`` are in a final lifecycle (or, with
    ``finished_only`` false, which of them the upstream shows at all). With at most
    ``upstream.list_batch`` (200) ids it stays under the supervisor's limits: qs keeps 1,000
    parameters, Node refuses a request head past 16 KiB."""
    params = [("where[_id][$in][]", job_id) for job_id in ids]
    if finished_only:
        params += [("where[lifecycle][$in][]", lifecycle) for lifecycle in _FINAL]
    return params + list(query.items())


def _listed(doc: dict[str, Any]) -> Snapshot:
    lifecycle = str(doc.get("lifecycle") or "")
    return Snapshot(lifecycle in FINAL_LIFECYCLES, str(doc.get("state") or ""), lifecycle)


def _settle(future: asyncio.Future[Listed], value: Listed) -> None:
    if not future.done():
        future.set_result(value)


@dataclass(eq=False)
class _Group:
    """The jobs of one customer watched with one caller's credentials: for each, the future
    its watch waits on and when it is due for verification (loop time)."""

    customer: str
    credentials: Credentials
    pending: dict[str, tuple[asyncio.Future[Listed], float]] = field(default_factory=dict)


class BatchWatcher:
    """Answers "has this job finished?" for many jobs through shared listings."""

    def __init__(
        self, base: str, client: UpstreamClient, interval: float, batch: int, verify: float
    ) -> None:
        self.base = base
        self.client = client
        self.interval = interval
        self.batch = batch
        # Rounds come at least this often, so that no job waits for its verification much
        # past its due time; the lifecycle-filtered listings only every ``interval``.
        self.tick = min(interval, verify)
        self._groups: dict[tuple[str, bytes], _Group] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._listings = asyncio.Semaphore(CONCURRENT_LISTINGS)
        # Callers the upstream refuses to list for: their jobs are watched another way.
        self.refused: set[tuple[str, bytes]] = set()

    def can_list(self, customer: str, credentials: Credentials) -> bool:
        return (customer, credentials.identity()) not in self.refused

    def watch(
        self, customer: str, credentials: Credentials, job_id: str, verify_within: float
    ) -> asyncio.Future[Listed]:
        """A future of what a listing shows of the job: finished as soon as a round sees it
        so, and at the latest after ``verify_within`` seconds (the first round past it lists
        the job unfiltered). Cancelling it (the watch ended) takes the job out."""
        loop = asyncio.get_running_loop()
        key = (customer, credentials.identity())
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(customer, credentials)
            task = loop.create_task(self._run(key, group), name=f"list:{customer}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        future: asyncio.Future[Listed] = loop.create_future()
        earlier = group.pending.get(job_id)
        if earlier is not None:  # one entry per job: the earlier watch reads it itself
            _settle(earlier[0], None)
        group.pending[job_id] = (future, loop.time() + max(verify_within, 0.0))
        return future

    async def _run(self, key: tuple[str, bytes], group: _Group) -> None:
        loop = asyncio.get_running_loop()
        try:
            started = polled = loop.time()
            while group.pending:
                # Rounds are timed from their start: a long round does not delay the next.
                await asyncio.sleep(max(self.tick - (loop.time() - started), 0.0))
                started = loop.time()
                poll = started - polled >= self.interval - 1e-3
                if poll:
                    polled = started
                await self._round(key, group, started, poll)
        finally:
            # No await between the last look at `pending` and here: a job registered
            # meanwhile would find this group gone and start a new one.
            if self._groups.get(key) is group:
                del self._groups[key]
            for future, _ in group.pending.values():
                _settle(future, None)

    async def _round(self, key: tuple[str, bytes], group: _Group, now: float, poll: bool) -> None:
        """One round: the jobs due for verification listed unfiltered, the others (when
        ``poll``) asked whether they finished; each listing of at most ``list_batch`` ids."""
        due: list[str] = []
        rest: list[str] = []
        for job_id, (future, due_at) in list(group.pending.items()):
            if future.done():  # its watch ended (cancelled) or it was replaced
                del group.pending[job_id]
            elif due_at <= now:
                due.append(job_id)
            elif poll:
                rest.append(job_id)
        size = self.batch
        rounds = [(due[i : i + size], True) for i in range(0, len(due), size)]
        rounds += [(rest[i : i + size], False) for i in range(0, len(rest), size)]
        await asyncio.gather(*(self._batch(key, group, ids, v) for ids, v in rounds))

    async def _batch(
        self, key: tuple[str, bytes], group: _Group, ids: list[str], verify: bool
    ) -> None:
        """One listing (at most ``CONCURRENT_LISTINGS`` at once), and what it showed told to
        the jobs' watches: a verifying listing answers every job it asked about."""
        async with self._listings:
            seen = await self._list(key, group, ids, finished_only=not verify)
        for job_id in ids if verify else (seen or ()):
            entry = group.pending.get(job_id)
            if entry is None:
                continue
            listed = seen.get(job_id) if seen is not None else None
            if verify or (listed is not None and listed.finished):
                del group.pending[job_id]
                _settle(entry[0], listed)

    async def _list(
        self, key: tuple[str, bytes], group: _Group, ids: list[str], finished_only: bool
    ) -> dict[str, Snapshot] | None:
        """The jobs of ``ids`` one listing shows, by id; None when it cannot tell now."""
        query, headers = group.credentials.forwarded()
        params = listing_params(ids, query, finished_only)
        url = f"{self.base}/{quote(group.customer, safe='')}/job"
        try:
            resp = await self.client.request("list", "GET", url, params=params, headers=headers)
            if 400 <= resp.status < 500:
                self._refuse(key, group, resp.status)
                return None
            docs = resp.json() if resp.status == 200 else None
        except GatewayError as exc:
            log.warning("job_listing_failed", customer=group.customer, error=exc.code)
            return None
        if not isinstance(docs, list):
            log.warning("job_listing_unreadable", customer=group.customer)
            return None
        return {
            doc["id"]: _listed(doc)
            for doc in docs
            if isinstance(doc, dict) and isinstance(doc.get("id"), str)
        }

    def _refuse(self, key: tuple[str, bytes], group: _Group, status: int) -> None:
        """The upstream will not list for this caller: its jobs are watched another way."""
        log.warning("job_listing_refused", customer=group.customer, status=status)
        self.refused.add(key)
        for future, _ in group.pending.values():
            _settle(future, None)
        group.pending.clear()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
