"""End-to-end tests of the TheEye supervisor emulator over real loopback sockets."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
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
    INSTANT_TASK,
    LARGE_TASK,
    OTHER_HELLO_TASK,
    REST_TASK,
    SLOW_TASK,
    TIMEOUT_TASK,
    TOKEN,
)
from support.seeds import (
    ISO,
    REGIMEN,
    SEED_FAILURE_OUTPUT,
    SEED_FAILURE_PARSE,
    SEED_SUCCESS_OUTPUT,
    SEED_SUCCESS_PARSE,
)

from sync_gateway.emulator import EmulatorServer, EmulatorSettings, load_recipe

RECIPE = load_recipe()


def settings(**kw: Any) -> EmulatorSettings:
    base: dict[str, Any] = {"min_timeout": 0.2, "max_timeout": 10.0}
    base.update(kw)
    return EmulatorSettings(**base)


@pytest.fixture
async def emu() -> AsyncIterator[EmulatorServer]:
    async with EmulatorServer(settings()) as server:
        yield server


async def create(
    http: aiohttp.ClientSession,
    emu: EmulatorServer,
    task: str,
    args: list[Any] | None = None,
    query: str = "",
) -> dict[str, Any]:
    url = f"{emu.url}/demo/task/{task}/job?access_token={TOKEN}{query}"
    async with http.post(url, json={"task_arguments": args or []}) as resp:
        assert resp.status == 200, await resp.text()
        doc: dict[str, Any] = await resp.json()
    return doc


async def result(
    http: aiohttp.ClientSession, emu: EmulatorServer, job_id: str, fmt: str = ""
) -> tuple[int, bytes, aiohttp.ClientResponse]:
    """Long-poll /job/{id}/result until the job has finished; answer (status, body, resp)."""
    while True:
        url = f"{emu.url}/job/{job_id}/result?access_token={TOKEN}&timeout=5&limit=100&counter=0"
        async with http.get(url + (f"&{fmt}" if fmt else ""), allow_redirects=False) as resp:
            body = await resp.read()
            if resp.status != 303:
                return resp.status, body, resp


async def finished(emu: EmulatorServer, job_id: str) -> None:
    await asyncio.wait_for(emu.state.jobs[job_id].done.wait(), 30)


# -- the seeds' "Rest API Response" recipe ----------------------------------------------------


async def test_rest_api_response_success_formats(
    emu: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    doc = await create(http, emu, REST_TASK, [100])
    assert doc["state"] == "in_progress" and doc["lifecycle"] == "ready"
    assert re.fullmatch(r"[0-9a-f]{24}", doc["id"]) and re.fullmatch(r"[0-9a-f]{64}", doc["secret"])
    assert doc["_type"] == "ScriptJob" and doc["task_id"] == REST_TASK and doc["origin"] == "user"
    assert orjson.loads(doc["env"]["THEEYE_JOB"]) == {"id": doc["id"], "task_id": REST_TASK}
    assert re.fullmatch(ISO, doc["creation_date"]) and doc["timeout"] == 600000
    assert doc["task_arguments_values"] == [100] and doc["customer_name"] == "demo"

    status, body, resp = await result(http, emu, doc["id"], "output")
    assert status == 200 and resp.content_type == "application/json"
    assert re.fullmatch(SEED_SUCCESS_OUTPUT, body)
    status, body, _ = await result(http, emu, doc["id"], "parse")
    assert status == 200
    assert re.fullmatch(SEED_SUCCESS_PARSE, body)
    status, body, _ = await result(http, emu, doc["id"])  # the supervisor's default is parse
    assert status == 200 and orjson.loads(body)["name"] == "tomer"
    status, body, _ = await result(http, emu, doc["id"], "result")
    res = orjson.loads(body)
    assert status == 200 and res["code"] == 0 and res["output"]["name"] == "tomer"
    assert set(res) >= {"code", "log", "lastline", "signal", "killed", "times", "output"}
    status, body, _ = await result(http, emu, doc["id"], "full")
    full = orjson.loads(body)
    assert status == 200 and full["state"] == "success" and full["lifecycle"] == "finished"
    assert full["id"] == doc["id"] and full["output"] == [res["lastline"]]


async def test_rest_api_response_failure(emu: EmulatorServer, http: aiohttp.ClientSession) -> None:
    doc = await create(http, emu, REST_TASK, [200])
    status, body, _ = await result(http, emu, doc["id"], "output")
    assert (status, body) == (500, SEED_FAILURE_OUTPUT)
    status, body, _ = await result(http, emu, doc["id"], "parse")
    assert (status, body) == (418, SEED_FAILURE_PARSE)
    status, body, _ = await result(http, emu, doc["id"], "full")
    full = orjson.loads(body)
    assert (full["state"], full["lifecycle"], full["result"]["code"]) == ("failure", "finished", 1)


async def test_api_test_nested_response(emu: EmulatorServer, http: aiohttp.ClientSession) -> None:
    doc = await create(http, emu, API_TEST_TASK)
    status, body, resp = await result(http, emu, doc["id"], "parse")
    assert status == 201 and resp.headers["TheEyeJobId"] == doc["id"]
    assert orjson.loads(body) == REGIMEN
    assert list(orjson.loads(body)) == list(REGIMEN)  # key order kept
    status, body, _ = await result(http, emu, doc["id"], "output")
    (line,) = orjson.loads(body)
    assert status == 200 and line.startswith('{"state":"success","response":{"body":{')
    status, body, _ = await result(http, emu, doc["id"], "result")
    assert orjson.loads(body)["output"]["response"]["statusCode"] == 201


async def test_api_test_flat_form(emu: EmulatorServer, http: aiohttp.ClientSession) -> None:
    doc = await create(http, emu, API_TEST_FLAT_TASK)
    status, body, _ = await result(http, emu, doc["id"], "output")
    (line,) = orjson.loads(body)
    expected = orjson.dumps(
        {
            "state": "success",
            "body": REGIMEN,
            "statusCode": 201,
            "headers": {"TheEyeJobId": doc["id"]},
        }
    ).decode()
    assert status == 200 and line == expected
    # the supervisor's parse honours a numeric top-level statusCode but applies no headers
    status, body, resp = await result(http, emu, doc["id"], "parse")
    assert status == 201 and "TheEyeJobId" not in resp.headers
    assert orjson.loads(body) == orjson.loads(expected)


# -- wait_result and the counter/limit/timeout loop ---------------------------------------------


async def test_wait_result_query_loop(emu: EmulatorServer, http: aiohttp.ClientSession) -> None:
    query = f"access_token={TOKEN}&limit=50&timeout=0.2&wait_result=true&parse"
    url = f"{emu.url}/task/{SLOW_TASK}/job?{query}"
    async with http.post(url, json=[1], allow_redirects=False) as resp:
        assert resp.status == 303
        doc = await resp.json()
        location = resp.headers["Location"]
    assert doc["lifecycle"] == "ready" and doc["name"] == "Slow"
    assert location == (
        f"/job/{doc['id']}/result?access_token={TOKEN}&limit=50&timeout=0.2"
        "&wait_result=true&parse=&counter=0"
    )
    counters = []
    for _ in range(200):
        async with http.get(emu.url + location, allow_redirects=False) as resp:
            if resp.status != 303:
                assert resp.status == 200
                assert await resp.json() == {"slept": 1}
                break
            assert await resp.json() == {}
            location = resp.headers["Location"]
            counters.append(int(dict(parse_qsl(urlsplit(location).query))["counter"]))
    else:
        pytest.fail("the job never finished")
    assert counters and counters == list(range(1, len(counters) + 1))


async def test_wait_result_body_and_408_at_limit(
    emu: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    url = f"{emu.url}/task/{SLOW_TASK}/job?access_token={TOKEN}"
    async with http.post(
        url, json={"task_arguments": [30], "wait_result": True}, allow_redirects=False
    ) as resp:
        assert resp.status == 303
        job_id = (await resp.json())["id"]
        assert resp.headers["Location"] == (
            f"/job/{job_id}/result?access_token={TOKEN}&counter=0&limit=10&timeout=10"
        )
    base = f"{emu.url}/job/{job_id}/result?access_token={TOKEN}&timeout=0.2&limit=1"
    async with http.post(base + "&counter=0", allow_redirects=False) as resp:  # POST works too
        assert resp.status == 303
        assert resp.headers["Location"].endswith("&timeout=0.2&limit=1&counter=1")
    async with http.get(base + "&counter=1", allow_redirects=False) as resp:
        assert resp.status == 408 and await resp.json() == "Request Timeout"
    # neither limit nor counter: equal as undefined -> 408 after one wait
    async with http.get(f"{emu.url}/job/{job_id}/result?access_token={TOKEN}&timeout=0") as resp:
        assert resp.status == 408
    # a counter that is not a number restarts at 0
    async with http.get(base + "&counter=abc", allow_redirects=False) as resp:
        assert resp.headers["Location"].endswith("&counter=0")
    async with http.put(f"{emu.url}/demo/job/{job_id}/cancel?access_token={TOKEN}") as resp:
        assert resp.status == 204


async def test_instant_job_answers_after_redirect(
    emu: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    url = f"{emu.url}/demo/task/{INSTANT_TASK}/job?access_token={TOKEN}&wait_result=true&timeout=5"
    async with http.post(url) as resp:  # aiohttp follows the 303 with a GET
        assert resp.status == 200 and await resp.json() == {"ok": True}


# -- secrets and auth ---------------------------------------------------------------------------


async def test_secret_routes(emu: EmulatorServer, http: aiohttp.ClientSession) -> None:
    secret = RECIPE.tasks[HELLO_TASK].secret
    for path in (
        f"/task/{HELLO_TASK}/secret/{secret}/job",
        f"/whatever/task/{HELLO_TASK}/secret/{secret}/job",
    ):
        async with http.post(f"{emu.url}{path}?wait_result=true", allow_redirects=False) as resp:
            assert resp.status == 303
            doc = await resp.json()
            location = resp.headers["Location"]
        assert doc["origin"] == "secret" and doc["secret"] != secret
        path = f"/job/{doc['id']}/secret/{doc['secret']}/result"
        assert location == f"{path}?wait_result=true&counter=0&limit=10&timeout=10"
        async with http.get(emu.url + location) as resp:
            assert resp.status == 200 and await resp.json() == {"message": "Hello world!"}
    async with http.post(f"{emu.url}/task/{HELLO_TASK}/secret/{'0' * 64}/job") as resp:
        assert resp.status == 403
    async with http.post(f"{emu.url}/task/{HELLO_TASK}/secret/short/job") as resp:
        assert resp.status == 403
    async with http.post(f"{emu.url}/task/{'f' * 24}/secret/{secret}/job") as resp:
        assert resp.status == 404
    async with http.get(f"{emu.url}/job/{doc['id']}/secret/{secret}/result") as resp:
        assert resp.status == 403  # the task's secret is not the job's


async def test_auth_errors(emu: EmulatorServer, http: aiohttp.ClientSession) -> None:
    u = emu.url
    async with http.post(f"{u}/demo/task/{HELLO_TASK}/job") as resp:
        assert resp.status == 401 and (await resp.json())["message"] == "Unauthorized"
    async with http.post(f"{u}/task/{HELLO_TASK}/job?access_token=nope") as resp:
        assert resp.status == 401
    async with http.post(f"{u}/demo/task/{HELLO_TASK}/job?access_token=other-token") as resp:
        assert resp.status == 403
    async with http.post(f"{u}/demo/task/{'a' * 24}/job?access_token={TOKEN}") as resp:
        assert resp.status == 404
    async with http.post(f"{u}/task/{OTHER_HELLO_TASK}/job?access_token={TOKEN}") as resp:
        assert resp.status == 404
    async with http.post(
        f"{u}/task/{HELLO_TASK}/job", headers={"Authorization": f"Bearer {TOKEN}"}, data=b"[1,2]"
    ) as resp:
        assert resp.status == 200
        job = await resp.json()
    assert job["task_arguments_values"] == [1, 2]
    async with http.post(f"{u}/task/{HELLO_TASK}/job?access_token={TOKEN}", data=b"{nope") as resp:
        assert resp.status == 400
    async with http.get(f"{u}/demo/job/{job['id']}?access_token=other-token") as resp:
        assert resp.status == 403
    async with http.get(f"{u}/job/{job['id']}/result?access_token=other-token") as resp:
        assert resp.status == 403
    async with http.get(f"{u}/job/{job['id']}/result") as resp:
        assert resp.status == 401
    async with http.get(f"{u}/demo/job/{'b' * 24}?access_token={TOKEN}") as resp:
        assert resp.status == 404
    async with http.get(f"{u}/job/{'b' * 24}/result?access_token={TOKEN}") as resp:
        assert resp.status == 404
    async with http.get(f"{u}/demo/job/{job['id']}?access_token={TOKEN}") as resp:
        assert resp.status == 200 and (await resp.json())["id"] == job["id"]
    async with http.get(f"{u}/no/such/route") as resp:
        assert resp.status == 404 and "code" in await resp.json()


# -- job endings ---------------------------------------------------------------------------------


async def test_cancel(emu: EmulatorServer, http: aiohttp.ClientSession) -> None:
    """The supervisor answers every cancel 204; a running (assigned) job is terminated."""
    doc = await create(http, emu, SLOW_TASK, [30])
    job = emu.state.jobs[doc["id"]]
    for _ in range(500):
        if job.doc["lifecycle"] == "assigned":
            break
        await asyncio.sleep(0.01)
    cancel_url = f"{emu.url}/demo/job/{doc['id']}/cancel?access_token={TOKEN}"
    async with http.put(cancel_url) as resp:
        assert resp.status == 204 and await resp.read() == b""
    status, body, _ = await result(http, emu, doc["id"], "full")
    full = orjson.loads(body)
    assert status == 500 and (full["state"], full["lifecycle"]) == ("canceled", "terminated")
    async with http.put(cancel_url) as resp:  # finished: nothing changes, still 204
        assert resp.status == 204
    assert job.doc["lifecycle"] == "terminated"
    if job.runner is not None:
        await asyncio.wait_for(job.runner, 10)  # the process was killed, the runner ends
    assert job.process is None


async def test_timeout_task(emu: EmulatorServer, http: aiohttp.ClientSession) -> None:
    doc = await create(http, emu, TIMEOUT_TASK)
    assert doc["timeout"] == 1000
    status, body, _ = await result(http, emu, doc["id"], "full")
    full = orjson.loads(body)
    assert status == 500
    assert (full["state"], full["lifecycle"]) == ("timeout", "terminated")
    assert full["result"]["killed"] is True


async def test_crash_task(emu: EmulatorServer, http: aiohttp.ClientSession) -> None:
    doc = await create(http, emu, CRASH_TASK)
    status, body, _ = await result(http, emu, doc["id"], "parse")
    answer = orjson.loads(body)
    assert status == 500
    assert answer["message"] == "Invalid task ejecution result. Cannot be parsed"
    assert answer["details"] and answer["result"]["code"] != 0
    assert "Traceback" in answer["result"]["log"]
    status, body, _ = await result(http, emu, doc["id"], "output")
    assert status == 500 and orjson.loads(body) == [answer["result"]["lastline"]]


async def test_large_output(emu: EmulatorServer, http: aiohttp.ClientSession) -> None:
    doc = await create(http, emu, LARGE_TASK, [200_000])
    status, body, _ = await result(http, emu, doc["id"], "parse")
    assert status == 200 and orjson.loads(body)["size"] == 200_000
    assert 190_000 < len(body) <= 200_000


async def test_lifecycle_while_running(emu: EmulatorServer, http: aiohttp.ClientSession) -> None:
    doc = await create(http, emu, SLOW_TASK, [30])
    job = emu.state.jobs[doc["id"]]
    for _ in range(500):
        if job.doc["lifecycle"] == "assigned":
            break
        await asyncio.sleep(0.01)
    async with http.get(f"{emu.url}/demo/job/{doc['id']}?access_token={TOKEN}") as resp:
        running = await resp.json()
    assert (running["state"], running["lifecycle"]) == ("in_progress", "assigned")
    assert "result" not in running


async def test_read_once(http: aiohttp.ClientSession) -> None:
    server = EmulatorServer(settings(read_once=True))
    await server.start()
    try:
        doc = await create(http, server, HELLO_TASK)
        status, _, _ = await result(http, server, doc["id"], "output")
        assert status == 200
        status, _, _ = await result(http, server, doc["id"], "output")
        assert status == 404
        async with http.get(f"{server.url}/_emulator/jobs/{doc['id']}/timing") as resp:
            assert (await resp.json())["finished_at"] is not None
    finally:
        await server.close()


# -- faults, restarts, stats -----------------------------------------------------------------------


async def test_fault_status(emu: EmulatorServer, http: aiohttp.ClientSession) -> None:
    fault = {"route": "create", "count": 2, "status": 503, "retry_after": 1}
    async with http.post(f"{emu.url}/_emulator/faults", json=fault) as resp:
        assert resp.status == 200
    url = f"{emu.url}/demo/task/{HELLO_TASK}/job?access_token={TOKEN}"
    for _ in range(2):
        async with http.post(url) as resp:
            assert resp.status == 503 and resp.headers["Retry-After"] == "1"
    async with http.post(url) as resp:
        assert resp.status == 200
    assert len(emu.state.jobs) == 1
    async with http.get(f"{emu.url}/_emulator/stats") as resp:
        stats = await resp.json()
    assert stats["create"] == 3 and stats["faults"] == 2


async def test_fault_reset_after_create(emu: EmulatorServer, http: aiohttp.ClientSession) -> None:
    async with http.post(
        f"{emu.url}/_emulator/faults", json={"route": "create", "action": "reset_after_create"}
    ) as resp:
        assert resp.status == 200
    url = f"{emu.url}/demo/task/{HELLO_TASK}/job?access_token={TOKEN}"
    with pytest.raises(aiohttp.ClientError):
        async with http.post(url) as resp:
            await resp.read()
    assert len(emu.state.jobs) == 1
    (job,) = emu.state.jobs.values()
    await finished(emu, job.id)
    async with http.post(url) as resp:  # the fault was used up
        assert resp.status == 200
    assert len(emu.state.jobs) == 2


async def test_fault_garbage_slow_and_clear(
    emu: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    doc = await create(http, emu, HELLO_TASK)
    await finished(emu, doc["id"])
    faults = [
        {"route": "result", "action": "garbage"},
        {"route": "result", "action": "slow", "seconds": 0.2},
    ]
    async with http.post(f"{emu.url}/_emulator/faults", json=faults) as resp:
        assert resp.status == 200
    url = f"{emu.url}/job/{doc['id']}/result?access_token={TOKEN}"
    async with http.get(url) as resp:
        assert resp.status == 200
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(await resp.read())
    async with http.get(url) as resp:  # slow, then the real answer
        assert resp.status == 200 and await resp.json() == {"message": "Hello world!"}
    async with http.post(f"{emu.url}/_emulator/faults", json={"route": "any", "count": 5}) as r:
        assert r.status == 200
    async with http.delete(f"{emu.url}/_emulator/faults") as resp:
        assert resp.status == 200
    async with http.get(url) as resp:
        assert resp.status == 200
    async with http.post(f"{emu.url}/_emulator/faults", json={"route": "nope"}) as resp:
        assert resp.status == 400


async def test_stop_start_keeps_jobs_and_port(http: aiohttp.ClientSession) -> None:
    server = EmulatorServer(settings())
    await server.start()
    try:
        port = server.port
        assert port != 0 and server.url == f"http://127.0.0.1:{port}"
        doc = await create(http, server, SLOW_TASK, [0.5])
        pending = asyncio.ensure_future(result(http, server, doc["id"]))
        await asyncio.sleep(0.05)
        await server.stop()
        with pytest.raises(aiohttp.ClientError):
            await pending  # open connections are closed too
        with pytest.raises(aiohttp.ClientConnectionError):
            async with http.get(f"{server.url}/_emulator/stats") as resp:
                await resp.read()
        await finished(server, doc["id"])  # the job kept running while the server was down
        await server.start()
        assert server.port == port
        status, body, _ = await result(http, server, doc["id"])
        assert (status, orjson.loads(body)) == (200, {"slept": 0.5})
    finally:
        await server.close()


async def test_stats(emu: EmulatorServer, http: aiohttp.ClientSession) -> None:
    doc = await create(http, emu, INSTANT_TASK)
    await result(http, emu, doc["id"])
    await result(http, emu, doc["id"])
    async with http.get(f"{emu.url}/demo/job/{doc['id']}?access_token={TOKEN}") as resp:
        assert resp.status == 200
    async with http.get(f"{emu.url}/_emulator/stats") as resp:
        stats = await resp.json()
    assert {k: stats[k] for k in ("create", "result", "job", "cancel", "total")} == {
        "create": 1,
        "result": 2,
        "job": 1,
        "cancel": 0,
        "total": 4,
    }
    assert stats["per_job"] == {doc["id"]: {"result": 2, "job": 1}}
    async with http.get(f"{emu.url}/_emulator/jobs/{doc['id']}/timing") as resp:
        timing = await resp.json()
    assert timing["finished_at"] >= timing["created_at"] > 0
    async with http.post(f"{emu.url}/_emulator/reset-stats") as resp:
        assert resp.status == 200
    async with http.get(f"{emu.url}/_emulator/stats") as resp:
        stats = await resp.json()
    assert stats["total"] == 0 and stats["per_job"] == {}
    async with http.get(f"{emu.url}/_emulator/jobs/{'c' * 24}/timing") as resp:
        assert resp.status == 404


async def test_many_concurrent_delay_jobs(http: aiohttp.ClientSession) -> None:
    connector = aiohttp.TCPConnector(limit=200)
    # 2000 jobs of one task: the supervisor's autoremove would delete finished ones unread
    async with (
        EmulatorServer(settings(autoremove_limit=None)) as emu,
        aiohttp.ClientSession(connector=connector) as session,
    ):
        docs = await asyncio.gather(*(create(session, emu, DELAY_TASK, [0.3]) for _ in range(2000)))
        answers = await asyncio.gather(*(result(session, emu, d["id"]) for d in docs))
    assert len({d["id"] for d in docs}) == 2000
    assert all(status == 200 and orjson.loads(body) == {"ok": True} for status, body, _ in answers)
    assert all(j.finished_at is not None for j in emu.state.jobs.values())
