"""What a client asked for, parsed (web.parse): budgets, Prefer, loop values, ids, bodies."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

from sync_gateway.config import WaitSettings
from sync_gateway.core.errors import BadRequest
from sync_gateway.web import parse

WAIT = WaitSettings(default_seconds=50.0, max_seconds=600.0)


def q(*items: tuple[str, str]) -> MultiDictProxy[str]:
    return MultiDictProxy(MultiDict(items))


def h(*items: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(items))


@pytest.mark.parametrize(
    ("query", "headers", "seconds", "respond_async", "applied"),
    [
        ((), (), 50.0, False, ()),  # the default
        ((("timeout", "5"), ("limit", "3")), (), 15.0, False, ()),  # supervisor style
        ((("timeout", "5"),), (), 50.0, False, ()),  # limit defaults to 10
        ((("limit", "2"),), (), 20.0, False, ()),  # timeout defaults to 10
        ((("timeout", "0.5"), ("limit", "0")), (), 0.5, False, ()),  # limit 0 counts as 1
        ((("timeout", "100"), ("limit", "100")), (), 600.0, False, ()),  # capped
        ((), (("Prefer", "wait=7"),), 7.0, False, ("wait=7",)),
        ((), (("Prefer", 'wait="7"'),), 7.0, False, ("wait=7",)),
        ((), (("Prefer", "wait=9999"),), 600.0, False, ("wait=600",)),
        ((), (("Prefer", "respond-async, wait=7"),), 0.0, True, ("respond-async",)),
        ((), (("Prefer", "handling=lenient"),), 50.0, False, ()),  # unknown: ignored
        ((("timeout", "2"),), (("Prefer", "wait=7"),), 20.0, False, ()),  # query wins
    ],
)
def test_budget(
    query: tuple[tuple[str, str], ...],
    headers: tuple[tuple[str, str], ...],
    seconds: float,
    respond_async: bool,
    applied: tuple[str, ...],
) -> None:
    got = parse.budget(q(*query), h(*headers), WAIT)
    assert (got.seconds, got.respond_async, got.applied) == (seconds, respond_async, applied)


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ((("timeout", "abc"),), "timeout"),
        ((("timeout", "-1"),), "timeout"),
        ((("timeout", "1e3"),), "timeout"),
        ((("timeout", "inf"),), "timeout"),
        ((("limit", "1.5"),), "limit"),
        ((("counter", "9" * 400),), "counter"),  # hundreds of digits: a 400, not an overflow
        ((("limit", "9" * 400),), "limit"),
        ((("timeout", "9" * 400),), "timeout"),
    ],
)
def test_loop_values_are_bounded_numbers(
    query: tuple[tuple[str, str], ...], parameter: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        parse.loop_params(q(*query))
    assert caught.value.payload()["parameter"] == parameter


def test_prefer_wait_that_is_not_whole_seconds_is_a_400() -> None:
    with pytest.raises(BadRequest) as caught:
        parse.budget(q(), h(("Prefer", "wait=1.5")), WAIT)
    assert caught.value.payload()["parameter"] == "Prefer"


@pytest.mark.parametrize(
    ("query", "prefer", "parameter"),
    [
        ((("wait", "x"),), "wait=5", "wait"),  # a Prefer that wins does not hide a bad wait
        ((("wait", ""),), "respond-async", "wait"),
        ((("timeout", "1e3"),), "wait=5", "timeout"),
        ((("wait", "1.5"),), "", "wait"),  # whole seconds, as a Location hands it out
    ],
)
def test_reattach_budget_values_are_checked_whatever_wins(
    query: tuple[tuple[str, str], ...], prefer: str, parameter: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        parse.reattach_budget(q(*query), h(("Prefer", prefer)), WAIT)
    assert caught.value.payload()["parameter"] == parameter


@pytest.mark.parametrize(
    "value", ["abc", "a-b_c.d", "A" * 128, "64ac0b46c06feba9b89ad795"], ids=["a", "b", "c", "d"]
)
def test_plain_path_ids_pass(value: str) -> None:
    assert parse.path_id("job", value) == value


@pytest.mark.parametrize(
    "value", ["", ".", "..", "a/b", "a%2Fb", "A" * 129, "ü", "a b"], ids=str.__len__
)
def test_other_path_ids_are_a_400(value: str) -> None:
    with pytest.raises(BadRequest):
        parse.path_id("job", value)


@pytest.mark.parametrize(
    ("query", "hints"),
    [((), {}), ((("customer", "demo"),), {"customer": "demo"}), ((("customer", ""),), {})],
)
def test_customer_hint(query: tuple[tuple[str, str], ...], hints: dict[str, str]) -> None:
    assert parse.customer_hint(q(*query)) == hints


@pytest.mark.parametrize("bad", ["..", "a/b", "../../x", "a?b"])
def test_customer_hint_that_is_not_a_plain_id_is_a_400(bad: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse.customer_hint(q(("customer", bad)))
    assert caught.value.payload()["parameter"] == "customer"


@pytest.mark.parametrize(
    ("body", "value"),
    [
        (b"", None),
        (b"  ", None),
        (b"[1,2]", [1, 2]),
        (b'{"task_arguments":[1]}', {"task_arguments": [1]}),
    ],
)
def test_json_body_accepted(body: bytes, value: Any) -> None:
    assert parse.json_body(body) == value


@pytest.mark.parametrize("body", [b"nope", b"1", b'"s"', b"null", b"{"])
def test_json_body_refused(body: bytes) -> None:
    with pytest.raises(BadRequest):
        parse.json_body(body)


@pytest.mark.parametrize(
    ("header", "key"), [(None, None), ("abc", "abc"), ('"abc"', "abc"), (" k ", "k")]
)
def test_idempotency_key(header: str | None, key: str | None) -> None:
    headers = h(("Idempotency-Key", header)) if header is not None else h()
    assert parse.idempotency_key(headers) == key


@pytest.mark.parametrize("header", ["", "x" * 256, "a\tb"])
def test_idempotency_key_refused(header: str) -> None:
    with pytest.raises(BadRequest):
        parse.idempotency_key(h(("Idempotency-Key", header)))


def test_credentials_from_query_or_header() -> None:
    creds = parse.credentials(q(("access_token", "t")), h(("Authorization", "Bearer u")))
    assert (creds.access_token, creds.authorization) == ("t", "Bearer u")
    assert not parse.credentials(q(), h()).present
