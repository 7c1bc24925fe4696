"""Incident controls in process memory: for ``portcullis check`` (which plans chains without a
database) and for tests of the enforcement points. A gateway always keeps its controls in its
durable store (SQLite or PostgreSQL), so that they survive a restart and reach every instance.

It follows the same ``ControlStore`` contract as the database stores (``tests/contract``).
"""

from __future__ import annotations

import builtins
from dataclasses import replace

from portcullis.stores.base import MAX_CONTROLS, ControlRecord

__all__ = ["MemoryControlStore"]


class MemoryControlStore:
    """``ControlStore`` in a dict, in insertion order."""

    def __init__(self) -> None:
        self._rows: dict[str, ControlRecord] = {}

    async def add_control(self, record: ControlRecord) -> None:
        if record.control_id in self._rows:
            raise ValueError(f"duplicate control id {record.control_id!r}")
        self._rows[record.control_id] = record

    async def lift_control(self, control_id: str, at: float, by: str) -> bool:
        row = self._rows.get(control_id)
        if row is None or row.lifted_at is not None:
            return False
        self._rows[control_id] = replace(row, lifted_at=at, lifted_by=by)
        return True

    async def list_controls(self, *, active_at: float | None = None) -> builtins.list[ControlRecord]:
        rows = sorted(self._rows.values(), key=lambda r: (r.created_at, r.control_id))
        if active_at is not None:
            rows = [r for r in rows if r.lifted_at is None and ((end := r.ends_at()) is None or end > active_at)]
        return rows[:MAX_CONTROLS]
