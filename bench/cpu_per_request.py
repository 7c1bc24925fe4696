"""Gateway CPU microseconds per request, full security pipeline: a quick A/B probe.

Why this exists beside ``bench.run``: on a 2-core machine shared with other work, req/s swings
with whatever else runs; the gateway's own CPU time per request barely does. This starts nginx
(upstream) and the gateway with ``bench.gateway.full_config``, pins the gateway to CPU 0 and wrk
to CPU 1, and divides the gateway's utime+stime delta over a wrk run by wrk's request count.
It refuses to be a benchmark report: no JSON, no README table, just one figure per run.

    python -m bench.cpu_per_request [--runs 3] [--duration 6] [--variant LABEL=PYTHONPATH ...] [--traced LABEL ...]

With several ``--variant``s (say, a pure-Python copy of src/ against the installed, compiled
package) the gateways run side by side and are measured in turn, so slow phases of the shared
machine hit every variant alike. ``--traced LABEL`` runs that variant with ``tracing.enabled``
(every request sampled), exporting over OTLP/HTTP to the upstream nginx, which answers any POST
with 200: the figure includes the exporter thread's CPU, as in production.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import gateway, nginx
from bench.procs import free_port, tree_cpu_seconds, wait_for_port

_REQUESTS = re.compile(r"(\d+) requests in")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin")
    if found is None:
        raise RuntimeError(f"{name} not found (make test-tools installs nginx and wrk)")
    return found


def _pin(cpu: int) -> list[str]:
    return [_tool("taskset"), "-c", str(cpu)]


def _portcullis_argv() -> list[str]:
    script = Path(sys.executable).parent / "portcullis"
    return [str(script)] if script.exists() else [sys.executable, "-m", "portcullis"]


def _wrk(port: int, key: str, duration: int) -> tuple[int, int, str]:
    out = subprocess.run(  # noqa: S603 - argv built here
        [*_pin(1), _tool("wrk"), "-t1", "-c50", f"-d{duration}s", "-H", f"X-API-Key: {key}",
         f"http://127.0.0.1:{port}/api/items/42?view=full"],
        capture_output=True, text=True, check=True, timeout=duration + 30,
    ).stdout
    match = _REQUESTS.search(out)
    bad = _NON_2XX.search(out)
    return (int(match.group(1)) if match else 0), (int(bad.group(1)) if bad else 0), out


def _start_gateway(work: Path, label: str, pythonpath: str, up_port: int, env: dict[str, str],
                   key_store: Path | None, traced: bool = False) -> tuple[subprocess.Popen[bytes], int, Path]:
    port, admin_port = free_port(), free_port()
    cfg = gateway.full_config(work / label, port, up_port, admin_port)
    if traced:
        cfg["tracing"] = {"enabled": True, "exporter": {"endpoint": f"http://127.0.0.1:{up_port}"}}
    if key_store is not None:  # every variant verifies the same key against the first one's store
        cfg["store"] = {"url": f"sqlite:///{key_store}"}
    cfg_path = gateway.write_config(work / label / "portcullis.yaml", cfg)
    if key_store is None:
        env[_KEY_ENV] = gateway.create_api_key(_portcullis_argv(), cfg_path, env, "bench-key")
    gw_env = {k: v for k, v in env.items() if k != _KEY_ENV}
    if pythonpath:
        gw_env["PYTHONPATH"] = pythonpath
    log = (work / label / "gateway.log").open("wb")
    gw = subprocess.Popen(  # noqa: S603
        [*_pin(0), *_portcullis_argv(), "serve", str(cfg_path), "--log-level", "warning"],
        env=gw_env, cwd=cfg_path.parent, stdout=log, stderr=subprocess.STDOUT)
    if not wait_for_port(port, 30, None):
        raise RuntimeError(f"gateway {label} did not start: " + (work / label / "gateway.log").read_text()[-2000:])
    return gw, port, work / label / "portcullis.db"


_KEY_ENV = "_BENCH_API_KEY"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=6)
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL=PYTHONPATH",
                        help="a gateway importing portcullis from PYTHONPATH (empty: the installed one); "
                             "several variants run side by side and are measured in alternation")
    parser.add_argument("--traced", action="append", default=[], metavar="LABEL",
                        help="run this variant with tracing enabled (needs the tracing extra)")
    args = parser.parse_args()
    variants = [v.split("=", 1) for v in (args.variant or ["installed="])]

    work = Path(tempfile.mkdtemp(prefix="portcullis-cpu-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        up_port, jwks_port = free_port(), free_port()
        paths = nginx.NginxPaths(prefix=work / "nginx", conf=work / "nginx" / "nginx.conf",
                                 pid=work / "nginx" / "nginx.pid", error_log=work / "nginx" / "error.log")
        (paths.prefix / "temp").mkdir(parents=True)
        (work / "jwks").mkdir()
        paths.conf.write_text(nginx.upstream_conf(paths, {"full": up_port}, {"full": work / "access.log"},
                                                  jwks_port, work / "jwks"))
        procs.append(subprocess.Popen(  # noqa: S603
            [*_pin(1), _tool("nginx"), "-p", str(paths.prefix), "-e", str(paths.error_log),
             "-c", str(paths.conf), "-g", "daemon off;"]))
        if not wait_for_port(up_port, 10):
            raise RuntimeError("nginx did not start")

        env = {**os.environ, gateway.PEPPER_ENV: os.urandom(32).hex()}
        gateways: list[tuple[str, subprocess.Popen[bytes], int]] = []
        key_store: Path | None = None
        for label, pythonpath in variants:
            gw, port, store = _start_gateway(work, label, pythonpath, up_port, env, key_store,
                                             traced=label in args.traced)
            key_store = key_store or store
            procs.append(gw)
            gateways.append((label, gw, port))
        key = env[_KEY_ENV]

        figures: dict[str, list[float]] = {label: [] for label, _, _ in gateways}
        for _, _, port in gateways:
            _wrk(port, key, 2)  # warm-up: connections, caches, first-call costs
        for i in range(args.runs):
            for label, gw, port in gateways:
                before = tree_cpu_seconds(gw.pid)
                count, bad, out = _wrk(port, key, args.duration)
                used = tree_cpu_seconds(gw.pid) - before
                if count == 0 or bad:
                    print(out, file=sys.stderr)
                    raise RuntimeError(f"{label} run {i}: {count} requests, {bad} non-2xx")
                us = used / count * 1e6
                figures[label].append(us)
                print(f"{label} run {i}: {count} req ({count / args.duration:.0f} req/s), {used:.2f} s CPU, "
                      f"{us:.1f} us/req", flush=True)
                time.sleep(0.5)
        first = figures[gateways[0][0]]
        for label, values in figures.items():
            ratio = statistics.median(v / f for v, f in zip(values, first, strict=True))
            print(f"{label}: best {min(values):.1f} us/req, median {statistics.median(values):.1f}, "
                  f"median ratio to {gateways[0][0]} in the same round {ratio:.3f}"
                  f"  (runs: {', '.join(f'{f:.1f}' for f in values)})")
        return 0
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


if __name__ == "__main__":
    raise SystemExit(main())
