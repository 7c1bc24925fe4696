"""Turn the raw figures of a run into ``latest.json`` and ``latest.md``.

Why separate from the runner: the definitions of the goals (which setup divided by which) live in
one place, next to their targets, so the JSON, the Markdown and the README cannot disagree.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["TARGETS", "added_latency", "hostile_ratio", "medians", "ratios", "render_markdown", "tail_ratio"]

# The front door's targets: the full pipeline at least as fast as the thinnest Python proxy (G1),
# 0.30 of nginx (G2), Redis limits 0.80 of in-memory (G3), JWT 0.95 of API keys (G4), at most
# 0.15 ms p50 / 1.0 ms p99 added unloaded (G5), a c50 p99 at most twice the bare proxy's (G6), and
# at least 0.90 of setup 5's throughput with 200 slowloris and 50 never-reading clients attached (H1).
# The egress door's: at least half the full ingress pipeline's throughput (E1).
TARGETS: dict[str, float] = {
    "G1": 1.0, "G2": 0.30, "G3": 0.80, "G4": 0.95, "G5_p50_ms": 0.15, "G5_p99_ms": 1.0, "G6_max": 2.0, "H1": 0.90,
    "E1": 0.50,
}
H1_TEXT = "full gateway under attack vs. clean, same instance (rps, c50)"

# Goal → (numerator setup, denominator setup, what it says)
RATIO_DEFS: dict[str, tuple[str, str, str]] = {
    "G1": ("portcullis_full", "bare_python_proxy", "full gateway vs. bare Python proxy (rps, c50)"),
    "G2": ("portcullis_full", "nginx_proxy", "full gateway vs. nginx reverse proxy (rps, c50)"),
    "G3": ("portcullis_redis_limits", "portcullis_full", "Redis-backed limits vs. in-memory (rps, c50)"),
    "G4": ("portcullis_jwt", "portcullis_full", "JWT auth vs. API-key auth (rps, c50)"),
    "E1": ("portcullis_egress", "portcullis_full", "egress door vs. full ingress pipeline (rps, c50)"),
}

_METRICS = ("rps", "p50_ms", "p99_ms", "cpu_us_per_request")


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def medians(
    rounds: Sequence[Mapping[str, Mapping[str, Any]]], levels: Sequence[str] = ("c50", "c1"),
) -> dict[str, dict[str, float | None]]:
    """Per load level (c50 and c1, or the hostile phase's clean and hostile), each metric's median across rounds."""
    out: dict[str, dict[str, float | None]] = {}
    for level in levels:
        runs = [r[level] for r in rounds if level in r]
        out[level] = {m: _median([run.get(m) for run in runs]) for m in _METRICS}
    return out


def _get(setups: Mapping[str, Mapping[str, Any]], name: str, level: str, metric: str) -> float | None:
    setup = setups.get(name)
    if not setup or setup.get("median") is None:
        return None
    value = setup["median"][level].get(metric)
    return float(value) if value is not None else None


# Beside E1, the same comparison by CPU per request (the full pipeline's over the door's): on a
# machine shared with other work, requests per second follow whatever else runs on the SUT's CPU
# during each setup's turn, while CPU per request barely moves. Shown, not a goal of its own.
E1_CPU_TEXT = "egress door vs. full ingress pipeline (CPU per request, c50; complement of E1)"


def ratios(setups: Mapping[str, Mapping[str, Any]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for goal, (num, den, _) in RATIO_DEFS.items():
        a, b = _get(setups, num, "c50", "rps"), _get(setups, den, "c50", "rps")
        out[goal] = round(a / b, 4) if a is not None and b else None
    door, full = (_get(setups, n, "c50", "cpu_us_per_request") for n in ("portcullis_egress", "portcullis_full"))
    out["E1_cpu"] = round(full / door, 4) if full is not None and door else None
    return out


def added_latency(setups: Mapping[str, Mapping[str, Any]]) -> dict[str, float | None]:
    """G5: unloaded (c1) latency the full gateway adds over hitting the upstream directly."""
    out: dict[str, float | None] = {}
    for pct in ("p50", "p99"):
        gw = _get(setups, "portcullis_full", "c1", f"{pct}_ms")
        direct = _get(setups, "upstream_direct", "c1", f"{pct}_ms")
        out[pct] = round(gw - direct, 4) if gw is not None and direct is not None else None
    return out


def tail_ratio(setups: Mapping[str, Mapping[str, Any]]) -> float | None:
    """G6: the full gateway's p99 at c50 over the bare Python proxy's (lower is better)."""
    gw = _get(setups, "portcullis_full", "c50", "p99_ms")
    floor = _get(setups, "bare_python_proxy", "c50", "p99_ms")
    return round(gw / floor, 4) if gw is not None and floor else None


def hostile_ratio(hostile: Mapping[str, Any] | None) -> float | None:
    """H1: median rps with the attack attached over median rps clean, on the same instance."""
    if not hostile:
        return None
    under, clean = hostile["median"]["hostile"].get("rps"), hostile["median"]["clean"].get("rps")
    return round(under / clean, 4) if under is not None and clean else None


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("pass" if ok else "**fail**")


def _attack_line(hostile: Mapping[str, Any]) -> str:
    attacks = " + ".join(f"{n} {kind}" for kind, n in hostile["attacks"].items())
    rounds = hostile["rounds"]
    attached = ", ".join(_fmt(r["attackers"]["attached_mean"], 0) for r in rounds)
    opened = sum(r["attackers"]["opened"] for r in rounds)
    ended: dict[str, int] = {}
    for r in rounds:
        for outcome, n in r["attackers"]["ended_by_gateway"].items():
            ended[outcome] = ended.get(outcome, 0) + n
    ends = ", ".join(f"{k} {v}" for k, v in sorted(ended.items())) or "none"
    return (f"H1 attack: {attacks} from {hostile['sources']} loopback source addresses; attached (mean per "
            f"round): {attached} of {sum(hostile['attacks'].values())}; connections opened: {opened}; ended by "
            f"the gateway: {ends}.")


def render_markdown(result: Mapping[str, Any]) -> str:
    """The human summary: one row per setup, then the goals with targets, then the audit check."""
    lines = ["# Portcullis benchmark", ""]
    m = result["machine"]
    lines += [f"{m['cpu_model']}, {m['nproc']} CPUs, pinned: {m['pinned']} ({m['pinning']}); "
              f"Python {m['python']}, {m['nginx']}, {m['wrk']}; {result['config']['rounds']} rounds, "
              f"c50 {result['config']['duration_s']}s / c1 {result['config']['c1_duration_s']}s, medians.", ""]
    lines += ["| setup | rps (c50) | p50 c50 ms | p99 c50 ms | p50 c1 ms | p99 c1 ms | CPU us/req | errors |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for s in result["setups"].values():
        if s["status"] != "ok":
            lines.append(f"| {s['label']} | {s['status']} | | | | | | |")
            continue
        c50, c1 = s["median"]["c50"], s["median"]["c1"]
        lines.append(
            f"| {s['label']} | {_fmt(c50['rps'], 0)} | {_fmt(c50['p50_ms'])} | {_fmt(c50['p99_ms'])} | "
            f"{_fmt(c1['p50_ms'])} | {_fmt(c1['p99_ms'])} | {_fmt(c50['cpu_us_per_request'], 1)} | {s['errors']} |"
        )
    hostile = result.get("hostile")
    if hostile:
        clean_label = "5 Portcullis, full, attack-phase instance, clean"
        for level, label in (("clean", clean_label), ("hostile", hostile["label"])):
            m = hostile["median"][level]
            lines.append(f"| {label} | {_fmt(m['rps'], 0)} | {_fmt(m['p50_ms'])} | {_fmt(m['p99_ms'])} | n/a | n/a | "
                         f"n/a | {hostile['errors'][level]} |")
    lines += ["", "| goal | definition | value | target | result |", "| --- | --- | ---: | ---: | --- |"]
    targets = result["targets"]
    for goal, (_, _, text) in RATIO_DEFS.items():
        value = result["ratios"][goal]
        target = targets.get(goal)
        ok = None if value is None or target is None else value >= target
        lines.append(f"| {goal} | {text} | {_fmt(value)} | {'≥ ' + _fmt(target, 2) if target else 'n/a'} | "
                     f"{_verdict(ok)} |")
    if result["ratios"].get("E1_cpu") is not None:
        lines.append(f"| E1 (CPU) | {E1_CPU_TEXT} | {_fmt(result['ratios']['E1_cpu'])} | (≥ 0.50) | "
                     f"{_verdict(result['ratios']['E1_cpu'] >= targets['E1'])} |")
    for pct in ("p50", "p99"):
        value = result["added_latency_ms"][pct]
        target = targets[f"G5_{pct}_ms"]
        ok = None if value is None else value <= target
        lines.append(f"| G5 {pct} | latency added by the full gateway at c1 (ms) | {_fmt(value)} | "
                     f"≤ {_fmt(target, 2)} | {_verdict(ok)} |")
    tail = result.get("tail_ratio")
    ok = None if tail is None else tail <= targets["G6_max"]
    lines.append(f"| G6 | full gateway p99 vs. bare Python proxy p99 (c50) | {_fmt(tail)} | "
                 f"≤ {_fmt(targets['G6_max'], 2)} | {_verdict(ok)} |")
    if "hostile_ratio" in result:  # absent in results written before the hostile phase existed
        h1 = result["hostile_ratio"]
        ok = None if h1 is None else h1 >= targets["H1"]
        lines.append(f"| H1 | {H1_TEXT} | {_fmt(h1)} | ≥ {_fmt(targets['H1'], 2)} | {_verdict(ok)} |")
    lines += ["", "| audit check | audit records | wrk requests | upstream requests | in-flight bound | match |",
              "| --- | ---: | ---: | ---: | ---: | --- |"]
    for name, a in result["audit"].items():
        lines.append(f"| {result['setups'][name]['label']} | {a['audit_records']} | {a['wrk_requests']} | "
                     f"{a['upstream_requests']} | {a['in_flight_bound']} | {_verdict(a['match'])} |")
    lines += ["", f"audit_records_match: {result['audit_records_match']}", ""]
    if hostile:
        lines += [_attack_line(hostile), ""]
    lines += _auth_lines(result.get("auth_methods"))
    return "\n".join(lines)


def _auth_lines(auth: Mapping[str, Any] | None) -> list[str]:
    """The cost of each authentication method on one core (bench/auth_costs.py, bench/mtls_handshakes.py)."""
    if not auth:
        return []
    lines = ["| authentication method, one core | per second | us each |", "| --- | ---: | ---: |"]
    for name, figures in auth["checks"]["methods"].items():
        lines.append(f"| check: {name} | {figures['per_second']:,} | {_fmt(figures['us_per_check'], 1)} |")
    for label, text in (("tls", "new connection, TLS 1.3 handshake + one request"),
                        ("mtls", "new connection, mutual TLS handshake + auth.mtls + one request")):
        figures = auth["handshakes"].get(label)
        if figures:
            lines.append(f"| {text} | {figures['connections_per_second']:,} | "
                         f"{_fmt(figures['us_per_connection'], 0)} (gateway CPU) |")
    return [*lines, ""]
