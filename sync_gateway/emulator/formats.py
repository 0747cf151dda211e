"""The supervisor's result formatting (``parseJobResponse``) and its query-string quirks."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson

_INDEX = re.compile(r"0|[1-9][0-9]*")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_DROPPED_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})


def js_truthy(value: Any) -> bool:
    """JavaScript truthiness of a JSON value."""
    if value is None or value is False:
        return False
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value != 0 and not math.isnan(value)
    if isinstance(value, str):
        return value != ""
    return True


def js_number(text: str | None) -> float:
    """JavaScript ``Number(text)`` for a query-string value (``None`` is ``undefined``)."""
    if text is None:
        return math.nan
    s = text.strip()
    if s == "":
        return 0.0
    if s in ("Infinity", "+Infinity"):
        return math.inf
    if s == "-Infinity":
        return -math.inf
    if re.fullmatch(r"0[xX][0-9a-fA-F]+", s):
        return float(int(s, 16))
    if re.fullmatch(r"[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?)", s):
        return float(s)
    return math.nan


def js_number_str(value: float) -> str:
    """A number as JavaScript prints it (integers without ``.0``)."""
    if math.isfinite(value) and value.is_integer():
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)


def clamp_timeout(raw: str | None, minimum: float, maximum: float) -> float:
    """``waitJobResult``: missing/empty or above max → max; below min → min (seconds)."""
    if not raw:
        return maximum
    value = js_number(raw)
    if value > maximum:
        return maximum
    if value < minimum:
        return minimum
    if math.isnan(value):  # setTimeout(NaN) fires at once
        return 0.0
    return value


def encode_query(pairs: Iterable[tuple[str, str]], updates: Mapping[str, str]) -> str:
    """``qs.stringify(Object.assign({}, query, updates))``: keys keep their first position."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for key, value in pairs:
        if key in updates:
            if key not in seen:
                seen.add(key)
                out.append((key, updates[key]))
        else:
            out.append((key, value))
    out.extend((k, v) for k, v in updates.items() if k not in seen)
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in out)


@dataclass
class Formatted:
    status: int
    body: Any
    headers: dict[str, str] | None = None


def _json_error_message(text: str, exc: orjson.JSONDecodeError) -> str:
    pos = getattr(exc, "pos", 0) or 0
    if pos >= len(text):
        return "Unexpected end of JSON input"
    return f"Unexpected token {text[pos]} in JSON at position {pos}"


def _headers(raw: Any) -> dict[str, str] | None:
    if not isinstance(raw, dict):
        return None
    headers: dict[str, str] = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            continue
        if name.lower() in _DROPPED_HEADERS:
            continue
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
        if any(c in text for c in "\r\n\x00"):
            continue
        headers[name] = text
    return headers


def _status(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and value == int(value) and 100 <= value <= 599:
        return int(value)
    if isinstance(value, str) and value.isdigit() and 100 <= int(value) <= 599:
        return int(value)
    return None


def parse_job_response(job: Mapping[str, Any], query: Mapping[str, str]) -> Formatted:
    """The supervisor's ``parseJobResponse`` (``result``/``full``/``output``/default parse)."""
    status: int | None = None
    headers: dict[str, str] | None = None
    body: Any = None
    if "result" in query:
        body = job.get("result")
    elif "full" in query:
        body = job
    elif "output" in query:
        body = job.get("output")
    else:
        output = job.get("output")
        raw_index = query.get("parse") or "0"
        if isinstance(output, list):
            arg = None
            if _INDEX.fullmatch(raw_index) and int(raw_index) < len(output):
                arg = output[int(raw_index)]
            try:
                resp: Any = None
                if js_truthy(arg):
                    resp = orjson.loads(arg) if isinstance(arg, str) else arg
                response = resp.get("response") if isinstance(resp, dict) else None
                if js_truthy(response):
                    inner = response.get("body") if isinstance(response, dict) else None
                    body = inner if js_truthy(inner) else response
                    if isinstance(response, dict):
                        status = _status(response.get("statusCode"))
                        headers = _headers(response.get("headers"))
                else:
                    body = resp if js_truthy(resp) else None
                    if isinstance(resp, dict):
                        code = resp.get("statusCode")
                        if isinstance(code, int | float) and not isinstance(code, bool):
                            status = _status(code)
            except orjson.JSONDecodeError as exc:
                body = {
                    "message": "Invalid task ejecution result. Cannot be parsed",
                    "details": _json_error_message(str(arg), exc),
                    "result": job.get("result"),
                }
                status = 500
    if status is None:
        status = 200 if job.get("state") == "success" else 500
    return Formatted(status=status, body=body, headers=headers)
