"""The supervisor behaviours the emulator reproduces beyond the happy path, each switched on and
off, over real loopback sockets (theeye-supervisor 4.15.3; sources named in the emulator).

autoremove of finished jobs, the listing's ACL and projection, ObjectId checks, one credential
only, long polls with and without the job-finished notification, cancel, and the long poll that
is never answered when its job vanished.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import pytest
from conftest import DELAY_TASK, HELLO_TASK, INSTANT_TASK, OTHER_TOKEN, SLOW_TASK, TOKEN
from support.helpers import call, stats

from sync_gateway.emulator import BUNDLED_RECIPE, EmulatorServer, EmulatorSettings

VIEWER = "demo-viewer-token"  # role viewer, not in the demo tasks' acl
OPERATOR = "demo-operator-token"  # role user, operator@demo.test, in the demo tasks' acl
FINAL = ("finished", "terminated", "canceled", "completed", "expired")


def settings(**kw: Any) -> EmulatorSettings:
    base: dict[str, Any] = {"min_timeout": 0.2, "max_timeout": 10.0}
    base.update(kw)
    return EmulatorSettings(**base)


@asynccontextmanager
async def emulator(**kw: Any) -> AsyncIterator[EmulatorServer]:
    async with EmulatorServer(settings(**kw)) as server:
        yield server


async def create(
    http: aiohttp.ClientSession,
    emu: EmulatorServer,
    task: str,
    args: list[Any] | None = None,
    token: str = TOKEN,
) -> str:
    url = f"{emu.url}/demo/task/{task}/job?access_token={token}"
    status, body, _ = await call(http, "POST", url, json={"task_arguments": args or []})
    assert status == 200, body
    job_id: str = body["id"]
    return job_id


async def finished(emu: EmulatorServer, job_id: str) -> None:
    await asyncio.wait_for(emu.state.jobs[job_id].done.wait(), 30)


async def create_finished(http: aiohttp.ClientSession, emu: EmulatorServer, task: str) -> str:
    job_id = await create(http, emu, task)
    await finished(emu, job_id)
    return job_id


def job_url(emu: EmulatorServer, job_id: str, token: str = TOKEN) -> str:
    return f"{emu.url}/demo/job/{job_id}?access_token={token}"


def result_url(emu: EmulatorServer, job_id: str, query: str, token: str = TOKEN) -> str:
    return f"{emu.url}/job/{job_id}/result?access_token={token}&{query}"


def listing(
    emu: EmulatorServer, ids: list[str], token: str | None = TOKEN
) -> tuple[str, list[tuple[str, str]]]:
    params = [("where[_id][$in][]", i) for i in ids]
    params += [("where[lifecycle][$in][]", lc) for lc in FINAL]
    if token is not None:
        params.append(("access_token", token))
    return f"{emu.url}/demo/job", params


def bundled_recipe_copy(tmp_path: Path, text: str) -> Path:
    """The bundled recipe as ``text``, written elsewhere (its scripts found where they are)."""
    scripts = BUNDLED_RECIPE.parent / "scripts"
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(text.replace('script = "scripts/', f'script = "{scripts}/'))
    return recipe


async def wait_for(condition: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition never met"
        await asyncio.sleep(0.01)


async def held_poll(
    http: aiohttp.ClientSession, emu: EmulatorServer, job_id: str, query: str, **kw: Any
) -> asyncio.Future[tuple[int, Any, aiohttp.ClientResponse]]:
    """A long poll of ``job_id``, returned once the emulator has received it (so a job that
    ends later ends while it is held, however slow the machine)."""
    seen = emu.state.per_job[job_id]["result"]
    poll = asyncio.ensure_future(call(http, "GET", result_url(emu, job_id, query), **kw))
    await wait_for(lambda: emu.state.per_job[job_id]["result"] > seen)
    return poll


# -- 1. autoremove ------------------------------------------------------------------------------


async def test_autoremove_keeps_the_newest_five_jobs_of_the_task(
    http: aiohttp.ClientSession,
) -> None:
    async with emulator() as emu:
        assert emu.settings.autoremove_limit == 5  # the supervisor's default
        other = await create_finished(http, emu, HELLO_TASK)
        ids = [await create_finished(http, emu, INSTANT_TASK) for _ in range(6)]
        status, body, _ = await call(http, "GET", job_url(emu, ids[0]))
        assert (status, body) == (404, {"statusCode": 404, "message": "job not found"})
        status, _, _ = await call(http, "GET", result_url(emu, ids[0], "full"))
        assert status == 404
        for job_id in [*ids[1:], other]:  # the newest five, and another task's job
            status, _, _ = await call(http, "GET", job_url(emu, job_id))
            assert status == 200
        counters = await stats(http, emu)
        assert counters["autoremoved"] == 1 and counters["jobs"] == 6
        status, timing, _ = await call(http, "GET", f"{emu.url}/_emulator/jobs/{ids[0]}/timing")
        assert status == 200 and timing["finished_at"] is not None  # kept for the tests


async def test_autoremove_counts_running_jobs_in_the_window_but_never_deletes_them(
    http: aiohttp.ClientSession,
) -> None:
    """removeExceededJobsCountByTask keeps the newest N jobs whatever their lifecycle and
    deletes the older finished ones: running jobs push finished ones out."""
    async with emulator(autoremove_limit=2) as emu:
        done = await create_finished(http, emu, DELAY_TASK)  # [0] → 0 s: finished
        running = [await create(http, emu, DELAY_TASK, [30]) for _ in range(2)]
        status, _, _ = await call(http, "GET", job_url(emu, done))
        assert status == 404  # no newer *finished* job, deleted all the same
        more = [await create(http, emu, DELAY_TASK, [30]) for _ in range(2)]
        for job_id in running + more:  # "ready" jobs are never deleted
            status, body, _ = await call(http, "GET", job_url(emu, job_id))
            assert status == 200 and body["lifecycle"] == "ready"
        assert (await stats(http, emu))["autoremoved"] == 1


async def test_autoremove_off_keeps_every_job(http: aiohttp.ClientSession) -> None:
    async with emulator(autoremove_limit=None) as emu:
        ids = [await create_finished(http, emu, INSTANT_TASK) for _ in range(8)]
        for job_id in ids:
            status, _, _ = await call(http, "GET", job_url(emu, job_id))
            assert status == 200
        assert (await stats(http, emu))["autoremoved"] == 0


def test_autoremove_limit_is_validated() -> None:
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ValueError):
            EmulatorSettings(autoremove_limit=bad)


# -- 2. the listing's ACL and projection ------------------------------------------------------


async def test_viewer_reads_and_polls_a_job_the_listing_hides(http: aiohttp.ClientSession) -> None:
    async with emulator() as emu:
        job_id = await create_finished(http, emu, HELLO_TASK)
        status, doc, _ = await call(http, "GET", job_url(emu, job_id, VIEWER))
        assert status == 200 and doc["acl"] == ["operator@demo.test"]
        status, body, _ = await call(http, "GET", result_url(emu, job_id, "timeout=1", VIEWER))
        assert (status, body) == (200, {"message": "Hello world!"})

        url, params = listing(emu, [job_id], VIEWER)
        status, listed, _ = await call(http, "GET", url, params=params)
        assert (status, listed) == (200, [])
        assert (await stats(http, emu))["list_hidden"] == 1

        for token in (TOKEN, OPERATOR):  # admin: everything; the operator is in the acl
            url, params = listing(emu, [job_id], token)
            status, listed, _ = await call(http, "GET", url, params=params)
            assert status == 200 and [d["id"] for d in listed] == [job_id]


async def test_listing_leaves_out_output_and_result(http: aiohttp.ClientSession) -> None:
    async with emulator() as emu:
        job_id = await create_finished(http, emu, HELLO_TASK)
        url, params = listing(emu, [job_id])
        status, (doc,), _ = await call(http, "GET", url, params=params)
        assert status == 200 and doc["lifecycle"] == "finished" and doc["state"] == "success"
        dropped = {"output", "result", "task_arguments_values", "env", "task"}
        assert not dropped & set(doc)
        status, full, _ = await call(http, "GET", job_url(emu, job_id))
        assert dropped <= set(full)


async def test_roles_below_user_cannot_create_and_agents_get_no_listing(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    agent = '\n[[customers.demo.members]]\ntoken = "agent-token"\nrole = "agent"\n'
    recipe = bundled_recipe_copy(tmp_path, BUNDLED_RECIPE.read_text() + agent)
    async with emulator(recipe=recipe) as emu:
        url = f"{emu.url}/demo/task/{HELLO_TASK}/job?access_token={VIEWER}"
        status, body, _ = await call(http, "POST", url)
        assert (status, body) == (403, "forbidden")
        assert (await stats(http, emu))["jobs"] == 0
        await create(http, emu, HELLO_TASK, token=OPERATOR)  # role user, allowed by the acl
        url, params = listing(emu, [], "agent-token")
        status, body, _ = await call(http, "GET", url, params=params)
        assert (status, body) == (400, "host is required")  # the agent's queue, no host


async def test_acl_denial_is_never_answered(http: aiohttp.ClientSession, tmp_path: Path) -> None:
    """ACL.ensureAllowed throws inside a promise nobody catches (router/ensure-allowed.js):
    a job whose acl is empty is never answered to a viewer, and listings leave it out."""
    text = BUNDLED_RECIPE.read_text().replace('acl = ["operator@demo.test"]\n', "")
    recipe = bundled_recipe_copy(tmp_path, text)
    async with emulator(recipe=recipe) as emu:
        job_id = await create_finished(http, emu, HELLO_TASK)
        short = aiohttp.ClientTimeout(total=0.5)
        for url in (job_url(emu, job_id, VIEWER), result_url(emu, job_id, "full", VIEWER)):
            with pytest.raises(asyncio.TimeoutError):
                await call(http, "GET", url, timeout=short)
        url, params = listing(emu, [job_id], VIEWER)
        status, listed, _ = await call(http, "GET", url, params=params)
        assert (status, listed) == (200, [])
        status, _, _ = await call(http, "GET", job_url(emu, job_id))  # admin: allowed
        assert status == 200
        assert (await stats(http, emu))["hung"] == 2


async def test_other_customers_token_still_403(http: aiohttp.ClientSession) -> None:
    async with emulator() as emu:
        job_id = await create_finished(http, emu, HELLO_TASK)
        status, _, _ = await call(http, "GET", job_url(emu, job_id, OTHER_TOKEN))
        assert status == 403


# -- 3. ids that are not ObjectIds ------------------------------------------------------------


async def test_listing_with_a_non_object_id_fails_whole(http: aiohttp.ClientSession) -> None:
    async with emulator() as emu:
        job_id = await create_finished(http, emu, HELLO_TASK)
        for bad in ("not-an-id", job_id[:23], job_id + "0", "g" * 24):
            url, params = listing(emu, [job_id, bad])
            status, body, _ = await call(http, "GET", url, params=params)
            assert (status, body) == (500, "Internal Server Error"), bad
        url, params = listing(emu, [job_id, "twelve chars"])  # Mongoose casts any 12 characters
        status, listed, _ = await call(http, "GET", url, params=params)
        assert status == 200 and [d["id"] for d in listed] == [job_id]
        url, params = listing(emu, ["twelve chars"])
        status, listed, _ = await call(http, "GET", url, params=params)
        assert (status, listed) == (200, [])


async def test_single_job_with_a_non_object_id_is_400(http: aiohttp.ClientSession) -> None:
    async with emulator() as emu:
        job_id = await create_finished(http, emu, HELLO_TASK)
        for url, method in (
            (job_url(emu, "not-an-id"), "GET"),
            (result_url(emu, "not-an-id", "full"), "GET"),
            (f"{emu.url}/demo/job/{job_id[:-1]}/cancel?access_token={TOKEN}", "PUT"),
            (f"{emu.url}/job/{job_id}x/secret/{'0' * 64}/result", "GET"),
        ):
            status, body, _ = await call(http, method, url)
            assert (status, body) == (400, "job id is invalid"), url
        status, doc, _ = await call(http, "GET", job_url(emu, job_id.upper()))
        assert status == 200 and doc["id"] == job_id  # isMongoId is case-insensitive


# -- 4. one credential ------------------------------------------------------------------------


async def test_two_credentials_are_401(http: aiohttp.ClientSession) -> None:
    async with emulator() as emu:
        job_id = await create_finished(http, emu, HELLO_TASK)
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        create_url = f"{emu.url}/demo/task/{HELLO_TASK}/job"
        url, params = listing(emu, [job_id], None)
        cancel_url = f"{emu.url}/demo/job/{job_id}/cancel?access_token={TOKEN}"
        refused: list[tuple[str, str, dict[str, Any]]] = [
            ("POST", f"{create_url}?access_token={TOKEN}", {"headers": bearer}),
            ("POST", f"{create_url}?access_token={TOKEN}", {"json": {"access_token": TOKEN}}),
            ("POST", create_url, {"headers": bearer, "json": {"access_token": TOKEN}}),
            ("POST", create_url, {"data": {"access_token": TOKEN}, "headers": bearer}),
            ("POST", f"{create_url}?access_token={TOKEN}&access_token={TOKEN}", {}),
            ("POST", create_url, {"headers": {"Authorization": f"Bearer  {TOKEN}"}}),
            ("GET", job_url(emu, job_id), {"headers": bearer}),
            ("GET", result_url(emu, job_id, "full"), {"headers": bearer}),
            ("GET", url, {"params": [*params, ("access_token", TOKEN)], "headers": bearer}),
            ("PUT", cancel_url, {"headers": bearer}),
        ]
        for method, target, kw in refused:
            status, body, _ = await call(http, method, target, **kw)
            assert status == 401 and body["message"] == "Unauthorized", (method, target, kw)
        assert (await stats(http, emu))["jobs"] == 1

        accepted: list[tuple[str, dict[str, Any]]] = [
            (create_url, {"headers": bearer}),
            (f"{create_url}?access_token={TOKEN}", {}),
            (create_url, {"json": {"access_token": TOKEN, "task_arguments": []}}),
            (create_url, {"data": {"access_token": TOKEN}}),  # a form body
            # not a Bearer header: passport ignores it and takes the query's token
            (f"{create_url}?access_token={TOKEN}", {"headers": {"Authorization": "Basic eDp5"}}),
            (f"{create_url}?access_token={TOKEN}", {"json": {"access_token": ""}}),  # falsy
        ]
        for target, kw in accepted:
            status, body, _ = await call(http, "POST", target, **kw)
            assert status == 200, (target, kw, body)


# -- 5. the job-finished notification ---------------------------------------------------------


async def test_long_poll_wakes_when_the_job_finishes(http: aiohttp.ClientSession) -> None:
    async with emulator() as emu:
        assert emu.settings.notifications is True
        job_id = await create(http, emu, DELAY_TASK, [0.3])
        started = time.monotonic()
        status, body, _ = await call(http, "GET", result_url(emu, job_id, "timeout=5"))
        assert (status, body) == (200, {"ok": True})
        assert time.monotonic() - started < 2


async def test_without_notifications_a_poll_holds_its_whole_timeout(
    http: aiohttp.ClientSession,
) -> None:
    async with emulator(notifications=False) as emu:
        job_id = await create(http, emu, DELAY_TASK, [0.5])
        started = time.monotonic()
        poll = await held_poll(http, emu, job_id, "timeout=1.5&limit=3&counter=0")
        status, body, resp = await poll
        held = time.monotonic() - started
        assert emu.state.jobs[job_id].finished  # it finished at 0.5 s ...
        assert (status, body) == (303, {}) and held >= 1.45  # ... and the timer answers
        location = resp.headers["Location"]
        assert dict(parse_qsl(urlsplit(location).query))["counter"] == "1"
        started = time.monotonic()
        status, body, _ = await call(http, "GET", emu.url + location)
        assert (status, body) == (200, {"ok": True}) and time.monotonic() - started < 0.5

        job_id = await create(http, emu, DELAY_TASK, [0.3])
        poll = await held_poll(http, emu, job_id, "timeout=0.8&limit=2&counter=2")
        status, body, _ = await poll
        assert emu.state.jobs[job_id].finished
        assert (status, body) == (408, "Request Timeout")  # at the limit: 408, finished or not


def test_notification_delay_is_validated() -> None:
    with pytest.raises(ValueError):
        EmulatorSettings(notification_delay=-1)


async def test_notification_delay(http: aiohttp.ClientSession) -> None:
    async with emulator(notification_delay=0.6) as emu:
        job_id = await create(http, emu, DELAY_TASK, [0.3])
        status, _, _ = await (await held_poll(http, emu, job_id, "timeout=5"))
        finished_at = emu.state.jobs[job_id].finished_at
        assert status == 200 and finished_at is not None and time.time() - finished_at >= 0.55
        job_id = await create(http, emu, DELAY_TASK, [0.5])  # the timer comes first
        status, _, _ = await (await held_poll(http, emu, job_id, "timeout=0.5&limit=9"))
        assert status == 303


# -- 6. cancel ---------------------------------------------------------------------------------


async def test_cancel_answers_204_and_sets_the_supervisors_lifecycles(
    http: aiohttp.ClientSession,
) -> None:
    async with emulator() as emu:
        ready = await create(http, emu, DELAY_TASK, [30])  # never leaves "ready"
        running = await create(http, emu, SLOW_TASK, [30])
        await wait_for(lambda: emu.state.jobs[running].doc["lifecycle"] == "assigned")
        done = await create_finished(http, emu, HELLO_TASK)
        for job_id in (ready, running, done, done):
            url = f"{emu.url}/demo/job/{job_id}/cancel?access_token={TOKEN}"
            async with http.put(url) as resp:
                assert resp.status == 204 and await resp.read() == b""
        states = {}
        for job_id in (ready, running, done):
            _, doc, _ = await call(http, "GET", job_url(emu, job_id))
            states[job_id] = (doc["state"], doc["lifecycle"])
        assert states == {
            ready: ("canceled", "canceled"),
            running: ("canceled", "terminated"),
            done: ("success", "finished"),
        }
        _, doc, _ = await call(http, "GET", job_url(emu, ready))
        assert doc["result"]["user"]["id"] == emu.state.recipe.customers["demo"].id
        assert (await stats(http, emu))["cancel"] == 4


# -- 7. a held long poll whose job vanished ---------------------------------------------------


async def test_long_poll_on_a_vanished_job_is_never_answered(http: aiohttp.ClientSession) -> None:
    """The notification wakes the poll, findById finds nothing, result.js throws in a promise:
    no answer. The job-finished round trip (notification_delay) leaves a create the time to
    delete the job (autoremove)."""
    async with emulator(autoremove_limit=1, notification_delay=1.0) as emu:
        job_id = await create(http, emu, DELAY_TASK, [0.5])
        gives_up = aiohttp.ClientTimeout(total=3)
        poll = await held_poll(http, emu, job_id, "timeout=5&limit=9&counter=0", timeout=gives_up)
        await finished(emu, job_id)
        await create_finished(http, emu, DELAY_TASK)  # deletes the finished, older job
        assert job_id not in emu.state.jobs
        await wait_for(lambda: emu.state.hanging == 1)
        with pytest.raises(asyncio.TimeoutError):
            await poll  # the client gives up; nothing ever came
        counters = await stats(http, emu)
        assert counters["hung"] == 1 and counters["autoremoved"] == 1
        await wait_for(lambda: emu.state.hanging == 0)  # the disconnect ended the handler

        # the server's shutdown closes such a request too
        job_id = await create(http, emu, DELAY_TASK, [0.5])
        poll = await held_poll(http, emu, job_id, "timeout=5")
        await finished(emu, job_id)
        await create_finished(http, emu, DELAY_TASK)
        await wait_for(lambda: emu.state.hanging == 1)
        started = time.monotonic()
        await emu.stop()
        with pytest.raises(aiohttp.ClientError):
            await poll
        assert time.monotonic() - started < 2 and emu.state.hanging == 0


async def test_vanished_job_without_notifications_ends_in_404(
    http: aiohttp.ClientSession,
) -> None:
    """Without the notification the timer answers 303 (no re-read); the next poll's lookup
    finds no job: 404."""
    async with emulator(autoremove_limit=1, notifications=False) as emu:
        job_id = await create(http, emu, DELAY_TASK, [0.5])
        poll = await held_poll(http, emu, job_id, "timeout=1.5&limit=9&counter=0")
        await finished(emu, job_id)
        await create_finished(http, emu, DELAY_TASK)
        status, _, resp = await poll
        assert status == 303
        status, body, _ = await call(http, "GET", emu.url + resp.headers["Location"])
        assert (status, body["message"]) == (404, "job not found")
        assert (await stats(http, emu))["hung"] == 0
