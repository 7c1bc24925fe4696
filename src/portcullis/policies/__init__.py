"""The policies, one folder per stage, in the order a request meets them.

A request's whole path, and where each phase lives:

1. receive: ``server/`` reads and bounds the bytes (sizes, time, framing); ``ingress/front_door.py``
   audits what the server refuses; ``ingress/app.py`` canonicalizes the target and routes.
2. ``stage1_shield/``: cheap refusals before any lookup (IP rules; CORS preflights answered here).
3. ``stage2_authenticate/``: credentials (API keys, JWTs) and the failed-authentication shield.
4. ``stage3_authorize/``: scopes and roles of the route.
5. ``stage4_limit/``: rate limits, once the caller is known.
6. ``stage5_validate/``: the body (JSON shape and depth), last, so an unknown caller never makes
   the gateway parse one.
7. forward: ``ingress/forward.py`` (headers for the upstream) and ``upstream/`` (the pooled client).
8. ``stage6_respond/``: security headers on every answer, local refusals included (response
   policies run in reverse order of the request stages they entered).
9. record: ``ingress/runtime.py`` (``Runtime.record``: metrics, one audit record) and ``audit/``.

The folder numbers are ``pipeline.base.Stage``'s values: the chain sorts policies by them, so
the listing and the run order cannot disagree.
"""
