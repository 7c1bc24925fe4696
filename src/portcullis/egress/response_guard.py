"""Limits on what a third-party API may send back: bytes on the wire, bytes once decoded, and types.

Why: an egress call hands a provider's answer to an agent or a workflow. A provider (or anything
pretending to be one after a redirect or a compromise) can answer with gigabytes, with a small
gzip body that inflates to gigabytes (a decompression bomb: 10 MB of zeros gzip to about 10 KB),
or with a content type the caller never expects. Each limit is checked while the body streams, so
memory stays bounded whatever the provider sends; exceeding one ends the call with 502 and a reason
for the audit.

The decoded size is measured by inflating into a bounded window and discarding the output: the
caller still receives the bytes as sent. An encoding this module cannot measure is refused when a
decoded limit is set, because its decoded size cannot be known.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from portcullis.errors import UpstreamProtocolError

__all__ = ["DecodedSizeMeter", "ResponseLimits", "ResponseRefused", "check_content_type", "read_limited"]

_CHUNK = 64 * 1024


class ResponseRefused(UpstreamProtocolError):
    """The provider's answer broke a response limit (502; ``reason`` says which)."""


@dataclass(frozen=True, slots=True)
class ResponseLimits:
    max_bytes: int = 10 * 1024 * 1024
    max_decoded_bytes: int | None = 100 * 1024 * 1024
    content_types: tuple[str, ...] = ()  # media types, e.g. "application/json"; empty: any


def check_content_type(value: str | None, allowed: Iterable[str]) -> None:
    """Refuse a media type outside ``allowed`` (parameters such as ``charset`` are ignored)."""
    allowed = tuple(allowed)
    if not allowed:
        return
    media = (value or "").split(";", 1)[0].strip().lower()
    if media not in allowed:
        raise ResponseRefused("response_content_type")


class DecodedSizeMeter:
    """Counts the decoded size of a gzip or deflate stream as it arrives, within a bounded window."""

    def __init__(self, encoding: str | None, limit: int) -> None:
        coding = (encoding or "identity").strip().lower()
        self._limit = limit
        self.decoded = 0
        self._inflater: zlib._Decompress | None
        if coding in ("identity", ""):
            self._inflater = None
        elif coding in ("gzip", "x-gzip"):
            self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif coding == "deflate":
            self._inflater = zlib.decompressobj()
        else:
            raise ResponseRefused("response_encoding_unmeasurable")

    def feed(self, chunk: bytes) -> None:
        inflater = self._inflater
        if inflater is None:
            self.decoded += len(chunk)
        else:
            data = chunk
            while data:
                try:
                    out = inflater.decompress(data, _CHUNK)
                except zlib.error:
                    raise ResponseRefused("response_encoding_corrupt") from None
                self.decoded += len(out)
                if self.decoded > self._limit:
                    break
                data = inflater.unconsumed_tail
        if self.decoded > self._limit:
            raise ResponseRefused("response_decoded_too_large")


async def read_limited(chunks: AsyncIterator[bytes], limits: ResponseLimits, *, encoding: str | None) -> bytes:
    """The whole body, or ``ResponseRefused`` as soon as a limit is crossed (nothing more is read)."""
    meter = DecodedSizeMeter(encoding, limits.max_decoded_bytes) if limits.max_decoded_bytes is not None else None
    received: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limits.max_bytes:
            raise ResponseRefused("response_too_large")
        if meter is not None:
            meter.feed(chunk)
        received.append(chunk)
    return b"".join(received)
