"""Where finished results, created jobs' refs and idempotency claims are kept: one interface,
two implementations side by side (:mod:`.memory` for one process, :mod:`.redis` shared by
replicas). Owners are fingerprints (:mod:`sync_gateway.core.access`), never credentials.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from sync_gateway.core.types import JobRef, Retained


class ResultStore(Protocol):
    """Finished results and idempotency claims."""

    async def get(self, key: str) -> Retained | None:
        """The retained result for a job key, or None."""
        ...

    async def put(self, item: Retained) -> bool:
        """Keep a finished result; False when it is too large to keep."""
        ...

    async def remember_ref(self, ref: JobRef, owner: bytes) -> None:
        """Remember a job the gateway created (its ref and its creator) for re-attach."""
        ...

    async def ref(self, key: str) -> tuple[JobRef, bytes] | None:
        """The ref and creator digest of a job the gateway created, or None."""
        ...

    async def claim(self, idem_key: str) -> asyncio.Future[JobRef] | None:
        """Claim an idempotency key: None when claimed now (the caller creates the job and
        calls :meth:`settle`), else a future of the first caller's job."""
        ...

    def settle(self, idem_key: str, ref: JobRef | None) -> None:
        """Record the job created under a claimed key (None: the create failed, release it)."""
        ...

    def settle_unknown(self, idem_key: str) -> None:
        """The create under a claimed key got no answer: keep the claim, so that no retry
        with the key creates a second job; its claimers get :class:`OutcomeUnknown`."""
        ...

    async def close(self) -> None:
        """Release resources."""
        ...
