"""Records per second that each audit sink writes: ``python -m bench.audit_sinks``.

Why a separate script: the sinks decide whether the audit writer keeps up with the gateway (a
sink slower than arrivals means records wait in spill files), and their speed depends on the
batch size, not on HTTP. So each sink is measured alone, on this machine's disk and PostgreSQL,
with the records ``AuditRecord`` produces, at the batch sizes the writer uses. A second column
measures the whole writer (``submit`` then a graceful stop) in front of the same sink.

It touches only a temporary directory and one fresh PostgreSQL schema, dropped at the end.
``BENCH_AUDIT_RECORDS`` (default 50,000) sets the records per measurement; ``BENCH_PG_URL`` the
database (default: the test server's URL). PostgreSQL is skipped, and says so, when it does not answer.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from portcullis.audit.chain import Chainer
from portcullis.audit.jsonl import JsonlFileSink
from portcullis.audit.record import AuditRecord
from portcullis.audit.signing import HmacSigner
from portcullis.audit.writer import AuditWriter
from portcullis.clock import SystemClock
from portcullis.stores.base import AuditBatch, AuditSink
from portcullis.stores.postgres import PostgresStore, upgrade
from portcullis.stores.sqlite import SqliteStore

__all__ = ["SinkFigure", "main", "measure"]

PG_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres:postgres@127.0.0.1:5432/test?sslmode=disable")
RECORDS = int(os.environ.get("BENCH_AUDIT_RECORDS", "50000"))
BATCHES = (256, 2048)

Opener = Callable[[str], Awaitable[AuditSink]]


@dataclass(frozen=True, slots=True)
class SinkFigure:
    """One sink's speed: records/s per batch size written straight to it, and through the writer."""

    sink: str
    per_batch: dict[int, float]
    through_writer: float


def records(n: int, tag: str) -> list[AuditRecord]:
    clock = SystemClock()
    return [
        AuditRecord.create(
            clock=clock, request_id=f"{tag}-{i:08d}", client_ip="192.0.2.10", consumer_id="acme", key_id="k1a2b3",
            method="GET", route="orders", path=f"/api/items/{i}", query="view=full", status=200, decision="allowed",
            latency_ms=1.234, bytes_in=0, bytes_out=100, upstream_status=200, user_agent="wrk/4.2",
        )
        for i in range(n)
    ]


async def _direct(sink: AuditSink, batch: int, tag: str) -> float:
    rows = [r.to_dict() for r in records(RECORDS, tag)]
    started = time.perf_counter()
    for start in range(0, len(rows), batch):
        await sink.write(AuditBatch.of(rows[start:start + batch]))  # serialising is part of the cost
    return len(rows) / (time.perf_counter() - started)


async def _through_writer(sink: AuditSink, spill: Path, tag: str) -> float:
    batch = records(RECORDS, tag)
    clock = SystemClock()  # sealed into hash chains with signed checkpoints, as the gateway writes
    writer = AuditWriter([sink], spill_path=spill, clock=clock, batch_size=256, flush_interval_s=0.05,
                         chainer=Chainer(clock=clock, signer=HmacSigner(b"bench-signing-key-" + b"k" * 14)))
    await writer.start()
    started = time.perf_counter()
    for i, record in enumerate(batch):
        writer.submit(record)
        if i % 500 == 499:
            await asyncio.sleep(0)  # let the writer run, as the event loop would between requests
    await writer.aclose()
    return len(batch) / (time.perf_counter() - started)


async def measure(name: str, open_sink: Callable[[str], Awaitable[AuditSink]], tmp: Path) -> SinkFigure:
    """Open a fresh sink per measurement so that table size does not favour the first one."""
    per_batch = {}
    for batch in BATCHES:
        sink = await open_sink(f"b{batch}")
        try:
            per_batch[batch] = await _direct(sink, batch, f"{name}-b{batch}")
        finally:
            await sink.aclose()
    sink = await open_sink("writer")
    through = await _through_writer(sink, tmp / f"{name}.spill", f"{name}-w")
    return SinkFigure(name, per_batch, through)


async def _pg_reachable() -> bool:
    try:
        conn = await asyncpg.connect(PG_URL, timeout=2)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False
    await conn.close()
    return True


async def run() -> list[SinkFigure]:
    figures = []
    with tempfile.TemporaryDirectory(prefix="pcl-audit-bench-") as tmp_name:
        tmp = Path(tmp_name)

        async def jsonl(tag: str) -> AuditSink:
            return JsonlFileSink(tmp / f"audit-{tag}.jsonl", max_bytes=1 << 30, backup_count=1)

        async def sqlite(tag: str) -> AuditSink:
            return await SqliteStore.connect(str(tmp / f"audit-{tag}.db"))

        figures.append(await measure("jsonl", jsonl, tmp))
        figures.append(await measure("sqlite", sqlite, tmp))
        if await _pg_reachable():
            schema = f"pclbench_{uuid.uuid4().hex[:12]}"
            try:
                async def postgres(tag: str) -> AuditSink:
                    conn = await asyncpg.connect(PG_URL, timeout=2)
                    try:
                        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                    finally:
                        await conn.close()
                    await upgrade(PG_URL, schema=schema)
                    return await PostgresStore.connect(PG_URL, schema=schema)

                figures.append(await measure("postgresql", postgres, tmp))
            finally:
                conn = await asyncpg.connect(PG_URL, timeout=2)
                try:
                    await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                finally:
                    await conn.close()
        else:
            print(f"PostgreSQL does not answer at {PG_URL}: skipped")
    return figures


def table(figures: list[SinkFigure]) -> str:
    head = "| sink | " + " | ".join(f"batch {b} (records/s)" for b in BATCHES) + " | through the writer (records/s) |"
    rule = "| --- |" + " ---: |" * (len(BATCHES) + 1)
    rows = [
        f"| {f.sink} | " + " | ".join(f"{f.per_batch[b]:,.0f}" for b in BATCHES) + f" | {f.through_writer:,.0f} |"
        for f in figures
    ]
    return "\n".join([head, rule, *rows])


def main(argv: Any = None) -> None:
    print(f"{RECORDS:,} records per measurement")
    print(table(asyncio.run(run())))


if __name__ == "__main__":
    main()
