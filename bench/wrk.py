"""Run wrk and read its report.

Why parse text: wrk's summary (with ``--latency``) is stable across 4.x releases and needs no Lua
script on disk; every figure used downstream is extracted here and nowhere else. The one figure
the summary lacks, the 95th percentile (``bench.hostile_suite`` reports it), comes from a
three-line ``done`` hook (``write_p95_script``) that prints one more line.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.procs import pin_prefix

__all__ = ["WrkResult", "parse_latency_ms", "parse_wrk", "run_wrk", "write_p95_script"]

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}
_LATENCY = re.compile(r"^\s*(50|75|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)
_REQUESTS = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m),", re.MULTILINE)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_P95 = re.compile(r"^p95_us\s+([\d.]+)\s*$", re.MULTILINE)
P95_LUA = """done = function(summary, latency, requests)
  io.write(string.format("p95_us %d\\n", latency:percentile(95)))
end
"""


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One wrk run: throughput, latency percentiles (ms) and every error count it reports."""

    connections: int
    duration_s: float
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx_3xx: int
    socket_errors: int
    p95_ms: float | None = None  # only with the ``write_p95_script`` hook

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_latency_ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]


def parse_wrk(text: str, connections: int) -> WrkResult:
    """Figures from wrk's stdout; raises ``ValueError`` naming what is missing."""
    lat = {m.group(1): parse_latency_ms(m.group(2), m.group(3)) for m in _LATENCY.finditer(text)}
    req = _REQUESTS.search(text)
    rps = _RPS.search(text)
    if req is None or rps is None or "50" not in lat or "99" not in lat:
        raise ValueError(f"unexpected wrk output:\n{text}")
    sock = _SOCKET.search(text)
    non2xx = _NON2XX.search(text)
    p95 = _P95.search(text)
    return WrkResult(
        connections=connections,
        duration_s=parse_latency_ms(req.group(2), req.group(3)) / 1000.0,
        requests=int(req.group(1)),
        rps=float(rps.group(1)),
        p50_ms=lat["50"],
        p99_ms=lat["99"],
        non_2xx_3xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=sum(int(g) for g in sock.groups()) if sock else 0,
        p95_ms=float(p95.group(1)) / 1000.0 if p95 else None,
    )


def write_p95_script(directory: Path) -> Path:
    """The ``done`` hook that prints ``p95_us N`` after wrk's summary; pass its path as ``script``."""
    path = directory / "p95.lua"
    path.write_text(P95_LUA, encoding="utf-8")
    return path


def run_wrk(url: str, headers: Sequence[tuple[str, str]], *, connections: int, duration_s: int,
            cpu: int | None, script: Path | None = None) -> WrkResult:
    """One bounded wrk run (1 thread) against ``url``; raises if wrk fails or overruns."""
    argv = [*pin_prefix(cpu), "wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", "--latency", "--timeout", "5s"]
    if script is not None:
        argv += ["-s", str(script)]
    for name, value in headers:
        argv += ["-H", f"{name}: {value}"]
    argv.append(url)
    done = subprocess.run(argv, capture_output=True, timeout=duration_s + 15, check=False)  # noqa: S603
    out = done.stdout.decode(errors="replace")
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited {done.returncode}:\n{out}\n{done.stderr.decode(errors='replace')}")
    return parse_wrk(out, connections)
