"""Render ``bench/results/hostile.md`` from the figures ``bench.hostile_suite`` collected.

Why apart from the suite: rendering is pure (a dict in, Markdown out) and tested without
starting anything; the suite module only runs processes and collects figures.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["render_markdown"]


def _num(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _mib(kib: int | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:,.1f}"


def _ended(attackers: Mapping[str, Any] | None) -> str:
    if attackers is None:
        return ""
    ended = attackers["ended_by_gateway"]
    return ", ".join(f"{k} {v:,}" for k, v in ended.items()) or "none"


def _pair(clean: Mapping[str, Any] | None, under: Mapping[str, Any], key: str, digits: int) -> str:
    return f"{_num(clean.get(key) if clean else None, digits)} / {_num(under.get(key), digits)}"


def _row(s: Mapping[str, Any]) -> str:
    a, n, clean = s["attackers"], s["normal_client"], s.get("clean")
    attached = f"{_num(a['attached_mean'])} / {_num(a['attached_min'])} of {a['target']:,}" if a else ""
    opened = f"{a['opened']:,}" if a else ""
    share = a.get("driver_cpu_share") if a else None
    driver_cpu = f"{share * 100:.0f}" if share is not None else ""
    extra_fds = s["fds_peak"] - s["fds_before"] if s["fds_peak"] and s["fds_before"] else None
    title = s["title"] if s["gateway_alive"] else f"{s['title']} (**gateway died**)"
    errors = n["non_2xx_3xx"] + n["socket_errors"]
    return (f"| {title} | {attached} | {opened} | {_ended(a)} | {driver_cpu} | {_num(extra_fds)} | "
            f"{_pair(clean, n, 'rps', 0)} | {_pair(clean, n, 'p95_ms', 2)} | {_num(n['p50_ms'], 2)} | "
            f"{_num(n['p99_ms'], 2)} | {errors:,} | {_mib(s['rss_before_kib'])} | {_mib(s['vm_hwm_kib'])} |")


def render_markdown(result: Mapping[str, Any]) -> str:
    """The table (one row per scenario), then what each scenario's hostile clients did."""
    m, cfg = result["machine"], result["config"]
    lines = [
        "# Portcullis under hostile clients",
        "",
        f"{m['nproc']} CPUs, {m['pinning']}. A fresh gateway per scenario with setup 5's config (API key, "
        "two limits of three windows, JSONL audit, metrics) and every `listen.*` default; the hostile "
        f"clients attach ({cfg['ramp_s']:.0f} s ramp, re-opening whatever the gateway cuts), then the normal "
        f"client runs: `{cfg['normal_client']}`, and for half as long on the same process just before the "
        "attack (\"clean\"). The machine is shared: read each row's attacked figures against its own clean ones.",
        "",
        "| scenario | attached mean / min | opened | ended by the gateway | driver CPU % | extra fds (peak) | "
        "rps clean / attacked | p95 ms clean / attacked | p50 ms | p99 ms | errors | RSS before MiB | "
        "peak RSS (VmHWM) MiB |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [_row(s) for s in result["scenarios"]]
    loads = [s["loadavg_1m"] for s in result["scenarios"] if s.get("loadavg_1m") is not None]
    lines += [
        "",
        *([f"1-minute load average at the end of each scenario: {min(loads):.2f} to {max(loads):.2f} "
           "(the suite itself accounts for about 2: the gateway and the load; more is other work on the machine).",
           ""] if loads else []),
        "- p50, p99 and errors are the normal client's under attack. "
        "attached: the hostile connections open at each half-second sample of the measurement, as the "
        "driver sees them; extra fds: the gateway's open descriptors at their peak minus before the attack "
        "(client connections plus any upstream connections they hold); peak RSS: the gateway's "
        "high-water mark over its whole life, warm-up included; driver CPU: the hostile driver's share of "
        "one core, taken from the core the normal client (wrk) runs on.",
        "- ended by the gateway: `answered_NNN` is the error status it sent before closing, `cut_mid_response` "
        "a 200 cut before the client read it (`write_timeout`), `closed_without_answer` a close with nothing "
        "sent, `reset` a connection reset.",
        "",
        "Scenarios:",
        "",
    ]
    lines += [f"- {s['title']}: {s['hostile_clients']}" for s in result["scenarios"]]
    lines.append("")
    return "\n".join(lines)
