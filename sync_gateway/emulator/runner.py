"""Running jobs: script subprocesses, and cheap in-loop "instant"/"delay" kinds."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shlex
import signal
import sys
import time
from typing import Any

import orjson

from .state import FINAL_LIFECYCLES, EmulatorState, Job

LOG_LIMIT = 64 * 1024  # characters of stdout+stderr kept in result.log


def js_string(value: Any) -> str:
    """A task argument as the agent passes it on the command line (JS ``String()``-like)."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value).decode()


def parse_lastline(lastline: str) -> tuple[list[str], Any, str | None]:
    """TheEye's output convention: ``(output, result.output, state from the output)``."""
    text = lastline.strip()
    try:
        parsed = orjson.loads(text) if text else None
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        state = parsed.get("state")
        return [text], parsed, state if isinstance(state, str) and state else None
    if isinstance(parsed, list):
        elements = [e if isinstance(e, str) else orjson.dumps(e).decode() for e in parsed]
        return elements, parsed, None
    return [lastline], lastline, None


def _times(started: float) -> dict[str, int]:
    elapsed = max(0.0, time.monotonic() - started)
    seconds = int(elapsed)
    return {"seconds": seconds, "nanoseconds": int((elapsed - seconds) * 1e9)}


def _result(
    code: int | None, log: str, lastline: str, output: Any, started: float, **extra: Any
) -> dict[str, Any]:
    if len(log) > LOG_LIMIT:
        log = "...[truncated]...\n" + log[-LOG_LIMIT:]
    result: dict[str, Any] = {
        "code": code,
        "log": log,
        "lastline": lastline,
        "signal": None,
        "killed": False,
        "times": _times(started),
        "output": output,
    }
    result.update(extra)
    return result


def _finish_from_lastline(
    job: Job, lastline: str, log: str, code: int, started: float, fixed_state: str | None
) -> None:
    output, parsed, state = parse_lastline(lastline)
    if fixed_state is not None:
        state = fixed_state
    elif state is None:
        state = "success" if code == 0 else "failure"
    job.finish(state, "finished", output, _result(code, log, lastline, parsed, started))


def start_job(state: EmulatorState, job: Job, args: list[Any]) -> None:
    """Schedule the job; the create answer (lifecycle ``ready``) is sent before it runs."""
    task = job.task
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    if task.kind == "instant":
        loop.call_soon(_finish_fixed, job, started)
    elif task.kind == "delay":
        delay = task.delay
        if args:
            first = args[0]
            with contextlib.suppress(TypeError, ValueError):
                candidate = float(first) if not isinstance(first, bool) else math.nan
                if math.isfinite(candidate) and candidate >= 0:
                    delay = candidate
        job.timer = loop.call_later(delay, _finish_fixed, job, started)
    else:
        runner = asyncio.create_task(_run_script(state, job, args), name=f"job-{job.id}")
        job.runner = runner
        state.runners.add(runner)  # awaited at shutdown even if the job was deleted meanwhile
        runner.add_done_callback(state.runners.discard)


def _finish_fixed(job: Job, started: float) -> None:
    job.timer = None
    text = job.task.output
    _finish_from_lastline(job, text, text + "\n", 0, started, job.task.state)


def _argv(job: Job, args: list[Any]) -> list[str]:
    script = str(job.task.script)
    parts = shlex.split(job.task.runas)
    argv = [script if p == "%script%" else p.replace("%script%", script) for p in parts]
    if argv and argv[0] in ("python3", "python"):
        argv[0] = sys.executable
    if "%script%" not in job.task.runas:
        argv.append(script)
    return argv + [js_string(a) for a in args]


def _env(job: Job) -> dict[str, str]:
    env = dict(os.environ)
    env.update({k: str(v) for k, v in job.doc["env"].items()})
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _kill(job: Job) -> None:
    proc = job.process
    if proc is None or proc.returncode is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


async def _run_script(state: EmulatorState, job: Job, args: list[Any]) -> None:
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *_argv(job, args),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=_env(job),
            cwd=str(job.task.script.parent) if job.task.script else None,
            start_new_session=True,
        )
    except OSError as exc:
        msg = f"cannot start the task: {exc}"
        job.finish("error", "finished", [msg], _result(None, msg, msg, msg, started))
        return
    job.process = proc
    if job.finished or state.closing:  # canceled (or shut down) while spawning
        _kill(job)
    else:
        job.set_lifecycle("assigned")
    try:
        async with asyncio.timeout(job.task.timeout):
            out, err = await proc.communicate()
    except TimeoutError:
        _kill(job)
        await proc.wait()
        msg = f"task execution timed out after {job.task.timeout:g} seconds"
        result = _result(None, msg, "", None, started, signal="SIGKILL", killed=True)
        job.finish("timeout", "terminated", [], result)
        return
    except asyncio.CancelledError:
        _kill(job)
        await asyncio.shield(proc.wait())
        raise
    finally:
        job.process = None
    if job.doc["lifecycle"] in FINAL_LIFECYCLES:  # canceled meanwhile (cancel recorded it)
        return
    stdout = out.decode("utf-8", "replace")
    stderr = err.decode("utf-8", "replace")
    lines = [line for line in stdout.splitlines() if line.strip()]
    lastline = lines[-1] if lines else ""
    code = proc.returncode if proc.returncode is not None else -1
    log = stdout + stderr
    if code < 0:  # killed by a signal (not by us)
        sig = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        output, parsed, _ = parse_lastline(lastline)
        result = _result(None, log, lastline, parsed, started, signal=sig, killed=True)
        job.finish("failure", "finished", output, result)
        return
    _finish_from_lastline(job, lastline, log, code, started, None)


# cancelJobNextLifecycle (core/service/job/index.js): a job not started yet is canceled, a
# running one terminated; any other lifecycle (a finished job) does not allow the transition.
CANCEL_LIFECYCLES = {"ready": "canceled", "onhold": "canceled", "assigned": "terminated"}


def cancel_job(job: Job, who: dict[str, Any]) -> bool:
    """The supervisor's ``jobDispatcher.cancel``: state ``canceled``, lifecycle ``canceled``
    (ready) or ``terminated`` (assigned, i.e. running); kills its process or timer. A job whose
    lifecycle allows no cancel is left alone: False."""
    lifecycle = CANCEL_LIFECYCLES.get(job.doc["lifecycle"])
    if lifecycle is None:
        return False
    if job.timer is not None:
        job.timer.cancel()
        job.timer = None
    _kill(job)
    result = {"user": who, "output": [who]}
    job.finish("canceled", lifecycle, [orjson.dumps(who).decode()], result)
    return True


def kill_all(state: EmulatorState) -> None:
    """Kill every running subprocess (its job ends ``failure``, killed) and stop the timers.

    The runner tasks are not cancelled: each reaps its killed process and records the end.
    """
    state.closing = True
    for job in state.jobs.values():
        if job.timer is not None:
            job.timer.cancel()
            job.timer = None
        _kill(job)
