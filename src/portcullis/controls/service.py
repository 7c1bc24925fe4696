"""``IncidentControls``: make, lift and list blocks and emergency limits, and keep this instance's
snapshot current.

Why one service: the admin API (and anything else that acts for an operator) calls it; it writes the
store, swaps this instance's snapshot at once, and tells the other instances to re-read (``publish``,
the shared-state event bus). Each instance also re-reads on start-up, whenever its event
subscription (re)connects, and every ``refresh_interval`` seconds, so a missed event or a Redis
outage heals within that interval. A store that cannot be read keeps the snapshot it has: blocks in
force stay in force.

Security events: an act made through the admin API is recorded by the admin route class, not here.
A refusal by a block is recorded here (``refused``), one ``block.enforced`` event per block per
minute per instance with a count of the refusals since the last one (``audit/throttle.py``), because
the request records already name the block (``blocked:<id>``) and a flood of refusals must not
double the audit volume.

What it refuses to do: read the store on a request, or hand a block's reason to anything a client sees.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from portcullis.audit.record import AuditRecord
from portcullis.audit.security_event import security_event
from portcullis.audit.throttle import EventThrottle
from portcullis.background import stop_task
from portcullis.clock import Clock
from portcullis.controls.model import (
    BLOCK,
    EMERGENCY,
    MAX_REASON_CHARS,
    Block,
    BlockKind,
    EmergencyLimit,
    EmergencyScope,
    normalise_subject,
)
from portcullis.controls.snapshot import ControlSnapshot
from portcullis.errors import InvalidControl, StoreUnavailable
from portcullis.ids import random_hex
from portcullis.stores.base import ControlRecord, ControlStore

__all__ = ["IncidentControls", "Publish", "Submit"]

log = logging.getLogger("portcullis.controls")

Publish = Callable[[], Awaitable[bool]]  # tell every other instance to re-read; False when it could not
Submit = Callable[[AuditRecord], None]  # the audit writer's submit


class IncidentControls:
    """The service over a ``ControlStore``. ``snapshot`` is what the data path reads."""

    def __init__(
        self, store: ControlStore, clock: Clock, *, publish: Publish | None = None, submit: Submit | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._publish = publish
        self._submit = submit
        self._lock = asyncio.Lock()
        self._records: tuple[ControlRecord, ...] = ()
        self._task: asyncio.Task[None] | None = None
        self._events = EventThrottle(clock)  # one ``block.enforced`` per block per minute
        self.snapshot = ControlSnapshot()

    def set_publish(self, publish: Publish | None) -> None:
        """Where changes are announced (the shared-state event bus, once it exists)."""
        self._publish = publish

    # --- keeping the snapshot current ---------------------------------------------------------

    async def refresh(self) -> None:
        """Read the active controls and swap the snapshot. Raises ``StoreUnavailable`` (the old
        snapshot stays)."""
        async with self._lock:
            records = await self._store.list_controls(active_at=self._clock.wall())
            self._swap(tuple(records))

    def _swap(self, records: tuple[ControlRecord, ...]) -> None:
        self._records = records
        self.snapshot = ControlSnapshot.of(records)

    def start(self, refresh_interval_s: float) -> None:
        """Re-read every ``refresh_interval_s`` seconds until ``aclose``."""
        if self._task is None:
            self._task = asyncio.create_task(self._refresh_every(refresh_interval_s), name="portcullis-controls")

    async def _refresh_every(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)  # an operational timer, not a decision: real time
            try:
                await self.refresh()
            except StoreUnavailable as exc:
                log.warning("incident controls: could not re-read the store (%s); keeping what is in force", exc)

    async def aclose(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)

    # --- acts ---------------------------------------------------------------------------------

    async def add_block(
        self, kind: BlockKind, subject: str, *, reason: str, actor: str, expires_in_s: float | None = None,
    ) -> Block:
        """Block ``subject`` on every instance, until lifted or for ``expires_in_s`` seconds."""
        _check_reason(reason)
        if expires_in_s is not None and not expires_in_s > 0:
            raise InvalidControl("expires_in_s: positive")
        now = self._clock.wall()
        block = Block(
            block_id=f"blk_{random_hex(64)}", kind=kind, subject=normalise_subject(kind, subject), reason=reason,
            created_at=now, created_by=actor, expires_at=None if expires_in_s is None else now + expires_in_s,
        )
        await self._add(block.record())
        return block

    async def add_emergency(
        self, scope: EmergencyScope, subject: str, factor: float, *, duration_s: float, restore_s: float,
        reason: str, actor: str,
    ) -> EmergencyLimit:
        """Scale the limits of ``scope``/``subject`` by ``factor`` for ``duration_s``, then restore them
        linearly over ``restore_s``."""
        _check_reason(reason)
        if not duration_s > 0:
            raise InvalidControl("duration_s: positive")
        if scope is not EmergencyScope.GATEWAY:
            subject = normalise_subject(BlockKind.CONSUMER, subject)  # a name: the same text rules
        now = self._clock.wall()
        emergency = EmergencyLimit(
            emergency_id=f"emg_{random_hex(64)}", scope=scope, subject=subject, factor=factor, until=now + duration_s,
            restore_s=restore_s, reason=reason, created_at=now, created_by=actor,
        )
        await self._add(emergency.record())
        return emergency

    async def lift_block(self, block_id: str, *, actor: str) -> bool:
        """End a block now, everywhere. False if no block in force has this id."""
        return await self._lift(block_id, BLOCK, actor)

    async def lift_emergency(self, emergency_id: str, *, actor: str) -> bool:
        """End an emergency limit now (no ramp), everywhere. False if none in force has this id."""
        return await self._lift(emergency_id, EMERGENCY, actor)

    async def list_blocks(self, *, include_inactive: bool = False) -> list[Block]:
        """Blocks in force (from the store, oldest first); with ``include_inactive``, every block ever made."""
        return [Block.of(r) for r in await self._list(include_inactive) if r.kind == BLOCK]

    async def list_emergencies(self, *, include_inactive: bool = False) -> list[EmergencyLimit]:
        """Emergency limits in force or restoring; with ``include_inactive``, every one ever made."""
        return [EmergencyLimit.of(r) for r in await self._list(include_inactive) if r.kind == EMERGENCY]

    async def _list(self, include_inactive: bool) -> list[ControlRecord]:
        return await self._store.list_controls(active_at=None if include_inactive else self._clock.wall())

    async def _add(self, record: ControlRecord) -> None:
        async with self._lock:
            await self._store.add_control(record)
            self._swap((*self._records, record))
        await self._announce()

    async def _lift(self, control_id: str, kind: str, actor: str) -> bool:
        async with self._lock:
            if not any(r.control_id == control_id and r.kind == kind for r in self._records):
                # Not in this instance's snapshot: perhaps made a moment ago elsewhere; ask the store.
                active = await self._store.list_controls(active_at=self._clock.wall())
                if not any(r.control_id == control_id and r.kind == kind for r in active):
                    return False
            lifted = await self._store.lift_control(control_id, self._clock.wall(), actor)
            self._swap(tuple(r for r in self._records if r.control_id != control_id))
        if lifted:
            await self._announce()
        return lifted

    async def _announce(self) -> None:
        if self._publish is not None and not await self._publish():
            log.warning("incident controls: other instances will re-read within their refresh interval")

    # --- enforcement events ---------------------------------------------------------------------

    def refused(self, block: Block, *, client_ip: str, request_id: str, actor: str, where: str,
                trace_id: str | None = None) -> None:
        """A request or call was refused by ``block``: a ``block.enforced`` security event, at most one
        per block per minute on this instance (with the count of refusals it stands for)."""
        if self._submit is None:
            return
        since = self._events.admit(block.block_id)
        if since is None:
            return
        details: dict[str, Any] = {"block_id": block.block_id, "kind": block.kind.value, "where": where,
                                   "refusals_since_last_event": since}
        self._submit(security_event(
            clock=self._clock, action="block.enforced", outcome="denied", actor=actor, role=None,
            target=f"{block.kind.value}={block.subject}", client_ip=client_ip, request_id=request_id, status=403,
            details=details, trace_id=trace_id,
        ))


def _check_reason(reason: str) -> None:
    if not reason.strip() or len(reason) > MAX_REASON_CHARS or not reason.isprintable():
        raise InvalidControl(f"reason: 1 to {MAX_REASON_CHARS} printable characters")
