"""Egress: the guarded door from workflows and agents to third-party APIs (issue 4, in progress).

This release holds the SSRF guard and its resolvers; routes, budgets, breakers, the vault and the
httpx transport build on them.
"""
