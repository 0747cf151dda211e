"""The wait engine against a fake adapter: single flight, budgets, retries, errors, drain,
the hang-up policy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from support.fake import RUNNING, FakeAdapter
from support.helpers import eventually

from sync_gateway.config import Settings, load
from sync_gateway.core.access import Fingerprints
from sync_gateway.core.engine import Engine
from sync_gateway.core.errors import JobLost, UpstreamRejected
from sync_gateway.core.following import Follower
from sync_gateway.core.types import Credentials, JobRef
from sync_gateway.metrics import Metrics
from sync_gateway.store.memory import MemoryStore

CREATOR = Credentials(access_token="creator")


def settings(**top: Any) -> Settings:
    overrides: dict[str, Any] = {"upstream": {"poll_interval": 0.05, "poll_max_interval": 0.1}}
    overrides.update(top)
    return load(None, {}, overrides)


@pytest.fixture
async def fake() -> FakeAdapter:
    return FakeAdapter()


async def make_engine(fake: FakeAdapter, **top: Any) -> Engine:
    s = settings(**top)
    metrics = Metrics()
    store = MemoryStore(s.retention.seconds, s.retention.max_bytes, metrics)
    return Engine(Follower({"fake": fake}, store, s, metrics, None), Fingerprints(b"k" * 32))


@pytest.fixture
async def engine(fake: FakeAdapter) -> AsyncIterator[Engine]:
    e = await make_engine(fake)
    yield e
    await e.close()


async def test_many_waiters_share_one_watch_and_all_get_the_result(
    engine: Engine, fake: FakeAdapter
) -> None:
    ref = JobRef("fake", "j1")
    watch = engine.watch(ref, CREATOR, RUNNING)
    assert engine.watch(ref, CREATOR, RUNNING) is watch  # single flight
    waiters = [engine.wait(watch, 10) for _ in range(50)]
    await eventually(lambda: engine.waiter_count() == 50, "every waiter to wait")
    fake.finish("j1")
    results = await asyncio.gather(*waiters)
    assert all(r is not None and r.state == "success" for r in results)
    assert fake.steps.count("j1") == 1  # one long poll, whatever the number of waiters


async def test_waiters_whose_budgets_end_together_all_run_out_and_none_is_kept(
    engine: Engine, fake: FakeAdapter
) -> None:
    watch = engine.watch(JobRef("fake", "j1"), CREATOR, RUNNING)
    expiring = [engine.wait(watch, 0.05) for _ in range(20)]
    answered = [engine.wait(watch, 30) for _ in range(20)]
    assert await asyncio.gather(*expiring) == [None] * 20
    fake.finish("j1")
    assert all(r is not None and r.finished for r in await asyncio.gather(*answered))
    await asyncio.sleep(0)  # the answered waiters' done callbacks
    # An answered waiter is not held until its budget would have ended.
    assert not any(engine._budgets.values())


async def test_a_budget_that_runs_out_answers_none_and_the_watch_goes_on(
    engine: Engine, fake: FakeAdapter
) -> None:
    watch = engine.watch(JobRef("fake", "j1"), CREATOR, RUNNING)
    assert await engine.wait(watch, 0.05) is None
    assert engine.watching("fake:j1") is watch
    fake.finish("j1")
    later = await engine.wait(watch, 10)
    assert later is not None and later.finished
    kept = await engine.store.get("fake:j1")
    assert kept is not None and kept.snapshot.state == "success"
    assert kept.owner == engine.fingerprints.of(CREATOR)


async def test_a_passing_step_failure_is_retried_by_the_policy(
    engine: Engine, fake: FakeAdapter
) -> None:
    fake.fail_next_steps("j1", 2)
    fake.finish("j1")
    watch = engine.watch(JobRef("fake", "j1"), CREATOR, RUNNING)
    result = await engine.wait(watch, 10)
    assert result is not None and result.finished
    assert fake.steps.count("j1") == 3


async def test_a_terminal_error_reaches_every_waiter_with_the_job_named(fake: FakeAdapter) -> None:
    async def refuse(*_: Any) -> Any:
        raise UpstreamRejected(401, b"{}", "application/json")

    fake.step = refuse  # type: ignore[method-assign]
    engine = await make_engine(fake)
    try:
        watch = engine.watch(JobRef("fake", "j9"), CREATOR, RUNNING)
        outcomes = await asyncio.gather(
            engine.wait(watch, 10), engine.wait(watch, 10), return_exceptions=True
        )
        for outcome in outcomes:
            assert isinstance(outcome, UpstreamRejected)
            assert outcome.extra["job_id"] == "j9"
    finally:
        await engine.close()


@pytest.mark.parametrize(
    ("lost_on_404", "known", "error"),
    [
        (True, True, JobLost),
        (True, False, UpstreamRejected),  # a job nobody here had: the upstream's 404 as it is
        (False, True, UpstreamRejected),  # a protocol whose 404 is an answer (expired)
    ],
)
async def test_a_404_for_a_job_the_upstream_had_is_a_lost_job(
    fake: FakeAdapter, lost_on_404: bool, known: bool, error: type[Exception]
) -> None:
    async def gone(*_: Any) -> Any:
        raise UpstreamRejected(404, b"{}", "application/json")

    fake.step = gone  # type: ignore[method-assign]
    fake.lost_on_404 = lost_on_404  # type: ignore[misc]
    engine = await make_engine(fake)
    try:
        watch = engine.watch(JobRef("fake", "j7"), CREATOR, RUNNING, known=known)
        with pytest.raises(error) as caught:
            await engine.wait(watch, 10)
        assert caught.value.extra["job_id"] == "j7"
        lost = engine.metrics.jobs_lost._value.get()  # type: ignore[attr-defined]
        assert lost == (1 if error is JobLost else 0)
    finally:
        await engine.close()


async def test_drain_answers_every_waiter_when_its_period_ends(
    engine: Engine, fake: FakeAdapter
) -> None:
    watch = engine.watch(JobRef("fake", "j1"), CREATOR, RUNNING)
    waiter = engine.wait(watch, 60)
    engine.begin_drain(0.05)
    assert engine.draining
    assert await asyncio.wait_for(waiter, 5) is None
    assert await engine.wait(watch, 60) is None  # after the drain: at once


@pytest.mark.parametrize(("creator", "cancelled"), [(True, ["j1"]), (False, [])])
async def test_only_the_creators_hang_up_cancels_with_cancel_on_disconnect(
    fake: FakeAdapter, creator: bool, cancelled: list[str]
) -> None:
    engine = await make_engine(fake, cancel_on_disconnect=True)
    try:
        watch = engine.watch(JobRef("fake", "j1"), CREATOR, RUNNING)
        waiter = engine.wait(watch, 60, creator)
        waiter.cancel()  # the client hung up
        await asyncio.sleep(0.05)
        assert fake.cancels == cancelled
    finally:
        await engine.close()


async def test_a_hang_up_cancels_nothing_by_default(engine: Engine, fake: FakeAdapter) -> None:
    watch = engine.watch(JobRef("fake", "j1"), CREATOR, RUNNING)
    engine.wait(watch, 60).cancel()
    await asyncio.sleep(0.05)
    assert fake.cancels == []
    assert engine.watching("fake:j1") is watch  # still followed
