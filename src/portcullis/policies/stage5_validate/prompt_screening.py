"""Prompt screening on an ingress route that fronts an LLM (``validate.prompt``).

Why an ingress policy too: a team that serves its own model, or puts the gateway in front of an
internal LLM proxy, wants the same checks as an egress LLM route before the prompt reaches it:
control and invisible characters refused or stripped, message count and length caps, the
configured patterns. The rules are ``portcullis.llm.screening`` (read its docstring for what
pattern screening can and cannot do); this module only reads the body and renders the answer.

Runs in the validate stage, after authentication, authorization and rate limits (a caller who may
not call the route does not make it parse a prompt), on a body that ``read_body`` bounds. A body
that is not one JSON object is refused like a screened prompt. When characters are stripped the
upstream gets the re-serialised body (``ctx.body``; the forwarder sets its length).

Refusals are 400 ``request.invalid_body`` for the client, whatever the rule: which rule and which
pattern (by index, never the prompt text) go to the audit as ``llm.<reason>[:detail]``.
"""

from __future__ import annotations

import orjson

from portcullis.errors import ErrorCode
from portcullis.http.context import RequestContext
from portcullis.llm.estimate import parse_request
from portcullis.llm.refusal import LlmRefusal
from portcullis.llm.screening import ScreenRules, screen
from portcullis.pipeline.base import Decision, PolicyBase, Reject, Stage
from portcullis.policies.stage5_validate.body import carries_body

__all__ = ["PromptScreeningPolicy"]


class PromptScreeningPolicy(PolicyBase):
    name = "validate.prompt"
    stage = Stage.VALIDATE

    def __init__(self, rules: ScreenRules, *, max_body_bytes: int) -> None:
        self._rules = rules
        self._max = max_body_bytes

    async def on_request(self, ctx: RequestContext) -> Decision | None:
        if not carries_body(ctx):
            return None
        request = parse_request(await ctx.read_body(), max_bytes=self._max)
        if isinstance(request, LlmRefusal):
            return Reject(ErrorCode.REQUEST_INVALID_BODY, request.audit_reason)
        result = screen(request.body, self._rules)
        if isinstance(result, LlmRefusal):
            return Reject(ErrorCode.REQUEST_INVALID_BODY, result.audit_reason)
        if result.body is not None:
            ctx.body = orjson.dumps(result.body)
        return None
