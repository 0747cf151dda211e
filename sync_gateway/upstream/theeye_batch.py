"""Watching many TheEye jobs with few requests and no connection each.

An upstream long poll holds a connection (a file descriptor and some 13 KB) for every job
watched. Past ``upstream.max_long_polls`` of them, jobs are watched through the supervisor's
job listing instead: one ``GET /{customer}/job?where[_id][$in][]=…&where[lifecycle][$in][]=…``
every ``upstream.poll_interval`` seconds asks which of up to ``upstream.list_batch`` jobs have
finished, for every job of the same customer and caller at once. A job seen finished is then
read once (``GET /{customer}/job/{id}``), so a job watched this way costs its create, its share
of the listings and one read.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from urllib.parse import quote

import structlog

from sync_gateway.core.errors import GatewayError
from sync_gateway.core.types import FINAL_LIFECYCLES, Credentials
from sync_gateway.upstream.http import UpstreamClient

log = structlog.get_logger("sync_gateway.upstream.theeye")

_FINAL = sorted(FINAL_LIFECYCLES)
# Listings of one round in flight at once: thousands of watched jobs are answered within a
# round's interval, without a burst of hundreds of requests on the supervisor.
CONCURRENT_LISTINGS = 8


def listing_params(ids: list[str], query: dict[str, str]) -> list[tuple[str, str]]:
    """The query of one listing: which of ``ids`` are in a final lifecycle. With at most
    ``upstream.list_batch`` (200) ids it stays under the supervisor's limits: qs keeps 1,000
    parameters, Node refuses a request head past 16 KiB."""
    params = [("where[_id][$in][]", job_id) for job_id in ids]
    params += [("where[lifecycle][$in][]", lifecycle) for lifecycle in _FINAL]
    return params + list(query.items())


def _settle(future: asyncio.Future[bool | None], value: bool | None) -> None:
    if not future.done():
        future.set_result(value)


@dataclass(eq=False)
class _Group:
    """The jobs of one customer watched with one caller's credentials."""

    customer: str
    credentials: Credentials
    pending: dict[str, asyncio.Future[bool | None]] = field(default_factory=dict)


class BatchWatcher:
    """Answers "has this job finished?" for many jobs through shared listings."""

    def __init__(self, base: str, client: UpstreamClient, interval: float, batch: int) -> None:
        self.base = base
        self.client = client
        self.interval = interval
        self.batch = batch
        self._groups: dict[tuple[str, bytes], _Group] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._listings = asyncio.Semaphore(CONCURRENT_LISTINGS)
        # Callers the upstream refuses to list for: their jobs are watched another way.
        self.refused: set[tuple[str, bytes]] = set()

    def can_list(self, customer: str, credentials: Credentials) -> bool:
        return (customer, credentials.identity()) not in self.refused

    async def finished(
        self, customer: str, credentials: Credentials, job_id: str, timeout: float
    ) -> bool | None:
        """True when a listing shows the job finished within ``timeout``, False when none
        did, None when the upstream refused to list for this caller."""
        loop = asyncio.get_running_loop()
        key = (customer, credentials.identity())
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(customer, credentials)
            task = loop.create_task(self._run(key, group), name=f"list:{customer}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        future: asyncio.Future[bool | None] = loop.create_future()
        group.pending[job_id] = future
        timer = loop.call_later(max(timeout, 0.0), _settle, future, False)
        try:
            return await future
        finally:
            timer.cancel()
            if group.pending.get(job_id) is future:
                del group.pending[job_id]

    async def _run(self, key: tuple[str, bytes], group: _Group) -> None:
        loop = asyncio.get_running_loop()
        try:
            started = loop.time()
            while group.pending:
                # Rounds are timed from their start: a long round does not delay the next.
                await asyncio.sleep(max(self.interval - (loop.time() - started), 0.0))
                started = loop.time()
                ids = list(group.pending)
                batches = [ids[i : i + self.batch] for i in range(0, len(ids), self.batch)]
                await asyncio.gather(*(self._round(key, group, batch) for batch in batches))
        finally:
            # No await between the last look at `pending` and here: a job registered
            # meanwhile would find this group gone and start a new one.
            if self._groups.get(key) is group:
                del self._groups[key]
            for future in group.pending.values():
                _settle(future, None if key in self.refused else False)

    async def _round(self, key: tuple[str, bytes], group: _Group, ids: list[str]) -> None:
        """One listing of a batch (at most ``CONCURRENT_LISTINGS`` at once), and the jobs it
        shows finished told so."""
        async with self._listings:
            done = await self._list(key, group, ids)
        for job_id in done:
            future = group.pending.pop(job_id, None)
            if future is not None:
                _settle(future, True)

    async def _list(self, key: tuple[str, bytes], group: _Group, ids: list[str]) -> list[str]:
        """Which of ``ids`` have finished, by one listing; [] when it cannot tell now."""
        query, headers = group.credentials.forwarded()
        params = listing_params(ids, query)
        url = f"{self.base}/{quote(group.customer, safe='')}/job"
        try:
            resp = await self.client.request("list", "GET", url, params=params, headers=headers)
            if 400 <= resp.status < 500:
                self._refuse(key, group, resp.status)
                return []
            docs = resp.json() if resp.status == 200 else None
        except GatewayError as exc:
            log.warning("job_listing_failed", customer=group.customer, error=exc.code)
            return []
        if not isinstance(docs, list):
            log.warning("job_listing_unreadable", customer=group.customer)
            return []
        return [
            doc["id"]
            for doc in docs
            if isinstance(doc, dict)
            and isinstance(doc.get("id"), str)
            and doc.get("lifecycle") in FINAL_LIFECYCLES
        ]

    def _refuse(self, key: tuple[str, bytes], group: _Group, status: int) -> None:
        """The upstream will not list for this caller: its jobs are watched another way."""
        log.warning("job_listing_refused", customer=group.customer, status=status)
        self.refused.add(key)
        for future in group.pending.values():
            _settle(future, None)
        group.pending.clear()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
