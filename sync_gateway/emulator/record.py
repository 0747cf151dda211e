"""Record the upstream exchanges the gateway makes, for the replay tests.

The replay tests (``tests/test_gateway_replay.py``, ``tests/test_bad_input.py``) serve these
recordings with aioresponses instead of a socket, so they stay fast and show exactly what the
gateway reads from the supervisor. The recorder runs the bundled emulator recipe (plus one
in-memory task, ``TwoOutputs``, whose ``output`` has two elements, for ``parse=1``) on a free
loopback port and performs, for every example of the seeds ``theeye-sync-api.md`` and
``theeye-wait-result.md``, the requests the gateway itself sends upstream:

* the create, ``POST /{customer}/task/{task}/job`` with the seed's body;
* the long poll ``GET /job/{id}/result?full&timeout=…&customer=…`` until it answers 200/500;
* ``GET /{customer}/job/{id}`` (the job document), for the Rest API Response examples;
* a 303 (``counter`` below ``limit``) and a 408 (no ``counter``/``limit``) "not finished yet";
* a create with a wrong token (401) and one of an unknown task (404).

Each exchange is one JSON file ``<example>.<step>.json``: ``method``, ``path`` (as sent),
``path_pattern`` (the route), ``query``, ``request_body``, ``status``, ``headers``
(``Content-Type``, ``Location``, ``WWW-Authenticate`` only), ``body`` (text), ``job_id``.
Machine-specific text (the emulator's port, the script directory) is replaced by fixed
placeholders so the files do not change from one machine to the next beyond ids and times.

Re-record (from the repository root; it takes a few seconds and overwrites the files)::

    python -m sync_gateway.emulator.record tests/recordings

then run ``pytest tests/test_gateway_replay.py tests/test_bad_input.py`` and commit the JSON
files. Job ids, secrets and dates change on every recording; the tests read them from the files.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from .app import EmulatorSettings
from .recipe import BUNDLED_RECIPE, Task
from .server import EmulatorServer
from .state import EmulatorState

CUSTOMER = "demo"
TOKEN = "demo-token"
REST_TASK = "64ac0b46c06feba9b89ad795"
API_TEST_TASK = "6538069b3a10575075d0ccb5"
API_TEST_FLAT_TASK = "6538069b3a10575075d0ccc1"
CRASH_TASK = "65a000000000000000000004"
DELAY_TASK = "65a000000000000000000007"
UNKNOWN_TASK = "ffffffffffffffffffffffff"
TWO_OUTPUTS = Task(
    id="65a0000000000000000000a1",
    name="TwoOutputs",
    customer=CUSTOMER,
    secret="a1" * 32,
    kind="instant",
    output='["not json","{\\"name\\":\\"tomer\\",\\"statusCode\\":202}"]',
    description="an output of two elements: parse=1 reads the second one",
)
API_URL_PLACEHOLDER = "http://127.0.0.1:60080"
KEPT_HEADERS = ("Content-Type", "Location", "WWW-Authenticate")
CREATE_PATTERN = "/{customer}/task/{task}/job"
RESULT_PATTERN = "/job/{job}/result"
JOB_PATTERN = "/{customer}/job/{job}"


@dataclasses.dataclass
class Recorder:
    """Sends requests to the emulator and writes one JSON file per exchange."""

    session: aiohttp.ClientSession
    server: EmulatorServer
    out: Path
    written: list[str] = dataclasses.field(default_factory=list)

    def _scrub(self, text: str) -> str:
        text = text.replace(self.server.url, API_URL_PLACEHOLDER)
        scripts = str(BUNDLED_RECIPE.parent / "scripts")
        return text.replace(scripts + "/", "scripts/").replace(sys.executable, "python3")

    async def exchange(
        self,
        name: str,
        method: str,
        path: str,
        pattern: str,
        query: Sequence[tuple[str, str]] = (),
        body: str | None = None,
        job_id: str | None = None,
    ) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        async with self.session.request(
            method,
            self.server.url + path,
            params=list(query),
            data=body.encode() if body is not None else None,
            headers=headers,
            allow_redirects=False,
        ) as resp:
            text = await resp.text()
            kept = {k: resp.headers[k] for k in KEPT_HEADERS if k in resp.headers}
            status = resp.status
        record: dict[str, Any] = {
            "method": method,
            "path": path,
            "path_pattern": pattern,
            "query": [list(item) for item in query],
            "request_body": body,
            "status": status,
            "headers": {k: self._scrub(v) for k, v in kept.items()},
            "body": self._scrub(text),
            "job_id": job_id,
        }
        if job_id is None and method == "POST" and status in (200, 303):
            record["job_id"] = orjson.loads(text)["id"]
        data = orjson.dumps(record, option=orjson.OPT_INDENT_2) + b"\n"
        (self.out / f"{name}.json").write_bytes(data)
        if name not in self.written:
            self.written.append(name)
        return record

    async def create(self, example: str, task: str, body: str | None) -> str:
        path = f"/{CUSTOMER}/task/{task}/job"
        rec = await self.exchange(
            f"{example}.create", "POST", path, CREATE_PATTERN, [("access_token", TOKEN)], body
        )
        job_id: str = rec["job_id"]
        return job_id

    async def result(self, example: str, job_id: str, timeout: str = "1") -> None:
        """The gateway's long poll, repeated until the job has finished."""
        query = [("access_token", TOKEN), ("full", ""), ("timeout", timeout)]
        query.append(("customer", CUSTOMER))
        while True:
            rec = await self.exchange(
                f"{example}.result",
                "GET",
                f"/job/{job_id}/result",
                RESULT_PATTERN,
                query,
                job_id=job_id,
            )
            if rec["status"] in (200, 500):
                return

    async def job(self, example: str, job_id: str) -> None:
        path = f"/{CUSTOMER}/job/{job_id}"
        query = [("access_token", TOKEN)]
        await self.exchange(f"{example}.job", "GET", path, JOB_PATTERN, query, job_id=job_id)


async def record_all(out: Path) -> list[str]:
    """Run the emulator, record every exchange into ``out`` (which must exist); the names."""
    server = EmulatorServer(EmulatorSettings(min_timeout=0.2, max_timeout=5.0))
    recipe = server.state.recipe
    tasks = {**recipe.tasks, TWO_OUTPUTS.id: TWO_OUTPUTS}
    server.state = EmulatorState(dataclasses.replace(recipe, tasks=tasks))
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            rec = Recorder(session, server, out)
            examples: Mapping[str, tuple[str, str | None]] = {
                "rest_success": (REST_TASK, '{"task_arguments":[100]}'),
                "rest_failure": (REST_TASK, '{"task_arguments":[200]}'),
                "api_test_nested": (API_TEST_TASK, None),
                "api_test_flat": (API_TEST_FLAT_TASK, None),
                "two_outputs": (TWO_OUTPUTS.id, None),
                "crash": (CRASH_TASK, None),
            }
            for example, (task, body) in examples.items():
                job_id = await rec.create(example, task, body)
                await rec.result(example, job_id)
                if example.startswith("rest_"):
                    await rec.job(example, job_id)
            await _not_finished(rec)
            await _rejections(rec)
    finally:
        await server.close()
    return sorted(rec.written)


async def _not_finished(rec: Recorder) -> None:
    job_id = await rec.create("not_finished", DELAY_TASK, "[3]")
    base = [("access_token", TOKEN), ("full", ""), ("timeout", "0.2"), ("customer", CUSTOMER)]
    path = f"/job/{job_id}/result"
    loop = [("counter", "0"), ("limit", "1")]
    await rec.exchange(
        "not_finished.result_303", "GET", path, RESULT_PATTERN, base + loop, job_id=job_id
    )
    await rec.exchange("not_finished.result_408", "GET", path, RESULT_PATTERN, base, job_id=job_id)


async def _rejections(rec: Recorder) -> None:
    await rec.exchange(
        "wrong_token.create",
        "POST",
        f"/{CUSTOMER}/task/{REST_TASK}/job",
        CREATE_PATTERN,
        [("access_token", "wrong-token")],
        '{"task_arguments":[100]}',
    )
    await rec.exchange(
        "unknown_task.create",
        "POST",
        f"/{CUSTOMER}/task/{UNKNOWN_TASK}/job",
        CREATE_PATTERN,
        [("access_token", TOKEN)],
        None,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sync_gateway.emulator.record",
        description="Record the gateway's upstream exchanges with the emulator as JSON files.",
    )
    parser.add_argument("out_dir", help="where to write the recordings (tests/recordings)")
    args = parser.parse_args(argv)
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    names = asyncio.run(record_all(Path(args.out_dir)))
    sys.stdout.write(f"recorded {len(names)} exchanges into {args.out_dir}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
