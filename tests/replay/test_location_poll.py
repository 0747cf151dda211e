"""Location polling (SPEC 3.2): the gateway in front of the elastic.io-style emulator, and
the adapter replaying recorded exchanges (``tests/recordings/location``)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import orjson
import pytest
from conftest import FAST_POLL, Gateway, started_gateway
from multidict import MultiDict
from support.helpers import (
    answer_of,
    assert_no_machine_specific_origin,
    call,
    replay,
    scenario,
    step_until_final,
)

from sync_gateway.config import RouteSettings, UpstreamSettings, load
from sync_gateway.core.errors import GatewayError
from sync_gateway.core.types import CreateRequest, Credentials, Snapshot
from sync_gateway.emulator.location_emulator import (
    CREDENTIAL,
    SEED_BODY,
    LocationEmulator,
    LocationEmulatorSettings,
)
from sync_gateway.metrics import Metrics
from sync_gateway.store.memory import ENTRY_BYTES
from sync_gateway.upstream.http import UpstreamClient
from sync_gateway.upstream.location import LocationPollAdapter, finished, resolve_location
from sync_gateway.web.keys import METRICS

AUTH = {"Authorization": CREDENTIAL}
OTHER_AUTH = {"Authorization": "Basic b3RoZXJAZXhhbXBsZS5jb206b3RoZXIta2V5"}
DATA = {"data": {"some": "value"}}
HEX_ID = re.compile(r"[0-9a-f]{32}")

Emu = Callable[..., Awaitable[LocationEmulator]]
Gw = Callable[..., Awaitable[Gateway]]


@pytest.fixture
def emu(cleanup: AsyncExitStack) -> Emu:
    """``await emu(**settings)``: a running emulator, closed at the end of the test."""
    return lambda **kw: cleanup.enter_async_context(
        LocationEmulator(LocationEmulatorSettings(**kw))
    )


@pytest.fixture
def gw(route_gateway: Callable[..., Awaitable[Gateway]]) -> Gw:
    async def make(upstream: str, method: str = "POST", path: str = "/exec/schedule") -> Gateway:
        return await route_gateway(
            method=method, path=path, adapter="location-poll", upstream=upstream, name="elastic"
        )

    return make


async def schedule(
    http: aiohttp.ClientSession, gateway: Gateway, headers: dict[str, str] | None = None
) -> tuple[int, Any, aiohttp.ClientResponse]:
    """The seed's create through the gateway, with the seed's credential."""
    url = f"{gateway.url}/exec/schedule"
    return await call(http, "POST", url, json=SEED_BODY, headers={**AUTH, **(headers or {})})


def make_all_ready(server: LocationEmulator) -> None:
    for job in server.state.jobs.values():
        job.ready_at = 0.0


# ---- over sockets ---------------------------------------------------------------------------


async def test_success_answers_the_upstream_result_body_as_is(
    emu: Emu, gw: Gw, http: aiohttp.ClientSession
) -> None:
    server = await emu(duration=0.2)
    gateway = await gw(server.schedule_url)
    status, body, resp = await schedule(http, gateway)
    assert (status, body) == (200, DATA)
    assert HEX_ID.fullmatch(resp.headers["X-Job-Id"])
    assert resp.headers["Content-Type"].startswith("application/json")
    assert server.counts["create"] == 1
    assert server.counts["result"] == 1


async def test_create_forwards_method_body_content_type_credentials_and_path_params(
    emu: Emu, gw: Gw, http: aiohttp.ClientSession
) -> None:
    server = await emu()
    gateway = await gw(f"{server.url}/v1/{{component}}/exec/schedule", "PUT", "/run/{component}")
    status, body, _ = await call(
        http,
        "PUT",
        f"{gateway.url}/run/abc.1?access_token=tok&output",
        data=orjson.dumps(SEED_BODY),
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert (status, body) == (200, DATA)
    create = server.state.exchanges[0]
    assert create["method"] == "PUT"
    assert create["url"] == f"{server.url}/v1/abc.1/exec/schedule?access_token=tok"
    assert orjson.loads(create["request_body"]) == SEED_BODY
    assert create["request_headers"] == {**AUTH, "Content-Type": "application/json"}


async def test_rejected_result_is_passed_through_as_400(
    emu: Emu, gw: Gw, http: aiohttp.ClientSession
) -> None:
    server = await emu(outcome="rejected")
    gateway = await gw(server.schedule_url)
    status, body, _ = await schedule(http, gateway)
    assert status == 400
    assert body == {"message": "Rejected.", "reason": {"message": "Invalid account credentials"}}


async def test_expired_poll_is_a_final_404(emu: Emu, gw: Gw, http: aiohttp.ClientSession) -> None:
    server = await emu(outcome="expired")
    gateway = await gw(server.schedule_url)
    status, body, _ = await schedule(http, gateway)
    assert (status, body) == (404, {"message": "Expired."})
    assert server.counts["result"] == 0


@pytest.mark.parametrize(
    ("create_status", "answer"), [(400, 400), (401, 401), (429, 429), (500, 502)]
)
async def test_create_4xx_is_passed_through_and_5xx_is_502(
    emu: Emu, gw: Gw, http: aiohttp.ClientSession, create_status: int, answer: int
) -> None:
    server = await emu(create_status=create_status)
    gateway = await gw(server.schedule_url)
    status, body, resp = await schedule(http, gateway)
    assert status == answer
    if answer < 500:
        assert body == {"message": "Schedule failed"}
    else:
        assert body["error"] == "upstream_unavailable"
    if create_status == 429:
        assert resp.headers["Retry-After"] == "7"
    assert server.counts["create"] == 1


async def test_create_answering_503_is_not_repeated(
    emu: Emu, gw: Gw, http: aiohttp.ClientSession
) -> None:
    server = await emu(create_status=503)
    gateway = await gw(server.schedule_url)
    status, body, _ = await schedule(http, gateway)
    assert (status, body["error"]) == (502, "upstream_unavailable")
    assert server.counts["create"] == 1


async def test_budget_expiry_answers_202_and_reattach_gets_the_result(
    emu: Emu, gw: Gw, http: aiohttp.ClientSession
) -> None:
    server = await emu(duration=3600.0)
    gateway = await gw(server.schedule_url)
    status, body, resp = await schedule(http, gateway, headers={"Prefer": "wait=1"})
    job = resp.headers["X-Job-Id"]
    assert status == 202
    assert resp.headers["Location"].startswith(f"/jobs/elastic/{job}/result")
    assert body == {
        "id": job,
        "state": "in_progress",
        "lifecycle": "polling",
        "location": resp.headers["Location"],
    }
    make_all_ready(server)
    status, body, resp = await call(
        http, "GET", gateway.url + resp.headers["Location"], headers=AUTH
    )
    assert (status, body, resp.headers["X-Job-Id"]) == (200, DATA, job)
    assert server.counts["create"] == 1
    assert server.counts["result"] == 1


async def test_read_once_result_is_served_twice_from_retention(
    emu: Emu, gw: Gw, http: aiohttp.ClientSession
) -> None:
    server = await emu()
    gateway = await gw(server.schedule_url)
    status, body, resp = await schedule(http, gateway)
    assert (status, body) == (200, DATA)
    again = f"{gateway.url}/jobs/elastic/{resp.headers['X-Job-Id']}/result"
    for method in ("GET", "POST"):
        status, body, _ = await call(http, method, again, headers=AUTH)
        assert (status, body) == (200, DATA)
    assert server.counts["result"] == 1
    assert server.counts["result_served"] == 1


async def test_reattach_with_other_credentials_is_refused_by_the_upstream(
    emu: Emu, gw: Gw, http: aiohttp.ClientSession
) -> None:
    server = await emu()
    gateway = await gw(server.schedule_url)
    _, _, resp = await schedule(http, gateway)
    again = f"{gateway.url}/jobs/elastic/{resp.headers['X-Job-Id']}/result"
    status, body, _ = await call(http, "GET", again, headers=OTHER_AUTH)
    assert (status, body) == (403, {"message": "Forbidden"})
    assert server.counts["result"] == 1


async def test_reattach_to_a_job_the_gateway_never_saw_is_404(
    emu: Emu, gw: Gw, http: aiohttp.ClientSession
) -> None:
    server = await emu()
    gateway = await gw(server.schedule_url)
    status, body, _ = await call(
        http, "GET", f"{gateway.url}/jobs/elastic/{'0' * 32}/result", headers=AUTH
    )
    assert (status, body["error"]) == (404, "not_found")


@pytest.mark.parametrize("burst_status", [503, 502, 429])
async def test_poll_5xx_burst_is_retried_and_the_result_delivered(
    emu: Emu, gw: Gw, http: aiohttp.ClientSession, burst_status: int
) -> None:
    server = await emu(poll_errors=8, burst_status=burst_status)
    gateway = await gw(server.schedule_url)
    status, body, _ = await schedule(http, gateway)
    assert (status, body) == (200, DATA)
    assert server.counts["poll"] >= 9
    assert (server.counts["create"], server.counts["result"]) == (1, 1)


async def test_result_503_is_read_again_only_after_the_upstream_says_ready(
    emu: Emu, gw: Gw, http: aiohttp.ClientSession
) -> None:
    server = await emu(result_errors=1)
    gateway = await gw(server.schedule_url)
    status, body, _ = await schedule(http, gateway)
    assert (status, body) == (200, DATA)
    assert (server.counts["result"], server.counts["result_served"]) == (2, 1)
    assert server.counts["poll"] == 2


async def test_garbage_poll_answers_are_transient(
    emu: Emu, gw: Gw, http: aiohttp.ClientSession
) -> None:
    server = await emu(garbage_polls=2)
    gateway = await gw(server.schedule_url)
    status, body, _ = await schedule(http, gateway)
    assert (status, body) == (200, DATA)
    assert server.counts["poll"] == 3


@pytest.mark.parametrize("style", ["absolute-quoted", "absolute", "root-relative", "relative"])
async def test_absolute_and_relative_locations_are_followed(
    emu: Emu, gw: Gw, http: aiohttp.ClientSession, style: str
) -> None:
    server = await emu(location=style, duration=0.1, retry_after=0)
    gateway = await gw(server.schedule_url)
    status, body, _ = await schedule(http, gateway)
    assert (status, body) == (200, DATA)
    assert server.counts["result"] == 1


async def test_immediate_result_without_location(
    emu: Emu, gw: Gw, http: aiohttp.ClientSession
) -> None:
    server = await emu(immediate=True)
    gateway = await gw(server.schedule_url)
    status, body, resp = await schedule(http, gateway)
    assert (status, body) == (200, DATA)
    again = f"{gateway.url}/jobs/elastic/{resp.headers['X-Job-Id']}/result"
    status, body, _ = await call(http, "GET", again, headers=AUTH)
    assert (status, body) == (200, DATA)
    assert (server.counts["create"], server.counts["poll"]) == (1, 0)


async def test_an_immediate_result_is_its_creators_and_kept_in_the_bounded_store(
    emu: Emu, cleanup: AsyncExitStack, http: aiohttp.ClientSession
) -> None:
    server = await emu(immediate=True)
    route = {
        "method": "POST",
        "path": "/exec/schedule",
        "adapter": "location-poll",
        "upstream": server.schedule_url,
        "name": "elastic",
    }
    one = finished(200, orjson.dumps(DATA), "application/json", "success").compact().size
    bound = 3 * (one + ENTRY_BYTES)  # room for three results, as they count in memory
    settings = load(
        None, {}, {"routes": [route], "retention": {"max_bytes": bound}, "upstream": FAST_POLL}
    )
    gateway = await started_gateway(cleanup, settings)
    ids = []
    for _ in range(10):
        status, body, resp = await schedule(http, gateway)
        assert (status, body) == (200, DATA)
        ids.append(resp.headers["X-Job-Id"])
    again = f"{gateway.url}/jobs/elastic/{ids[-1]}/result"
    # Nobody upstream to ask about a result answered at once: its creator's alone.
    other = {"Authorization": "Bearer somebody-else"}
    status, body, _ = await call(http, "GET", again, headers=other)
    assert (status, body["error"]) == (403, "forbidden")
    status, body, _ = await call(http, "GET", again)
    assert status == 403
    status, body, _ = await call(http, "GET", again, headers=AUTH)
    assert (status, body) == (200, DATA)
    # Kept like every other result: counted, and bounded by retention.max_bytes.
    metrics = gateway.app[METRICS]
    assert 0 < metrics.retained_bytes._value.get() <= bound  # type: ignore[attr-defined]
    assert metrics.retained_results._value.get() == 3  # type: ignore[attr-defined]
    oldest = f"{gateway.url}/jobs/elastic/{ids[0]}/result"
    status, _, _ = await call(http, "GET", oldest, headers=AUTH)
    assert status == 404  # evicted: the oldest went first


async def test_a_location_with_userinfo_is_a_bad_upstream_answer(
    emu: Emu, gw: Gw, http: aiohttp.ClientSession
) -> None:
    server = await emu()
    server.settings = LocationEmulatorSettings(
        location_origin=f"http://user:pw@127.0.0.1:{server.port}"
    )
    gateway = await gw(server.schedule_url)
    status, body, _ = await schedule(http, gateway)  # the caller's Authorization too
    assert status == 502 and body["error"] == "upstream_bad_response"
    status, _, _ = await call(http, "GET", gateway.url + "/healthz")
    assert status == 200


async def test_credentials_do_not_follow_a_location_to_another_origin(
    emu: Emu, gw: Gw, http: aiohttp.ClientSession
) -> None:
    server = await emu()
    # The same emulator under two names: `localhost` is another origin than 127.0.0.1.
    server.settings = LocationEmulatorSettings(location_origin=server.url)
    gateway = await gw(f"http://localhost:{server.port}/v1/exec/schedule")
    status, body, _ = await schedule(http, gateway)
    assert (status, body) == (403, {"message": "Forbidden"})
    poll = server.state.exchanges[1]
    assert "Authorization" not in poll["request_headers"]


# ---- pure helpers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "base", "expected"),
    [
        (
            "'https://api.test/v1/exec/poll/1'",
            "http://up.test/v1/exec/schedule",
            "https://api.test/v1/exec/poll/1",
        ),
        ("https://api.test/v1/exec/poll/1", "http://x/", "https://api.test/v1/exec/poll/1"),
        ("'https://a.test/p/1'", "http://x/", "https://a.test/p/1"),
        ('"/v1/exec/poll/1"', "http://up.test/v1/exec/schedule", "http://up.test/v1/exec/poll/1"),
        ("poll/1", "http://up.test/v1/exec/schedule", "http://up.test/v1/exec/poll/1"),
        ("../result/1", "http://up.test/v1/exec/poll/1", "http://up.test/v1/exec/result/1"),
        ("''", "http://x/", None),
        (None, "http://x/", None),
        ("ftp://x/y", "http://x/", None),
        ("http://user:pw@up.test/v1/exec/poll/1", "http://up.test/", None),  # userinfo
        ("http://user@up.test/v1/exec/poll/1", "http://up.test/", None),
    ],
)
def test_resolve_location(raw: str | None, base: str, expected: str | None) -> None:
    assert resolve_location(raw, base) == expected


# ---- recorded exchanges, replayed -----------------------------------------------------------


async def run_adapter(session: aiohttp.ClientSession) -> Snapshot | GatewayError:
    """What the engine does with the adapter: create, then step until final."""
    settings = UpstreamSettings(poll_max_interval=0.05)
    route = RouteSettings(
        "POST", "/exec/schedule", "location-poll", "http://upstream.test/v1/exec/schedule"
    )
    adapter = LocationPollAdapter(
        "elastic", UpstreamClient(session, settings, Metrics()), settings, route
    )
    creds = Credentials(authorization=CREDENTIAL)
    request = CreateRequest({}, MultiDict(), orjson.dumps(SEED_BODY), "application/json", creds)
    try:
        created = await adapter.create(request)
    except GatewayError as exc:
        return exc
    if created.snapshot.finished:  # answered at once: the engine follows nothing
        return created.snapshot
    return await step_until_final(adapter, created.ref, creds)


REJECTED = {"message": "Rejected.", "reason": {"message": "Invalid account credentials"}}


@pytest.mark.parametrize(
    ("name", "status", "body"),
    [
        ("success", 200, DATA),
        ("rejected", 400, REJECTED),
        ("expired", 404, {"message": "Expired."}),
        ("poll_5xx_burst", 200, DATA),
        ("garbage_poll", 200, DATA),
        ("relative", 200, DATA),
        ("immediate", 200, DATA),
        ("create_rejected", 400, {"message": "Schedule failed"}),
    ],
)
async def test_recorded_exchange_replays(name: str, status: int, body: Any) -> None:
    exchanges = scenario("location", name)
    outcome, sent = await replay(exchanges, run_adapter)
    assert answer_of(outcome) == (status, body)
    if isinstance(outcome, Snapshot):
        assert outcome.size == len(outcome.payload)
    assert len(sent) == len(exchanges)  # every recorded answer used, nothing asked twice
    assert sum("/exec/result/" in url for _, url in sent) <= 1


def test_recordings_hold_no_machine_specific_origin() -> None:
    assert_no_machine_specific_origin("location")
