"""Unit table for http/target.py: what is accepted (and its canonical form) and what is refused."""

from __future__ import annotations

import pytest

from portcullis.errors import ErrorCode, MalformedRequest
from portcullis.http.target import CanonicalTarget, canonicalize_path, canonicalize_target

ACCEPTED = [
    # (raw path, canonical path)
    pytest.param(b"/", "/", id="root"),
    pytest.param(b"/orders/42", "/orders/42", id="plain"),
    pytest.param(b"/static/app.min.js", "/static/app.min.js", id="dots-inside-a-segment"),
    pytest.param(b"/.well-known/jwks.json", "/.well-known/jwks.json", id="leading-dot-segment-name"),
    pytest.param(b"/a/...", "/a/...", id="three-dots-is-a-name"),
    pytest.param(b"/Orders/ABC", "/Orders/ABC", id="case-preserved"),
    pytest.param(b"/a/", "/a/", id="trailing-slash-kept"),
    pytest.param(b"/a//b", "/a/b", id="duplicate-slashes-merged"),
    pytest.param(b"//a///b//", "/a/b/", id="many-duplicate-slashes"),
    pytest.param(b"/a/./b", "/a/b", id="single-dot-removed"),
    pytest.param(b"/a/b/../c", "/a/c", id="dot-dot-removed"),
    pytest.param(b"/a/b/..", "/a/", id="final-dot-dot-leaves-trailing-slash"),  # RFC 3986 5.2.4
    pytest.param(b"/a/.", "/a/", id="final-dot-leaves-trailing-slash"),
    pytest.param(b"/a/..", "/", id="dot-dot-back-to-root"),
    pytest.param(b"/a//../b", "/b", id="slashes-merged-before-dot-segments"),
    pytest.param(b"/a/%2e%2e/b", "/b", id="encoded-dot-dot-is-dot-dot"),
    pytest.param(b"/a/.%2E/b", "/b", id="half-encoded-dot-dot"),
    pytest.param(b"/file%2ejson", "/file.json", id="encoded-dot-in-name-decoded"),
    pytest.param(b"/%7euser", "/~user", id="unreserved-tilde-decoded"),
    pytest.param(b"/%41%62%2D%5f", "/Ab-_", id="unreserved-letters-decoded"),
    pytest.param(b"/a%20b", "/a%20b", id="space-escape-kept"),
    pytest.param(b"/a%3fb%23c", "/a%3Fb%23c", id="reserved-escapes-kept-uppercased"),
    pytest.param(b"/100%25", "/100%25", id="escaped-percent-kept"),
    pytest.param(b"/%e2%82%ac", "/%E2%82%AC", id="utf8-euro-kept-uppercased"),
    pytest.param(b"/caf%C3%A9", "/caf%C3%A9", id="utf8-two-byte"),
    pytest.param(b"/%F0%9F%98%80", "/%F0%9F%98%80", id="utf8-four-byte"),
    pytest.param(b"/a{b}|c", "/a%7Bb%7D%7Cc", id="non-pchar-ascii-encoded"),
    pytest.param(b"/a:b@c!$&'()*+,=", "/a:b@c!$&'()*+,=", id="sub-delims-raw"),
]

REFUSED = [
    # (raw path, reason)
    pytest.param(b"", "empty_path", id="empty"),
    pytest.param(b"a/b", "not_origin_form", id="relative"),
    pytest.param(b"/..", "above_root", id="dot-dot-at-root"),
    pytest.param(b"/a/../..", "above_root", id="dot-dot-past-root"),
    pytest.param(b"/%2e%2e/etc/passwd", "above_root", id="encoded-dot-dot-past-root"),
    pytest.param(b"/a%2fb", "encoded_slash", id="encoded-slash-lower"),
    pytest.param(b"/a%2Fb", "encoded_slash", id="encoded-slash-upper"),
    pytest.param(b"/a%5cb", "encoded_backslash", id="encoded-backslash"),
    pytest.param(b"/a\\b", "backslash", id="raw-backslash"),
    pytest.param(b"/a;b", "path_param", id="semicolon"),
    pytest.param(b"/a%3Bb", "path_param", id="encoded-semicolon"),
    pytest.param(b"/a\x00", "control_char", id="raw-nul"),
    pytest.param(b"/a%00", "control_char", id="encoded-nul"),
    pytest.param(b"/a%0a", "control_char", id="encoded-lf"),
    pytest.param(b"/a%0D", "control_char", id="encoded-cr"),
    pytest.param(b"/a%09", "control_char", id="encoded-tab"),
    pytest.param(b"/a%7f", "control_char", id="encoded-del"),
    pytest.param(b"/a%C2%85", "control_char", id="encoded-c1-next-line"),
    pytest.param(b"/a\tb", "control_char", id="raw-tab"),
    pytest.param(b"/a b", "whitespace", id="raw-space"),
    pytest.param(b"/caf\xc3\xa9", "non_ascii", id="raw-utf8"),
    pytest.param(b"/a#b", "fragment", id="fragment"),
    pytest.param(b"/a?b", "invalid_char", id="question-mark-in-bare-path"),
    pytest.param(b"/a%", "invalid_percent", id="lone-percent"),
    pytest.param(b"/a%4", "invalid_percent", id="truncated-escape"),
    pytest.param(b"/a%G1", "invalid_percent", id="non-hex-escape"),
    pytest.param(b"/a%+1", "invalid_percent", id="signed-escape"),
    pytest.param(b"/%C0%AF", "invalid_utf8", id="overlong-slash"),
    pytest.param(b"/%E0%80%AF", "invalid_utf8", id="overlong-three-byte"),
    pytest.param(b"/%ED%A0%80", "invalid_utf8", id="surrogate"),
    pytest.param(b"/%E2%82", "invalid_utf8", id="truncated-sequence"),
    pytest.param(b"/%80", "invalid_utf8", id="lone-continuation"),
    pytest.param(b"/%252e", "double_encoding", id="double-encoded-dot"),
    pytest.param(b"/%25%32%66", "double_encoding", id="double-encoded-slash-via-unreserved"),
]


@pytest.mark.parametrize(("raw", "canonical"), ACCEPTED)
def test_accepted_path_has_this_canonical_form(raw: bytes, canonical: str) -> None:
    assert canonicalize_path(raw) == canonical


@pytest.mark.parametrize(("raw", "reason"), REFUSED)
def test_refused_path_names_its_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(MalformedRequest) as caught:
        canonicalize_path(raw)
    assert caught.value.reason == reason
    assert caught.value.code is ErrorCode.REQUEST_TARGET_INVALID


TARGETS = [
    # (target, Host header, result)
    pytest.param(b"/a?x=1", None, CanonicalTarget("/a", b"x=1"), id="origin-form"),
    pytest.param(b"/a/./b?q=%zz;..//", "h", CanonicalTarget("/a/b", b"q=%zz;..//"), id="query-untouched"),
    pytest.param(b"/a?", "h", CanonicalTarget("/a", b""), id="empty-query"),
    pytest.param(b"/a?x=?y", "h", CanonicalTarget("/a", b"x=?y"), id="question-mark-in-query"),
    pytest.param(b"http://api.test/a?x", "api.test", CanonicalTarget("/a", b"x"), id="absolute-form"),
    pytest.param(b"HTTP://API.test/a", "api.TEST", CanonicalTarget("/a", b""), id="absolute-form-case"),
    pytest.param(b"http://api.test:80/a", "api.test", CanonicalTarget("/a", b""), id="default-port-in-target"),
    pytest.param(b"https://api.test/a", "api.test:443", CanonicalTarget("/a", b""), id="default-port-in-host"),
    pytest.param(b"http://api.test:8080/a", "api.test:8080", CanonicalTarget("/a", b""), id="same-port"),
    pytest.param(b"http://[::1]:8080/a", "[::1]:8080", CanonicalTarget("/a", b""), id="ipv6-authority"),
    pytest.param(b"http://api.test", "api.test", CanonicalTarget("/", b""), id="absolute-form-empty-path"),
    pytest.param(b"http://api.test?x", "api.test", CanonicalTarget("/", b"x"), id="absolute-form-query-only"),
]


@pytest.mark.parametrize(("target", "host", "expected"), TARGETS)
def test_accepted_target_splits_into_canonical_path_and_raw_query(
    target: bytes, host: str | None, expected: CanonicalTarget
) -> None:
    assert canonicalize_target(target, host=host) == expected


REFUSED_TARGETS = [
    pytest.param(b"", "h", "empty_path", id="empty"),
    pytest.param(b"*", "h", "not_origin_form", id="asterisk-form"),
    pytest.param(b"api.test:443", "api.test", "not_origin_form", id="authority-form"),
    pytest.param(b"ftp://api.test/a", "api.test", "not_origin_form", id="other-scheme"),
    pytest.param(b"http://other.test/a", "api.test", "host_mismatch", id="other-host"),
    pytest.param(b"http://api.test:8080/a", "api.test", "host_mismatch", id="other-port"),
    pytest.param(b"https://api.test/a", "api.test:80", "host_mismatch", id="scheme-default-port-differs"),
    pytest.param(b"http://api.test/a", None, "host_mismatch", id="no-host-header"),
    pytest.param(b"http://user:pw@api.test/a", "api.test", "userinfo", id="userinfo"),
    pytest.param(b"http://api.test:x/a", "api.test", "invalid_authority", id="bad-port"),
    pytest.param(b"http:///a", "api.test", "invalid_authority", id="empty-authority"),
    pytest.param(b"/a#frag", "h", "fragment", id="fragment-in-path"),
    pytest.param(b"/a?x#frag", "h", "fragment", id="fragment-in-query"),
    pytest.param(b"/a?x y", "h", "whitespace", id="space-in-query"),
    pytest.param(b"/a?x\r\nEvil: 1", "h", "control_char", id="crlf-in-query"),
    pytest.param(b"/a?x=\xff", "h", "non_ascii", id="raw-non-ascii-in-query"),
    pytest.param(b"/a%2fb?x", "h", "encoded_slash", id="path-rules-apply"),
]


@pytest.mark.parametrize(("target", "host", "reason"), REFUSED_TARGETS)
def test_refused_target_names_its_reason(target: bytes, host: str | None, reason: str) -> None:
    with pytest.raises(MalformedRequest) as caught:
        canonicalize_target(target, host=host)
    assert caught.value.reason == reason
    assert caught.value.code is ErrorCode.REQUEST_TARGET_INVALID
