"""``listen.tls`` / ``admin.tls`` policy, ``auth.mtls`` rules and ``xfcc``: weaker or incoherent settings are
refused at load (``portcullis check`` says so), with the path named."""

from __future__ import annotations

import pytest

from portcullis.config.loader import load_config_text
from portcullis.errors import ConfigError

UP = 'upstreams: {api: {url: "http://127.0.0.1:9000"}}\n'
ROUTE = "routes: [{name: r, path: /r, upstream: api, auth: none}]\n"
MTLS_ROUTE = "routes: [{name: r, path: /r, upstream: api, auth: {mtls: {rules: [%s]}}}]\n"
TLS = 'cert_file: c.pem, key_file: k.pem'


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, env={})
    return str(info.value)


@pytest.mark.parametrize(("tls", "expected"), [
    pytest.param("min_version: 1.1", "TLS 1.0 and 1.1 are refused", id="RFC8996-tls1.1"),
    pytest.param('min_version: "1.0"', "TLS 1.0 and 1.1 are refused", id="RFC8996-tls1.0"),
    pytest.param('ciphers: "AES128-SHA"', "suites without AEAD or ECDHE are refused", id="cbc-rsa-kx"),
    pytest.param('ciphers: "ECDHE+AESGCM:AES256-GCM-SHA384"', "AES256-GCM-SHA384", id="no-forward-secrecy"),
    pytest.param('ciphers: "NOTACIPHER"', "no cipher matches", id="nothing"),
    pytest.param('client_crl_file: crl.pem', "client_crl_file needs client_ca_file", id="crl-alone"),
])
def test_weak_or_incoherent_tls_settings_are_refused(tls: str, expected: str) -> None:
    message = error_of(f"listen: {{tls: {{{TLS}, {tls}}}}}\n" + UP + ROUTE)
    assert "listen.tls" in message
    assert expected in message


def test_the_admin_listener_takes_the_same_policy() -> None:
    assert "TLS 1.0 and 1.1" in error_of(f"admin: {{tls: {{{TLS}, min_version: 1.1}}}}\n" + UP + ROUTE)


def test_tls_defaults_are_tls_1_2_with_aead_ecdhe_suites() -> None:
    config = load_config_text(f"listen: {{tls: {{{TLS}}}}}\n" + UP + ROUTE, env={})
    assert config.listen.tls is not None
    assert (config.listen.tls.min_version, config.listen.tls.ciphers) == ("1.2", "ECDHE+AESGCM:ECDHE+CHACHA20")


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param(UP + MTLS_ROUTE % "{san_dns: a.internal}", "set `listen.tls.client_ca_file`", id="no-client-ca"),
    pytest.param(f"listen: {{server: uvicorn, tls: {{{TLS}, client_ca_file: ca.pem}}}}\n" + UP + ROUTE,
                 "need `listen.server: portcullis`", id="uvicorn-cannot-hand-over-the-cert"),
    pytest.param(UP + "routes: [{name: r, path: /r, upstream: api, auth: {mtls: {accept_xfcc: true, "
                 "rules: [{san_dns: a.internal}]}}}]\n", "xfcc.trusted_peers", id="xfcc-without-trusted-peers"),
    pytest.param(UP + MTLS_ROUTE % "{san_dns: a.internal, san_uri: 'x:y'}", "exactly one of", id="two-matchers"),
    pytest.param(UP + MTLS_ROUTE % ("{fingerprints_sha256: ['" + "a" * 64 + "']}"), "needs `consumer`",
                 id="fingerprint-without-consumer"),
    pytest.param(UP + MTLS_ROUTE % "{san_dns: 'billing.internal.'}", "trailing dot", id="dns-trailing-dot"),
    pytest.param(UP + MTLS_ROUTE % "{san_dns: '*.internal'}", "wildcard", id="dns-wildcard"),
    pytest.param(UP + MTLS_ROUTE % "{san_dns: 'b\u0456lling.internal'}", "ASCII", id="dns-unicode"),
    pytest.param(UP + MTLS_ROUTE % "{spiffe_id: 'spiffe://Prod/x'}", "spiffe://", id="spiffe-uppercase-domain"),
    pytest.param('upstreams: {api: {url: "https://u", client_cert_file: c.pem}}\n' + ROUTE,
                 "go together", id="upstream-cert-without-key"),
    pytest.param('upstreams: {api: {url: "http://u", client_cert_file: c.pem, client_key_file: k.pem}}\n' + ROUTE,
                 "needs an https:// upstream", id="upstream-cert-over-http"),
    pytest.param(UP + "keys: {pepper: '" + "p" * 40 + "'}\nroutes: [{name: r, path: /r, upstream: api, "
                 "auth: {api_key: {}, require: all}}]\n", "`require: all` combines `mtls`", id="all-without-mtls"),
])
def test_incoherent_mtls_settings_are_refused(text: str, expected: str) -> None:
    assert expected in error_of(text)
