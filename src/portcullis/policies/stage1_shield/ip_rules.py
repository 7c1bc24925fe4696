"""IP allow and deny lists, checked first: a refused network costs one address comparison.

Why before authentication: a denied network must not reach a key lookup or a JWKS fetch.
The address is the one the gateway resolved (socket peer, or the rightmost untrusted
``X-Forwarded-For`` hop behind trusted proxies); forged forwarding headers cannot change it.
Deny wins over allow. Global and route lists both apply.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from portcullis.errors import ErrorCode
from portcullis.http.context import RequestContext
from portcullis.pipeline.base import Decision, PolicyBase, Reject, Stage

__all__ = ["IpShieldPolicy"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class IpShieldPolicy(PolicyBase):
    """``allow_sets``: each non-empty list must contain the client; ``deny``: none may."""

    name = "shield.ip"
    stage = Stage.SHIELD

    def __init__(self, *, allow_sets: Sequence[Sequence[Network]], deny: Sequence[Network]) -> None:
        self._allow_sets = tuple(tuple(s) for s in allow_sets if s)
        self._deny = tuple(deny)

    @property
    def active(self) -> bool:
        return bool(self._allow_sets or self._deny)

    async def on_request(self, ctx: RequestContext) -> Decision | None:
        try:
            address = ipaddress.ip_address(ctx.client_ip)
        except ValueError:
            return Reject(ErrorCode.ACCESS_DENIED, "denied:unknown_address")
        for net in self._deny:
            if address in net:
                return Reject(ErrorCode.ACCESS_DENIED, "denied:ip_denied")
        for allowed in self._allow_sets:
            if not any(address in net for net in allowed):
                return Reject(ErrorCode.ACCESS_DENIED, "denied:ip_not_allowed")
        return None
