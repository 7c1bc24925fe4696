"""The alert rules and the runbooks name only what exists: metrics the gateway exports, runbook
files, and ``portcullis`` commands with the arguments and options they are shown with.

A runbook read at 3 a.m. must work as written: a renamed metric makes a PromQL line return nothing
(an alert that never fires looks exactly like a healthy system), and a renamed command or option
fails in the middle of an incident. Commands are checked by click's own parser, so a missing
required option, an extra argument or a misspelt flag fails here; a command only named in prose
(with nothing after its name) is only looked up.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.core
import typer.main
import yaml
from tests.conftest import GatewayFactory, UpstreamServer
from tests.ops.exported_metrics import TARGET_LABELS, ExportedMetrics, exported_metrics, metric_names_in, selectors_in
from typer.testing import CliRunner

from portcullis.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RUNBOOKS = ROOT / "docs" / "runbooks"
RUNBOOK_FILES = sorted(RUNBOOKS.glob("*.md"))
_FENCE = re.compile(r"```[a-z]*\n(.*?)```", re.S)
_SHELL_BREAKS = ("|", ">", ">>", "&&", ";", "2>&1")


# Read at import: the async tests below must not touch files in the event loop (blockbuster).
RULE_LIST: list[dict[str, object]] = [
    rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
]
ALERT_EXPRESSIONS = "\n".join(str(rule["expr"]) for rule in RULE_LIST)
RUNBOOK_TEXT = {path.name: path.read_text() for path in RUNBOOK_FILES}
OPERATIONS_TEXT = (ROOT / "docs" / "operations.md").read_text()


def rules() -> list[dict[str, object]]:
    return RULE_LIST


@pytest.fixture
async def metrics(make_gateway: GatewayFactory, upstream: UpstreamServer) -> ExportedMetrics:
    return await exported_metrics(make_gateway, upstream)


def unknown_metrics(text: str, metrics: ExportedMetrics) -> set[str]:
    return metric_names_in(text) - metrics.names


def unknown_labels(text: str, metrics: ExportedMetrics) -> list[tuple[str, set[str]]]:
    """Label matchers on series seen on /metrics that use a label those series do not have."""
    return [
        (name, used - metrics.scraped[name] - TARGET_LABELS)
        for name, used in selectors_in(text)
        if name in metrics.scraped and used - metrics.scraped[name] - TARGET_LABELS
    ]


def test_every_alert_links_a_runbook_that_exists() -> None:
    for rule in rules():
        runbook = rule["annotations"]["runbook_url"]  # type: ignore[index]
        assert (ROOT / runbook).is_file(), (rule["alert"], runbook)


def test_the_index_lists_every_runbook_and_every_alert() -> None:
    index = (RUNBOOKS / "README.md").read_text()
    for path in RUNBOOK_FILES:
        if path.name != "README.md":
            assert f"({path.name})" in index, path.name
    for rule in rules():
        assert f"`{rule['alert']}`" in index, rule["alert"]


async def test_the_alert_rules_use_only_exported_metrics_and_labels(metrics: ExportedMetrics) -> None:
    assert metrics.declared >= set(metrics.scraped), "the registry must declare what /metrics serves"
    expressions = ALERT_EXPRESSIONS
    assert metric_names_in(expressions), "no metric found in the rules: is the pattern wrong?"
    assert unknown_metrics(expressions, metrics) == set()
    assert unknown_labels(expressions, metrics) == []


@pytest.mark.parametrize("runbook", sorted(RUNBOOK_TEXT))
async def test_runbooks_name_only_exported_metrics_and_labels(runbook: str, metrics: ExportedMetrics) -> None:
    text = RUNBOOK_TEXT[runbook]
    assert unknown_metrics(text, metrics) == set()
    assert unknown_labels(text, metrics) == []


async def test_the_operations_guide_names_only_exported_metrics_and_every_alert(metrics: ExportedMetrics) -> None:
    assert metric_names_in(OPERATIONS_TEXT)
    # The guide names a histogram by its family (`…_seconds`), the scrape by its samples (`…_bucket`).
    assert {name for name in unknown_metrics(OPERATIONS_TEXT, metrics) if f"{name}_bucket" not in metrics.names} == set()
    for rule in rules():
        assert f"`{rule['alert']}`" in OPERATIONS_TEXT, rule["alert"]


def commands_in(markdown: str) -> list[list[str]]:
    """Every ``portcullis …`` in a fenced block line or an inline code span, as argv after the program name."""
    found: list[str] = []
    for block in _FENCE.findall(markdown):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith("portcullis "):
                found.append(line)
    for span in re.findall(r"`([^`]+)`", _FENCE.sub("", markdown)):
        span = " ".join(span.split())
        if span.startswith("portcullis "):
            found.append(span)
    commands = []
    for text in found:
        words = shlex.split(text.split(" #", 1)[0], posix=True)[1:]
        for i, word in enumerate(words):
            if word in _SHELL_BREAKS:
                words = words[:i]
                break
        commands.append(words)
    return commands


def resolve(words: list[str]) -> tuple[list[str], Any, list[str]]:
    """The command path, the command it names, and the words left for it to parse (typer's own
    click, vendored as ``typer._click`` and not ``click``: hence TyperGroup and TyperException)."""
    command: Any = typer.main.get_command(app)
    path: list[str] = []
    rest = list(words)
    while isinstance(command, typer.core.TyperGroup) and rest and not rest[0].startswith("-"):
        sub = command.get_command(typer.Context(command), rest[0])
        assert sub is not None, f"no command `portcullis {' '.join([*path, rest[0]])}`"
        command = sub
        path.append(rest.pop(0))
    return path, command, rest


ALL_COMMANDS = [(name, words) for name, text in RUNBOOK_TEXT.items() for words in commands_in(text)]


def test_the_runbooks_name_commands_at_all() -> None:
    assert len(ALL_COMMANDS) > 50
    assert ["blocks", "add", "address", "203.0.113.0/24", "--reason", "flood on orders, ticket 4711", "--expires",
            "1h"] in [words for _, words in ALL_COMMANDS]


@pytest.mark.parametrize(("runbook", "words"), ALL_COMMANDS, ids=[f"{n}:{' '.join(w)[:60]}" for n, w in ALL_COMMANDS])
def test_every_command_a_runbook_names_exists_and_parses(runbook: str, words: list[str]) -> None:
    path, command, rest = resolve(words)
    assert path, f"{runbook}: `portcullis {' '.join(words)}` names no command"
    assert not isinstance(command, typer.core.TyperGroup), f"{runbook}: `portcullis {' '.join(path)}` is a group, not a command"
    answer = CliRunner().invoke(app, [*path, "--help"])
    assert answer.exit_code == 0, answer.output
    if rest:
        try:
            with command.make_context("portcullis " + " ".join(path), list(rest)):
                pass
        except typer.TyperException as exc:
            pytest.fail(f"{runbook}: `portcullis {' '.join(words)}`: {getattr(exc, 'format_message', exc.__str__)()}")
