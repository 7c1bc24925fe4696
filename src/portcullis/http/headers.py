"""Header facts for a proxy: which headers never cross the gateway, and helpers over raw ASGI pairs.

Why raw pairs: ASGI gives headers as a list of ``(name, value)`` bytes with lowercase names and
duplicates kept. Collapsing them into a dict would hide request-smuggling and spoofing tricks
(two ``Host`` headers, two ``Content-Length`` headers), so this module never does.

Why names are folded before they are compared: many backends do not tell ``X-Consumer-Id`` from
``x_consumer_id``. CGI (RFC 3875 section 4.1.18) and WSGI expose headers as ``HTTP_X_CONSUMER_ID``,
so Django, Flask, PHP and Rails read ``_`` as ``-``; Symfony's HeaderBag folds the same way. A
proxy that strips only the exact name lets a client's underscore variant reach the backend beside
or instead of the proxy's own value (oauth2-proxy GHSA-vjrc-mh2v-45x6 / CVE-2025-64484; Traefik's
"Headers with Underscores" page; nginx drops such names by default, ``underscores_in_headers off``;
Envoy offers ``headers_with_underscores_action``). ``fold_name`` is that reading: ASCII lowercase
and ``_`` as ``-``, one ``bytes.translate`` over a precomputed table.

What it does not decide: which of these headers a route removes or refuses (``http/header_rules.py``
compiles that per route from the config, for ingress routes and egress calls alike). This module
only holds the facts and the default list.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = [
    "FOLD_TABLE",
    "FRAMING_HEADERS",
    "GATEWAY_SET_HEADERS",
    "HOP_BY_HOP",
    "REMOVED_BY_DEFAULT",
    "RawHeaders",
    "connection_tokens",
    "fold_name",
    "get_all",
    "get_one",
    "header_family",
    "pattern_covers",
]

RawHeaders = list[tuple[bytes, bytes]]

# RFC 9110 section 7.6.1 plus the de-facto ones (Keep-Alive, Proxy-Connection) every proxy strips.
HOP_BY_HOP: frozenset[bytes] = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
    b"upgrade", b"proxy-authenticate", b"proxy-authorization", b"http2-settings",
})

# Headers the gateway itself sets for the backend. Any client-sent copy is removed first, so a
# client can never impersonate a consumer or forge its address (OWASP API2/API8).
GATEWAY_SET_HEADERS: frozenset[bytes] = frozenset({
    b"x-consumer-id", b"x-consumer-scopes", b"x-consumer-roles", b"x-key-id", b"x-credential-method",
    b"x-request-id", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-port",
    b"x-real-ip", b"forwarded", b"true-client-ip", b"x-client-ip", b"x-original-forwarded-for",
    b"x-authenticated-userid", b"x-authenticated-scope",
    # W3C Trace Context: the gateway sets these from the request's validated context or its own
    # span (observability/tracing.py), so a client's malformed value never crosses.
    b"traceparent", b"tracestate",
})

# Headers whose framing role the gateway handles itself (RFC 9112 sections 3.2, 6.1, 6.3): the
# config may neither remove, refuse nor keep them.
FRAMING_HEADERS: frozenset[bytes] = frozenset({b"host", b"content-length", b"transfer-encoding"})

# Client request headers removed on every route unless a route keeps one (``keep_headers``), by
# family. Names are folded (lowercase, ``-``); a trailing ``*`` is a prefix. The family names appear
# in audit reasons (``rejected_header:<family>``) and in ``portcullis explain``.
REMOVED_BY_DEFAULT: dict[str, tuple[str, ...]] = {
    # Headers that make a backend route to another path than the one the gateway routed and
    # authorized: Symfony's CVE-2018-14773 (X-Original-URL / X-Rewrite-URL, support removed), IIS
    # URL Rewrite, PortSwigger's "Request URL override" issue and "Practical Web Cache Poisoning"
    # (Kettle, 2018), oauth2-proxy GHSA-7x63-xv5r-3p2x (a spoofed X-Forwarded-Uri skipped auth).
    "url_override": (
        "x-original-url", "x-rewrite-url", "x-override-url", "x-original-uri", "x-forwarded-uri",
        "x-forwarded-path", "x-request-uri", "x-request-url", "x-envoy-original-path", "x-envoy-original-url",
    ),
    # Method tunnelling: a POST allowed for scope `read` becomes a DELETE at the backend
    # (OWASP WSTG-CONF-06 "Test HTTP Methods"; Fortify "Often Misused: HTTP Method Override").
    "method_override": ("x-http-method-override", "x-http-method", "x-method-override"),
    # Forwarding hints the gateway does not set itself. Backends build absolute URLs, redirects,
    # reset links and "is this HTTPS" decisions from them (PortSwigger "Cracking the lens", Kettle
    # 2017, and the Host header attack labs; RFC 7239 `Forwarded` is among GATEWAY_SET_HEADERS).
    # The gateway's own X-Forwarded-For / -Proto / -Host replace the client's copies.
    "forwarding": (
        "x-forwarded-prefix", "x-forwarded-server", "x-forwarded-scheme", "x-forwarded-ssl", "x-forwarded-by",
        "x-forwarded-protocol", "front-end-https", "x-url-scheme", "x-original-host", "x-host",
        "x-http-host-override", "x-original-forwarded-host", "x-cluster-client-ip", "x-originating-ip",
        "x-remote-ip", "x-remote-addr", "client-ip", "x-proxyuser-ip",
    ),
    # Identity that other gateways and auth proxies assert to their backends. A backend that once
    # sat behind one of them may still believe these: Kong (X-Consumer-*, X-Credential-Identifier,
    # X-Anonymous-Consumer; the OIDC plugin's X-Userinfo), Envoy (x-envoy-*, stripped from external
    # requests in its "HTTP header sanitizing" docs; Istio's x-forwarded-client-cert), oauth2-proxy
    # (X-Auth-Request-*, X-Forwarded-User/-Email/-Groups/-Access-Token), Grafana's auth proxy
    # (X-WEBAUTH-USER), Azure App Service (X-MS-CLIENT-PRINCIPAL*), Google IAP, AWS ALB OIDC, and
    # the generic Remote-User family (CGI REMOTE_USER).
    "foreign_identity": (
        "x-consumer-*", "x-credential-identifier", "x-credential-username", "x-anonymous-consumer",
        "x-anonymous-groups", "x-authenticated-groups", "x-userinfo", "x-id-token", "x-access-token",
        "x-envoy-*", "x-forwarded-client-cert",
        "x-auth-request-*", "x-forwarded-user", "x-forwarded-email", "x-forwarded-groups",
        "x-forwarded-preferred-username", "x-forwarded-access-token",
        "x-remote-user", "remote-user", "x-user", "x-user-id", "x-auth-user", "x-authenticated-user",
        "x-webauth-user", "x-ms-client-principal*", "x-goog-authenticated-user-*", "x-amzn-oidc-*",
        # WSO2 API Manager and meshes that pass the authenticated identity on as a signed JWT.
        "x-jwt-assertion",
    ),
}

# ASCII lowercase, and "_" read as "-": how CGI/WSGI backends read a header name.
FOLD_TABLE = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ_", b"abcdefghijklmnopqrstuvwxyz-")


def fold_name(name: bytes) -> bytes:
    """The name as a CGI/WSGI backend reads it: ``X_Consumer_ID`` → ``x-consumer-id``."""
    return name.translate(FOLD_TABLE)


def header_family(folded: str) -> str:
    """The family a folded name belongs to, for audit reasons and ``explain``: a key of
    ``REMOVED_BY_DEFAULT``, ``gateway_set``, ``hop_by_hop``, or ``configured`` for any other name."""
    raw = folded.encode("latin-1")
    if raw in GATEWAY_SET_HEADERS:
        return "gateway_set"
    if raw in HOP_BY_HOP:
        return "hop_by_hop"
    for family, names in REMOVED_BY_DEFAULT.items():
        if any(pattern_covers(pattern, folded) for pattern in names):
            return family
    return "configured"


def pattern_covers(pattern: str, other: str) -> bool:
    """Whether every name ``other`` matches is matched by ``pattern`` (both folded; a final ``*``
    is a prefix). For a plain name ``other`` this is simply "``pattern`` matches it"."""
    if not pattern.endswith("*"):
        return pattern == other
    return other.startswith(pattern[:-1])


def get_all(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    """Every value of ``name`` (lowercase), in order."""
    return [v for k, v in headers if k == name]


def get_one(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of ``name``, or None."""
    for k, v in headers:
        if k == name:
            return v
    return None


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Header names listed in ``Connection`` (RFC 9110 section 7.6.1): they are hop-by-hop too."""
    tokens: set[bytes] = set()
    for k, v in headers:
        if k == b"connection":
            tokens.update(t.strip().lower() for t in v.split(b",") if t.strip())
    return frozenset(tokens)
