"""The wait engine: one watch per job, any number of waiters, budgets, drain, hang-ups.

A *watch* is one task that follows one job upstream (through its adapter) until the job
finishes, then keeps the result in the store and wakes every waiter at once. A *waiter* is a
client call blocked on a watch for at most its budget. Waiters come and go; the watch goes on
after they leave (a re-attach finds it again), for at most ``wait.watch_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import structlog

from sync_gateway.core.access import Fingerprints
from sync_gateway.core.errors import GatewayError
from sync_gateway.core.following import TERMINAL_ERRORS, Follower, Watch
from sync_gateway.core.types import Credentials, JobRef, Snapshot

if TYPE_CHECKING:
    pass

log = structlog.get_logger("sync_gateway.engine")

# Budgets end on a grid of this many seconds: the waiters whose budgets end in the same
# slot share one timer (a timer each costs some 500 bytes, times thousands of clients).
BUDGET_GRAIN = 0.05


def tenant_of(ref: JobRef) -> str:
    """Whose job it is, for admission: the TheEye customer, else the route's name."""
    return f"customer:{ref.customer}" if ref.customer else f"route:{ref.adapter}"


def _wake(waiter: asyncio.Future[Snapshot | None], *_: object) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _from_watch(
    waiter: asyncio.Future[Snapshot | None], watch: asyncio.Future[Snapshot | None]
) -> None:
    if waiter.done():
        return
    if watch.cancelled():
        waiter.set_result(None)
    elif (exc := watch.exception()) is not None:
        waiter.set_exception(exc)
    else:
        waiter.set_result(watch.result())


class Engine:
    """Owns every watch; the HTTP handlers only call :meth:`wait` and friends."""

    def __init__(self, follower: Follower, fingerprints: Fingerprints) -> None:
        """``follower`` follows each watch's job (its adapters, store, settings, metrics);
        ``fingerprints`` tell each watch's owner."""
        self.follower = follower
        self.fingerprints = fingerprints
        self.adapters = follower.adapters
        self.store = follower.store
        self.settings = follower.settings
        self.metrics = follower.metrics
        self._watches: dict[str, Watch] = {}
        # Jobs followed now, by customer (TheEye) or route: what admission bounds.
        self.in_flight: Counter[str] = Counter()
        self._loop = asyncio.get_running_loop()
        self._drain_over: asyncio.Future[None] = self._loop.create_future()
        self.draining = False
        self._background: set[asyncio.Task[object]] = set()
        # The waiters whose budgets end in each slot of BUDGET_GRAIN seconds, by slot number.
        self._budgets: dict[int, set[asyncio.Future[Snapshot | None]]] = {}

    # ---- watches -------------------------------------------------------------------------

    def watching_count(self) -> int:
        """How many jobs are followed now."""
        return len(self._watches)

    def watching(self, key: str) -> Watch | None:
        """The running watch of a job, if any."""
        return self._watches.get(key)

    def watch(
        self,
        ref: JobRef,
        credentials: Credentials,
        last: Snapshot,
        known: bool = True,
        owner: bytes | None = None,
    ) -> Watch:
        """The job's watch, started now if there is none (single flight per job). ``known``:
        the gateway created the job (or kept its ref), so the upstream had it."""
        key = ref.key
        found = self._watches.get(key)
        if found is not None:
            return found
        if not last.finished:
            # Waiting needs only state and lifecycle (the 202 summary): pinning the created
            # document for every waiting job would cost kilobytes each.
            last = Snapshot(False, last.state, last.lifecycle, kind=last.kind)
        if owner is None:  # (the caller's fingerprint, unless the caller already has it)
            owner = self.fingerprints.of(credentials)
        w = Watch(ref, credentials, owner, last, self._loop.create_future(), known=known)
        self._watches[key] = w
        self.in_flight[tenant_of(ref)] += 1
        w.task = self._loop.create_task(self._run(w), name=f"watch:{key}")
        self.metrics.active_watchers.inc()
        return w

    async def _run(self, w: Watch) -> None:
        try:
            result = await self.follower.outcome(w)
            if result is None:
                log.info("watch_expired", job_id=w.ref.id)
            if not w.future.done():
                w.future.set_result(result)
        except TERMINAL_ERRORS as exc:
            log.info("watch_failed", job_id=w.ref.id, error=exc.code)
            exc.extra.setdefault("job_id", w.ref.id)
            if not w.future.done():
                w.future.set_exception(exc)
        except asyncio.CancelledError:
            if not w.future.done():
                w.future.set_result(None)
            raise
        except Exception:  # a bug must not leave waiters hanging
            log.exception("watch_crashed", job_id=w.ref.id)
            if not w.future.done():
                w.future.set_exception(GatewayError("the gateway failed while watching the job"))
        finally:
            self._watches.pop(w.ref.key, None)
            tenant = tenant_of(w.ref)
            self.in_flight[tenant] -= 1
            if not self.in_flight[tenant]:
                del self.in_flight[tenant]
            self.metrics.active_watchers.dec()
            # A watch future nobody awaited must not warn at garbage collection.
            if w.future.done() and not w.future.cancelled():
                w.future.exception()

    # ---- waiters -------------------------------------------------------------------------

    def wait(
        self, w: Watch, budget: float, creator: bool = True
    ) -> asyncio.Future[Snapshot | None]:
        """A future of the watch's outcome, or of None when the budget (or the drain period)
        runs out first: the caller then answers 202 with a way to re-attach.

        A plain future with callbacks rather than a coroutine: no frame of its own for each
        of thousands of waiting clients. Cancelling it (the client hung up) is noticed too.
        """
        waiter: asyncio.Future[Snapshot | None] = self._loop.create_future()
        if w.future.done():
            _from_watch(waiter, w.future)
            return waiter
        if self._drain_over.done():
            waiter.set_result(None)
            return waiter
        relay = functools.partial(_from_watch, waiter)
        w.future.add_done_callback(relay)
        slot = self._expire_after(waiter, budget)
        w.waiters += 1
        self.metrics.active_waiters.inc()
        waiter.add_done_callback(functools.partial(self._waited, w, relay, creator, slot))
        return waiter

    def _expire_after(self, waiter: asyncio.Future[Snapshot | None], budget: float) -> int:
        """Wake ``waiter`` with None when ``budget`` seconds are over (at most BUDGET_GRAIN
        later), with the other waiters whose budgets end in the same slot: its slot."""
        slot = math.ceil((self._loop.time() + max(budget, 0.0)) / BUDGET_GRAIN)
        listed = self._budgets.get(slot)
        if listed is None:
            listed = self._budgets[slot] = set()
            self._loop.call_at(slot * BUDGET_GRAIN, self._expire, slot)
        listed.add(waiter)
        return slot

    def _expire(self, slot: int) -> None:
        for waiter in self._budgets.pop(slot, ()):
            _wake(waiter)

    def _waited(
        self,
        w: Watch,
        relay: Callable[[asyncio.Future[Snapshot | None]], None],
        creator: bool,
        slot: int,
        waiter: asyncio.Future[Snapshot | None],
    ) -> None:
        listed = self._budgets.get(slot)
        if listed is not None:  # (its slot's timer keeps running: it finds the set empty)
            listed.discard(waiter)
        w.future.remove_done_callback(relay)
        w.waiters -= 1
        self.metrics.active_waiters.dec()
        if waiter.cancelled():
            self._on_hang_up(w, creator)

    def _on_hang_up(self, w: Watch, creator: bool) -> None:
        """A client hung up. With ``cancel_on_disconnect`` the job is cancelled when its
        creator hung up and nobody else waits; another caller's hang-up cancels nothing."""
        log.info("client_gone", job_id=w.ref.id, waiters_left=w.waiters, creator=creator)
        if (
            self.settings.cancel_on_disconnect
            and creator
            and w.waiters == 0
            and not w.future.done()
        ):
            self.spawn(self._cancel(w))

    async def cancel_unless_waited(self, w: Watch) -> None:
        """After a hang-up during the create: cancel unless somebody waits on the job."""
        await asyncio.sleep(0)  # let a concurrent same-key request attach first
        if w.waiters == 0 and not w.future.done():
            await self._cancel(w)

    async def _cancel(self, w: Watch) -> None:
        """Ask the upstream to cancel, and log what it answered."""
        try:
            status = await self.adapters[w.ref.adapter].cancel(w.ref, w.credentials)
        except GatewayError as exc:
            log.warning("job_cancel_failed", job_id=w.ref.id, error=exc.code)
            return
        if status is None:
            log.info("job_cancel_unsupported", job_id=w.ref.id)
        elif 200 <= status < 300:
            log.info("job_cancelled", job_id=w.ref.id, upstream_status=status)
        else:
            log.warning("job_cancel_refused", job_id=w.ref.id, upstream_status=status)

    def spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        """Run a coroutine in the background, kept referenced until it ends."""
        task = self._loop.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ---- life cycle ----------------------------------------------------------------------

    def begin_drain(self, seconds: float) -> None:
        """Stop taking new waits; the waiting ones get ``seconds`` more, then a 202."""
        if self.draining:
            return
        self.draining = True
        log.info("drain_started", waiters=self.waiter_count(), seconds=seconds)

        self._loop.call_later(seconds, self._end_drain)

    def _end_drain(self) -> None:
        if not self._drain_over.done():
            self._drain_over.set_result(None)
        for listed in list(self._budgets.values()):
            for waiter in listed:
                _wake(waiter)

    def waiter_count(self) -> int:
        return sum(w.waiters for w in self._watches.values())

    async def close(self) -> None:
        """Stop every watch (on shutdown, after the drain)."""
        self._end_drain()
        tasks: list[asyncio.Task[Any]] = [w.task for w in self._watches.values() if w.task]
        tasks += self._background
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for adapter in self.adapters.values():
            await adapter.close()
