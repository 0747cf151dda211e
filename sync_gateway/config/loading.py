"""Reading the settings once at start-up: defaults, file, environment, flags, checked.

Precedence, lowest to highest: defaults, a TOML file (``--config`` or ``SYNC_GATEWAY_CONFIG``),
environment variables ``SYNC_GATEWAY_<SECTION>_<KEY>`` (top-level keys:
``SYNC_GATEWAY_<KEY>``), then CLI flags. Anything wrong raises :class:`ConfigError` with one
line naming the key.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yarl

from sync_gateway.config.settings import (
    ENV_PREFIX,
    PATH_PREFIX,
    RouteSettings,
    Settings,
    placeholders,
)
from sync_gateway.core.errors import ConfigError

# The sections of a config file ([server], [upstream], …): every dataclass field of Settings.
_SECTIONS: dict[str, type[Any]] = {
    name: hint
    for name, hint in get_type_hints(Settings).items()
    if isinstance(hint, type) and dataclasses.is_dataclass(hint)
}


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _non_negative(value: float) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def _port(value: int) -> str | None:
    return None if 0 <= value <= 65535 else "must be a port number 0..65535"


def _list_batch(value: int) -> str | None:
    # Each id is one `where[_id][$in][]=` parameter (~55 bytes): 200 keep a listing under
    # qs's 1,000 parameters and Node's 16 KiB request head.
    return None if 1 <= value <= 200 else "must be 1..200 (the supervisor's request limits)"


def _key_length(value: str) -> str | None:
    return None if not value or len(value) >= 16 else "must be at least 16 characters"


def _path_prefix(value: str) -> str | None:
    if value and not PATH_PREFIX.fullmatch(value):
        return "must be empty or a path like /sync: segments of letters, digits, - _ . ~ after /"
    return None


def _origins(value: tuple[str, ...]) -> str | None:
    """``*`` or ``scheme://host[:port]`` each, exactly as a browser sends ``Origin``."""
    for origin in value:
        if origin == "*":
            continue
        try:
            url = yarl.URL(origin)
        except (ValueError, TypeError):
            url = None
        if (
            url is None
            or url.scheme not in ("http", "https")
            or not url.host
            or origin != str(url.origin())
        ):
            return f"has {origin!r}: not an origin (scheme://host[:port], no path) nor *"
    return None


def _ratio(value: float) -> str | None:
    return None if 0 <= value <= 1 else "must be between 0 and 1"


def _http_url(value: str) -> str | None:
    try:
        url = yarl.URL(value)
    except (ValueError, TypeError):
        return "must be an http(s) URL"
    if url.scheme not in ("http", "https") or not url.host:
        return "must be an http(s) URL"
    return None


_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "server.port": _port,
    "server.max_body_bytes": _positive,
    "server.drain_seconds": _non_negative,
    "server.workers": _positive,
    "server.backlog": _positive,
    "server.max_connections": _non_negative,
    "server.header_timeout": _positive,
    "server.keepalive_timeout": _positive,
    "server.public_prefix": _path_prefix,
    "upstream.url": _http_url,
    "upstream.connect_timeout": _positive,
    "upstream.request_timeout": _positive,
    "upstream.max_result_bytes": _positive,
    "upstream.poll_interval": _positive,
    "upstream.poll_max_interval": _positive,
    "upstream.long_poll_timeout": _positive,
    "upstream.max_long_polls": _non_negative,
    "upstream.list_batch": _list_batch,
    "upstream.verify_interval": _positive,
    "upstream.pool_size": _non_negative,
    "upstream.retry_attempts": _positive,
    "wait.default_seconds": _non_negative,
    "wait.max_seconds": _non_negative,
    "wait.watch_seconds": _positive,
    "retention.seconds": _non_negative,
    "retention.max_bytes": _non_negative,
    "security.fingerprint_key": _key_length,
    "admission.max_jobs": _non_negative,
    "admission.max_jobs_per_customer": _non_negative,
    "admission.retry_after": _positive,
    "cors.allow_origins": _origins,
    "cors.max_age": _non_negative,
    "tracing.endpoint": _http_url,
    "tracing.sample_ratio": _ratio,
}
_SECRET_KEYS = ("key", "password", "secret", "token")


def _shown(key: str, value: Any) -> str:
    """A value as a config error may print it: never a secret, credentials in URLs masked."""
    if any(part in key.rsplit(".", 1)[-1] for part in _SECRET_KEYS):
        return "(value hidden)"
    from sync_gateway.logging import scrub

    return scrub(repr(value))


def _coerce(key: str, hint: Any, raw: Any, from_text: bool) -> Any:
    """Turn a TOML or environment value into the field's type, or raise ConfigError."""
    origin = get_origin(hint)
    if origin is Literal:
        allowed = get_args(hint)
        if raw not in allowed:
            choices = ", ".join(repr(a) for a in allowed)
            raise ConfigError(f"{key}: {_shown(key, raw)} is not one of {choices}")
        return raw
    if hint is bool:
        if isinstance(raw, bool):
            return raw
        if from_text and str(raw).lower() in ("1", "true", "yes", "on"):
            return True
        if from_text and str(raw).lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key}: {_shown(key, raw)} is not a boolean (true or false)")
    if hint is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if from_text:
            try:
                return int(str(raw).replace("_", ""))
            except ValueError:
                pass
        raise ConfigError(f"{key}: {_shown(key, raw)} is not an integer")
    if hint is float:
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return float(raw)
        if from_text:
            try:
                return float(str(raw))
            except ValueError:
                pass
        raise ConfigError(f"{key}: {_shown(key, raw)} is not a number")
    if hint is str:
        if isinstance(raw, str):
            return raw
        raise ConfigError(f"{key}: {_shown(key, raw)} is not a string")
    if origin is tuple:
        if from_text and isinstance(raw, str):
            raw = [part.strip() for part in raw.split(",") if part.strip()]
        if isinstance(raw, list | tuple) and all(isinstance(v, str) for v in raw):
            return tuple(v.lower() for v in raw)
        raise ConfigError(f"{key}: must be a list of strings")
    raise ConfigError(f"{key}: unsupported setting type")  # pragma: no cover


def _build(cls: type[Any], prefix: str, values: Mapping[str, Any], from_text: bool) -> Any:
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for name, raw in values.items():
        key = f"{prefix}{name}"
        if name not in names:
            raise ConfigError(f"{key}: unknown setting")
        value = _coerce(key, hints[name], raw, from_text)
        check = _CHECKS.get(key)
        problem = check(value) if check else None
        if problem:
            raise ConfigError(f"{key}: {_shown(key, value)} {problem}")
        kwargs[name] = value
    return cls(**kwargs)


def _merge(base: Any, prefix: str, values: Mapping[str, Any], from_text: bool) -> Any:
    """A copy of the frozen section ``base`` with ``values`` applied."""
    built = _build(type(base), prefix, values, from_text)
    return dataclasses.replace(base, **{k: getattr(built, k) for k in values})


def _routes(raw: Any) -> tuple[RouteSettings, ...]:
    if not isinstance(raw, list):
        raise ConfigError("routes: must be an array of tables ([[routes]])")
    routes = []
    for i, item in enumerate(raw):
        key = f"routes[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{key}: must be a table")
        missing = {"method", "path", "adapter", "upstream"} - set(item)
        if missing:
            raise ConfigError(f"{key}.{sorted(missing)[0]}: missing")
        route = _build(RouteSettings, f"{key}.", item, False)
        if route.name and not route.name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"{key}.name: {route.name!r} must be letters, digits, - or _")
        if not route.path.startswith("/"):
            raise ConfigError(f"{key}.path: {route.path!r} must start with /")
        if route.method.upper() not in ("GET", "POST", "PUT"):
            raise ConfigError(f"{key}.method: {route.method!r} is not GET, POST or PUT")
        problem = _http_url(route.upstream.replace("{", "").replace("}", ""))
        if problem:
            raise ConfigError(f"{key}.upstream: {problem}")
        missing = set(placeholders(route.upstream)) - set(placeholders(route.path))
        if missing:
            raise ConfigError(
                f"{key}.upstream: {sorted(missing)[0]!r} is not a parameter of {route.path!r}"
            )
        routes.append(dataclasses.replace(route, method=route.method.upper()))
    return tuple(routes)


def _apply(settings: Settings, data: Mapping[str, Any], from_text: bool) -> Settings:
    changes: dict[str, Any] = {}
    top: dict[str, Any] = {}
    for name, value in data.items():
        if name in _SECTIONS:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{name}: must be a table")
            section = changes.get(name, getattr(settings, name))
            changes[name] = _merge(section, f"{name}.", value, from_text)
        elif name == "routes":
            changes["routes"] = _routes(value)
        else:
            top[name] = value
    if top:
        built = _build(Settings, "", top, from_text)
        changes.update({k: getattr(built, k) for k in top})
    return dataclasses.replace(settings, **changes)


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """``SYNC_GATEWAY_UPSTREAM_URL=…`` → ``{"upstream": {"url": …}}``."""
    data: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == f"{ENV_PREFIX}CONFIG":
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section, _, key = rest.partition("_")
        if section in _SECTIONS and key:
            data.setdefault(section, {})[key] = value
        else:
            data[rest] = value
    return data


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config: file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config: cannot read {str(path)!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config: {str(path)!r} is not valid TOML: {exc}") from None


def load(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings from defaults, file, environment and flags (in that order)."""
    env = os.environ if env is None else env
    settings = Settings()
    if path is None and env.get(f"{ENV_PREFIX}CONFIG"):
        path = env[f"{ENV_PREFIX}CONFIG"]
    sources: list[tuple[Mapping[str, Any], bool]] = []
    if path is not None:
        sources.append((_read_toml(Path(path)), False))
    sources.append((_from_env(env), True))
    if overrides:
        sources.append((overrides, False))
    for data, from_text in sources:
        settings = _apply(settings, data, from_text=from_text)
    retention_given = any("seconds" in (data.get("retention") or {}) for data, _ in sources)
    if settings.store.backend == "redis" and not retention_given:
        # A shared store outlives any one replica: keep results a day unless told otherwise.
        settings = dataclasses.replace(
            settings, retention=dataclasses.replace(settings.retention, seconds=86400.0)
        )
    if settings.store.backend == "redis" and not settings.security.fingerprint_key:
        raise ConfigError(
            'security.fingerprint_key: required with store.backend = "redis": every replica'
            " must recognise the same creators, and the key must not live in Redis itself"
        )
    if "*" in settings.cors.allow_origins and settings.cors.allow_credentials:
        # Any site could then call the gateway with the browser's own credentials (cookies,
        # HTTP auth such as a location-poll route's -u user:key) of whoever visits it.
        raise ConfigError("cors.allow_credentials: true is refused with allow_origins = ['*']")
    if settings.wait.default_seconds > settings.wait.max_seconds:
        raise ConfigError(
            f"wait.default_seconds: {settings.wait.default_seconds!r} "
            f"is more than wait.max_seconds ({settings.wait.max_seconds!r})"
        )
    return settings


def redacted(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, with every credential in them masked
    (URL passwords, ``apiKey=``/``access_token=`` in queries, in any section or route)."""
    from sync_gateway.logging import scrub

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return scrub(value)
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    result: dict[str, Any] = clean(dataclasses.asdict(settings))
    if result["security"]["fingerprint_key"]:
        result["security"]["fingerprint_key"] = "***"
    return result
