"""The fixed costs of every call, cut down (issue 17) without changing what they do: log lines,
metric children, kept documents, the retained-results gauges, upstream timeouts, start-up GC."""

from __future__ import annotations

import asyncio
import datetime
import functools
import gc
import hashlib
import hmac
import io
import json
import logging
import select
import time

import aiohttp
import orjson
import pytest
import structlog
from conftest import gateway_settings

from sync_gateway import cli
from sync_gateway import logging as gw_logging
from sync_gateway.core import tracing
from sync_gateway.core.access import Fingerprints
from sync_gateway.core.types import (
    COMPRESS_FROM,
    Credentials,
    JobRef,
    Retained,
    Snapshot,
    StoredDocument,
)
from sync_gateway.metrics import Metrics
from sync_gateway.store.memory import ENTRY_BYTES, MemoryStore
from sync_gateway.upstream.http import UpstreamClient

PLANTED = "PLANTED-TOKEN-321"


# ---- log lines -----------------------------------------------------------------------------


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_are_written_as_bytes_to_a_binary_stream_one_per_event() -> None:
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
    gw_logging.configure("info", "json", stream)
    log = structlog.get_logger("t")
    log.info("request", path=f"/x?access_token={PLANTED}", status=200)
    log.debug("filtered_out")
    logging.getLogger("aiohttp.server").error("Error handling /x?access_token=%s", PLANTED)
    log.info("job_finished", job_id="j1", state="success")
    stream.flush()
    lines = [json.loads(line) for line in raw.getvalue().decode().splitlines()]
    assert [line["event"] for line in lines] == [
        "request",
        "Error handling /x?access_token=***",
        "job_finished",
    ]
    assert PLANTED not in raw.getvalue().decode()
    assert lines[0]["path"] == "/x?access_token=***"


def test_timestamps_are_utc_iso_8601_with_microseconds() -> None:
    stamp = gw_logging.IsoTimeStamper()
    before = datetime.datetime.now(datetime.UTC)
    first = stamp(None, "info", {})["timestamp"]
    second = stamp(None, "info", {})["timestamp"]
    assert first.endswith("Z") and len(first) == len("2026-11-30T12:00:00.123456Z")
    when = datetime.datetime.fromisoformat(first.replace("Z", "+00:00"))
    assert abs((when - before).total_seconds()) < 5
    assert second >= first


SCRUB_TABLE = [
    "plain",
    "/demo/task/65a000000000000000000006/job",
    "a=b",
    "host:port",
    "user@host",
    "/job/j/SECRET/s/result",
    "sent BEARER abc",
    "basic",
    "Bas\u017fic abc",  # a long s: the regex folds it onto "s"
    "\u00e9t\u00e9 /secret/x",
    "\u00e9t\u00e9 plain",
]


@pytest.mark.parametrize("text", SCRUB_TABLE)
def test_the_quick_look_for_secrets_agrees_with_the_patterns(text: str) -> None:
    assert gw_logging._maybe_secret(text) == (gw_logging._MAYBE.search(text) is not None)


def test_a_key_naming_a_credential_is_masked_whatever_its_value() -> None:
    event = {"event": "e", "token": 123, "password": None, "api_key": 1.5, "status": 200}
    out = gw_logging.redact(None, "info", event)
    assert out == {"event": "e", "token": "***", "password": "***", "api_key": "***", "status": 200}


class _Counted(io.StringIO):
    """A text stream that counts its flushes and keeps what each one flushed."""

    flushes = 0
    flushed_at = 0

    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[str] = []

    def flush(self) -> None:
        self.flushes += 1
        text = self.getvalue()
        if len(text) > self.flushed_at:
            self.chunks.append(text[self.flushed_at :])
            self.flushed_at = len(text)
        super().flush()


async def test_the_lines_of_one_loop_turn_are_flushed_together_and_errors_at_once() -> None:
    stream = _Counted()
    line = gw_logging.LineLogger(stream)
    line.info("one")
    line.info("two")
    assert stream.getvalue() == "one\ntwo\n"  # written in order at once...
    assert stream.flushes == 0  # ...flushed when the turn ends
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert stream.flushes == 1
    line.error("three")  # an error is flushed as it is logged
    assert stream.flushes == 2
    assert stream.getvalue() == "one\ntwo\nthree\n"


async def test_a_busy_turns_lines_go_out_in_whole_lines_of_at_most_pipe_buf_together() -> None:
    stream = _Counted()
    line = gw_logging.LineLogger(stream)
    lines = [f"line {i} " + "x" * 300 for i in range(40)]  # some 12 KB in one turn
    for text in lines:
        line.info(text)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert "".join(stream.chunks) == "".join(t + "\n" for t in lines)
    assert len(stream.chunks) > 1
    # each write a pipe takes in one piece (no other worker's line inside one of ours)
    assert all(len(chunk) <= select.PIPE_BUF and chunk.endswith("\n") for chunk in stream.chunks)


def test_a_line_logged_with_no_running_loop_is_flushed_at_once() -> None:
    stream = _Counted()
    line = gw_logging.LineLogger(stream)
    line.info("start-up")
    assert stream.flushes == 1


def test_a_loop_that_closed_before_its_flush_does_not_stop_the_next_ones() -> None:
    stream = _Counted()
    line = gw_logging.LineLogger(stream)

    async def log_and_leave() -> None:
        line.info("last words")  # the loop closes before the turn's flush runs

    loop = asyncio.new_event_loop()
    loop.run_until_complete(log_and_leave())
    loop.close()
    flushed = stream.flushes
    asyncio.run(log_and_leave())  # a new loop schedules a flush of its own
    assert stream.flushes > flushed


async def test_the_log_context_is_the_calls_own_and_a_task_keeps_what_it_started_with() -> None:
    stream = io.StringIO()
    gw_logging.configure("info", "json", stream)
    structlog.configure(cache_logger_on_first_use=False)
    log = structlog.get_logger("t")
    try:
        gw_logging.new_log_context(request_id="r1", route="/x")
        gw_logging.bind_log_context(job_id="j1")
        seen: list[str] = []

        async def watch() -> None:
            await asyncio.sleep(0)
            log.info("watch_line")
            seen.append("done")

        task = asyncio.get_running_loop().create_task(watch())
        gw_logging.bind_log_context(job_id="j2")  # after the task started: not in its lines
        log.info("call_line", route="/own")  # the event's own value wins
        await task
        gw_logging.new_log_context(request_id="r2")  # a new call: nothing of the last one
        log.info("next_call")
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    lines = {e["event"]: e for e in map(json.loads, stream.getvalue().splitlines())}
    assert {k: lines["call_line"][k] for k in ("request_id", "route", "job_id")} == {
        "request_id": "r1",
        "route": "/own",
        "job_id": "j2",
    }
    assert {k: lines["watch_line"][k] for k in ("request_id", "route", "job_id")} == {
        "request_id": "r1",
        "route": "/x",
        "job_id": "j1",
    }
    assert "job_id" not in lines["next_call"] and lines["next_call"]["request_id"] == "r2"


# ---- ids and fingerprints ------------------------------------------------------------------


def test_ids_are_random_hex_of_their_length_and_never_zero() -> None:
    ids = {tracing.random_hex(32) for _ in range(1000)} | {tracing.random_hex(16)}
    assert len(ids) == 1001
    assert all(int(i, 16) and set(i) <= set("0123456789abcdef") for i in ids)
    assert {len(i) for i in ids} == {32, 16}


def test_a_callers_fingerprint_is_computed_once_and_is_the_keyed_hmac() -> None:
    key = b"a deployment key of 32 bytes ..."
    fingerprints = Fingerprints(key)
    caller = Credentials(access_token="T")
    expected = hmac.digest(key, caller.identity(), hashlib.sha256)
    assert [fingerprints.of(Credentials(access_token="T")) for _ in range(3)] == [expected] * 3
    assert fingerprints.of(Credentials(access_token="U")) != expected
    assert fingerprints.of(Credentials(authorization="Bearer T")) == expected  # one caller
    computed = 0
    real = fingerprints._digest

    def counting(creds: Credentials) -> bytes:
        nonlocal computed
        computed += 1
        return real(creds)

    again = Fingerprints(key)
    again._kept = functools.lru_cache(maxsize=4)(counting)
    for _ in range(5):
        again.of(caller)
    assert computed == 1


# ---- metric children -----------------------------------------------------------------------


def _sample(metrics: Metrics, name: str, **labels: str) -> float:
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def test_labels_hand_out_one_child_per_label_set() -> None:
    metrics = Metrics()
    counter = metrics.upstream_requests
    first = counter.labels(kind="create", status="200")
    assert counter.labels(kind="create", status="200") is first
    first.inc()
    counter.labels(status="200", kind="create").inc()
    counter.labels(kind="result", status="200").inc()
    total = "sync_gateway_upstream_requests_total"
    assert _sample(metrics, total, kind="create", status="200") == 2
    assert _sample(metrics, total, kind="result", status="200") == 1
    metrics.wait_seconds.labels(outcome="finished").observe(0.2)
    assert _sample(metrics, "sync_gateway_wait_seconds_count", outcome="finished") == 1


def test_wrong_label_names_are_still_refused() -> None:
    with pytest.raises(ValueError):
        Metrics().requests.labels(route="/x", code="200")


# ---- kept documents and the retained gauges ------------------------------------------------


def test_a_small_document_is_kept_as_its_json_text() -> None:
    document = {"id": "j1", "state": "success", "output": ["ok"]}
    kept = StoredDocument(document)
    assert not kept.compressed
    assert kept.packed == orjson.dumps(document)
    assert dict(kept) == document


def test_a_large_document_is_kept_compressed() -> None:
    document = {"id": "j1", "state": "success", "output": ["line of output\n" * 400]}
    assert len(orjson.dumps(document)) >= COMPRESS_FROM
    kept = StoredDocument(document)
    assert kept.compressed
    assert len(kept.packed) < COMPRESS_FROM
    assert kept.load() == document


def _retained(job_id: str, size: int, expires_at: float) -> Retained:
    # A kept answer of exactly `size` bytes (retention counts what is kept).
    snapshot = Snapshot(True, "success", "finished", {}, "location", b"x" * size)
    return Retained(JobRef("theeye", job_id), snapshot, b"owner", expires_at)


def _gauges(metrics: Metrics) -> tuple[float, float]:
    return (
        _sample(metrics, "sync_gateway_retained_results"),
        _sample(metrics, "sync_gateway_retained_bytes"),
    )


async def test_the_retained_gauges_follow_puts_evictions_and_expiry() -> None:
    metrics = Metrics()
    e = ENTRY_BYTES  # what each kept result takes beyond its text
    store = MemoryStore(60.0, 1000 + 2 * e, metrics)
    now = time.monotonic()
    await store.put(_retained("a", 400, now + 60))
    await store.put(_retained("b", 400, now + 60))
    assert _gauges(metrics) == (2, 800 + 2 * e)
    await store.get("theeye:a")
    assert _gauges(metrics) == (2, 800 + 2 * e)
    await store.put(_retained("c", 300, now + 60))  # "a" is evicted
    assert _gauges(metrics) == (2, 700 + 2 * e)
    assert not await store.put(_retained("d", 2000, now + 60))  # over the bound: not kept
    assert _gauges(metrics) == (2, 700 + 2 * e)
    store._now = lambda: now + 120  # type: ignore[method-assign]
    await store.get("theeye:b")  # both expired
    assert _gauges(metrics) == (0, 0)


# ---- upstream timeouts ----------------------------------------------------------------------


async def test_each_long_poll_timeout_is_built_once() -> None:
    settings = gateway_settings("http://upstream.test").upstream
    async with aiohttp.ClientSession() as session:
        client = UpstreamClient(session, settings, Metrics())
        assert client._timeout_of(None) is client._default_timeout
        first = client._timeout_of(70.0)
        assert client._timeout_of(70.0) is first
        assert first.total == 70.0
        assert first.sock_connect == settings.connect_timeout
        assert first.connect is None


# ---- start-up ---------------------------------------------------------------------------------


def test_start_up_objects_are_frozen_out_of_the_collectors_sight() -> None:
    threshold = gc.get_threshold()
    try:
        asyncio.run(cli._settle_gc(None))
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == cli.GC_YOUNG_THRESHOLD
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
