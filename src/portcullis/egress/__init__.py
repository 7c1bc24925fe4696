"""Egress: the guarded door from workflows and agents to third-party APIs.

Its parts, each tested on its own:
- ``ssrf``: the SSRF guard; ``resolver``: its resolvers; ``pinning``: resolve-then-pin for aiohttp (the token
  endpoint's client); ``call/phase5_client``: resolve-then-pin for the calls themselves, on the lean client;
- ``breaker``: the per-endpoint circuit breaker; ``retry``: full jitter and a retry budget;
- ``response_guard``: limits on the provider's answer; ``budgets``: exact call and cost budgets;
- ``policy``: from the ``egress:`` config to the guard's policy;
- ``executor``: one call end to end, composing all of the above with the vault's credentials;
- ``transport``: the in-process door, an httpx transport over the executor (SDKs take it);
- ``proxy``: the forward-proxy door (``HTTPS_PROXY``): absolute-form requests, ``CONNECT`` tunnels
  with resolve-then-pin, optional TLS interception with the gateway's CA.
The vault lives in ``portcullis.vault``; the HTTP door (``/egress/<route>/…``) is served by the ingress app.
"""

from portcullis.egress.transport import AsyncTransport, Transport

__all__ = ["AsyncTransport", "Transport"]
