"""The review surface: the five-element frame a person checks and attests before a result moves on.

::

    from loopguard_core.review import ReviewSurface

    surface = ReviewSurface("ledger.db")
    print(surface.render(session_id))                   # or format="md" / "html"
    surface.attest(session_id, reviewer="ana", notes="titles checked")
    surface.require_attestation(session_id)             # raises until the current frame is attested

See docs/review.md.
"""

from __future__ import annotations

from ._attest import Attestation, AttestationStore
from ._errors import AttestationRequired, SessionNotFound
from ._frame import FRAME_VERSION, Diff, ReviewFrame, build_frame
from ._render import (
    FORMATS,
    attest_command,
    attestation_status,
    render,
    render_html,
    render_markdown,
    render_text,
)
from ._surface import ReviewSurface, attest, render_session, require_attestation

__all__ = [
    "FORMATS",
    "FRAME_VERSION",
    "Attestation",
    "AttestationRequired",
    "AttestationStore",
    "Diff",
    "ReviewFrame",
    "ReviewSurface",
    "SessionNotFound",
    "attest",
    "attest_command",
    "attestation_status",
    "build_frame",
    "render",
    "render_html",
    "render_markdown",
    "render_session",
    "render_text",
    "require_attestation",
]
