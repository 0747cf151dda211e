"""structlog set-up: JSON lines (or a console renderer on a TTY), and ONE redaction processor.

Every credential carrier the gateway knows (``access_token`` in a query, ``Authorization``,
``Cookie``, ``apiKey``, a ``/secret/<value>/`` path segment, ``Bearer``/``Basic`` values) is
masked by :func:`redact` before any renderer sees the event, whatever key it sits under.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

MASK = "***"
SECRET_KEYS = frozenset(
    {
        "access_token",
        "authorization",
        "cookie",
        "set-cookie",
        "secret",
        "job_secret",
        "apikey",
        "api_key",
        "password",
        "token",
        "credentials",
    }
)
_PATTERNS = (
    (re.compile(r"(?i)(access_token|apikey|api_key|token|secret)=([^&\s\"']+)"), r"\1=" + MASK),
    (re.compile(r"(?i)(/secret/)([^/?\s\"']+)"), r"\1" + MASK),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 " + MASK),
    (
        re.compile(r"(?i)(\"?(?:apiKey|access_token|password)\"?\s*:\s*\")([^\"]*)(\")"),
        r"\1" + MASK + r"\3",
    ),
)


def scrub(text: str) -> str:
    """Mask credentials inside a free-form string (a URL, a path, an error message)."""
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


def _clean(value: Any, depth: int = 0) -> Any:
    if depth > 6:
        return value
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {
            k: MASK if str(k).lower() in SECRET_KEYS else _clean(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_clean(v, depth + 1) for v in value]
    return value


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The redaction processor: runs last before rendering."""
    for key in list(event):
        if key.lower() in SECRET_KEYS:
            event[key] = MASK
        else:
            event[key] = _clean(event[key])
    return event


def configure(level: str = "info", fmt: str = "auto", stream: Any = None) -> None:
    """Configure structlog once at start-up."""
    stream = stream if stream is not None else sys.stdout
    console = fmt == "console" or (fmt == "auto" and stream.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if console
        else structlog.processors.JSONRenderer(serializer=_dumps)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            # Tracebacks without local variables: locals could hold credentials.
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )


def _dumps(obj: Any, **_: Any) -> str:
    import orjson

    return orjson.dumps(obj, default=str).decode()
