"""Outcome → answer: pure functions from a finished job's Snapshot and the client's Format to
a :class:`~sync_gateway.core.types.Rendered`, one module per flavour, chosen by the snapshot's
``kind``. No I/O, no web framework; the web layer turns a Rendered into a response."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from sync_gateway.core.types import Format, Rendered, Snapshot
from sync_gateway.render import executejob, location
from sync_gateway.render.common import HeaderLimits
from sync_gateway.render.theeye import render_job

Renderer = Callable[[Snapshot, Format, HeaderLimits], Rendered]


def _theeye(snapshot: Snapshot, fmt: Format, limits: HeaderLimits) -> Rendered:
    return render_job(snapshot.loaded(), fmt, limits)


RENDERERS: Final[dict[str, Renderer]] = {
    "theeye": _theeye,
    "location": location.render,
    "executejob": executejob.render,
}


def render(snapshot: Snapshot, fmt: Format, limits: HeaderLimits) -> Rendered:
    """The answer for a finished job in the format the client asked for."""
    return RENDERERS[snapshot.kind](snapshot, fmt, limits)
