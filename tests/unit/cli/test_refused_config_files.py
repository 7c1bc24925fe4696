"""A config file refused before validation (a YAML bomb, not UTF-8) is one red line and exit 2 in
every command that reads it; an output file that cannot be written is one line and exit 1."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.unit.config.test_safe_yaml import BILLION_LAUGHS
from typer.testing import CliRunner

from portcullis.cli.main import app

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "80"})
    return result.exit_code, result.output


COMMANDS = [
    pytest.param(("check",), id="check"),
    pytest.param(("serve",), id="serve"),
    pytest.param(("explain",), id="explain"),
]


@pytest.mark.parametrize("command", COMMANDS)
def test_the_billion_laughs_file_is_refused_in_one_line(tmp_path: Path, command: tuple[str, ...]) -> None:
    # CVE-2019-11253's shape, prefixed so the file otherwise looks like a gateway config.
    path = tmp_path / "laughs.yaml"
    path.write_text("version: 1\n" + BILLION_LAUGHS)
    extra = ("GET", "/") if command == ("explain",) else ()
    code, out = invoke(*command, str(path), *extra)
    assert code == 2
    assert out.strip().splitlines() == [
        f"{'✗ ' if command != ('serve',) else ''}invalid config: {path}, line 3, column 8: refused: YAML aliases "
        "(*name, <<: *name) are not accepted in a config; write the value out"
    ]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_non_utf8_file_is_refused_in_one_line(tmp_path: Path, command: tuple[str, ...]) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"version: 1\n# caf\xe9\n")
    extra = ("GET", "/") if command == ("explain",) else ()
    code, out = invoke(*command, str(path), *extra)
    assert code == 2
    assert out.strip().splitlines() == [
        f"{'✗ ' if command != ('serve',) else ''}invalid config: {path}, line 2: not UTF-8 text "
        "(byte 0xe9 at byte offset 16)"
    ]


def test_a_store_command_refuses_a_yaml_bomb_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text(BILLION_LAUGHS)
    code, out = invoke("keys", "list", "-c", str(path))
    assert code == 2
    assert out.strip().splitlines() == [
        f"invalid config: {path}, line 2, column 8: refused: YAML aliases (*name, <<: *name) are not accepted "
        "in a config; write the value out"
    ]


def test_a_legitimate_config_still_checks(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text("upstreams: {api: {url: 'http://127.0.0.1:9'}}\n"
                    "routes: [{name: r, path: /r, upstream: api, auth: none}]\n")
    result = runner.invoke(app, ["check", str(path)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert result.output.endswith(f"✓ {path} is valid\n")


@pytest.mark.parametrize(("target", "why"), [
    pytest.param("missing-dir/ref.md", "No such file or directory", id="missing-directory"),
    pytest.param(".", "Is a directory", id="a-directory"),
])
def test_config_reference_to_a_path_that_cannot_be_written_is_one_line_and_exit_1(
    tmp_path: Path, target: str, why: str
) -> None:
    output = tmp_path / target
    code, out = invoke("config-reference", "--output", str(output))
    assert code == 1
    assert out.strip().splitlines() == [f"cannot write {output}: {why}"]

