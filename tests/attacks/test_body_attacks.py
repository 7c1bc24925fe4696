"""Attacks carried in request bodies, against a route that validates JSON (default limits).

Each case's id names its source. The legitimate traffic at the bottom must keep passing.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from portcullis.config.model import JsonBodyConfig, RequestConfig
from portcullis.errors import ErrorCode, PayloadTooLarge
from portcullis.http.context import RequestContext
from portcullis.pipeline.base import Reject
from portcullis.policies.stage5_validate.body import BodyPolicy

MAX_BODY = 2 * 1024 * 1024
ROUTE = RequestConfig(max_body_bytes=MAX_BODY, json_body=JsonBodyConfig())  # depth 32, 1000 keys
POLICY = BodyPolicy(ROUTE)


def make_ctx(body: bytes, content_type: bytes | None = b"application/json", *, chunked: bool = False) -> RequestContext:
    headers = [(b"host", b"api.example.com")]
    if content_type is not None:
        headers.append((b"content-type", content_type))
    headers.append((b"transfer-encoding", b"chunked") if chunked else (b"content-length", str(len(body)).encode()))
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)] or [b""]

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    return RequestContext(
        request_id="req-1", client_ip="203.0.113.7", method="POST", host="api.example.com", path="/users",
        query=b"", headers=headers, scheme="https", started=0.0, receive=receive,
        content_length=None if chunked else len(body), max_body_bytes=MAX_BODY,
    )


def nest(depth: int, open_: bytes, close: bytes, leaf: bytes = b"1") -> bytes:
    return open_ * depth + leaf + close * depth


JSON_ATTACKS = [
    # OWASP API4:2023 Unrestricted Resource Consumption: recursive parsers overflow, walkers burn CPU.
    pytest.param(nest(10_000, b"[", b"]"), "too_deep", id="OWASP-API4-10000-level-array-nesting"),
    pytest.param(nest(10_000, b'{"a":', b"}"), "too_deep", id="OWASP-API4-10000-level-object-nesting"),
    pytest.param(b"[" * 100_000, "too_deep", id="OWASP-API4-unterminated-100000-brackets"),
    pytest.param(nest(33, b'{"a":', b"}"), "too_deep", id="OWASP-API4-one-level-over-the-limit"),
    pytest.param(
        orjson.dumps({f"k{i}": i for i in range(100_000)}), "too_many_keys", id="OWASP-API4-100000-keys-one-object"
    ),
    pytest.param(
        orjson.dumps([{"a": i} for i in range(1001)]), "too_many_keys", id="OWASP-API4-keys-spread-over-objects"
    ),
    # Prototype pollution: merge/defaults helpers walk "__proto__" and "constructor.prototype".
    pytest.param(b'{"__proto__": {"isAdmin": true}}', "forbidden_key", id="CVE-2018-3721-lodash-merge-proto"),
    pytest.param(
        b'{"constructor": {"prototype": {"isAdmin": true}}}', "forbidden_key",
        id="CVE-2019-10744-lodash-defaultsDeep-constructor-prototype",
    ),
    pytest.param(
        nest(10, b'{"a":', b"}", b'{"__proto__": {"polluted": 1}}'), "forbidden_key",
        id="prototype-pollution-HackerOne-310443-proto-at-depth",
    ),
    pytest.param(
        b'[{"ok": 1}, {"items": [{"prototype": {"x": 1}}]}]', "forbidden_key", id="prototype-pollution-in-array"
    ),
    pytest.param(
        b'{"\\u005f\\u005fproto\\u005f\\u005f": {"isAdmin": true}}', "forbidden_key",
        id="prototype-pollution-unicode-escaped-key",
    ),
    # Parser differentials: one parser keeps the first duplicate, another the last.
    pytest.param(
        b'{"type": "user", "name": "oops", "roles": ["_admin"], "roles": [], "password": "pw"}',
        "duplicate_key", id="CVE-2017-12635-couchdb-duplicate-keys",
    ),
    pytest.param(
        b'{"roles": [], "\\u0072oles": ["_admin"]}', "duplicate_key", id="CVE-2017-12635-escaped-duplicate"
    ),
    pytest.param(
        b'{"user": {"id": 1, "role": "user", "role": "admin"}}', "duplicate_key", id="BishopFox-json-interop-nested-dup"
    ),
    pytest.param(b'{"a": 1}{"admin": true}', "invalid_json", id="BishopFox-json-interop-concatenated-documents"),
    pytest.param(b'{"admin": true, }', "invalid_json", id="BishopFox-json-interop-trailing-comma"),
    pytest.param(b'{"admin": true /* comment */}', "invalid_json", id="BishopFox-json-interop-comment"),
    # Encoding: RFC 8259 section 8.1 requires UTF-8; overlong forms and surrogates bypass filters.
    pytest.param(b'{"path": "\xc0\xaf\xc0\xafetc"}', "invalid_json", id="RFC8259-8.1-overlong-utf8"),
    pytest.param(b'{"name": "\xff\xfe"}', "invalid_json", id="RFC8259-8.1-invalid-utf8"),
    pytest.param(b'{"name": "\\udc00"}', "invalid_json", id="RFC8259-8.2-lone-surrogate"),
    pytest.param(b"\xef\xbb\xbf{}", "invalid_json", id="RFC8259-8.1-byte-order-mark"),
    # Numbers: huge digit strings are quadratic to convert (CVE-2020-10735); NaN is not JSON.
    pytest.param(b"[" + b"9" * 100_000 + b"]", "invalid_json", id="CVE-2020-10735-int-str-digits"),
    pytest.param(b'{"amount": 1e999999}', "invalid_json", id="RFC8259-6-number-overflow"),
    pytest.param(b'{"amount": NaN}', "invalid_json", id="RFC8259-6-nan"),
    pytest.param(b'{"amount": -Infinity}', "invalid_json", id="RFC8259-6-infinity"),
]


@pytest.mark.parametrize(("body", "reason"), JSON_ATTACKS)
async def test_json_body_attack_is_refused_with_400(body: bytes, reason: str) -> None:
    decision = await POLICY.on_request(make_ctx(body))
    assert isinstance(decision, Reject)
    assert (decision.code, decision.decision) == (ErrorCode.REQUEST_INVALID_BODY, f"invalid_request:{reason}")


CONTENT_TYPE_ATTACKS = [
    # A text/plain POST needs no CORS preflight, so a page can send JSON to a lenient backend (CSRF).
    pytest.param(b"text/plain", id="CSRF-text-plain-json-smuggling"),
    pytest.param(b"text/plain; charset=application/json", id="CSRF-text-plain-json-in-parameter"),
    pytest.param(b"application/x-www-form-urlencoded", id="CSRF-form-urlencoded-json"),
    pytest.param(b"multipart/form-data; boundary=x", id="CSRF-multipart-json"),
    pytest.param(None, id="missing-content-type-sniffed-by-backend"),
    pytest.param(b"application/json\x00text/plain", id="nul-in-content-type"),
    pytest.param(b"application/jsonx", id="json-prefix-lookalike"),
    pytest.param(b"application/x-json+xml", id="xml-suffix-lookalike"),
]


@pytest.mark.parametrize("content_type", CONTENT_TYPE_ATTACKS)
async def test_json_sent_under_another_media_type_is_refused_with_415(content_type: bytes | None) -> None:
    decision = await POLICY.on_request(make_ctx(b'{"email": "victim@example.com"}', content_type))
    assert isinstance(decision, Reject)
    assert decision.code == ErrorCode.REQUEST_UNSUPPORTED_MEDIA_TYPE
    assert decision.decision == "invalid_request:content_type"


async def test_an_endless_chunked_body_stops_at_the_limit() -> None:
    # OWASP-API4: a streamed body without Content-Length is counted, not trusted.
    ctx = make_ctx(b"[" + b"0," * MAX_BODY + b"0]", chunked=True)
    with pytest.raises(PayloadTooLarge):
        await POLICY.on_request(ctx)


LEGITIMATE = [
    pytest.param(orjson.dumps(list(range(100_000))), b"application/json", id="big-array-no-keys"),
    pytest.param(orjson.dumps([{"id": i} for i in range(1000)]), b"application/json", id="exactly-1000-keys"),
    pytest.param(nest(32, b'{"a":', b"}"), b"application/json", id="nested-exactly-at-the-limit"),
    pytest.param(
        '{"name": "Zoë Ørsted", "city": "東京", "note": "😀 \\ud83d\\ude00 \\u00e9"}'.encode(),
        b"application/json; charset=utf-8", id="unicode-and-escapes",
    ),
    pytest.param(
        b'{"data": {"type": "users", "attributes": {"proto": 1, "constructor_name": "x", "prototypes": []}}}',
        b"application/vnd.api+json", id="json-api-near-miss-keys",
    ),
    pytest.param(
        b'{"comment": "set __proto__ or constructor.prototype to pollute", "at": "12:00", "url": "https://x.io/a"}',
        b"Application/JSON", id="forbidden-words-as-values",
    ),
    pytest.param(
        b'{"id": 9223372036854775807, "big": 18446744073709551616, "ratio": 1e-300, "neg": -0.0}',
        b"application/json", id="edge-numbers",
    ),
    pytest.param(b'[{"role": "a"}, {"role": "b"}]', b"application/json", id="same-key-in-sibling-objects"),
    pytest.param(b'"just a string"', b"application/json", id="scalar-document"),
    pytest.param(b'{"op": "replace", "path": "/a"}', b"application/merge-patch+json", id="merge-patch"),
]


@pytest.mark.parametrize(("body", "content_type"), LEGITIMATE)
async def test_legitimate_json_bodies_pass(body: bytes, content_type: bytes) -> None:
    ctx = make_ctx(body, content_type)
    assert await POLICY.on_request(ctx) is None
    assert ctx.body == body


async def test_legitimate_chunked_json_body_passes() -> None:
    body = orjson.dumps({"items": [{"sku": f"s{i}", "qty": i} for i in range(400)]})
    assert await POLICY.on_request(make_ctx(body, chunked=True)) is None
