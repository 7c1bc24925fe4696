"""Mutual TLS on the API listener: client certificates verified by the handshake, mapped to consumers by
``auth.mtls`` rules, alone or combined with an API key, and reloaded without a restart.

Certificates come from a throwaway CA per test (``tests/mtls_certs.py``); clients are real: httpx
with a client certificate, and the ``openssl s_client`` CLI. Refusals are asserted as the client sees
them (status and problem code) and as the audit records them.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import httpx
import orjson
import pytest
from tests.conftest import GatewayFactory, UpstreamServer
from tests.mtls_certs import ClientCert, Pki, mtls_yaml

pytestmark = pytest.mark.timeout(30)

ROUTES = """
routes:
  - name: billing
    path: /billing
    upstream: api
    forward_identity: true
    auth:
      mtls:
        rules:
          - {san_dns: billing.internal, consumer: billing, scopes: [invoices.read]}
          - {spiffe_id: "spiffe://prod.example/ns/pay/sa/api", consumer: payments}
  - name: either
    path: /either
    upstream: api
    auth: {api_key: {}, mtls: {rules: [{san_dns: billing.internal, consumer: billing}]}}
  - name: both
    path: /both
    upstream: api
    auth: {api_key: {}, mtls: {rules: [{san_dns: billing.internal, consumer: billing}]}, require: all}
"""


@pytest.fixture
async def pki(tmp_path: Path) -> Pki:
    return await asyncio.to_thread(Pki, tmp_path)


async def issue(pki: Pki, stem: str, **kwargs: object) -> ClientCert:
    return await asyncio.to_thread(lambda: pki.issue(stem, **kwargs))  # type: ignore[arg-type]


async def client(pki: Pki, port: int, cert: ClientCert | None = None) -> httpx.AsyncClient:
    context = await asyncio.to_thread(pki.client_context, cert)
    return httpx.AsyncClient(base_url=f"https://127.0.0.1:{port}", verify=context, timeout=10)


async def get(pki: Pki, port: int, path: str, cert: ClientCert | None = None,
              headers: dict[str, str] | None = None) -> httpx.Response:
    async with await client(pki, port, cert) as c:
        return await c.get(path, headers=headers)


async def test_a_certificate_mapped_by_its_dns_san_reaches_the_upstream_as_its_consumer(
    make_gateway: GatewayFactory, upstream: UpstreamServer, pki: Pki
) -> None:
    gw = await make_gateway(mtls_yaml(upstream.url, pki, ROUTES), http_server="portcullis")
    cert = await issue(pki, "billing", dns=("billing.internal",))
    r = await get(pki, gw.port, "/billing", cert)
    assert r.status_code == 200
    seen = upstream.seen[-1]
    assert (seen.header("x-consumer-id"), seen.header("x-credential-method")) == ("billing", "mtls")
    assert seen.header("x-consumer-scopes") == "invoices.read"
    [record] = [rec for rec in await gw.audit_records() if rec["route"] == "billing"]
    assert (record["consumer_id"], record["key_id"]) == ("billing", f"sha256:{cert.sha256}")
    assert record["event"] == {"client_cert": {"sha256": cert.sha256, "subject": "CN=client", "source": "tls"}}


async def test_a_spiffe_id_maps_to_its_consumer(
    make_gateway: GatewayFactory, upstream: UpstreamServer, pki: Pki
) -> None:
    gw = await make_gateway(mtls_yaml(upstream.url, pki, ROUTES), http_server="portcullis")
    cert = await issue(pki, "svid", cn=None, uris=("spiffe://prod.example/ns/pay/sa/api",))
    r = await get(pki, gw.port, "/billing", cert)
    assert r.status_code == 200
    assert upstream.seen[-1].header("x-consumer-id") == "payments"


async def test_without_a_certificate_a_certificate_route_answers_401_missing_credentials(
    make_gateway: GatewayFactory, upstream: UpstreamServer, pki: Pki
) -> None:
    gw = await make_gateway(mtls_yaml(upstream.url, pki, ROUTES), http_server="portcullis")
    r = await get(pki, gw.port, "/billing")
    assert r.status_code == 401
    assert r.json()["code"] == "auth.missing_credentials"
    assert upstream.seen == []


async def test_every_request_on_one_kept_alive_connection_is_authenticated_by_its_certificate(
    make_gateway: GatewayFactory, upstream: UpstreamServer, pki: Pki
) -> None:
    gw = await make_gateway(mtls_yaml(upstream.url, pki, ROUTES), http_server="portcullis")
    cert = await issue(pki, "billing", dns=("billing.internal",))
    async with await client(pki, gw.port, cert) as c:
        statuses = [(await c.get("/billing")).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    assert [rec["key_id"] for rec in await gw.audit_records()] == [f"sha256:{cert.sha256}"] * 3


async def test_any_one_method_a_key_or_a_certificate_is_enough_but_both_at_once_are_refused(
    make_gateway: GatewayFactory, upstream: UpstreamServer, pki: Pki
) -> None:
    gw = await make_gateway(mtls_yaml(upstream.url, pki, ROUTES), http_server="portcullis")
    key = await gw.key("billing")
    cert = await issue(pki, "billing", dns=("billing.internal",))
    assert (await get(pki, gw.port, "/either", headers={"x-api-key": key})).status_code == 200
    assert (await get(pki, gw.port, "/either", cert)).status_code == 200
    both = await get(pki, gw.port, "/either", cert, headers={"x-api-key": key})
    assert (both.status_code, both.json()["code"]) == (401, "auth.invalid_credentials")
    decisions = [rec["decision"] for rec in await gw.audit_records() if rec["route"] == "either"]
    assert decisions == ["allowed", "allowed", "auth_failed:ambiguous_credentials"]


async def test_require_all_needs_the_key_and_a_certificate_of_the_same_consumer(
    make_gateway: GatewayFactory, upstream: UpstreamServer, pki: Pki
) -> None:
    gw = await make_gateway(mtls_yaml(upstream.url, pki, ROUTES), http_server="portcullis")
    own_key, other_key = await gw.key("billing", scopes=("a",)), await gw.key("mallory")
    cert = await issue(pki, "billing", dns=("billing.internal",))
    assert (await get(pki, gw.port, "/both", headers={"x-api-key": own_key})).status_code == 401
    assert (await get(pki, gw.port, "/both", cert)).status_code == 401
    assert (await get(pki, gw.port, "/both", cert, headers={"x-api-key": other_key})).status_code == 401
    assert (await get(pki, gw.port, "/both", cert, headers={"x-api-key": own_key})).status_code == 200
    records = [rec for rec in await gw.audit_records() if rec["route"] == "both"]
    assert [rec["decision"] for rec in records] == [
        "auth_failed:missing_client_cert", "auth_failed:missing_credentials",
        "auth_failed:client_cert_consumer_mismatch", "allowed"]
    assert records[-1]["event"]["client_cert"]["sha256"] == cert.sha256
    assert upstream.seen[-1].header("x-api-key") is None  # the key is still not forwarded


async def test_client_auth_required_refuses_a_handshake_without_a_certificate(
    make_gateway: GatewayFactory, upstream: UpstreamServer, pki: Pki
) -> None:
    yaml_text = mtls_yaml(upstream.url, pki, ROUTES, tls={"client_auth": "required"})
    gw = await make_gateway(yaml_text, http_server="portcullis")
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        await get(pki, gw.port, "/billing")
    cert = await issue(pki, "billing", dns=("billing.internal",))
    assert (await get(pki, gw.port, "/billing", cert)).status_code == 200
    assert len(upstream.seen) == 1


async def test_the_request_reaches_the_app_with_the_asgi_tls_extension(tmp_path: Path, pki: Pki) -> None:
    from portcullis.server.limits import ServerLimits
    from portcullis.server.listener import Listener
    from portcullis.server.tls import TlsSettings, server_context

    seen: list[dict[str, object]] = []

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        seen.append(scope["extensions"]["tls"])  # type: ignore[index]
        await send({"type": "http.response.start", "status": 204, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b""})  # type: ignore[operator]

    settings = TlsSettings(str(pki.server.cert), str(pki.server.key), client_ca_file=str(pki.ca_file))
    context = await asyncio.to_thread(server_context, settings)
    listener = Listener(app, limits=ServerLimits(), ssl=context)
    await listener.start()
    try:
        cert = await issue(pki, "billing", dns=("billing.internal",))
        assert (await get(pki, listener.port, "/", cert)).status_code == 204
        assert (await get(pki, listener.port, "/")).status_code == 204
    finally:
        await listener.stop()
    with_cert, without = seen
    assert with_cert["client_cert_chain"] == [ssl.DER_cert_to_PEM_cert(cert.der)]
    assert with_cert["tls_version"] in (0x0303, 0x0304)
    assert without["client_cert_chain"] == []


async def test_openssl_s_client_with_a_client_certificate_is_served(
    make_gateway: GatewayFactory, upstream: UpstreamServer, pki: Pki
) -> None:
    gw = await make_gateway(mtls_yaml(upstream.url, pki, ROUTES), http_server="portcullis")
    cert = await issue(pki, "billing", dns=("billing.internal",))
    out = await s_client(gw.port, "-cert", str(cert.cert), "-key", str(cert.key), "-CAfile", str(pki.server_ca_file),
                         send=b"GET /billing HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert b"HTTP/1.1 200 " in out
    assert orjson.loads(out.rsplit(b"\r\n\r\n", 1)[1])["path"] == "/billing"


async def s_client(port: int, *args: str, send: bytes = b"") -> bytes:
    """Run ``openssl s_client`` against the gateway; what it printed (stdout and stderr)."""
    proc = await asyncio.create_subprocess_exec(
        "openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-quiet", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(15):
        out, _ = await proc.communicate(send)
    return out
