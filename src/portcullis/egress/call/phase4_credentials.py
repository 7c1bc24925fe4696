"""Phase 4: the headers the provider receives, and the credentials injected into them.

The caller's headers pass the ingress rules (``http/header_rules.py``: hop-by-hop, the gateway's
own, the default list, the configured lists), so a provider that honours ``X-HTTP-Method-Override``
cannot run a method the route does not allow; its credentials for the *gateway* (Authorization,
API-key headers, cookies) go too. Then the route's headers are set, ``{secret:name}`` filled now
from the vault. Every call's own audit record names the secrets it injected (``egress.secrets``);
the reads are also ``secret.read`` security events (the security class, kept longer): one per
route and execution per minute per instance, with the count of the calls it stands for
(``reads_since_last_event``), so who used the provider's key, when and for which execution stays
on the security trail without a second record on every call (``audit/throttle.py``).
"""

from __future__ import annotations

from collections.abc import Callable

from portcullis.audit.record import AuditRecord
from portcullis.audit.security_event import security_event
from portcullis.audit.throttle import EventThrottle
from portcullis.clock import Clock
from portcullis.config.egress import SECRET_REFERENCE
from portcullis.egress.call.phase1_destination import ESCAPE, TEXT, Destination
from portcullis.egress.call.request import EgressRequest
from portcullis.egress.call.route import EgressRoute
from portcullis.egress.oauth2 import ClientCredentials
from portcullis.http.header_rules import RequestHeaderRules
from portcullis.vault import Vault

__all__ = ["CredentialsPhase", "renewed_token"]

TextHeaders = list[tuple[str, str]]


class CredentialsPhase:
    def __init__(self, *, header_rules: RequestHeaderRules, vault: Vault, clock: Clock,
                 audit: Callable[[AuditRecord], None] | None) -> None:
        self._header_rules = header_rules
        self._vault = vault
        self._clock = clock
        self._audit = audit
        self._reads = EventThrottle(clock)  # one ``secret.read`` per route and execution per minute

    async def headers(self, destination: Destination, request: EgressRequest) -> TextHeaders:
        """The caller's headers that cross (the rules, minus its gateway credentials and the names
        the route sets), then the route's, with ``{secret:name}`` filled from the vault now."""
        route = destination.route
        out = [(k.decode(TEXT, ESCAPE), v.decode(TEXT, ESCAPE))
               for k, v in self._header_rules.crossing(destination.caller, route.replaced)]
        for name, template in route.config.headers.items():
            value = template
            for secret_name in SECRET_REFERENCE.findall(template):
                value = value.replace(f"{{secret:{secret_name}}}", await self._vault.reveal(secret_name))
            out.append((name, value))
        if route.oauth2 is not None:
            # The token request is its own security event (on renewal); the call names the secret only.
            out.append(("Authorization", f"Bearer {await route.oauth2.token()}"))
        if route.secrets and len(route.secrets) > (route.oauth2 is not None) and self._audit is not None:
            self._secrets_read(self._audit, route, request)
        return out

    def _secrets_read(self, audit: Callable[[AuditRecord], None], route: EgressRoute, request: EgressRequest) -> None:
        ctx = request.context
        since = self._reads.admit((route.name, ctx.workflow_id, ctx.execution_id, ctx.user))
        if since is None:
            return
        audit(security_event(
            clock=self._clock, action="secret.read", outcome="ok", actor=f"egress:{route.name}", role=None,
            target=",".join(route.secrets), client_ip=request.client_ip,
            request_id=request.request_id or "-", status=0, method=request.method,
            details={"execution_id": ctx.execution_id, "workflow_id": ctx.workflow_id, "user": ctx.user,
                     "reads_since_last_event": since},
            trace_id=request.trace.trace_id if request.trace is not None else None,
        ))


async def renewed_token(oauth2: ClientCredentials, headers: TextHeaders) -> TextHeaders:
    """The headers with a fresh provider token, after the provider refused the one they carried."""
    used = next((v for k, v in headers if k == "Authorization"), "")
    oauth2.invalidate(used.removeprefix("Bearer "))
    fresh = await oauth2.token()
    return [(k, v) for k, v in headers if k != "Authorization"] + [("Authorization", f"Bearer {fresh}")]
