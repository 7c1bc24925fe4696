"""``portcullis audit verify | expire | search | export | tail | public-key`` through the root app,
against a trail a real writer sealed into a JSONL file and a SQLite store named by a real config.

What is asserted is what an operator sees: output, exit codes, files written.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import stat
from pathlib import Path

import pytest
from tests.audit_trail import record
from tests.ocsf_schema import ocsf_errors
from typer.testing import CliRunner, Result

from portcullis.audit.jsonl import JsonlFileSink
from portcullis.audit.setup import audit_chainer
from portcullis.audit.writer import AuditWriter
from portcullis.config.loader import load_config
from portcullis.stores.sqlite import SqliteStore
from portcullis.testing import ManualClock

runner = CliRunner()
HMAC_KEY = "audit-signing-key-" + "s" * 20


def write_config(tmp_path: Path, *, audit_extra: str = f'signing_key: "{HMAC_KEY}"') -> Path:
    path = tmp_path / "portcullis.yaml"
    path.write_text(
        f'store: {{url: "sqlite:///{tmp_path / "p.db"}"}}\n'
        f'audit: {{file: "{tmp_path / "audit.jsonl"}", spill_file: "{tmp_path / "spill.jsonl"}",'
        f' heads_file: "{tmp_path / "heads.json"}", {audit_extra}}}\n'
        'upstreams: {api: {url: "http://127.0.0.1:9"}}\n'
        'routes: [{name: r, path: "/r", upstream: api, auth: none}]\n'
    )
    return path


def seal_trail(config: Path, count: int = 30, *, clock: ManualClock | None = None) -> ManualClock:
    cfg = load_config(config)
    clock = clock or ManualClock()

    async def run() -> None:
        store = await SqliteStore.connect(cfg.store.sqlite_path)
        spill = Path(cfg.audit.spill_file)
        writer = AuditWriter(
            {"file": JsonlFileSink(Path(str(cfg.audit.file)), max_bytes=0, backup_count=0), "store": store},
            spill_path=spill, clock=clock, chainer=audit_chainer(cfg.audit, clock=clock, head_file=Path(cfg.audit.heads_file)),
        )
        await writer.start()
        for n in range(count):
            writer.submit(record(clock, n, consumer_id="acme" if n % 2 else "globex"))
        await writer.aclose()

    asyncio.run(run())
    return clock


def audit(*args: str) -> Result:
    from portcullis.cli.main import app

    return runner.invoke(app, ["audit", *args], env={"COLUMNS": "80"})


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = write_config(tmp_path)
    seal_trail(path)
    return path


def test_verify_reports_an_untouched_trail_verified_in_files_and_store(config: Path) -> None:
    result = audit("verify", "-c", str(config))
    assert result.exit_code == 0, result.output
    assert "files: verified" in result.stdout and "store: verified" in result.stdout
    assert "signatures checked" in result.stdout


def test_verify_names_a_deleted_line_and_exits_3(config: Path, tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = path.read_bytes().splitlines()
    doomed = next(i for i, line in enumerate(lines) if b'"seq":12,' in line and b'"kind"' not in line)
    path.write_bytes(b"\n".join(lines[:doomed] + lines[doomed + 1:]) + b"\n")
    result = audit("verify", "-c", str(config), "--files-only", "--json")
    assert result.exit_code == 3
    (problem,) = json.loads(result.stdout)["files"]["problems"]
    assert (problem["kind"], problem["seq"]) == ("missing", 12)


def test_verify_with_another_key_names_the_first_checkpoint_forged(config: Path, tmp_path: Path) -> None:
    other = write_config(tmp_path, audit_extra=f'signing_key: "{"x" * 40}"')
    result = audit("verify", "-c", str(other), "--store-only")
    assert result.exit_code == 3
    assert "checkpoint_forged: chain " in result.stdout and " seq 0 " in result.stdout


def test_verify_against_the_writers_head_file_catches_a_cut_tail(config: Path, tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = path.read_bytes().splitlines()
    cut = next(i for i, line in enumerate(lines) if b'"seq":25,' in line)
    path.write_bytes(b"\n".join(lines[:cut]) + b"\n")
    result = audit("verify", "-c", str(config), "--files-only", "--json")
    assert result.exit_code == 3
    (problem,) = json.loads(result.stdout)["files"]["problems"]
    assert (problem["kind"], problem["seq"]) == ("truncated", 25)


def test_search_filters_and_pages_with_a_cursor(config: Path) -> None:
    first = audit("search", "-c", str(config), "--consumer", "acme", "--limit", "10", "--json")
    assert first.exit_code == 0, first.output
    page = json.loads(first.stdout)
    assert len(page["records"]) == 10 and {r["consumer_id"] for r in page["records"]} == {"acme"}
    second = json.loads(audit("search", "-c", str(config), "--consumer", "acme", "--limit", "10",
                              "--cursor", page["next_cursor"], "--json").stdout)
    assert len(second["records"]) == 5 and second["next_cursor"] is None
    assert not {r["id"] for r in page["records"]} & {r["id"] for r in second["records"]}


def test_search_piped_prints_one_whole_line_per_record(config: Path) -> None:
    result = audit("search", "-c", str(config), "--request-id", "req-7")
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    assert line.split("\t")[1:] == ["request", "200", "allowed", "acme", "orders", "req-7"]


def test_a_bad_cursor_or_time_is_refused_with_exit_2(config: Path) -> None:
    assert audit("search", "-c", str(config), "--cursor", "nope").exit_code == 2
    assert audit("search", "-c", str(config), "--since", "yesterday-ish").exit_code == 2


def test_export_writes_csv_to_a_private_file(config: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    result = audit("export", "-c", str(config), "--format", "csv", "--output", str(out), "--consumer", "globex")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 15 and {r["consumer_id"] for r in rows} == {"globex"}
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_export_as_jsonl_streams_to_stdout(config: Path) -> None:
    result = audit("export", "-c", str(config), "--since", "2023-11-14T00:00:00Z")
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["request_id"] for line in result.stdout.splitlines()] == [f"req-{n}" for n in range(30)]


def test_export_as_ocsf_prints_one_valid_event_a_line(config: Path) -> None:
    result = audit("export", "-c", str(config), "--format", "ocsf", "--consumer", "globex")
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    # each served request with a key is an HTTP Activity and an Authentication (success)
    assert [(e["class_uid"], e["http_request"]["uid"]) for e in events] == [
        (cls, f"req-{n}") for n in range(0, 30, 2) for cls in (4002, 3002)]
    assert all(ocsf_errors(e) == [] for e in events)


def test_export_refuses_an_unknown_format(config: Path) -> None:
    result = audit("export", "-c", str(config), "--format", "xml")
    assert result.exit_code == 2 and "jsonl, csv or ocsf" in result.output


def test_tail_prints_records_as_they_come_and_stops_at_its_limit(config: Path) -> None:
    result = audit("tail", "-c", str(config), "--since", "2023-11-14T00:00:00Z", "--limit", "3", "--json")
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["request_id"] for line in result.stdout.splitlines()] == ["req-0", "req-1", "req-2"]


def test_expire_removes_records_past_their_retention(tmp_path: Path) -> None:
    config = write_config(tmp_path, audit_extra='checkpoint_every: 10, retention: {request: "1s"}')
    seal_trail(config)  # records from 2023: long past one second
    result = audit("expire", "-c", str(config), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"deleted": {"request": 30}, "total": 30}
    assert audit("verify", "-c", str(config), "--store-only").exit_code == 0


def test_expire_leaves_a_signed_security_record_of_what_it_removed(tmp_path: Path) -> None:
    config = write_config(tmp_path, audit_extra=f'signing_key: "{HMAC_KEY}", retention: {{request: "1s"}}')
    seal_trail(config)
    assert audit("expire", "-c", str(config)).exit_code == 0
    found = json.loads(audit("search", "-c", str(config), "--class", "security", "--json").stdout)["records"]
    (event,) = found
    assert event["decision"] == "audit.expire:ok" and event["event"]["deleted"] == {"request": 30}
    assert event["event"]["actor"].startswith("cli:")
    assert audit("verify", "-c", str(config), "--store-only").exit_code == 0


def test_public_key_prints_what_verify_accepts_for_ed25519(tmp_path: Path) -> None:
    seed = base64.b64encode(b"e" * 32).decode()
    config = write_config(tmp_path, audit_extra=f'signing_algorithm: ed25519, signing_key: "{seed}"')
    seal_trail(config)
    pem = audit("public-key", "-c", str(config))
    assert pem.exit_code == 0 and pem.stdout.startswith("-----BEGIN PUBLIC KEY-----")
    (tmp_path / "pub.pem").write_text(pem.stdout)
    unsigned = write_config(tmp_path, audit_extra="checkpoint_every: 10")  # the auditor holds no private key
    assert audit("verify", "-c", str(unsigned), "--public-key", str(tmp_path / "pub.pem")).exit_code == 0


def test_search_on_an_80_column_terminal_keeps_ids_and_times_whole(config: Path) -> None:
    from portcullis.cli.main import app

    result = runner.invoke(app, ["audit", "search", "-c", str(config), "--limit", "3"],
                           env={"COLUMNS": "80", "FORCE_COLOR": "1", "TTY_COMPATIBLE": "1"})
    assert result.exit_code == 0, result.output
    records = json.loads(audit("search", "-c", str(config), "--limit", "3", "--json").stdout)["records"]
    assert "audit records" in result.stdout  # the table, not piped lines
    for r in records:
        assert r["request_id"] in result.stdout and "2023-11-14 22:13:20Z" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines() if "\x1b" not in line) <= 80
