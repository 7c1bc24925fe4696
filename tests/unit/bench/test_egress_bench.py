"""The egress door's benchmark pieces: its config is one the gateway accepts, its goal (E1) is the
door's throughput over the full ingress pipeline's, the peers' goals are the door's over LiteLLM's,
and the profile summary puts each sample in exactly one part of a call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from bench import egress_door, egress_profile, gateway, report, run_peers
from bench.nginx import CHAT_COMPLETION_BODY, CHAT_COMPLETION_PATH, NginxPaths, upstream_conf

from portcullis.config.loader import load_config


def test_the_door_config_is_accepted_with_every_budget_on_and_the_key_from_the_vault(tmp_path: Path) -> None:
    path = gateway.write_config(tmp_path / "portcullis.yaml", gateway.egress_config(tmp_path, 8080, 8081, 8082))
    config = load_config(path, env={gateway.PEPPER_ENV: "p" * 64})
    assert config.egress is not None
    budgets = config.egress.budgets
    on = [budgets.execution_calls, budgets.execution_cost, budgets.workflow_calls_per_hour,
          budgets.workflow_calls_per_day, budgets.user_calls_per_day, budgets.user_cost_per_day]
    assert all(value is not None and value >= gateway.EGRESS_BUDGET for value in on)
    route = config.egress.route(gateway.EGRESS_ROUTE)
    assert route is not None
    assert route.headers["authorization"] == "Bearer {secret:" + gateway.EGRESS_SECRET + "}"
    assert route.rate_limits and route.cost > 0


def test_the_upstream_answers_a_chat_completion_in_every_block(tmp_path: Path) -> None:
    conf = upstream_conf(NginxPaths.under(tmp_path), {"a": 1, "b": 2}, {"a": tmp_path / "a", "b": tmp_path / "b"},
                         3, tmp_path)
    assert conf.count(f"location = {CHAT_COMPLETION_PATH} {{ return 200 '{CHAT_COMPLETION_BODY}'; }}") == 2
    assert "'" not in CHAT_COMPLETION_BODY  # it sits in a single-quoted nginx string
    assert yaml.safe_load(CHAT_COMPLETION_BODY)["object"] == "chat.completion"


def test_the_wrk_script_posts_the_chat_body(tmp_path: Path) -> None:
    script = egress_door.write_post_script(tmp_path).read_text()
    assert script == f'wrk.method = "POST"\nwrk.body = [[{egress_door.CHAT_REQUEST_BODY}]]\n'
    with pytest.raises(ValueError, match="Lua long string"):
        egress_door.write_post_script(tmp_path, body='{"a":[[1]]}')


def _setup(rps: float) -> dict[str, Any]:
    level = {"rps": rps, "p50_ms": 1.0, "p99_ms": 2.0, "cpu_us_per_request": 100.0}
    return {"median": {"c50": level, "c1": level}}


def test_e1_is_the_door_over_the_full_ingress_pipeline() -> None:
    ratios = report.ratios({"portcullis_full": _setup(5000), "portcullis_egress": _setup(1000)})
    assert ratios["E1"] == 0.2
    assert report.TARGETS["E1"] == 0.5
    assert report.ratios({"portcullis_full": _setup(5000)})["E1"] is None


def _peers_result(door_rps: float, passthrough_rps: float) -> dict[str, Any]:
    setups = {name: {"label": label, **_setup(rps), "errors": 0, "upstream_requests": 10}
              for (name, label), rps in zip(run_peers.SETUPS.items(), (door_rps, passthrough_rps, 50.0), strict=True)}
    return {"machine": {"cpu_model": "cpu", "nproc": 2, "pinned": True, "pinning": "p", "python": "3.11"},
            "litellm_version": "1.0", "setups": setups,
            "config": {"rounds": 1, "duration_s": 1, "c1_duration_s": 1, "connections": 50, "request": "POST"},
            "ratios": {"P1": round(door_rps / passthrough_rps, 2), "P2": round(door_rps / 50.0, 2)}}


def test_the_peers_report_passes_p1_at_thirty_times_litellm_and_fails_below() -> None:
    def p1(door: float) -> str:
        markdown = run_peers.render_markdown(_peers_result(door, 100.0))
        return next(line for line in markdown.splitlines() if line.startswith("| P1 "))

    assert p1(3000.0).endswith("| pass |")
    assert p1(2900.0).endswith("| **fail** |")


RAW = """\
<module> (portcullis:1);serve (portcullis/cli/serve.py:9);CircuitBreaker.record (portcullis/egress/breaker.py:144) 6
<module> (portcullis:1);_send (portcullis/egress/executor.py:462);ClientSession._request (aiohttp/client.py:819) 3
<module> (portcullis:1);Vault.reveal (portcullis/vault/vault.py:170);Connection._execute (aiosqlite/core.py:158) 1
"""


def test_each_sample_goes_to_the_part_its_leafmost_named_frame_belongs_to() -> None:
    summary = egress_profile.aggregate(RAW.splitlines())
    assert summary.samples == 10
    assert dict(summary.parts) == {"breaker (outcome bookkeeping)": 6, "send: HTTP client (request, response read)": 3,
                                   "vault read (SQLite read + touch, Fernet) and its security event": 1}
    assert summary.own[0] == ("CircuitBreaker.record (portcullis/egress/breaker.py:144)", 6)
    assert all("<module>" not in name and "cli/" not in name for name, _ in summary.inclusive)
    assert "| breaker (outcome bookkeeping) | 60.0% | 600 |" in egress_profile.render(summary, 1000.0)


def test_beside_each_rps_ratio_the_cpu_per_request_ratio_is_shown_as_a_complement() -> None:
    full, door = _setup(5000), _setup(2000)
    full["median"]["c50"]["cpu_us_per_request"], door["median"]["c50"]["cpu_us_per_request"] = 180.0, 400.0
    assert report.ratios({"portcullis_full": full, "portcullis_egress": door})["E1_cpu"] == 0.45
    peer = _setup(100)
    peer["median"]["c50"]["cpu_us_per_request"] = 9000.0
    got = run_peers.peer_ratios({"portcullis_egress": door, "litellm_passthrough": peer, "litellm_chat": peer})
    assert (got["P1"], got["P1_cpu"]) == (20.0, 22.5)
