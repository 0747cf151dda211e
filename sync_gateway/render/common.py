"""What every renderer shares: the one JSON encoder of answers, and the rule for the
headers a task may set (SPEC 2.2).

Headers from task output, case-insensitively:

* dropped as hop-by-hop or framing: ``Connection``, ``Keep-Alive``, ``Transfer-Encoding``,
  ``Content-Length``, ``Content-Encoding``, ``Upgrade``, ``TE``, ``Trailer``,
  ``HTTP2-Settings``, ``Proxy-*``;
* dropped as the gateway's own: ``Host``, ``Date``, ``Server``, ``X-Job-Id``, ``X-Request-Id``,
  ``Retry-After``, ``Preference-Applied``, and whatever else ``HeaderLimits.denied`` names
  (by default cookies, HSTS and CORS, which belong to the deployment, not to one task);
* kept: everything else a REST method may answer with, ``Content-Type`` and ``Location``
  (a 201's) included.

Values: strings or numbers (written as JavaScript would), stripped of spaces/tabs, printable
latin-1 (HTAB is allowed; C0/C1 controls and DEL are not). Caps in UTF-8 bytes (total: names +
values), in order.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

import orjson

JSON_CONTENT_TYPE: Final = "application/json; charset=utf-8"

_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE_CHAR: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]|[^\x00-\xff]")
_HOP_BY_HOP: Final = frozenset({"connection", "keep-alive", "transfer-encoding", "upgrade"}) | {
    *("content-length", "content-encoding", "te", "trailer", "http2-settings")
}
_RESERVED: Final = frozenset(
    {"host", "date", "server", "x-job-id", "x-request-id", "retry-after", "preference-applied"}
)
# What a task may not set unless the operator allows it (security.task_headers_denied):
# cookies, HSTS, CORS and CSP belong to the deployment, not to one task's output.
DEFAULT_DENIED: Final = (
    "set-cookie",
    "strict-transport-security",
    "access-control-*",
    "content-security-policy",
    "www-authenticate",
)


@dataclass(frozen=True, slots=True)
class HeaderLimits:
    """Caps on the headers a task may set (sizes in UTF-8 bytes)."""

    max_count: int = 32
    max_name_bytes: int = 256
    max_value_bytes: int = 8192
    max_total_bytes: int = 16384
    denied: tuple[str, ...] = DEFAULT_DENIED

    def is_denied(self, lower: str) -> bool:
        """Whether a (lower-case) name is on the deny list; ``prefix-*`` names a family."""
        return any(lower.startswith(d[:-1]) if d.endswith("*") else lower == d for d in self.denied)


DEFAULT_LIMITS: Final = HeaderLimits()


def json_body(value: Any) -> bytes:
    """The one JSON encoder of answers: compact, key order kept, UTF-8 (like JSON.stringify)."""
    try:
        # An exact-size copy: orjson's bytes keep its 4-16 KB write buffer, and thousands of
        # answers can be in flight at once.
        return bytes(memoryview(orjson.dumps(value)))
    except orjson.JSONEncodeError:  # nested deeper than orjson's 254 levels
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return text.encode("utf-8")


def _js_number(value: float) -> str | None:
    """``value`` as JavaScript's ``String(number)`` writes it; None for NaN and infinities."""
    if not math.isfinite(value):
        return None
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    _, digit_tuple, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    assert isinstance(exponent, int)
    k, n = len(digits), exponent + len(digits)
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * -n + digits
    else:
        mantissa = digits[0] + ("." + digits[1:] if k > 1 else "")
        text = f"{mantissa}e{'+' if n - 1 >= 0 else '-'}{abs(n - 1)}"
    return sign + text


def _header_value(value: object) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _js_number(value)
    if isinstance(value, str):
        value = value.strip(" \t")
        return None if _BAD_VALUE_CHAR.search(value) else value
    return None


def sanitize_headers(
    raw: object, limits: HeaderLimits = HeaderLimits()
) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """The headers of a response object that may be sent, and why the others were dropped."""
    if not isinstance(raw, dict):
        return (), (() if raw is None else ("not-an-object",))
    kept: list[tuple[str, str]] = []
    dropped: list[str] = []
    total = 0
    for name, value in raw.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            dropped.append("invalid-name")
            continue
        if len(name) > limits.max_name_bytes:
            dropped.append("limit:name-size")
            continue
        lower = name.lower()
        if lower in _HOP_BY_HOP or lower.startswith("proxy-"):
            dropped.append(f"hop-by-hop:{name}")
            continue
        if lower in _RESERVED:
            dropped.append(f"reserved:{name}")
            continue
        if limits.is_denied(lower):
            dropped.append(f"denied:{name}")
            continue
        text = _header_value(value)
        if text is None:
            dropped.append(f"invalid-value:{name}")
            continue
        size = len(text.encode("utf-8"))
        if size > limits.max_value_bytes:
            dropped.append(f"limit:value-size:{name}")
        elif len(kept) >= limits.max_count:
            dropped.append(f"limit:count:{name}")
        elif total + len(name) + size > limits.max_total_bytes:
            dropped.append(f"limit:total:{name}")
        else:
            kept.append((name, text))
            total += len(name) + size
    return tuple(kept), tuple(dropped)
