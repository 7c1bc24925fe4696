"""The goals are computed from the setups' medians in one place, and G6 is the tail ratio."""

from __future__ import annotations

from typing import Any

import pytest
from bench import report
from bench.hostile_phase import LABEL


def _setup(rps: float, p99_c50: float) -> dict[str, Any]:
    level = {"rps": rps, "p50_ms": 1.0, "p99_ms": p99_c50, "cpu_us_per_request": 100.0}
    return {"median": {"c50": level, "c1": level}}


def test_g6_is_the_full_gateways_p99_over_the_bare_proxys() -> None:
    setups = {"portcullis_full": _setup(1000, 30.0), "bare_python_proxy": _setup(2000, 10.0)}
    assert report.tail_ratio(setups) == 3.0


def test_g6_is_unknown_when_a_setup_was_not_measured() -> None:
    assert report.tail_ratio({"portcullis_full": _setup(1000, 30.0)}) is None


def _result(tail: float | None = None) -> dict[str, Any]:
    return {
        "machine": {"cpu_model": "cpu", "nproc": 2, "pinned": True, "pinning": "p", "python": "3.11",
                    "nginx": "nginx", "wrk": "wrk"},
        "config": {"rounds": 1, "duration_s": 1, "c1_duration_s": 1},
        "setups": {}, "targets": report.TARGETS, "ratios": dict.fromkeys(report.RATIO_DEFS),
        "added_latency_ms": {"p50": None, "p99": None}, "tail_ratio": tail, "audit": {},
        "audit_records_match": True,
    }


def _line(markdown: str, start: str) -> str:
    return next(line for line in markdown.splitlines() if line.startswith(start))


def test_the_markdown_fails_g6_above_its_target_and_passes_it_below() -> None:
    def render(tail: float) -> str:
        return _line(report.render_markdown(_result(tail)), "| G6 ")

    assert render(2.5).endswith("| **fail** |")
    assert render(1.5).endswith("| pass |")


def _hostile(clean_rps: float, hostile_rps: float) -> dict[str, Any]:
    def level(rps: float, p99: float) -> dict[str, float]:
        return {"rps": rps, "p50_ms": 9.0, "p99_ms": p99, "non_2xx_3xx": 0, "socket_errors": 0}

    attackers = {"target": 250, "attached_mean": 248.5, "attached_min": 240, "opened": 260,
                 "ended_by_gateway": {"answered_408": 10}}
    rounds: list[dict[str, Any]] = [
        {"clean": level(clean_rps, 50.0), "hostile": level(hostile_rps, 70.0), "attackers": attackers}]
    return {"label": LABEL, "attacks": {"slowloris": 200, "non_reader": 50}, "sources": 16, "rounds": rounds,
            "median": report.medians(rounds, levels=("clean", "hostile")), "errors": {"clean": 0, "hostile": 3}}


def test_h1_is_the_attacked_rps_over_the_clean_rps_of_the_same_instance() -> None:
    assert report.hostile_ratio(_hostile(5000, 4600)) == 0.92
    assert report.hostile_ratio(None) is None


@pytest.mark.parametrize(("hostile_rps", "verdict"), [(4600, "| pass |"), (4000, "| **fail** |")],
                         ids=["0.92-passes", "0.80-fails"])
def test_the_markdown_shows_h1_against_its_target_of_0_90(hostile_rps: float, verdict: str) -> None:
    hostile = _hostile(5000, hostile_rps)
    result = {**_result(), "hostile": hostile, "hostile_ratio": report.hostile_ratio(hostile)}
    assert _line(report.render_markdown(result), "| H1 ").endswith(verdict)


def test_the_markdown_shows_both_runs_of_the_attack_phase_and_what_the_attackers_met() -> None:
    hostile = _hostile(5000, 4600)
    markdown = report.render_markdown({**_result(), "hostile": hostile, "hostile_ratio": 0.92})
    assert _line(markdown, f"| {LABEL} ") == f"| {LABEL} | 4,600 | 9.000 | 70.000 | n/a | n/a | n/a | 3 |"
    assert _line(markdown, "| 5 Portcullis, full, attack-phase instance, clean ").split(" | ")[1] == "5,000"
    assert _line(markdown, "H1 attack:") == (
        "H1 attack: 200 slowloris + 50 non_reader from 16 loopback source addresses; attached (mean per round): "
        "248 of 250; connections opened: 260; ended by the gateway: answered_408 10.")


def test_results_written_before_the_attack_phase_still_render_without_h1() -> None:
    assert "| H1 " not in report.render_markdown(_result(1.5))


def test_the_markdown_lists_each_authentication_method_and_both_handshakes() -> None:
    auth = {"checks": {"pinned": True, "seconds_per_method": 2, "methods": {
        "api_key (cached)": {"checks": 1, "us_per_check": 4.2, "per_second": 238_095},
        "signature hmac-sha256": {"checks": 1, "us_per_check": 67.9, "per_second": 14_728}}},
        "handshakes": {"tls": {"connections_per_second": 1400, "us_per_connection": 720, "runs": []},
                       "mtls": {"connections_per_second": 620, "us_per_connection": 1760, "runs": []}}}
    markdown = report.render_markdown({**_result(1.5), "auth_methods": auth})
    assert _line(markdown, "| check: signature hmac-sha256 ") == "| check: signature hmac-sha256 | 14,728 | 67.9 |"
    assert _line(markdown, "| new connection, mutual TLS") == (
        "| new connection, mutual TLS handshake + auth.mtls + one request | 620 | 1,760 (gateway CPU) |")
    assert "authentication method" not in report.render_markdown(_result(1.5))
