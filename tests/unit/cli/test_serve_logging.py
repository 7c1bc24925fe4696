"""``portcullis serve`` sets up logging from ``log.format`` and ``log.level``; ``--log-level``, when given, wins."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from portcullis.cli import serve as serve_module
from portcullis.cli import serving
from portcullis.cli.main import app

CONFIG = """
version: 1
log: {format: json, level: error}
store: {url: "sqlite:///gw.db"}
upstreams:
  api: {url: "http://127.0.0.1:9"}
routes:
  - {name: open, path: "/open", upstream: api, auth: none}
"""


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any, Any]]:
    """What ``serve`` asked of logging and of the server, with neither run."""
    seen: list[tuple[str, Any, Any]] = []
    monkeypatch.setattr(serve_module, "configure_logging", lambda fmt, level: seen.append(("logging", fmt, level)))
    monkeypatch.setattr(serve_module, "_check_vault", lambda store: None)
    monkeypatch.setattr(serving, "serve_forever", lambda path, *, log_level: seen.append(("serve", path, log_level)))
    return seen


@pytest.mark.parametrize(("flag", "level"), [((), logging.ERROR), (("--log-level", "DEBUG"), logging.DEBUG)],
                         ids=["config", "flag"])
def test_the_flag_wins_over_the_config_level(
    tmp_path: Path, calls: list[tuple[str, Any, Any]], flag: tuple[str, ...], level: int
) -> None:
    config = tmp_path / "portcullis.yaml"
    config.write_text(CONFIG)
    result = CliRunner().invoke(app, ["serve", str(config), *flag])
    assert result.exit_code == 0, result.output
    assert calls == [("logging", "json", level), ("serve", config, level if flag else None)]


def test_an_unknown_level_is_refused_in_one_line(tmp_path: Path, calls: list[tuple[str, Any, Any]]) -> None:
    config = tmp_path / "portcullis.yaml"
    config.write_text(CONFIG)
    result = CliRunner().invoke(app, ["serve", str(config), "--log-level", "loud"], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert result.output.strip() == "unknown log level 'loud': choose debug, info, warning or error"
    assert calls == []
