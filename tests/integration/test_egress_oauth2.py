"""OAuth 2.0 client credentials on an egress route: the gateway gets the provider's token itself.

Against the real OpenID provider (oidc-provider under Node) for the grant, and against a small token
endpoint on 127.0.0.1 that counts its requests for single flight, renewal, the 401 retry, the SSRF
guard and private_key_jwt. Names resolve through a fixed resolver; loopback is reachable only through
each route's explicit 127.0.0.0/8 exception.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tests.oidc import JWT_RESOURCE, WORKER, OidcProvider, oidc_provider

from portcullis.audit.record import AuditRecord
from portcullis.config.egress import EgressConfig
from portcullis.egress.budgets import CallContext
from portcullis.egress.executor import EgressExecutor, EgressRequest
from portcullis.egress.resolver import StaticResolver
from portcullis.errors import EgressDenied
from portcullis.stores.sqlite import SqliteStore
from portcullis.testing import ManualClock, catch_all, serve_app
from portcullis.vault import MasterKeys, Vault, generate_master_key

__all__ = ["oidc_provider"]  # the fixture, imported for pytest

CTX = CallContext(execution_id="ex-1", workflow_id="wf-1", user="alice")
CLIENT_SECRET = "client-S3cret-value"
EC_KEY = ec.generate_private_key(ec.SECP256R1())
EC_PEM = EC_KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode()


@dataclass
class Servers:
    """The provider's API (records the Authorization it got; answers 401 to tokens in ``refuse``) and a
    token endpoint that issues tok-1, tok-2, … and counts its requests."""

    api_port: int = 0
    token_port: int = 0
    authorizations: list[str] = field(default_factory=list)
    token_forms: list[dict[str, str]] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    expires_in: int = 300
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def api(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        self.authorizations.append(auth)
        status = 401 if auth.removeprefix("Bearer ") in self.refuse else 200
        return web.json_response({"ok": status == 200}, status=status)

    async def token(self, request: web.Request) -> web.Response:
        self.arrived.set()
        await self.gate.wait()  # held until the test releases it, so concurrent calls pile up on this renewal
        form = dict(await request.post())
        self.token_forms.append({k: str(v) for k, v in form.items()} | {"_auth": request.headers.get("Authorization", "")})
        return web.json_response({"access_token": f"tok-{len(self.token_forms)}", "token_type": "Bearer",
                                  "expires_in": self.expires_in})


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    s = Servers()
    s.gate.set()
    async with serve_app(catch_all(s.api)) as s.api_port, serve_app(catch_all(s.token)) as s.token_port:
        yield s


@dataclass
class World:
    executor: EgressExecutor
    clock: ManualClock
    audit: list[AuditRecord]

    async def call(self, ctx: CallContext = CTX) -> Any:
        return await self.executor.call(EgressRequest("partner", "GET", "/v1/items", ctx, []))


Factory = Callable[..., Any]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[Factory]:
    made: list[tuple[EgressExecutor, SqliteStore]] = []

    async def make(api_port: int, oauth2: dict[str, Any], *, token_ip: str = "127.0.0.1",
                   secrets: dict[str, str] | None = None, clock: ManualClock | None = None) -> World:
        route = {"name": "partner", "url": f"http://api.partner.test:{api_port}", "allow_http": True,
                 "allow_networks": ["127.0.0.0/8"], "oauth2": {"allow_http": True, **oauth2}}
        config = EgressConfig.model_validate({"routes": [route], "budgets": {"execution_calls": 1000}})
        store = await SqliteStore.connect(str(tmp_path / f"v{len(made)}.db"))
        clk = clock or ManualClock()
        vault = Vault(store, MasterKeys([generate_master_key().encode()]), clk)
        for name, value in (secrets or {"partner_client": CLIENT_SECRET}).items():
            await vault.set(name, value)
        audit: list[AuditRecord] = []
        executor = EgressExecutor(
            config, vault=vault, clock=clk, audit=audit.append,
            resolver=StaticResolver({"api.partner.test": [[ip_address("127.0.0.1")]],
                                     "auth.partner.test": [[ip_address(token_ip)]]}),
        )
        made.append((executor, store))
        return World(executor, clk, audit)

    try:
        yield make
    finally:
        for executor, store in made:
            await executor.aclose()
            await store.aclose()


def _token_url(port: int, path: str = "/token") -> str:
    return f"http://auth.partner.test:{port}{path}"


async def test_route_gets_its_token_from_the_openid_provider(
    world: Factory, servers: Servers, oidc_provider: OidcProvider
) -> None:
    port = urlsplit(oidc_provider.issuer).port
    w: World = await world(servers.api_port, {
        "token_url": _token_url(port or 0), "client_id": WORKER[0], "client_secret": "{secret:worker}",
        "scope": "read", "resource": JWT_RESOURCE,
    }, secrets={"worker": WORKER[1]}, clock=ManualClock(wall=time.time()))
    result = await w.call()
    assert result.status == 200
    [auth] = servers.authorizations
    claims = jwt.decode(auth.removeprefix("Bearer "), options={"verify_signature": False})
    assert (claims["client_id"], claims["aud"], claims["scope"]) == ("worker", JWT_RESOURCE, "read")
    assert claims["iss"] == oidc_provider.issuer
    assert result.secrets == ("worker",)  # the audit names the secret, never the token


async def test_a_hundred_concurrent_calls_cost_one_token_request(world: Factory, servers: Servers) -> None:
    w: World = await world(servers.api_port, {"token_url": _token_url(servers.token_port), "client_id": "gw",
                                              "client_secret": "{secret:partner_client}"})
    servers.gate.clear()
    calls = [asyncio.create_task(w.call()) for _ in range(100)]
    await servers.arrived.wait()  # the renewal is in flight and held: the calls join it or wait behind it
    servers.gate.set()
    results = await asyncio.gather(*calls)
    assert [r.status for r in results] == [200] * 100
    assert len(servers.token_forms) == 1
    assert set(servers.authorizations) == {"Bearer tok-1"}
    assert servers.token_forms[0]["grant_type"] == "client_credentials"


async def test_token_is_renewed_before_it_expires(world: Factory, servers: Servers) -> None:
    w: World = await world(servers.api_port, {"token_url": _token_url(servers.token_port), "client_id": "gw",
                                              "client_secret": "{secret:partner_client}", "refresh_before": "60s"})
    await w.call()
    w.clock.advance(300 - 61)
    await w.call()
    assert len(servers.token_forms) == 1
    w.clock.advance(1)  # 60 s before expires_in: renewed, not used to the last second
    await w.call()
    assert servers.authorizations == ["Bearer tok-1", "Bearer tok-1", "Bearer tok-2"]


async def test_a_401_from_the_provider_renews_the_token_and_retries_once(world: Factory, servers: Servers) -> None:
    w: World = await world(servers.api_port, {"token_url": _token_url(servers.token_port), "client_id": "gw",
                                              "client_secret": "{secret:partner_client}"})
    servers.refuse = {"tok-1"}  # revoked at the provider
    result = await w.call()
    assert result.status == 200
    assert servers.authorizations == ["Bearer tok-1", "Bearer tok-2"]
    servers.refuse = {"tok-2", "tok-3"}  # still refused after renewal: the 401 is the answer, one retry only
    result = await w.call()
    assert result.status == 401
    assert servers.authorizations[2:] == ["Bearer tok-2", "Bearer tok-3"]


async def test_client_secret_goes_as_http_basic_and_token_never_reaches_the_audit_or_logs(
    world: Factory, servers: Servers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    w: World = await world(servers.api_port, {"token_url": _token_url(servers.token_port), "client_id": "gw",
                                              "client_secret": "{secret:partner_client}"})
    await w.call()
    assert servers.token_forms[0]["_auth"] == "Basic " + base64.b64encode(f"gw:{CLIENT_SECRET}".encode()).decode()
    [event] = [r.event for r in w.audit if r.event and r.event["action"] == "secret.read"]
    assert event["target"] == "partner_client"
    text = repr(w.audit) + caplog.text
    assert "tok-1" not in text and CLIENT_SECRET not in text


async def test_private_key_jwt_sends_an_assertion_signed_with_the_vault_key(world: Factory, servers: Servers) -> None:
    url = _token_url(servers.token_port)
    w: World = await world(servers.api_port, {"token_url": url, "client_id": "gw",
                                              "private_key_jwt": {"key": "{secret:signing}", "alg": "ES256"}},
                           secrets={"signing": EC_PEM})
    assert (await w.call()).status == 200
    form = servers.token_forms[0]
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    claims = jwt.decode(form["client_assertion"], EC_KEY.public_key(), algorithms=["ES256"], audience=url,
                        options={"verify_exp": False, "verify_iat": False})
    assert (claims["iss"], claims["sub"]) == ("gw", "gw")
    assert form["_auth"] == ""  # no secret besides the assertion


@pytest.mark.parametrize("token_ip", [
    "169.254.169.254",  # cloud metadata service (OWASP SSRF, Capital One 2019)
    "10.0.0.7",  # RFC 1918: not in the route's network exceptions
], ids=["metadata-address", "private-network"])
async def test_token_endpoint_passes_the_ssrf_guard(world: Factory, servers: Servers, token_ip: str) -> None:
    w: World = await world(servers.api_port, {"token_url": _token_url(servers.token_port), "client_id": "gw",
                                              "client_secret": "{secret:partner_client}"}, token_ip=token_ip)
    with pytest.raises(EgressDenied):
        await w.call()
    assert servers.token_forms == [] and servers.authorizations == []
