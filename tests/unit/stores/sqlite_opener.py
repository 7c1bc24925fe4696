"""The child side of the many-processes test in ``test_sqlite_file.py``: one process that, round
after round, waits with the others at a barrier, then opens that round's fresh SQLite file, reads
and writes once, and reports what went wrong (or ``None``).

Why a module of its own: ``spawn`` children import the function they run, and this one imports
only what a gateway's store needs (not pytest), so twelve of them start quickly.
"""

from __future__ import annotations

import asyncio
import traceback
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

from portcullis.stores.base import ApiKeyRecord
from portcullis.stores.sqlite import SqliteStore

BARRIER_TIMEOUT_S = 60.0


def open_read_write(directory: str, worker: int, rounds: int, barrier: Barrier, results: Queue[object]) -> None:
    """Report ``(round, worker, None | error text)`` for every round."""
    for round_no in range(rounds):
        barrier.wait(BARRIER_TIMEOUT_S)
        try:
            asyncio.run(_once(str(Path(directory) / f"round{round_no}.db"), worker))
        except BaseException as exc:  # reported to the test, which fails with it
            results.put((round_no, worker, "".join(traceback.format_exception(exc))))
        else:
            results.put((round_no, worker, None))


async def _once(path: str, worker: int) -> None:
    store = await SqliteStore.connect(path)
    try:
        await store.list()
        await store.create(ApiKeyRecord(
            key_id=f"k{worker}", consumer_id="acme", secret_hash="ab" * 32, scopes=frozenset(), created_at=1.0,
        ))
    finally:
        await store.aclose()
