"""The one way adapters talk HTTP: pooled session, explicit timeouts, bounded reads, retries.

Retry policy (SPEC 4; the backoff is declared once, in :mod:`sync_gateway.core.retry`):
connection errors, 429, 502, 503 and 504 are retried with exponential backoff and jitter,
honouring ``Retry-After``, never past the caller's deadline. A create passes
``idempotent=False`` and is then retried only when the request provably never left (a
connect error).
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import structlog
from multidict import CIMultiDictProxy
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
)
from tenacity.stop import stop_base

from sync_gateway.config import UpstreamSettings
from sync_gateway.core import tracing
from sync_gateway.core.errors import (
    ResultTooLarge,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from sync_gateway.core.retry import Backoff
from sync_gateway.metrics import Metrics

log = structlog.get_logger("sync_gateway.upstream")

RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_KEPT_TIMEOUTS = 128


@dataclass(frozen=True, slots=True)
class Response:
    """An upstream answer, read whole (within ``max_result_bytes``)."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "application/octet-stream")

    def json(self) -> Any:
        """The body as JSON, or UpstreamBadResponse."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            raise UpstreamBadResponse(
                "the upstream answered something that is not JSON", upstream_status=self.status
            ) from None

    @property
    def retry_after(self) -> float | None:
        return parse_retry_after(self.headers.get("Retry-After"))


class RetryableStatus(UpstreamUnavailable):
    """A 429/502/503/504 answer, retried; raised as UpstreamUnavailable when retries run out."""

    def __init__(self, response: Response) -> None:
        super().__init__(
            f"the upstream answered {response.status}", upstream_status=response.status
        )
        self.response = response


def _give_up(exc: UpstreamUnavailable) -> Response:
    if isinstance(exc, RetryableStatus):
        return exc.response
    raise exc


class ConnectFailed(UpstreamUnavailable):
    """The request never reached the upstream: always safe to retry."""


class SentButLost(UpstreamUnavailable):
    """The connection closed or reset after the request may have reached the upstream."""


def _mark_sent(exc: UpstreamError, idempotent: bool) -> None:
    """A create lost after it may have reached the upstream: its outcome is unknown."""
    if not idempotent and isinstance(exc, UpstreamTimeout | SentButLost):
        exc.extra["outcome"] = "unknown"


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds (delta or HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _retryable(exc: BaseException, idempotent: bool) -> bool:
    if isinstance(exc, ConnectFailed):
        return True
    return idempotent and isinstance(exc, RetryableStatus | UpstreamUnavailable)


def _retry_after_of(exc: BaseException) -> float | None:
    return exc.response.retry_after if isinstance(exc, RetryableStatus) else None


@dataclass(slots=True)  # not frozen: built for every request, and frozen fields cost more
class _Call:
    """One upstream request as the client sends it (and sends it again on a retry)."""

    kind: str
    method: str
    url: str
    params: Any
    headers: Mapping[str, str] | None
    data: bytes | None
    timeout: float | None
    long_poll: bool


class UpstreamClient:
    """Wraps the app's single ClientSession; every adapter request goes through here."""

    def __init__(
        self, session: aiohttp.ClientSession, settings: UpstreamSettings, metrics: Metrics
    ) -> None:
        self.session = session
        self.settings = settings
        self.metrics = metrics
        self._wait = Backoff(settings.poll_max_interval, _retry_after_of)
        # Ordinary requests (creates, polls, cancels) queue here rather than each opening a
        # connection: a burst of thousands of creates then reuses warm keep-alive connections
        # instead of flooding the upstream's listen queue. Long polls are bounded separately
        # (upstream.max_long_polls) since each holds its connection for up to a minute.
        self._slots = asyncio.Semaphore(settings.pool_size) if settings.pool_size > 0 else None
        self._default_timeout = self._timeout(settings.request_timeout)
        # Long polls ask for a handful of distinct totals (the supervisor's 10..60 s plus the
        # request timeout): each ClientTimeout is built once.
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    def _timeout(self, total: float) -> aiohttp.ClientTimeout:
        # `connect` would also count the wait for a pooled connection; only the socket
        # connect itself is bounded by connect_timeout.
        return aiohttp.ClientTimeout(
            total=total, connect=None, sock_connect=self.settings.connect_timeout
        )

    def _timeout_of(self, total: float | None) -> aiohttp.ClientTimeout:
        if total is None:
            return self._default_timeout
        timeout = self._timeouts.get(total)
        if timeout is None:
            timeout = self._timeout(total)
            if len(self._timeouts) < MAX_KEPT_TIMEOUTS:
                self._timeouts[total] = timeout
        return timeout

    async def request(
        self,
        kind: str,
        method: str,
        url: str,
        *,
        params: Any = None,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
        timeout: float | None = None,
        budget: float | None = None,
        idempotent: bool = True,
        long_poll: bool = False,
    ) -> Response:
        """Send one logical request, retried per policy within ``budget`` seconds.

        A request that is not idempotent (a create) and was lost after it left (a timeout,
        a connection reset before the answer) raises with ``outcome: "unknown"`` in its
        extra: the upstream may or may not have acted on it."""
        call = _Call(kind, method, url, params, headers, data, timeout, long_poll)
        # Fast path: most requests succeed at once; the retry machinery is built only when
        # the first attempt failed in a way the policy retries. (_send inlined: one coroutine
        # less for each of the two upstream requests of every call.)
        try:
            if long_poll or self._slots is None:
                return await self._once(call)
            async with self._slots:
                return await self._once(call)
        except UpstreamUnavailable as exc:
            if not _retryable(exc, idempotent):
                if isinstance(exc, RetryableStatus):
                    return exc.response
                _mark_sent(exc, idempotent)
                raise
            first = exc
        except UpstreamTimeout as exc:
            _mark_sent(exc, idempotent)
            raise
        try:
            return await self._retried(call, first, budget, idempotent)
        except (UpstreamTimeout, SentButLost) as exc:
            _mark_sent(exc, idempotent)
            raise

    async def _retried(
        self, call: _Call, first: UpstreamUnavailable, budget: float | None, idempotent: bool
    ) -> Response:
        """The policy's further attempts, after a first one that failed retryably."""
        kind = call.kind

        def retryable(exc: BaseException) -> bool:
            return _retryable(exc, idempotent)

        pause = self._first_pause(first)
        if budget is not None and pause > budget:
            return _give_up(first)
        self._log_retry(kind, 1, first)
        await asyncio.sleep(pause)
        stop: stop_base = stop_after_attempt(max(self.settings.retry_attempts - 1, 1))
        if budget is not None:
            stop = stop | stop_before_delay(max(budget - pause, 0.0))
        retrying = AsyncRetrying(
            stop=stop,
            wait=self._wait,
            retry=retry_if_exception(retryable),
            reraise=True,
            before_sleep=lambda state: self._count_retry(kind, state),
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._send(call)
        except RetryableStatus as exc:
            # Not retried any more: the adapter decides what a 429 or 5xx answer means.
            return exc.response
        raise AssertionError("unreachable")  # pragma: no cover

    def _first_pause(self, exc: UpstreamUnavailable) -> float:
        pause = 0.1
        if isinstance(exc, RetryableStatus) and exc.response.retry_after is not None:
            pause = max(pause, exc.response.retry_after)
        return pause

    def _log_retry(self, kind: str, attempt: int, exc: BaseException | None) -> None:
        self.metrics.upstream_retries.labels(kind=kind).inc()
        log.info("upstream_retry", kind=kind, attempt=attempt, reason=str(exc))

    def _count_retry(self, kind: str, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        self._log_retry(kind, state.attempt_number + 1, exc)

    async def _send(self, call: _Call) -> Response:
        if call.long_poll or self._slots is None:
            return await self._once(call)
        async with self._slots:
            return await self._once(call)

    async def _once(self, call: _Call) -> Response:
        kind = call.kind
        client_timeout = self._timeout_of(call.timeout)
        headers = call.headers
        trace = tracing.CURRENT.get()
        if trace is not None and trace.carry:  # the call's trace, carried upstream (W3C)
            headers = {**headers, **trace.outgoing()} if headers else trace.outgoing()
        try:
            async with self.session.request(
                call.method,
                call.url,
                params=call.params,
                headers=headers,
                data=call.data,
                timeout=client_timeout,
                allow_redirects=False,
            ) as resp:
                body = await self._read(resp)
                response = Response(resp.status, resp.headers, body)
        except aiohttp.ClientConnectorError as exc:
            self.metrics.upstream_requests.labels(kind=kind, status="connect_error").inc()
            raise ConnectFailed("the upstream refused or could not be reached") from exc
        except TimeoutError as exc:
            self.metrics.upstream_requests.labels(kind=kind, status="timeout").inc()
            raise UpstreamTimeout("the upstream did not answer in time") from exc
        except (aiohttp.ClientError, OSError) as exc:
            self.metrics.upstream_requests.labels(kind=kind, status="io_error").inc()
            raise SentButLost("the upstream closed or reset the connection") from exc
        except ValueError as exc:  # a URL or header the HTTP client refuses to send
            self.metrics.upstream_requests.labels(kind=kind, status="bad_request").inc()
            raise UpstreamBadResponse("the upstream pointed to a URL that cannot be used") from exc
        self.metrics.upstream_requests.labels(kind=kind, status=str(response.status)).inc()
        if response.status in RETRY_STATUSES:
            raise RetryableStatus(response)
        return response

    async def _read(self, resp: aiohttp.ClientResponse) -> bytes:
        limit = self.settings.max_result_bytes
        length = resp.content_length
        if length is not None:
            if length > limit:
                raise ResultTooLarge("the job's result is larger than the gateway accepts")
            # The upstream said how much comes, within the bound: read it in one piece.
            return await resp.read()
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(65536):
            size += len(chunk)
            if size > limit:
                raise ResultTooLarge("the job's result is larger than the gateway accepts")
            chunks.append(chunk)
        return b"".join(chunks)
