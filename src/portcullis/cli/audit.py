"""``portcullis audit verify | expire | search | export | tail | public-key``: the trail as evidence.

Every command reads the store (and, for ``verify``, the JSONL files) named by the gateway's config
(``-c``/``PORTCULLIS_CONFIG``), like ``portcullis keys``. ``verify`` checks the hash chains and the
signed checkpoints (``audit.verify``); ``expire`` applies ``audit.retention`` now; ``search`` shows
one page with a cursor for the next; ``export`` streams every match as JSONL or CSV, page by page;
``tail`` follows new records, polling at a bounded interval, until ``--limit`` or Ctrl-C.

Output: tables only on a terminal, with ids never wrapped or cut (they are what an operator copies
into the next command); when piped, one tab-separated line per record, whole. Stored text is never
read as Rich markup.

Exit codes: 0 done (``verify``: every chain verifies), 1 the store is unavailable, 2 bad input or
config, 3 ``verify`` found a problem.
"""

from __future__ import annotations

import asyncio
import datetime
import getpass
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from portcullis.audit.chain import ChainHead, read_heads
from portcullis.audit.export import ExportFormat, export, records
from portcullis.audit.retention import ExpiryResult, expiry_record
from portcullis.audit.retention import expire as expire_records
from portcullis.audit.setup import audit_chainer, audit_signer
from portcullis.audit.signing import CheckpointSigner, Ed25519Signer, SigningKeyInvalid
from portcullis.audit.verify import VerifyReport, rotated_files, verify_files, verify_store
from portcullis.cli.common import ConfigOption, JsonOption, fail, load_or_fail, when, with_store
from portcullis.clock import Clock, SystemClock
from portcullis.config.model import GatewayConfig
from portcullis.config.types import parse_duration
from portcullis.stores.audit_rows import CursorInvalid, encode_cursor
from portcullis.stores.base import AuditBatch, AuditPage, AuditSearch, Store

__all__ = ["app"]

app = typer.Typer(help="Verify, expire, search, export and follow the audit trail.", no_args_is_help=True)

_T = TypeVar("_T")
_PROBLEM_EXIT = 3
_TAIL_INTERVAL = (0.2, 60.0)

Since = Annotated[str | None, typer.Option(help="From this time: ISO 8601 (2026-01-02T03:04:05Z) or an age (2h, 7d).")]
Until = Annotated[str | None, typer.Option(help="Before this time: ISO 8601 or an age.")]
Consumer = Annotated[str | None, typer.Option(help="Only this consumer.")]
Key = Annotated[str | None, typer.Option("--key", help="Only this API key id.")]
Route = Annotated[str | None, typer.Option(help="Only this route.")]
Decision = Annotated[str | None, typer.Option(help="Only this decision (allowed, rate_limited:…, …).")]
Status = Annotated[int | None, typer.Option(help="Only this HTTP status.")]
Workflow = Annotated[str | None, typer.Option(help="Only this egress workflow id.")]
Execution = Annotated[str | None, typer.Option(help="Only this egress execution id.")]
User = Annotated[str | None, typer.Option(help="Only this egress user id.")]
RequestId = Annotated[str | None, typer.Option("--request-id", help="Only this request id.")]
Class = Annotated[str | None, typer.Option("--class", help="Only this class: request, security, compliance, debug.")]


def _time(value: str | None, option: str, now: float) -> float | None:
    if value is None:
        return None
    try:
        return now - parse_duration(value)
    except ValueError:
        pass
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise fail(f"{option}: expected ISO 8601 (2026-01-02T03:04:05Z) or an age such as 2h or 7d") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()


def _search(
    *, since: str | None, until: str | None, consumer: str | None, key: str | None, route: str | None,
    decision: str | None, status: int | None, workflow: str | None, execution: str | None, user: str | None,
    request_id: str | None, record_class: str | None, limit: int = 100, cursor: str | None = None,
) -> AuditSearch:
    now = SystemClock().wall()
    return AuditSearch(
        since=_time(since, "--since", now), until=_time(until, "--until", now), consumer_id=consumer, key_id=key,
        route=route, decision=decision, status=status, workflow_id=workflow, execution_id=execution, user_id=user,
        request_id=request_id, record_class=record_class, limit=limit, cursor=cursor,
    )


def _on_store(cfg: GatewayConfig, work: Callable[[Store], Awaitable[_T]]) -> _T:
    async def guarded(store: Store) -> _T:
        try:
            return await work(store)
        except CursorInvalid:
            raise fail("--cursor: not a cursor this store handed out") from None

    return with_store(cfg.store, guarded)


# --- verify -------------------------------------------------------------------------------------


@app.command()
def verify(
    config: ConfigOption = Path("portcullis.yaml"),
    files_only: Annotated[bool, typer.Option("--files-only", help="Only the JSONL file and rotated copies.")] = False,
    store_only: Annotated[bool, typer.Option("--store-only", help="Only the store's audit table.")] = False,
    public_key: Annotated[Path | None, typer.Option(
        help="Verify ed25519 checkpoints with this PEM public key instead of the configured key.")] = None,
    heads: Annotated[Path | None, typer.Option(
        help="Expected chain heads (a copy of the writer's head file); default: the writer's own, if present.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Check the hash chains and signed checkpoints; name the first record changed, removed, reordered or cut."""
    cfg = load_or_fail(config)
    signer = _verifier(cfg, public_key)
    expected = _heads(heads or Path(cfg.audit.heads_file), explicit=heads is not None)
    reports: dict[str, VerifyReport] = {}
    if not store_only and cfg.audit.file:
        paths = rotated_files(Path(cfg.audit.file))
        reports["files"] = verify_files(paths, signer=signer, heads=expected)
    if not files_only and cfg.audit.to_store:
        reports["store"] = _on_store(cfg, lambda store: verify_store(store, signer=signer, heads=expected))
    if as_json:
        typer.echo(json.dumps({name: r.to_dict() for name, r in reports.items()}))
    else:
        _print_reports(reports)
    if any(not r.ok for r in reports.values()):
        raise typer.Exit(_PROBLEM_EXIT)


def _verifier(cfg: GatewayConfig, public_key: Path | None) -> CheckpointSigner | None:
    if public_key is None:
        return audit_signer(cfg.audit)
    try:
        return Ed25519Signer.verifier_only(public_key.read_bytes())
    except OSError as exc:
        raise fail(f"--public-key: cannot read {public_key}: {exc.strerror}") from None
    except SigningKeyInvalid as exc:
        raise fail(f"--public-key: {exc}") from None


def _heads(path: Path, *, explicit: bool) -> list[ChainHead]:
    if explicit and not path.exists():
        raise fail(f"--heads: {path} does not exist")
    return list(read_heads(path).values())


def _print_reports(reports: dict[str, VerifyReport]) -> None:
    out = Console(highlight=False, soft_wrap=True)
    for name, report in reports.items():
        verdict = Text("verified", style="green") if report.ok else Text("PROBLEMS FOUND", style="red bold")
        out.print(Text(f"{name}: ").append(verdict).append(
            f" ({len(report.chains)} chains; signatures {'checked' if report.signatures_checked else 'NOT checked'})"))
        for p in report.problems:
            out.print(Text(f"  {p.kind.value}: chain {p.chain} seq {p.seq}"
                           + (f" record {p.record_id}" if p.record_id else "") + f" at {p.where}: {p.detail}",
                           style="red"))
        for c in report.chains:
            start = "checkpoint" if c.anchored else "a bare record (earlier ones rotated, expired or removed)"
            out.print(Text(f"  {c.chain}: seq {c.first_seq}..{c.last_seq}, {c.records} records, attested to"
                           f" {c.attested_seq}{', closed' if c.final else ''}; starts at {start}"))
        counts = ((report.unchained, "unchained (older) records"), (report.duplicates, "duplicate lines"),
                  (report.torn, "torn lines"))
        extra = [f"{n} {what}" for n, what in counts if n]
        if extra:
            out.print(Text("  " + "; ".join(extra)))


# --- expire, public-key ----------------------------------------------------------------------


@app.command("expire")
def expire_command(config: ConfigOption = Path("portcullis.yaml"), as_json: JsonOption = False) -> None:
    """Remove records past their class's retention now (export them first if they must be kept)."""
    cfg = load_or_fail(config)
    r = cfg.audit.retention
    clock = SystemClock()

    async def run(store: Store) -> ExpiryResult:
        result = await expire_records(store, r, now=clock.wall(), batch_rows=r.batch_rows)
        if result.total:
            # The run's own record, in a chain of its own (genesis, the event, a final checkpoint).
            chainer = audit_chainer(cfg.audit, clock=clock, head_file=None)
            event = expiry_record(result, clock=clock, actor=f"cli:{getpass.getuser()}")
            sealed, closed = chainer.seal([event.to_dict()]), chainer.close()
            await store.write(AuditBatch(sealed.rows + closed.rows, sealed.lines + closed.lines))
        return result

    result = _on_store(cfg, run)
    if as_json:
        typer.echo(json.dumps({"deleted": result.deleted, "total": result.total}))
    else:
        parts = ", ".join(f"{c} {n}" for c, n in sorted(result.deleted.items())) or "nothing was due"
        typer.echo(f"removed {result.total} records ({parts})")


@app.command("public-key")
def public_key_command(config: ConfigOption = Path("portcullis.yaml")) -> None:
    """Print the PEM public key of an ed25519 signing key, for auditors' `verify --public-key`."""
    cfg = load_or_fail(config)
    signer = audit_signer(cfg.audit)
    if not isinstance(signer, Ed25519Signer):
        raise fail("audit.signing_key is not an ed25519 key (audit.signing_algorithm: ed25519)")
    typer.echo(signer.public_pem().decode(), nl=False)


# --- search, export, tail ----------------------------------------------------------------------


@app.command()
def search(
    config: ConfigOption = Path("portcullis.yaml"),
    since: Since = None, until: Until = None, consumer: Consumer = None, key: Key = None, route: Route = None,
    decision: Decision = None, status: Status = None, workflow: Workflow = None, execution: Execution = None,
    user: User = None, request_id: RequestId = None, record_class: Class = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="Records per page.")] = 50,
    cursor: Annotated[str | None, typer.Option(help="Continue after the page that printed this cursor.")] = None,
    as_json: JsonOption = False,
) -> None:
    """One page of matching records, oldest first, and the cursor for the next page."""
    cfg = load_or_fail(config)
    query = _search(since=since, until=until, consumer=consumer, key=key, route=route, decision=decision,
                    status=status, workflow=workflow, execution=execution, user=user, request_id=request_id,
                    record_class=record_class, limit=limit, cursor=cursor)
    page: AuditPage = _on_store(cfg, lambda store: store.search_audit(query))
    if as_json:
        typer.echo(json.dumps({"records": page.records, "next_cursor": page.next_cursor}))
        return
    _print_records(page.records)
    if page.next_cursor:
        Console(stderr=True, highlight=False, soft_wrap=True).print(Text(f"next page: --cursor {page.next_cursor}"))


@app.command("export")
def export_command(
    config: ConfigOption = Path("portcullis.yaml"),
    since: Since = None, until: Until = None, consumer: Consumer = None, key: Key = None, route: Route = None,
    decision: Decision = None, status: Status = None, workflow: Workflow = None, execution: Execution = None,
    user: User = None, request_id: RequestId = None, record_class: Class = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl, csv or ocsf (one OCSF event a line).")] = "jsonl",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here (0600) instead of stdout.")] = None,
) -> None:
    """Every matching record, streamed page by page as JSON lines, CSV or OCSF events."""
    if fmt not in ("jsonl", "csv", "ocsf"):
        raise fail("--format: jsonl, csv or ocsf")
    cfg = load_or_fail(config)
    query = _search(since=since, until=until, consumer=consumer, key=key, route=route, decision=decision,
                    status=status, workflow=workflow, execution=execution, user=user, request_id=request_id,
                    record_class=record_class)
    export_format: ExportFormat = "csv" if fmt == "csv" else "ocsf" if fmt == "ocsf" else "jsonl"

    async def run(store: Store) -> int:
        count = 0
        sink = _open_output(output)
        try:
            async for chunk in export(store, query, fmt=export_format):
                await asyncio.to_thread(sink.write, chunk)
                count += 1
        finally:
            await asyncio.to_thread(sink.flush)
            if output is not None:
                await asyncio.to_thread(sink.close)
        return count - (1 if export_format == "csv" else 0)

    written = _on_store(cfg, run)
    if output is not None:
        typer.echo(f"exported {written} records to {output}", err=True)


def _open_output(output: Path | None) -> Any:
    if output is None:
        return sys.stdout.buffer
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise fail(f"--output: cannot write {output}: {exc.strerror}") from None
    return os.fdopen(fd, "wb")


@app.command()
def tail(
    config: ConfigOption = Path("portcullis.yaml"),
    since: Since = None, consumer: Consumer = None, key: Key = None, route: Route = None, decision: Decision = None,
    status: Status = None, workflow: Workflow = None, execution: Execution = None, user: User = None,
    request_id: RequestId = None, record_class: Class = None,
    interval: Annotated[str, typer.Option(help="How often to look for new records (0.2s to 60s).")] = "1s",
    limit: Annotated[int | None, typer.Option(min=1, help="Stop after this many records.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Follow new records as they reach the store (from now, or --since) until --limit or Ctrl-C."""
    try:
        every = parse_duration(interval)
    except ValueError as exc:
        raise fail(f"--interval: {exc}") from None
    every = min(max(every, _TAIL_INTERVAL[0]), _TAIL_INTERVAL[1])
    cfg = load_or_fail(config)
    query = _search(since=since or "0s", until=None, consumer=consumer, key=key, route=route, decision=decision,
                    status=status, workflow=workflow, execution=execution, user=user, request_id=request_id,
                    record_class=record_class)
    emit = _line_printer(as_json)
    try:
        _on_store(cfg, lambda store: follow(store, query, emit, clock=SystemClock(), every_s=every, limit=limit))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


async def follow(
    store: Store, query: AuditSearch, emit: Callable[[dict[str, Any]], None], *, clock: Clock, every_s: float,
    limit: int | None,
) -> int:
    """Emit matching records as they appear, polling every ``every_s``; returns how many were emitted."""
    emitted = 0
    while True:
        async for record in records(store, query, page_size=500):
            emit(record)
            emitted += 1
            query = replace(query, cursor=encode_cursor(float(record["ts"]), str(record["id"])))
            if limit is not None and emitted >= limit:
                return emitted
        await clock.sleep(every_s)


# --- output --------------------------------------------------------------------------------------

def _cells(record: dict[str, Any]) -> tuple[str, ...]:
    """time, class, status, decision, consumer, route, request id: the piped line's fields."""
    return (when(record.get("ts")), str(record.get("class", "request")), str(record.get("status", "")),
            str(record.get("decision", "")), str(record.get("consumer_id") or "-"), str(record.get("route") or "-"),
            str(record.get("request_id", "")))


def _print_records(rows: list[dict[str, Any]]) -> None:
    """A table on a terminal, plain lines when piped. At 80 columns the time, status and request id
    keep their full width (never wrapped or cut); the rest shares one folded column."""
    console = Console(highlight=False)
    if not console.is_terminal:
        for record in rows:
            typer.echo("\t".join(_cells(record)))
        return
    table = Table(title=f"{len(rows)} audit records", box=box.SIMPLE_HEAD, pad_edge=False,
                  collapse_padding=True)
    table.add_column("time", no_wrap=True, overflow="ignore")
    table.add_column("code", no_wrap=True, overflow="ignore")
    table.add_column("request id", no_wrap=True, overflow="ignore")
    table.add_column("class · consumer · route · decision", overflow="fold", min_width=16, ratio=1)
    for record in rows:
        ts, cls, status, decision, consumer, route, request_id = _cells(record)
        # Text: stored values are never read as Rich markup
        table.add_row(Text(ts), Text(status), Text(request_id), Text(f"{cls} · {consumer} · {route} · {decision}"))
    console.print(table)


def _line_printer(as_json: bool) -> Callable[[dict[str, Any]], None]:
    def emit(record: dict[str, Any]) -> None:
        typer.echo(json.dumps(record) if as_json else "\t".join(_cells(record)))

    return emit
