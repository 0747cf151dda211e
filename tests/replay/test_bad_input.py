"""Bad input: every answer the gateway makes itself is JSON with ``error`` and ``message``.

Malformed ids, query values, bodies, oversized bodies, unknown routes and methods (SPEC 2.5),
and response objects from a task that carry invalid headers or status codes (SPEC 2.2),
replayed from recorded job documents. Requests that must be refused before anything goes
upstream are sent to a gateway whose upstream is aioresponses with nothing registered, and
the test checks that nothing was asked upstream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from aioresponses import aioresponses
from conftest import HELLO_TASK, TOKEN, UPSTREAM, Gateway
from support.helpers import document, serve_finished_document
from yarl import URL

from sync_gateway.emulator import EmulatorServer

TASK = "64ac0b46c06feba9b89ad795"
JOB = "6b04575e3ea72b560eb2dfb3"


def assert_json_error(status: int, content_type: str, body: bytes) -> dict[str, Any]:
    """A gateway error: JSON with error and message, no HTML, no traceback."""
    assert content_type.startswith("application/json"), (status, content_type, body)
    assert b"Traceback" not in body
    assert b"<html" not in body.lower()
    payload: dict[str, Any] = json.loads(body)
    assert isinstance(payload["error"], str) and payload["error"]
    assert isinstance(payload["message"], str) and payload["message"]
    return payload


async def assert_refused(
    resp: aiohttp.ClientResponse, upstream: aioresponses, status: int = 400
) -> dict[str, Any]:
    """A JSON error answered before anything went upstream: its payload."""
    body = await resp.read()
    assert resp.status == status
    payload = assert_json_error(resp.status, resp.headers["Content-Type"], body)
    assert upstream.requests == {}
    return payload


async def raw_request(
    client: TestClient[Any, Any] | str,
    method: str,
    target: str,
    body: bytes = b"",
    *,
    chunked: bool = False,
) -> tuple[int, dict[str, str], bytes]:
    """Send a request line exactly as written (no client-side normalisation of the path);
    ``client`` is a test client or a base URL ``http://127.0.0.1:port``."""
    if isinstance(client, str):
        url = URL(client)
        host, port = url.host, url.port
    else:
        host, port = client.server.host, client.server.port
    reader, writer = await asyncio.open_connection(host, port)
    try:
        head = f"{method} {target} HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n"
        if chunked:
            head += "Transfer-Encoding: chunked\r\n"
            body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in split(body)) + b"0\r\n\r\n"
        else:
            head += f"Content-Length: {len(body)}\r\n"
        writer.write(head.encode("latin-1") + b"\r\n" + body)
        await writer.drain()
        data = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    header_block, _, payload = data.partition(b"\r\n\r\n")
    lines = header_block.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    parsed = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return status, parsed, payload


def split(body: bytes, size: int = 40) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


# -- malformed path ids ---------------------------------------------------------------------

BAD_IDS = [
    ("dot-dot", "POST", f"/demo/task/../job?access_token={TOKEN}", "task"),
    ("encoded-dot-dot", "POST", f"/demo/task/%2E%2E/job?access_token={TOKEN}", "task"),
    ("encoded-slash", "POST", f"/demo/task/a%2Fb/job?access_token={TOKEN}", "task"),
    ("encoded-space", "POST", f"/demo/task/a%20b/job?access_token={TOKEN}", "task"),
    ("200-chars", "POST", f"/demo/task/{'a' * 200}/job?access_token={TOKEN}", "task"),
    ("unicode", "POST", f"/demo/task/t%C3%A9st/job?access_token={TOKEN}", "task"),
    ("unicode-customer", "POST", f"/d%C3%A9mo/task/{TASK}/job?access_token={TOKEN}", "customer"),
    ("dot-dot-customer", "POST", f"/../task/{TASK}/job?access_token={TOKEN}", "customer"),
    ("secret-slash", "POST", f"/demo/task/{TASK}/secret/a%2Fb/job", "secret"),
    ("compat-space", "POST", f"/task/a%20b/job?access_token={TOKEN}", "task"),
    ("result-dot-dot", "GET", f"/job/../result?access_token={TOKEN}", "job"),
    ("result-slash", "GET", f"/job/a%2Fb/result?access_token={TOKEN}", "job"),
    ("result-unicode-post", "POST", f"/job/%E2%9C%93/result?access_token={TOKEN}", "job"),
    ("result-secret-dots", "GET", f"/job/{JOB}/secret/%2E%2E/result", "secret"),
]


@pytest.mark.parametrize(
    ("method", "target", "parameter"),
    [case[1:] for case in BAD_IDS],
    ids=[case[0] for case in BAD_IDS],
)
async def test_malformed_path_id_answers_400_naming_the_segment(
    client: TestClient[Any, Any], upstream: aioresponses, method: str, target: str, parameter: str
) -> None:
    status, headers, body = await raw_request(client, method, target)
    assert status == 400
    payload = assert_json_error(status, headers["content-type"], body)
    assert payload["parameter"] == parameter
    assert upstream.requests == {}


@pytest.mark.parametrize(
    "target",
    [f"/demo/task//job?access_token={TOKEN}", "/job//result", "/demo/task/abc/job/extra"],
    ids=["empty-task", "empty-job", "extra-segment"],
)
async def test_path_that_cannot_be_routed_answers_404_json(
    client: TestClient[Any, Any], upstream: aioresponses, target: str
) -> None:
    status, headers, body = await raw_request(client, "POST", target)
    assert status == 404
    assert assert_json_error(status, headers["content-type"], body)["error"] == "not_found"
    assert upstream.requests == {}


@pytest.mark.parametrize(
    "target", ["/demo/task/a b/job", "/demo/task/t\xe9st/job"], ids=["raw-space", "raw-latin1"]
)
async def test_unparsable_request_line_is_refused_by_the_http_parser(
    client: TestClient[Any, Any], upstream: aioresponses, target: str
) -> None:
    """aiohttp's parser refuses these before any route or middleware: a plain-text 400."""
    status, _, body = await raw_request(client, "POST", target)
    assert status == 400
    assert b"Traceback" not in body
    assert upstream.requests == {}


# -- bad query values and headers -----------------------------------------------------------

BAD_QUERIES = [
    ("parse=abc", "parse"),
    ("parse=-1", "parse"),
    ("parse=1.5", "parse"),
    ("parse=1&parse=2", "parse"),
    ("output&parse", "format"),
    ("full&result", "format"),
    ("timeout=abc", "timeout"),
    ("timeout=-1", "timeout"),
    ("timeout=nan", "timeout"),
    ("timeout=inf", "timeout"),
    ("limit=abc", "limit"),
    ("limit=1.5", "limit"),
    ("limit=-2", "limit"),
    ("counter=x", "counter"),
]


@pytest.mark.parametrize(("query", "parameter"), BAD_QUERIES)
async def test_bad_query_value_on_create_answers_400_naming_it(
    client: TestClient[Any, Any], upstream: aioresponses, query: str, parameter: str
) -> None:
    resp = await client.post(f"/demo/task/{TASK}/job?{query}&access_token={TOKEN}", data=b"[1]")
    assert (await assert_refused(resp, upstream))["parameter"] == parameter


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("timeout=abc", "timeout"),
        ("counter=-1", "counter"),
        ("limit=x", "limit"),
        ("parse=abc", "parse"),
        ("output&full", "format"),
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_bad_query_value_on_reattach_answers_400_naming_it(
    client: TestClient[Any, Any], upstream: aioresponses, method: str, query: str, parameter: str
) -> None:
    resp = await client.request(method, f"/job/{JOB}/result?{query}&access_token={TOKEN}")
    assert (await assert_refused(resp, upstream))["parameter"] == parameter


@pytest.mark.parametrize(
    ("name", "value"),
    [("Prefer", "wait=abc"), ("Prefer", "wait=1.5"), ("Idempotency-Key", "k" * 300)],
)
async def test_bad_header_value_answers_400_naming_it(
    client: TestClient[Any, Any], upstream: aioresponses, name: str, value: str
) -> None:
    resp = await client.post(
        f"/demo/task/{TASK}/job?access_token={TOKEN}", data=b"[1]", headers={name: value}
    )
    assert (await assert_refused(resp, upstream))["parameter"] == name


# -- bodies -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[1,", b"42", b'"text"', b"true", b"null", b"\xff\xfe"],
    ids=["broken-object", "broken-array", "number", "string", "bool", "null", "not-utf8"],
)
async def test_body_that_is_not_a_json_array_or_object_answers_400(
    client: TestClient[Any, Any], upstream: aioresponses, body: bytes
) -> None:
    resp = await client.post(
        f"/demo/task/{TASK}/job?access_token={TOKEN}",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    assert (await assert_refused(resp, upstream))["parameter"] == "body"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize(
    "path", [f"/demo/task/{TASK}/job", f"/task/{TASK}/job", f"/job/{JOB}/result"]
)
async def test_body_over_max_body_bytes_answers_413(
    make_gateway: Callable[..., Any],
    upstream: aioresponses,
    framing: str,
    path: str,
) -> None:
    gw: Gateway = await make_gateway(UPSTREAM, server={"max_body_bytes": 100})
    body = json.dumps(["x" * 200]).encode()
    target = f"{path}?access_token={TOKEN}"
    status, headers, payload = await raw_request(
        gw.url, "POST", target, body, chunked=framing == "chunked"
    )
    assert status == 413
    assert assert_json_error(status, headers["content-type"], payload)["error"] == (
        "payload_too_large"
    )
    assert upstream.requests == {}


async def test_body_of_exactly_max_body_bytes_is_accepted(
    emulator: EmulatorServer, make_gateway: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    gw: Gateway = await make_gateway(emulator.url, server={"max_body_bytes": 100})
    body = json.dumps(["x" * 96]).encode()
    assert len(body) == 100
    url = f"{gw.url}/demo/task/{HELLO_TASK}/job?parse&access_token={TOKEN}"
    async with http.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 200
        assert await resp.read() == b'{"message":"Hello world!"}'


# -- routes and methods -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nope", 404),
        ("POST", "/demo/task", 404),
        ("GET", "/demo/job/abc/cancel", 404),
        ("GET", f"/demo/task/{TASK}/job", 405),
        ("PUT", f"/job/{JOB}/result", 405),
        ("DELETE", f"/task/{TASK}/job", 405),
        ("POST", "/healthz", 405),
    ],
)
async def test_unknown_route_and_wrong_method_answer_json(
    client: TestClient[Any, Any], upstream: aioresponses, method: str, path: str, status: int
) -> None:
    resp = await client.request(method, path)
    payload = await assert_refused(resp, upstream, status)
    assert payload["error"] == ("not_found" if status == 404 else "method_not_allowed")


# -- response objects from the task: headers and status codes -----------------------------------


def with_output(line: object, state: str = "success") -> dict[str, Any]:
    """The recorded success document, its output replaced by one JSON line."""
    doc = document("rest_success.result")
    return {**doc, "state": state, "output": [json.dumps(line)]}


async def parse_answer(
    client: TestClient[Any, Any], upstream: aioresponses, doc: dict[str, Any]
) -> tuple[aiohttp.ClientResponse, bytes]:
    job_id = serve_finished_document(upstream, doc)
    resp = await client.post(f"/demo/task/{TASK}/job?parse&access_token={TOKEN}", data=b"[100]")
    body = await resp.read()
    assert resp.headers["X-Job-Id"] == job_id
    return resp, body


BAD_HEADERS = {
    "X-Kept": "yes",
    "X-Number": 42,
    "X-Crlf": "a\r\nInjected: 1",
    "X-Lf": "a\nInjected: 2",
    "X-Nul": "a\x00b",
    "Bad Name": "v",
    "Bad:Colon": "v",
    "X-Object": {"a": 1},
    "Connection": "close",
    "Keep-Alive": "timeout=5",
    "Transfer-Encoding": "chunked",
    "Content-Length": "5",
    "Upgrade": "h2c",
    "TE": "trailers",
    "Trailer": "X-Kept",
    "Proxy-Authorization": "Basic eA==",
    "Proxy-Connection": "keep-alive",
    "X-Job-Id": "forged",
}


@pytest.mark.parametrize("form", ["nested", "flat"])
async def test_task_headers_that_are_invalid_or_hop_by_hop_are_dropped(
    client: TestClient[Any, Any], upstream: aioresponses, form: str
) -> None:
    response = {"statusCode": 200, "headers": BAD_HEADERS, "body": {"a": 1}}
    line = {"response": response} if form == "nested" else response
    resp, body = await parse_answer(client, upstream, with_output(line))
    assert resp.status == 200
    assert body == b'{"a":1}'
    assert resp.headers.getall("X-Kept") == ["yes"]
    assert resp.headers.getall("X-Number") == ["42"]
    assert "Injected" not in resp.headers
    for name in ("X-Crlf", "X-Lf", "X-Nul", "X-Object", "Upgrade", "TE", "Trailer", "Keep-Alive"):
        assert name not in resp.headers
    assert not any(name.lower().startswith("proxy-") for name in resp.headers)
    assert resp.headers.get("Transfer-Encoding") != "chunked"
    assert resp.headers["Content-Length"] == str(len(body))
    assert resp.headers.getall("X-Job-Id") != ["forged"]


# (statusCode in a response object, job state, expected status)
STATUS_CODES = [
    (99, "success", 200),
    (600, "success", 200),
    ("abc", "success", 200),
    ("201", "success", 201),
    (" 201", "success", 200),
    (201.0, "success", 201),
    (True, "success", 200),
    (None, "success", 200),
    (418, "success", 418),
    (99, "failure", 500),
    ("abc", "failure", 500),
    (204, "failure", 204),
]


@pytest.mark.parametrize(("code", "state", "status"), STATUS_CODES)
@pytest.mark.parametrize("form", ["nested", "flat"])
async def test_response_object_status_code_is_used_only_when_valid(
    client: TestClient[Any, Any],
    upstream: aioresponses,
    form: str,
    code: object,
    state: str,
    status: int,
) -> None:
    response = {"statusCode": code, "body": {"ok": state}}
    line = {"response": response} if form == "nested" else response
    resp, body = await parse_answer(client, upstream, with_output(line, state))
    assert resp.status == status
    if status != 204:
        assert json.loads(body) == {"ok": state}


@pytest.mark.parametrize(
    ("line", "status"),
    [
        ({"statusCode": 409, "message": "conflict"}, 409),
        ({"statusCode": "409", "message": "conflict"}, 200),
        ({"statusCode": 99, "message": "conflict"}, 200),
        ({"statusCode": 600, "message": "conflict"}, 200),
    ],
)
async def test_plain_object_status_code_counts_only_when_numeric_100_to_599(
    client: TestClient[Any, Any], upstream: aioresponses, line: dict[str, Any], status: int
) -> None:
    resp, body = await parse_answer(client, upstream, with_output(line))
    assert resp.status == status
    assert json.loads(body) == line


async def test_wrong_method_answer_lists_the_allowed_methods(
    client: TestClient[Any, Any], upstream: aioresponses
) -> None:
    resp = await client.get(f"/demo/task/{TASK}/job")
    assert resp.status == 405
    assert resp.headers.get("Allow") == "POST"
