"""Attacks on mutual TLS: certificates that must not get in, names that look alike, a forged mesh header,
downgrades and renegotiation; each next to the legitimate traffic that must pass.

A certificate the TLS stack refuses (another CA, outside its dates, wrong purpose, revoked) never
becomes a request: the handshake fails, so nothing reaches the upstream and nothing is audited as a
request. A certificate that verifies but whose names do not match a rule exactly is a 401.

Sources: RFC 5280 (validation, EKU section 4.2.1.12, CRLs section 6.3), RFC 6125 section 6.4 (name
matching: SAN over CN, case-insensitive DNS), RFC 4343 (DNS case), RFC 8996 (TLS 1.0/1.1
deprecated), RFC 5746 and CVE-2009-3555 (renegotiation), UTS #39 (IDN homographs), the X.509-SVID
spec (one URI SAN), Envoy's x-forwarded-client-cert docs.
"""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path

import httpx
import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID
from tests.conftest import GatewayFactory, UpstreamServer, gateway_yaml
from tests.integration.test_mtls_flow import get, issue, s_client
from tests.mtls_certs import NOW, Pki, mtls_yaml

pytestmark = pytest.mark.timeout(30)

ROUTES = """
routes:
  - name: billing
    path: /billing
    upstream: api
    auth:
      mtls:
        rules:
          - {san_dns: billing.internal, consumer: billing}
          - {subject_cn: legacy-client, consumer: legacy}
          - {spiffe_trust_domain: prod.example}
"""
HANDSHAKE_REFUSED = (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)


@pytest.fixture
async def pki(tmp_path: Path) -> Pki:
    return await asyncio.to_thread(Pki, tmp_path)


async def start(make_gateway: GatewayFactory, upstream: UpstreamServer, pki: Pki, **tls: str):  # type: ignore[no-untyped-def]
    return await make_gateway(mtls_yaml(upstream.url, pki, ROUTES, tls=tls), http_server="portcullis")


@pytest.mark.parametrize("case", [
    "RFC5280-6.1-issued-by-another-ca",
    "RFC5280-4.1.2.5-expired",
    "RFC5280-4.1.2.5-not-yet-valid",
    "RFC5280-4.2.1.12-server-auth-only-eku",
])
async def test_a_certificate_the_tls_stack_cannot_verify_never_becomes_a_request(
    make_gateway: GatewayFactory, upstream: UpstreamServer, pki: Pki, case: str
) -> None:
    gw = await start(make_gateway, upstream, pki)
    kwargs: dict[str, object] = {"dns": ("billing.internal",)}
    if case.endswith("another-ca"):
        kwargs["issuer"] = pki.other_ca
    elif case.endswith("expired"):
        kwargs.update(not_before=NOW - datetime.timedelta(days=3), not_after=NOW - datetime.timedelta(days=1))
    elif case.endswith("not-yet-valid"):
        kwargs.update(not_before=NOW + datetime.timedelta(days=1), not_after=NOW + datetime.timedelta(days=3))
    else:
        kwargs["eku"] = (ExtendedKeyUsageOID.SERVER_AUTH,)
    cert = await issue(pki, "bad", **kwargs)
    with pytest.raises(HANDSHAKE_REFUSED):
        await get(pki, gw.port, "/billing", cert)
    good = await issue(pki, "good", dns=("billing.internal",))
    assert (await get(pki, gw.port, "/billing", good)).status_code == 200  # the legitimate client
    assert len(upstream.seen) == 1
    assert [rec["status"] for rec in await gw.audit_records()] == [200]


async def test_a_certificate_without_any_extended_key_usage_maps_to_no_one(
    make_gateway: GatewayFactory, upstream: UpstreamServer, pki: Pki
) -> None:
    # OpenSSL accepts a leaf without EKU (any purpose, RFC 5280 section 4.2.1.12); the gateway wants
    # the certificate to say it is for client authentication.
    gw = await start(make_gateway, upstream, pki)
    cert = await issue(pki, "no-eku", dns=("billing.internal",), eku=None)
    r = await get(pki, gw.port, "/billing", cert)
    assert (r.status_code, r.json()["code"]) == (401, "auth.invalid_credentials")
    [record] = await gw.audit_records()
    assert record["decision"] == "auth_failed:client_cert_not_for_client_auth"


@pytest.mark.parametrize(("dns", "allowed"), [
    pytest.param("billing.internal", True, id="exact"),
    pytest.param("BILLING.Internal", True, id="RFC4343-case-is-not-identity"),
    pytest.param("billing.internal.", False, id="RFC6125-6.4.1-trailing-dot"),
    pytest.param("*.internal", False, id="RFC6125-6.4.3-wildcard-san"),
    pytest.param("xn--blling-3ya.internal", False, id="UTS39-idn-homograph-punycode"),
    pytest.param("billing.internal.evil.example", False, id="suffix-extension"),
    pytest.param("evilbilling.internal", False, id="prefix-extension"),
])
async def test_dns_san_matching_is_exact_up_to_ascii_case(
    make_gateway: GatewayFactory, upstream: UpstreamServer, pki: Pki, dns: str, allowed: bool
) -> None:
    gw = await start(make_gateway, upstream, pki)
    cert = await issue(pki, "c", dns=(dns,))
    r = await get(pki, gw.port, "/billing", cert)
    assert r.status_code == (200 if allowed else 401)


async def test_a_cn_that_matches_is_ignored_when_the_certificate_has_sans(
    make_gateway: GatewayFactory, upstream: UpstreamServer, pki: Pki
) -> None:
    # RFC 6125 section 6.4.4: the CN is a fallback for certificates without SANs only.
    gw = await start(make_gateway, upstream, pki)
    confusing = await issue(pki, "cn-and-san", cn="legacy-client", dns=("other.internal",))
    assert (await get(pki, gw.port, "/billing", confusing)).status_code == 401
    legacy = await issue(pki, "cn-only", cn="legacy-client")
    assert (await get(pki, gw.port, "/billing", legacy)).status_code == 200


@pytest.mark.parametrize(("uris", "allowed"), [
    pytest.param(("spiffe://prod.example/ns/a/sa/b",), True, id="svid"),
    pytest.param(("spiffe://prod.example.evil/ns/a",), False, id="trust-domain-suffix"),
    pytest.param(("spiffe://evil.example/ns/a", "spiffe://prod.example/ns/a"), False, id="SVID-2-two-uri-sans"),
    pytest.param(("https://prod.example/ns/a",), False, id="not-spiffe"),
])
async def test_spiffe_ids_need_one_uri_san_in_the_trust_domain(
    make_gateway: GatewayFactory, upstream: UpstreamServer, pki: Pki, uris: tuple[str, ...], allowed: bool
) -> None:
    gw = await start(make_gateway, upstream, pki)
    cert = await issue(pki, "svid", cn=None, uris=uris)
    assert (await get(pki, gw.port, "/billing", cert)).status_code == (200 if allowed else 401)


async def test_a_revoked_certificate_is_refused_when_a_crl_is_configured(
    make_gateway: GatewayFactory, upstream: UpstreamServer, pki: Pki
) -> None:
    revoked = await issue(pki, "revoked", dns=("billing.internal",))
    good = await issue(pki, "good", dns=("billing.internal",))
    crl = await asyncio.to_thread(pki.crl, (revoked.serial,))
    gw = await start(make_gateway, upstream, pki, client_crl_file=f'"{crl}"')
    with pytest.raises(HANDSHAKE_REFUSED):
        await get(pki, gw.port, "/billing", revoked)
    assert (await get(pki, gw.port, "/billing", good)).status_code == 200
    assert len(upstream.seen) == 1


@pytest.mark.parametrize("version", ["-tls1", "-tls1_1"], ids=["RFC8996-tls1.0", "RFC8996-tls1.1"])
async def test_a_client_offering_only_tls_1_0_or_1_1_is_refused(
    make_gateway: GatewayFactory, upstream: UpstreamServer, pki: Pki, version: str
) -> None:
    gw = await start(make_gateway, upstream, pki)
    # SECLEVEL=0 lets the client offer the old versions at all; the server must be the one refusing.
    out = await s_client(gw.port, version, "-cipher", "DEFAULT:@SECLEVEL=0",
                         send=b"GET /billing HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"HTTP/1.1" not in out  # no request got through: the handshake was refused
    assert b"error" in out
    legit = await s_client(gw.port, "-tls1_2", send=b"GET /billing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b"HTTP/1.1 401 " in legit


async def test_client_initiated_renegotiation_is_refused(
    make_gateway: GatewayFactory, upstream: UpstreamServer, pki: Pki
) -> None:
    gw = await start(make_gateway, upstream, pki)
    proc = await asyncio.create_subprocess_exec(
        "openssl", "s_client", "-connect", f"127.0.0.1:{gw.port}", "-tls1_2", "-CAfile", str(pki.server_ca_file),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdin is not None
    proc.stdin.write(b"R\n")  # s_client: "R" at the start of a line renegotiates
    async with asyncio.timeout(15):
        out, _ = await proc.communicate()
    assert b"RENEGOTIATING" in out
    assert b"no renegotiation" in out or b"renegotiation" in out.split(b"RENEGOTIATING", 1)[1]
    assert b"HTTP/1.1" not in out


# --- X-Forwarded-Client-Cert from a mesh ---------------------------------------------------------

XFCC_ROUTES = """
xfcc: {trusted_peers: [TRUSTED], max_bytes: 512}
routes:
  - name: mesh
    path: /mesh
    upstream: api
    auth: {mtls: {accept_xfcc: true, rules: [{spiffe_id: "spiffe://prod.example/ns/pay/sa/api", consumer: payments}]}}
"""
HASH = "a" * 64
GOOD = f'By=spiffe://prod.example/gw;Hash={HASH};Subject="CN=api,O=Pay\\, Inc.";URI=spiffe://prod.example/ns/pay/sa/api'
OTHER = f"By=spiffe://prod.example/gw;Hash={'b' * 64};URI=spiffe://prod.example/ns/evil/sa/x"


async def mesh_gateway(make_gateway: GatewayFactory, upstream: UpstreamServer, trusted: str):  # type: ignore[no-untyped-def]
    text = gateway_yaml(upstream.url, XFCC_ROUTES.replace("TRUSTED", trusted))
    return await make_gateway(text, http_server="portcullis")


@pytest.mark.parametrize(("value", "allowed"), [
    pytest.param(GOOD, True, id="one-element"),
    pytest.param(f"{OTHER},{GOOD}", True, id="last-hop-element-counts"),
    pytest.param(f"{GOOD},{OTHER}", False, id="forged-first-element-ignored"),
    pytest.param(GOOD.replace(f"Hash={HASH}", "Hash=zz"), False, id="malformed-hash"),
    pytest.param(GOOD.replace('O=Pay\\, Inc."', "O=Pay"), False, id="unterminated-quote"),
    pytest.param(GOOD + ";URI", False, id="dangling-key"),
    pytest.param(GOOD + ";Cookie=x", False, id="unknown-key"),
    pytest.param(GOOD + f";Hash={HASH}", False, id="repeated-hash"),
    pytest.param(GOOD + ";URI=spiffe://prod.example/ns/other", False, id="two-uris-not-an-svid"),
    pytest.param('Subject="x;URI=spiffe://prod.example/ns/pay/sa/api";Hash=' + HASH, False,
                 id="uri-smuggled-inside-quotes"),
    pytest.param(GOOD + ";By=" + "x" * 600, False, id="oversized"),
])
async def test_xfcc_from_a_trusted_peer_is_parsed_strictly_and_the_last_element_counts(
    make_gateway: GatewayFactory, upstream: UpstreamServer, value: str, allowed: bool
) -> None:
    gw = await mesh_gateway(make_gateway, upstream, "127.0.0.1/32")
    r = await gw.client.get("/mesh", headers={"x-forwarded-client-cert": value})
    assert r.status_code == (200 if allowed else 401)
    if allowed:
        assert upstream.seen[-1].header("x-forwarded-client-cert") is None  # consumed, not forwarded
        [record] = await gw.audit_records()
        assert record["event"]["client_cert"]["source"] == "xfcc"


async def test_xfcc_from_an_untrusted_peer_authenticates_nothing_and_is_not_forwarded(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await mesh_gateway(make_gateway, upstream, "10.9.9.9/32")
    r = await gw.client.get("/mesh", headers={"x-forwarded-client-cert": GOOD})
    assert (r.status_code, r.json()["code"]) == (401, "auth.missing_credentials")
    assert upstream.seen == []


async def test_xfcc_sent_twice_is_refused(make_gateway: GatewayFactory, upstream: UpstreamServer) -> None:
    gw = await mesh_gateway(make_gateway, upstream, "127.0.0.1/32")
    r = await gw.client.get("/mesh", headers=[("x-forwarded-client-cert", GOOD), ("x-forwarded-client-cert", GOOD)])
    assert r.status_code == 401
