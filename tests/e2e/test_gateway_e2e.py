"""The gateway in front of the real supervisor emulator, over loopback sockets.

Every format and every seed example end to end, the secret route, Bearer credentials, the
``wait_result=true`` loop followed as ``curl --location`` does, errors passed through, budgets
that run out (202 + re-attach) and cross-customer re-attach.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import orjson
import pytest
from conftest import (
    API_TEST_FLAT_TASK,
    API_TEST_TASK,
    CRASH_TASK,
    DELAY_TASK,
    HELLO_TASK,
    LARGE_TASK,
    OTHER_TOKEN,
    REST_TASK,
    SLOW_TASK,
    TIMEOUT_TASK,
    TOKEN,
    Gateway,
)
from support.seeds import (
    REGIMEN,
    SEED_FAILURE_OUTPUT,
    SEED_FAILURE_PARSE,
    SEED_SUCCESS_OUTPUT,
    SEED_SUCCESS_PARSE,
)

from sync_gateway.emulator import EmulatorServer, load_recipe

JSON_TYPE = "application/json; charset=utf-8"
HELLO = b'{"message":"Hello world!"}'
SECRETS = {task.id: task.secret for task in load_recipe().tasks.values()}


async def post(
    http: aiohttp.ClientSession,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    **kw: Any,
) -> tuple[aiohttp.ClientResponse, bytes]:
    hdrs = {"Content-Type": "application/json"} if body else {}
    hdrs.update(headers or {})
    async with http.post(url, data=body, headers=hdrs, allow_redirects=False, **kw) as resp:
        return resp, await resp.read()


async def get(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> tuple[aiohttp.ClientResponse, bytes]:
    async with http.get(url, headers=headers or {}, allow_redirects=False) as resp:
        return resp, await resp.read()


def job_url(gw: Gateway, task: str, query: str = "") -> str:
    sep = "&" if query else ""
    return f"{gw.url}/demo/task/{task}/job?{query}{sep}access_token={TOKEN}"


def query_of(location: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(location).query, keep_blank_values=True)


# -- every format, every seed example ---------------------------------------------------------

# (task, format query, body, status, body regex)
SEED_EXAMPLES = [
    ("rest-success-default", REST_TASK, "", b'{"task_arguments":[100]}', 200, SEED_SUCCESS_OUTPUT),
    ("rest-success-output", REST_TASK, "output", b"[100]", 200, SEED_SUCCESS_OUTPUT),
    (
        "rest-failure-default",
        REST_TASK,
        "",
        b'{"task_arguments":[200]}',
        500,
        re.escape(SEED_FAILURE_OUTPUT),
    ),
    (
        "rest-success-parse",
        REST_TASK,
        "parse",
        b'{"task_arguments":[100]}',
        200,
        SEED_SUCCESS_PARSE,
    ),
    (
        "rest-failure-parse",
        REST_TASK,
        "parse",
        b'{"task_arguments":[200]}',
        418,
        re.escape(SEED_FAILURE_PARSE),
    ),
    ("rest-failure-parse0", REST_TASK, "parse=0", b"[200]", 418, re.escape(SEED_FAILURE_PARSE)),
    ("hello-parse", HELLO_TASK, "parse", b"", 200, re.escape(HELLO)),
    ("crash-parse-falls-back", CRASH_TASK, "parse", b"", 500, rb'\["starting the crash task"\]'),
    ("crash-output", CRASH_TASK, "", b"", 500, rb'\["starting the crash task"\]'),
]


@pytest.mark.parametrize(
    ("task", "fmt", "body", "status", "pattern"),
    [case[1:] for case in SEED_EXAMPLES],
    ids=[case[0] for case in SEED_EXAMPLES],
)
async def test_seed_example_end_to_end(
    gateway: Gateway,
    http: aiohttp.ClientSession,
    task: str,
    fmt: str,
    body: bytes,
    status: int,
    pattern: bytes,
) -> None:
    resp, data = await post(http, job_url(gateway, task, fmt), body)
    assert resp.status == status
    assert re.fullmatch(pattern, data), data
    assert resp.headers["Content-Type"] == JSON_TYPE
    assert re.fullmatch(r"[0-9a-f]{24}", resp.headers["X-Job-Id"])


@pytest.mark.parametrize("task", [API_TEST_TASK, API_TEST_FLAT_TASK], ids=["nested", "flat"])
async def test_response_object_sets_status_header_and_inner_body(
    gateway: Gateway, http: aiohttp.ClientSession, task: str
) -> None:
    resp, data = await post(http, job_url(gateway, task, "parse"))
    assert resp.status == 201
    job_id = resp.headers["X-Job-Id"]
    assert resp.headers.getall("TheEyeJobId") == [job_id]
    body = orjson.loads(data)
    assert list(body) == list(REGIMEN)
    assert body["regimen_id"] == "operaciones_cambio_apartado_a"


async def test_result_format_answers_the_agent_result(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    resp, data = await post(http, job_url(gateway, API_TEST_TASK, "result"))
    assert resp.status == 200
    result = orjson.loads(data)
    assert {"code", "log", "lastline", "output", "times"} <= set(result)
    assert result["code"] == 0
    assert result["output"]["response"]["statusCode"] == 201
    assert resp.headers["X-Job-Id"]
    assert "TheEyeJobId" not in resp.headers


async def test_full_format_answers_the_job_document(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    resp, data = await post(http, job_url(gateway, REST_TASK, "full"), b"[200]")
    assert resp.status == 500
    doc = orjson.loads(data)
    assert doc["id"] == resp.headers["X-Job-Id"]
    assert (doc["state"], doc["lifecycle"], doc["name"]) == (
        "failure",
        "finished",
        "Rest API Response",
    )
    assert doc["output"] == [SEED_FAILURE_PARSE.decode()]


async def test_output_of_nested_response_is_the_raw_line(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    resp, data = await post(http, job_url(gateway, API_TEST_TASK, "output"))
    assert resp.status == 200
    (line,) = orjson.loads(data)
    assert orjson.loads(line)["response"]["headers"] == {"TheEyeJobId": resp.headers["X-Job-Id"]}


# -- credentials ----------------------------------------------------------------------------


async def test_secret_route_runs_the_task_without_a_token(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    url = f"{gateway.url}/demo/task/{REST_TASK}/secret/{SECRETS[REST_TASK]}/job?parse"
    resp, data = await post(http, url, b'{"task_arguments":[100]}')
    assert resp.status == 200
    assert re.fullmatch(SEED_SUCCESS_PARSE, data)
    assert resp.headers["X-Job-Id"]


async def test_secret_route_with_a_wrong_secret_is_rejected_upstream(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    url = f"{gateway.url}/demo/task/{REST_TASK}/secret/{'0' * 64}/job"
    resp, data = await post(http, url, b"[100]")
    assert resp.status == 403
    assert orjson.loads(data)["message"] == "invalid secret"


async def test_bearer_header_works_instead_of_access_token(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    url = f"{gateway.url}/demo/task/{HELLO_TASK}/job?parse"
    resp, data = await post(http, url, headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status == 200
    assert data == HELLO


async def test_wrong_token_is_passed_through_as_401_json(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    url = f"{gateway.url}/demo/task/{REST_TASK}/job?access_token=wrong-token"
    resp, data = await post(http, url, b"[100]")
    assert resp.status == 401
    assert resp.headers["Content-Type"].startswith("application/json")
    assert orjson.loads(data) == {"statusCode": 401, "message": "Unauthorized"}


async def test_unknown_task_is_passed_through_as_404(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    resp, data = await post(http, job_url(gateway, "ffffffffffffffffffffffff"))
    assert resp.status == 404
    assert orjson.loads(data) == {"statusCode": 404, "message": "task not found"}


# -- failures of the task itself ------------------------------------------------------------


async def test_task_that_outlives_its_timeout_answers_500(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    resp, data = await post(http, job_url(gateway, TIMEOUT_TASK, "full"))
    assert resp.status == 500
    doc = orjson.loads(data)
    assert (doc["state"], doc["lifecycle"]) == ("timeout", "terminated")
    assert doc["id"] == resp.headers["X-Job-Id"]


async def test_large_output_within_limits_is_answered_whole(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    resp, data = await post(http, job_url(gateway, LARGE_TASK, "parse"), b"[300000]")
    assert resp.status == 200
    body = orjson.loads(data)
    assert body["size"] == 300000
    assert len(data) == 300000
    assert set(body["data"]) == {"x"}


# -- supervisor-compatible /task/{task}/job ----------------------------------------------------


async def test_compat_create_without_wait_result_passes_the_created_job_through(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    url = f"{gateway.url}/task/{HELLO_TASK}/job?access_token={TOKEN}"
    resp, data = await post(http, url)
    assert resp.status == 200
    doc = orjson.loads(data)
    assert (doc["state"], doc["lifecycle"], doc["task_id"]) == ("in_progress", "ready", HELLO_TASK)
    assert resp.headers["X-Job-Id"] == doc["id"]
    assert "Location" not in resp.headers


async def follow_manually(
    http: aiohttp.ClientSession, base: str, method: str, url: str, body: bytes | None
) -> tuple[list[aiohttp.ClientResponse], bytes]:
    """What ``curl --location`` does: follow every 303 with a GET, up to 50 hops."""
    hops: list[aiohttp.ClientResponse] = []
    for _ in range(50):
        async with http.request(
            method,
            url,
            data=body,
            headers={"Content-Type": "application/json"} if body else {},
            allow_redirects=False,
        ) as resp:
            data = await resp.read()
        hops.append(resp)
        if resp.status != 303:
            return hops, data
        url, method, body = base + resp.headers["Location"], "GET", None
    raise AssertionError("the loop did not end")


async def test_wait_result_loop_followed_manually_ends_with_the_result(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    query = f"access_token={TOKEN}&limit=20&timeout=0.2&wait_result=true&parse"
    url = f"{gateway.url}/task/{DELAY_TASK}/job?{query}"
    hops, data = await follow_manually(http, gateway.url, "POST", url, b"[1]")
    first = hops[0]
    assert first.status == 303
    job_id = first.headers["X-Job-Id"]
    location = first.headers["Location"]
    assert urlsplit(location).path == f"/job/{job_id}/result"
    loop = dict(query_of(location))
    assert (loop["counter"], loop["limit"], loop["timeout"], loop["parse"]) == (
        "0",
        "20",
        "0.2",
        "",
    )
    assert "wait_result" not in loop
    assert [h.status for h in hops[1:-1]] == [303] * (len(hops) - 2)
    counters = [dict(query_of(h.headers["Location"]))["counter"] for h in hops[:-1]]
    assert counters == [str(i) for i in range(len(counters))]
    assert hops[-1].status == 200
    assert data == b'{"ok":true}'
    assert all(h.headers["X-Job-Id"] == job_id for h in hops)


async def test_wait_result_in_the_json_body_answers_303_with_the_created_job(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    url = f"{gateway.url}/task/{HELLO_TASK}/job?access_token={TOKEN}"
    resp, data = await post(http, url, b'{"wait_result":true}')
    assert resp.status == 303
    doc = orjson.loads(data)
    assert doc["id"] == resp.headers["X-Job-Id"]
    assert dict(query_of(resp.headers["Location"]))["counter"] == "0"


async def test_wait_result_loop_followed_by_aiohttp_redirects(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    query = f"access_token={TOKEN}&limit=20&timeout=0.2&wait_result=true&parse"
    url = f"{gateway.url}/task/{DELAY_TASK}/job?{query}"
    async with http.post(url, json=[0.5], allow_redirects=True, max_redirects=30) as resp:
        data = await resp.read()
        assert resp.status == 200
        assert data == b'{"ok":true}'
        assert resp.history[0].status == 303
        assert resp.headers["X-Job-Id"] == resp.history[0].headers["X-Job-Id"]


@pytest.mark.parametrize("fmt", ["parse", "output", "result"])
async def test_wait_result_loop_ends_like_the_emulators_own_loop(
    gateway: Gateway, emulator: EmulatorServer, http: aiohttp.ClientSession, fmt: str
) -> None:
    query = f"access_token={TOKEN}&limit=20&timeout=0.2&wait_result=true&{fmt}"
    path = f"/task/{HELLO_TASK}/job?{query}"
    ours, our_body = await follow_manually(http, gateway.url, "POST", gateway.url + path, None)
    theirs, their_body = await follow_manually(
        http, emulator.url, "POST", emulator.url + path, None
    )
    assert ours[0].status == theirs[0].status == 303
    assert ours[-1].status == theirs[-1].status == 200
    if fmt == "result":  # times and log differ from one run to the next
        assert orjson.loads(our_body)["output"] == orjson.loads(their_body)["output"]
    else:
        assert our_body == their_body


# -- budgets that run out: 202 and re-attach --------------------------------------------------


async def test_prefer_wait_runs_out_with_202_then_location_gives_the_result(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    resp, data = await post(
        http, job_url(gateway, SLOW_TASK, "parse"), b"[2]", headers={"Prefer": "wait=1"}
    )
    assert resp.status == 202
    job_id = resp.headers["X-Job-Id"]
    body = orjson.loads(data)
    assert (body["id"], body["state"]) == (job_id, "in_progress")
    assert body["lifecycle"] in ("ready", "assigned")
    assert int(resp.headers["Retry-After"]) >= 0
    location = resp.headers["Location"]
    assert urlsplit(location).path == f"/job/{job_id}/result"
    assert ("parse", "") in query_of(location)
    assert ("wait", "1") in query_of(location)  # the budget the client first asked for
    for _ in range(10):  # follow the 202s, each held at most that budget
        final, final_data = await get(http, gateway.url + location)
        if final.status != 202:
            break
        assert ("wait", "1") in query_of(final.headers["Location"])
        location = final.headers["Location"]
    assert final.status == 200
    assert final_data == b'{"slept":2}'
    assert final.headers["X-Job-Id"] == job_id


async def test_202_location_carries_no_credentials_sent_in_a_header(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}", "Prefer": "respond-async"}
    url = f"{gateway.url}/demo/task/{HELLO_TASK}/job?output"
    resp, _ = await post(http, url, headers=auth)
    assert resp.status == 202
    location = resp.headers["Location"]
    assert TOKEN not in location
    assert "access_token" not in location
    final, data = await get(http, gateway.url + location, {"Authorization": f"Bearer {TOKEN}"})
    assert final.status == 200
    assert orjson.loads(data) == [HELLO.decode()]


async def test_reattach_with_another_customers_token_does_not_get_the_result(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    resp, _ = await post(http, job_url(gateway, HELLO_TASK, "parse"))
    assert resp.status == 200
    job_id = resp.headers["X-Job-Id"]
    other, data = await get(
        http, f"{gateway.url}/job/{job_id}/result?parse&access_token={OTHER_TOKEN}"
    )
    assert other.status in (401, 403, 404)
    assert b"Hello world" not in data
    again, data = await get(http, f"{gateway.url}/job/{job_id}/result?parse&access_token={TOKEN}")
    assert (again.status, data) == (200, HELLO)


async def test_reattach_without_credentials_does_not_get_the_result(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    resp, _ = await post(http, job_url(gateway, HELLO_TASK, "parse"))
    job_id = resp.headers["X-Job-Id"]
    other, data = await get(http, f"{gateway.url}/job/{job_id}/result?parse")
    assert other.status in (401, 403)
    assert b"Hello world" not in data


async def test_wait_result_loop_at_its_limit_answers_202_instead_of_408(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    query = f"access_token={TOKEN}&limit=1&timeout=0.2&wait_result=true&parse"
    url = f"{gateway.url}/task/{SLOW_TASK}/job?{query}"
    hops, data = await follow_manually(http, gateway.url, "POST", url, b"[3]")
    assert [h.status for h in hops] == [303, 303, 202]
    job_id = hops[0].headers["X-Job-Id"]
    body = orjson.loads(data)
    assert (body["id"], body["state"]) == (job_id, "in_progress")
    assert urlsplit(hops[-1].headers["Location"]).path == f"/job/{job_id}/result"
    assert hops[-1].headers["X-Job-Id"] == job_id


async def test_secret_route_with_wait_result_loops_on_the_jobs_own_secret(
    gateway: Gateway, emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    url = f"{gateway.url}/task/{HELLO_TASK}/secret/{SECRETS[HELLO_TASK]}/job?wait_result=true&parse"
    hops, data = await follow_manually(http, gateway.url, "POST", url, None)
    job_id = hops[0].headers["X-Job-Id"]
    job_secret = emulator.state.jobs[job_id].secret
    assert urlsplit(hops[0].headers["Location"]).path == f"/job/{job_id}/secret/{job_secret}/result"
    assert SECRETS[HELLO_TASK] not in hops[0].headers["Location"]
    assert (hops[-1].status, data) == (200, HELLO)


async def test_reattach_to_a_job_the_upstream_does_not_know_passes_its_404(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    unknown = f"{gateway.url}/job/ffffffffffffffffffffffff/result?timeout=1&access_token={TOKEN}"
    resp, data = await get(http, unknown + "&customer=demo")
    assert resp.status == 404
    assert orjson.loads(data)["message"] == "job not found"
    # Without the customer the gateway cannot ask the upstream, and says so.
    resp, data = await get(http, unknown)
    assert resp.status == 403
    assert "customer" in orjson.loads(data)["message"]


PNG_TASK = "65a00000000000000000000a"  # prints a response object with a base64 PNG body


async def test_a_binary_answer_arrives_byte_for_byte(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    import base64
    import json
    import subprocess
    import sys

    from sync_gateway.emulator import BUNDLED_RECIPE

    script = BUNDLED_RECIPE.parent / "scripts" / "png.py"
    printed = await asyncio.to_thread(
        subprocess.run, [sys.executable, str(script)], capture_output=True, check=True
    )
    expected = base64.b64decode(json.loads(printed.stdout)["body"])
    assert expected.startswith(b"\x89PNG\r\n\x1a\n")
    url = f"{gateway.url}/demo/task/{PNG_TASK}/job?parse&access_token={TOKEN}"
    async with http.post(url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "image/png"
        assert await resp.read() == expected
