"""sync-gateway benchmark: the emulator and the gateway on loopback, an aiohttp load generator.

One command (``python bench/run.py [--quick]``) starts the supervisor emulator, the gateway and
(for section 1) the bare gateway hop (bench/bare_hop.py) as subprocesses on free loopback ports,
drives them from separate load-generator processes (this same file, ``--load-worker``) and
prints one table. It prints figures; it asserts nothing.
See bench/README.md for what each row measures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import resource
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

SELF = str(Path(__file__).resolve())
ROOT = Path(SELF).parent.parent
BARE_HOP = str(Path(SELF).with_name("bare_hop.py"))
CUSTOMER = "demo"
TOKEN = "demo-token"
INSTANT_TASK = "65a000000000000000000006"  # the bundled recipe's "Instant" task
DELAY_TASK = "65a000000000000000000007"  # "Delay": finishes after N s (first argument)
FINAL_LIFECYCLES = {"finished", "completed", "terminated", "canceled", "expired"}
HAND_POLL_INTERVAL = 0.1  # the by-hand client polls GET /{customer}/job/{id} every 100 ms
HOLD_CLIENTS_PER_PROCESS = 2500


def raise_open_files_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (inherited by the processes we start)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ============================================================================================
# Load worker (runs in its own process: `python bench/run.py --load-worker < spec.json`)
# ============================================================================================


@dataclass
class Tally:
    """What one load process saw."""

    calls: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    answers: list[tuple[str, float]] = field(default_factory=list)  # (job id, time.time())
    first_start: float = 0.0
    last_end: float = 0.0


def _error_name(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"connect:{exc.os_error.__class__.__name__}"
    return exc.__class__.__name__


async def _gateway_call(session: aiohttp.ClientSession, spec: dict[str, Any], tally: Tally) -> None:
    url = f"{spec['base']}/{CUSTOMER}/task/{spec['task']}/job"
    headers = {"Content-Type": "application/json", **spec.get("headers", {})}
    async with session.post(
        url, params={"access_token": spec.get("token", TOKEN)}, data=spec["body"], headers=headers
    ) as resp:
        await resp.read()
        done = time.time()
        if resp.status != 200:
            tally.errors[f"status:{resp.status}"] += 1
            return
        tally.calls += 1
        if spec.get("record"):
            tally.answers.append((resp.headers.get("X-Job-Id", ""), done))


async def _by_hand_call(session: aiohttp.ClientSession, spec: dict[str, Any], tally: Tally) -> None:
    """What a client does without the gateway: create, then poll the job every 100 ms."""
    base = spec["base"]
    params = {"access_token": spec.get("token", TOKEN)}
    headers = {"Content-Type": "application/json"}
    url = f"{base}/{CUSTOMER}/task/{spec['task']}/job"
    async with session.post(url, params=params, data=spec["body"], headers=headers) as resp:
        created = await resp.read()
        if resp.status != 200:
            tally.errors[f"status:{resp.status}"] += 1
            return
    job_id = json.loads(created)["id"]
    # The first poll at once (an instant job is done by then); the next ones every 100 ms on a
    # random phase, since a real client's polls are not aligned with the job's end.
    started = time.monotonic() - random.uniform(0.0, HAND_POLL_INTERVAL)
    for attempt in range(100_000):
        due = started + attempt * HAND_POLL_INTERVAL
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        async with session.get(f"{base}/{CUSTOMER}/job/{job_id}", params=params) as resp:
            doc = await resp.read()
            done = time.time()
            if resp.status != 200:
                tally.errors[f"status:{resp.status}"] += 1
                return
        if json.loads(doc).get("lifecycle") in FINAL_LIFECYCLES:
            break
    tally.calls += 1
    if spec.get("record"):
        tally.answers.append((job_id, done))


async def _client(session: aiohttp.ClientSession, spec: dict[str, Any], tally: Tally) -> None:
    """One simulated client: one call, or calls back to back until the duration is over."""
    call = _by_hand_call if spec["target"] == "by_hand" else _gateway_call
    start_at = spec["start_at"] + random.uniform(0.0, spec.get("stagger", 0.0))
    await asyncio.sleep(max(0.0, start_at - time.time()))
    end = start_at + spec["duration"] if spec.get("duration") else None
    while True:
        try:
            await call(session, spec, tally)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            tally.errors[_error_name(exc)] += 1
        tally.last_end = time.time()
        if end is None or time.time() >= end:
            return


async def _timings(base: str, answers: list[tuple[str, float]]) -> list[float]:
    """Milliseconds from each job's end (emulator's finished_at) to the client's answer."""
    lags: list[float] = []
    queue = list(answers)

    async def fetch(session: aiohttp.ClientSession) -> None:
        while queue:
            job_id, answered = queue.pop()
            if not job_id:
                continue
            async with session.get(f"{base}/_emulator/jobs/{job_id}/timing") as resp:
                if resp.status != 200:
                    continue
                finished = (await resp.json()).get("finished_at")
            if finished is not None:
                lags.append((answered - finished) * 1000.0)

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(fetch(session) for _ in range(20)))
    return lags


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def load_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``spec['clients']`` clients; report calls, errors and (optionally) answer lags."""
    nofile = raise_open_files_limit()
    tally = Tally()
    timeout = aiohttp.ClientTimeout(total=spec.get("timeout", 120.0))
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tally.first_start = spec["start_at"]
        await asyncio.sleep(max(0.0, spec["start_at"] - time.time()))
        cpu_before = _own_cpu()
        await asyncio.gather(*(_client(session, spec, tally) for _ in range(spec["clients"])))
        cpu = _own_cpu() - cpu_before
    lags = await _timings(spec["emulator"], tally.answers) if spec.get("record") else []
    return {
        "calls": tally.calls,
        "errors": dict(tally.errors),
        "start": tally.first_start,
        "end": tally.last_end,
        "lags_ms": lags,
        "cpu": cpu,
        "nofile": nofile,
    }


# ============================================================================================
# Orchestrator
# ============================================================================================


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _descendants(root: int) -> list[int]:
    """``root`` and every process below it (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _cpu_seconds(root: int) -> float:
    """User + system CPU seconds of a process tree so far (children still running)."""
    ticks = 0
    for pid in _descendants(root):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _rss_bytes(pids: Iterable[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
    return total


class RssSampler:
    """Peak of the summed RSS of a process tree, sampled every 100 ms."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.peak = 0
        self.samples: list[tuple[float, int]] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        pids: list[int] = []
        for tick in range(10_000_000):
            if tick % 10 == 0:
                pids = _descendants(self.root)
            rss = _rss_bytes(pids)
            self.peak = max(self.peak, rss)
            self.samples.append((time.monotonic(), rss))
            await asyncio.sleep(0.1)

    def peak_between(self, start: float, end: float) -> int:
        """The peak within a window: e.g. while every client waits, before the jobs end."""
        return max((rss for when, rss in self.samples if start <= when <= end), default=0)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> int:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return self.peak


@dataclass
class Stack:
    """The emulator and the gateway (and the bare hop, when asked for), running."""

    emulator_url: str
    gateway_url: str
    gateway_pid: int
    emulator_pid: int
    bare_url: str = ""
    bare_pid: int = 0
    token: str = TOKEN

    def pids(self) -> dict[str, int]:
        """The server processes whose CPU a phase accounts for, by name."""
        pids = {"gateway": self.gateway_pid, "emulator": self.emulator_pid}
        if self.bare_pid:
            pids["bare"] = self.bare_pid
        return pids


async def _wait_http(url: str, proc: subprocess.Popen[bytes], what: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode} at start")
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{what} did not answer {url} in 30 s")


def _spawn(
    cmd: list[str], env: dict[str, str], log: Path, cwd: Path = ROOT
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=out, stderr=out, start_new_session=True
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group we started, then SIGKILL what is left after 10 s."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


@contextlib.asynccontextmanager
async def stack(
    args: argparse.Namespace, bare: bool = False, workers: int | None = None
) -> AsyncIterator[Stack]:
    """Start the emulator and the gateway (and the bare hop); always stop them all.
    ``workers``: the gateway's processes, if not ``--workers``."""
    workers = workers or args.workers
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    gw_env = {
        **env,
        "SYNC_GATEWAY_LOG_LEVEL": args.log_level,
        "SYNC_GATEWAY_SERVER_DRAIN_SECONDS": "1",
    }
    for item in args.set:
        key, _, value = item.partition("=")
        gw_env["SYNC_GATEWAY_" + key.replace(".", "_").upper()] = value
    emu_port, gw_port = free_port(), free_port()
    emu_url, gw_url = f"http://127.0.0.1:{emu_port}", f"http://127.0.0.1:{gw_port}"
    py = sys.executable
    emu_cmd = [py, "-m", "sync_gateway", "emulator", "--host", "127.0.0.1"]
    emu_cmd += ["--port", str(emu_port), "--min-timeout", "1"]
    emu_cmd += ["--autoremove-limit", str(args.autoremove)]
    gw_cmd = [*shlex.split(args.gateway_prefix), py, "-m", "sync_gateway", "serve"]
    gw_cmd += ["--host", "127.0.0.1", "--port", str(gw_port), "--upstream", emu_url]
    gw_cmd += ["--workers", str(workers)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(_spawn(emu_cmd, env, args.logs / "emulator.log"))
        await _wait_http(f"{emu_url}/_emulator/stats", procs[0], "the emulator")
        procs.append(_spawn(gw_cmd, gw_env, args.logs / "gateway.log"))
        await _wait_http(f"{gw_url}/healthz", procs[1], "the gateway")
        await asyncio.sleep(0.5 * workers)  # every worker listening
        running = Stack(emu_url, gw_url, procs[1].pid, procs[0].pid, token=args.token)
        if bare:
            bare_port = free_port()
            bare_cmd = [py, BARE_HOP, "--upstream", emu_url, "--host", "127.0.0.1"]
            bare_cmd += ["--port", str(bare_port), "--loop", args.bare_loop]
            procs.append(_spawn(bare_cmd, env, args.logs / "bare_hop.log"))
            running.bare_url = f"http://127.0.0.1:{bare_port}"
            await _wait_http(f"{running.bare_url}/healthz", procs[2], "the bare hop")
            running.bare_pid = procs[2].pid
        yield running
    finally:
        for proc in reversed(procs):
            _stop(proc)


async def run_load(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One load-generator process per spec, all at once; their JSON reports."""

    async def one(spec: dict[str, Any]) -> dict[str, Any]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            SELF,
            "--load-worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            out, _ = await asyncio.wait_for(
                proc.communicate(json.dumps(spec).encode()), timeout=spec.get("deadline", 600)
            )
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        if proc.returncode != 0:
            raise RuntimeError(f"a load worker failed with exit code {proc.returncode}")
        report: dict[str, Any] = json.loads(out)
        return report

    return list(await asyncio.gather(*(one(s) for s in specs)))


async def emulator_stats(stack_: Stack, reset: bool = False) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        if reset:
            async with session.post(f"{stack_.emulator_url}/_emulator/reset-stats") as resp:
                await resp.read()
            return {}
        async with session.get(f"{stack_.emulator_url}/_emulator/stats") as resp:
            stats: dict[str, Any] = await resp.json()
            return stats


def _merge(reports: list[dict[str, Any]]) -> dict[str, Any]:
    errors: Counter[str] = Counter()
    for r in reports:
        errors.update(r["errors"])
    return {
        "calls": sum(r["calls"] for r in reports),
        "errors": errors,
        "elapsed": max(r["end"] for r in reports) - min(r["start"] for r in reports),
        "lags_ms": sorted(lag for r in reports for lag in r["lags_ms"]),
        "cpu": {"load": sum(r["cpu"] for r in reports)},
    }


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


async def phase(
    stack_: Stack,
    *,
    target: str,
    task: str,
    body: str,
    clients: int,
    processes: int = 1,
    duration: float | None = None,
    stagger: float = 0.0,
    record: bool = False,
    headers: dict[str, str] | None = None,
    timeout: float = 120.0,
) -> dict[str, Any]:
    """Reset the emulator's counters, run the load, return the merged figures + counters."""
    await emulator_stats(stack_, reset=True)
    start_at = time.time() + 1.5  # every load process imported and ready
    bases = {"gateway": stack_.gateway_url, "bare": stack_.bare_url}
    base = bases.get(target, stack_.emulator_url)
    specs = [
        {
            "target": target,
            "base": base,
            "emulator": stack_.emulator_url,
            "task": task,
            "body": body,
            "clients": n,
            "duration": duration,
            "stagger": stagger,
            "record": record,
            "token": stack_.token,
            "headers": headers or {},
            "start_at": start_at,
            "timeout": timeout,
            "deadline": (duration or 0) + timeout + 120,
        }
        for n in _split(clients, processes)
        if n
    ]
    pids = stack_.pids()
    before = {name: _cpu_seconds(pid) for name, pid in pids.items()}
    merged = _merge(await run_load(specs))
    # Each server process's CPU over the phase: the delta of /proc/<pid>/stat utime + stime.
    merged["cpu"].update({name: _cpu_seconds(pid) - before[name] for name, pid in pids.items()})
    merged["stats"] = await emulator_stats(stack_)
    return merged


def _pct(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    k = min(len(values) - 1, max(0, math.ceil(p / 100 * len(values)) - 1))
    return sorted(values)[k]


def _errors(counter: Counter[str]) -> str:
    total = sum(counter.values())
    if not total:
        return "0"
    top = ", ".join(f"{k} {v}" for k, v in counter.most_common(3))
    return f"{total} ({top})"


def _per_call(stats: dict[str, Any], calls: int) -> str:
    """Upstream requests per answered call, with the kinds of request that make them up."""
    if not calls:
        return "-"
    kinds = ", ".join(
        f"{kind} {stats.get(kind, 0) / calls:.2f}"
        for kind in ("create", "result", "job", "list", "cancel")
        if stats.get(kind)
    )
    return f"{stats.get('total', 0) / calls:.2f} ({kinds})"


def _median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else math.nan


# ---- the sections ---------------------------------------------------------------------------

# Section 1's three ways of doing the same work: (phase target, name, the process it measures).
THROUGHPUT_TARGETS = (
    ("gateway", "product", "gateway"),
    ("bare", "bare hop", "bare"),
    ("by_hand", "by hand (create + poll 100 ms)", ""),
)


async def section_throughput(args: argparse.Namespace, rows: list[list[str]]) -> None:
    """The product, the bare hop and the by-hand client on instant jobs, in one run; with
    ``--repeat N`` every one N times (in a rotating order), medians reported."""
    seconds, repeat = args.seconds, args.repeat
    runs: dict[str, list[dict[str, Any]]] = {target: [] for target, _, _ in THROUGHPUT_TARGETS}
    async with stack(args, bare=True) as st:
        common = {"task": INSTANT_TASK, "body": "[]", "clients": 50, "duration": seconds}
        common["processes"] = args.load_procs
        # Unmeasured: the first seconds of a fresh stack cost more per call (connections,
        # caches, memory arenas), which would count against whichever target runs first.
        warm = {**common, "duration": args.warmup}
        targets = [target for target, _, _ in THROUGHPUT_TARGETS]
        await asyncio.gather(*(phase(st, target=t, **warm) for t in targets))  # type: ignore[arg-type]
        for rep in range(repeat):
            shift = rep % len(THROUGHPUT_TARGETS)
            for target, _, _ in THROUGHPUT_TARGETS[shift:] + THROUGHPUT_TARGETS[:shift]:
                res = await phase(st, target=target, **common)  # type: ignore[arg-type]
                runs[target].append(res)

    def rate(target: str) -> float:
        return _median(r["calls"] / r["elapsed"] for r in runs[target])

    def cpu_ms(target: str, process: str) -> float:
        """Median CPU milliseconds per call of one process (NaN: no such process)."""
        if not process:
            return math.nan
        return _median(1000 * r["cpu"][process] / max(r["calls"], 1) for r in runs[target])

    title = f"1. instant jobs, 50 clients, {seconds:g} s"
    title += f", median of {repeat}" if repeat > 1 else ""
    for target, name, _ in THROUGHPUT_TARGETS:
        errors: Counter[str] = Counter()
        for r in runs[target]:
            errors.update(r["errors"])
        rows.append([title, f"{name}: calls/s", f"{rate(target):,.0f}", _errors(errors)])
        title = ""
    for target, name, process in THROUGHPUT_TARGETS:
        parts = [cpu_ms(target, process), cpu_ms(target, "emulator"), cpu_ms(target, "load")]
        total = sum(p for p in parts if not math.isnan(p))
        value = " / ".join("-" if math.isnan(p) else f"{p:.3f}" for p in parts)
        label = f"{name.split(' (')[0]}: CPU ms/call, server / emulator / load = sum"
        rows.append(["", label, f"{value} = {total:.3f}", ""])
    product_cpu, bare_cpu = cpu_ms("gateway", "gateway"), cpu_ms("bare", "bare")
    rows.append(
        [
            "",
            "product / bare hop: calls/s; server CPU per call",
            f"{rate('gateway') / rate('bare'):.2f}; {product_cpu / bare_cpu:.2f}x",
            "",
        ]
    )
    rows.append(["", "product / by hand: calls/s", f"{rate('gateway') / rate('by_hand'):.2f}", ""])
    for target, name, _ in THROUGHPUT_TARGETS:
        stats: Counter[str] = Counter()
        for r in runs[target]:
            stats.update({k: v for k, v in r["stats"].items() if isinstance(v, int)})
        calls = sum(r["calls"] for r in runs[target])
        args.per_call.append((f"instant, {name.split(' (')[0]}", _per_call(stats, calls)))


async def section_latency(args: argparse.Namespace, rows: list[list[str]]) -> None:
    clients, seconds = args.latency_clients, args.seconds
    async with stack(args) as st:
        common = {"task": DELAY_TASK, "body": "[1]", "clients": clients, "duration": seconds}
        common.update(stagger=1.0, record=True)
        gw = await phase(st, target="gateway", **common)  # type: ignore[arg-type]
        hand = await phase(st, target="by_hand", **common)  # type: ignore[arg-type]
    title = f"2. 1-s jobs: job end -> answer, {clients} clients"
    for name, res in (("gateway", gw), ("by hand (poll 100 ms)", hand)):
        lags = res["lags_ms"]
        value = f"{_pct(lags, 50):.1f} / {_pct(lags, 99):.1f}"
        rows.append([title, f"{name}: p50 / p99 ms (n={len(lags)})", value, _errors(res["errors"])])
        title = ""
    args.per_call.append(("1-s jobs, gateway", _per_call(gw["stats"], gw["calls"])))


async def section_hold(args: argparse.Namespace, rows: list[list[str]]) -> None:
    seconds = args.hold_seconds
    title = f"3. clients waiting at once, {seconds:g}-s jobs"
    runs = [(clients, args.workers) for clients in args.hold]
    if args.hold_many:
        runs.append((args.hold_many, args.hold_workers))
    for clients, workers in runs:
        peak, waiting, res = await _hold(args, clients, workers)
        lags = res["lags_ms"]
        on = f", --workers {workers}" if workers > 1 else ""
        metric = f"{clients:,} clients{on}: peak RSS MB (waiting); lag p50/p99 ms"
        value = f"{peak / 2**20:,.0f} ({waiting / 2**20:,.0f}); "
        value += f"{_pct(lags, 50):.0f} / {_pct(lags, 99):.0f}"
        rows.append([title, metric, value, _errors(res["errors"])])
        title = ""
        per = _per_call(res["stats"], res["calls"])
        args.per_call.append((f"{seconds:g}-s jobs, {clients:,} at once{on}, gateway", per))


async def _hold(
    args: argparse.Namespace, clients: int, workers: int
) -> tuple[int, int, dict[str, Any]]:
    """``clients`` waiting at once on one gateway (``workers`` processes): peak RSS of its
    process tree, the peak while every client waits, and the phase's figures."""
    seconds = args.hold_seconds
    async with stack(args, workers=workers) as st:
        sampler = RssSampler(st.gateway_pid)
        sampler.start()
        started = time.monotonic()
        try:
            res = await phase(
                st,
                target="gateway",
                task=DELAY_TASK,
                body=f"[{seconds:g}]",
                clients=clients,
                processes=max(1, math.ceil(clients / HOLD_CLIENTS_PER_PROCESS)),
                record=True,
                headers={"Prefer": "wait=60"},
                timeout=seconds + 60,
            )
        finally:
            peak = await sampler.stop()
    # Every client is waiting in the last quarter before the jobs end.
    waiting = sampler.peak_between(started + seconds * 0.7, started + seconds * 0.95)
    return peak, waiting, res


def print_table(args: argparse.Namespace, rows: list[list[str]]) -> None:
    rows = rows + [
        ["4. upstream requests per sync call", label, value, ""]
        if i == 0
        else ["", label, value, ""]
        for i, (label, value) in enumerate(args.per_call)
    ]
    header = ["section", "measure", "value", "errors"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    line = "  ".join("-" * w for w in widths)
    mode = "quick" if args.quick else "full"
    print(
        f"\nsync-gateway bench ({mode}): gateway --workers {args.workers}, log level "
        f"{args.log_level}, {os.cpu_count()} CPUs, open files {args.nofile}"
    )
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print(line)
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


async def orchestrate(args: argparse.Namespace) -> None:
    args.nofile = raise_open_files_limit()
    args.logs = args.logs or Path(tempfile.mkdtemp(prefix="sync-gateway-bench-"))
    args.logs.mkdir(parents=True, exist_ok=True)
    rows: list[list[str]] = []
    args.per_call = []
    if {"throughput", "cpu"} & set(args.only):
        await section_throughput(args, rows)
    if "latency" in args.only:
        await section_latency(args, rows)
    if "hold" in args.only:
        await section_hold(args, rows)
    print_table(args, rows)
    print(f"(emulator and gateway logs: {args.logs})")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller numbers, shorter jobs (~1 min)")
    p.add_argument("--workers", type=int, default=1, help="gateway processes (serve --workers)")
    p.add_argument("--log-level", default="info", help="the gateway's log level (default info)")
    p.add_argument(
        "--autoremove",
        type=int,
        default=0,
        help="the emulator's autoremove limit: 5 is the supervisor's default, which deletes"
        " finished jobs under more concurrency than that (the README tells operators to raise"
        " it above their concurrency); 0, the default here, keeps every job",
    )
    p.add_argument(
        "--token",
        default=TOKEN,
        help="the clients' token; demo-operator-token: a member below admin, whose listings"
        " the supervisor filters by the tasks' ACL (the emulator's default: demo-token, admin)",
    )
    p.add_argument("--seconds", type=float, help="duration of sections 1 and 2")
    p.add_argument(
        "--hold", type=int, nargs="*", help="section 3 client counts (none: only --hold-many)"
    )
    p.add_argument("--hold-seconds", type=float, help="section 3 job length")
    p.add_argument(
        "--hold-many",
        type=int,
        help="section 3: one more row, this many clients on --hold-workers processes (0: none)",
    )
    p.add_argument(
        "--hold-workers", type=int, default=2, help="the gateway's processes for --hold-many"
    )
    p.add_argument("--latency-clients", type=int, default=20)
    p.add_argument("--load-procs", type=int, default=1, help="load processes for section 1")
    p.add_argument(
        "--only",
        nargs="+",
        default=["throughput", "latency", "hold"],
        choices=["throughput", "cpu", "latency", "hold"],
        help="sections to run (cpu: another name for throughput, section 1)",
    )
    p.add_argument("--repeat", type=int, default=1, help="section 1 N times over, medians reported")
    p.add_argument(
        "--warmup", type=float, default=2.0, help="seconds of unmeasured load before section 1"
    )
    p.add_argument(
        "--bare-loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="the bare hop's event loop (default uvloop, as serve uses when installed)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="gateway setting as SYNC_GATEWAY_<SECTION>_<KEY> (e.g. upstream.pool_size=100)",
    )
    p.add_argument(
        "--gateway-prefix", default="", help="command put before the gateway's (e.g. a profiler)"
    )
    p.add_argument(
        "--logs", type=Path, help="directory for the processes' logs (default: a temp dir)"
    )
    p.add_argument("--load-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.seconds = args.seconds or 5.0
        args.hold = [200, 1000] if args.hold is None else args.hold
        args.hold_many = 2000 if args.hold_many is None else args.hold_many
        args.hold_seconds = args.hold_seconds or 5.0
    else:
        args.seconds = args.seconds or 15.0
        args.hold = [1000, 5000, 10000] if args.hold is None else args.hold
        args.hold_many = 20000 if args.hold_many is None else args.hold_many
        args.hold_seconds = args.hold_seconds or 20.0
    return args


def main() -> None:
    args = parse_args()
    if args.load_worker:
        spec = json.loads(sys.stdin.read())
        sys.stdout.write(json.dumps(asyncio.run(load_worker(spec))))
        return
    asyncio.run(orchestrate(args))


if __name__ == "__main__":
    main()
