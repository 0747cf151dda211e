"""The gateway against recorded supervisor exchanges (tests/recordings), replayed by aioresponses.

Every request/response example of the TheEye seeds (theeye-sync-api.md, theeye-wait-result.md):
the formats ``output``, ``parse``, ``parse=1``, ``result``, ``full``; the flat and nested response
objects; success and failure; ``parse`` falling back to the raw output. Re-record with
``python -m sync_gateway.emulator.record tests/recordings``.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from aioresponses import aioresponses
from conftest import TOKEN, gateway_settings

from sync_gateway.app import create_app

RECORDINGS = Path(__file__).parent / "recordings"
UPSTREAM = "http://upstream.test"
JSON_TYPE = "application/json; charset=utf-8"
ID_PLACEHOLDER = "\x00job\x00"
REGIMEN = {
    "regimen_id": "operaciones_cambio_apartado_a",
    "regla_fecha_vencimiento": "byLabourDay",
    "fecha": "2023-01-02T00:00:00.000Z",
    "status": "por_vencer",
    "periodo_origen": "01-01-2023",
    "periodo_www3": "20230101",
    "prorroga": False,
    "createdAt": "2023-10-02T19:53:40.998Z",
    "updatedAt": "2023-10-02T19:53:40.998Z",
    "id": "651b1fc444587926e420dc37",
    "area": "Securities",
    "nro_en_www3": "14_1",
    "nombre_en_w3": "OPERACIONES DE CAMBIO",
    "tipo_de_regimen": "Obligatorio",
    "regimen": "Operaciones de Cambio (R.I. - O.C.) - Apartado A ",
}
SEED_FAILURE_PARSE = (
    b'{"message":"Validation Error. Invalid Argument Value","statusCode":418,'
    b'"name":"ClientError","code":"","status":418}'
)
SEED_FAILURE_OUTPUT = (
    b'["{\\"message\\":\\"Validation Error. Invalid Argument Value\\",\\"statusCode\\":418,'
    b'\\"name\\":\\"ClientError\\",\\"code\\":\\"\\",\\"status\\":418}"]'
)


def compact(value: Any) -> bytes:
    """JSON as JSON.stringify writes it (what the seeds show)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def recording(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((RECORDINGS / f"{name}.json").read_text("utf-8"))
    return data


def document(name: str) -> dict[str, Any]:
    """The job document a recorded exchange answered."""
    doc: dict[str, Any] = json.loads(recording(name)["body"])
    return doc


def url_pattern(rec: dict[str, Any]) -> re.Pattern[str]:
    """The upstream URL of a recording as a regex: any job id, any query."""
    path = rec["path"]
    if rec.get("job_id"):
        path = path.replace(rec["job_id"], ID_PLACEHOLDER)
    escaped = re.escape(UPSTREAM + path).replace(re.escape(ID_PLACEHOLDER), "[0-9a-f]{24}")
    return re.compile(f"^{escaped}(\\?.*)?$")


def serve(
    mock: aioresponses,
    rec: dict[str, Any],
    *,
    body: str | None = None,
    repeat: bool = True,
) -> None:
    """Register one recorded exchange (optionally with another body) with aioresponses."""
    headers = {k: v for k, v in rec["headers"].items() if k.lower() != "content-type"}
    mock.add(
        url_pattern(rec),
        method=rec["method"],
        status=rec["status"],
        body=rec["body"] if body is None else body,
        headers=headers,
        content_type=rec["headers"].get("Content-Type", "application/json"),
        repeat=repeat,
    )


def serve_example(mock: aioresponses, example: str) -> str:
    """The create and the final result of a recorded example; its job id."""
    create = recording(f"{example}.create")
    serve(mock, create)
    serve(mock, recording(f"{example}.result"))
    job_id: str = create["job_id"]
    return job_id


def serve_finished_document(mock: aioresponses, doc: dict[str, Any]) -> str:
    """A create, then ``doc`` (a changed job document) as the finished result; its job id."""
    create = recording("rest_success.create")
    serve(mock, create)
    result = recording("rest_success.result")
    serve(mock, result, body=json.dumps({**doc, "id": create["job_id"]}))
    job_id: str = create["job_id"]
    return job_id


@pytest.fixture
def upstream() -> Iterator[aioresponses]:
    with aioresponses(passthrough=["http://127.0.0.1"]) as mock:
        yield mock


@pytest.fixture
async def client(
    aiohttp_client: Callable[..., Any], upstream: aioresponses
) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(gateway_settings(UPSTREAM))
    test_client: TestClient[Any, Any] = await aiohttp_client(app)
    yield test_client


def job_path(task: str, query: str = "") -> str:
    sep = "&" if query else ""
    return f"/demo/task/{task}/job?{query}{sep}access_token={TOKEN}"


def task_of(example: str) -> str:
    return str(recording(f"{example}.create")["path"].split("/")[3])


# (example, format query, seed body, expected status, expected body, task-set headers)
def _seed_cases() -> list[tuple[str, str, str, int, bytes, dict[str, str]]]:
    success = document("rest_success.result")
    nested = document("api_test_nested.result")
    flat = document("api_test_flat.result")
    return [
        ("rest_success", "", '{"task_arguments":[100]}', 200, compact(success["output"]), {}),
        ("rest_success", "output", '{"task_arguments":[100]}', 200, compact(success["output"]), {}),
        ("rest_failure", "", '{"task_arguments":[200]}', 500, SEED_FAILURE_OUTPUT, {}),
        (
            "rest_success",
            "parse",
            '{"task_arguments":[100]}',
            200,
            success["output"][0].encode(),
            {},
        ),
        ("rest_failure", "parse", '{"task_arguments":[200]}', 418, SEED_FAILURE_PARSE, {}),
        ("rest_success", "result", "", 200, compact(success["result"]), {}),
        ("rest_failure", "result", "", 500, compact(document("rest_failure.result")["result"]), {}),
        ("api_test_nested", "parse", "", 201, compact(REGIMEN), {"TheEyeJobId": nested["id"]}),
        ("api_test_flat", "parse", "", 201, compact(REGIMEN), {"TheEyeJobId": flat["id"]}),
        ("api_test_flat", "output", "", 200, compact(flat["output"]), {}),
        ("api_test_nested", "output", "", 200, compact(nested["output"]), {}),
        ("crash", "parse", "", 500, b'["starting the crash task"]', {}),
        ("two_outputs", "parse=1", "", 202, b'{"name":"tomer","statusCode":202}', {}),
        (
            "two_outputs",
            "parse",
            "",
            200,
            b'["not json","{\\"name\\":\\"tomer\\",\\"statusCode\\":202}"]',
            {},
        ),
    ]


@pytest.mark.parametrize(
    ("example", "fmt", "body", "status", "expected", "task_headers"),
    _seed_cases(),
    ids=lambda v: v if isinstance(v, str) and len(v) < 30 else None,
)
async def test_seed_example_answers_as_the_sync_api_host(
    client: TestClient[Any, Any],
    upstream: aioresponses,
    example: str,
    fmt: str,
    body: str,
    status: int,
    expected: bytes,
    task_headers: dict[str, str],
) -> None:
    job_id = serve_example(upstream, example)
    resp = await client.post(
        job_path(task_of(example), fmt),
        data=body or None,
        headers={"Content-Type": "application/json"} if body else {},
    )
    assert resp.status == status
    assert await resp.read() == expected
    assert resp.headers["Content-Type"] == JSON_TYPE
    assert resp.headers["X-Job-Id"] == job_id
    for name, value in task_headers.items():
        assert resp.headers.getall(name) == [value]
    if not task_headers:
        assert "TheEyeJobId" not in resp.headers


async def test_full_answers_the_whole_job_document(
    client: TestClient[Any, Any], upstream: aioresponses
) -> None:
    job_id = serve_example(upstream, "rest_success")
    resp = await client.post(job_path(task_of("rest_success"), "full"), data=b"[100]")
    assert resp.status == 200
    assert await resp.read() == recording("rest_success.result")["body"].encode()
    assert resp.headers["X-Job-Id"] == job_id


async def test_full_of_a_failed_job_answers_500_with_the_document(
    client: TestClient[Any, Any], upstream: aioresponses
) -> None:
    serve_example(upstream, "rest_failure")
    resp = await client.post(job_path(task_of("rest_failure"), "full"), data=b"[200]")
    assert resp.status == 500
    doc = await resp.json()
    assert doc == document("rest_failure.result")
    assert doc["state"] == "failure"


async def test_full_matches_the_job_document_endpoint(
    client: TestClient[Any, Any], upstream: aioresponses
) -> None:
    """``full`` is the document ``GET /{customer}/job/{id}`` answers (SPEC 2.1)."""
    serve_example(upstream, "rest_success")
    resp = await client.post(job_path(task_of("rest_success"), "full"), data=b"[100]")
    assert await resp.json() == document("rest_success.job")


async def test_create_forwards_body_and_token_unchanged(
    client: TestClient[Any, Any], upstream: aioresponses
) -> None:
    serve_example(upstream, "rest_success")
    body = b'{"task_arguments":[100]}'
    resp = await client.post(
        job_path(task_of("rest_success"), "parse"),
        data=body,
        headers={"Content-Type": "application/json"},
    )
    assert resp.status == 200
    creates = [(k, v) for k, v in upstream.requests.items() if k[0] == "POST"]
    assert len(creates) == 1
    (_, url), calls = creates[0]
    assert url.path == f"/demo/task/{task_of('rest_success')}/job"
    assert url.query.get("access_token") == TOKEN
    assert "parse" not in url.query  # the gateway's own flags stay with the gateway
    assert calls[0].kwargs["data"] == body


async def test_not_finished_answers_303_and_408_are_waited_through(
    client: TestClient[Any, Any], upstream: aioresponses
) -> None:
    """The supervisor's 303 (counter < limit) and 408 both mean "not yet": keep watching."""
    create = recording("rest_success.create")
    serve(upstream, create)
    serve(upstream, recording("not_finished.result_303"), repeat=False)
    serve(upstream, recording("not_finished.result_408"), repeat=False)
    serve(upstream, recording("rest_success.result"))
    resp = await client.post(job_path(task_of("rest_success"), "parse"), data=b"[100]")
    assert resp.status == 200
    assert await resp.read() == document("rest_success.result")["output"][0].encode()
    assert resp.headers["X-Job-Id"] == create["job_id"]
    results = [k for k in upstream.requests if k[0] == "GET" and k[1].path.endswith("/result")]
    calls = sum(len(upstream.requests[k]) for k in results)
    assert calls == 3


@pytest.mark.parametrize("example", ["wrong_token", "unknown_task"])
async def test_create_rejection_is_passed_through(
    client: TestClient[Any, Any], upstream: aioresponses, example: str
) -> None:
    rec = recording(f"{example}.create")
    serve(upstream, rec)
    query = dict(rec["query"])
    task = rec["path"].split("/")[3]
    resp = await client.post(
        f"/demo/task/{task}/job?access_token={query['access_token']}", data=rec["request_body"]
    )
    assert resp.status == rec["status"]
    assert await resp.read() == rec["body"].encode()
    assert resp.headers["Content-Type"].startswith("application/json")
    assert "X-Job-Id" not in resp.headers


async def test_result_reattach_answers_retained_result_in_another_format(
    client: TestClient[Any, Any], upstream: aioresponses
) -> None:
    job_id = serve_example(upstream, "api_test_nested")
    first = await client.post(job_path(task_of("api_test_nested"), "output"))
    assert first.status == 200
    again = await client.get(f"/job/{job_id}/result?parse&access_token={TOKEN}")
    assert again.status == 201
    assert await again.read() == compact(REGIMEN)
    assert again.headers["TheEyeJobId"] == job_id
    assert again.headers["X-Job-Id"] == job_id
