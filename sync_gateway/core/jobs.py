"""Jobs as the web layer asks for them: created once (``Idempotency-Key``), adopted when their
creator hung up during the create, and found again for a re-attach. Every job found for a
caller passes the one access decision (:mod:`sync_gateway.core.access`) first."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from sync_gateway.config import Settings
from sync_gateway.core.access import Access
from sync_gateway.core.engine import Engine, tenant_of
from sync_gateway.core.errors import GatewayError, OutcomeUnknown, TooManyRequests
from sync_gateway.core.following import Watch
from sync_gateway.core.types import Created, CreateRequest, Credentials, JobRef, Retained, Snapshot
from sync_gateway.store.base import ResultStore

if TYPE_CHECKING:
    from sync_gateway.upstream.base import Adapter

log = structlog.get_logger("sync_gateway.jobs")

UNKNOWN = Snapshot(False, "in_progress", "")
NO_OWNER = b""  # a job the gateway did not create: no creator to recognise
CREDENTIAL_PARAMS = frozenset({"access_token", "apiKey"})


@dataclass(frozen=True, slots=True)
class Started:
    """A job a create call is about: its ref, last known state, the upstream's answer (None on
    an idempotent replay), and the credentials it is watched with."""

    ref: JobRef
    last: Snapshot
    created: Created | None
    credentials: Credentials
    owner: bytes | None = None  # their fingerprint, once computed (None: not yet)


class Jobs:
    """Create once, adopt, find; the access decision for each job found."""

    def __init__(
        self, engine: Engine, store: ResultStore, access: Access, settings: Settings
    ) -> None:
        self.engine = engine
        self.store = store
        self.access = access
        self.settings = settings
        self._loop = asyncio.get_running_loop()

    # ---- create once ---------------------------------------------------------------------

    def claim_key(self, adapter: str, create: CreateRequest) -> str:
        """The store key of an ``Idempotency-Key``: the key, the caller (fingerprinted), and
        what was asked. A key reused for another request is another job, never the first
        request's answer; another caller's same key never reaches the first caller's job."""
        h = hashlib.sha256()
        for part in (
            adapter,
            create.idempotency_key or "",
            self.access.fingerprints.of(create.credentials).hex(),
            repr(sorted(create.params.items())),
            repr(sorted((k, v) for k, v in create.query.items() if k not in CREDENTIAL_PARAMS)),
        ):
            h.update(part.encode("utf-8", "replace") + b"\x00")
        h.update(create.body)
        return h.hexdigest()

    async def create_once(
        self, adapter: Adapter, create: CreateRequest, budget: float | None = None
    ) -> Started:
        """Create the job upstream, or attach to the job a same-key request created.

        ``budget`` bounds how long the caller waits for the create (or for the same-key
        request's create): past it, :class:`OutcomeUnknown` (504) while the create goes on
        and its job is adopted (watched, kept, the key settled), so that a retry with the
        same ``Idempotency-Key`` attaches to it. A create that got no answer at all keeps
        its key too: no retry with it silently creates a second job."""
        key = None
        if create.idempotency_key is not None:
            key = self.claim_key(adapter.name, create)
            while (earlier := await self.store.claim(key)) is not None:
                try:
                    ref = await asyncio.wait_for(asyncio.shield(earlier), budget)
                except TimeoutError:
                    raise OutcomeUnknown(
                        "the first request with this Idempotency-Key is still creating its"
                        " job: retry with the same key to attach to it"
                    ) from None
                except asyncio.CancelledError:
                    if earlier.cancelled():  # the first create failed: claim the key anew
                        continue
                    raise
                log.info("idempotent_replay", job_id=ref.id)
                return Started(ref, await self._last_known(ref), None, create.credentials)
        try:
            self._admit(adapter, create)
        except TooManyRequests:
            if key is not None:
                self.store.settle(key, None)
            raise
        task = self._loop.create_task(self._create(adapter, create))
        try:
            created = await asyncio.wait_for(asyncio.shield(task), budget)
        except TimeoutError:
            task.add_done_callback(lambda t: self._adopt(t, create.credentials, key, False))
            advice = (
                "retry with the same Idempotency-Key to attach to it"
                if key is not None
                else "send an Idempotency-Key so that a retry attaches to the job it made"
            )
            raise OutcomeUnknown(
                "the upstream has not answered the create within the wait asked for; the job"
                f" is watched and kept when it does: {advice}"
            ) from None
        except asyncio.CancelledError:
            # The client hung up during the create: the job may exist; keep its result.
            task.add_done_callback(lambda t: self._adopt(t, create.credentials, key, True))
            raise
        except BaseException as exc:
            if key is not None:
                self._settle_failed(key, exc)
            raise
        creds = created.credentials or create.credentials
        running = self.engine.watching(created.ref.key)
        if running is not None:  # an upstream job id reused: only who may see it attaches
            await self.access.check(running.ref, running.owner, creds)
        owner = await self._adopted(created, creds, key)
        return Started(created.ref, created.snapshot, created, creds, owner)

    def _admit(self, adapter: Adapter, create: CreateRequest) -> None:
        """Admission (``[admission]``): refuse a new job at once (429, Retry-After) when as many
        are followed already, in all or for its customer; never queue without bound. Only a
        create is refused: a re-attach, or a retry attaching to its key's job, never is."""
        bounds = self.settings.admission
        scope = None
        if bounds.max_jobs and self.engine.watching_count() >= bounds.max_jobs:
            scope = "total"
        elif bounds.max_jobs_per_customer:
            customer = create.params.get("customer")
            tenant = tenant_of(JobRef(adapter.name, "", customer=customer or None))
            if self.engine.in_flight[tenant] >= bounds.max_jobs_per_customer:
                scope = "customer"
        if scope is None:
            return
        self.engine.metrics.admission_refused.labels(scope=scope).inc()
        raise TooManyRequests(
            f"too many jobs in flight ({scope}): retry after {bounds.retry_after} s",
            retry_after=bounds.retry_after,
            scope=scope,
        )

    async def _create(self, adapter: Adapter, create: CreateRequest) -> Created:
        """The upstream's create; where the caller chooses the job's id, the ref scoped by the
        caller. (Its ``credentials`` stay None when they are the request's: both readers fall
        back to those.)"""
        created = await adapter.create(create)
        if not adapter.caller_ids:
            return created
        creds = created.credentials or create.credentials
        ref = dataclasses.replace(created.ref, scope=self.scope_of(creds))
        return dataclasses.replace(created, ref=ref)

    def _adopt(
        self, task: asyncio.Future[Created], creds: Credentials, key: str | None, hung_up: bool
    ) -> None:
        """A create the caller stopped waiting for has ended: watch its job and keep its
        result (and, after a hang-up with ``cancel_on_disconnect``, cancel it)."""
        exc = None if task.cancelled() else task.exception()
        if task.cancelled() or exc is not None:
            if key is not None:
                self._settle_failed(key, exc)
            return
        created = task.result()
        creds = created.credentials or creds
        owner = self.access.fingerprints.of(creds)
        self.engine.spawn(self._adopted(created, creds, key, owner))
        watch = self.engine.watch(created.ref, creds, created.snapshot, owner=owner)
        if hung_up and self.settings.cancel_on_disconnect:
            self.engine.spawn(self.engine.cancel_unless_waited(watch))

    def _settle_failed(self, key: str, exc: BaseException | None) -> None:
        """A create under a claimed key failed. When it may have made a job all the same (no
        answer: a timeout, a reset), the key is kept: a retry with it is told so, and never
        creates a second job. Otherwise the key is released for a retry to create."""
        if isinstance(exc, GatewayError) and exc.extra.get("outcome") == "unknown":
            exc.extra["idempotency_key"] = (
                "kept: a retry with this key will not create a second job"
            )
            self.store.settle_unknown(key)
        else:
            self.store.settle(key, None)

    async def _adopted(
        self, created: Created, creds: Credentials, key: str | None, owner: bytes | None = None
    ) -> bytes:
        """Remember the created job (and settle its key); the creator's fingerprint."""
        if owner is None:
            owner = self.access.fingerprints.of(creds)
        await self.store.remember_ref(created.ref, owner)
        if key is not None:
            self.store.settle(key, created.ref)
        log.debug("job_created", job_id=created.ref.id, state=created.snapshot.state)
        return owner

    async def _last_known(self, ref: JobRef) -> Snapshot:
        watch = self.engine.watching(ref.key)
        if watch is not None:
            return watch.last
        retained = await self.store.get(ref.key)
        return retained.snapshot if retained is not None else UNKNOWN

    # ---- find again ----------------------------------------------------------------------

    async def find(
        self,
        adapter: Adapter,
        job_id: str,
        hints: Mapping[str, str],
        creds: Credentials,
        presented_secret: str | None = None,
    ) -> Retained | Watch:
        """A job's kept result, or its watch, once the caller may see it."""
        scope = self.scope_of(creds) if adapter.caller_ids else ""
        key = JobRef(adapter.name, job_id, scope=scope).key
        retained = await self.store.get(key)
        if retained is not None:
            await self.access.check(retained.ref, retained.owner, creds, presented_secret)
            return retained
        watch = self.engine.watching(key)
        if watch is not None:
            await self.access.check(watch.ref, watch.owner, creds, presented_secret)
            return watch
        known = await self.store.ref(key)
        if known is not None:
            ref, owner = known
            await self.access.check(ref, owner, creds, presented_secret)
            # A secret-started job is followed through its secret URL, with no token.
            return self.engine.watch(ref, Credentials() if ref.job_secret else creds, UNKNOWN)
        # A job this gateway never saw: nobody is its known creator, so the one decision
        # asks the upstream with the caller's own credentials before anything is answered
        # (a caller without any, or with a job secret nobody here knows, is refused without
        # a request); a flavour that cannot find a job by its id alone refuses (404).
        ref = adapter.ref_for(job_id, hints)
        await self.access.check(ref, NO_OWNER, creds, presented_secret)
        return self.engine.watch(ref, creds, UNKNOWN, known=False)

    def scope_of(self, creds: Credentials) -> str:
        """The key scope of a caller-chosen job id: a prefix of the caller's fingerprint."""
        return self.access.fingerprints.of(creds).hex()[:32]

    def is_creator(self, owner: bytes, creds: Credentials) -> bool:
        """Whether ``creds`` are the ones the job was created with (hang-up policy)."""
        return hmac.compare_digest(owner, self.access.fingerprints.of(creds))
