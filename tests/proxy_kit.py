"""The proxy door in front of a real gateway, and a lab backend for tests of the door's own contract.

``proxy_gateway``: a gateway (``make_gateway``: its store, audit writer, metrics, egress executor)
with the proxy door's listener over ``PipelineBackend``, as ``portcullis serve`` wires it; egress
names are answered by a fixed resolver (127.0.0.1 for the local upstreams, private and metadata
addresses for attacks), and every audit record the door writes is also kept in memory, so a test
can wait for a tunnel's record without polling the audit file.

``LabBackend``: ``ProxyBackend`` over the key verifier and the executor, with faults that can be
injected, for the door's behaviour when its backend misbehaves.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path
from typing import Any

from tests.conftest import DEFAULT_AUDIT, Gateway, GatewayFactory, gateway_yaml

from portcullis.audit.record import AuditRecord
from portcullis.clock import SystemClock
from portcullis.egress.proxy import (
    ForwardRequest,
    ForwardResponse,
    ProxyCredentials,
    ProxyIdentity,
    ProxyListener,
    TunnelGrant,
    TunnelRecord,
    TunnelRequest,
)
from portcullis.egress.proxy.authority import CertificateAuthority
from portcullis.egress.proxy.backend import PipelineBackend, ProxyPipeline
from portcullis.egress.resolver import StaticResolver
from portcullis.gateway.proxy import proxy_limits
from portcullis.gateway.runtime import serving_runtime
from portcullis.policies.stage2_authenticate.failed_auth_shield import FailedAuthShield, failed_auth_rule
from portcullis.server.base import Refusal
from portcullis.vault import generate_master_key

MASTER = generate_master_key()  # the vault's key for every proxied gateway of a test run


@dataclass
class ProxyGateway:
    gw: Gateway
    listener: ProxyListener
    key: str
    resolver: StaticResolver
    records: list[AuditRecord] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def port(self) -> int:
        return self.listener.port

    def proxy_url(self, *, workflow: str = "wf-1", execution: str = "ex-1", key: str | None = None) -> str:
        return f"http://wf={workflow};ex={execution}:{key or self.key}@127.0.0.1:{self.port}"

    def basic(self, *, workflow: str = "wf-1", execution: str = "ex-1", key: str | None = None) -> bytes:
        return b"Basic " + base64.b64encode(f"wf={workflow};ex={execution}:{key or self.key}".encode())

    def submit(self, record: AuditRecord) -> None:
        self.gw.services.audit.submit(record)
        self.records.append(record)
        self.arrived.set()

    @property
    def calls(self) -> list[AuditRecord]:
        """Records of requests the door forwarded (or the pipeline refused), not tunnels or its own refusals."""
        return [r for r in self.records if r.method != "CONNECT" and r.egress and "workflow_id" in r.egress]

    @property
    def refusals(self) -> list[AuditRecord]:
        """Records of requests the listener refused itself."""
        return [r for r in self.records if r.egress == {"door": "proxy"}]

    async def call(self) -> AuditRecord:
        """The next forwarded request's record (a streamed one is written when its stream is settled)."""
        async with asyncio.timeout(10):
            while not self.calls:
                self.arrived.clear()
                await self.arrived.wait()
        found = self.calls[0]
        self.records.remove(found)
        return found

    async def tunnel(self) -> AuditRecord:
        """The next ``CONNECT``'s record (written when the tunnel ends), waiting for it."""
        async with asyncio.timeout(10):
            while True:
                found = [r for r in self.records if r.method == "CONNECT"]
                if found:
                    self.records.remove(found[0])
                    return found[0]
                self.arrived.clear()
                await self.arrived.wait()


def egress_yaml(routes: list[dict[str, Any]], proxy: dict[str, Any] | None = None,
                budgets: dict[str, Any] | None = None) -> str:
    section = {"entry": {"enabled": True}, "routes": routes, "budgets": budgets or {},
               "proxy": {"listen": "127.0.0.1:0", **(proxy or {})}}
    return f"routes:\n  - {{name: health, path: /health, upstream: api, auth: none}}\negress: {json.dumps(section)}\n"


@asynccontextmanager
async def proxy_gateway(
    make_gateway: GatewayFactory, routes: list[dict[str, Any]], *, answers: dict[str, list[list[str]]] | None = None,
    proxy: dict[str, Any] | None = None, budgets: dict[str, Any] | None = None, scopes: tuple[str, ...] = (),
    extra_yaml: str = "", secrets: dict[str, str] | None = None, audit: str | None = None,
) -> AsyncIterator[ProxyGateway]:
    """``audit``: the gateway's ``audit:`` line in place of the test default's."""
    resolver = StaticResolver({name: [[ip_address(a) for a in answer] for answer in lists]
                               for name, lists in (answers or {}).items()})
    text = gateway_yaml("http://127.0.0.1:9", egress_yaml(routes, proxy, budgets) + extra_yaml)
    if audit is not None:
        text = text.replace(DEFAULT_AUDIT, audit)
    gw = await make_gateway(text, resolver=resolver, env={"PORTCULLIS_SECRET_KEY": MASTER}, secrets=secrets)
    runtime = serving_runtime(gw.app)
    config = runtime.config
    assert config.egress is not None and config.egress.proxy is not None
    settings = config.egress.proxy
    authority = None
    if settings.ca is not None:
        ca = settings.ca
        # Certificates are facts on the wire: their validity follows the real clock, not the test's.
        authority = await asyncio.to_thread(CertificateAuthority.load, Path(ca.cert_file), Path(ca.key_file),
                                            clock=SystemClock(), leaf_days=ca.leaf_days, max_leaves=ca.max_leaves)

    def current() -> ProxyPipeline | None:
        now = serving_runtime(gw.app)
        assert now.egress is not None and now.config.egress is not None
        return ProxyPipeline(now.egress, now.config.egress, now.key_verifier)

    holder: list[ProxyGateway] = []
    shield = FailedAuthShield(failed_auth_rule(config.shield.failed_auth_rate), gw.services.limiter, gw.clock)
    backend = PipelineBackend(current, audit=lambda record: holder[0].submit(record), clock=gw.clock,
                              metrics=gw.services.metrics, shield=shield)
    listener = ProxyListener(backend, proxy_limits(settings, 2.0), clock=gw.clock, authority=authority)
    await listener.start("127.0.0.1", 0)
    pg = ProxyGateway(gw, listener, await gw.key("alice", scopes=scopes), resolver)
    holder.append(pg)
    try:
        yield pg
    finally:
        await listener.stop()


# --- the lab backend: the door's contract, with faults --------------------------------------------

@dataclass
class LabBackend:
    """``ProxyBackend`` over a gateway's pipeline, recording what it sees and raising injected faults."""

    inner: PipelineBackend
    refusals: list[Refusal] = field(default_factory=list)
    tunnels: list[TunnelRecord] = field(default_factory=list)
    faults: dict[str, BaseException] = field(default_factory=dict)  # method name -> what it raises next
    streams: list[ListStream] = field(default_factory=list)  # answers to stream instead of forwarding

    def _fault(self, method: str) -> None:
        fault = self.faults.pop(method, None)
        if fault is not None:
            raise fault

    async def authenticate(self, credentials: ProxyCredentials, *, client_ip: str, request_id: str) -> ProxyIdentity:
        self._fault("authenticate")
        return await self.inner.authenticate(credentials, client_ip=client_ip, request_id=request_id)

    async def forward(self, request: ForwardRequest) -> ForwardResponse:
        self._fault("forward")
        if self.streams:
            return ForwardResponse(200, [(b"content-type", b"text/event-stream")], self.streams.pop(0))
        return await self.inner.forward(request)

    async def admit_tunnel(self, request: TunnelRequest) -> TunnelGrant:
        self._fault("admit_tunnel")
        return await self.inner.admit_tunnel(request)

    def tunnel_closed(self, record: TunnelRecord) -> None:
        self.tunnels.append(record)
        self.inner.tunnel_closed(record)

    def refused(self, refusal: Refusal) -> Sequence[tuple[bytes, bytes]]:
        self.refusals.append(refusal)
        return self.inner.refused(refusal)


class ListStream:
    """A ``BodyStream`` of fixed chunks; an exception among them is raised there (a cut stream)."""

    def __init__(self, chunks: list[bytes | Exception]) -> None:
        self._chunks = chunks
        self.closed = False

    async def _iterate(self) -> AsyncIterator[bytes]:
        for item in self._chunks:
            if isinstance(item, Exception):
                raise item
            yield item

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def aclose(self) -> None:
        self.closed = True
