"""The RFC 9421 and RFC 9530 test vectors, copied from the RFC text, through ``portcullis.signing``.

RFC 9421 Appendix B.2.1 defines the test request; B.1.4 the Ed25519 test key and B.1.5 the shared
secret; B.2.5 (hmac-sha256) and B.2.6 (ed25519) the expected signature bases and signatures. The
Content-Digest of the test request's body is RFC 9530's (and RFC 9421 B.2's) sha-512 example.
"""

from __future__ import annotations

import base64
import dataclasses

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from portcullis.errors import Unauthenticated
from portcullis.signing import SigningSecret, VerificationKey, check_content_digest, content_digest
from portcullis.signing.message import RequestFacts, parse_signature, signature_base

# RFC 9421 B.2: POST /foo?param=Value&Pet=dog HTTP/1.1, Host: example.com
TEST_REQUEST = RequestFacts(
    method="POST", scheme="https", authority="example.com", path="/foo", query="param=Value&Pet=dog",
    headers=[
        (b"host", b"example.com"),
        (b"date", b"Tue, 20 Apr 2021 02:07:55 GMT"),
        (b"content-type", b"application/json"),
        (b"content-digest", b"sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWX"
                            b"vJwew==:"),
        (b"content-length", b"18"),
    ],
)
TEST_BODY = b'{"hello": "world"}'

# RFC 9421 B.1.5
SHARED_SECRET = base64.b64decode(
    "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ==")
# RFC 9421 B.1.4
ED25519_PUBLIC = b"""-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=
-----END PUBLIC KEY-----
"""
ED25519_PRIVATE = b"""-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF
-----END PRIVATE KEY-----
"""

B25_INPUT = b'sig-b25=("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret"'
B25_SIGNATURE = b"sig-b25=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:"
B25_BASE = (
    '"date": Tue, 20 Apr 2021 02:07:55 GMT\n'
    '"@authority": example.com\n'
    '"content-type": application/json\n'
    '"@signature-params": ("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret"'
)
B26_INPUT = (b'sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473'
             b';keyid="test-key-ed25519"')
B26_SIGNATURE = (b"sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:")
B26_BASE = (
    '"date": Tue, 20 Apr 2021 02:07:55 GMT\n'
    '"@method": POST\n'
    '"@path": /foo\n'
    '"@authority": example.com\n'
    '"content-type": application/json\n'
    '"content-length": 18\n'
    '"@signature-params": ("date" "@method" "@path" "@authority" "content-type" "content-length")'
    ';created=1618884473;keyid="test-key-ed25519"'
)


def _public() -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(ED25519_PUBLIC)
    assert isinstance(key, Ed25519PublicKey)
    return key


def test_rfc9421_b25_hmac_sha256_base_and_signature() -> None:
    parsed = parse_signature([B25_INPUT], [B25_SIGNATURE])
    base = signature_base(TEST_REQUEST, parsed.components, parsed.inner_list)
    assert base.decode() == B25_BASE
    assert VerificationKey("hmac-sha256", hmac_secret=SHARED_SECRET).verify(base, parsed.signature)
    assert SigningSecret("hmac-sha256", hmac_secret=SHARED_SECRET).sign(base) == parsed.signature


def test_rfc9421_b26_ed25519_base_and_signature() -> None:
    parsed = parse_signature([B26_INPUT], [B26_SIGNATURE])
    base = signature_base(TEST_REQUEST, parsed.components, parsed.inner_list)
    assert base.decode() == B26_BASE
    assert VerificationKey("ed25519", public_key=_public()).verify(base, parsed.signature)
    private = serialization.load_pem_private_key(ED25519_PRIVATE, password=None)
    assert isinstance(private, Ed25519PrivateKey)
    # Ed25519 is deterministic (RFC 8032 section 5.1.6): the same key and base give the RFC's bytes
    assert SigningSecret("ed25519", private_key=private).sign(base) == parsed.signature


def test_rfc9421_vectors_fail_when_one_covered_value_changes() -> None:
    parsed = parse_signature([B26_INPUT], [B26_SIGNATURE])
    moved = dataclasses.replace(TEST_REQUEST, path="/bar")
    base = signature_base(moved, parsed.components, parsed.inner_list)
    assert not VerificationKey("ed25519", public_key=_public()).verify(base, parsed.signature)


def test_rfc9530_content_digest_of_the_test_request_body() -> None:
    assert content_digest(TEST_BODY, "sha-512") == TEST_REQUEST.header_values("content-digest")[0].decode()
    assert content_digest(TEST_BODY) == "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
    check_content_digest(TEST_REQUEST.header_values("content-digest"), TEST_BODY)


@pytest.mark.parametrize(("field", "reason"), [
    (b"sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:, sha-512=:AAAA:", "digest_mismatch"),
    (b"md5=:AAAA:", "digest_unsupported"),
    (b"sha-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE", "malformed_digest"),
    (b"sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:, sha-256=:AAAA:", "malformed_digest"),
], ids=["RFC9530-every-known-digest-must-match", "RFC9530-only-unknown-algorithms", "not-a-byte-sequence",
        "RFC8941-duplicate-member"])
def test_a_content_digest_that_does_not_vouch_for_the_body_is_refused(field: bytes, reason: str) -> None:
    with pytest.raises(Unauthenticated) as caught:
        check_content_digest([field], TEST_BODY)
    assert caught.value.reason == reason


@pytest.mark.parametrize(("scheme", "host", "authority"), [
    ("https", "Example.COM:443", "example.com"),
    ("http", "example.com:80", "example.com"),
    ("https", "example.com:8443", "example.com:8443"),
    ("https", "[::1]:443", "[::1]"),
    ("http", "[::1]:8080", "[::1]:8080"),
])
def test_the_authority_is_lowercase_without_the_default_port(scheme: str, host: str, authority: str) -> None:
    # RFC 9421 section 2.2.3
    assert RequestFacts.normal_authority(scheme, host) == authority
