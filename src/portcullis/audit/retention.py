"""Retention: removing audit records from the store once their class's time is up, chain intact.

Why at checkpoint boundaries: records live in one hash chain per writer process and class
(``audit.chain``), so what expires is always the oldest part of a chain. Expiry removes a chain's
records up to a checkpoint made before the cutoff (the checkpoint is written after the records
it covers, so every one of them is older) and the checkpoints before it; that checkpoint stays as
the anchor ``verify`` starts the chain from. Records newer than the last such checkpoint wait for
the next one, so a record may outlive its retention by up to one checkpoint interval
(``audit.checkpoint_every`` records or ``audit.checkpoint_interval``).

Why bounded: the store deletes one checkpoint interval per transaction in statements of at most
``batch_rows`` rows, and a periodic run stops after ``max_rows`` records, so the task never holds
a lock for long or competes with the writer for minutes; what is left is taken by the next run.
It reads only the ``audit_checkpoints`` table to decide, never scans records. What is old is a
decision and reads the injected ``Clock`` (tests advance a ``ManualClock`` and call ``run_once``);
when to run is an operational timer on the event loop's time, as the writer's flush timer is (a
manual clock's ``sleep`` returns at once and would make the task spin).

Every run that removes something leaves a ``security`` record of it (``expiry_record``): who ran
it, and how many records of which class went, so a gap in the trail has its own entry in it.

What it refuses to do: expire a class with no configured retention, touch the JSONL file (size
rotation handles that), or export anything (``portcullis audit export`` first, if records must
outlive the store's retention).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from portcullis.audit.record import AuditRecord
from portcullis.audit.security_event import security_event
from portcullis.clock import Clock
from portcullis.errors import StoreUnavailable
from portcullis.ids import random_hex
from portcullis.stores.base import AuditStore

__all__ = ["ExpiryResult", "RetentionPolicy", "RetentionTask", "expire", "expiry_record"]

log = logging.getLogger("portcullis.audit")

_PAGE = 500


class RetentionPolicy(Protocol):
    """How long each record class is kept (``AuditRetentionConfig``)."""

    def keep_s(self, record_class: str) -> float | None:
        """Seconds ``record_class`` is kept, or None to keep it for good."""
        ...


@dataclass(frozen=True, slots=True)
class ExpiryResult:
    """What one expiry run removed: records per class, and whether it stopped at ``max_rows``."""

    deleted: dict[str, int] = field(default_factory=dict)
    stopped_early: bool = False

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


async def expire(
    store: AuditStore, policy: RetentionPolicy, *, now: float, batch_rows: int = 1000, max_rows: int | None = None,
) -> ExpiryResult:
    """Remove every chain's records older than its class's retention, up to checkpoint boundaries."""
    deleted: dict[str, int] = {}
    for info in await store.audit_chains():
        keep = policy.keep_s(info.record_class)
        if keep is None:
            continue
        cutoff = now - keep
        after = -1
        while True:
            page = await store.chain_checkpoints(info.chain, after_seq=after, limit=_PAGE)
            for checkpoint in page:
                if float(checkpoint["ts"]) >= cutoff:
                    break
                seq = int(checkpoint["seq"])
                removed = await store.expire_chain(info.chain, through_seq=seq, batch_rows=batch_rows)
                deleted[info.record_class] = deleted.get(info.record_class, 0) + removed
                after = seq
                if max_rows is not None and sum(deleted.values()) >= max_rows:
                    return ExpiryResult(deleted, stopped_early=True)
            else:
                if len(page) == _PAGE:
                    continue
            break
    return ExpiryResult(deleted)


def expiry_record(result: ExpiryResult, *, clock: Clock, actor: str) -> AuditRecord:
    """The security event that says what an expiry run removed (``actor``: ``system:retention`` or ``cli:<user>``)."""
    return security_event(
        clock=clock, action="audit.expire", outcome="ok", actor=actor, role=None, target="audit", client_ip="",
        request_id=random_hex(128), status=200, details={"deleted": dict(result.deleted), "total": result.total},
    )


class RetentionTask:
    """Runs ``expire`` every ``every_s`` seconds (on the injected clock) in the running gateway."""

    def __init__(
        self, store: AuditStore, policy: RetentionPolicy, *, clock: Clock, every_s: float, batch_rows: int,
        max_rows: int, on_expired: Callable[[ExpiryResult], None] | None = None,
    ) -> None:
        self._on_expired = on_expired
        self._store = store
        self._policy = policy
        self._clock = clock
        self._every = every_s
        self._batch_rows = batch_rows
        self._max_rows = max_rows
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.runs = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="portcullis-audit-retention")

    async def run_once(self) -> ExpiryResult:
        """One expiry run now; a store outage is logged and counts as nothing removed."""
        try:
            result = await expire(self._store, self._policy, now=self._clock.wall(), batch_rows=self._batch_rows,
                                  max_rows=self._max_rows)
        except StoreUnavailable as exc:
            log.warning("audit retention run failed (%s); retried in %.0fs", exc, self._every)
            return ExpiryResult()
        finally:
            self.runs += 1
        if result.total:
            if self._on_expired is not None:
                self._on_expired(result)
            log.info("audit retention removed %d records (%s)%s", result.total,
                     ", ".join(f"{c} {n}" for c, n in sorted(result.deleted.items())),
                     "; more wait for the next run" if result.stopped_early else "")
        return result

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._every):
                    await self._stop.wait()
            if self._stop.is_set():
                return
            try:
                await self.run_once()
            except Exception:  # a bug here must not stop the gateway; the next run tries again
                log.exception("audit retention run failed")

    async def aclose(self) -> None:
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            await task
