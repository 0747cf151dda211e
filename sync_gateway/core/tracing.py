"""W3C trace context (``traceparent``/``tracestate``) carried from a client's call to every
upstream request made for it, and into its log lines; a call without one starts a trace.

The web layer sets :data:`CURRENT` for each request; the engine's watch task is created from
the request's context, so the upstream requests it makes for the call carry the same trace (a
job's watch carries the trace of the call that started it).
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass

_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def random_hex(digits: int) -> str:
    """``digits`` random hex digits, never all zero (an id W3C calls invalid): a trace or span
    id, a request id. From the ``random`` module, as OpenTelemetry's own id generator does:
    ids need to be unique, not secret, and need no system call (``os.urandom`` makes one)."""
    return f"{random.getrandbits(digits * 4) or 1:0{digits}x}"


@dataclass(frozen=True, slots=True)
class TraceContext:
    """The trace a call belongs to: its id, flags, and the vendors' ``tracestate``."""

    trace_id: str
    flags: str = "01"
    state: str = ""
    # False when OpenTelemetry's client instrumentation sends each upstream request's
    # traceparent itself (sync_gateway.telemetry): then the trace is only logged from here.
    carry: bool = True

    def outgoing(self) -> dict[str, str]:
        """Headers for one upstream request: the trace, with a span id of its own."""
        headers = {"traceparent": f"00-{self.trace_id}-{random_hex(16)}-{self.flags}"}
        if self.state:
            headers["tracestate"] = self.state
        return headers


# The trace of the call being handled (a context variable: each request and the tasks it
# starts see their own).
CURRENT: ContextVar[TraceContext | None] = ContextVar("sync_gateway_trace", default=None)


def from_headers(headers: Mapping[str, str]) -> TraceContext:
    """The client's trace when its ``traceparent`` is valid, else a new one."""
    raw = headers.get("traceparent", "").strip().lower()
    m = _TRACEPARENT.fullmatch(raw)
    if m is None or m.group(1) == _ZERO_TRACE or m.group(2) == _ZERO_SPAN:
        return TraceContext(random_hex(32))
    state = headers.get("tracestate", "").strip()[:512]
    return TraceContext(m.group(1), m.group(3), state if state.isprintable() else "")
