"""Real processes the tests start and always stop: redis-server, the gateway's CLI."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import sync_gateway


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """A throw-away redis-server on a loopback port, stoppable and restartable on the same
    port; no persistence, or an append-only file fsynced on every write (``appendonly``)."""

    def __init__(self, executable: str, directory: Path, appendonly: bool = False) -> None:
        self.executable = executable
        self.directory = directory
        self.appendonly = appendonly
        self.port = free_port()
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            self.executable,
            *("--port", str(self.port), "--bind", "127.0.0.1", "--save", ""),
            *("--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always"),
            *("--dir", str(self.directory)),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        give_up = time.monotonic() + 10
        while not await self._pong():
            if self.process.returncode is not None or time.monotonic() > give_up:
                pytest.fail("redis-server did not start")
            await asyncio.sleep(0.02)

    async def _pong(self) -> bool:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        try:
            writer.write(b"PING\r\n")
            await writer.drain()
            return (await reader.readline()).startswith(b"+PONG")
        except OSError:
            return False
        finally:
            writer.close()

    async def kill(self) -> None:
        """kill -9: no shutdown save, only what the append-only file already holds."""
        process, self.process = self.process, None
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            await stop_process(process)


def redis_executable() -> str:
    return system_executable("redis-server")


async def running_redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(redis_executable(), tmp_path)
    try:
        await server.start()
        yield server
    finally:
        await server.stop()


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a `python -m sync_gateway` child: this checkout importable."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SYNC_GATEWAY_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }
    root = str(Path(sync_gateway.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    env["TMPDIR"] = str(tmp_path)
    env.update(extra)
    return env


async def start_cli(
    args: list[str],
    env: dict[str, str],
    tmp_path: Path,
    http: aiohttp.ClientSession,
    url: str,
    stdout: Any = None,
) -> asyncio.subprocess.Process:
    """`python -m sync_gateway …` with stdout/stderr in files (or stdout where ``stdout``
    says: ``asyncio.subprocess.PIPE``), once /healthz answers."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sync_gateway",
        *args,
        env=env,
        stdout=(tmp_path / "stdout").open("wb") if stdout is None else stdout,
        stderr=(tmp_path / "stderr").open("wb"),
    )
    for _ in range(600):  # a bounded wait for start-up, not a timing assertion
        if proc.returncode is not None:
            break
        try:
            async with http.get(f"{url}/healthz") as resp:
                if resp.status == 200:
                    return proc
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    await stop_cli(proc)
    pytest.fail("the gateway did not start: " + (tmp_path / "stderr").read_text())


async def stop_cli(proc: asyncio.subprocess.Process) -> int:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode


def system_executable(name: str, *also: str) -> str:
    """A program the tests start, which ``.ci/run`` installs (a Debian package, or the dev
    extra's): fails in CI when missing, else skips. ``also``: other places it may be, off a
    non-root PATH (``/usr/sbin/nginx``)."""
    found = shutil.which(name) or next((p for p in also if os.access(p, os.X_OK)), None)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is not installed (.ci/run installs it)")
        pytest.skip(f"{name} is not installed")
    return found


async def port_opens(port: int, process: asyncio.subprocess.Process, seconds: float = 15.0) -> bool:
    """Whether something accepts on the loopback ``port`` before ``process`` ends (a bounded
    wait for start-up, not a timing assertion)."""
    give_up = time.monotonic() + seconds
    while process.returncode is None and time.monotonic() < give_up:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.02)
            continue
        writer.close()
        return True
    return False


async def stop_process(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL if it has not gone within 5 s."""
    if process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), 5)
    except TimeoutError:
        process.kill()
        await process.wait()


class Nginx:
    """Debian's nginx as one foreground process (``master_process off``: it stays the user that
    started it) on a free loopback port, every file it writes in ``directory``; ``http_block``
    goes inside ``http {}``."""

    # Where nginx would write beneath /var unless told otherwise.
    TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")

    def __init__(self, directory: Path, http_block: str) -> None:
        self.executable = system_executable("nginx", "/usr/sbin/nginx")
        self.directory = directory
        self.port = free_port()
        self.http_block = http_block.replace("{port}", str(self.port))
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        d = self.directory
        temp = "\n".join(f"    {name}_temp_path {d / name};" for name in self.TEMP_PATHS)
        return (
            f"daemon off;\nmaster_process off;\npid {d / 'nginx.pid'};\n"
            f"error_log {d / 'error.log'} info;\n"
            "events { worker_connections 256; }\n"
            f"http {{\n    access_log {d / 'access.log'};\n{temp}\n{self.http_block}\n}}\n"
        )

    async def start(self) -> None:
        conf = self.directory / "nginx.conf"
        conf.write_text(self.config(), encoding="utf-8")
        self.process = await asyncio.create_subprocess_exec(
            self.executable,
            *("-p", str(self.directory), "-c", str(conf)),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=(self.directory / "stderr").open("wb"),
        )
        if not await port_opens(self.port, self.process):
            await self.stop()
            pytest.fail("nginx did not start: " + self.log())

    def log(self) -> str:
        return "".join(
            p.read_text(errors="replace")
            for p in (self.directory / "stderr", self.directory / "error.log")
            if p.exists()
        )

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            await stop_process(process)


# Chromium reaches nothing but loopback: every other host fails to resolve, and anything that
# still tried would go to a dead proxy (loopback itself bypasses proxies).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # tests run as root in CI
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--no-pings",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--proxy-server=http://127.0.0.1:9",
)


async def chromium_dom(url: str, profile: Path, seconds: float = 60.0) -> str:
    """The DOM of ``url`` as headless Chromium shows it once the page's scripts are done:
    virtual time (``--virtual-time-budget``) does not advance while a fetch is pending, so
    the dump comes after the page's fetches have been answered and written into it."""
    executable = system_executable("chromium", "/usr/bin/chromium")
    process = await asyncio.create_subprocess_exec(
        executable,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        "--virtual-time-budget=30000",
        "--dump-dom",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), seconds)
    except TimeoutError:
        await stop_process(process)
        pytest.fail(f"chromium did not finish within {seconds:g} s")
    if process.returncode != 0:
        pytest.fail(f"chromium exited {process.returncode}: {err.decode(errors='replace')[-2000:]}")
    return out.decode()
