"""Authorization: route scopes (all-of, any-of), roles, and attribute rules.

Why attribute rules: most broken-object-level-authorization bugs (OWASP API1) are a path parameter
the caller does not own. ``{user_id}`` must equal the token's ``sub`` is a one-line rule here
instead of a check every backend must remember.

Refusals are 403 ``authz.forbidden``; which scope or rule failed goes to the audit only.
"""

from __future__ import annotations

from portcullis.config.model import AuthorizeConfig
from portcullis.errors import ErrorCode
from portcullis.http.context import RequestContext
from portcullis.pipeline.base import Decision, PolicyBase, Reject, Stage

__all__ = ["AuthorizePolicy"]


class AuthorizePolicy(PolicyBase):
    name = "authz.scopes"
    stage = Stage.AUTHORIZE

    def __init__(self, config: AuthorizeConfig) -> None:
        self._all = frozenset(config.scopes_all)
        self._any = frozenset(config.scopes_any)
        self._roles = frozenset(config.roles_any)
        self._rules = tuple((r.param, r.claim) for r in config.rules)
        needed = sorted(self._all | self._any)
        challenge = f'Bearer realm="portcullis", error="insufficient_scope", scope="{" ".join(needed)}"'
        self._challenge = ((b"www-authenticate", challenge.encode()),) if needed else ()

    async def on_request(self, ctx: RequestContext) -> Decision | None:
        principal = ctx.principal
        if principal is None:
            return Reject(ErrorCode.AUTHZ_FORBIDDEN, "forbidden:no_principal")
        scopes = principal.scopes
        if self._all and not self._all <= scopes:
            missing = ",".join(sorted(self._all - scopes))
            return Reject(ErrorCode.AUTHZ_FORBIDDEN, f"forbidden:scope:{missing}", self._challenge)
        if self._any and not self._any & scopes:
            return Reject(ErrorCode.AUTHZ_FORBIDDEN, "forbidden:scope_any", self._challenge)
        if self._roles and not self._roles & principal.roles:
            return Reject(ErrorCode.AUTHZ_FORBIDDEN, "forbidden:role")
        for param, claim in self._rules:
            expected = principal.consumer_id if claim == "consumer_id" else principal.claims.get(claim)
            actual = ctx.params.get(param)
            if expected is None or actual is None or str(expected) != actual:
                return Reject(ErrorCode.AUTHZ_FORBIDDEN, f"forbidden:rule:{param}")
        return None
