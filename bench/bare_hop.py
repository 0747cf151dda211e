"""The bare gateway hop: the least a sync-over-async gateway can do, the bench's floor.

``python bench/bare_hop.py --upstream URL --port P`` serves ``POST /{customer}/task/{task}/job``
with the same upstream exchanges as the product for a job that finishes at once: POST the
create upstream, then long-poll ``GET /job/{id}/result?full&timeout=60`` with the caller's
token (again on 303/408, the supervisor's "not yet"), and answer the job's ``output`` (200 when
its state is success, else 500), as the product's default format does.

It is also the "naive hand-written gateway": one ClientSession, create then poll, stdlib json,
no logging, no metrics, no request ids, no redaction, no retention, no retries, no idempotency,
no drain. The few lines a usable naive gateway adds to the bare hop (pass a 4xx through, 502
when the upstream fails, poll again on "not yet") cost nothing on the path an instant job
takes, so the two are one program (bench/README.md).

It runs on uvloop when uvloop is installed, as ``sync-gateway serve`` does, so that the gap to
the product is the product's own work (``--loop asyncio`` to compare).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from urllib.parse import quote

import aiohttp
from aiohttp import web

SESSION = web.AppKey("session", aiohttp.ClientSession)
BASE = web.AppKey("base", str)
LONG_POLL = "60"  # seconds the supervisor may hold a result request
ROUNDS = 61  # long polls before giving up: about an hour
UPSTREAM_TIMEOUT = aiohttp.ClientTimeout(total=90, sock_connect=5)
JSON = "application/json"


def _answer(status: int, body: bytes, job_id: str | None = None) -> web.Response:
    resp = web.Response(status=status, body=body, content_type=JSON)
    if job_id is not None:
        resp.headers["X-Job-Id"] = job_id
    return resp


def _failed(message: str, job_id: str | None = None) -> web.Response:
    body = json.dumps({"error": "upstream_unavailable", "message": message}).encode()
    return _answer(502, body, job_id)


async def create(request: web.Request) -> web.Response:
    """Create the job upstream, long-poll its result, answer its output."""
    session, base = request.app[SESSION], request.app[BASE]
    customer = request.match_info["customer"]
    task = request.match_info["task"]
    token = request.query.get("access_token")
    auth = {"Authorization": a} if (a := request.headers.get("Authorization")) else {}
    body = await request.read()
    headers = {**auth, "Content-Type": request.content_type} if body else auth
    url = f"{base}/{quote(customer, safe='')}/task/{quote(task, safe='')}/job"
    job_id = None
    try:
        async with session.post(url, params=request.query, data=body, headers=headers) as resp:
            created, status = await resp.read(), resp.status
        if status not in (200, 201):
            return _answer(status if status < 500 else 502, created)
        job_id = str(json.loads(created)["id"])
        params = {"full": "", "timeout": LONG_POLL, "customer": customer}
        if token:
            params["access_token"] = token
        result_url = f"{base}/job/{quote(job_id, safe='')}/result"
        for _ in range(ROUNDS):
            async with session.get(result_url, params=params, headers=auth) as resp:
                doc, status = await resp.read(), resp.status
            if status not in (303, 408):  # not "not yet"
                break
        else:
            return _failed("the job did not finish in time", job_id)
        if status not in (200, 500):  # `full` answers a finished job with 200 or 500
            return _answer(status if status < 500 else 502, doc, job_id)
        job = json.loads(doc)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return _failed(exc.__class__.__name__, job_id)
    except (ValueError, KeyError, TypeError):
        return _failed("the upstream answered something that is not a job", job_id)
    output = job.get("output")
    answer = json.dumps([] if output is None else output, separators=(",", ":"))
    return _answer(200 if job.get("state") == "success" else 500, answer.encode(), job_id)


async def healthz(request: web.Request) -> web.Response:
    return _answer(200, b'{"status":"ok"}')


async def _session(app: web.Application) -> AsyncIterator[None]:
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector, timeout=UPSTREAM_TIMEOUT) as session:
        app[SESSION] = session
        yield


def build_app(upstream: str) -> web.Application:
    app = web.Application()
    app[BASE] = upstream.rstrip("/")
    app.cleanup_ctx.append(_session)
    app.router.add_post("/{customer}/task/{task}/job", create)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--upstream", required=True, help="the supervisor's base URL")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = p.parse_args()
    if args.loop == "uvloop":
        with contextlib.suppress(ImportError):
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(
        build_app(args.upstream), host=args.host, port=args.port, access_log=None, print=None
    )


if __name__ == "__main__":
    main()
