"""Request header cases shared by the attack tests of both doors (ingress routes and egress calls).

Why one table: the gateway applies one set of header rules (``http/header_rules.py``) whichever
door a request uses, so the cases that prove it are written once and run against each door
(``test_header_hygiene.py`` for ingress, ``test_egress_header_hygiene.py`` for egress). Each id
names its source; the sources per family are listed in ``test_header_hygiene.py``.
"""

from __future__ import annotations

import pytest

GATEWAY_HEADER_VARIANTS = [
    pytest.param("X_Consumer_Id", "x-consumer-id", id="GHSA-vjrc-mh2v-45x6-underscore-consumer-id"),
    pytest.param("x_consumer_id", "x-consumer-id", id="RFC3875-4.1.18-cgi-lowercase-underscore"),
    pytest.param("X-CONSUMER_ID", "x-consumer-id", id="traefik-header-underscores-mixed"),
    pytest.param("X_Consumer_Scopes", "x-consumer-scopes", id="GHSA-vjrc-mh2v-45x6-underscore-scopes"),
    pytest.param("X_Key_Id", "x-key-id", id="nginx-underscores_in_headers-key-id"),
    pytest.param("X_Forwarded_For", "x-forwarded-for", id="GHSA-vjrc-mh2v-45x6-underscore-xff"),
    pytest.param("X_Forwarded_Proto", "x-forwarded-proto", id="envoy-headers_with_underscores-proto"),
    pytest.param("X_Request_Id", "x-request-id", id="gunicorn-underscore-request-id"),
]


DEFAULT_REMOVED = [
    # URL override: the backend would route to /admin while the gateway routed /orders/1
    pytest.param("X-Original-URL", "/admin", id="CVE-2018-14773-x-original-url"),
    pytest.param("X-Rewrite-URL", "/admin", id="CVE-2018-14773-x-rewrite-url"),
    pytest.param("X_Original_URL", "/admin", id="CVE-2018-14773-underscore-variant"),
    pytest.param("X-Forwarded-Uri", "/admin", id="GHSA-7x63-xv5r-3p2x-x-forwarded-uri"),
    pytest.param("X-Envoy-Original-Path", "/admin", id="portswigger-request-url-override-envoy"),
    # method override: a GET allowed for orders:read would become a DELETE
    pytest.param("X-HTTP-Method-Override", "DELETE", id="OWASP-WSTG-CONF-06-x-http-method-override"),
    pytest.param("X-HTTP-Method", "DELETE", id="OWASP-WSTG-CONF-06-x-http-method"),
    pytest.param("X-Method-Override", "DELETE", id="fortify-method-override-x-method-override"),
    pytest.param("X_HTTP_Method_Override", "DELETE", id="OWASP-WSTG-CONF-06-underscore-variant"),
    # forwarding hints the gateway does not set
    pytest.param("X-Forwarded-Prefix", "/evil", id="portswigger-cache-poisoning-x-forwarded-prefix"),
    pytest.param("X-Forwarded-Port", "8443", id="portswigger-cracking-the-lens-x-forwarded-port"),
    pytest.param("X-Original-Host", "evil.example", id="portswigger-cracking-the-lens-x-original-host"),
    pytest.param("X-Host", "evil.example", id="portswigger-cracking-the-lens-x-host"),
    pytest.param("X-Forwarded-Server", "evil.example", id="portswigger-cache-poisoning-x-forwarded-server"),
    pytest.param("X-Forwarded-Scheme", "http", id="portswigger-cache-poisoning-x-forwarded-scheme"),
    pytest.param("Forwarded", "host=evil.example;proto=https", id="RFC7239-forwarded"),
    # identity other gateways assert to their backends
    pytest.param("X-Consumer-Username", "admin", id="kong-x-consumer-username"),
    pytest.param("X-Consumer-Custom-ID", "admin", id="kong-x-consumer-custom-id"),
    pytest.param("X-Consumer-Groups", "admins", id="kong-x-consumer-groups"),
    pytest.param("X-Credential-Identifier", "admin", id="kong-x-credential-identifier"),
    pytest.param("X-Anonymous-Consumer", "false", id="kong-x-anonymous-consumer"),
    pytest.param("X-Userinfo", "eyJzdWIiOiJhZG1pbiJ9", id="kong-oidc-x-userinfo"),
    pytest.param("x-envoy-internal", "true", id="envoy-header-sanitizing-x-envoy-internal"),
    pytest.param("X-Envoy-Retry-On", "5xx", id="envoy-header-sanitizing-x-envoy-retry-on"),
    pytest.param("X-Forwarded-Client-Cert", "Hash=1;Subject=\"CN=admin\"", id="istio-xfcc"),
    pytest.param("X-Auth-Request-User", "admin", id="oauth2-proxy-x-auth-request-user"),
    pytest.param("X-Auth-Request-Email", "admin@example.com", id="oauth2-proxy-x-auth-request-email"),
    pytest.param("X-Forwarded-User", "admin", id="oauth2-proxy-x-forwarded-user"),
    pytest.param("X-Forwarded-Email", "admin@example.com", id="oauth2-proxy-x-forwarded-email"),
    pytest.param("X-Forwarded-Groups", "admins", id="oauth2-proxy-x-forwarded-groups"),
    pytest.param("X-Forwarded-Access-Token", "t", id="oauth2-proxy-x-forwarded-access-token"),
    pytest.param("X_Forwarded_Email", "admin@example.com", id="GHSA-vjrc-mh2v-45x6-x-forwarded-email"),
    pytest.param("X-Remote-User", "admin", id="cgi-remote-user-x-remote-user"),
    pytest.param("Remote-User", "admin", id="cgi-remote-user"),
    pytest.param("X-User", "admin", id="generic-x-user"),
    pytest.param("X-WEBAUTH-USER", "admin", id="grafana-auth-proxy-x-webauth-user"),
    pytest.param("X-MS-CLIENT-PRINCIPAL-NAME", "admin", id="azure-easyauth-x-ms-client-principal-name"),
]


LEGITIMATE = [
    pytest.param("X-Custom-Trace", "t-123", id="custom-trace-header"),
    pytest.param("X_Custom_Trace", "t-123", id="underscore-name-that-shadows-nothing"),
    pytest.param("Accept-Encoding", "gzip, br", id="accept-encoding"),
    pytest.param("Accept-Language", "de-CH", id="accept-language"),
    pytest.param("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", id="w3c-traceparent"),
    pytest.param("X-Correlation-Id", "c-9", id="correlation-id"),
    pytest.param("X-Consumerish", "yes", id="name-near-a-removed-prefix"),
    pytest.param("Cookie", "session=abc", id="cookie"),
]
