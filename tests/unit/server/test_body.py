"""RequestBody: small bodies in memory, large ones in a private file, read back intact."""

from __future__ import annotations

import pytest

from portcullis.server.body import RequestBody
from portcullis.server.limits import ServerLimits


async def read_all(body: RequestBody) -> bytes:
    await body.finish()
    out = b""
    more = True
    while more:
        chunk, more = await body.next_chunk()
        out += chunk
    return out


async def test_a_small_body_stays_in_memory() -> None:
    body = RequestBody(threshold=16)
    assert body.append(b"hello") is False
    assert await read_all(body) == b"hello"
    assert not body.spilled
    body.close()


async def test_a_large_body_spills_to_a_file_and_reads_back_intact() -> None:
    body = RequestBody(threshold=1024)
    payload = bytes(range(256)) * 64
    for i in range(0, len(payload), 100):
        body.append(payload[i:i + 100])
    assert body.spilled
    assert await read_all(body) == payload
    body.close()


def test_limits_refuse_a_zero_bound() -> None:
    with pytest.raises(ValueError, match="head_timeout"):
        ServerLimits(head_timeout=0)
