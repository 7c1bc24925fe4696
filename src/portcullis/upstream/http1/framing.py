"""HTTP/1.1 framing rules for the ingress client: the request head we write, the response we accept.

Why a module of its own: framing is where proxies get desynchronised. A response the gateway and
the client could read differently (two Content-Lengths, Content-Length beside Transfer-Encoding,
a transfer coding other than plain ``chunked``, a body on a 204) is response smuggling waiting to
happen, so it is refused as ``UpstreamProtocolError`` instead of guessed at. llhttp (via httptools)
already refuses malformed syntax in strict mode; these rules are the semantic layer on top, written
out so they can be read and tested one by one (RFC 9112 sections 6.1 to 6.3, RFC 9110 section 6.4.1).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from portcullis.errors import UpstreamProtocolError

__all__ = [
    "LAST_CHUNK",
    "MAX_RESPONSE_HEAD_BYTES",
    "BodyKind",
    "Framing",
    "RequestHeadInvalid",
    "encode_chunk",
    "encode_request_head",
    "response_framing",
]

MAX_RESPONSE_HEAD_BYTES = 64 * 1024
_DIGITS = re.compile(rb"^[0-9]{1,18}$")
LAST_CHUNK = b"0\r\n\r\n"  # the end of a chunked body, with no trailers


class RequestHeadInvalid(UpstreamProtocolError):
    """A header or target we were about to send would break the request's framing."""


class BodyKind(enum.Enum):
    NONE = "none"  # 1xx, 204, 304, or the answer to HEAD
    LENGTH = "length"  # Content-Length
    CHUNKED = "chunked"  # Transfer-Encoding: chunked
    UNTIL_CLOSE = "until_close"  # neither: the body ends when the server closes (never reused)


@dataclass(frozen=True, slots=True)
class Framing:
    kind: BodyKind
    keep_alive: bool


def encode_request_head(method: str, target: str, headers: list[tuple[bytes, bytes]]) -> bytes:
    """``METHOD target HTTP/1.1`` and the headers, as one buffer.

    Every value was either parsed by llhttp from the client or set by the gateway; the line count
    check is the last line of defence against a CR or LF smuggled into either (one C-level scan of
    the head instead of a check per header).
    """
    parts = [f"{method} {target} HTTP/1.1\r\n".encode("latin-1")]
    for name, value in headers:
        parts.append(name + b": " + value + b"\r\n")
    parts.append(b"\r\n")
    head = b"".join(parts)
    lines = len(headers) + 2
    if head.count(b"\n") != lines or head.count(b"\r") != lines or b"\x00" in head or target.count(" "):
        raise RequestHeadInvalid("request_head_invalid")
    return head


def encode_chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def response_framing(
    *, status: int, version: str, method: str, content_lengths: list[bytes],
    transfer_encodings: list[bytes], connection: list[bytes],
) -> Framing:
    """How the response body is delimited and whether the connection may be reused, or refuse.

    ``content_lengths`` etc. are every value of that header, in order (repeats included).
    """
    if version not in ("1.1", "1.0"):
        raise UpstreamProtocolError("response_version")
    if len(content_lengths) > 1:
        raise UpstreamProtocolError("response_duplicate_content_length")
    if content_lengths and not _DIGITS.match(content_lengths[0].strip(b" \t")):
        raise UpstreamProtocolError("response_bad_content_length")
    if transfer_encodings:
        if version == "1.0":
            raise UpstreamProtocolError("response_te_in_http10")
        if content_lengths:
            raise UpstreamProtocolError("response_cl_and_te")
        if len(transfer_encodings) > 1 or transfer_encodings[0].strip(b" \t").lower() != b"chunked":
            raise UpstreamProtocolError("response_transfer_encoding")
    tokens = {t.strip(b" \t").lower() for v in connection for t in v.split(b",")}
    keep_alive = b"close" not in tokens and (version == "1.1" or b"keep-alive" in tokens)
    if status < 200 or status in (204, 304):
        if status == 204 and (transfer_encodings or (content_lengths and int(content_lengths[0]) != 0)):
            raise UpstreamProtocolError("response_body_on_204")
        return Framing(BodyKind.NONE, keep_alive)
    if method == "HEAD":
        return Framing(BodyKind.NONE, keep_alive)
    if transfer_encodings:
        return Framing(BodyKind.CHUNKED, keep_alive)
    if content_lengths:
        return Framing(BodyKind.LENGTH, keep_alive)
    return Framing(BodyKind.UNTIL_CLOSE, False)
