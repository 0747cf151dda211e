"""A/B: the server CPU per call of two checkouts (and the bare hop), in many short turns.

``python bench/ab.py OLD_CHECKOUT NEW_CHECKOUT [--bare]`` starts one emulator and one gateway
per checkout (``python -m sync_gateway serve`` run in that directory, so that it imports that
checkout's code), pins every server to the last CPU and the emulator and the load to the
others, and then loads them in turns: instant jobs, ``--clients`` at once, ``--seconds`` each,
``--turns`` times over, the order reversed every turn. It prints each target's median CPU
milliseconds per call and the median of the per-turn ratios to the first target.

Why: on a shared machine the CPU a call costs moves by a third between runs a minute apart,
so two 10-s runs of ``run.py`` one after the other cannot tell a 10% change. Turns of a second
or two, alternated, see the same machine; the ratio within a turn pair cancels most of what
the machine does. It prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from run import (
    BARE_HOP,
    INSTANT_TASK,
    ROOT,
    _cpu_seconds,
    _errors,
    _spawn,
    _stop,
    _wait_http,
    free_port,
    load_worker,
    raise_open_files_limit,
)


@dataclass
class Target:
    """One server under test: its name, how it is started, and what each turn cost it."""

    name: str
    cmd: list[str]
    cwd: Path
    url: str = ""
    pid: int = 0
    ms_per_call: list[float] = field(default_factory=list)
    calls_per_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


async def load(target: Target, seconds: float, clients: int) -> int:
    """``clients`` callers back to back for ``seconds`` (run.py's load, in this process): the
    calls answered 200; any other answer or error is counted on the target."""
    spec = {"target": "gateway", "base": target.url, "task": INSTANT_TASK, "body": "[]"}
    spec |= {"clients": clients, "duration": seconds, "start_at": time.time()}
    report = await load_worker(spec)
    target.errors.update(report["errors"])
    return int(report["calls"])


def pin(pid: int, cpus: set[int]) -> None:
    """Keep a process (and the threads it has) on ``cpus``."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), cpus)


async def run(args: argparse.Namespace) -> list[Target]:
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, rest = {cpus[-1]}, set(cpus[:-1]) or {cpus[-1]}
    os.sched_setaffinity(0, rest)
    logs = Path(tempfile.mkdtemp(prefix="sync-gateway-ab-"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SYNC_GATEWAY_SERVER_DRAIN_SECONDS": "1"}
    py = sys.executable
    emu_port = free_port()
    emu_url = f"http://127.0.0.1:{emu_port}"
    emu_cmd = [py, "-m", "sync_gateway", "emulator", "--host", "127.0.0.1", "--port"]
    emu_cmd += [str(emu_port), "--min-timeout", "1", "--autoremove-limit", "0"]
    emulator = _spawn(emu_cmd, env, logs / "emulator.log")
    targets = []
    if args.bare:
        targets.append(Target("bare hop", [py, BARE_HOP, "--upstream", emu_url], ROOT))
    for i, checkout in enumerate(args.checkouts):
        name = f"{'AB'[i] if len(args.checkouts) == 2 else i + 1}: {checkout}"
        cmd = [py, "-m", "sync_gateway", "serve", "--upstream", emu_url]
        targets.append(Target(name, cmd, checkout))
    procs = [emulator]
    try:
        await _wait_http(f"{emu_url}/_emulator/stats", emulator, "the emulator")
        for n, target in enumerate(targets):
            port = free_port()
            target.url = f"http://127.0.0.1:{port}"
            cmd = [*target.cmd, "--host", "127.0.0.1", "--port", str(port)]
            proc = _spawn(cmd, env, logs / f"server{n}.log", cwd=target.cwd)
            procs.append(proc)
            await _wait_http(f"{target.url}/healthz", proc, target.name)
            target.pid = proc.pid
            pin(proc.pid, server_cpu)
        pin(emulator.pid, rest)
        for target in targets:  # unmeasured: the first seconds of a process cost more
            await load(target, args.warmup, args.clients)
        for turn in range(args.turns):
            for target in targets if turn % 2 == 0 else targets[::-1]:
                before, started = _cpu_seconds(target.pid), time.monotonic()
                calls = await load(target, args.seconds, args.clients)
                elapsed = time.monotonic() - started
                cpu = _cpu_seconds(target.pid) - before
                target.ms_per_call.append(1000 * cpu / max(calls, 1))
                target.calls_per_s.append(calls / elapsed)
    finally:
        for proc in reversed(procs):
            _stop(proc)
    print(f"(logs: {logs})")
    return targets


def report(targets: list[Target], args: argparse.Namespace) -> None:
    print(
        f"\ninstant jobs, {args.clients} clients, {args.turns} turns of {args.seconds:g} s, "
        f"servers pinned to one CPU"
    )
    first = targets[0]
    for target in targets:
        ratios = [a / b for a, b in zip(target.ms_per_call, first.ms_per_call, strict=True)]
        median = statistics.median(target.ms_per_call)
        print(
            f"{target.name}\n    server CPU ms/call median {median:.3f}"
            f" (turns {min(target.ms_per_call):.3f}..{max(target.ms_per_call):.3f});"
            f" calls/s median {statistics.median(target.calls_per_s):,.0f};"
            f" over the first, median of the turns' ratios {statistics.median(ratios):.3f};"
            f" errors {_errors(target.errors)}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "checkouts", nargs="+", type=Path, help="directories of the checkouts to compare"
    )
    p.add_argument("--bare", action="store_true", help="the bare hop too, first (the floor)")
    p.add_argument("--turns", type=int, default=16)
    p.add_argument("--seconds", type=float, default=1.5, help="length of each turn")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--clients", type=int, default=50)
    args = p.parse_args()
    raise_open_files_limit()
    report(asyncio.run(run(args)), args)


if __name__ == "__main__":
    main()
