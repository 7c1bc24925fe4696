"""Gateway CPU microseconds per request, full security pipeline: a quick A/B probe.

Why this exists beside ``bench.run``: on a 2-core machine shared with other work, req/s swings
with whatever else runs; the gateway's own CPU time per request barely does. This starts nginx
(upstream) and the gateway with ``bench.gateway.full_config``, pins the gateway to CPU 0 and wrk
to CPU 1, and divides the gateway's utime+stime delta over a wrk run by wrk's request count.
It refuses to be a benchmark report: no JSON, no README table, just one figure per run.

    python -m bench.cpu_per_request [--runs 3] [--duration 6]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=6)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="portcullis-cpu-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        up_port, gw_port, admin_port, jwks_port = free_port(), free_port(), free_port(), free_port()
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
        cfg_path = gateway.write_config(work / "gw" / "portcullis.yaml",
                                        gateway.full_config(work / "gw", gw_port, up_port, admin_port))
        key = gateway.create_api_key(_portcullis_argv(), cfg_path, env, "bench-key")
        log = (work / "gw" / "gateway.log").open("wb")
        gw = subprocess.Popen(  # noqa: S603
            [*_pin(0), *_portcullis_argv(), "serve", str(cfg_path), "--log-level", "warning"],
            env=env, cwd=cfg_path.parent, stdout=log, stderr=subprocess.STDOUT)
        procs.append(gw)
        if not wait_for_port(gw_port, 30):
            raise RuntimeError("gateway did not start: " + (work / "gw" / "gateway.log").read_text()[-2000:])

        _wrk(gw_port, key, 2)  # warm-up: connections, caches, first-call costs
        figures = []
        for i in range(args.runs):
            before = tree_cpu_seconds(gw.pid)
            count, bad, out = _wrk(gw_port, key, args.duration)
            used = tree_cpu_seconds(gw.pid) - before
            if count == 0 or bad:
                print(out, file=sys.stderr)
                raise RuntimeError(f"run {i}: {count} requests, {bad} non-2xx")
            us = used / count * 1e6
            figures.append(us)
            print(f"run {i}: {count} req ({count / args.duration:.0f} req/s), {used:.2f} s CPU, {us:.1f} us/req",
                  flush=True)
            time.sleep(0.5)
        print(f"best: {min(figures):.1f} us/req  (runs: {', '.join(f'{f:.1f}' for f in figures)})")
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
