"""Table-driven tests of the result formats and response objects (SPEC 2.1, 2.2)."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from multidict import MultiDict

from sync_gateway.core.errors import BadRequest
from sync_gateway.core.types import Format, FormatKind, Rendered
from sync_gateway.render.common import JSON_CONTENT_TYPE, HeaderLimits, json_body, sanitize_headers
from sync_gateway.render.theeye import render_job
from sync_gateway.web.errors import status_of
from sync_gateway.web.parse import parse_format

# --- seed data (seeds/theeye-sync-api.md, seeds/theeye-wait-result.md) -----------------------

TOMER_1700 = '{"name":"tomer","date":"2022-01-28T17:00:22.676Z"}'
TOMER_1626 = '{"name":"tomer","date":"2022-01-28T16:26:41.201Z"}'
CLIENT_ERROR = (
    '{"message":"Validation Error. Invalid Argument Value","statusCode":418,'
    '"name":"ClientError","code":"","status":418}'
)
REGIMEN_BODY = (
    '{"regimen_id":"operaciones_cambio_apartado_a","regla_fecha_vencimiento":"byLabourDay",'
    '"fecha":"2023-01-02T00:00:00.000Z","status":"por_vencer","periodo_origen":"01-01-2023",'
    '"periodo_www3":"20230101","prorroga":false,"createdAt":"2023-10-02T19:53:40.998Z",'
    '"updatedAt":"2023-10-02T19:53:40.998Z","id":"651b1fc444587926e420dc37","area":"Securities",'
    '"nro_en_www3":"14_1","nombre_en_w3":"OPERACIONES DE CAMBIO","tipo_de_regimen":"Obligatorio",'
    '"regimen":"Operaciones de Cambio (R.I. - O.C.) - Apartado A "}'
)
FLAT_RESPONSE = (
    '{"state":"success","body":' + REGIMEN_BODY + ',"statusCode":201,'
    '"headers":{"TheEyeJobId":"6539593d5f5bf556ac433404"}}'
)
NESTED_RESPONSE = (
    '{"response":{"body":' + REGIMEN_BODY + ',"statusCode":201,'
    '"headers":{"TheEyeJobId":"6539593d5f5bf556ac433404"}},"state":"success"}'
)
RESULT = {
    "code": 0,
    "log": "...",
    "lastline": "...",
    "signal": None,
    "killed": False,
    "times": {"seconds": 0, "nanoseconds": 59487955},
    "output": json.loads(NESTED_RESPONSE),
}

PARSE = Format(FormatKind.PARSE)
OUTPUT = Format(FormatKind.OUTPUT)


def job(output: Any = None, state: str = "success", **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": "65395eaa5f5bf556ac433b7a", "state": state}
    doc["lifecycle"] = "finished"
    if output is not None:
        doc["output"] = output
    doc.update(extra)
    return doc


def answer(output: list[Any], state: str = "success", fmt: Format = PARSE) -> Rendered:
    return render_job(job(output, state), fmt)


# --- seeds, byte for byte ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "state", "fmt", "status", "body", "length"),
    [
        ([TOMER_1700], "success", OUTPUT, 200, json.dumps([TOMER_1700], separators=(",", ":")), 62),
        (
            [CLIENT_ERROR],
            "failure",
            OUTPUT,
            500,
            json.dumps([CLIENT_ERROR], separators=(",", ":")),
            135,
        ),
        ([TOMER_1626], "success", PARSE, 200, TOMER_1626, 50),
        ([CLIENT_ERROR], "failure", PARSE, 418, CLIENT_ERROR, 115),
        ([FLAT_RESPONSE], "success", PARSE, 201, REGIMEN_BODY, 500),
        ([NESTED_RESPONSE], "success", PARSE, 201, REGIMEN_BODY, 500),
    ],
    ids=["output-success", "output-failure", "parse-success", "parse-418", "flat", "nested"],
)
def test_seed_examples_render_byte_exact(
    output: list[str], state: str, fmt: Format, status: int, body: str, length: int
) -> None:
    rendered = answer(output, state, fmt)
    assert rendered.status == status
    assert rendered.body == body.encode()
    assert len(rendered.body) == length
    assert rendered.content_type == JSON_CONTENT_TYPE


@pytest.mark.parametrize("form", [FLAT_RESPONSE, NESTED_RESPONSE], ids=["flat", "nested"])
def test_response_object_sets_status_header_and_inner_body(form: str) -> None:
    rendered = answer([form])
    assert rendered.status == 201
    assert rendered.headers == (("TheEyeJobId", "6539593d5f5bf556ac433404"),)
    assert rendered.dropped == ()
    assert json.loads(rendered.body) == json.loads(REGIMEN_BODY)


@pytest.mark.parametrize(
    ("fmt", "state", "status", "expected"),
    [
        (Format(FormatKind.RESULT), "success", 200, RESULT),
        (Format(FormatKind.RESULT), "failure", 500, RESULT),
        (Format(FormatKind.FULL), "success", 200, None),
        (Format(FormatKind.FULL), "canceled", 500, None),
    ],
)
def test_result_and_full_formats(
    fmt: Format, state: str, status: int, expected: dict[str, Any] | None
) -> None:
    doc = job([NESTED_RESPONSE], state, result=RESULT)
    rendered = render_job(doc, fmt)
    assert rendered.status == status
    assert rendered.body == json_body(expected if expected is not None else doc)
    assert rendered.headers == ()


@pytest.mark.parametrize(
    ("fmt", "body"),
    [(OUTPUT, b"[]"), (PARSE, b"[]"), (Format(FormatKind.RESULT), b"{}")],
)
def test_missing_output_or_result_renders_empty(fmt: Format, body: bytes) -> None:
    assert render_job(job(), fmt).body == body
    assert render_job(job(output=None, result=None), fmt).body == body


# --- parse: index and fallback ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "fmt", "state", "status", "body"),
    [
        (["first", '{"a":1}'], Format(FormatKind.PARSE, 1, True), "success", 200, b'{"a":1}'),
        (['{"a":1}'], Format(FormatKind.PARSE, 1, True), "success", 200, b'["{\\"a\\":1}"]'),
        (['{"a":1}'], Format(FormatKind.PARSE, 1, True), "failure", 500, b'["{\\"a\\":1}"]'),
        ([], PARSE, "success", 200, b"[]"),
        (["not json"], PARSE, "success", 200, b'["not json"]'),
        (["{broken"], PARSE, "failure", 500, b'["{broken"]'),
        ([42], PARSE, "success", 200, b"[42]"),
        (['"\\ud800"'], PARSE, "success", 200, b'["\\"\\\\ud800\\""]'),
    ],
    ids=[
        "index-1",
        "absent",
        "absent-failure",
        "empty",
        "non-json",
        "broken",
        "not-str",
        "bad-utf",
    ],
)
def test_parse_falls_back_to_raw_output(
    output: list[Any], fmt: Format, state: str, status: int, body: bytes
) -> None:
    rendered = answer(output, state, fmt)
    assert (rendered.status, rendered.body) == (status, body)


@pytest.mark.parametrize(
    ("item", "state", "status", "body"),
    [
        ("null", "success", 200, b"null"),
        (" 123 ", "failure", 500, b"123"),
        ('"text"', "success", 200, b'"text"'),
        ("[1, 2.0, -0.0, 1.5]", "success", 200, b"[1,2,0,1.5]"),
        ('{"b": 1, "a": "\\u00e9/\\u2028"}', "success", 200, '{"b":1,"a":"é/\u2028"}'.encode()),
    ],
)
def test_parse_without_response_object_answers_the_value(
    item: str, state: str, status: int, body: bytes
) -> None:
    rendered = answer([item], state)
    assert (rendered.status, rendered.body, rendered.headers) == (status, body, ())


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (418, 418),
        (201.0, 201),
        ("418", 500),
        (99, 500),
        (600, 500),
        (True, 500),
        (None, 500),
        (418.5, 500),
    ],
)
def test_parse_failure_uses_status_code_from_output(code: Any, status: int) -> None:
    rendered = answer([json.dumps({"message": "x", "statusCode": code})], "failure")
    assert rendered.status == status
    assert rendered.headers == ()


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (201, 201),
        ("201", 201),
        (100, 200),
        (101, 200),
        ("199", 200),
        (200, 200),
        (599, 599),
        (99, 200),
        (600, 200),
        ("abc", 200),
        (" 201", 200),
        (True, 200),
        (201.5, 200),
        (None, 200),
        ([201], 200),
    ],
)
def test_response_object_status_code_validity(code: Any, status: int) -> None:
    flat = {"statusCode": code, "body": {"ok": True}}
    nested = {"response": {"statusCode": code, "body": {"ok": True}}}
    for obj in (flat, nested):
        rendered = answer([json.dumps(obj)])
        assert (rendered.status, rendered.body) == (status, b'{"ok":true}')


WHOLE = object()  # "the body is the parsed object itself"


@pytest.mark.parametrize(
    ("obj", "status", "body"),
    [
        ({"response": {"statusCode": 202}}, 202, {"statusCode": 202}),
        ({"response": {"body": None}}, 200, None),
        ({"statusCode": 202, "headers": {"X-A": "1"}}, 202, WHOLE),
        ({"statusCode": 202, "body": "plain"}, 202, "plain"),
        ({"statusCode": 202}, 202, WHOLE),
        ({"response": "not-an-object", "statusCode": 203}, 203, WHOLE),
        ({"response": {"body": 1, "statusCode": 204}, "body": 2, "statusCode": 205}, 204, 1),
    ],
    ids=[
        "nested-no-body",
        "nested-null",
        "flat-no-body",
        "flat-str",
        "bare-code",
        "resp-str",
        "nested-wins",
    ],
)
def test_response_object_body_selection(obj: dict[str, Any], status: int, body: Any) -> None:
    rendered = answer([json.dumps(obj)])
    assert rendered.status == status
    assert json.loads(rendered.body) == (obj if body is WHOLE else body)


# --- body encoding -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "headers", "content_type", "raw", "dropped"),
    [
        ("<b>hi é</b>", {"Content-Type": "text/html"}, "text/html", "<b>hi é</b>".encode(), ()),
        ("a,b", {"content-TYPE": "text/csv", "X-A": "1"}, "text/csv", b"a,b", ()),
        ("hi", {}, JSON_CONTENT_TYPE, b'"hi"', ()),
        (
            {"a": 1},
            {"Content-Type": "text/plain"},
            JSON_CONTENT_TYPE,
            b'{"a":1}',
            ("content-type-for-json",),
        ),
        (
            "x",
            {"Content-Type": "text/plain", "content-type": "text/csv"},
            "text/csv",
            b"x",
            ("duplicate:Content-Type",),
        ),
    ],
    ids=["html", "case-insensitive", "str-without-type", "json-drops-type", "last-type-wins"],
)
def test_string_body_with_content_type_is_sent_verbatim(
    body: Any, headers: dict[str, str], content_type: str, raw: bytes, dropped: tuple[str, ...]
) -> None:
    rendered = answer([json.dumps({"statusCode": 200, "body": body, "headers": headers})])
    assert rendered.content_type == content_type
    assert rendered.body == raw
    assert all(name.lower() != "content-type" for name, _ in rendered.headers)
    assert rendered.dropped == dropped


# --- headers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "kept", "dropped"),
    [
        ({"X-A": "a\r\nX-B: b"}, (), ("invalid-value:X-A",)),
        ({"X-A": "a\nb"}, (), ("invalid-value:X-A",)),
        ({"X-A": "a\x00b"}, (), ("invalid-value:X-A",)),
        ({"X-A": "a\x7fb"}, (), ("invalid-value:X-A",)),
        ({"X-A": "snow\u2603"}, (), ("invalid-value:X-A",)),
        ({"X-A": "a\tb", "X-B": "caf\u00e9"}, (("X-A", "a\tb"), ("X-B", "caf\u00e9")), ()),
        ({"X-A": "  padded\t"}, (("X-A", "padded"),), ()),
        (
            {"X-A": None, "X-B": True, "X-C": [1], "X-D": {}},
            (),
            tuple(f"invalid-value:X-{c}" for c in "ABCD"),
        ),
        (
            {"X-N": 201, "X-F": 1.5, "X-G": 2.0, "X-E": 1e21, "X-S": 1e-7},
            (("X-N", "201"), ("X-F", "1.5"), ("X-G", "2"), ("X-E", "1e+21"), ("X-S", "1e-7")),
            (),
        ),
        (
            {"X-Small": 0.000001, "X-Neg": -12.25},
            (("X-Small", "0.000001"), ("X-Neg", "-12.25")),
            (),
        ),
        (
            {"Bad Name": "1", "X:A": "1", "": "1", "é": "1", "Ok": "1"},
            (("Ok", "1"),),
            ("invalid-name",) * 4,
        ),
        ("not a dict", (), ("not-an-object",)),
        ([["X-A", "1"]], (), ("not-an-object",)),
        (None, (), ()),
        (
            {"Set-Cookie": "a=1", "Location": "/x", "Cache-Control": "no-store"},
            (("Location", "/x"), ("Cache-Control", "no-store")),
            ("denied:Set-Cookie",),
        ),
    ],
    ids=[
        "crlf",
        "lf",
        "nul",
        "del",
        "non-latin1",
        "tab-latin1",
        "strip",
        "types",
        "numbers",
        "js-decimals",
        "names",
        "str",
        "list",
        "none",
        "allowed",
    ],
)
def test_sanitize_headers_drops_invalid(
    raw: object, kept: tuple[tuple[str, str], ...], dropped: tuple[str, ...]
) -> None:
    assert sanitize_headers(raw) == (kept, dropped)


@pytest.mark.parametrize(
    "name",
    [
        "Connection",
        "keep-alive",
        "TRANSFER-ENCODING",
        "Content-Length",
        "Content-Encoding",
        "Upgrade",
        "TE",
        "Trailer",
        "Proxy-Authenticate",
        "proxy-connection",
        "HTTP2-Settings",
    ],
)
def test_sanitize_headers_drops_hop_by_hop(name: str) -> None:
    assert sanitize_headers({name: "x", "X-A": "1"}) == ((("X-A", "1"),), (f"hop-by-hop:{name}",))


@pytest.mark.parametrize("name", ["Host", "date", "Server", "X-Job-Id", "x-job-id"])
def test_sanitize_headers_drops_gateway_owned(name: str) -> None:
    assert sanitize_headers({name: "x"}) == ((), (f"reserved:{name}",))


@pytest.mark.parametrize(
    ("raw", "limits", "kept", "dropped"),
    [
        (
            {f"X-{i}": "v" for i in range(5)},
            HeaderLimits(max_count=3),
            (("X-0", "v"), ("X-1", "v"), ("X-2", "v")),
            ("limit:count:X-3", "limit:count:X-4"),
        ),
        (
            {"X-" + "a" * 10: "v", "X-B": "v"},
            HeaderLimits(max_name_bytes=8),
            (("X-B", "v"),),
            ("limit:name-size",),
        ),
        (
            {"X-A": "v" * 9, "X-B": "v" * 8},
            HeaderLimits(max_value_bytes=8),
            (("X-B", "v" * 8),),
            ("limit:value-size:X-A",),
        ),
        (
            {"X-A": "v" * 5, "X-B": "v" * 5, "X-C": "v"},
            HeaderLimits(max_total_bytes=13),
            (("X-A", "v" * 5), ("X-C", "v")),
            ("limit:total:X-B",),
        ),
    ],
    ids=["count", "name-size", "value-size", "total"],
)
def test_sanitize_headers_caps(
    raw: dict[str, str],
    limits: HeaderLimits,
    kept: tuple[tuple[str, str], ...],
    dropped: tuple[str, ...],
) -> None:
    assert sanitize_headers(raw, limits) == (kept, dropped)


def test_too_many_headers_with_defaults_keeps_the_first_32_in_order() -> None:
    raw = {f"X-H{i:02d}": str(i) for i in range(40)}
    rendered = answer([json.dumps({"statusCode": 200, "body": 1, "headers": raw})])
    assert rendered.headers == tuple(list(raw.items())[:32])
    assert rendered.dropped == tuple(f"limit:count:X-H{i}" for i in range(32, 40))


def test_dropped_reasons_never_contain_values() -> None:
    secret = "s3cr3t\r\n"
    raw = {"X-A": secret, "Connection": secret, "Bad Name": secret, "X-Job-Id": secret}
    _, dropped = sanitize_headers(raw)
    assert len(dropped) == 4
    assert all("s3cr3t" not in reason for reason in dropped)


def test_response_object_headers_are_sanitized_in_render() -> None:
    headers = {"TheEyeJobId": "1", "Connection": "close", "X-Bad": "a\r\nb", "X-Num": 7}
    rendered = answer([json.dumps({"response": {"statusCode": 200, "headers": headers}})])
    assert rendered.headers == (("TheEyeJobId", "1"), ("X-Num", "7"))
    assert rendered.dropped == ("hop-by-hop:Connection", "invalid-value:X-Bad")


def test_non_parse_formats_never_carry_task_headers() -> None:
    for kind in (FormatKind.OUTPUT, FormatKind.RESULT, FormatKind.FULL):
        rendered = render_job(job([FLAT_RESPONSE], result=RESULT), Format(kind))
        assert (rendered.status, rendered.headers, rendered.dropped) == (200, (), ())


# --- parse_format ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "default", "expected"),
    [
        ({}, FormatKind.OUTPUT, Format(FormatKind.OUTPUT)),
        ({}, FormatKind.PARSE, Format(FormatKind.PARSE)),
        ({"access_token": "t", "counter": "1"}, FormatKind.OUTPUT, Format(FormatKind.OUTPUT)),
        ({"output": ""}, FormatKind.PARSE, Format(FormatKind.OUTPUT)),
        ({"result": "whatever"}, FormatKind.OUTPUT, Format(FormatKind.RESULT)),
        ({"full": "false"}, FormatKind.OUTPUT, Format(FormatKind.FULL)),
        ({"parse": ""}, FormatKind.OUTPUT, Format(FormatKind.PARSE)),
        ({"parse": "0"}, FormatKind.OUTPUT, Format(FormatKind.PARSE, 0, True)),
        ({"parse": "2"}, FormatKind.OUTPUT, Format(FormatKind.PARSE, 2, True)),
        ({"parse": "007"}, FormatKind.OUTPUT, Format(FormatKind.PARSE, 7, True)),
        (
            MultiDict([("parse", "1"), ("parse", "1")]),
            FormatKind.OUTPUT,
            Format(FormatKind.PARSE, 1, True),
        ),
        (
            MultiDict([("parse", ""), ("parse", "0")]),
            FormatKind.OUTPUT,
            Format(FormatKind.PARSE, 0, True),
        ),
        (MultiDict([("output", ""), ("output", "x")]), FormatKind.PARSE, Format(FormatKind.OUTPUT)),
        (MultiDict([("full", "")]), FormatKind.OUTPUT, Format(FormatKind.FULL)),
    ],
)
def test_parse_format_accepts(query: Any, default: FormatKind, expected: Format) -> None:
    assert parse_format(query, default) == expected


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ({"parse": "abc"}, "parse"),
        ({"parse": "-1"}, "parse"),
        ({"parse": "1.5"}, "parse"),
        ({"parse": "+1"}, "parse"),
        ({"parse": " 1"}, "parse"),
        ({"parse": "1 "}, "parse"),
        ({"parse": "\u0661"}, "parse"),
        ({"parse": "1" * 10}, "parse"),
        (MultiDict([("parse", "1"), ("parse", "2")]), "parse"),
        ({"output": "", "parse": ""}, "format"),
        ({"result": "", "full": ""}, "format"),
        (MultiDict([("output", ""), ("result", ""), ("full", "")]), "format"),
    ],
)
def test_parse_format_rejects(query: Any, parameter: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_format(query, FormatKind.OUTPUT)
    assert status_of(caught.value) == 400
    assert caught.value.payload()["parameter"] == parameter


def test_parse_format_two_formats_names_them() -> None:
    with pytest.raises(BadRequest, match="output, parse"):
        parse_format({"parse": "", "output": ""}, FormatKind.OUTPUT)


@pytest.mark.parametrize(
    ("fmt", "items"),
    [
        (Format(FormatKind.OUTPUT), [("output", "")]),
        (Format(FormatKind.PARSE), [("parse", "")]),
        (Format(FormatKind.PARSE, 0, True), [("parse", "0")]),
        (Format(FormatKind.PARSE, 2, True), [("parse", "2")]),
        (Format(FormatKind.RESULT), [("result", "")]),
        (Format(FormatKind.FULL), [("full", "")]),
    ],
)
def test_format_query_items(fmt: Format, items: list[tuple[str, str]]) -> None:
    assert fmt.query_items() == items


@pytest.mark.parametrize("query", [{"parse": "3"}, {"parse": ""}, {"full": ""}, {}])
def test_format_query_items_round_trip(query: dict[str, str]) -> None:
    fmt = parse_format(query, FormatKind.OUTPUT)
    assert parse_format(dict(fmt.query_items()), FormatKind.PARSE) == fmt


def test_default_status_follows_job_state() -> None:
    for state, status in [("success", 200), ("failure", 500), ("canceled", 500), ("timeout", 500)]:
        assert answer(["x"], state, OUTPUT).status == status


@pytest.mark.parametrize("depth", [300, 1000])
def test_deeply_nested_values_still_render(depth: int) -> None:
    nested = "[" * depth + "]" * depth
    rendered = answer([nested])
    assert rendered.status == 200
    assert rendered.body in (nested.encode(), json_body([nested]))


def test_json_body_encodes_past_orjson_depth_limit() -> None:
    nested = "[" * 300 + "]" * 300
    assert json_body(orjson.loads(nested)) == nested.encode()


def test_too_deep_for_orjson_falls_back_to_raw_output() -> None:
    nested = "[" * 1100 + "]" * 1100
    assert answer([nested]).body == json_body([nested])


@pytest.mark.parametrize(
    ("response", "status", "content_type", "body"),
    [
        (
            {
                "statusCode": 200,
                "body": "aGVsbG8=",
                "isBase64Encoded": True,
                "headers": {"Content-Type": "text/plain"},
            },
            200,
            "text/plain",
            b"hello",
        ),
        (
            {"statusCode": 201, "body": "AAEC/w==", "isBase64Encoded": True},
            201,
            "application/octet-stream",
            b"\x00\x01\x02\xff",
        ),
        # not marked: the string is the body, as it was
        (
            {"statusCode": 200, "body": "aGVsbG8=", "headers": {"Content-Type": "text/plain"}},
            200,
            "text/plain",
            b"aGVsbG8=",
        ),
    ],
    ids=["typed", "octet-stream", "not-marked"],
)
def test_a_base64_body_is_answered_as_its_bytes(
    response: dict[str, Any], status: int, content_type: str, body: bytes
) -> None:
    rendered = answer([json.dumps(response)])
    assert (rendered.status, rendered.content_type, rendered.body) == (status, content_type, body)


def test_bad_base64_is_the_jobs_500_not_a_crash() -> None:
    response = {"statusCode": 200, "body": "not base64 !!", "isBase64Encoded": True}
    rendered = answer([json.dumps(response)])
    assert rendered.status == 500
    assert json.loads(rendered.body)["error"] == "bad_task_output"
