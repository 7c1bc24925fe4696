"""``portcullis db upgrade | status`` on the SQLite store (the PostgreSQL side runs in the
multi-instance suite, against the real server)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from portcullis.cli.main import app
from portcullis.stores.sqlite import SCHEMA_VERSION

runner = CliRunner()


def config(tmp_path: Path, url: str | None = None) -> Path:
    path = tmp_path / "portcullis.yaml"
    store_url = url or f"sqlite:///{tmp_path / 'p.db'}"
    path.write_text(
        f'store: {{url: "{store_url}"}}\n'
        'upstreams: {api: {url: "http://127.0.0.1:9"}}\n'
        "routes: [{name: r, path: /r, upstream: api, auth: none}]\n"
    )
    return path


def test_status_says_a_new_file_is_behind_and_upgrade_brings_it_current(tmp_path: Path) -> None:
    path = config(tmp_path)
    behind = runner.invoke(app, ["db", "status", "--config", str(path)])
    assert behind.exit_code == 1 and "behind: run `portcullis db upgrade`" in behind.output
    first = runner.invoke(app, ["db", "upgrade", "--config", str(path), "--json"])
    assert first.exit_code == 0 and json.loads(first.output)["after"] == SCHEMA_VERSION
    assert json.loads(first.output)["before"] == 0
    again = runner.invoke(app, ["db", "upgrade", "--config", str(path)])
    assert again.exit_code == 0 and f"schema is current (version {SCHEMA_VERSION})" in again.output
    current = runner.invoke(app, ["db", "status", "--config", str(path), "--json"])
    assert current.exit_code == 0 and json.loads(current.output)["current"] is True


def test_an_unreachable_database_is_one_line_without_the_password(tmp_path: Path) -> None:
    path = config(tmp_path, "postgresql://gw:hunter2-secret@127.0.0.1:1/test?sslmode=disable")
    result = runner.invoke(app, ["db", "upgrade", "--config", str(path)])
    assert result.exit_code == 1
    assert "store unavailable (postgresql://gw@127.0.0.1:1/test)" in result.output
    assert "hunter2" not in result.output and "Traceback" not in result.output
