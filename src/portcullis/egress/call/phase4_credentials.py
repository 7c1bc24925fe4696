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
from portcullis.egress.call.phase1_destination import ESCAPE, TEXT, Destination
from portcullis.egress.call.request import EgressRequest
from portcullis.egress.call.route import EgressRoute
from portcullis.egress.oauth2 import ClientCredentials
from portcullis.errors import STORE_RETRY_AFTER_S, DependencyUnavailable, StoreUnavailable, VaultError
from portcullis.http.header_rules import RequestHeaderRules
from portcullis.http.headers import RawHeaders
from portcullis.vault import Vault

__all__ = ["CredentialsPhase", "renewed_token"]

_AUTHORIZATION = b"authorization"  # the oauth2 token's header; no caller's crosses (CALLER_ONLY_HEADERS)


class CredentialsPhase:
    def __init__(self, *, header_rules: RequestHeaderRules, vault: Vault, clock: Clock,
                 audit: Callable[[AuditRecord], None] | None) -> None:
        self._header_rules = header_rules
        self._vault = vault
        self._clock = clock
        self._audit = audit
        self._reads = EventThrottle(clock)  # one ``secret.read`` per route and execution per minute

    async def headers(self, destination: Destination, request: EgressRequest) -> RawHeaders:
        """The caller's headers that cross (the rules, minus its gateway credentials and the names
        the route sets), then the route's, with ``{secret:name}`` filled from the vault now.

        Bytes with lower-case names, as the client sends them: the caller's pass as read, a
        template's value is encoded once (UTF-8, surrogateescape: a vault value reaches the
        provider as stored), and the later phases compare names without folding case."""
        route = destination.route
        out = [(k.lower(), v) for k, v in self._header_rules.crossing(destination.caller, route.replaced)]
        for header in route.injected:
            if header.fixed is not None:
                out.append((header.name, header.fixed))
                continue
            value = header.template
            for secret_name in header.secrets:
                value = value.replace(f"{{secret:{secret_name}}}", await self._reveal(secret_name))
            out.append((header.name, value.encode(TEXT, ESCAPE)))
        if route.oauth2 is not None:
            # The token request is its own security event (on renewal); the call names the secret only.
            out.append((_AUTHORIZATION, _bearer(await route.oauth2.token())))
        if route.secrets and len(route.secrets) > (route.oauth2 is not None) and self._audit is not None:
            self._secrets_read(self._audit, route, request)
        return out

    async def _reveal(self, name: str) -> str:
        """The secret's value; a vault that cannot give it refuses the call before anything is sent
        (a 503 the caller can retry when the store is down, and the secret's name for the audit)."""
        try:
            return await self._vault.reveal(name)
        except StoreUnavailable:
            raise DependencyUnavailable(f"credential_unavailable:{name}", retry_after_s=STORE_RETRY_AFTER_S) from None
        except VaultError:
            raise DependencyUnavailable(f"credential_missing:{name}") from None

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


async def renewed_token(oauth2: ClientCredentials, headers: RawHeaders) -> RawHeaders:
    """The headers with a fresh provider token, after the provider refused the one they carried."""
    used = next((v for k, v in headers if k == _AUTHORIZATION), b"")
    oauth2.invalidate(used.removeprefix(b"Bearer ").decode(TEXT, ESCAPE))
    fresh = await oauth2.token()
    return [(k, v) for k, v in headers if k != _AUTHORIZATION] + [(_AUTHORIZATION, _bearer(fresh))]


def _bearer(token: str) -> bytes:
    return f"Bearer {token}".encode(TEXT, ESCAPE)
