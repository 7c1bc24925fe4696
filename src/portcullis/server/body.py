"""``RequestBody``: a request body read completely before the app sees the request.

Why: the gateway must know that a body is well framed and within its route's limit before anything
is forwarded (a head forwarded ahead of a chunked body that then fails to parse reaches the backend
as half a request). So the server buffers the whole body first, nginx's ``proxy_request_buffering``:
in memory up to ``threshold`` bytes, beyond it in a private temporary file (mode 0600, unlinked at
creation by ``tempfile.TemporaryFile``), so a large upload costs disk, not RAM.

File I/O runs in the loop's default executor (the event loop never blocks on a disk), one batch at
a time; while a batch is being written and more than ``threshold`` bytes wait in memory,
``append`` tells the connection to pause reading, and ``on_drained`` resumes it.

What it refuses to do: hold more than ``threshold`` bytes in memory for long, or keep the file
after ``close``.

A route that opts into streaming pass-through gets a ``StreamedBody`` (``stream.py``) instead,
with the same ``next_chunk`` / ``finish`` / ``close`` interface, fed straight from ``data_received``.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from typing import IO

__all__ = ["RequestBody"]

_READ_CHUNK = 64 * 1024


def _open_private() -> IO[bytes]:
    return tempfile.TemporaryFile(prefix="portcullis-body-")  # closed by RequestBody.close


class RequestBody:
    """Chunks in memory, or a spill file plus the chunks not yet written to it."""

    __slots__ = ("_closed", "_file", "_memory", "_pending", "_read_at", "_threshold", "_writer", "on_drained", "size")

    def __init__(self, threshold: int) -> None:
        self._threshold = threshold
        self._memory: list[bytes] = []
        self._pending = 0  # bytes in _memory not yet in the file (once spilling)
        self._file: IO[bytes] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._read_at = -1  # -1: not started; file offset while reading back
        self._closed = False
        self.size = 0
        self.on_drained: Callable[[], None] | None = None

    @property
    def spilled(self) -> bool:
        return self._file is not None or self._writer is not None

    def append(self, data: bytes) -> bool:
        """Add ``data``; ``True`` when the connection should pause reading until ``on_drained``."""
        self.size += len(data)
        self._memory.append(data)
        if self.size <= self._threshold:
            return False
        self._pending += len(data)
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._spill())
        return self._pending > self._threshold

    async def _spill(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            if self._file is None:
                self._file = await loop.run_in_executor(None, _open_private)
            while self._memory and not self._closed:
                batch = b"".join(self._memory)
                self._memory.clear()
                self._pending = 0
                await loop.run_in_executor(None, self._file.write, batch)
                if self.on_drained is not None and not self._closed:
                    self.on_drained()
        finally:
            self._writer = None
            if self._closed:
                self._close_file()

    async def finish(self) -> None:
        """Wait until every byte appended so far is in place (memory or file)."""
        while self._writer is not None:
            await asyncio.shield(self._writer)

    async def next_chunk(self) -> tuple[bytes, bool]:
        """The next piece of the body and whether more follows; call after ``finish``."""
        if self._file is None:
            data = b"".join(self._memory)
            self._memory.clear()
            return data, False
        loop = asyncio.get_running_loop()
        file = self._file
        if self._read_at < 0:
            await loop.run_in_executor(None, file.seek, 0)
            self._read_at = 0
        data = await loop.run_in_executor(None, file.read, _READ_CHUNK)
        self._read_at += len(data)
        return data, self._read_at < self.size

    def close(self) -> None:
        """Drop the bytes; the file is closed (and so deleted) off the loop."""
        self._closed = True
        self._memory.clear()
        if self._writer is None:  # else the writer closes it when its batch is written
            self._close_file()

    def _close_file(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            asyncio.get_running_loop().run_in_executor(None, file.close)
