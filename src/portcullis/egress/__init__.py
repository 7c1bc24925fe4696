"""Egress: the guarded door from workflows and agents to third-party APIs (issue 4, in progress).

Built so far, each tested on its own: the SSRF guard (``ssrf``), its resolvers (``resolver``),
resolve-then-pin for aiohttp (``pinning``), the per-endpoint circuit breaker (``breaker``),
retries with full jitter and a retry budget (``retry``), limits on the provider's answer
(``response_guard``) and the route-to-policy mapping of the ``egress:`` config (``policy``). Egress routes in the config, the HTTP
entry point, the httpx transport, budgets, the vault and the audit of calls build on them.
"""
