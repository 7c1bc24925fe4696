"""Audit records as JSON lines in a size-rotated file (path, path.1 … path.N).

Why our own rotation instead of ``logging.handlers.RotatingFileHandler``: writes are batched and
run in a worker thread (file I/O must never block the event loop), and a batch is appended with one
``write`` so a record is never split across files.
Idempotency: a batch is only re-sent to this sink when its write failed, so a record appears once
unless a write failed half-way (a torn last line, which readers skip).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

__all__ = ["JsonlFileSink"]


class JsonlFileSink:
    """``AuditSink`` writing to a rotating JSONL file."""

    def __init__(self, path: str | Path, *, max_bytes: int, backup_count: int) -> None:
        self.path = Path(path)
        self._max_bytes = max_bytes
        self._backups = backup_count
        self._lock = asyncio.Lock()

    async def write(self, records: Sequence[Mapping[str, Any]]) -> None:
        if not records:
            return
        data = b"".join(orjson.dumps(r) + b"\n" for r in records)
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
                src.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))

    async def aclose(self) -> None:
        return None
