"""The framing rules of the ingress client: the head it writes and the response framing it accepts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portcullis.errors import UpstreamProtocolError
from portcullis.upstream.http1.framing import (
    BodyKind,
    Framing,
    RequestHeadInvalid,
    encode_chunk,
    encode_request_head,
    response_framing,
)


def test_the_request_head_is_the_request_line_and_headers_in_order() -> None:
    head = encode_request_head("GET", "/a?b=1", [(b"host", b"api"), (b"x-a", b"1"), (b"x-a", b"2")])
    assert head == b"GET /a?b=1 HTTP/1.1\r\nhost: api\r\nx-a: 1\r\nx-a: 2\r\n\r\n"


@pytest.mark.parametrize(("target", "headers"), [
    pytest.param("/a", [(b"x-consumer-id", b"bob\r\nX-Admin: 1")], id="CRLF-in-a-value"),
    pytest.param("/a", [(b"x-consumer-id", b"bob\nX-Admin: 1")], id="bare-LF-in-a-value"),
    pytest.param("/a", [(b"x-consumer-id", b"bob\rX-Admin: 1")], id="bare-CR-in-a-value"),
    pytest.param("/a", [(b"x-a\r\nx-b", b"1")], id="CRLF-in-a-name"),
    pytest.param("/a", [(b"x-a", b"a\x00b")], id="NUL-in-a-value"),
    pytest.param("/a HTTP/1.1\r\nHost: evil\r\n\r\nGET /b", [(b"host", b"api")], id="CVE-2023-25690-target"),
    pytest.param("/a b", [(b"host", b"api")], id="space-in-the-target"),
])
def test_a_head_that_would_split_the_request_is_refused(target: str, headers: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(RequestHeadInvalid):
        encode_request_head("GET", target, headers)


@given(st.lists(st.tuples(st.binary(min_size=1, max_size=8), st.binary(max_size=12)), max_size=6))
def test_any_head_that_is_encoded_has_exactly_one_line_per_header(headers: list[tuple[bytes, bytes]]) -> None:
    try:
        head = encode_request_head("GET", "/", headers)
    except RequestHeadInvalid:
        assert any(b"\r" in n + v or b"\n" in n + v or b"\x00" in n + v for n, v in headers)
        return
    assert head.count(b"\r\n") == len(headers) + 2
    assert head.endswith(b"\r\n\r\n")


def test_a_chunk_is_its_hex_length_and_the_data() -> None:
    assert encode_chunk(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"


def framing(status: int = 200, version: str = "1.1", method: str = "GET", cl: list[bytes] | None = None,
            te: list[bytes] | None = None, conn: list[bytes] | None = None) -> Framing:
    return response_framing(status=status, version=version, method=method, content_lengths=cl or [],
                            transfer_encodings=te or [], connection=conn or [])


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"cl": [b"10"]}, Framing(BodyKind.LENGTH, True)),
    ({"cl": [b" 10 "]}, Framing(BodyKind.LENGTH, True)),
    ({"te": [b"chunked"]}, Framing(BodyKind.CHUNKED, True)),
    ({"te": [b"CHUNKED"]}, Framing(BodyKind.CHUNKED, True)),
    ({}, Framing(BodyKind.UNTIL_CLOSE, False)),
    ({"status": 204}, Framing(BodyKind.NONE, True)),
    ({"status": 204, "cl": [b"0"]}, Framing(BodyKind.NONE, True)),
    ({"status": 304, "cl": [b"5000"]}, Framing(BodyKind.NONE, True)),
    ({"status": 100}, Framing(BodyKind.NONE, True)),
    ({"method": "HEAD", "cl": [b"5000"]}, Framing(BodyKind.NONE, True)),
    ({"method": "HEAD", "te": [b"chunked"]}, Framing(BodyKind.NONE, True)),
    ({"cl": [b"1"], "conn": [b"close"]}, Framing(BodyKind.LENGTH, False)),
    ({"cl": [b"1"], "conn": [b"Keep-Alive, Close"]}, Framing(BodyKind.LENGTH, False)),
    ({"cl": [b"1"], "version": "1.0"}, Framing(BodyKind.LENGTH, False)),
    ({"cl": [b"1"], "version": "1.0", "conn": [b"keep-alive"]}, Framing(BodyKind.LENGTH, True)),
])
def test_valid_framing(kwargs: dict[str, object], expected: Framing) -> None:
    assert framing(**kwargs) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"version": "2.0", "cl": [b"1"]}, "response_version"),
    ({"version": "0.9"}, "response_version"),
    ({"cl": [b"1", b"1"]}, "response_duplicate_content_length"),
    ({"cl": [b"1, 1"]}, "response_bad_content_length"),
    ({"cl": [b"-1"]}, "response_bad_content_length"),
    ({"cl": [b"9" * 19]}, "response_bad_content_length"),
    ({"cl": [b"1"], "te": [b"chunked"]}, "response_cl_and_te"),
    ({"te": [b"gzip, chunked"]}, "response_transfer_encoding"),
    ({"te": [b"chunked", b"chunked"]}, "response_transfer_encoding"),
    ({"te": [b"identity"]}, "response_transfer_encoding"),
    ({"te": [b"chunked"], "version": "1.0"}, "response_te_in_http10"),
    ({"status": 204, "cl": [b"2"]}, "response_body_on_204"),
    ({"status": 204, "te": [b"chunked"]}, "response_body_on_204"),
])
def test_ambiguous_framing_is_refused_with_a_reason(kwargs: dict[str, object], reason: str) -> None:
    with pytest.raises(UpstreamProtocolError) as info:
        framing(**kwargs)  # type: ignore[arg-type]
    assert info.value.reason == reason
