"""``make bench``'s hostile phase (H1): setup 5's throughput while slow and never-reading clients hang on.

What is measured: a gateway with setup 5's config (``gateway.full_config``: API key, two limits of
three windows, JSONL audit, metrics, security headers, every ``listen.*`` default) on a port and
upstream block of its own, loaded with the benchmark's ``wrk -c50`` in interleaved rounds: a clean
run, then a run with 200 slowloris clients and 50 never-reading clients attached (``bench.hostile``
in its own process on the load CPU). H1 is the median hostile rps over the median clean rps of
the same instance (target ≥ 0.90, ``report.TARGETS``). Clean and hostile runs alternate on one
process, clean first in odd rounds and attacked first in even ones, so drift of a shared machine
falls on both alike.

Why a separate instance rather than setup 5 itself: the attack's refusals (408s) are audited but
never reach the upstream, and its large answers reach the upstream; either would break setup 5's
audit check, which counts every record against wrk and the upstream log.

Why ``max_connections_per_ip`` stays at its default (256): the config is setup 5's, unchanged. The
attackers come from 16 loopback source addresses (``bench.hostile`` explains why), about 16 each,
so the per-address cap never refuses them and the attack costs what a distributed one would:
the timeouts (``head_timeout``, ``write_timeout``) are what bound it, and the driver re-opens
every connection the gateway cuts, keeping about 200 + 50 attached through each measurement.
What it refuses to do: start the attack before the clean run of its round has finished.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import report
from bench.hostile import DriverOptions, start_driver, summarize
from bench.procs import ManagedProcess, ProcessGroup
from bench.wrk import run_wrk

__all__ = ["ATTACKS", "HOSTILE_SETUP", "LABEL", "measure"]

HOSTILE_SETUP = "portcullis_full_hostile"
ATTACKS: tuple[tuple[str, int], ...] = (("slowloris", 200), ("non_reader", 50))
SOURCES = 16
RAMP_S = 2.0
_DRIVER_SPARE_S = 60  # the driver's hard stop lies this far past the wrk run it serves
LABEL = "5 Portcullis, full, under attack (200 slowloris + 50 non-readers)"


def _attacked(
    group: ProcessGroup, url: str, headers: list[tuple[str, str]], opts: DriverOptions, *, api_key: str,
    connections: int, duration_s: int, load_cpu: int | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One c50 run with the driver attached: wrk's figures and the attackers' summary."""
    driver = start_driver(group, opts.stats.stem, opts, api_key=api_key, cpu=load_cpu)
    try:
        driver.wait_ready(timeout_s=30)
        figures = run_wrk(url, headers, connections=connections, duration_s=duration_s, cpu=load_cpu).as_dict()
    finally:
        stats = driver.finish()
    return figures, summarize(stats)


def measure(
    group: ProcessGroup, *, sut: ManagedProcess, port: int, url: str, headers: list[tuple[str, str]], api_key: str,
    rounds: int, duration_s: int, warmup_s: int, connections: int, load_cpu: int | None, workdir: Path,
) -> dict[str, Any]:
    """Warm-up, then ``rounds`` rounds of one clean and one attacked c50 run, in alternating order."""
    print(f"hostile phase: warm-up ({warmup_s}s, c{connections})", flush=True)
    run_wrk(url, headers, connections=connections, duration_s=warmup_s, cpu=load_cpu)
    runs: list[dict[str, Any]] = []
    for index in range(1, rounds + 1):
        run: dict[str, Any] = {}
        # Clean first in odd rounds, attacked first in even ones: a drift within a round falls on both alike.
        for level in ("clean", "hostile") if index % 2 else ("hostile", "clean"):
            if level == "clean":
                run["clean"] = run_wrk(url, headers, connections=connections, duration_s=duration_s,
                                       cpu=load_cpu).as_dict()
                continue
            opts = DriverOptions(port=port, attacks=ATTACKS, sources=SOURCES, ramp_s=RAMP_S,
                                 duration_s=duration_s + _DRIVER_SPARE_S, stats=workdir / f"hostile-{index}.json")
            run["hostile"], run["attackers"] = _attacked(group, url, headers, opts, api_key=api_key,
                                                         connections=connections, duration_s=duration_s,
                                                         load_cpu=load_cpu)
        if sut.popen.poll() is not None:
            raise RuntimeError(f"{HOSTILE_SETUP} exited under attack. Log tail:\n{sut.log_tail()}")
        runs.append(run)
        clean, hostile, attackers = run["clean"], run["hostile"], run["attackers"]
        print(f"hostile round {index}/{rounds}: clean {clean['rps']:,.0f} rps, under attack {hostile['rps']:,.0f} rps "
              f"(p99 {hostile['p99_ms']:.3f} ms; attached mean {attackers['attached_mean']} of "
              f"{attackers['target']}, {attackers['opened']} opened)", flush=True)
    return {
        "label": LABEL,
        "attacks": dict(ATTACKS),
        "sources": SOURCES,
        "rounds": runs,
        "median": report.medians(runs, levels=("clean", "hostile")),
        "errors": {level: sum(r[level]["non_2xx_3xx"] + r[level]["socket_errors"] for r in runs)
                   for level in ("clean", "hostile")},
    }
