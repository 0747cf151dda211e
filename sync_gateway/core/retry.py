"""The one retry policy (SPEC 4), declared once with tenacity and used by the upstream client
(a request retried within its budget) and by the engine (a watch step that failed for a
passing reason, retried until the watch's deadline).

Backoff: exponential from 0.1 s with jitter, capped by ``upstream.poll_max_interval``, never
shorter than an upstream's ``Retry-After``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tenacity import RetryCallState, wait_exponential_jitter
from tenacity.wait import wait_base


def exceptional(state: RetryCallState) -> BaseException | None:
    outcome = state.outcome
    return outcome.exception() if outcome is not None else None


class Backoff(wait_base):
    """Exponential backoff with jitter, never shorter than what ``retry_after`` finds in the
    failure (an upstream's ``Retry-After``)."""

    def __init__(
        self, max_seconds: float, retry_after: Callable[[BaseException], float | None]
    ) -> None:
        self._exponential = wait_exponential_jitter(
            multiplier=0.1, min=0.1, max=max_seconds, jitter=0.1
        )
        self._retry_after = retry_after

    def __call__(self, state: RetryCallState) -> float:
        delay = float(self._exponential(state))
        exc = exceptional(state)
        after = self._retry_after(exc) if exc is not None else None
        return delay if after is None else max(delay, after)


def before_deadline(deadline: float) -> Callable[[RetryCallState], bool]:
    """A tenacity stop: give up when the next sleep would end past ``deadline`` (loop time)."""
    loop = asyncio.get_running_loop()

    def stop(state: RetryCallState) -> bool:
        return loop.time() + (state.upcoming_sleep or 0.0) >= deadline

    return stop
