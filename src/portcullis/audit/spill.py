"""One sink's spill file: records that sink has not taken yet, on disk instead of in memory.

Why a file per sink: a sink that is down or slower than arrivals must not make the gateway hold
its records in memory, and one sink's backlog must not hold up another. Records are appended as
JSON lines at the end and replayed from a byte offset in chunks of at most ``chunk_bytes``, so a
spill of many gigabytes is never read into memory at once. The offset is kept in memory and
persisted beside the file (``<spill>.offset``) after every chunk a sink took, so a restart resumes
where the last process stopped instead of replaying everything (the database sinks would ignore
the repeats by record id; the JSONL file would not). When the offset reaches the end, both files
are removed.

Order: ``prepend`` puts records in front of what waits (a batch that failed while newer records
were already spilled) by rewriting the file, streamed, under the same lock as ``append``.

Every file is created 0600. All file work runs in worker threads; this module raises ``OSError``
and leaves counting and logging to the writer. It does not know what a sink is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from portcullis.audit.jsonl import owner_only
from portcullis.stores.base import AuditBatch

__all__ = ["SpillChunk", "SpillFile"]

log = logging.getLogger("portcullis.audit")

_COPY_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class SpillChunk:
    """Records read from a spill file: ``batch`` ends at byte ``end``; ``torn`` lines could not be read."""

    batch: AuditBatch
    end: int
    torn: int


class SpillFile:
    """Append at the end, replay from an offset in bounded chunks, remove when drained."""

    def __init__(self, path: Path, *, chunk_bytes: int = 1 << 20) -> None:
        self.path = path
        self._offset_path = path.with_name(path.name + ".offset")
        self._chunk_bytes = chunk_bytes
        self._offset = 0
        self._end = 0
        self.waiting = 0  # records between the offset and the end
        self.lock = asyncio.Lock()  # held by append, prepend and the removal of a drained file

    async def open(self) -> None:
        """Take over what a previous process left: its offset, and a count of the records after it."""
        async with self.lock:
            self._offset, self._end, self.waiting = await asyncio.to_thread(_survey, self.path, self._offset_path)

    async def append(self, lines: Sequence[bytes]) -> None:
        """Add records at the end. Raises ``OSError``; then nothing was counted as waiting."""
        if not lines:
            return
        async with self.lock:
            self._end = await asyncio.to_thread(_append, self.path, b"\n".join(lines) + b"\n")
            self.waiting += len(lines)

    async def prepend(self, lines: Sequence[bytes]) -> None:
        """Put records in front of every record that waits. Raises ``OSError``."""
        if not lines:
            return
        async with self.lock:
            if self.waiting == 0:
                self._end = await asyncio.to_thread(_append, self.path, b"\n".join(lines) + b"\n")
            else:
                self._end = await asyncio.to_thread(
                    _rewrite, self.path, self._offset_path, b"\n".join(lines) + b"\n", self._offset, self._end
                )
                self._offset = 0
            self.waiting += len(lines)

    async def read_chunk(self) -> SpillChunk | None:
        """The next records after the offset (at most about ``chunk_bytes``), or None when none wait."""
        if self.waiting == 0 or self._offset >= self._end:
            return None
        return await asyncio.to_thread(_read_chunk, self.path, self._offset, self._end, self._chunk_bytes)

    async def consumed(self, chunk: SpillChunk) -> None:
        """A sink took ``chunk``: move the offset past it; remove the files once nothing waits."""
        async with self.lock:
            self._offset = chunk.end
            self.waiting = max(0, self.waiting - len(chunk.batch) - chunk.torn)
            if self._offset >= self._end:
                await asyncio.to_thread(_remove, self.path, self._offset_path)
                self._offset = self._end = self.waiting = 0
            else:
                await asyncio.to_thread(_write_offset, self._offset_path, self._offset)


def _open_owner_only(path: Path, flags: int) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, flags | os.O_CREAT, 0o600)
    try:
        owner_only(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _append(path: Path, data: bytes) -> int:
    fd = _open_owner_only(path, os.O_WRONLY | os.O_APPEND)
    try:
        _write_all(fd, data)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def _rewrite(path: Path, offset_path: Path, head: bytes, offset: int, end: int) -> int:
    """``head`` followed by the bytes [offset, end) of ``path``, streamed into a new file that replaces it."""
    tmp = path.with_name(path.name + ".tmp")
    out = _open_owner_only(tmp, os.O_WRONLY | os.O_TRUNC)
    try:
        _write_all(out, head)
        with path.open("rb") as src:
            src.seek(offset)
            left = end - offset
            while left > 0:
                block = src.read(min(_COPY_BYTES, left))
                if not block:
                    break
                _write_all(out, block)
                left -= len(block)
        size = os.fstat(out).st_size
    finally:
        os.close(out)
    tmp.replace(path)
    offset_path.unlink(missing_ok=True)
    return size


def _read_chunk(path: Path, offset: int, end: int, chunk_bytes: int) -> SpillChunk:
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read(min(chunk_bytes, end - offset))
        while b"\n" not in data and offset + len(data) < end:  # one record longer than a chunk
            more = f.read(min(chunk_bytes, end - offset - len(data)))
            if not more:
                break
            data += more
    cut = data.rfind(b"\n") + 1
    if cut == 0:  # a torn tail with no newline: skip it
        cut = len(data)
    rows, lines, torn = [], [], 0
    for line in data[:cut].split(b"\n"):
        if not line.strip():
            continue
        try:
            rows.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            torn += 1
            continue
        lines.append(line)
    if torn:
        log.error("skipping %d torn lines in %s", torn, path)
    return SpillChunk(AuditBatch(rows, lines), offset + cut, torn)


def _survey(path: Path, offset_path: Path) -> tuple[int, int, int]:
    """(offset, end, records waiting) of a spill file, read in bounded blocks."""
    try:
        end = path.stat().st_size
    except FileNotFoundError:
        offset_path.unlink(missing_ok=True)
        return 0, 0, 0
    offset = 0
    with contextlib.suppress(FileNotFoundError, ValueError):
        offset = int(offset_path.read_text().strip() or 0)
    if not 0 <= offset <= end:
        offset = 0
    waiting = 0
    last = b"\n"
    with path.open("rb") as f:
        f.seek(offset)
        while block := f.read(_COPY_BYTES):
            waiting += block.count(b"\n")
            last = block[-1:]
    if end > offset and last != b"\n":  # a crash tore the last line: end it, so the next append starts clean
        end = _append(path, b"\n")
        waiting += 1
    return offset, end, waiting


def _write_offset(offset_path: Path, offset: int) -> None:
    fd = _open_owner_only(offset_path, os.O_WRONLY | os.O_TRUNC)
    try:
        _write_all(fd, str(offset).encode())
    finally:
        os.close(fd)


def _remove(path: Path, offset_path: Path) -> None:
    path.unlink(missing_ok=True)
    offset_path.unlink(missing_ok=True)
