"""Configuration: precedence, validation naming the key, and the command line around it."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sync_gateway.config import Settings, load
from sync_gateway.core.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "config.example.toml"
# The [sections]: every field of Settings that is a settings class of its own.
SECTIONS = tuple(
    f.name
    for f in dataclasses.fields(Settings)
    if dataclasses.is_dataclass(getattr(Settings(), f.name))
)


def write(tmp_path: Path, text: str, name: str = "gateway.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- precedence: defaults < TOML < environment < overrides ----------------------------------

TOML = '[upstream]\nurl = "http://toml.test"\nrequest_timeout = 7\n[wait]\nmax_seconds = 120\n'
ENV = {"SYNC_GATEWAY_UPSTREAM_URL": "http://env.test", "SYNC_GATEWAY_WAIT_MAX_SECONDS": "90"}
OVERRIDES = {"upstream": {"url": "http://flag.test"}}


@pytest.mark.parametrize(
    ("use_toml", "env", "overrides", "url", "max_seconds"),
    [
        (False, {}, None, Settings().upstream.url, Settings().wait.max_seconds),
        (True, {}, None, "http://toml.test", 120.0),
        (True, ENV, None, "http://env.test", 90.0),
        (False, ENV, None, "http://env.test", 90.0),
        (True, ENV, OVERRIDES, "http://flag.test", 90.0),
        (True, {}, OVERRIDES, "http://flag.test", 120.0),
    ],
    ids=["defaults", "toml", "env-over-toml", "env-only", "flag-over-env", "flag-over-toml"],
)
def test_each_layer_overrides_the_one_below(
    tmp_path: Path,
    use_toml: bool,
    env: dict[str, str],
    overrides: dict[str, Any] | None,
    url: str,
    max_seconds: float,
) -> None:
    path = write(tmp_path, TOML) if use_toml else None
    settings = load(path, env, overrides)
    assert settings.upstream.url == url
    assert settings.wait.max_seconds == max_seconds
    # a key set only in the file survives the layers above it
    expected_timeout = 7.0 if use_toml else Settings().upstream.request_timeout
    assert settings.upstream.request_timeout == expected_timeout


def test_environment_names_the_config_file(tmp_path: Path) -> None:
    path = write(tmp_path, TOML)
    settings = load(None, {"SYNC_GATEWAY_CONFIG": str(path)}, None)
    assert settings.upstream.url == "http://toml.test"


@pytest.mark.parametrize(
    ("name", "value", "field", "expected"),
    [
        ("SYNC_GATEWAY_SERVER_MAX_BODY_BYTES", "2048", ("server", "max_body_bytes"), 2048),
        (
            "SYNC_GATEWAY_SERVER_HANDLER_CANCELLATION",
            "false",
            ("server", "handler_cancellation"),
            False,
        ),
        ("SYNC_GATEWAY_UPSTREAM_WAIT", "poll", ("upstream", "wait"), "poll"),
        ("SYNC_GATEWAY_RETENTION_SECONDS", "1.5", ("retention", "seconds"), 1.5),
        ("SYNC_GATEWAY_DEFAULT_FORMAT", "parse", (None, "default_format"), "parse"),
        ("SYNC_GATEWAY_CANCEL_ON_DISCONNECT", "yes", (None, "cancel_on_disconnect"), True),
        ("SYNC_GATEWAY_SERVER_PUBLIC_PREFIX", "/sync", ("server", "public_prefix"), "/sync"),
        (
            "SYNC_GATEWAY_CORS_ALLOW_ORIGINS",
            "https://app.example, http://127.0.0.1:8081",
            ("cors", "allow_origins"),
            ("https://app.example", "http://127.0.0.1:8081"),
        ),
    ],
)
def test_environment_values_are_read_as_the_settings_type(
    name: str, value: str, field: tuple[str | None, str], expected: object
) -> None:
    settings = load(None, {name: value}, None)
    section, key = field
    holder = settings if section is None else getattr(settings, section)
    assert getattr(holder, key) == expected
    assert type(getattr(holder, key)) is type(expected)


# -- errors name the key ------------------------------------------------------------------------

BAD_TOML = [
    ("[upstream]\nnope = 1\n", "upstream.nope"),
    ("[nope]\nx = 1\n", "nope"),
    ("mystery = true\n", "mystery"),
    ("[server]\nport = 70000\n", "server.port"),
    ('[server]\nport = "8080"\n', "server.port"),
    ("[server]\nmax_body_bytes = 0\n", "server.max_body_bytes"),
    ("[server]\nhandler_cancellation = 1\n", "server.handler_cancellation"),
    ('[upstream]\nurl = "ftp://upstream.test"\n', "upstream.url"),
    ('[upstream]\nurl = "not a url"\n', "upstream.url"),
    ("[upstream]\nrequest_timeout = 0\n", "upstream.request_timeout"),
    ("[upstream]\nmax_result_bytes = 1.5\n", "upstream.max_result_bytes"),
    ('[upstream]\nwait = "push"\n', "upstream.wait"),
    ("[wait]\ndefault_seconds = 700\n", "wait.default_seconds"),
    ("[wait]\nmax_seconds = -1\n", "wait.max_seconds"),
    ('[log]\nlevel = "loud"\n', "log.level"),
    ('default_format = "xml"\n', "default_format"),
    ("upstream = 5\n", "upstream"),
    ('[[routes]]\nmethod = "POST"\npath = "/x"\nadapter = "theeye"\n', "routes[0].upstream"),
    ("[upstream\n", "config"),
    ('[server]\npublic_prefix = "sync"\n', "server.public_prefix"),
    ('[server]\npublic_prefix = "/sync/"\n', "server.public_prefix"),
    ('[cors]\nallow_origins = ["https://app.example/"]\n', "cors.allow_origins"),
    ('[cors]\nallow_origins = ["*"]\nallow_credentials = true\n', "cors.allow_credentials"),
    ("[cors]\nmax_age = -1\n", "cors.max_age"),
]


@pytest.mark.parametrize(("text", "key"), BAD_TOML, ids=[key for _, key in BAD_TOML])
def test_bad_toml_raises_config_error_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, text), {}, None)
    message = str(info.value)
    assert message.startswith(f"{key}:"), message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("name", "value", "key"),
    [
        ("SYNC_GATEWAY_SERVER_PORT", "abc", "server.port"),
        ("SYNC_GATEWAY_UPSTREAM_NOPE", "1", "upstream.nope"),
        ("SYNC_GATEWAY_CANCEL_ON_DISCONNECT", "maybe", "cancel_on_disconnect"),
        ("SYNC_GATEWAY_UPSTREAM_REQUEST_TIMEOUT", "soon", "upstream.request_timeout"),
        ("SYNC_GATEWAY_LOG_FORMAT", "xml", "log.format"),
    ],
)
def test_bad_environment_value_raises_config_error_naming_the_key(
    name: str, value: str, key: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(None, {name: value}, None)
    assert str(info.value).startswith(f"{key}:")


def test_bad_override_raises_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        load(None, {}, {"server": {"port": -1}})
    assert str(info.value).startswith("server.port:")


def test_missing_config_file_raises_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        load("no-such-gateway-config.toml", {}, None)
    assert str(info.value).startswith("config:")


# -- the command line ---------------------------------------------------------------------------


def run_cli(
    *args: str, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_GATEWAY_")}
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", "sync_gateway", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[upstream]\nnope = 1\n", "upstream.nope"),
        ("[server]\nport = 70000\n", "server.port"),
        ("[server\n", "config"),
    ],
)
def test_serve_with_a_bad_config_exits_2_with_one_line(tmp_path: Path, text: str, key: str) -> None:
    done = run_cli("serve", "--config", str(write(tmp_path, text)))
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert f"{key}:" in lines[0]
    assert "Traceback" not in done.stderr + done.stdout


def test_serve_with_a_bad_environment_value_exits_2(tmp_path: Path) -> None:
    done = run_cli("serve", extra_env={"SYNC_GATEWAY_SERVER_PORT": "abc"})
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1
    assert "server.port:" in done.stderr


def test_check_config_prints_the_effective_settings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[upstream]\nurl = "http://user:hunter2@upstream.test:8081/?key=k1&sig=s2&pw=p3"\n',
    )
    env = {"SYNC_GATEWAY_WAIT_MAX_SECONDS": "90", "SYNC_GATEWAY_SERVER_PORT": "0"}
    done = run_cli("check-config", str(path), extra_env=env)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["wait"]["max_seconds"] == 90.0
    assert shown["server"]["port"] == 0
    for secret in ("hunter2", "user", "k1", "s2", "p3"):
        assert secret not in done.stdout
    # Userinfo always masked, and every query value whatever its name.
    assert shown["upstream"]["url"] == "http://***@upstream.test:8081/?key=***&sig=***&pw=***"
    assert set(shown) == {f.name for f in dataclasses.fields(Settings)}


def test_check_config_of_a_bad_file_exits_2_naming_the_key(tmp_path: Path) -> None:
    done = run_cli("check-config", str(write(tmp_path, '[log]\nlevel = "loud"\n')))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "log.level:" in done.stderr
    assert done.stdout == ""


# -- config.example.toml ------------------------------------------------------------------------


def example_text() -> str:
    if not EXAMPLE.exists():
        pytest.skip("config.example.toml is not written yet")
    return EXAMPLE.read_text(encoding="utf-8")


def blocks(text: str) -> dict[str, str]:
    """The text under each table header, commented-out headers included."""
    found: dict[str, str] = {}
    current = ""
    for line in text.splitlines():
        header = re.match(r"^\s*#?\s*\[\[?([A-Za-z_]+)\]\]?\s*$", line)
        if header:
            current = header.group(1)
            continue
        found[current] = found.get(current, "") + line + "\n"
    return found


def documents(block: str, key: str) -> bool:
    return re.search(rf"^\s*#?\s*{re.escape(key)}\s*=", block, re.MULTILINE) is not None


def test_example_config_loads() -> None:
    example_text()
    settings = load(EXAMPLE, {}, None)
    assert isinstance(settings, Settings)


def test_example_config_documents_every_setting() -> None:
    parts = blocks(example_text())
    missing = []
    for field in dataclasses.fields(Settings):
        if field.name in SECTIONS:
            section_cls = type(getattr(Settings(), field.name))
            for sub in dataclasses.fields(section_cls):
                if not documents(parts.get(field.name, ""), sub.name):
                    missing.append(f"{field.name}.{sub.name}")
        elif field.name == "routes":
            from sync_gateway.config import RouteSettings

            for sub in dataclasses.fields(RouteSettings):
                if not documents(parts.get("routes", ""), sub.name):
                    missing.append(f"routes.{sub.name}")
        elif not documents(parts.get("", ""), field.name):
            missing.append(field.name)
    assert missing == []


KEYED = {"security": {"fingerprint_key": "a-test-fingerprint-key"}}


def test_the_shared_store_needs_a_fingerprint_key_of_its_own() -> None:
    with pytest.raises(ConfigError, match=r"security\.fingerprint_key") as caught:
        load(None, {}, {"store": {"backend": "redis"}})
    assert "Redis" in str(caught.value)
    with pytest.raises(ConfigError, match="at least 16"):
        load(None, {}, {"security": {"fingerprint_key": "short"}})


def test_a_config_error_never_echoes_a_secret_value() -> None:
    with pytest.raises(ConfigError) as caught:
        load(None, {}, {"security": {"fingerprint_key": "hunter2-short"}})
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        load(None, {}, {"upstream": {"url": "ftp://user:hunter2@h/?key=k9"}})
    assert "hunter2" not in str(caught.value) and "k9" not in str(caught.value)


@pytest.mark.parametrize(
    ("env", "overrides", "expected"),
    [
        ({}, {"store": {"backend": "redis"}, **KEYED}, 86400.0),
        ({"SYNC_GATEWAY_RETENTION_SECONDS": "5"}, {"store": {"backend": "redis"}, **KEYED}, 5.0),
        ({}, {"store": {"backend": "redis"}, "retention": {"seconds": 60}, **KEYED}, 60.0),
        ({}, {}, 3600.0),
    ],
)
def test_retention_defaults_to_a_day_with_the_shared_store_unless_given(
    env: dict[str, str], overrides: dict[str, Any], expected: float
) -> None:
    assert load(None, env, overrides).retention.seconds == expected
