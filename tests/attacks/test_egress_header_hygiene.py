"""Caller headers that make a third-party API route, act or trust differently never reach it.

The egress door (``/egress/<route>/…``) and the in-process httpx transport apply the same header
rules as an ingress route (``http/header_rules.py``): hop-by-hop headers and those named in
``Connection``, every variant of the gateway's own headers, the default list (URL and method
override, forwarding hints, other gateways' identity headers) and the config's lists. Why it
matters more here: an egress route's ``methods`` and ``paths`` are the gateway's decision, and a
provider that honours ``X-HTTP-Method-Override`` (Google APIs do) or ``X-Original-URL`` would
otherwise execute a method or path the route never allowed (OWASP API5, broken function-level
authorization). Sources per case: ``header_cases.py`` and ``test_header_hygiene.py``.

The provider is a raw ``RecordingUpstream`` on 127.0.0.1 (named through a fixed resolver, reached
through the route's explicit 127.0.0.0/8 exception), so every header name is seen exactly as sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path

import httpx
import pytest
from tests.attacks.header_cases import DEFAULT_REMOVED, GATEWAY_HEADER_VARIANTS, LEGITIMATE
from tests.conftest import Gateway, GatewayFactory, gateway_yaml

from portcullis.config.egress import EgressConfig
from portcullis.config.model import RequestConfig
from portcullis.egress.budgets import CallContext
from portcullis.egress.executor import EgressExecutor
from portcullis.egress.resolver import StaticResolver
from portcullis.egress.transport import AsyncTransport
from portcullis.http.header_rules import RequestHeaderRules
from portcullis.stores.sqlite import SqliteStore
from portcullis.testing import ManualClock, RecordedHead, RecordingUpstream
from portcullis.vault import MasterKeys, Vault, generate_master_key

MASTER = generate_master_key()
TOKEN = "ghp_" + "Hyg1ene" * 5
CONTEXT = [("X-Workflow-Id", "wf-1"), ("X-Execution-Id", "ex-1")]


def _folded(name: str) -> str:
    return name.lower().replace("_", "-")


def _names(head: RecordedHead) -> list[str]:
    return [_folded(name) for name, _ in head.headers]


def door_yaml(port: int, request: str = "") -> str:
    return gateway_yaml("http://127.0.0.1:9", f"""
{request}
routes:
  - {{name: health, path: /health, upstream: api, auth: none}}
egress:
  routes:
    - name: partner
      url: "http://api.partner.test:{port}"
      allow_http: true
      allow_networks: [127.0.0.0/8]
      methods: [GET, POST]
      headers: {{Authorization: "Bearer {{secret:partner_token}}"}}
""")


@dataclass
class Door:
    gateway: Gateway
    key: str
    provider: RecordingUpstream

    async def call(self, headers: list[tuple[str, str]]) -> httpx.Response:
        return await self.gateway.client.post(
            "/egress/partner/v1/issues", content=b"{}",
            headers=[("X-API-Key", self.key), *CONTEXT, *headers])


@pytest.fixture
async def provider() -> AsyncIterator[RecordingUpstream]:
    async with RecordingUpstream() as server:
        yield server


async def open_door(make_gateway: GatewayFactory, provider: RecordingUpstream, request: str = "") -> Door:
    gw = await make_gateway(
        door_yaml(provider.port, request), env={"PORTCULLIS_SECRET_KEY": MASTER},
        resolver=StaticResolver({"api.partner.test": [[ip_address("127.0.0.1")]]}),
        secrets={"partner_token": TOKEN},
    )
    return Door(gw, await gw.key("agent-7"), provider)


# --- the HTTP door -------------------------------------------------------------------------------

@pytest.mark.parametrize(("variant", "own"), GATEWAY_HEADER_VARIANTS)
async def test_variants_of_the_gateways_own_headers_never_reach_the_provider(
    make_gateway: GatewayFactory, provider: RecordingUpstream, variant: str, own: str
) -> None:
    door = await open_door(make_gateway, provider)
    r = await door.call([(variant, "forged")])
    assert r.status_code == 200
    [head] = provider.heads
    assert own not in _names(head)  # the gateway sets none of its own headers for a third party
    assert "forged" not in [value for _, value in head.headers]


GATEWAY_SET_EXACT = [
    # Headers the gateway sets for its own backends: a caller's copy is as forged for a provider
    # behind its own proxy (OWASP API2 broken authentication, API8 misconfiguration).
    pytest.param("X-Consumer-Id", id="OWASP-API2-x-consumer-id"),
    pytest.param("X-Key-Id", id="OWASP-API2-x-key-id"),
    pytest.param("X-Credential-Method", id="OWASP-API2-x-credential-method"),
    pytest.param("X-Authenticated-Userid", id="kong-x-authenticated-userid"),
    pytest.param("X-Request-Id", id="OWASP-API8-forged-correlation-id"),
    pytest.param("X-Forwarded-Port", id="portswigger-cracking-the-lens-x-forwarded-port"),
    pytest.param("X-Real-IP", id="nginx-realip-x-real-ip"),
    pytest.param("True-Client-IP", id="akamai-cloudflare-true-client-ip"),
    pytest.param("X-Client-IP", id="OWASP-API8-x-client-ip"),
]


@pytest.mark.parametrize("header", GATEWAY_SET_EXACT)
async def test_client_copies_of_the_gateways_own_headers_never_reach_the_provider(
    make_gateway: GatewayFactory, provider: RecordingUpstream, header: str
) -> None:
    door = await open_door(make_gateway, provider)
    r = await door.call([(header, "forged")])
    assert r.status_code == 200
    [head] = provider.heads
    assert _folded(header) not in _names(head)


@pytest.mark.parametrize(("header", "value"), DEFAULT_REMOVED)
async def test_default_list_headers_never_reach_the_provider(
    make_gateway: GatewayFactory, provider: RecordingUpstream, header: str, value: str
) -> None:
    door = await open_door(make_gateway, provider)
    r = await door.call([(header, value)])
    assert r.status_code == 200
    [head] = provider.heads
    assert _folded(header) not in _names(head)
    assert (head.method, head.target) == ("POST", "/v1/issues")


HOP_BY_HOP = [
    # RFC 9110 section 7.6.1: hop-by-hop headers, and any header the sender names in Connection,
    # end at the first hop. Naming X-Forwarded-For or an auth header in Connection is the
    # "hop-by-hop abuse" class (N. Davis, "Abusing HTTP hop-by-hop request headers", 2019).
    pytest.param([("Connection", "keep-alive, X-Hop-Secret"), ("X-Hop-Secret", "s")], "x-hop-secret",
                 id="RFC9110-7.6.1-connection-named-header"),
    pytest.param([("Keep-Alive", "timeout=600")], "keep-alive", id="RFC9110-7.6.1-keep-alive"),
    pytest.param([("TE", "trailers")], "te", id="RFC9110-10.1.4-te"),
    pytest.param([("Trailer", "X-Checksum")], "trailer", id="RFC9110-6.6.2-trailer"),
    pytest.param([("Proxy-Authorization", "Basic YWRtaW46YWRtaW4=")], "proxy-authorization",
                 id="RFC9110-11.7.2-proxy-authorization"),
    pytest.param([("Proxy-Connection", "keep-alive")], "proxy-connection", id="de-facto-proxy-connection"),
    pytest.param([("Keep_Alive", "timeout=600")], "keep-alive", id="GHSA-vjrc-mh2v-45x6-hop-by-hop-variant"),
]


@pytest.mark.parametrize(("headers", "name"), HOP_BY_HOP)
async def test_hop_by_hop_and_connection_named_headers_never_reach_the_provider(
    make_gateway: GatewayFactory, provider: RecordingUpstream, headers: list[tuple[str, str]], name: str
) -> None:
    door = await open_door(make_gateway, provider)
    r = await door.call(headers)
    assert r.status_code == 200
    [head] = provider.heads
    assert name not in _names(head)


CALLER_CREDENTIALS = [
    # The caller's credentials for the gateway are never a third party's business.
    pytest.param("X_API_Key", id="underscore-variant-of-the-gateway-key-header"),
    pytest.param("Cookie", id="the-callers-cookies"),
    pytest.param("X-Workflow_Id", id="underscore-variant-of-the-context-header"),
]


@pytest.mark.parametrize("header", CALLER_CREDENTIALS)
async def test_the_callers_gateway_credentials_and_context_never_reach_the_provider(
    make_gateway: GatewayFactory, provider: RecordingUpstream, header: str
) -> None:
    door = await open_door(make_gateway, provider)
    r = await door.call([(header, "pcl_secret_of_the_caller")])
    assert r.status_code == 200
    [head] = provider.heads
    assert "pcl_secret_of_the_caller" not in [value for _, value in head.headers]
    assert head.header("authorization") == f"Bearer {TOKEN}"  # the route's credential, from the vault


EGRESS_LEGITIMATE = [
    *(case for case in LEGITIMATE if case.id != "cookie"),  # cookies are the caller's, for the gateway
    pytest.param("Idempotency-Key", "4f1c-9a", id="ietf-draft-idempotency-key"),
    pytest.param("Accept", "application/vnd.github+json", id="accept"),
]


@pytest.mark.parametrize(("header", "value"), EGRESS_LEGITIMATE)
async def test_ordinary_headers_still_reach_the_provider(
    make_gateway: GatewayFactory, provider: RecordingUpstream, header: str, value: str
) -> None:
    door = await open_door(make_gateway, provider)
    r = await door.call([(header, value)])
    assert r.status_code == 200
    [head] = provider.heads
    assert [v for k, v in head.headers if k == header.lower()] == [value]


REJECT = """
request:
  reject_headers: [x-http-method-override, x-original-url, x-envoy-*]
"""

REFUSED = [
    pytest.param("X-HTTP-Method-Override", "DELETE", "method_override", id="OWASP-WSTG-CONF-06-refused"),
    pytest.param("X_HTTP_Method_Override", "DELETE", "method_override", id="OWASP-WSTG-CONF-06-variant-refused"),
    pytest.param("X-Original-URL", "/admin", "url_override", id="CVE-2018-14773-refused"),
    pytest.param("X-Envoy-Internal", "true", "foreign_identity", id="envoy-header-sanitizing-prefix-refused"),
]


@pytest.mark.parametrize(("header", "value", "family"), REFUSED)
async def test_reject_headers_refuse_an_egress_call_with_a_problem_document_and_send_nothing(
    make_gateway: GatewayFactory, provider: RecordingUpstream, header: str, value: str, family: str
) -> None:
    door = await open_door(make_gateway, provider, REJECT)
    r = await door.call([(header, value)])
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json() == {"type": r.json()["type"], "title": "Malformed request.", "status": 400,
                        "code": "request.malformed", "request_id": r.headers["x-request-id"]}
    assert provider.heads == []
    [record] = [rec for rec in await door.gateway.audit_records() if rec["request_id"] == r.headers["x-request-id"]]
    assert (record["route"], record["decision"]) == ("egress", f"invalid_request:rejected_header:{family}")


async def test_a_global_keep_lifts_the_default_list_on_the_egress_door(
    make_gateway: GatewayFactory, provider: RecordingUpstream
) -> None:
    door = await open_door(make_gateway, provider, "request: {keep_headers: [x-http-method-override]}")
    r = await door.call([("X-HTTP-Method-Override", "PATCH"), ("X-Original-URL", "/admin")])
    assert r.status_code == 200
    [head] = provider.heads
    assert head.header("x-http-method-override") == "PATCH"
    assert "x-original-url" not in _names(head)


# --- the in-process transport --------------------------------------------------------------------

@dataclass
class InProcess:
    client: httpx.AsyncClient
    provider: RecordingUpstream


async def in_process(
    tmp_path: Path, provider: RecordingUpstream, rules: RequestHeaderRules | None = None
) -> AsyncIterator[InProcess]:
    config = EgressConfig.model_validate({"routes": [{
        "name": "llm", "url": f"http://llm.test:{provider.port}/v1", "allow_http": True,
        "allow_networks": ["127.0.0.0/8"], "methods": ["POST"],
        "headers": {"Authorization": "Bearer {secret:llm_key}"},
    }]})
    store = await SqliteStore.connect(str(tmp_path / "v.db"))
    vault = Vault(store, MasterKeys([MASTER.encode()]), ManualClock())
    await vault.set("llm_key", TOKEN)
    resolver = StaticResolver({"llm.test": [[ip_address("127.0.0.1")]]})
    executor = (EgressExecutor(config, vault=vault, resolver=resolver, clock=ManualClock()) if rules is None else
                EgressExecutor(config, vault=vault, resolver=resolver, clock=ManualClock(), header_rules=rules))
    transport = AsyncTransport(executor, config, CallContext("ex-1", "wf-1", "alice"))
    client = httpx.AsyncClient(transport=transport, base_url=f"http://llm.test:{provider.port}/v1")
    try:
        yield InProcess(client, provider)
    finally:
        await client.aclose()
        await store.aclose()


@pytest.fixture
async def sdk(tmp_path: Path, provider: RecordingUpstream) -> AsyncIterator[InProcess]:
    async for door in in_process(tmp_path, provider):
        yield door


@pytest.mark.parametrize(("header", "value"), DEFAULT_REMOVED)
async def test_the_in_process_transport_removes_the_default_list(
    sdk: InProcess, header: str, value: str
) -> None:
    r = await sdk.client.post("/chat/completions", content=b"{}", headers={header: value})
    assert r.status_code == 200
    [head] = sdk.provider.heads
    assert _folded(header) not in _names(head)
    assert (head.method, head.target) == ("POST", "/v1/chat/completions")


@pytest.mark.parametrize(("variant", "own"), GATEWAY_HEADER_VARIANTS)
async def test_the_in_process_transport_removes_the_gateways_own_headers(
    sdk: InProcess, variant: str, own: str
) -> None:
    r = await sdk.client.post("/chat/completions", content=b"{}", headers={variant: "forged"})
    assert r.status_code == 200
    [head] = sdk.provider.heads
    assert own not in _names(head)


async def test_the_in_process_transport_keeps_what_an_sdk_sends(sdk: InProcess) -> None:
    sent = {"Accept": "application/json", "X-Stainless-Lang": "python", "Idempotency-Key": "stainless-retry-1",
            "anthropic-version": "2023-06-01", "Content-Type": "application/json"}
    r = await sdk.client.post("/chat/completions", content=b"{}", headers=sent)
    assert r.status_code == 200
    [head] = sdk.provider.heads
    assert {k: head.header(k.lower()) for k in sent} == sent
    assert head.header("authorization") == f"Bearer {TOKEN}"


async def test_the_in_process_transport_refuses_a_configured_header_before_anything_is_spent(
    tmp_path: Path, provider: RecordingUpstream
) -> None:
    rules = RequestHeaderRules(RequestConfig(reject_headers=["x-http-method-override"]), RequestConfig())
    async for door in in_process(tmp_path, provider, rules):
        r = await door.client.post("/chat/completions", content=b"{}", headers={"X-HTTP-Method-Override": "GET"})
        assert r.status_code == 400
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "request.malformed"
        assert provider.heads == []


async def test_header_bytes_beyond_ascii_reach_the_provider_unchanged(
    make_gateway: GatewayFactory, provider: RecordingUpstream
) -> None:
    # UTF-8 text and a lone obs-text byte (RFC 9110 section 5.5): neither may be re-encoded on the
    # way, or the provider reads another value than the one the rules looked at.
    door = await open_door(make_gateway, provider)
    sent = b"caf\xc3\xa9 \xe9"
    r = await door.gateway.client.post("/egress/partner/v1/issues", content=b"{}", headers=[
        (b"X-API-Key", door.key.encode()), *((k.encode(), v.encode()) for k, v in CONTEXT), (b"X-Note", sent)])
    assert r.status_code == 200
    [head] = provider.heads
    assert head.header("x-note") == sent.decode("latin-1")  # the recorder reads bytes as latin-1
