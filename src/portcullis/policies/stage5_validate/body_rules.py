"""Authorization rules that read the JSON body: run once the body is read and validated.

Why here and not with the other rules: a rule such as ``body.amount <= 1000`` needs the body,
which the gateway reads only after authentication, authorization and rate limiting have passed
(a caller who may not call the route does not get to make it buffer a body). By this stage
``BodyPolicy`` has read the body and checked that it is one bounded, unambiguous JSON document
(no duplicate keys: a rule and a backend can never read two different values), so the rule sees
exactly what the backend will. A request without a body gives ``body == null``.

Refusals are 403 ``authz.forbidden``, as for the other rules; the rule's name goes to the audit.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from portcullis.errors import ErrorCode
from portcullis.http.context import RequestContext
from portcullis.pipeline.base import Decision, PolicyBase, Reject, Stage
from portcullis.policies.stage3_authorize.scopes import AMBIGUOUS, CelRule, RuleInputs
from portcullis.policies.stage5_validate.body import carries_body

__all__ = ["BodyRulesPolicy"]


class BodyRulesPolicy(PolicyBase):
    name = "authz.body_rules"
    stage = Stage.VALIDATE

    def __init__(self, rules: Sequence[CelRule], inputs: RuleInputs) -> None:
        self._rules = tuple(rules)
        self._inputs = inputs

    async def on_request(self, ctx: RequestContext) -> Decision | None:
        body = orjson.loads(await ctx.read_body()) if carries_body(ctx) else None
        variables = self._inputs.variables(ctx)
        if variables is None:
            return Reject(ErrorCode.AUTHZ_FORBIDDEN, AMBIGUOUS)
        variables = {**variables, "body": body}
        for rule in self._rules:
            if not rule.expression.allows(variables):
                return Reject(ErrorCode.AUTHZ_FORBIDDEN, f"forbidden:rule:{rule.name}")
        return None
