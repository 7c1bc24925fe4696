"""``portcullis egress check``: the guard's verdict from the command line, nothing sent."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner, Result

from portcullis.cli.main import app

runner = CliRunner()


def egress(*args: str) -> Result:
    return runner.invoke(app, ["egress", "check", *args], env={"COLUMNS": "200"})


def test_a_public_answer_is_allowed_and_shows_the_pinned_addresses() -> None:
    r = egress("https://api.github.com/repos", "--resolve", "api.github.com=140.82.112.6,140.82.112.5")
    assert r.exit_code == 0, r.output
    assert "allowed" in r.output and "140.82.112.6, 140.82.112.5" in r.output


@pytest.mark.parametrize(("args", "reason"), [
    (["http://169.254.169.254/latest/meta-data/", "--allow-http"], "address_link_local"),
    (["https://metadata.google.internal/"], "metadata_host"),
    (["https://rebind.example/", "--resolve", "rebind.example=93.184.216.34,10.0.0.1"], "address_private"),
    (["https://0x7f000001/"], "non_canonical_ip"),
    (["http://public.example/", "--resolve", "public.example=93.184.216.34"], "https_required"),
    (["https://nowhere.example/", "--resolve", "other.example=93.184.216.34"], "resolution_failed"),
])
def test_a_blocked_url_exits_3_with_the_reason(args: list[str], reason: str) -> None:
    r = egress(*args)
    assert r.exit_code == 3, r.output
    assert f"blocked: {reason}" in r.output


def test_route_style_exceptions_can_be_tried_from_the_command_line() -> None:
    r = egress("https://crm.corp.example/", "--resolve", "crm.corp.example=10.20.30.40",
               "--allow-network", "10.20.0.0/16", "--allow-host", "*.corp.example")
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("args", [["https://x.example/", "--resolve", "x.example"],
                                  ["https://x.example/", "--resolve", "x.example=not-an-ip"],
                                  ["https://x.example/", "--allow-network", "10.0.0.0/99"]])
def test_bad_options_exit_2_without_a_traceback(args: list[str]) -> None:
    r = egress(*args)
    assert r.exit_code == 2 and "Traceback" not in r.output
