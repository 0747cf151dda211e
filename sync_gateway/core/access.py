"""Who may see a job (SPEC 5): the one decision, for every route, adapter and store.

The rule, applied to every request that answers about a job (a re-attach, a same-key
retry, a second create that lands on a running job):

1. A job started with a task secret is its creator's alone. A caller sees it by presenting
   the job's own secret (``/job/{id}/secret/{job_secret}/result``, compared in constant time)
   or by being its creator (rule 2). Nobody else, whatever their token: the upstream is never
   asked on anybody's behalf with a secret the gateway holds.
2. The creator sees the job at once: the fingerprint of the caller's credentials equals the
   job's owner fingerprint. A fingerprint is HMAC-SHA256 of the credentials under the
   deployment's key (``security.fingerprint_key``), never a bare hash, so a copy of the store
   does not allow a dictionary attack on the tokens.
3. Anybody else sees the job only when the upstream accepts the caller's OWN credentials for
   it: the job's adapter asks once (:meth:`Adapter.check_access`, one ordinary request through
   the bounded pool) and a refusal is passed on as the upstream gave it. A caller who sent no
   credential is refused without asking; so is a secret presented for a job not started by
   one, or a wrong one.

A job the gateway does not know at all (never created here, nothing kept) has no creator to
recognise: rule 3 applies before anything is answered about it, so anonymous guesses of job
ids cost the upstream nothing, and nobody learns that an id exists without the upstream's word.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import hmac
from collections.abc import Mapping
from typing import TYPE_CHECKING

from sync_gateway.core.errors import Forbidden
from sync_gateway.core.types import Credentials, JobRef

if TYPE_CHECKING:
    from sync_gateway.upstream.base import Adapter


class Decision(enum.Enum):
    """What the rule says before any I/O."""

    ALLOW = "allow"
    ASK_UPSTREAM = "ask_upstream"
    DENY = "deny"


def decide(
    *,
    job_secret: str | None,
    owner: bytes,
    caller: bytes,
    has_credentials: bool,
    presented_secret: str | None,
) -> Decision:
    """The rule above, pure: ``job_secret`` is the secret of a job started by one (else None),
    ``owner`` and ``caller`` are fingerprints, ``presented_secret`` a job secret in the path."""
    creator = bool(owner) and hmac.compare_digest(owner, caller)
    if job_secret is not None:
        if presented_secret is not None and hmac.compare_digest(
            job_secret.encode(), presented_secret.encode()
        ):
            return Decision.ALLOW
        return Decision.ALLOW if creator and presented_secret is None else Decision.DENY
    if presented_secret is not None:
        return Decision.DENY
    if creator:
        return Decision.ALLOW
    return Decision.ASK_UPSTREAM if has_credentials else Decision.DENY


# The fingerprints of this many recent callers are kept (an HMAC per call costs more than
# the rest of the access decision); the credentials they are kept by are in memory anyway,
# in every job's watch, for as long as the job is followed.
FINGERPRINTS_KEPT = 1024


class Fingerprints:
    """Keyed fingerprints of credentials: how the gateway recognises a job's creator."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a fingerprint key needs at least 16 bytes")
        self._key = key
        self._kept = functools.lru_cache(maxsize=FINGERPRINTS_KEPT)(self._digest)

    def of(self, credentials: Credentials) -> bytes:
        return self._kept(credentials)

    def _digest(self, credentials: Credentials) -> bytes:
        return hmac.digest(self._key, credentials.identity(), hashlib.sha256)


class Access:
    """Applies the rule: :meth:`check` returns when the caller may see the job, else raises."""

    def __init__(self, fingerprints: Fingerprints, adapters: Mapping[str, Adapter]) -> None:
        self.fingerprints = fingerprints
        self.adapters = adapters

    async def check(
        self,
        ref: JobRef,
        owner: bytes,
        credentials: Credentials,
        presented_secret: str | None = None,
    ) -> None:
        """Forbidden (or the upstream's own refusal) unless the caller may see the job."""
        decision = decide(
            job_secret=ref.job_secret,
            owner=owner,
            caller=self.fingerprints.of(credentials),
            has_credentials=credentials.present,
            presented_secret=presented_secret,
        )
        if decision is Decision.ALLOW:
            return
        if decision is Decision.DENY:
            raise Forbidden("these credentials may not see this job", job_id=ref.id)
        await self.adapters[ref.adapter].check_access(ref, credentials)
