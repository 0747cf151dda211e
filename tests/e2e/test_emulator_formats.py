"""Unit tests of the emulator's supervisor formatting and query quirks, and app assembly."""

from __future__ import annotations

import asyncio
import math
import pathlib
from typing import Any

import aiohttp
import orjson
import pytest
from support.processes import free_port

from sync_gateway.emulator import (
    EmulatorSettings,
    RecipeError,
    create_emulator_app,
    load_recipe,
    run_emulator,
)
from sync_gateway.emulator.formats import (
    clamp_timeout,
    encode_query,
    js_number,
    js_number_str,
    parse_job_response,
)
from sync_gateway.emulator.runner import js_string, parse_lastline


def job(output: list[str], state: str = "success", **extra: Any) -> dict[str, Any]:
    return {"output": output, "state": state, "result": {"code": 0}, **extra}


def test_parse_default_and_index() -> None:
    doc = job(['{"a":1}', '{"b":2}'])
    assert parse_job_response(doc, {}).body == {"a": 1}
    assert parse_job_response(doc, {"parse": ""}).body == {"a": 1}
    assert parse_job_response(doc, {"parse": "1"}).body == {"b": 2}
    for index in ("2", "-1", "abc", "01"):  # no such element: null body, status by state
        formatted = parse_job_response(doc, {"parse": index})
        assert (formatted.status, formatted.body) == (200, None)
    assert parse_job_response(job([], "failure"), {}).status == 500


def test_parse_response_objects() -> None:
    nested = '{"response":{"body":{"x":1},"statusCode":201,"headers":{"A":"b","Connection":"x"}}}'
    formatted = parse_job_response(job([nested]), {})
    assert (formatted.status, formatted.body, formatted.headers) == (201, {"x": 1}, {"A": "b"})
    no_body = '{"response":{"statusCode":202}}'
    assert parse_job_response(job([no_body]), {}).body == {"statusCode": 202}
    flat = '{"body":{"x":1},"statusCode":418,"headers":{"A":"b"}}'
    formatted = parse_job_response(job([flat]), {})
    assert formatted.status == 418 and formatted.headers is None
    assert formatted.body == orjson.loads(flat)
    string_code = '{"statusCode":"418"}'  # only a numeric top-level statusCode counts
    assert parse_job_response(job([string_code], "failure"), {}).status == 500
    assert parse_job_response(job(["0"]), {}).body is None  # JS: respData || null


def test_parse_invalid_json_and_other_formats() -> None:
    doc = job(["not json"], "failure")
    formatted = parse_job_response(doc, {})
    assert formatted.status == 500
    assert formatted.body["message"] == "Invalid task ejecution result. Cannot be parsed"
    assert formatted.body["result"] == {"code": 0}
    assert parse_job_response(doc, {"output": ""}).body == ["not json"]
    assert parse_job_response(doc, {"result": ""}).body == {"code": 0}
    assert parse_job_response(doc, {"full": ""}).body is doc


def test_query_helpers() -> None:
    assert clamp_timeout(None, 10, 60) == 60
    assert clamp_timeout("", 10, 60) == 60
    assert clamp_timeout("120", 10, 60) == 60
    assert clamp_timeout("2", 10, 60) == 10
    assert clamp_timeout("25", 10, 60) == 25
    assert clamp_timeout("abc", 10, 60) == 0
    assert math.isnan(js_number(None)) and js_number(" ") == 0 and js_number("0x10") == 16
    assert js_number_str(1.0) == "1" and js_number_str(2.5) == "2.5"
    pairs = [("access_token", "a b/c"), ("parse", ""), ("counter", "3"), ("limit", "6")]
    assert encode_query(pairs, {"counter": "4"}) == (
        "access_token=a%20b%2Fc&parse=&counter=4&limit=6"
    )
    assert encode_query([], {"counter": "0", "limit": "10"}) == "counter=0&limit=10"


def test_lastline_convention() -> None:
    line = '{"b":1,"a":{"state":"x"},"state":"failure"}'
    assert parse_lastline(line) == ([line], orjson.loads(line), "failure")
    assert parse_lastline('[1,"two",{"x":3}]')[0] == ["1", "two", '{"x":3}']
    assert parse_lastline("plain text") == (["plain text"], "plain text", None)
    assert [js_string(v) for v in (100, 1.0, 1.5, True, None, "s", {"a": 1})] == [
        "100",
        "1",
        "1.5",
        "true",
        "null",
        "s",
        '{"a":1}',
    ]


def test_recipe_errors(tmp_path: pathlib.Path) -> None:
    assert len(load_recipe().tasks) >= 10
    bad = tmp_path / "bad.toml"
    bad.write_text('[customers.a]\ntokens=["t"]\n[[tasks]]\nid="zz"\nname="x"\ncustomer="a"\n')
    with pytest.raises(RecipeError):
        load_recipe(bad)
    with pytest.raises(RecipeError):
        load_recipe(tmp_path / "missing.toml")


async def test_create_emulator_app(aiohttp_client: Any) -> None:
    client = await aiohttp_client(create_emulator_app(EmulatorSettings(min_timeout=0.2)))
    resp = await client.post(
        "/task/65a000000000000000000006/job?access_token=demo-token&wait_result=true&timeout=5"
    )
    assert resp.status == 200 and await resp.json() == {"ok": True}


async def test_run_emulator_until_cancelled() -> None:
    port = free_port()
    task = asyncio.create_task(run_emulator(EmulatorSettings(), "127.0.0.1", port))
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(500):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/_emulator/stats") as resp:
                        assert resp.status == 200
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.01)
            else:
                pytest.fail("the emulator did not come up")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
