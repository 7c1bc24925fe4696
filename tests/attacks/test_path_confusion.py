"""Path-confusion attacks against the canonicalizer, and the legitimate targets that must still pass.

Function level: ``canonicalize_target`` as the gateway calls it, then the router on the canonical
path. Each id names its source where there is one (an advisory, a talk) or says what the trick is.
"""

from __future__ import annotations

import pytest

from portcullis.config.model import RouteConfig
from portcullis.errors import ErrorCode, MalformedRequest
from portcullis.http.target import canonicalize_target
from portcullis.ingress.router import RouteMatch, Router

HOST = "api.example.com"

ATTACKS = [
    # CVE-2021-41773: Apache 2.4.49 decoded ".%2e" only after its traversal check.
    pytest.param(b"/cgi-bin/.%2e/.%2e/.%2e/.%2e/etc/passwd", "above_root", id="CVE-2021-41773-apache-dot-dot-encoded"),
    pytest.param(b"/icons/%2e%2e/%2e%2e/etc/passwd", "above_root", id="encoded-dot-dot-both-dots"),
    pytest.param(b"/%2E%2E/%2E%2E/etc/passwd", "above_root", id="encoded-dot-dot-uppercase"),
    # CVE-2021-42013: the 2.4.50 fix bypassed with "%%32%65" (a '%' then an encoded '2e').
    pytest.param(b"/cgi-bin/%%32%65%%32%65/etc/passwd", "invalid_percent", id="CVE-2021-42013-apache-percent-percent"),
    # CVE-2001-0333 (MS01-026): IIS decoded twice; "%255c" became "\".
    pytest.param(b"/scripts/..%255c../winnt/system32/cmd.exe", "double_encoding", id="CVE-2001-0333-iis-double-decode"),
    pytest.param(b"/static/%252e%252e/%252e%252e/etc/passwd", "double_encoding", id="double-encoded-dot"),
    pytest.param(b"/a/%25%32%65%25%32%65/", "double_encoding", id="double-encoded-dot-via-unreserved"),
    # CVE-2000-0884 (MS00-078): IIS accepted the overlong "%c0%af" as "/".
    pytest.param(b"/scripts/..%c0%af../winnt/system32/cmd.exe", "invalid_utf8", id="CVE-2000-0884-iis-overlong-slash"),
    pytest.param(b"/static/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd", "invalid_utf8", id="overlong-utf8-dot"),
    pytest.param(b"/static/%e0%80%ae%e0%80%ae/secret", "invalid_utf8", id="overlong-utf8-three-byte-dot"),
    pytest.param(b"/static/..\\..\\windows\\win.ini", "backslash", id="windows-backslash-separator"),
    pytest.param(b"/static/..%5c..%5cwindows/win.ini", "encoded_backslash", id="encoded-backslash-separator"),
    # Orange Tsai, "Breaking Parser Logic" (Black Hat USA 2018): Tomcat drops ";..." path parameters.
    pytest.param(b"/public/..;/admin/users", "path_param", id="tomcat-..;-path-param"),
    pytest.param(b"/admin;jsessionid=x/users", "path_param", id="matrix-param-prefix-bypass"),
    pytest.param(b"/public/..%3b/admin", "path_param", id="encoded-semicolon"),
    pytest.param(b"/admin%2fusers", "encoded_slash", id="encoded-slash-prefix-bypass"),
    pytest.param(b"/public%2f..%2fadmin", "encoded_slash", id="encoded-slash-traversal"),
    pytest.param(b"/admin%00.png", "control_char", id="CWE-158-nul-byte"),
    pytest.param(b"/a%0d%0aSet-Cookie:%20x=1", "control_char", id="CWE-113-crlf-in-path"),
    pytest.param(b"/a\r\nX: y", "control_char", id="raw-crlf-in-path"),
    pytest.param(b"/a%09/admin", "control_char", id="encoded-tab"),
    # CVE-2013-4547: nginx mis-parsed an unescaped space before "/../".
    pytest.param(b"/static/x /../admin", "whitespace", id="CVE-2013-4547-nginx-unescaped-space"),
    pytest.param(b"/admin\xc0\xaf", "non_ascii", id="raw-non-ascii-bytes"),
    pytest.param(b"/public#/../admin", "fragment", id="fragment-in-target"),
    pytest.param(b"/../../etc/passwd", "above_root", id="plain-traversal-above-root"),
    # RFC 9112 section 3.2.2: the absolute-form authority overrides Host on many servers.
    pytest.param(b"http://internal.example.com/admin", "host_mismatch", id="rfc9112-absolute-form-host-mismatch"),
    pytest.param(b"http://api.example.com@internal/admin", "userinfo", id="absolute-form-userinfo"),
    pytest.param(b"internal.example.com:443", "not_origin_form", id="authority-form"),
    pytest.param(b"*", "not_origin_form", id="asterisk-form"),
]


@pytest.mark.parametrize(("target", "reason"), ATTACKS)
def test_path_confusion_attack_is_refused(target: bytes, reason: str) -> None:
    with pytest.raises(MalformedRequest) as caught:
        canonicalize_target(target, host=HOST)
    assert caught.value.code is ErrorCode.REQUEST_TARGET_INVALID
    assert caught.value.reason == reason


ROUTER = Router(
    [
        RouteConfig(name="public", path="/public/{rest:path}", upstream="app", auth="none"),
        RouteConfig(name="admin", path="/admin/{rest:path}", upstream="app"),
    ]
)

NORMALIZED = [
    # CVE-2019-9901: Envoy routed "/public/../admin" un-normalised while the backend normalised it.
    pytest.param(b"/public/../admin/users", "/admin/users", id="envoy-CVE-2019-9901-normalize"),
    pytest.param(b"/public/%2e%2e/admin/users", "/admin/users", id="encoded-traversal-inside-root"),
    pytest.param(b"/public/./..//admin/users", "/admin/users", id="mixed-dots-and-slashes"),
    pytest.param(b"//admin/users", "/admin/users", id="leading-double-slash"),
    pytest.param(b"/%61dmin/users", "/admin/users", id="encoded-unreserved-letter"),
]


@pytest.mark.parametrize(("target", "canonical"), NORMALIZED)
def test_traversal_that_stays_inside_root_is_routed_as_the_backend_sees_it(target: bytes, canonical: str) -> None:
    path = canonicalize_target(target, host=HOST).path
    assert path == canonical
    match = ROUTER.match(HOST, "GET", path)
    assert isinstance(match, RouteMatch)
    assert match.route.name == "admin"


LEGITIMATE = [
    pytest.param(b"/prices/%E2%82%AC", "/prices/%E2%82%AC", b"", id="unicode-euro"),
    pytest.param(b"/caf%c3%a9/men%C3%BC", "/caf%C3%A9/men%C3%BC", b"", id="unicode-lowercase-hex"),
    pytest.param(b"/files/my%20report.pdf", "/files/my%20report.pdf", b"", id="encoded-space"),
    pytest.param(b"/%7Ealice/home", "/~alice/home", b"", id="unreserved-tilde-decoded"),
    pytest.param(b"/orders/", "/orders/", b"", id="trailing-slash"),
    pytest.param(b"/a/b/c/d/e/f/g/h/i/j", "/a/b/c/d/e/f/g/h/i/j", b"", id="deep-path"),
    pytest.param(b"/v1/search?q=a%2Fb;c&x=..%2f&y=%00", "/v1/search", b"q=a%2Fb;c&x=..%2f&y=%00",
                 id="query-with-odd-chars-untouched"),
    pytest.param(b"/assets/app.v2.min.js", "/assets/app.v2.min.js", b"", id="dots-in-file-name"),
    pytest.param(b"/.well-known/openid-configuration", "/.well-known/openid-configuration", b"",
                 id="well-known"),
    pytest.param(b"/tags/c%2B%2B", "/tags/c%2B%2B", b"", id="encoded-plus-kept"),
    pytest.param(b"/discount/100%25", "/discount/100%25", b"", id="encoded-percent-alone"),
    pytest.param(b"http://api.example.com/orders?id=1", "/orders", b"id=1", id="absolute-form-same-host"),
]


@pytest.mark.parametrize(("target", "path", "query"), LEGITIMATE)
def test_legitimate_target_passes(target: bytes, path: str, query: bytes) -> None:
    canonical = canonicalize_target(target, host=HOST)
    assert (canonical.path, canonical.query) == (path, query)
