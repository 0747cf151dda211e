"""structlog set-up: JSON lines (or a console renderer on a TTY), and ONE redaction processor.

Every credential carrier the gateway knows (``access_token`` in a query, ``Authorization``,
``Cookie``, ``apiKey``, a ``/secret/<value>/`` path segment, ``Bearer``/``Basic`` values, a
password in a URL) is masked by :func:`redact` before any renderer sees the event, whatever key
it sits under. Records of the standard library's loggers (aiohttp, asyncio) go through the same
processors, so they are JSON lines too and redacted the same way.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import sys
import time
from collections.abc import Mapping, MutableMapping
from contextvars import ContextVar
from select import PIPE_BUF
from types import MappingProxyType
from typing import Any

import orjson
import structlog

MASK = "***"
# A key naming any of these (case-insensitive, anywhere in the key) holds a credential.
SECRET_KEY_PARTS = (
    "access_token",
    "access-token",
    "authorization",
    "cookie",
    "secret",
    "apikey",
    "api_key",
    "api-key",
    "password",
    "passwd",
    "token",
    "credential",
)
_NAMES = r"access_token|apikey|api_key|api-key|token|secret|password|authorization|cookie"
_PATTERNS = (
    # a query string or form: access_token=…, apiKey=…
    (re.compile(rf"(?i)({_NAMES})=([^&\s\"';,]+)"), r"\1=" + MASK),
    # JSON or a Python repr: "apiKey": "…", 'access_token': '…'
    (
        re.compile(rf"(?i)([\"'][\w-]*(?:{_NAMES})[\w-]*[\"']\s*:\s*[\"'])([^\"']*)([\"'])"),
        r"\1" + MASK + r"\3",
    ),
    # a header line: Authorization: …, Cookie: …
    (
        re.compile(
            r"(?im)\b(proxy-authorization|authorization|set-cookie|cookie)(\s*:\s*)[^\r\n]+"
        ),
        r"\1\2" + MASK,
    ),
    # a task's or a job's secret in a path
    (re.compile(r"(?i)(/secret/)([^/?#\s\"']+)"), r"\1" + MASK),
    # a password in a URL: scheme://user:password@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*:)([^@/\s]+)(@)"), r"\1" + MASK + r"\3"),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 " + MASK),
)
_PLAIN = (int, float, bool, type(None))


def is_secret_key(key: object) -> bool:
    """True when a key's name says its value is a credential."""
    return _is_secret_name(str(key))


@functools.lru_cache(maxsize=1024)
def _is_secret_name(name: str) -> bool:
    # Called for every key of every log event: the answer per name is cached.
    lowered = name.lower()
    return any(part in lowered for part in SECRET_KEY_PARTS)


# Every pattern above needs one of these; most logged strings (ids, routes, event names)
# have none, and looking for them is much cheaper than six substitutions.
_MAYBE = re.compile(r"(?i)[=:@]|/secret/|bearer|basic")
# Keys the gateway itself fills with values that never carry a credential.
_SAFE_KEYS = frozenset({"level", "timestamp", "job_id", "route", "method", "status", "trace_id"})
_SAFE_VALUES = (str, int)


def _maybe_secret(text: str) -> bool:
    """Whether ``text`` holds anything :data:`_PATTERNS` could match (as ``_MAYBE`` says)."""
    if not text.isascii():
        # (?i) folds some non-ASCII letters onto ASCII ones (U+017F onto s): the regex decides.
        return _MAYBE.search(text) is not None
    if "=" in text or ":" in text or "@" in text:
        return True
    lowered = text.lower()
    return "/secret/" in lowered or "bearer" in lowered or "basic" in lowered


# A URL: its userinfo and its query, whatever the parameters are called (key=, sig=,
# X-Amz-Signature=, code=, pw=, … carry credentials too, and no list of names is complete).
_URL = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/\s?#@]*@)?([^\s?#\"']*)(\?[^\s#\"']*)?")
_QUERY_VALUE = re.compile(r"=[^&;]*")


def _mask_url(m: re.Match[str]) -> str:
    scheme, userinfo, rest, query = m.group(1), m.group(2), m.group(3), m.group(4)
    masked = scheme + (MASK + "@" if userinfo else "") + rest
    if query:
        masked += _QUERY_VALUE.sub("=" + MASK, query)
    return masked


def scrub(text: str) -> str:
    """Mask credentials inside a free-form string (a URL, a path, an error message): every
    URL's userinfo and query values, and the credential patterns above anywhere."""
    if not _maybe_secret(text):
        return text
    if "://" in text:
        text = _URL.sub(_mask_url, text)
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


def _clean(value: Any, depth: int = 0) -> Any:
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, bytes | bytearray):
        return scrub(bytes(value).decode("utf-8", "replace"))
    if depth > 6:
        return scrub(str(value))
    if isinstance(value, Mapping):
        return {k: MASK if is_secret_key(k) else _clean(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        # a header pair ("Cookie", "…") is masked by its name, like a mapping's key
        if len(value) == 2 and isinstance(value, tuple) and is_secret_key(value[0]):
            return [value[0], MASK]
        return [_clean(v, depth + 1) for v in value]
    # Anything else is rendered through str() anyway: scrub that text.
    return scrub(str(value))


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The redaction processor: runs last before rendering."""
    for key, value in event.items():  # values replaced in place: no key is added or removed
        if key in _SAFE_KEYS and isinstance(value, _SAFE_VALUES):
            continue
        if _is_secret_name(str(key)):
            event[key] = MASK
        elif type(value) is str:
            event[key] = scrub(value)
        elif not isinstance(value, _PLAIN):
            event[key] = _clean(value)
    return event


# The call's log context (request id, route, trace, job): one context variable holding a
# mapping that is replaced, never changed in place, so that a task started by a call keeps
# what the call had bound when it started. (structlog's own contextvars keep one variable per
# key, and finding them walks every variable of the context for each event.)
_CONTEXT: ContextVar[Mapping[str, Any]] = ContextVar(
    "sync_gateway_log_context", default=MappingProxyType({})
)


def new_log_context(**values: Any) -> None:
    """Start the log context of a new call: these values, nothing of an earlier call."""
    _CONTEXT.set(values)


def bind_log_context(**values: Any) -> None:
    """Add values to the call's log context: every later line of the call carries them."""
    _CONTEXT.set({**_CONTEXT.get(), **values})


def merge_log_context(_: Any, __: str, event: MutableMapping[str, Any]) -> Any:
    """The processor that adds the call's log context to each event (the event's own values
    win)."""
    for key, value in _CONTEXT.get().items():
        event.setdefault(key, value)
    return event


class IsoTimeStamper:
    """``timestamp``: the time in UTC, ISO 8601 with microseconds (``2026-11-30T12:00:00.123456Z``,
    as structlog's ``TimeStamper(fmt="iso", utc=True)`` writes it), the date and the second
    formatted once a second rather than through a datetime for every event."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, _: Any, __: str, event: MutableMapping[str, Any]) -> Any:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        event["timestamp"] = f"{self._prefix}.{int((now - second) * 1e6):06d}Z"
        return event


class LineLogger:
    """Writes each rendered event as one line: bytes straight to a binary stream (the JSON
    lines), or text to a text stream (a console, a test's StringIO).

    The lines an event-loop turn logs are flushed together when the turn ends (one write for
    all the calls a busy turn answers, not one for each line: a line reaches the stream a few
    microseconds later, never out of order), in writes of whole lines of at most ``PIPE_BUF``
    bytes together: a pipe shared by ``serve --workers`` processes takes each such write in one
    piece, so that no worker's line is cut by another's. Errors are flushed at once, and so is
    every line logged with no running loop (start-up, another thread). One instance per
    stream, shared by every logger: nothing is built per event."""

    def __init__(self, stream: Any) -> None:
        binary = getattr(stream, "buffer", None)
        self._binary = binary is not None
        target = binary if binary is not None else stream
        self._write = target.write
        self._flush = target.flush
        self._flush_due: asyncio.AbstractEventLoop | None = None  # the loop that will flush
        self._unflushed = 0  # bytes (characters on a text stream) written since the last flush

    def _line(self, message: str | bytes) -> None:
        line: str | bytes
        if self._binary:
            data = message if isinstance(message, bytes) else message.encode("utf-8", "replace")
            line = data + b"\n"
        else:
            text = message if isinstance(message, str) else message.decode("utf-8", "replace")
            line = text + "\n"
        if self._unflushed and self._unflushed + len(line) > PIPE_BUF:
            self._flush_all()
        self._write(line)
        self._unflushed += len(line)

    def _flush_all(self) -> None:
        self._flush()
        self._unflushed = 0

    def msg(self, message: str | bytes) -> None:
        self._line(message)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._flush_all()
            return
        if loop is not self._flush_due:  # (a loop that closed before flushing is replaced)
            self._flush_due = loop
            loop.call_soon(self._flush_turn)

    def _flush_turn(self) -> None:
        self._flush_due = None
        self._flush_all()

    def msg_now(self, message: str | bytes) -> None:
        self._line(message)
        self._flush_all()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg_now


def _renderer(console: bool) -> Any:
    if console:
        # plain tracebacks: richer formatters can print local variables (credentials)
        return structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
    # bytes, written as they are (no decode, no print): the JSON line is the hot path
    return structlog.processors.JSONRenderer(serializer=_dumps_bytes)


def configure(level: str = "info", fmt: str = "auto", stream: Any = None) -> None:
    """Configure structlog (and the standard library's loggers) once at start-up, before
    anything is logged: loggers are assembled on first use and kept (the per-event cost of
    rebuilding one is most of a log line's), so an event logged earlier would fix its logger
    to structlog's defaults."""
    stream = stream if stream is not None else sys.stdout
    console = fmt == "console" or (fmt == "auto" and stream.isatty())
    numeric = logging.getLevelNamesMapping()[level.upper()]
    # Tracebacks without local variables (format_exc_info): locals could hold credentials.
    head: list[Any] = [structlog.processors.format_exc_info, redact]
    line = LineLogger(stream)
    structlog.configure(
        processors=[
            merge_log_context,
            structlog.processors.add_log_level,
            IsoTimeStamper(),
            *head,
            _renderer(console),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=lambda *_: line,
        cache_logger_on_first_use=True,
    )
    # The standard library's formatter needs text: the same chain, rendered to str.
    text = _renderer(console) if console else structlog.processors.JSONRenderer(_dumps)
    _configure_stdlib(numeric, stream, [*head, text])


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The one handler this module puts on the root logger (replaced on reconfiguration)."""


def _configure_stdlib(level: int, stream: Any, tail: list[Any]) -> None:
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            merge_log_context,
            structlog.stdlib.add_logger_name,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
    )
    handler = _Handler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(level, logging.INFO))  # asyncio's and aiohttp's debug chatter stays out
    # Access lines would carry full URLs (tokens in queries): the gateway logs its own.
    logging.getLogger("aiohttp.access").disabled = True


def _dumps(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


def _dumps_bytes(obj: Any, **_: Any) -> bytes:
    return orjson.dumps(obj, default=str)
