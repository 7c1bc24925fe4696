"""Audit records as JSON lines in a size-rotated file (path, path.1 … path.N).

Why our own rotation instead of ``logging.handlers.RotatingFileHandler``: writes are batched and
run in a worker thread (file I/O must never block the event loop), and a batch is appended with one
``write`` so a record is never split across files.
Idempotency: a batch is only re-sent to this sink when its write failed, so a record appears once
unless a write failed half-way (a torn last line, which readers skip) or the process died between
a replayed chunk's write and the spill offset that records it.
Permissions: the file holds who called what, so it is created 0600; a file left with wider bits (an
older version, a hand-made file) is narrowed at the first write, and rotated files keep 0600.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from portcullis.stores.base import AuditBatch

__all__ = ["JsonlFileSink", "owner_only"]


class JsonlFileSink:
    """``AuditSink`` writing to a rotating JSONL file."""

    def __init__(self, path: str | Path, *, max_bytes: int, backup_count: int) -> None:
        self.path = Path(path)
        self._max_bytes = max_bytes
        self._backups = backup_count
        self._lock = asyncio.Lock()
        self._mode_checked = False

    async def write(self, batch: AuditBatch) -> None:
        """Append the batch's JSON lines with one ``write``, rotating first if it would not fit."""
        if not len(batch):
            return
        data = batch.payload()
        async with self._lock:
            await asyncio.to_thread(self._append, data)

    def _append(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size and self._max_bytes and size + len(data) > self._max_bytes:
            self._rotate()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            if not self._mode_checked:
                owner_only(fd)
                self._mode_checked = True
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        finally:
            os.close(fd)

    def _rotate(self) -> None:
        if self._backups <= 0:
            self.path.unlink(missing_ok=True)
            return
        for i in range(self._backups - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{i}")
            if src.exists():
                dst = self.path.with_name(f"{self.path.name}.{i + 1}")
                src.replace(dst)
                dst.chmod(0o600)  # a backup from before this version may have wider bits
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))

    async def aclose(self) -> None:
        return None


def owner_only(fd: int) -> None:
    """Narrow an open audit or spill file to 0600 if it has group or other bits."""
    if os.fstat(fd).st_mode & 0o077:
        os.fchmod(fd, 0o600)
