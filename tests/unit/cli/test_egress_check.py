"""``portcullis egress check``: the guard's verdict from the command line, nothing sent."""

from __future__ import annotations

from pathlib import Path

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


CONFIG = """
keys: {pepper: "egress-check-test-pepper-0123456789abcdef"}
upstreams: {api: {url: "http://127.0.0.1:9"}}
routes: [{name: r, path: /r, upstream: api, auth: none}]
egress:
  allow_hosts: ["api.github.com", "crm.corp.example"]
  routes:
    - {name: github, url: "https://api.github.com"}
    - {name: crm, url: "https://crm.corp.example:8443", allow_networks: [10.20.0.0/16]}
"""


def test_a_route_from_the_config_decides_hosts_ports_and_networks(tmp_path: Path) -> None:
    config = tmp_path / "p.yaml"
    config.write_text(CONFIG)
    ok = egress("https://crm.corp.example:8443/accounts", "-c", str(config), "--route", "crm",
                "--resolve", "crm.corp.example=10.20.1.2")
    assert ok.exit_code == 0, ok.output
    other_port = egress("https://crm.corp.example/accounts", "-c", str(config), "--route", "crm",
                        "--resolve", "crm.corp.example=10.20.1.2")
    assert other_port.exit_code == 3 and "port_not_allowed" in other_port.output
    other_host = egress("https://api.github.com:8443/", "-c", str(config), "--route", "crm",
                        "--resolve", "api.github.com=140.82.112.6")
    assert other_host.exit_code == 3 and "host_not_allowed" in other_host.output
    outside_global = egress("https://example.org/", "-c", str(config), "--resolve", "example.org=93.184.216.34")
    assert outside_global.exit_code == 3 and "host_not_allowed_globally" in outside_global.output


def test_an_unknown_route_or_a_route_without_config_is_bad_input(tmp_path: Path) -> None:
    config = tmp_path / "p.yaml"
    config.write_text(CONFIG)
    assert egress("https://api.github.com/", "-c", str(config), "--route", "nope").exit_code == 2
    assert egress("https://api.github.com/", "--route", "github").exit_code == 2
