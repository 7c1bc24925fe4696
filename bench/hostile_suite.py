"""``make bench-hostile``: what each attack on the front door costs a normal client and the gateway's memory.

For each scenario a fresh gateway with setup 5's config (``gateway.full_config``, every
``listen.*`` default) starts in front of one upstream nginx; the hostile clients of the scenario
attach (``bench.hostile``, its own process on the load CPU, re-opening whatever the gateway cuts);
then a normal client, ``wrk -c10`` with the benchmark's request and API key, runs for a few
seconds and its p50, p95 and p99 are recorded, while the gateway's resident memory and open file
descriptors are sampled from ``/proc``. Peak RSS is the kernel's high-water mark (``VmHWM``) of
a process that served only this scenario. The same client runs for half as long on the same
process just before the attack, so each row carries its own clean figures: the machine is shared
and drifts, so a row compares with itself, not with a baseline row taken a minute earlier.
Results: ``bench/results/hostile.{md,json}``.

The scenarios are the front door's list of hostile clients (slowloris, an unterminated head, 2,000 idle
connections, 100 never-reading clients, 1 KiB/s uploads), a baseline without attackers, and the
2,000 idle connections once more from a single address, where ``max_connections_per_ip`` (256)
is what answers. Everywhere else the attackers are spread over 16 loopback addresses, as a
distributed attack would be (``bench.hostile`` says why). Each scenario takes about 20 s.

What it refuses to do: listen or connect anywhere but loopback, or leave a process behind (every
one is started through ``ProcessGroup`` and stopped by PID in a ``finally``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import gateway
from bench.hostile import ATTACKS, DriverOptions, start_driver, summarize
from bench.hostile_report import render_markdown
from bench.nginx import NginxPaths, start_nginx, upstream_conf, write_large_body
from bench.procs import ManagedProcess, ProcessGroup, cpu_pinning_available, free_port, wait_for_port
from bench.wrk import run_wrk, write_p95_script

__all__ = ["SCENARIOS", "Scenario", "SuiteOptions", "main", "parse_args"]

REPO = Path(__file__).resolve().parent.parent
SUT_CPU, LOAD_CPU = 0, 1
REQUEST_PATH = "/api/items/42?view=full"
SOURCES = 16
RAMP_S = 2.0


@dataclass(frozen=True, slots=True)
class Scenario:
    """One row: which hostile clients attach, how many, from how many source addresses."""

    name: str
    title: str
    attacks: tuple[tuple[str, int], ...]
    sources: int = SOURCES

    def describe(self) -> str:
        if not self.attacks:
            return "none"
        kinds = "; ".join(f"{n:,} x {ATTACKS[kind].description}" for kind, n in self.attacks)
        return f"{kinds} ({self.sources} source address{'es' if self.sources > 1 else ''})"


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("baseline", "no attack", ()),
    Scenario("slowloris", "200 slowloris connections", (("slowloris", 200),)),
    Scenario("unterminated_head", "100 unterminated heads", (("unterminated_head", 100),)),
    Scenario("idle", "2,000 idle connections", (("idle", 2000),)),
    Scenario("idle_one_address", "2,000 idle connections, one address", (("idle", 2000),), sources=1),
    Scenario("non_reader", "100 never-reading clients", (("non_reader", 100),)),
    Scenario("slow_body", "100 uploads at 1 KiB/s", (("slow_body", 100),)),
)}


@dataclass(frozen=True, slots=True)
class SuiteOptions:
    scenarios: tuple[str, ...]
    duration_s: int
    connections: int
    results_dir: Path


def parse_args(argv: Sequence[str]) -> SuiteOptions:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile_suite", description=__doc__.split("\n")[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated, in this order by default: {', '.join(SCENARIOS)}")
    parser.add_argument("--duration", type=int, default=8, help="seconds of the normal client's run (1..60)")
    parser.add_argument("--connections", type=int, default=10, help="the normal client's connections (1..100)")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results",
                        help="where hostile.json and hostile.md go")
    ns = parser.parse_args(list(argv))
    names = tuple(n.strip() for n in ns.scenarios.split(",") if n.strip())
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        parser.error(f"unknown or no scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
    if not 1 <= ns.duration <= 60 or not 1 <= ns.connections <= 100:
        parser.error("--duration must be 1..60 and --connections 1..100")
    return SuiteOptions(names, ns.duration, ns.connections, ns.results)


class _Sampler(threading.Thread):
    """Twice a second: the gateway's resident memory (KiB) and open descriptors, kept at their peak."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.stopping = threading.Event()
        self.peak_rss_kib = 0
        self.peak_fds = 0

    def run(self) -> None:
        while not self.stopping.wait(0.5):
            self.peak_rss_kib = max(self.peak_rss_kib, proc_status_kib(self.pid, "VmRSS") or 0)
            self.peak_fds = max(self.peak_fds, open_fds(self.pid))


def proc_status_kib(pid: int, field: str) -> int | None:
    """``VmRSS`` / ``VmHWM`` of ``pid`` in KiB from ``/proc/<pid>/status``; None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


@dataclass
class _Suite:
    opts: SuiteOptions
    workdir: Path
    group: ProcessGroup
    upstream_port: int = 0
    store: Path | None = None
    headers: tuple[tuple[str, str], ...] = ()
    api_key: str = ""
    env: dict[str, str] | None = None

    @property
    def load_cpu(self) -> int | None:
        return LOAD_CPU if self.group.pinned else None

    def start_upstream(self) -> None:
        www = self.workdir / "www"
        www.mkdir()
        self.workdir.chmod(0o711)  # nginx workers run unprivileged: they must reach the large body
        www.chmod(0o755)
        write_large_body(www)
        self.upstream_port = free_port()
        logs = {"hostile_suite": self.workdir / "upstream.access.log"}
        conf = upstream_conf(NginxPaths.under(self.workdir / "upstream"), {"hostile_suite": self.upstream_port},
                             logs, free_port(), www)
        proc = start_nginx(self.group, "upstream", NginxPaths.under(self.workdir / "upstream"), conf, self.load_cpu)
        _await(proc, self.upstream_port)

    def start_gateway(self, name: str) -> tuple[ManagedProcess, int]:
        """A fresh gateway with setup 5's config; the first call also issues the API key every one uses."""
        port, workdir = free_port(), self.workdir / name
        cfg = gateway.full_config(workdir, port, self.upstream_port, free_port())
        if self.store is not None:
            cfg["store"] = {"url": f"sqlite:///{self.store}"}
        config_path = gateway.write_config(workdir / "portcullis.yaml", cfg)
        if self.env is None:
            self.env = {gateway.PEPPER_ENV: os.urandom(32).hex()}
            self.api_key = gateway.create_api_key(gateway.portcullis_argv(), config_path, {**os.environ, **self.env},
                                                  "bench-key")
            self.store = workdir / "portcullis.db"
            self.headers = (("Accept", "application/json"), ("X-API-Key", self.api_key))
        argv = [*gateway.portcullis_argv(), "serve", str(config_path), "--log-level", "warning"]
        proc = self.group.start(name, argv, cpu=SUT_CPU if self.group.pinned else None, env=self.env, cwd=workdir)
        _await(proc, port)
        _probe(proc, port, self.headers)
        return proc, port

    def scenario(self, scenario: Scenario, p95_script: Path) -> dict[str, Any]:
        proc, port = self.start_gateway(f"gateway-{scenario.name}")
        url = f"http://127.0.0.1:{port}{REQUEST_PATH}"
        conns = self.opts.connections
        try:
            run_wrk(url, self.headers, connections=conns, duration_s=1, cpu=self.load_cpu)  # warm-up
            # The same client on the same process just before the attack: each row carries its own yardstick.
            clean = run_wrk(url, self.headers, connections=conns, duration_s=max(2, self.opts.duration_s // 2),
                            cpu=self.load_cpu, script=p95_script).as_dict()
            rss_before, fds_before = proc_status_kib(proc.pid, "VmRSS"), open_fds(proc.pid)
            driver = None
            if scenario.attacks:
                opts = DriverOptions(port=port, attacks=scenario.attacks, sources=scenario.sources, ramp_s=RAMP_S,
                                     duration_s=self.opts.duration_s + 60.0,
                                     stats=self.workdir / f"driver-{scenario.name}.json")
                driver = start_driver(self.group, f"driver-{scenario.name}", opts, api_key=self.api_key,
                                      cpu=self.load_cpu)
            sampler = _Sampler(proc.pid)
            try:
                if driver is not None:
                    driver.wait_ready(timeout_s=60)
                sampler.start()
                normal = run_wrk(url, self.headers, connections=conns, duration_s=self.opts.duration_s,
                                 cpu=self.load_cpu, script=p95_script).as_dict()
            finally:
                sampler.stopping.set()
                attackers = summarize(driver.finish()) if driver is not None else None
            sampler.join()
            peak_kib = proc_status_kib(proc.pid, "VmHWM")
            alive = proc.popen.poll() is None
        finally:
            proc.stop()
        return {
            "name": scenario.name, "title": scenario.title, "hostile_clients": scenario.describe(),
            "loadavg_1m": round(os.getloadavg()[0], 2),
            "attackers": attackers, "clean": clean, "normal_client": normal, "gateway_alive": alive,
            "rss_before_kib": rss_before, "rss_peak_sampled_kib": sampler.peak_rss_kib, "vm_hwm_kib": peak_kib,
            "fds_before": fds_before, "fds_peak": sampler.peak_fds,
        }


def _await(proc: ManagedProcess, port: int) -> None:
    if not wait_for_port(port, 30.0, proc):
        raise RuntimeError(f"{proc.name} is not listening on 127.0.0.1:{port}. Log tail:\n{proc.log_tail()}")


def _probe(proc: ManagedProcess, port: int, headers: Sequence[tuple[str, str]]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", REQUEST_PATH, headers=dict(headers))
        resp = conn.getresponse()
        resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        raise RuntimeError(f"{proc.name}: probe answered {resp.status}. Log tail:\n{proc.log_tail()}")


def _machine(pinned: bool) -> dict[str, Any]:
    return {"nproc": os.cpu_count(), "pinned": pinned,
            "pinning": (f"gateway on CPU {SUT_CPU}; wrk, the driver, nginx and this script on CPU {LOAD_CPU}"
                        if pinned else "not pinned")}


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    missing = [tool for tool in ("nginx", "wrk") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: run `make bench-hostile` (it installs them)")
    pinned = cpu_pinning_available()
    if pinned:
        os.sched_setaffinity(0, {LOAD_CPU})  # this script's sampling never competes with the gateway
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix="portcullis-hostile-"))
    suite = _Suite(opts, workdir, ProcessGroup(workdir, pinned))
    rows: list[dict[str, Any]] = []
    try:
        suite.start_upstream()
        script = write_p95_script(workdir)
        for name in opts.scenarios:
            print(f"scenario {name}: {SCENARIOS[name].describe()}", flush=True)
            rows.append(suite.scenario(SCENARIOS[name], script))
    except (RuntimeError, OSError, ValueError) as exc:
        print(f"\nHOSTILE SUITE FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        suite.group.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    result = {"scenarios": rows, "machine": _machine(pinned),
              "config": {"normal_client": f"wrk -t1 -c{opts.connections} -d{opts.duration_s}s GET {REQUEST_PATH}",
                         "ramp_s": RAMP_S},
              "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    opts.results_dir.mkdir(parents=True, exist_ok=True)
    (opts.results_dir / "hostile.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    markdown = render_markdown(result)
    (opts.results_dir / "hostile.md").write_text(markdown, encoding="utf-8")
    print("\n" + markdown, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
