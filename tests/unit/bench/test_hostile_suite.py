"""The hostile suite's command line, its scenarios, and the table it writes to bench/results/hostile.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bench.hostile_report import render_markdown
from bench.hostile_suite import SCENARIOS, SuiteOptions, parse_args


def test_by_default_every_scenario_runs_in_order_with_a_ten_connection_normal_client() -> None:
    opts = parse_args([])
    assert opts.scenarios == tuple(SCENARIOS)
    assert (opts.duration_s, opts.connections, opts.results_dir.name) == (8, 10, "results")


def test_a_subset_of_scenarios_and_a_results_directory_can_be_chosen(tmp_path: Path) -> None:
    assert parse_args(["--scenarios", "idle, slowloris", "--results", str(tmp_path)]) == SuiteOptions(
        ("idle", "slowloris"), 8, 10, tmp_path)


@pytest.mark.parametrize("argv", [["--scenarios", "idle,teardrop"], ["--scenarios", ","], ["--duration", "0"],
                                  ["--duration", "61"], ["--connections", "101"]],
                         ids=["unknown-scenario", "no-scenario", "no-time", "too-long", "too-many-connections"])
def test_a_suite_outside_its_bounds_is_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)


def test_the_scenarios_are_the_issues_done_when_list_plus_a_baseline_and_the_one_address_case() -> None:
    wanted = {"baseline": (), "slowloris": (("slowloris", 200),), "unterminated_head": (("unterminated_head", 100),),
              "idle": (("idle", 2000),), "idle_one_address": (("idle", 2000),), "non_reader": (("non_reader", 100),),
              "slow_body": (("slow_body", 100),)}
    assert {name: s.attacks for name, s in SCENARIOS.items()} == wanted
    assert SCENARIOS["idle_one_address"].sources == 1
    assert SCENARIOS["idle_one_address"].describe() == "2,000 x connects and sends nothing (1 source address)"
    assert SCENARIOS["baseline"].describe() == "none"


def _scenario(name: str, attackers: dict[str, Any] | None, *, alive: bool = True) -> dict[str, Any]:
    normal = {"rps": 3664.2, "p50_ms": 2.23, "p95_ms": 7.3, "p99_ms": 13.88, "non_2xx_3xx": 1, "socket_errors": 2}
    clean = {"rps": 3801.0, "p50_ms": 2.1, "p95_ms": 5.1, "p99_ms": 9.2, "non_2xx_3xx": 0, "socket_errors": 0}
    return {"name": name, "title": SCENARIOS[name].title, "hostile_clients": SCENARIOS[name].describe(),
            "loadavg_1m": 2.1, "attackers": attackers, "clean": clean, "normal_client": normal, "gateway_alive": alive,
            "rss_before_kib": 105_676, "rss_peak_sampled_kib": 110_000, "vm_hwm_kib": 114_073,
            "fds_before": 28, "fds_peak": 2038}


def _render(*scenarios: dict[str, Any]) -> list[str]:
    result = {"scenarios": list(scenarios), "machine": {"nproc": 2, "pinning": "gateway on CPU 0"},
              "config": {"normal_client": "wrk -t1 -c10 -d8s GET /", "ramp_s": 2.0}}
    return render_markdown(result).splitlines()


def test_a_scenario_row_shows_what_attached_what_ended_and_what_it_cost() -> None:
    attackers = {"target": 2000, "attached_mean": 1999.6, "attached_min": 1990, "opened": 2150,
                 "ended_by_gateway": {"closed_without_answer": 150}, "driver_cpu_share": 0.134}
    row = next(line for line in _render(_scenario("idle", attackers)) if line.startswith("| 2,000 idle"))
    assert row == ("| 2,000 idle connections | 2,000 / 1,990 of 2,000 | 2,150 | closed_without_answer 150 | 13 | "
                   "2,010 | 3,801 / 3,664 | 5.10 / 7.30 | 2.23 | 13.88 | 3 | 103.2 | 111.4 |")


def test_the_baseline_row_has_no_attacker_figures_and_a_dead_gateway_is_named() -> None:
    lines = _render(_scenario("baseline", None), _scenario("slowloris", None, alive=False))
    assert next(line for line in lines if line.startswith("| no attack ")).startswith(
        "| no attack |  |  |  |  | 2,010 | 3,801 / 3,664 |")
    assert any(line.startswith("| 200 slowloris connections (**gateway died**) |") for line in lines)
    assert "- no attack: none" in lines
