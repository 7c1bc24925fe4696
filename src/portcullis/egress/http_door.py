"""The HTTP door: ``<prefix>/<route>/<path>`` on the gateway's listener, the last step of its route.

The door's ingress route authenticates the caller (an API key or a token), authorizes and
rate-limits it like any other route; then this handler reads the call's context
(``X-Workflow-Id`` and ``X-Execution-Id``, required), the body, and hands the call to the egress
pipeline. What the caller receives is the pipeline's ``EgressOutcome``, as from every other door.
"""

from __future__ import annotations

import re

from portcullis.egress.budgets import CallContext
from portcullis.egress.call.outcome import context_fields
from portcullis.egress.executor import EgressExecutor, EgressRequest
from portcullis.errors import MalformedRequest
from portcullis.http.context import RequestContext
from portcullis.http.headers import fold_name, get_one
from portcullis.observability.tracing import ServerTrace
from portcullis.pipeline.handler import HandlerAnswer

__all__ = ["CONTEXT_ID", "EgressHttpDoor"]

CONTEXT_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")  # X-Workflow-Id, X-Execution-Id


class EgressHttpDoor:
    """``pipeline.handler.RouteHandler`` for the egress door's route."""

    def __init__(self, executor: EgressExecutor) -> None:
        self.executor = executor

    async def handle(self, ctx: RequestContext, trace: ServerTrace) -> HandlerAnswer:
        workflow = get_one(ctx.headers, b"x-workflow-id")
        execution = get_one(ctx.headers, b"x-execution-id")
        principal = ctx.principal
        if not (workflow and execution and CONTEXT_ID.match(workflow) and CONTEXT_ID.match(execution)):
            raise MalformedRequest("egress_context")  # the door's own input: refused as the app refuses any
        if principal is None:  # pragma: no cover - the door's chain always authenticates
            raise MalformedRequest("egress_unauthenticated")
        has_body = (ctx.content_length or 0) > 0 or get_one(ctx.headers, b"transfer-encoding") is not None
        body = await ctx.read_body() if has_body else None
        if has_body:
            ctx.body_consumed = True
        query = ctx.query.decode("latin-1")
        stripped = ctx.strip_request_headers  # the credential the door's authentication read
        request = EgressRequest(
            route=ctx.params["egress_route"], method=ctx.method,
            path_and_query="/" + ctx.params["egress_path"] + (f"?{query}" if query else ""),
            context=CallContext(execution.decode(), workflow.decode(), principal.consumer_id),
            # The executor applies the route's header rules (the same object as this route's):
            # one filter for every egress door, and the one ingress routes use.
            headers=[(k, v) for k, v in ctx.headers if fold_name(k) not in stripped],
            body=body, request_id=ctx.request_id, client_ip=ctx.client_ip, trace=trace, principal=principal,
        )
        ctx.egress = context_fields(request)  # on record even if the call is cut short
        outcome = await self.executor.run(request)
        ctx.decision = outcome.decision
        ctx.egress = outcome.audit
        ctx.problem = outcome.problem
        if outcome.result is not None:
            ctx.upstream_status = outcome.result.status
        return HandlerAnswer(outcome.status, outcome.headers, outcome.body, local=outcome.problem is not None)

    async def aclose(self) -> None:
        await self.executor.aclose()

