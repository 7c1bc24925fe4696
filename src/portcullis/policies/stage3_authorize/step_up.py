"""Step-up authentication: a route that needs a stronger login than the token shows (RFC 9470).

Why a 401 and not a 403: the caller *can* fix it, by signing in again with a stronger method and
presenting the new token. RFC 9470 section 3 says so with ``WWW-Authenticate: Bearer
error="insufficient_user_authentication"``, naming the ``acr_values`` the route accepts, so a
client can start that login without guessing.

What it reads: ``acr`` (OpenID Connect Core 1.0 section 2: a string) must be one of
``acr_values``; ``amr`` (a JSON array of strings, RFC 8176 values such as ``mfa``, ``otp``,
``hwk``) must hold one of ``amr_any``; ``auth_time`` (a NumericDate) must be at most ``max_auth_age``
old on the injected clock. A claim of another type (``"acr": ["gold"]``, ``"amr":
"mfa"``) refuses like a missing one: a shape the route did not expect is never read charitably.
The reason (``step_up:acr``, ``step_up:amr`` or ``step_up:auth_time``) goes to the audit only.
"""

from __future__ import annotations

import math

from portcullis.clock import Clock
from portcullis.config.model import AuthorizeConfig
from portcullis.errors import ErrorCode
from portcullis.http.context import RequestContext
from portcullis.pipeline.base import Decision, PolicyBase, Reject, Stage

__all__ = ["StepUpPolicy"]


class StepUpPolicy(PolicyBase):
    name = "authz.step_up"
    stage = Stage.AUTHORIZE

    def __init__(self, config: AuthorizeConfig, clock: Clock) -> None:
        self._acr = frozenset(config.acr_values)
        self._amr = frozenset(config.amr_any)
        self._max_age = config.max_auth_age
        self._clock = clock
        challenge = 'Bearer realm="portcullis", error="insufficient_user_authentication", ' \
            'error_description="A stronger authentication is required"'
        if config.acr_values:
            challenge += f', acr_values="{" ".join(config.acr_values)}"'
        if config.max_auth_age is not None:
            challenge += f', max_age={int(config.max_auth_age)}'
        self._challenge = ((b"www-authenticate", challenge.encode()),)

    @property
    def active(self) -> bool:
        return bool(self._acr or self._amr) or self._max_age is not None

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
        if self._max_age is not None:
            auth_time = claims.get("auth_time")
            if isinstance(auth_time, bool) or not isinstance(auth_time, int | float) or not math.isfinite(auth_time):
                return self._refuse("step_up:auth_time")
            if self._clock.wall() - auth_time > self._max_age:
                return self._refuse("step_up:auth_time")
        return None

    def _refuse(self, reason: str) -> Reject:
        return Reject(ErrorCode.AUTH_INSUFFICIENT_USER_AUTHENTICATION, reason, self._challenge)
