"""The goals are computed from the setups' medians in one place, and G6 is the tail ratio."""

from __future__ import annotations

from typing import Any

from bench import report


def _setup(rps: float, p99_c50: float) -> dict[str, Any]:
    level = {"rps": rps, "p50_ms": 1.0, "p99_ms": p99_c50, "cpu_us_per_request": 100.0}
    return {"median": {"c50": level, "c1": level}}


def test_g6_is_the_full_gateways_p99_over_the_bare_proxys() -> None:
    setups = {"portcullis_full": _setup(1000, 30.0), "bare_python_proxy": _setup(2000, 10.0)}
    assert report.tail_ratio(setups) == 3.0


def test_g6_is_unknown_when_a_setup_was_not_measured() -> None:
    assert report.tail_ratio({"portcullis_full": _setup(1000, 30.0)}) is None


def test_the_markdown_fails_g6_above_its_target_and_passes_it_below() -> None:
    def render(tail: float) -> str:
        result = {
            "machine": {"cpu_model": "cpu", "nproc": 2, "pinned": True, "pinning": "p", "python": "3.11",
                        "nginx": "nginx", "wrk": "wrk"},
            "config": {"rounds": 1, "duration_s": 1, "c1_duration_s": 1},
            "setups": {}, "targets": report.TARGETS, "ratios": dict.fromkeys(report.RATIO_DEFS),
            "added_latency_ms": {"p50": None, "p99": None}, "tail_ratio": tail, "audit": {},
            "audit_records_match": True,
        }
        return next(line for line in report.render_markdown(result).splitlines() if line.startswith("| G6 "))

    assert render(2.5).endswith("| **fail** |")
    assert render(1.5).endswith("| pass |")
