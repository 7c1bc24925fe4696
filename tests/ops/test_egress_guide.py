"""docs/egress.md works as written: its configs are configs the gateway accepts, and every
``portcullis`` command it shows exists and parses with the arguments it is shown with.

The guide is read top to bottom by someone setting up their first egress route; a renamed option
or a config key that moved fails them at the first step, and nothing else would notice.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.core
import yaml
from tests.ops.test_runbooks import commands_in, resolve
from typer.testing import CliRunner

from portcullis.cli.main import app
from portcullis.config.loader import load_config_text

GUIDE = (Path(__file__).resolve().parents[2] / "docs" / "egress.md").read_text()
# The ingress part every config needs (an upstream and a route), added to the guide's egress blocks.
INGRESS = 'version: 1\nupstreams: {api: {url: "http://127.0.0.1:9"}}\nroutes: [{name: health, path: /h, upstream: api}]\n'
KEYS = 'keys: {pepper: "${PORTCULLIS_KEY_PEPPER}"}\n'


def blocks(language: str) -> list[str]:
    return [body for lang, body in re.findall(r"```(\w+)\n(.*?)```", GUIDE, re.S) if lang == language]


CONFIGS = [body for body in blocks("yaml") if "egress" in (yaml.safe_load(body) or {})]
# The guide runs commands from the virtualenv `make run` makes, some inside `$(…)` or after a pipe.
COMMANDS = [[w for w in words if w != "&"] for words in commands_in(
    re.sub(r"(?m)^.*?\.venv/bin/portcullis (.*?)\)?$", r"portcullis \1", GUIDE))]


def test_the_guide_shows_configs_and_commands_at_all() -> None:
    assert len(CONFIGS) >= 5
    assert ["egress", "check", "http://169.254.169.254/latest/meta-data/", "-c", "portcullis.yaml"] in COMMANDS


@pytest.mark.parametrize("body", CONFIGS, ids=[f"config-{i}" for i in range(len(CONFIGS))])
def test_every_egress_config_in_the_guide_is_accepted(body: str) -> None:
    parsed: dict[str, Any] = yaml.safe_load(body)
    text = INGRESS + ("" if "keys" in parsed else KEYS) + body
    config = load_config_text(text, env={"PORTCULLIS_KEY_PEPPER": "p" * 32})
    assert config.egress is not None


@pytest.mark.parametrize("words", COMMANDS, ids=[" ".join(w)[:60] for w in COMMANDS])
def test_every_command_in_the_guide_exists_and_parses(words: list[str]) -> None:
    path, command, rest = resolve(words)
    assert path and not isinstance(command, typer.core.TyperGroup), words
    assert CliRunner().invoke(app, [*path, "--help"]).exit_code == 0
    if rest:
        try:
            with command.make_context("portcullis " + " ".join(path), list(rest)):
                pass
        except typer.TyperException as exc:
            pytest.fail(f"`portcullis {' '.join(words)}`: {getattr(exc, 'format_message', exc.__str__)()}")
