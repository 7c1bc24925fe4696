"""The incident controls one instance enforces, as an immutable snapshot swapped whole.

Why a snapshot: the data path must decide with no I/O (5,000 requests per second, each asking "is
this address, consumer, key, workflow, user or execution blocked?" and "how much of its rate may this
request use?"). The snapshot is built off the hot path from the store's active rows, then replaces
the old one in a single attribute assignment (``IncidentControls.snapshot``), so a request reads one
consistent set of controls and never a half-built table.

Expiry is checked at decision time against the wall time passed in, so a block or an emergency
whose time is up stops applying at that instant on every instance, without waiting for an event or
the next refresh. Empty tables answer without looking further: a gateway with no controls pays one
attribute read and one boolean test per enforcement point.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from portcullis.controls.addresses import AddressBlocks
from portcullis.controls.model import BLOCK, EMERGENCY, Block, BlockKind, EmergencyLimit, EmergencyScope
from portcullis.limiting.emergency import EmergencyFactor, EmergencyTable
from portcullis.stores.base import ControlRecord

__all__ = ["ControlSnapshot"]


class ControlSnapshot:
    """Blocks by subject, address blocks by network, emergency factors by scope."""

    __slots__ = ("_addresses", "_emergency_table", "_subjects", "blocks", "emergencies", "has_address_blocks",
                 "has_emergencies", "has_subject_blocks")

    def __init__(self, blocks: Sequence[Block] = (), emergencies: Sequence[EmergencyLimit] = ()) -> None:
        self.blocks = tuple(blocks)
        self.emergencies = tuple(emergencies)
        self._addresses = AddressBlocks(b for b in self.blocks if b.kind is BlockKind.ADDRESS)
        subjects: dict[tuple[BlockKind, str], tuple[Block, ...]] = {}
        for block in self.blocks:
            if block.kind is not BlockKind.ADDRESS:
                key = (block.kind, block.subject)
                subjects[key] = (*subjects.get(key, ()), block)
        self._subjects = subjects
        # What the enforcement points test first, so that a gateway without controls pays nothing more.
        self.has_address_blocks = not self._addresses.empty
        self.has_subject_blocks = bool(subjects)
        self.has_emergencies = bool(self.emergencies)
        by_scope: dict[EmergencyScope, dict[str, list[EmergencyFactor]]] = {s: {} for s in EmergencyScope}
        for emergency in self.emergencies:
            by_scope[emergency.scope].setdefault(emergency.subject, []).append(
                EmergencyFactor(emergency.factor, emergency.until, emergency.restore_s))
        self._emergency_table = EmergencyTable(
            gateway=by_scope[EmergencyScope.GATEWAY].get("", ()), routes=by_scope[EmergencyScope.ROUTE],
            consumers=by_scope[EmergencyScope.CONSUMER],
        )

    @classmethod
    def of(cls, records: Iterable[ControlRecord]) -> ControlSnapshot:
        """From store rows (lifted rows are skipped; expired ones simply never apply)."""
        blocks: list[Block] = []
        emergencies: list[EmergencyLimit] = []
        for record in records:
            if record.lifted_at is not None:
                continue
            if record.kind == BLOCK:
                blocks.append(Block.of(record))
            elif record.kind == EMERGENCY:
                emergencies.append(EmergencyLimit.of(record))
        return cls(blocks, emergencies)

    def address_block(self, address: str, now: float) -> Block | None:
        """The block in force on the client address ``address``, if any."""
        return self._addresses.match(address, now)

    def block(self, kind: BlockKind, subject: str | None, now: float) -> Block | None:
        """The block in force on this exact subject, if any."""
        if not self._subjects or subject is None:
            return None
        for block in self._subjects.get((kind, subject), ()):
            if block.applies(now):
                return block
        return None

    def factor(self, route: str | None, consumer: str | None, now: float) -> float:
        """The emergency factor for a request on ``route`` by ``consumer`` (1.0: none in force)."""
        return self._emergency_table.factor(route, consumer, now)
