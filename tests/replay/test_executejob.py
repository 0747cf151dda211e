"""executeJob / getJobStatus (SPEC 3.3): the gateway in front of the InfoLink-style emulator,
and the adapter replaying recorded exchanges (``tests/recordings/executejob``)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import orjson
import pytest
import structlog
from conftest import Gateway
from multidict import MultiDict
from support.helpers import (
    answer_of,
    assert_no_machine_specific_origin,
    call,
    replay,
    scenario,
    step_until_final,
)

from sync_gateway.config import RouteSettings, UpstreamSettings
from sync_gateway.core.errors import BadRequest, GatewayError
from sync_gateway.core.types import CreateRequest, Credentials, Snapshot
from sync_gateway.emulator.executejob_emulator import (
    API_KEY,
    APP_ID,
    JOB_ID,
    OPERATION,
    ExecuteJobEmulator,
    ExecuteJobEmulatorSettings,
    seed_results,
)
from sync_gateway.metrics import Metrics
from sync_gateway.render.executejob import without_schema
from sync_gateway.upstream.executejob import ExecuteJobAdapter
from sync_gateway.upstream.http import UpstreamClient

MESSAGE = "Step 'Load companies' failed: connection refused"
SUCCESS = {"status": "success", "result": {"results": seed_results()}}

Emu = Callable[..., Awaitable[ExecuteJobEmulator]]


def job_body(**kw: Any) -> dict[str, Any]:
    return {"apiKey": API_KEY, "appId": APP_ID, "operation": OPERATION, **kw}


@pytest.fixture
def emu(cleanup: AsyncExitStack) -> Emu:
    """``await emu(**settings)``: a running emulator, closed at the end of the test."""
    return lambda **kw: cleanup.enter_async_context(
        ExecuteJobEmulator(ExecuteJobEmulatorSettings(**kw))
    )


@pytest.fixture
def gw(route_gateway: Callable[..., Awaitable[Gateway]]) -> Callable[[str], Awaitable[Gateway]]:
    async def make(upstream: str) -> Gateway:
        return await route_gateway(
            method="POST",
            path="/infolink/run",
            adapter="executejob",
            upstream=upstream,
            name="infolink",
        )

    return make


async def run(http: aiohttp.ClientSession, gateway: Gateway, body: Any, **kw: Any) -> Any:
    return await call(http, "POST", f"{gateway.url}/infolink/run", json=body, **kw)


def finish_all(server: ExecuteJobEmulator) -> None:
    for job in server.state.jobs.values():
        job.done_at = 0.0


# ---- over sockets ---------------------------------------------------------------------------


async def test_completed_answers_what_isasync_false_would_have(
    emu: Emu, gw: Callable[[str], Awaitable[Gateway]], http: aiohttp.ClientSession
) -> None:
    server = await emu(duration=0.2)
    gateway = await gw(server.api_url)
    status, body, resp = await run(http, gateway, job_body())
    sync_status, sync_body, _ = await call(
        http, "POST", f"{server.api_url}/executeJob.jsp", json=job_body(isAsync=False)
    )
    assert (status, body) == (sync_status, sync_body) == (200, SUCCESS)
    job = server.state.jobs[resp.headers["X-Job-Id"]]
    assert job.id == resp.headers["X-Job-Id"]
    create = orjson.loads(server.state.exchanges[0]["request_body"])
    assert create == job_body(jobId=job.id, isAsync=True)


async def test_no_result_schema_drops_each_schema(
    emu: Emu, gw: Callable[[str], Awaitable[Gateway]], http: aiohttp.ClientSession
) -> None:
    server = await emu()
    gateway = await gw(server.api_url)
    status, body, _ = await run(http, gateway, job_body(noResultSchema=True))
    _, sync_body, _ = await call(
        http,
        "POST",
        f"{server.api_url}/executeJob.jsp",
        json=job_body(isAsync=False, noResultSchema=True),
    )
    assert (status, body) == (200, sync_body)
    assert "schema" not in body["result"]["results"][0]["result"]
    assert body["result"]["results"][0]["result"]["records"][0] == {
        "company_name": "IBM",
        "id": "1",
    }


async def test_callers_job_id_is_used_and_async_forced(
    emu: Emu, gw: Callable[[str], Awaitable[Gateway]], http: aiohttp.ClientSession
) -> None:
    server = await emu()
    gateway = await gw(server.api_url)
    status, _, resp = await run(http, gateway, job_body(jobId="order-42.a", isAsync=False))
    assert (status, resp.headers["X-Job-Id"]) == (200, "order-42.a")
    assert orjson.loads(server.state.exchanges[0]["request_body"])["isAsync"] is True


@pytest.mark.parametrize(
    ("outcome", "with_results"), [("completedWithError", True), ("stopped", False)]
)
async def test_failed_job_answers_500_with_message_status_and_id(
    emu: Emu,
    gw: Callable[[str], Awaitable[Gateway]],
    http: aiohttp.ClientSession,
    outcome: str,
    with_results: bool,
) -> None:
    server = await emu(outcome=outcome, failure_results=with_results)
    gateway = await gw(server.api_url)
    status, body, _ = await run(http, gateway, job_body(jobId="job-1", noResultSchema=True))
    expected: dict[str, Any] = {"message": MESSAGE, "jobStatus": outcome, "jobId": "job-1"}
    if with_results:
        expected["results"] = without_schema(seed_results())
    assert (status, body) == (500, {"status": "error", "result": expected})


@pytest.mark.parametrize("error_status", [400, 200, 500])
async def test_create_status_error_is_passed_through_with_its_http_status(
    emu: Emu,
    gw: Callable[[str], Awaitable[Gateway]],
    http: aiohttp.ClientSession,
    error_status: int,
) -> None:
    server = await emu(api_keys={}, error_status=error_status)
    gateway = await gw(server.api_url)
    status, body, _ = await run(http, gateway, job_body())
    assert (status, body) == (
        error_status,
        {"status": "error", "result": {"message": "Invalid API key."}},
    )
    assert server.counts["create"] == 1


async def test_status_error_while_polling_is_passed_through(
    emu: Emu, gw: Callable[[str], Awaitable[Gateway]], http: aiohttp.ClientSession
) -> None:
    server = await emu(duration=3600.0, error_status=200)
    gateway = await gw(server.api_url)
    status, _, resp = await run(http, gateway, job_body(), headers={"Prefer": "wait=1"})
    assert status == 202
    server.state.jobs.clear()  # the upstream forgot the job
    status, body, _ = await call(
        http,
        "GET",
        gateway.url + resp.headers["Location"],
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert (status, body) == (200, {"status": "error", "result": {"message": "Job not found."}})


@pytest.mark.parametrize(
    ("body", "parameter"),
    [
        (job_body(jobId="../etc"), "jobId"),
        (job_body(jobId="a b"), "jobId"),
        (job_body(jobId=7), "jobId"),
        ({"apiKey": API_KEY, "operation": OPERATION}, "appId"),
        ([1, 2], "body"),
    ],
)
async def test_bad_create_bodies_are_400(
    emu: Emu,
    gw: Callable[[str], Awaitable[Gateway]],
    http: aiohttp.ClientSession,
    body: Any,
    parameter: str,
) -> None:
    server = await emu()
    gateway = await gw(server.api_url)
    status, answer, _ = await run(http, gateway, body)
    assert (status, answer["error"], answer["parameter"]) == (400, "bad_request", parameter)
    assert server.counts["create"] == 0


async def test_budget_expiry_answers_202_and_reattach_gets_the_result(
    emu: Emu, gw: Callable[[str], Awaitable[Gateway]], http: aiohttp.ClientSession
) -> None:
    server = await emu(duration=3600.0)
    gateway = await gw(server.api_url)
    status, body, resp = await run(http, gateway, job_body(), headers={"Prefer": "wait=1"})
    job = resp.headers["X-Job-Id"]
    location = resp.headers["Location"]
    assert status == 202
    assert location.startswith(f"/jobs/infolink/{job}/result")
    assert body["id"] == job and body["state"] == "in_progress"
    finish_all(server)
    status, body, _ = await call(
        http, "GET", gateway.url + location, headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert (status, body) == (200, SUCCESS)
    assert (server.counts["create"], server.counts["jobs"]) == (1, 1)


async def test_reattach_without_the_api_key_finds_no_job(
    emu: Emu, gw: Callable[[str], Awaitable[Gateway]], http: aiohttp.ClientSession
) -> None:
    server = await emu()
    gateway = await gw(server.api_url)
    _, _, resp = await run(http, gateway, job_body())
    again = f"{gateway.url}/jobs/infolink/{resp.headers['X-Job-Id']}/result"
    status, body, _ = await call(http, "GET", again)
    # Jobs are keyed by their creator's apiKey: without it there is no such job here.
    assert (status, body["error"]) == (404, "not_found")
    # Another apiKey choosing the same jobId reaches no job of the first caller's either.
    status, body, _ = await call(http, "GET", again, params={"access_token": "wrong-key"})
    assert (status, body["error"]) == (404, "not_found")
    assert server.counts["status"] == 1  # nobody else's request reached the upstream


async def test_a_second_api_key_choosing_the_same_job_id_gets_its_own_job(
    emu: Emu, gw: Callable[[str], Awaitable[Gateway]], http: aiohttp.ClientSession
) -> None:
    second = "second-api-key"
    keys = {API_KEY: (APP_ID,), second: (APP_ID,)}
    server = await emu(duration=3600.0, scoped_ids=True, api_keys=keys)
    gateway = await gw(server.api_url)
    prefer = {"Prefer": "wait=1"}
    status, _, _ = await run(http, gateway, job_body(jobId="same"), headers=prefer)
    assert status == 202  # the first caller's job runs on (a long duration)
    server.settings = dataclasses.replace(
        server.settings, duration=0.0, outcome="stopped", scoped_ids=True, api_keys=keys
    )
    status, body, _ = await run(http, gateway, job_body(jobId="same", apiKey=second))
    # The second caller's own job (stopped), never the first caller's records.
    assert status == 500 and body["result"]["jobStatus"] == "stopped"
    assert server.counts["jobs"] == 2
    again = f"{gateway.url}/jobs/infolink/same/result"
    status, body, _ = await call(http, "GET", again, params={"apiKey": second})
    assert status == 500 and body["result"]["jobStatus"] == "stopped"
    # The first caller's re-attach still reaches its own job, still running.
    status, body, _ = await call(http, "GET", again, params={"apiKey": API_KEY}, headers=prefer)
    assert status == 202 and body["id"] == "same"


async def test_result_is_served_again_from_retention(
    emu: Emu, gw: Callable[[str], Awaitable[Gateway]], http: aiohttp.ClientSession
) -> None:
    server = await emu()
    gateway = await gw(server.api_url)
    _, first, resp = await run(http, gateway, job_body())
    polls = server.counts["status"]
    server.settings = ExecuteJobEmulatorSettings(results=[])  # a second run would differ
    again = f"{gateway.url}/jobs/infolink/{resp.headers['X-Job-Id']}/result"
    status, body, _ = await call(http, "GET", again, headers={"Authorization": f"Bearer {API_KEY}"})
    assert (status, body) == (200, first)
    # The creator's apiKey, as a Bearer token or in the query, is recognised by its
    # fingerprint: no upstream request at all.
    assert server.counts["status"] == polls
    status, body, _ = await call(http, "GET", again, params={"apiKey": API_KEY})
    assert (status, body) == (200, first)
    assert server.counts["status"] == polls


@pytest.mark.parametrize("burst_status", [503, 500, 429])
async def test_status_5xx_burst_is_retried_and_the_create_not_repeated(
    emu: Emu,
    gw: Callable[[str], Awaitable[Gateway]],
    http: aiohttp.ClientSession,
    burst_status: int,
) -> None:
    server = await emu(status_errors=8, burst_status=burst_status)
    gateway = await gw(server.api_url)
    status, body, _ = await run(http, gateway, job_body())
    assert (status, body) == (200, SUCCESS)
    assert server.counts["status"] >= 9
    assert (server.counts["create"], server.counts["jobs"]) == (1, 1)


async def test_non_json_status_answers_are_transient(
    emu: Emu, gw: Callable[[str], Awaitable[Gateway]], http: aiohttp.ClientSession
) -> None:
    server = await emu(garbage_status=3)
    gateway = await gw(server.api_url)
    status, body, _ = await run(http, gateway, job_body())
    assert (status, body) == (200, SUCCESS)
    assert server.counts["status"] == 4


async def test_create_resent_after_a_lost_answer_finds_the_same_job(
    emu: Emu, gw: Callable[[str], Awaitable[Gateway]], http: aiohttp.ClientSession
) -> None:
    server = await emu(lost_creates=1)
    gateway = await gw(server.api_url)
    status, body, _ = await run(http, gateway, job_body())
    assert (status, body) == (200, SUCCESS)
    assert (server.counts["create"], server.counts["jobs"]) == (2, 1)


async def test_api_key_never_in_a_location_or_the_logs(
    emu: Emu,
    gw: Callable[[str], Awaitable[Gateway]],
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = await emu(duration=3600.0, status_errors=1)
    gateway = await gw(server.api_url)
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as events:
        answers = [
            await run(http, gateway, job_body(), headers={"Prefer": "wait=1"}),
            await call(
                http,
                "POST",
                f"{gateway.url}/infolink/run",
                params={"apiKey": API_KEY},
                json={"appId": APP_ID, "operation": OPERATION},
                headers={"Prefer": "wait=1"},
            ),
        ]
        finish_all(server)
        for _, _, resp in list(answers):
            answers.append(
                await call(
                    http,
                    "GET",
                    gateway.url + resp.headers["Location"],
                    headers={"Authorization": f"Bearer {API_KEY}"},
                )
            )
    assert [status for status, _, _ in answers] == [202, 202, 200, 200]
    for _, _, resp in answers:
        assert API_KEY not in str(dict(resp.headers))
    assert len(events) > 0
    assert API_KEY not in repr(events)
    # aiohttp's access log prints query strings; the test runner has it, `serve` turns it off.
    logged = [r.getMessage() for r in caplog.records if r.name != "aiohttp.access"]
    assert API_KEY not in "\n".join(logged)
    out = capsys.readouterr()
    assert API_KEY not in out.out + out.err


async def test_idempotency_key_does_not_attach_another_body_api_key_to_the_job(
    emu: Emu, gw: Callable[[str], Awaitable[Gateway]], http: aiohttp.ClientSession
) -> None:
    server = await emu(api_keys={API_KEY: (APP_ID,), "other-key": (APP_ID,)})
    gateway = await gw(server.api_url)
    headers = {"Idempotency-Key": "same-key"}
    _, _, first = await run(http, gateway, job_body(), headers=headers)
    _, _, second = await run(http, gateway, job_body(apiKey="other-key"), headers=headers)
    assert second.headers["X-Job-Id"] != first.headers["X-Job-Id"]
    assert server.counts["jobs"] == 2


async def test_idempotency_key_does_not_attach_another_query_api_key_to_the_job(
    emu: Emu, gw: Callable[[str], Awaitable[Gateway]], http: aiohttp.ClientSession
) -> None:
    server = await emu(api_keys={API_KEY: (APP_ID,), "other-key": (APP_ID,)})
    gateway = await gw(server.api_url)
    body = {"appId": APP_ID, "operation": OPERATION}
    for key in (API_KEY, "other-key"):
        headers = {"Idempotency-Key": "same-key"}
        await run(http, gateway, body, params={"apiKey": key}, headers=headers)
    assert server.counts["jobs"] == 2


# ---- recorded exchanges, replayed -----------------------------------------------------------


async def run_adapter(session: aiohttp.ClientSession) -> Snapshot | GatewayError:
    """What the engine does with the adapter: create, then step until final."""
    settings = UpstreamSettings(poll_max_interval=0.05)
    route = RouteSettings("POST", "/infolink/run", "executejob", "http://upstream.test/api/v1")
    adapter = ExecuteJobAdapter(
        "infolink", UpstreamClient(session, settings, Metrics()), settings, route
    )
    body = orjson.dumps(job_body(jobId=JOB_ID))
    request = CreateRequest({}, MultiDict(), body, "application/json", Credentials())
    try:
        created = await adapter.create(request)
    except GatewayError as exc:
        return exc
    assert created.credentials == Credentials(extra=(("apiKey", API_KEY),))
    return await step_until_final(adapter, created.ref, created.credentials)


FAILED_WITH_RESULTS = {
    "status": "error",
    "result": {
        "message": MESSAGE,
        "jobStatus": "completedWithError",
        "jobId": JOB_ID,
        "results": seed_results(),
    },
}
STOPPED = {
    "status": "error",
    "result": {"message": MESSAGE, "jobStatus": "stopped", "jobId": JOB_ID},
}


@pytest.mark.parametrize(
    ("name", "status", "body"),
    [
        ("completed", 200, SUCCESS),
        ("completed_with_error", 500, FAILED_WITH_RESULTS),
        ("stopped", 500, STOPPED),
        ("status_5xx_burst", 200, SUCCESS),
        ("garbage_status", 200, SUCCESS),
        ("create_error", 400, {"status": "error", "result": {"message": "Invalid API key."}}),
        ("status_error", 200, {"status": "error", "result": {"message": "Job not found."}}),
    ],
)
async def test_recorded_exchange_replays(name: str, status: int, body: Any) -> None:
    exchanges = scenario("executejob", name)
    outcome, sent = await replay(exchanges, run_adapter)
    assert answer_of(outcome) == (status, body)
    assert len(sent) == len(exchanges)
    assert sum("executeJob.jsp" in url for _, url in sent) == 1


def test_recordings_hold_no_machine_specific_origin() -> None:
    assert_no_machine_specific_origin("executejob")


def test_job_id_validation_is_a_bad_request() -> None:
    from sync_gateway.upstream.executejob import plain_job_id

    assert plain_job_id("a-b_c.9") == "a-b_c.9"
    for bad in ("", "..", "a/b", "x" * 129, None, 3):
        with pytest.raises(BadRequest):
            plain_job_id(bad)
