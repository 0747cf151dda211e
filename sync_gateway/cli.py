"""Command line: ``serve``, ``demo``, ``emulator``, ``check-config``.

Heavy imports (aiohttp, structlog, prometheus-client) happen inside the commands: the parent
of ``serve --workers N`` only forks and waits, and should not hold tens of megabytes of
modules it never uses.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sync_gateway import __version__
from sync_gateway.config import Settings, load, redacted
from sync_gateway.core.errors import ConfigError, StartupError

if TYPE_CHECKING:
    from sync_gateway.emulator import EmulatorSettings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _configure_logging(level: str, fmt: str) -> None:
    from sync_gateway import logging as gw_logging

    gw_logging.configure(level, fmt)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    server: dict[str, Any] = {}
    if getattr(args, "host", None) is not None:
        server["host"] = args.host
    if getattr(args, "port", None) is not None:
        server["port"] = args.port
    if getattr(args, "workers", None) is not None:
        server["workers"] = args.workers
    data: dict[str, Any] = {"server": server} if server else {}
    if getattr(args, "upstream", None) is not None:
        data["upstream"] = {"url": args.upstream}
    return data


def _settings(args: argparse.Namespace) -> Settings:
    return load(getattr(args, "config", None), os.environ, _overrides(args))


def _use_uvloop() -> None:
    import asyncio

    with contextlib.suppress(ImportError):
        import uvloop  # type: ignore[import-not-found,unused-ignore]

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _raise_open_files_limit() -> None:
    """Every waiting client and every upstream long poll is a file descriptor."""
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# Young-generation collections per this many new container objects (CPython's default: 700).
# A sync call leaves some tens of objects in reference cycles (asyncio tasks and their
# coroutines, retry state) that only a collection frees, and each collection also walks every
# young object still alive: the requests in flight. At the default a collection runs every
# few calls and mostly walks the same in-flight objects again; a larger threshold spreads that
# walk over many more calls, for a few MB more of garbage waiting at most.
GC_YOUNG_THRESHOLD = 20_000


async def _settle_gc(_: object) -> None:
    """Once the app's resources are open: what start-up built (modules, settings, routes,
    the app) lives as long as the process, so it is moved out of the collector's sight
    (``gc.freeze``) instead of being walked by every full collection."""
    import gc

    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def _run_gateway(settings: Settings, sock: socket.socket | None = None) -> None:
    import structlog

    from sync_gateway.app import create_app
    from sync_gateway.web.server import run

    _raise_open_files_limit()

    def listening(where: str) -> None:
        # Logged once the port is bound, never before.
        structlog.get_logger("sync_gateway.cli").info(
            "gateway_listening", url=where, upstream=settings.upstream.url, pid=os.getpid()
        )

    app = create_app(settings)
    app.on_startup.append(_settle_gc)  # after the app's cleanup_ctx: its resources are open
    run(app, settings, sock, listening)


def _worker(settings: Settings) -> None:
    # A forked worker inherits the parent's forwarding handlers; aiohttp installs its own.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _configure_logging(settings.log.level, settings.log.format)
    _use_uvloop()
    try:
        _run_gateway(settings)
    except StartupError as exc:
        sys.stderr.write(f"sync-gateway: cannot start: {exc}\n")
        sys.exit(2)


def startup_checks(settings: Settings) -> None:
    """What start-up would refuse, found without starting: the extras a setting needs, and
    whether the port can be bound now. Raises StartupError (one line)."""
    if settings.store.backend == "redis":
        from sync_gateway.store import redis_backend

        redis_backend()
    if settings.tracing.enabled:
        from sync_gateway.app import telemetry_class

        telemetry_class()
    server = settings.server
    if server.workers > 1:
        return  # the workers share the port (SO_REUSEPORT)
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((server.host, server.port))
        except OSError as exc:
            from sync_gateway.web.server import bind_problem

            raise StartupError(bind_problem(server.host, server.port, exc)) from None


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    startup_checks(settings)
    if settings.server.workers <= 1:
        _configure_logging(settings.log.level, settings.log.format)
        _use_uvloop()
        _run_gateway(settings)
        return 0
    return _serve_workers(settings)


def _serve_workers(settings: Settings) -> int:
    """N processes on one port (SO_REUSEPORT); SIGTERM/SIGINT are passed on to all.

    Metrics: each worker keeps its values in files under ``PROMETHEUS_MULTIPROC_DIR`` and a
    scrape of any worker adds them all up. Unless the user chose that directory, a fresh one is
    made here (it must start empty), handed down to the workers and removed at the end."""
    import multiprocessing
    import shutil
    import tempfile

    made: str | None = None
    if not os.environ.get(MULTIPROC_ENV):
        made = tempfile.mkdtemp(prefix="sync-gateway-metrics-")
        os.environ[MULTIPROC_ENV] = made  # inherited by the spawned workers
    metrics_dir = os.environ[MULTIPROC_ENV]
    # fork: the parent has imported neither asyncio nor aiohttp (no loop, no threads), so the
    # workers start from a small shared image, and fork starts no resource-tracker process.
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(target=_worker, args=(settings,), name=f"sync-gateway-{i}")
        for i in range(settings.server.workers)
    ]

    stopping: list[int] = []

    def forward(signum: int, _: Any) -> None:
        stopping.append(signum)
        for proc in procs:
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = []
    try:
        started = []
        for proc in procs:
            if stopping:  # a signal during start-up: start no more workers
                break
            proc.start()
            started.append(proc)
        for proc in started:
            proc.join()
            codes.append(proc.exitcode or 0)
            if proc.pid is not None:  # its live gauges stop counting
                from prometheus_client import multiprocess

                multiprocess.mark_process_dead(proc.pid, metrics_dir)  # type: ignore[no-untyped-call]
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
            os.environ.pop(MULTIPROC_ENV, None)
    return max(codes, default=0)


def cmd_check_config(args: argparse.Namespace) -> int:
    import orjson

    settings = load(args.file, os.environ, {})
    startup_checks(settings)
    sys.stdout.write(orjson.dumps(redacted(settings), option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def cmd_emulator(args: argparse.Namespace) -> int:
    import asyncio

    from sync_gateway.emulator import EmulatorSettings, run_emulator

    _configure_logging("info", "auto")
    settings = EmulatorSettings(
        recipe=Path(args.recipe) if args.recipe else None,
        min_timeout=args.min_timeout,
        autoremove_limit=args.autoremove_limit or None,
        notifications=args.notifications,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_emulator(settings, args.host, args.port))
    return 0


SLOW_TASK_ID = "65a000000000000000000002"  # the bundled recipe's "Slow" task
DEMO_LINES = """
sync-gateway demo: gateway {gw} in front of the supervisor emulator {up}
(customer "demo", token "demo-token"; the recipe is the seeds' "Rest API Response")

  # success: the job's output, 200
  curl -i -X POST '{gw}/demo/task/64ac0b46c06feba9b89ad795/job?access_token=demo-token' \\
       -H 'content-type: application/json' --data '{{"task_arguments":[100]}}'
  # failure: 500 and the raw output
  curl -i -X POST '{gw}/demo/task/64ac0b46c06feba9b89ad795/job?access_token=demo-token' \\
       -H 'content-type: application/json' --data '{{"task_arguments":[200]}}'
  # parse: the output parsed; the failure answers the task's own 418
  curl -i -X POST '{gw}/demo/task/64ac0b46c06feba9b89ad795/job?parse&access_token=demo-token' \\
       -H 'content-type: application/json' --data '{{"task_arguments":[200]}}'
  # a response object: 201, a TheEyeJobId header and the inner body
  curl -i -X POST '{gw}/demo/task/6538069b3a10575075d0ccb5/job?parse&access_token=demo-token'
  # the supervisor's own wait_result loop, followed by curl
  curl -i --location -X POST \\
       '{gw}/task/64ac0b46c06feba9b89ad795/job?access_token=demo-token&wait_result=true&parse' \\
       -H 'content-type: application/json' --data '{{"task_arguments":[100]}}'
  # a wait that runs out (a 5 s job, 1 s budget): 202 + Location, then re-attach
  curl -i -X POST -H 'Prefer: wait=1' \\
       '{gw}/demo/task/{slow}/job?access_token=demo-token' --data '[5]'

Ctrl-C stops both.
"""


def cmd_demo(args: argparse.Namespace) -> int:
    import asyncio

    from sync_gateway.emulator import EmulatorSettings

    _configure_logging("warning", "auto")
    emulator_settings = EmulatorSettings(min_timeout=1.0)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_demo(emulator_settings, args.host, args.port, args.emulator_port))
    return 0


async def _demo(emu_settings: EmulatorSettings, host: str, port: int, emulator_port: int) -> None:
    import asyncio

    from aiohttp import web

    from sync_gateway.app import create_app
    from sync_gateway.emulator import EmulatorServer

    emulator = EmulatorServer(emu_settings, host="127.0.0.1", port=emulator_port)
    await emulator.start()
    settings = load(
        None, {}, {"server": {"host": host, "port": port}, "upstream": {"url": emulator.url}}
    )
    runner = web.AppRunner(create_app(settings), handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    gw = f"http://{host}:{bound}"
    sys.stdout.write(DEMO_LINES.format(gw=gw, up=emulator.url, slow=_slow_task_id()))
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await emulator.close()
        sys.stdout.write("stopped\n")


def _slow_task_id() -> str:
    return SLOW_TASK_ID


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sync-gateway", description="One blocking HTTP call in front of an async job API."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="TOML settings file (or SYNC_GATEWAY_CONFIG)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--upstream", help="the upstream's base URL")
    serve.add_argument("--workers", type=int, help="processes sharing the port")
    serve.set_defaults(func=cmd_serve)

    demo = sub.add_parser("demo", help="the gateway and the supervisor emulator together")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8080, help="gateway port (0: any free one)")
    demo.add_argument("--emulator-port", type=int, default=0)
    demo.set_defaults(func=cmd_demo)

    emulator = sub.add_parser("emulator", help="run the TheEye supervisor emulator alone")
    emulator.add_argument("--host", default="127.0.0.1")
    emulator.add_argument("--port", type=int, default=60080)
    emulator.add_argument("--recipe", help="tasks recipe (TOML); default: the bundled one")
    emulator.add_argument(
        "--autoremove-limit",
        type=int,
        default=5,
        help="every create keeps the task's newest N jobs, older finished ones are deleted"
        " (the supervisor's default: 5; 0 keeps every job)",
    )
    emulator.add_argument(
        "--no-notifications",
        dest="notifications",
        action="store_false",
        help="long polls are not woken when their job ends (no TheEye gateway publishing)",
    )
    emulator.add_argument(
        "--min-timeout", type=float, default=10.0, help="lower long-poll clamp (supervisor: 10)"
    )
    emulator.set_defaults(func=cmd_emulator)

    check = sub.add_parser("check-config", help="validate a config; print effective settings")
    check.add_argument("file")
    check.set_defaults(func=cmd_check_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        sys.stderr.write(f"sync-gateway: config error: {exc}\n")
        return 2
    except StartupError as exc:
        sys.stderr.write(f"sync-gateway: cannot start: {exc}\n")
        return 2
    return code
