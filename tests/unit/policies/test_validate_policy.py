"""BodyPolicy: the media type a body must declare, and the JSON limits it must respect."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from portcullis.config.model import JsonBodyConfig, RequestConfig
from portcullis.errors import ConfigError, ErrorCode, PayloadTooLarge
from portcullis.http.context import RequestContext
from portcullis.pipeline.base import Reject, Stage
from portcullis.policies.stage5_validate.body import BodyPolicy

JSON_ONLY = RequestConfig(json_body=JsonBodyConfig())


def make_ctx(
    body: bytes = b"",
    *,
    method: str = "POST",
    content_type: bytes | None = b"application/json",
    headers: Sequence[tuple[bytes, bytes]] = (),
    chunked: bool = False,
    max_body_bytes: int | None = None,
    chunk_size: int | None = None,
) -> RequestContext:
    raw: list[tuple[bytes, bytes]] = [(b"host", b"api.example.com")]
    if content_type is not None:
        raw.append((b"content-type", content_type))
    content_length: int | None = None
    if chunked:
        raw.append((b"transfer-encoding", b"chunked"))
    elif body or method in ("POST", "PUT", "PATCH"):
        content_length = len(body)
        raw.append((b"content-length", str(content_length).encode()))
    raw.extend(headers)
    size = chunk_size or max(len(body), 1)
    chunks = [body[i : i + size] for i in range(0, len(body), size)] or [b""]

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    return RequestContext(
        request_id="req-1", client_ip="203.0.113.7", method=method, host="api.example.com", path="/orders",
        query=b"", headers=raw, scheme="https", started=0.0, receive=receive,
        content_length=content_length, max_body_bytes=max_body_bytes,
    )


def rejected(decision: object, code: ErrorCode, reason: str) -> bool:
    return isinstance(decision, Reject) and decision.code == code and decision.decision == reason


def test_body_policy_runs_in_the_validate_stage() -> None:
    policy = BodyPolicy(JSON_ONLY)
    assert (policy.name, policy.stage) == ("validate.body", Stage.VALIDATE)


async def test_valid_json_body_passes_and_is_kept_for_forwarding() -> None:
    ctx = make_ctx(b'{"item": "book", "qty": 2}')
    assert await BodyPolicy(JSON_ONLY).on_request(ctx) is None
    assert ctx.body == b'{"item": "book", "qty": 2}'


@pytest.mark.parametrize(
    "content_type",
    [
        b"application/json",
        b"application/json; charset=utf-8",
        b"Application/JSON",
        b"application/json ;charset=UTF-8",
        b"application/problem+json",
        b"application/vnd.api+json; ext=bulk",
        b"application/merge-patch+json",
    ],
)
async def test_json_media_types_are_accepted_ignoring_case_and_parameters(content_type: bytes) -> None:
    assert await BodyPolicy(JSON_ONLY).on_request(make_ctx(b"{}", content_type=content_type)) is None


@pytest.mark.parametrize(
    ("content_type", "headers"),
    [
        (None, ()),
        (b"", ()),
        (b"text/plain", ()),
        (b"text/plain; application/json", ()),
        (b"application/x-www-form-urlencoded", ()),
        (b"multipart/form-data; boundary=x", ()),
        (b"application/jsonp", ()),
        (b"application/json, text/plain", ()),
        (b"application/+json", ()),
        (b"text/vnd.x+json", ()),
        (b"application/json", ((b"content-type", b"text/plain"),)),
    ],
    ids=[
        "missing", "empty", "text-plain", "text-plain-with-fake-param", "form", "multipart",
        "json-prefix", "list-of-types", "bare-suffix", "json-suffix-wrong-type", "two-content-types",
    ],
)
async def test_a_body_with_a_missing_or_other_media_type_gets_415(
    content_type: bytes | None, headers: tuple[tuple[bytes, bytes], ...]
) -> None:
    decision = await BodyPolicy(JSON_ONLY).on_request(make_ctx(b"{}", content_type=content_type, headers=headers))
    assert rejected(decision, ErrorCode.REQUEST_UNSUPPORTED_MEDIA_TYPE, "invalid_request:content_type")


async def test_media_type_is_checked_before_the_body_is_read() -> None:
    ctx = make_ctx(b"{}", content_type=b"text/plain")
    await BodyPolicy(JSON_ONLY).on_request(ctx)
    assert ctx.body is None


@pytest.mark.parametrize(
    ("method", "body"), [("GET", b""), ("DELETE", b""), ("POST", b""), ("HEAD", b"")]
)
async def test_requests_without_a_body_need_no_content_type(method: str, body: bytes) -> None:
    ctx = make_ctx(body, method=method, content_type=None)
    assert await BodyPolicy(JSON_ONLY).on_request(ctx) is None


async def test_a_chunked_body_needs_a_content_type() -> None:
    decision = await BodyPolicy(JSON_ONLY).on_request(make_ctx(b"{}", content_type=None, chunked=True))
    assert rejected(decision, ErrorCode.REQUEST_UNSUPPORTED_MEDIA_TYPE, "invalid_request:content_type")


async def test_a_chunked_json_body_is_validated() -> None:
    ctx = make_ctx(b'{"__proto__": {}}', chunked=True, chunk_size=3)
    decision = await BodyPolicy(JSON_ONLY).on_request(ctx)
    assert rejected(decision, ErrorCode.REQUEST_INVALID_BODY, "invalid_request:forbidden_key")


async def test_a_get_with_a_body_is_checked_like_any_body() -> None:
    decision = await BodyPolicy(JSON_ONLY).on_request(make_ctx(b"{}", method="GET", content_type=b"text/plain"))
    assert rejected(decision, ErrorCode.REQUEST_UNSUPPORTED_MEDIA_TYPE, "invalid_request:content_type")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b"[" * 40 + b"]" * 40, "too_deep"),
        (b'{"__proto__": {"admin": true}}', "forbidden_key"),
        (b'{"role": "user", "role": "admin"}', "duplicate_key"),
    ],
)
async def test_invalid_json_bodies_get_400_with_the_reason_in_the_audit(body: bytes, reason: str) -> None:
    decision = await BodyPolicy(JSON_ONLY).on_request(make_ctx(body))
    assert rejected(decision, ErrorCode.REQUEST_INVALID_BODY, f"invalid_request:{reason}")


async def test_json_limits_come_from_the_route_config() -> None:
    policy = BodyPolicy(RequestConfig(json_body=JsonBodyConfig(max_depth=2, max_keys=2, forbidden_keys=["$where"])))
    assert await policy.on_request(make_ctx(b'{"a": {"b": 1}}')) is None
    assert rejected(
        await policy.on_request(make_ctx(b'{"a": {"b": []}}')),
        ErrorCode.REQUEST_INVALID_BODY, "invalid_request:too_deep",
    )
    assert rejected(
        await policy.on_request(make_ctx(b'{"a": 1, "b": 2, "c": 3}')),
        ErrorCode.REQUEST_INVALID_BODY, "invalid_request:too_many_keys",
    )
    assert rejected(
        await policy.on_request(make_ctx(b'{"$where": "1"}')), ErrorCode.REQUEST_INVALID_BODY,
        "invalid_request:forbidden_key",
    )
    assert await policy.on_request(make_ctx(b'{"__proto__": 1}')) is None


async def test_a_body_over_the_limit_raises_payload_too_large_for_the_app_to_render_413() -> None:
    ctx = make_ctx(b"[" + b"1," * 5000 + b"1]", chunked=True, chunk_size=1000, max_body_bytes=4096)
    with pytest.raises(PayloadTooLarge):
        await BodyPolicy(JSON_ONLY).on_request(ctx)


async def test_configured_content_types_replace_the_json_default() -> None:
    policy = BodyPolicy(RequestConfig(content_types=["text/csv", "image/*", "application/*+xml"]))
    for content_type in (b"text/csv", b"image/png", b"IMAGE/webp", b"application/atom+xml; charset=utf-8"):
        assert await policy.on_request(make_ctx(b"x", content_type=content_type)) is None
    for content_type in (b"application/json", b"text/plain", b"application/xml", b"image"):
        decision = await policy.on_request(make_ctx(b"x", content_type=content_type))
        assert rejected(decision, ErrorCode.REQUEST_UNSUPPORTED_MEDIA_TYPE, "invalid_request:content_type")


async def test_without_content_types_or_json_any_body_passes_unread() -> None:
    ctx = make_ctx(b"anything", content_type=b"application/octet-stream")
    assert await BodyPolicy(RequestConfig()).on_request(ctx) is None
    assert ctx.body is None


async def test_json_validation_applies_to_every_allowed_type() -> None:
    # An operator allowing text/plain next to JSON does not open a way around the JSON checks.
    policy = BodyPolicy(RequestConfig(content_types=["application/json", "text/plain"], json_body=JsonBodyConfig()))
    decision = await policy.on_request(make_ctx(b'{"__proto__": 1}', content_type=b"text/plain"))
    assert rejected(decision, ErrorCode.REQUEST_INVALID_BODY, "invalid_request:forbidden_key")


@pytest.mark.parametrize("pattern", ["json", "*/*", "application/json; charset=utf-8", "application/*json", "a b/c"])
def test_malformed_content_type_patterns_are_config_errors(pattern: str) -> None:
    with pytest.raises(ConfigError, match=r"request\.content_types\[0\]"):
        BodyPolicy(RequestConfig(content_types=[pattern]))
