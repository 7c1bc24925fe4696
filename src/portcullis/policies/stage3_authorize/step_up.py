"""Step-up authentication: a route that needs a stronger login than the token shows (RFC 9470).

Why a 401 and not a 403: the caller *can* fix it, by signing in again with a stronger method and
presenting the new token. RFC 9470 section 3 says so with ``WWW-Authenticate: Bearer
error="insufficient_user_authentication"``, naming the ``acr_values`` the route accepts, so a
client can start that login without guessing.

What it reads: ``acr`` (OpenID Connect Core 1.0 section 2: a string) must be one of
``acr_values``; ``amr`` (a JSON array of strings, RFC 8176 values such as ``mfa``, ``otp``,
``hwk``) must hold one of ``amr_any``. A claim of another type (``"acr": ["gold"]``, ``"amr":
"mfa"``) refuses like a missing one: a shape the route did not expect is never read charitably.
The reason (``step_up:acr`` or ``step_up:amr``) goes to the audit only.
"""

from __future__ import annotations

from portcullis.config.model import AuthorizeConfig
from portcullis.errors import ErrorCode
from portcullis.http.context import RequestContext
from portcullis.pipeline.base import Decision, PolicyBase, Reject, Stage

__all__ = ["StepUpPolicy"]


class StepUpPolicy(PolicyBase):
    name = "authz.step_up"
    stage = Stage.AUTHORIZE

    def __init__(self, config: AuthorizeConfig) -> None:
        self._acr = frozenset(config.acr_values)
        self._amr = frozenset(config.amr_any)
        challenge = 'Bearer realm="portcullis", error="insufficient_user_authentication", ' \
            'error_description="A stronger authentication is required"'
        if config.acr_values:
            challenge += f', acr_values="{" ".join(config.acr_values)}"'
        self._challenge = ((b"www-authenticate", challenge.encode()),)

    @property
    def active(self) -> bool:
        return bool(self._acr or self._amr)

    async def on_request(self, ctx: RequestContext) -> Decision | None:
        principal = ctx.principal
        if principal is None:
            return Reject(ErrorCode.AUTHZ_FORBIDDEN, "forbidden:no_principal")
        claims = principal.claims
        if self._acr:
            acr = claims.get("acr")
            if not isinstance(acr, str) or acr not in self._acr:
                return self._refuse("step_up:acr")
        if self._amr:
            amr = claims.get("amr")
            if not isinstance(amr, list) or not all(isinstance(m, str) for m in amr) or not self._amr & set(amr):
                return self._refuse("step_up:amr")
        return None

    def _refuse(self, reason: str) -> Reject:
        return Reject(ErrorCode.AUTH_INSUFFICIENT_USER_AUTHENTICATION, reason, self._challenge)
