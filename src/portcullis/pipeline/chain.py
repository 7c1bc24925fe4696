"""A route's ordered policies: requests go through in order, responses in reverse.

Why responses run for every policy that was entered, local rejections included: security headers
must reach a 401 or a 429 as well as a 200 (Envoy's encoder-filter order).
"""

from __future__ import annotations

from collections.abc import Sequence

from portcullis.http.context import RequestContext, ResponseHead
from portcullis.pipeline.base import Decision, Policy, PolicyBase

__all__ = ["PolicyChain"]


class PolicyChain:
    """Policies sorted by stage (stable: config order within a stage)."""

    __slots__ = ("_has_response_phase", "policies")

    def __init__(self, policies: Sequence[Policy]) -> None:
        self.policies: tuple[Policy, ...] = tuple(sorted(policies, key=lambda p: p.stage))
        self._has_response_phase = tuple(
            getattr(type(p), "on_response", None) is not PolicyBase.on_response for p in self.policies
        )

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.policies]

    async def run_request(self, ctx: RequestContext) -> tuple[Decision | None, int]:
        """Run ``on_request`` in order. Returns the decision (if any) and how many policies ran."""
        for index, policy in enumerate(self.policies):
            decision = await policy.on_request(ctx)
            if decision is not None:
                return decision, index + 1
        return None, len(self.policies)

    def run_response(self, ctx: RequestContext, head: ResponseHead, entered: int) -> None:
        """Run ``on_response`` in reverse for the first ``entered`` policies."""
        for index in range(entered - 1, -1, -1):
            if self._has_response_phase[index]:
                self.policies[index].on_response(ctx, head)

