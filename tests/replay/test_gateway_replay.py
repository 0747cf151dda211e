"""The gateway against recorded supervisor exchanges (tests/recordings), replayed by aioresponses.

Every request/response example of the TheEye seeds (theeye-sync-api.md, theeye-wait-result.md):
the formats ``output``, ``parse``, ``parse=1``, ``result``, ``full``; the flat and nested response
objects; success and failure; ``parse`` falling back to the raw output. Re-record with
``python -m sync_gateway.emulator.record tests/recordings``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from aioresponses import aioresponses
from conftest import TOKEN
from support.helpers import document, recording, serve, serve_example
from support.seeds import REGIMEN, SEED_FAILURE_OUTPUT, SEED_FAILURE_PARSE

JSON_TYPE = "application/json; charset=utf-8"


def compact(value: Any) -> bytes:
    """JSON as JSON.stringify writes it (what the seeds show)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


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
