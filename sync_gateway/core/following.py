"""Following one job upstream until it ends: the steps through its adapter (retried by the
one policy), single flight across replicas (a :class:`Coordinator`), and keeping the outcome
in the store. The engine (:mod:`.engine`) runs one :class:`Follower` pass per watch."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from sync_gateway.config import Settings
from sync_gateway.core.errors import (
    Forbidden,
    GatewayError,
    JobLost,
    NotFound,
    ResultTooLarge,
    UpstreamRejected,
)
from sync_gateway.core.retry import Backoff, before_deadline, exceptional
from sync_gateway.core.types import Credentials, JobRef, Progress, Retained, Snapshot
from sync_gateway.metrics import Metrics
from sync_gateway.store.base import ResultStore

if TYPE_CHECKING:
    from sync_gateway.upstream.base import Adapter

log = structlog.get_logger("sync_gateway.engine")

# Errors after which watching again cannot help: the waiters get them as they are.
TERMINAL_ERRORS = (UpstreamRejected, ResultTooLarge, NotFound, Forbidden, JobLost)


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, GatewayError) and not isinstance(exc, TERMINAL_ERRORS)


class Coordinator(Protocol):
    """Single flight across replicas: who follows a job upstream, and news of its end."""

    async def acquire(self, key: str) -> bool:
        """True when this replica may follow the job (it holds the lease until release)."""
        ...

    async def release(self, key: str) -> None:
        """Give the lease up (the job finished here, or this watch ended)."""
        ...

    async def publish(self, key: str) -> None:
        """Tell the other replicas that the job's result is in the shared store."""
        ...

    async def wait_elsewhere(self, key: str, timeout: float) -> bool:
        """Wait while another replica follows the job: True when its result was published,
        False when the lease lapsed (or ``timeout`` passed) and this replica should try."""
        ...


class LocalCoordinator:
    """One process: every job is followed here."""

    async def acquire(self, key: str) -> bool:
        return True

    async def release(self, key: str) -> None:
        return None

    async def publish(self, key: str) -> None:
        return None

    async def wait_elsewhere(self, key: str, timeout: float) -> bool:
        return False


@dataclass(eq=False, slots=True)
class Watch:
    """One job being followed upstream."""

    ref: JobRef
    credentials: Credentials
    owner: bytes
    last: Snapshot
    future: asyncio.Future[Snapshot | None]
    task: asyncio.Task[None] | None = None
    waiters: int = 0
    started: float = field(default_factory=time.monotonic)
    # Created here (or known from the store): a 404 upstream then means the job was lost,
    # not that the caller named a job that never was.
    known: bool = True


class Follower:
    """Follows a watch's job to its end and keeps the outcome."""

    def __init__(
        self,
        adapters: Mapping[str, Adapter],
        store: ResultStore,
        settings: Settings,
        metrics: Metrics,
        coordinator: Coordinator | None,
    ) -> None:
        self.adapters = adapters
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.coordinator: Coordinator = coordinator or LocalCoordinator()
        self._loop = asyncio.get_running_loop()

    async def outcome(self, w: Watch) -> Snapshot | None:
        """The job's final snapshot (kept in the store), or None when the watch ran out."""
        deadline = self._loop.time() + self.settings.wait.watch_seconds
        if w.last.finished:  # the create itself answered the result: nothing to follow
            await self._finish(w, w.last)
            return w.last
        if isinstance(self.coordinator, LocalCoordinator):  # no frame more than needed
            result = await self._follow(w, deadline)
            if result is not None:
                await self._finish(w, result)
            return result
        return await self._coordinated(w, deadline)

    async def _coordinated(self, w: Watch, deadline: float) -> Snapshot | None:
        """Follow the job here, unless another replica already does: then wait for its
        outcome in the shared store, and take over when its lease lapses."""
        coordinator = self.coordinator
        key = w.ref.key
        while self._loop.time() < deadline:
            if await coordinator.acquire(key):
                try:
                    result = await self._follow(w, deadline)
                    if result is not None:
                        await self._finish(w, result)
                        await coordinator.publish(key)
                    return result
                finally:
                    await coordinator.release(key)
            remaining = deadline - self._loop.time()
            if await coordinator.wait_elsewhere(key, remaining):
                retained = await self.store.get(key)
                if retained is not None:
                    w.last = retained.snapshot
                    return retained.snapshot
        return None

    async def _follow(self, w: Watch, deadline: float) -> Snapshot | None:
        """Step the adapter until the job finishes (its snapshot) or the deadline (None)."""
        adapter = self.adapters[w.ref.adapter]
        up = self.settings.upstream
        delay = min(0.05, up.poll_interval)
        while self._loop.time() < deadline:
            timeout = min(up.long_poll_timeout, deadline - self._loop.time())
            try:
                # Most steps succeed: the retry machinery is built only after one failed.
                try:
                    progress = await adapter.step(w.ref, w.credentials, timeout)
                except TERMINAL_ERRORS:
                    raise
                except GatewayError as first:
                    progress = await self._retried(adapter, w, deadline, first)
            except UpstreamRejected as exc:
                if exc.upstream_status == 404 and w.known and adapter.lost_on_404:
                    raise self._lost(w) from exc
                raise
            except TERMINAL_ERRORS:
                raise
            except GatewayError:  # still failing at the deadline
                return None
            snap = progress.snapshot
            if snap is not None:
                w.last = snap
                if snap.finished:
                    return snap
            if not progress.long_polled:
                pause = max(delay, progress.retry_after or 0.0)
                await asyncio.sleep(min(pause, max(deadline - self._loop.time(), 0.0)))
                delay = min(delay * 1.5, up.poll_interval)
        return None

    async def _retried(
        self, adapter: Adapter, w: Watch, deadline: float, first: GatewayError
    ) -> Progress:
        """A step that failed for a passing reason, retried by the one policy until the
        deadline (the first failure counts as the first attempt)."""
        up = self.settings.upstream
        retrying = AsyncRetrying(
            retry=retry_if_exception(_transient),
            wait=Backoff(up.poll_max_interval, lambda exc: None),
            stop=before_deadline(deadline),
            reraise=True,
            before_sleep=lambda state: self._step_failed(w, state),
        )
        failed = True
        async for attempt in retrying:
            with attempt:
                if failed:  # replay the first failure so the policy waits before retrying
                    failed = False
                    raise first
                timeout = min(up.long_poll_timeout, deadline - self._loop.time())
                return await adapter.step(w.ref, w.credentials, timeout)
        raise AssertionError("unreachable")  # pragma: no cover

    def _lost(self, w: Watch) -> JobLost:
        """The upstream answered 404 for a job it had: deleted (the supervisor keeps only the
        newest ``autoremove_completed_jobs_limit`` finished jobs of a task) or lost in a
        restart, before the gateway could read its result."""
        self.metrics.jobs_lost.inc()
        log.warning("job_lost", job_id=w.ref.id, last_state=w.last.state)
        return JobLost(
            f"the upstream no longer has job {w.ref.id}: it was deleted or lost before its"
            " result could be read",
            job_id=w.ref.id,
            last_state=w.last.state or "unknown",
        )

    def _step_failed(self, w: Watch, state: RetryCallState) -> None:
        exc = exceptional(state)
        code = exc.code if isinstance(exc, GatewayError) else type(exc).__name__
        pause = round(state.upcoming_sleep, 3)
        log.warning("watch_step_failed", job_id=w.ref.id, error=code, pause=pause)

    async def _finish(self, w: Watch, snap: Snapshot) -> None:
        self.metrics.jobs_finished.labels(state=snap.state or "unknown").inc()
        expires = time.monotonic() + self.settings.retention.seconds
        kept = await self.store.put(Retained(w.ref, snap, w.owner, expires))
        log.info(
            "job_finished",
            job_id=w.ref.id,
            state=snap.state,
            watched_ms=round((time.monotonic() - w.started) * 1000),
            retained=kept,
        )
