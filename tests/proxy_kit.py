"""A proxy door on 127.0.0.1 over a lab backend built from real pieces, for the proxy tests.

The lab backend is ``ProxyBackend`` over: the API key verifier on a real SQLite key store, the
route table (``egress.proxy.routes``), the SSRF guard with a fixed resolver (names answer with
127.0.0.1 for the local servers, or with private and metadata addresses for attacks), a real
limiter per tunnel, and the egress executor for forwarded requests. What it records (refusals,
tunnels, forwarded calls) is kept in lists for the tests to read.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path
from typing import Any

from portcullis.config.egress import EgressConfig
from portcullis.egress.budgets import CallContext
from portcullis.egress.executor import EgressExecutor, EgressRequest
from portcullis.egress.policy import route_policy
from portcullis.egress.proxy import (
    ForwardRequest,
    ForwardResponse,
    ProxyCredentials,
    ProxyDoorSettings,
    ProxyIdentity,
    ProxyListener,
    SpliceLimits,
    TunnelGrant,
    TunnelMode,
    TunnelRecord,
    TunnelRequest,
)
from portcullis.egress.proxy.authority import CertificateAuthority
from portcullis.egress.proxy.routes import RouteMap, splice_refusal, tunnel_mode
from portcullis.egress.resolver import StaticResolver
from portcullis.egress.ssrf import EgressTarget, SsrfGuard
from portcullis.errors import EgressDenied, RateLimited
from portcullis.identity.api_keys import ApiKeyVerifier, create_key
from portcullis.limiting.limiter import LimitRule, MultiLimiter
from portcullis.server.base import Refusal
from portcullis.server.limits import ServerLimits
from portcullis.stores.memory import MemoryCounterStore
from portcullis.stores.sqlite import SqliteStore
from portcullis.testing import ManualClock
from portcullis.vault import MasterKeys, Vault, generate_master_key

PEPPER = b"p" * 32


@dataclass
class LabBackend:
    verifier: ApiKeyVerifier
    routes: RouteMap
    config: EgressConfig
    guard: SsrfGuard
    executor: EgressExecutor
    limiter: MultiLimiter
    plain_for: dict[str, str] = field(default_factory=dict)  # intercepted host -> the http route standing in
    refusals: list[Refusal] = field(default_factory=list)
    tunnels: list[TunnelRecord] = field(default_factory=list)
    forwarded: list[ForwardRequest] = field(default_factory=list)
    tunnel_closed_event: asyncio.Event = field(default_factory=asyncio.Event)
    faults: dict[str, BaseException] = field(default_factory=dict)  # method name -> what it raises next

    def _fault(self, method: str) -> None:
        fault = self.faults.pop(method, None)
        if fault is not None:
            raise fault

    async def authenticate(self, credentials: ProxyCredentials, *, client_ip: str, request_id: str) -> ProxyIdentity:
        self._fault("authenticate")
        principal = await self.verifier.verify(credentials.api_key)
        return ProxyIdentity(principal.consumer_id, principal.key_id, credentials.workflow_id,
                             credentials.execution_id)

    async def forward(self, request: ForwardRequest) -> ForwardResponse:
        self._fault("forward")
        self.forwarded.append(request)
        from portcullis.egress.ssrf import parse_egress_url

        target: EgressTarget = parse_egress_url(request.url)
        route_name = self.plain_for.get(target.host)
        relative = target.path_and_query
        if route_name is None:
            match = self.routes.for_url(target.scheme, target.host, target.port, target.path_and_query)
            if match is None:
                raise EgressDenied("no_route_for_url")
            route_name, relative = match.route.name, match.relative
        ident = request.identity
        result = await self.executor.call(EgressRequest(
            route=route_name, method=request.method, path_and_query=relative,
            context=CallContext(ident.execution_id, ident.workflow_id, ident.consumer_id),
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers],
            body=request.body or None, request_id=request.request_id, client_ip=request.client_ip,
        ))
        return ForwardResponse(result.status, [(k.lower().encode(), v.encode()) for k, v in result.headers],
                               result.body)

    async def admit_tunnel(self, request: TunnelRequest) -> TunnelGrant:
        self._fault("admit_tunnel")
        route = self.routes.for_tunnel(request.host, request.port)
        if route is None:
            raise EgressDenied("no_route_for_tunnel")
        mode = tunnel_mode(route)
        if mode is not TunnelMode.SPLICE:
            return TunnelGrant(route.name, mode)
        refusal = splice_refusal(route)
        if refusal is not None:
            raise EgressDenied(refusal)
        shown = f"[{request.host}]" if ":" in request.host else request.host
        verdict = await self.guard.check(f"https://{shown}:{request.port}/", route_policy(self.config, route))
        if not verdict.allowed:
            raise EgressDenied(verdict.reason)
        if route.rate_limits:
            rule = LimitRule(name=f"egress:{route.name}", windows=tuple(route.rate_limits), burst=route.burst)
            decision = await self.limiter.consume([(rule, "*")])
            if not decision.allowed:
                raise RateLimited(f"rate_limited:{rule.name}", retry_after_s=decision.retry_after_s)
        return TunnelGrant(route.name, mode, verdict.addresses, connect_timeout_s=2.0)

    def tunnel_closed(self, record: TunnelRecord) -> None:
        self.tunnels.append(record)
        self.tunnel_closed_event.set()

    def refused(self, refusal: Refusal) -> Sequence[tuple[bytes, bytes]]:
        self.refusals.append(refusal)
        return ()

    async def next_tunnel(self) -> TunnelRecord:
        async with asyncio.timeout(10):
            while not self.tunnels:
                self.tunnel_closed_event.clear()
                await self.tunnel_closed_event.wait()
        return self.tunnels.pop(0)


@dataclass
class Lab:
    backend: LabBackend
    listener: ProxyListener
    key: str
    clock: ManualClock
    resolver: StaticResolver

    @property
    def port(self) -> int:
        return self.listener.port

    def proxy_url(self, *, workflow: str = "wf-1", execution: str = "ex-1", key: str | None = None) -> str:
        return f"http://wf={workflow};ex={execution}:{key or self.key}@127.0.0.1:{self.port}"

    def basic(self, *, workflow: str = "wf-1", execution: str = "ex-1", key: str | None = None) -> bytes:
        token = base64.b64encode(f"wf={workflow};ex={execution}:{key or self.key}".encode())
        return b"Basic " + token


@asynccontextmanager
async def proxy_lab(
    tmp_path: Path, routes: list[dict[str, Any]], *, answers: dict[str, list[list[str]]] | None = None,
    limits: ServerLimits | None = None, splice: SpliceLimits | None = None, authority: CertificateAuthority | None = None,
    plain_for: dict[str, str] | None = None, max_body_bytes: int = 1 << 20, proxy_ca: bool = False,
) -> AsyncIterator[Lab]:
    proxy: dict[str, Any] | None = None
    if proxy_ca:  # the config only checks that a CA is named; the lab hands the listener its authority
        proxy = {"listen": "127.0.0.1:0", "ca": {"cert_file": "ca.pem", "key_file": "ca.key"}}
    config = EgressConfig.model_validate({"routes": routes, "budgets": {"execution_calls": 0}, "proxy": proxy})
    store = await SqliteStore.connect(str(tmp_path / "lab.db"))
    clock = ManualClock()
    issued = await create_key(store, "alice", (), pepper=PEPPER, clock=clock)
    verifier = ApiKeyVerifier(store, pepper=PEPPER, clock=clock, cache_ttl_s=60)
    resolver = StaticResolver({name: [[ip_address(a) for a in answer] for answer in lists]
                               for name, lists in (answers or {}).items()})
    vault = Vault(store, MasterKeys([generate_master_key().encode()]), clock)
    executor = EgressExecutor(config, vault=vault, resolver=resolver, clock=clock)
    backend = LabBackend(verifier, RouteMap(config), config, SsrfGuard(resolver), executor,
                         MultiLimiter(MemoryCounterStore(), clock), plain_for=plain_for or {})
    settings = ProxyDoorSettings(limits=limits or ServerLimits(), splice=splice or SpliceLimits(),
                                 max_body_bytes=max_body_bytes)
    listener = ProxyListener(backend, settings, clock=clock, authority=authority)
    await listener.start()
    try:
        yield Lab(backend, listener, issued.key, clock, resolver)
    finally:
        await listener.stop()
        await executor.aclose()
        await store.aclose()
