"""TheEye supervisor adapter (SPEC 3.1).

Create: ``POST /{customer}/task/{task}/job`` (or the ``/task/…`` and ``…/secret/{secret}/…``
forms). Learn that a job finished by long-polling ``GET /job/{id}/result?full&timeout=T``:
the supervisor answers the whole job document at once when the job has finished, else holds
the request ``T`` seconds (it clamps T to 10..60) and answers 303 or 408, both of which mean
"not yet". With ``upstream.wait = "poll"``, poll ``GET /{customer}/job/{id}`` instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from sync_gateway.core.errors import Forbidden, UpstreamBadResponse, UpstreamUnavailable
from sync_gateway.core.types import (
    FINAL_LIFECYCLES,
    FINAL_STATES,
    Created,
    CreateRequest,
    Credentials,
    JobRef,
    Progress,
    Snapshot,
)
from sync_gateway.upstream.base import Adapter, create_headers, create_query, rejected
from sync_gateway.upstream.http import Response
from sync_gateway.upstream.theeye_batch import BatchWatcher

# A MongoDB ObjectId: what the supervisor accepts as a job id (else a 400, or a 500 for a
# whole listing that holds one).
OBJECT_ID = re.compile(r"[0-9a-f]{24}")
LONG_POLL_MARGIN = 5.0  # seconds past the hold before a long poll is given up
SUPERVISOR_MIN_TIMEOUT = 10.0
SUPERVISOR_MAX_TIMEOUT = 60.0


def _seg(value: str) -> str:
    return quote(value, safe="")


def snapshot_from_document(doc: Any, size: int) -> Snapshot:
    """A Snapshot from a TheEye job document, or UpstreamBadResponse."""
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
        raise UpstreamBadResponse("the upstream answered a job document without an id")
    state = str(doc.get("state") or "")
    lifecycle = str(doc.get("lifecycle") or "")
    finished = lifecycle in FINAL_LIFECYCLES or (not lifecycle and state in FINAL_STATES)
    return Snapshot(finished, state, lifecycle, doc, size=size)


class TheEyeAdapter(Adapter):
    """Talks to a TheEye supervisor."""

    flavour = "theeye"
    needs_route = False
    lost_on_404 = True

    def setup(self) -> None:
        # Each upstream long poll holds a connection (a file descriptor) for up to a minute;
        # past this many at once, further jobs are watched by interval polling instead.
        # Each long poll holds a connection for up to a minute: at most max_long_polls at
        # once (a job with no customer to list by waits for one; 0 still lets one through).
        self.long_poll_slots = asyncio.Semaphore(max(self.settings.max_long_polls, 1))
        up = self.settings
        # Jobs a listing saw finished are read with at most this many requests at once, so
        # that a round finding thousands does not queue the next listings behind its reads
        # (the pool's queue is first come, first served): the others' ends are still seen.
        self.listed_reads = asyncio.Semaphore(max(up.pool_size // 2, 1))
        self.batch = BatchWatcher(
            self.base, self.client, up.poll_interval, up.list_batch, up.verify_interval
        )

    def _create_url(self, params: Mapping[str, str]) -> str:
        path = f"/task/{_seg(params['task'])}"
        if params.get("customer"):
            path = f"/{_seg(params['customer'])}{path}"
        if params.get("secret"):
            path += f"/secret/{_seg(params['secret'])}"
        return f"{self.base}{path}/job"

    async def create(self, request: CreateRequest) -> Created:
        resp = await self.client.request(
            "create",
            "POST",
            self._create_url(request.params),
            params=create_query(request, one_credential=True),
            headers=create_headers(request),
            data=request.body or None,
            idempotent=False,
        )
        if 400 <= resp.status < 500:
            raise rejected(resp)
        if resp.status >= 500:
            raise UpstreamUnavailable(
                "the upstream failed to create the job", upstream_status=resp.status
            )
        if resp.status not in (200, 201, 303):
            raise UpstreamBadResponse(
                "the upstream answered the create with an unexpected status",
                upstream_status=resp.status,
            )
        snapshot = snapshot_from_document(resp.json(), len(resp.body))
        doc = snapshot.document
        by_secret = bool(request.params.get("secret"))
        ref = JobRef(
            adapter=self.name,
            id=doc["id"],
            customer=doc.get("customer_name") or request.params.get("customer"),
            job_secret=doc.get("secret") if by_secret else None,
        )
        return Created(ref, snapshot, resp.status, resp.body, "application/json")

    def _result_url(self, ref: JobRef) -> str:
        if ref.job_secret:
            return f"{self.base}/job/{_seg(ref.id)}/secret/{_seg(ref.job_secret)}/result"
        return f"{self.base}/job/{_seg(ref.id)}/result"

    def _finished_or_rejected(self, resp: Response) -> Snapshot | None:
        """Read a /result?full answer: the job document, or None for "not yet"."""
        if resp.status in (303, 408):
            return None
        if resp.status in (200, 500):
            # `full` answers the document with 200 (success) or 500 (any other final state).
            return snapshot_from_document(resp.json(), len(resp.body))
        if 400 <= resp.status < 500:
            raise rejected(resp)
        raise UpstreamBadResponse(
            "the upstream answered the result request with an unexpected status",
            upstream_status=resp.status,
        )

    async def _long_poll(self, ref: JobRef, credentials: Credentials, timeout: float) -> Progress:
        # The supervisor holds the request between 10 and 60 s whatever we ask; our own
        # request timeout covers what it will really do, plus the ordinary answer time.
        asked = int(min(max(timeout, 1.0), SUPERVISOR_MAX_TIMEOUT))
        held = min(max(asked, SUPERVISOR_MIN_TIMEOUT), SUPERVISOR_MAX_TIMEOUT)
        params, headers = credentials.forwarded()
        params.update({"full": "", "timeout": str(asked)})
        if ref.customer and not ref.job_secret:
            params["customer"] = ref.customer
        resp = await self.client.request(
            "result",
            "GET",
            self._result_url(ref),
            params=params,
            headers=headers,
            # The supervisor answers when its hold ends; one that does not (its job vanished
            # meanwhile: result.js never answers) is cut soon after, and the watch goes on.
            timeout=held + min(self.settings.request_timeout, LONG_POLL_MARGIN),
            long_poll=True,
        )
        return Progress(self._finished_or_rejected(resp), long_polled=True)

    async def _job_request(
        self, kind: str, method: str, ref: JobRef, credentials: Credentials, suffix: str = ""
    ) -> Response:
        """``{method} /{customer}/job/{id}{suffix}`` with the caller's one credential."""
        assert ref.customer is not None
        params, headers = credentials.forwarded()
        url = f"{self.base}/{_seg(ref.customer)}/job/{_seg(ref.id)}{suffix}"
        return await self.client.request(kind, method, url, params=params, headers=headers)

    async def _get_document(self, ref: JobRef, credentials: Credentials) -> Snapshot:
        resp = await self._job_request("job", "GET", ref, credentials)
        if 400 <= resp.status < 500:
            raise rejected(resp)
        if resp.status != 200:
            raise UpstreamBadResponse(
                "the upstream answered the job request with an unexpected status",
                upstream_status=resp.status,
            )
        return snapshot_from_document(resp.json(), len(resp.body))

    async def step(self, ref: JobRef, credentials: Credentials, timeout: float) -> Progress:
        """One watch step. With a customer known: ``GET /{customer}/job/{id}`` polls
        (``wait = "poll"``), or the shared listing when long polls are not worth their
        connection (the supervisor does not wake them: ``notifications = false``; or all
        ``max_long_polls`` are in use). Else one long poll, bounded by ``max_long_polls``."""
        customer = ref.customer if not ref.job_secret else None
        if customer and self.settings.wait == "poll":
            return Progress(await self._get_document(ref, credentials), long_polled=False)
        if customer and not self._long_poll_worth_it():
            return await self._listed(ref, credentials, customer, timeout)
        async with self.long_poll_slots:
            return await self._long_poll(ref, credentials, timeout)

    def _long_poll_worth_it(self) -> bool:
        up = self.settings
        return up.notifications and up.max_long_polls > 0 and not self.long_poll_slots.locked()

    async def _listed(
        self, ref: JobRef, credentials: Credentials, customer: str, timeout: float
    ) -> Progress:
        """Watch through the shared listing, an accelerator and never the only truth: a job
        no listing vouches for within ``verify_interval`` seconds (an ACL hides it, it was
        deleted, or the listing failed) is read by its own request."""
        if OBJECT_ID.fullmatch(ref.id) and self.batch.can_list(customer, credentials):
            window = min(timeout, self.settings.verify_interval)
            listed = await self.batch.watch(customer, credentials, ref.id, window)
            if listed is not None and not listed.finished:  # listed, still running
                return Progress(listed, long_polled=True)
            if listed is not None:  # the listing leaves output and result out: read them
                async with self.listed_reads:
                    snapshot = await self._get_document(ref, credentials)
                return Progress(snapshot, long_polled=True)
        return Progress(await self._get_document(ref, credentials), long_polled=False)

    async def check_access(self, ref: JobRef, credentials: Credentials) -> None:
        """One ``GET /{customer}/job/{id}`` with the caller's own credentials."""
        if not ref.customer:
            raise Forbidden(
                "the gateway cannot ask the upstream about this job without its customer:"
                " add ?customer=NAME",
                job_id=ref.id,
            )
        await self._get_document(ref, credentials)

    async def cancel(self, ref: JobRef, credentials: Credentials) -> int | None:
        if not ref.customer:
            return None
        return (await self._job_request("cancel", "PUT", ref, credentials, "/cancel")).status

    def credentials(self, request: CreateRequest) -> Credentials:
        """The query or Authorization token, or the task's secret on the secret routes."""
        secret = request.params.get("secret")
        if secret is None:
            return request.credentials
        return dataclasses.replace(request.credentials, secret=secret)

    async def close(self) -> None:
        await self.batch.close()

    def ref_for(self, job_id: str, params: Mapping[str, str]) -> JobRef:
        """A job created elsewhere; its customer (the ``customer`` hint) lets the gateway ask
        the upstream whether the caller may see it, and poll it."""
        return JobRef(adapter=self.name, id=job_id, customer=params.get("customer") or None)
