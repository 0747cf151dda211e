"""The one access decision (SPEC 5), as a table, and applied with a fake adapter."""

from __future__ import annotations

import pytest
from support.fake import FakeAdapter

from sync_gateway.core.access import Access, Decision, Fingerprints, decide
from sync_gateway.core.errors import Forbidden, UpstreamRejected
from sync_gateway.core.types import Credentials, JobRef

KEY = b"a deployment key of 32 bytes...!"
FP = Fingerprints(KEY)
CREATOR = Credentials(access_token="creator-token")
OTHER = Credentials(access_token="other-token")
NOBODY = Credentials()
OWNER = FP.of(CREATOR)

ALLOW, ASK, DENY = Decision.ALLOW, Decision.ASK_UPSTREAM, Decision.DENY


@pytest.mark.parametrize(
    ("job_secret", "caller", "presented", "expected"),
    [
        # a job started with a token
        (None, CREATOR, None, ALLOW),  # its creator, at once
        (None, OTHER, None, ASK),  # anybody else: the upstream decides, with their own token
        (None, NOBODY, None, DENY),  # no credential: refused without asking
        (None, OTHER, "guessed", DENY),  # a secret for a job not started by one
        (None, CREATOR, "guessed", DENY),
        # a job started with a task secret: its creator's alone
        ("job-secret", NOBODY, "job-secret", ALLOW),  # the job's own secret
        ("job-secret", OTHER, "job-secret", ALLOW),
        ("job-secret", NOBODY, "wrong", DENY),
        ("job-secret", OTHER, None, DENY),  # any other token: never asked upstream
        ("job-secret", NOBODY, None, DENY),
        ("job-secret", CREATOR, None, ALLOW),  # the creator's own credentials
        ("job-secret", CREATOR, "wrong", DENY),
    ],
)
def test_access_rule_table(
    job_secret: str | None, caller: Credentials, presented: str | None, expected: Decision
) -> None:
    got = decide(
        job_secret=job_secret,
        owner=OWNER,
        caller=FP.of(caller),
        has_credentials=caller.present,
        presented_secret=presented,
    )
    assert got is expected


def test_a_job_with_no_owner_recorded_has_no_creator() -> None:
    assert (
        decide(
            job_secret=None,
            owner=b"",
            caller=b"",
            has_credentials=False,
            presented_secret=None,
        )
        is DENY
    )


def test_fingerprints_are_keyed() -> None:
    other_key = Fingerprints(b"another deployment key, 32 bytes")
    assert FP.of(CREATOR) != other_key.of(CREATOR)
    assert FP.of(CREATOR) == Fingerprints(KEY).of(CREATOR)
    assert len(FP.of(CREATOR)) == 32


def test_a_token_as_query_or_bearer_is_one_caller() -> None:
    bearer = Credentials(authorization="Bearer creator-token")
    assert FP.of(bearer) == FP.of(CREATOR)
    assert FP.of(Credentials(authorization="Basic x")) != FP.of(CREATOR)


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError):
        Fingerprints(b"short")


async def test_creator_is_let_in_without_asking_the_upstream() -> None:
    fake = FakeAdapter()
    access = Access(FP, {"fake": fake})
    await access.check(JobRef("fake", "j1"), OWNER, CREATOR)
    assert fake.access_checks == []


async def test_another_caller_is_asked_about_with_their_own_credentials() -> None:
    fake = FakeAdapter(allowed={OTHER})
    access = Access(FP, {"fake": fake})
    await access.check(JobRef("fake", "j1"), OWNER, OTHER)
    assert fake.access_checks == [("j1", OTHER)]


async def test_a_refusal_of_the_upstream_is_passed_on() -> None:
    fake = FakeAdapter(allowed=set())
    access = Access(FP, {"fake": fake})
    with pytest.raises(UpstreamRejected) as caught:
        await access.check(JobRef("fake", "j1"), OWNER, OTHER)
    assert caught.value.upstream_status == 401


async def test_a_secret_started_job_never_asks_the_upstream() -> None:
    fake = FakeAdapter(allowed={OTHER})
    access = Access(FP, {"fake": fake})
    with pytest.raises(Forbidden):
        await access.check(JobRef("fake", "j1", job_secret="s"), OWNER, OTHER)
    assert fake.access_checks == []
