"""Address blocks (incident controls), checked first: a blocked client never reaches a lookup.

Why in the shield, before the IP lists and authentication: during an attack the blocked addresses
are the bulk of the traffic, and each must cost no more than a table lookup (``controls/addresses.py``)
against the in-memory snapshot; no key lookup, no JWKS fetch, no counter, no upstream. The address is
the one the gateway resolved (the socket peer, or the rightmost untrusted ``X-Forwarded-For`` hop
behind trusted proxies), so a forged forwarding header cannot step around a block, and an IPv6
spelling of a blocked IPv4 address is caught as well.

A refusal is 403 ``access.blocked``; the decision ``blocked:<block id>`` goes to the audit, the
block's reason never to the client.
"""

from __future__ import annotations

from portcullis.clock import Clock
from portcullis.controls.service import IncidentControls
from portcullis.errors import ErrorCode
from portcullis.http.context import RequestContext
from portcullis.pipeline.base import Decision, PolicyBase, Reject, Stage

__all__ = ["AddressBlockPolicy"]


class AddressBlockPolicy(PolicyBase):
    """Refuses a client whose address an incident block covers."""

    name = "shield.blocks"
    stage = Stage.SHIELD

    def __init__(self, controls: IncidentControls, clock: Clock) -> None:
        self._controls = controls
        self._clock = clock

    async def on_request(self, ctx: RequestContext) -> Decision | None:
        snapshot = self._controls.snapshot
        if not snapshot.has_address_blocks:
            return None
        block = snapshot.address_block(ctx.client_ip, self._clock.wall())
        if block is None:
            return None
        self._controls.refused(block, client_ip=ctx.client_ip, request_id=ctx.request_id, trace_id=ctx.trace_id,
                               actor="anonymous", where="shield")
        return Reject(ErrorCode.ACCESS_BLOCKED, f"blocked:{block.block_id}")
