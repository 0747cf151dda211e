"""The pure mapping from a finished job and a requested format to an HTTP answer (SPEC 2.1, 2.2).

No I/O, no web framework: :func:`render_job` returns a :class:`Rendered` for the HTTP layer.
Decisions where the SPEC is silent:

* A ``statusCode`` counts when it is an integer 100..599 (``201.0`` is one, as in JavaScript;
  ``bool`` is not) or, in a response object only, a string of ASCII digits valued 100..599.
* ``parse``: ``output[N]`` must be a string that parses as JSON (and is not nested too deeply to
  convert), else the ``output`` answer is given. The body of a response object ``R`` (either
  form) is ``R["body"]`` when the key is there, else ``R`` itself (so a flat form with
  ``headers`` and no ``body`` answers with all of it). Integral floats parsed are written as
  integers (``10.0`` -> ``10``), as ``JSON.stringify`` does.
* Headers dropped, case-insensitively: hop-by-hop and framing ones (``Connection``,
  ``Keep-Alive``, ``Transfer-Encoding``, ``Content-Length``, ``Content-Encoding``, ``Upgrade``,
  ``TE``, ``Trailer``, ``HTTP2-Settings``, ``Proxy-*``) and those the gateway owns (``Host``,
  ``Date``, ``Server``, ``X-Job-Id``); ``Set-Cookie``, ``Location`` … pass. Values: strings or
  numbers (written as JavaScript would), stripped of spaces/tabs, printable latin-1 (HTAB is
  allowed; C0/C1 controls and DEL are not). Caps in UTF-8 bytes (total: names + values), in order.
* A task ``Content-Type`` given twice (different case): the last wins, as with ``setHeader``.
* ``parse=N``: ``N`` is 1 to 9 ASCII digits (leading zeros allowed); anything else is a 400.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

import orjson

from sync_gateway.errors import BadRequest

JSON_CONTENT_TYPE: Final = "application/json; charset=utf-8"

_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_INDEX: Final = re.compile(r"[0-9]{1,9}")
_STATUS_DIGITS: Final = re.compile(r"[0-9]{1,6}")
_BAD_VALUE_CHAR: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]|[^\x00-\xff]")
_HOP_BY_HOP: Final = frozenset({"connection", "keep-alive", "transfer-encoding", "upgrade"}) | {
    *("content-length", "content-encoding", "te", "trailer", "http2-settings")
}
_RESERVED: Final = frozenset({"host", "date", "server", "x-job-id"})
_ABSENT: Final = object()


class FormatKind(enum.StrEnum):
    """The result formats of SPEC 2.1."""

    OUTPUT = "output"
    PARSE = "parse"
    RESULT = "result"
    FULL = "full"


@dataclass(frozen=True, slots=True)
class Format:
    """A requested result format; ``index`` is the ``output`` entry read by ``parse``."""

    kind: FormatKind
    index: int = 0
    explicit_index: bool = False

    def query_items(self) -> list[tuple[str, str]]:
        """The flag as it goes into a ``Location`` query string."""
        if self.kind is FormatKind.PARSE and self.explicit_index:
            return [("parse", str(self.index))]
        return [(self.kind.value, "")]


def _values(query: object, key: str) -> list[str]:
    getall = getattr(query, "getall", None)
    if callable(getall):
        return [str(v) for v in getall(key, [])]
    if isinstance(query, Mapping) and key in query:
        return [str(query[key])]
    return []


def parse_format(query: Any, default: FormatKind) -> Format:
    """The format a request's query asks for (a multidict with ``getall`` or a Mapping).

    Raises :class:`BadRequest` for a bad ``parse`` value (parameter ``parse``), for two different
    ``parse`` indexes (``parse``), and for two different formats at once (``format``).
    """
    found: list[Format] = []
    for kind in FormatKind:
        values = _values(query, kind.value)
        if not values:
            continue
        if kind is not FormatKind.PARSE:
            found.append(Format(kind))
            continue
        indexes: set[int] = set()
        explicit = False
        for value in values:
            if value == "":
                indexes.add(0)
            elif _INDEX.fullmatch(value):
                indexes.add(int(value))
                explicit = True
            else:
                raise BadRequest(
                    "parse must be empty or a non-negative integer index", parameter="parse"
                )
        if len(indexes) > 1:
            raise BadRequest("parse is given more than one index", parameter="parse")
        found.append(Format(kind, indexes.pop(), explicit))
    if len(found) > 1:
        names = ", ".join(f.kind.value for f in found)
        raise BadRequest(
            f"only one result format may be asked for, got: {names}", parameter="format"
        )
    return found[0] if found else Format(default)


@dataclass(frozen=True, slots=True)
class HeaderLimits:
    """Caps on the headers a task may set (sizes in UTF-8 bytes)."""

    max_count: int = 32
    max_name_bytes: int = 256
    max_value_bytes: int = 8192
    max_total_bytes: int = 16384


@dataclass(frozen=True, slots=True)
class Rendered:
    """An HTTP answer: status, body bytes, its content type, extra headers, drop reasons."""

    status: int
    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()
    dropped: tuple[str, ...] = ()


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


def _status_code(value: object, *, allow_string: bool) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if allow_string and isinstance(value, str) and _STATUS_DIGITS.fullmatch(value):
        value = int(value)
    if isinstance(value, int) and 100 <= value <= 599:
        return value
    return None


def _js_floats(value: Any) -> Any:
    """Integral floats as ints, as a JavaScript round trip would write them."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    if isinstance(value, dict):
        return {k: _js_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_js_floats(v) for v in value]
    return value


def _json(status: int, value: Any) -> Rendered:
    return Rendered(status, json_body(value), JSON_CONTENT_TYPE)


def _render_parse(job: Mapping[str, Any], fmt: Format, limits: HeaderLimits) -> Rendered:
    status = 200 if job.get("state") == "success" else 500
    output = job.get("output")
    raw = output[fmt.index] if isinstance(output, list) and fmt.index < len(output) else None
    try:
        obj = _js_floats(orjson.loads(raw)) if isinstance(raw, str) else _ABSENT
    except (orjson.JSONDecodeError, RecursionError):
        obj = _ABSENT
    if obj is _ABSENT:
        return _json(status, output if output is not None else [])
    response: dict[str, Any] | None = None
    if isinstance(obj, dict):
        if isinstance(obj.get("response"), dict):
            response = obj["response"]
        elif "statusCode" in obj and ("body" in obj or "headers" in obj):
            response = obj
    if response is None:
        code = obj.get("statusCode") if isinstance(obj, dict) else None
        return _json(_status_code(code, allow_string=False) or status, obj)
    status = _status_code(response.get("statusCode"), allow_string=True) or status
    body = response.get("body", response)
    headers, dropped = sanitize_headers(response.get("headers"), limits)
    content_types = [(n, v) for n, v in headers if n.lower() == "content-type"]
    if content_types:
        headers = tuple(h for h in headers if h[0].lower() != "content-type")
        dropped += tuple(f"duplicate:{n}" for n, _ in content_types[:-1])
        if isinstance(body, str):
            return Rendered(status, body.encode("utf-8"), content_types[-1][1], headers, dropped)
        dropped += ("content-type-for-json",)
    return Rendered(status, json_body(body), JSON_CONTENT_TYPE, headers, dropped)


def render_job(
    job: Mapping[str, Any], fmt: Format, limits: HeaderLimits = HeaderLimits()
) -> Rendered:
    """The answer for a finished ``job`` (the full TheEye job document) in format ``fmt``."""
    status = 200 if job.get("state") == "success" else 500
    if fmt.kind is FormatKind.PARSE:
        return _render_parse(job, fmt, limits)
    if fmt.kind is FormatKind.RESULT:
        result = job.get("result")
        return _json(status, result if result is not None else {})
    if fmt.kind is FormatKind.FULL:
        return _json(status, job if isinstance(job, dict) else dict(job))
    output = job.get("output")
    return _json(status, output if output is not None else [])
