"""Consumer and API key blocks (incident controls), checked right after authentication.

Why here: a consumer or key is only known once the credential is verified, and a blocked caller
must be refused before it spends from any limit, reaches a body check or the upstream. The check
reads the in-memory snapshot (no store I/O); a block made on any instance applies here within a
second (``controls/service.py``). A refusal is 403 ``access.blocked`` with the decision
``blocked:<block id>`` in the audit; the caller learns neither the reason nor which subject matched.
"""

from __future__ import annotations

from portcullis.clock import Clock
from portcullis.controls.model import BlockKind
from portcullis.controls.service import IncidentControls
from portcullis.errors import ErrorCode
from portcullis.http.context import RequestContext
from portcullis.pipeline.base import Decision, PolicyBase, Reject, Stage

__all__ = ["CallerBlockPolicy"]


class CallerBlockPolicy(PolicyBase):
    """Refuses an authenticated caller whose consumer or key is blocked. Runs after authentication
    (same stage, placed after it)."""

    name = "auth.blocks"
    stage = Stage.AUTHENTICATE

    def __init__(self, controls: IncidentControls, clock: Clock) -> None:
        self._controls = controls
        self._clock = clock

    async def on_request(self, ctx: RequestContext) -> Decision | None:
        principal = ctx.principal
        snapshot = self._controls.snapshot
        if principal is None or not snapshot.has_subject_blocks:
            return None
        now = self._clock.wall()
        block = snapshot.block(BlockKind.CONSUMER, principal.consumer_id, now) or snapshot.block(
            BlockKind.KEY, principal.key_id, now)
        if block is None:
            return None
        self._controls.refused(block, client_ip=ctx.client_ip, request_id=ctx.request_id, trace_id=ctx.trace_id,
                               actor=f"consumer:{principal.consumer_id}", where="authenticate")
        return Reject(ErrorCode.ACCESS_BLOCKED, f"blocked:{block.block_id}")
