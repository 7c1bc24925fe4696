"""``make bench``: start every setup against one upstream, load them in interleaved rounds, report.

Why this shape: the setups share one upstream nginx and identical request bytes, so the only
thing that differs between rows is the process in the middle. Rounds are interleaved (every
setup once per round) so drift in the machine (thermal, noisy neighbours) spreads over all rows
instead of penalising whichever ran last; medians across rounds are reported. The system under
test runs on CPU 0, wrk and the upstream on CPU 1, so the SUT never competes with its load.

Options (environment): BENCH_ROUNDS (3), BENCH_DURATION (c50 seconds, 8), BENCH_C1_DURATION (4),
BENCH_WARMUP (2), BENCH_CONNECTIONS (50), BENCH_SETUPS (comma-separated names, default all),
BENCH_RESULTS (output directory, bench/results), BENCH_HOSTILE (1: the hostile phase, H1, after the
rounds when setup 5 is selected; 0 skips it; see bench/hostile_phase.py), BENCH_AUTH (1: the cost of
each authentication method on one core, and mutual-TLS handshakes per second, at the end; 0 skips
it; see bench/auth_costs.py and bench/mtls_handshakes.py).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import egress_door, gateway, hostile_phase, mtls_handshakes, report
from bench.nginx import NginxPaths, proxy_conf, start_nginx, upstream_conf, write_large_body
from bench.procs import ManagedProcess, ProcessGroup, cpu_pinning_available, free_port, tree_cpu_seconds, wait_for_port
from bench.wrk import WrkResult, run_wrk

__all__ = ["Options", "main"]

REPO = Path(__file__).resolve().parent.parent
SUT_CPU, LOAD_CPU = 0, 1
REQUEST_PATH = "/api/items/42?view=full"

# Order is the order of the rows and of each round.
SETUPS: dict[str, str] = {
    "upstream_direct": "1 upstream direct (nginx)",
    "nginx_proxy": "2 nginx reverse proxy",
    "bare_python_proxy": "3 bare Python proxy (floor)",
    "portcullis_no_policies": "4 Portcullis, no policies",
    "portcullis_no_policies_uvicorn": "4b Portcullis, no policies, former server (uvicorn)",
    "portcullis_full": "5 Portcullis, full (API key)",
    "portcullis_jwt": "6 Portcullis, JWT (RS256)",
    "portcullis_redis_limits": "7 Portcullis, Redis limits",
    "portcullis_egress": "8 Portcullis egress door (API key, budgets, vault key; POST chat completion)",
}
NOT_AVAILABLE: dict[str, str] = {}
AUDITED = ("portcullis_full", "portcullis_jwt", "portcullis_redis_limits", "portcullis_egress")


class BenchError(RuntimeError):
    """A setup could not be started or checked: the run stops, loudly."""


@dataclass(frozen=True, slots=True)
class Options:
    rounds: int
    duration_s: int
    c1_duration_s: int
    warmup_s: int
    connections: int
    setups: tuple[str, ...]
    results_dir: Path
    hostile: bool = True
    auth_methods: bool = True

    @classmethod
    def from_env(cls) -> Options:
        wanted = os.environ.get("BENCH_SETUPS", "")
        names = tuple(n.strip() for n in wanted.split(",") if n.strip()) or tuple(SETUPS)
        unknown = [n for n in names if n not in SETUPS]
        if unknown:
            raise SystemExit(f"BENCH_SETUPS: unknown setup(s) {unknown}; known: {', '.join(SETUPS)}")
        return cls(
            rounds=int(os.environ.get("BENCH_ROUNDS", "3")),
            duration_s=int(os.environ.get("BENCH_DURATION", "8")),
            c1_duration_s=int(os.environ.get("BENCH_C1_DURATION", "4")),
            warmup_s=int(os.environ.get("BENCH_WARMUP", "2")),
            connections=int(os.environ.get("BENCH_CONNECTIONS", "50")),
            setups=names,
            results_dir=Path(os.environ.get("BENCH_RESULTS", str(REPO / "bench" / "results"))),
            hostile=os.environ.get("BENCH_HOSTILE", "1") != "0" and "portcullis_full" in names,
            auth_methods=os.environ.get("BENCH_AUTH", "1") != "0",
        )


@dataclass
class Target:
    """One running setup: where to send load, which process tree to charge CPU to, what to count."""

    name: str
    port: int
    sut: ManagedProcess
    upstream_log: Path
    audit_file: Path | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)  # one {"c50":…, "c1":…} per round
    warmup: dict[str, Any] | None = None
    probes: int = 0
    wrk_requests: int = 0
    in_flight_bound: int = 0
    # Setup 8 sends its own request (a POST through the egress door); the others the common GET.
    path: str = REQUEST_PATH
    headers: list[tuple[str, str]] | None = None  # None: the run's common headers
    script: Path | None = None  # the wrk script that makes the request a POST with a body
    body: bytes | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def account(self, result: WrkResult) -> None:
        """Every request wrk completed, and the most it can have left in flight when it stopped."""
        self.wrk_requests += result.requests
        self.in_flight_bound += result.connections


@dataclass
class Run:
    """Everything one harness run owns; ``close`` undoes all of it."""

    opts: Options
    workdir: Path
    group: ProcessGroup
    targets: dict[str, Target] = field(default_factory=dict)
    headers: list[tuple[str, str]] = field(default_factory=list)
    gateway_env: dict[str, str] = field(default_factory=dict)  # the key pepper every gateway shares
    hostile_upstream: tuple[int, Path] | None = None  # the hostile phase's own upstream block: port, access log

    @property
    def load_cpu(self) -> int | None:
        return LOAD_CPU if self.group.pinned else None

    @property
    def sut_cpu(self) -> int | None:
        return SUT_CPU if self.group.pinned else None


def _nginx_paths(run: Run, name: str) -> NginxPaths:
    return NginxPaths.under(run.workdir / name)


def _start_nginx(run: Run, name: str, conf_text: str, cpu: int | None) -> ManagedProcess:
    """Our own nginx in the foreground, every path (prefix, logs, temp, pid) in the run's temp dir."""
    return start_nginx(run.group, name, _nginx_paths(run, name), conf_text, cpu)


def _start_redis(run: Run) -> str:
    """A private redis-server on the load CPU, as the upstream nginx is; the machine's if there is none.

    Why: the machine's Redis is a service with no pinning, so it ran on the SUT's CPU as often as
    not and setup 7 paid for Redis's own work (G3 moved between 0.67 and 0.83 across runs). In
    production Redis is another host; on the load CPU it costs the gateway only the round trip.
    """
    binary = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin:/usr/sbin")
    if binary is None:
        print("redis-server not found: setup 7 uses the machine's Redis (127.0.0.1:6379), unpinned", flush=True)
        return "redis://127.0.0.1:6379/0"
    port = free_port()
    proc = run.group.start("redis", [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                     "--appendonly", "no", "--dir", str(run.workdir)], cpu=run.load_cpu)
    if not wait_for_port(port, timeout_s=10, proc=proc):
        raise BenchError(f"redis-server did not start; see {proc.log_path}")
    return f"redis://127.0.0.1:{port}/0"


def _start_upstream(run: Run, ports: dict[str, int]) -> tuple[ManagedProcess, dict[str, Path], int]:
    """The one upstream nginx: a block per setup (own access log) and one serving the JWKS."""
    logs = {name: run.workdir / "upstream-logs" / f"{name}.access.log" for name in ports}
    (run.workdir / "upstream-logs").mkdir()
    jwks_port = free_port()
    www = run.workdir / "www"
    www.mkdir()
    # nginx workers drop root for an unprivileged user: they must be able to reach and read the JWKS.
    run.workdir.chmod(0o711)
    www.chmod(0o755)
    write_large_body(www)
    conf = upstream_conf(_nginx_paths(run, "upstream"), ports, logs, jwks_port, www)
    proc = _start_nginx(run, "upstream", conf, run.load_cpu)
    _await_port(proc, jwks_port)
    return proc, logs, jwks_port


def _await_port(proc: ManagedProcess, port: int, timeout_s: float = 30.0) -> None:
    if not wait_for_port(port, timeout_s, proc):
        raise BenchError(f"{proc.name} is not listening on 127.0.0.1:{port} after {timeout_s:.0f}s "
                         f"(exit status {proc.popen.poll()}). Log tail:\n{proc.log_tail()}")


def _start_gateway(run: Run, name: str, config: dict[str, Any], env: dict[str, str]) -> tuple[ManagedProcess, Path]:
    workdir = run.workdir / name
    config_path = gateway.write_config(workdir / "portcullis.yaml", config)
    proc = run.group.start(name, [*gateway.portcullis_argv(), "serve", str(config_path), "--log-level", "warning"],
                           cpu=run.sut_cpu, env=env, cwd=workdir)
    return proc, config_path


def start_setups(run: Run) -> None:
    """Start the upstream and every selected setup, then probe each once (must answer 200)."""
    names = [n for n in run.opts.setups if n not in NOT_AVAILABLE]
    ports = {n: free_port() for n in names}
    upstream_ports = {n: free_port() for n in names}
    if run.opts.hostile:
        upstream_ports[hostile_phase.HOSTILE_SETUP] = free_port()
    upstream, logs, jwks_port = _start_upstream(run, upstream_ports)
    if run.opts.hostile:
        run.hostile_upstream = upstream_ports[hostile_phase.HOSTILE_SETUP], logs[hostile_phase.HOSTILE_SETUP]
    jwt_material = gateway.make_jwt_material()
    jwks_file = run.workdir / "www" / "jwks.json"
    jwks_file.write_text(json.dumps(jwt_material.jwks), encoding="utf-8")
    jwks_file.chmod(0o644)
    env = run.gateway_env = {gateway.PEPPER_ENV: os.urandom(32).hex()}
    api_key = "pcl_not-used-by-this-run"
    key_store: Path | None = None
    for name in names:
        port, up_port = ports[name], upstream_ports[name]
        audit: Path | None = None
        if name == "upstream_direct":
            proc, port = upstream, up_port
        elif name == "nginx_proxy":
            proc = _start_nginx(run, name, proxy_conf(_nginx_paths(run, name), port, up_port), run.sut_cpu)
        elif name == "bare_python_proxy":
            proc = run.group.start(name, [sys.executable, "-m", "bench.bare_proxy", "--port", str(port),
                                          "--upstream", f"http://127.0.0.1:{up_port}"],
                                   cpu=run.sut_cpu, cwd=REPO, env={"PYTHONPATH": str(REPO)})
        elif name == "portcullis_no_policies":
            proc, _ = _start_gateway(run, name, gateway.no_policy_config(run.workdir / name, port, up_port), env)
        elif name == "portcullis_no_policies_uvicorn":  # what our own server is measured against
            cfg = gateway.no_policy_config(run.workdir / name, port, up_port)
            cfg["listen"]["server"] = "uvicorn"
            proc, _ = _start_gateway(run, name, cfg, env)
        elif name == "portcullis_full":
            cfg = gateway.full_config(run.workdir / name, port, up_port, free_port())
            config_path = gateway.write_config(run.workdir / name / "portcullis.yaml", cfg)
            api_key = gateway.create_api_key(gateway.portcullis_argv(), config_path, {**os.environ, **env}, "bench-key")
            key_store = run.workdir / name / "portcullis.db"
            proc, _ = _start_gateway(run, name, cfg, env)
            audit = run.workdir / name / "audit.jsonl"
        elif name == "portcullis_redis_limits":
            if key_store is None:  # setup 5 not selected: this setup makes the key in its own store
                key_store = run.workdir / name / "portcullis.db"
            cfg = gateway.redis_config(run.workdir / name, port, up_port, free_port(), key_store=key_store,
                                       redis_prefix=f"bench:{os.urandom(6).hex()}:", redis_url=_start_redis(run))
            if "portcullis_full" not in names:
                config_path = gateway.write_config(run.workdir / name / "portcullis.yaml", cfg)
                api_key = gateway.create_api_key(gateway.portcullis_argv(), config_path, {**os.environ, **env},
                                                 "bench-key")
            proc, _ = _start_gateway(run, name, cfg, env)
            audit = run.workdir / name / "audit.jsonl"
        elif name == "portcullis_egress":
            door = egress_door.prepare(run.workdir / name, port, up_port, free_port(), env)
            proc = run.group.start(name, [*gateway.portcullis_argv(), "serve", str(door.config_path), "--log-level",
                                          "warning"], cpu=run.sut_cpu, env=door.env, cwd=door.config_path.parent)
            audit = run.workdir / name / "audit.jsonl"
            run.targets[name] = Target(
                name, port, proc, logs[name], audit, path=egress_door.DOOR_PATH,
                headers=egress_door.call_headers(door.api_key), body=egress_door.CHAT_REQUEST_BODY.encode(),
                script=egress_door.write_post_script(run.workdir / name))
            continue
        else:  # portcullis_jwt
            jwks_url = f"http://127.0.0.1:{jwks_port}/jwks.json"
            cfg = gateway.jwt_config(run.workdir / name, port, up_port, free_port(), jwks_url)
            proc, _ = _start_gateway(run, name, cfg, env)
            audit = run.workdir / name / "audit.jsonl"
        run.targets[name] = Target(name, port, proc, logs[name], audit)
    # The same bytes to every setup, credentials included even where nothing reads them.
    run.headers = [("Accept", "application/json"), ("X-API-Key", api_key),
                   ("Authorization", f"Bearer {jwt_material.token}")]
    for target in run.targets.values():
        _await_port(target.sut, target.port)
        probe(run, target)


def probe(run: Run, target: Target) -> None:
    """One request with the benchmark's headers; anything but 200 stops the run with the SUT's log."""
    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=10)
    try:
        conn.request("GET" if target.body is None else "POST", target.path, body=target.body,
                     headers=dict(target.headers or run.headers))
        resp = conn.getresponse()
        body = resp.read()
        status = resp.status
    except OSError as exc:
        raise BenchError(f"{target.name}: probe failed: {exc!r}. Log tail:\n{target.sut.log_tail()}") from exc
    finally:
        conn.close()
    target.probes += 1
    if status != 200:
        raise BenchError(f"{target.name}: probe answered {status}: {body[:500]!r}. Log tail:\n{target.sut.log_tail()}")


def _measure(run: Run, target: Target, connections: int, duration_s: int) -> dict[str, Any]:
    """One wrk run; CPU of the SUT's process tree over the run, per completed request."""
    before = tree_cpu_seconds(target.sut.pid)
    result = run_wrk(target.url, target.headers or run.headers, connections=connections, duration_s=duration_s,
                     cpu=run.load_cpu, script=target.script)
    cpu_s = tree_cpu_seconds(target.sut.pid) - before
    target.account(result)
    figures = result.as_dict()
    figures["cpu_s"] = round(cpu_s, 4)
    figures["cpu_us_per_request"] = round(cpu_s * 1e6 / result.requests, 2) if result.requests else None
    if target.sut.popen.poll() is not None:
        raise BenchError(f"{target.name} exited during the run. Log tail:\n{target.sut.log_tail()}")
    return figures


def measure_all(run: Run) -> None:
    """Warm-up once per setup, then interleaved rounds of saturation (c50) and unloaded (c1) runs."""
    o = run.opts
    for target in run.targets.values():
        print(f"warm-up {target.name} ({o.warmup_s}s, c{o.connections})", flush=True)
        target.warmup = _measure(run, target, o.connections, o.warmup_s)
    for index in range(1, o.rounds + 1):
        for target in run.targets.values():
            c50 = _measure(run, target, o.connections, o.duration_s)
            c1 = _measure(run, target, 1, o.c1_duration_s)
            target.runs.append({"c50": c50, "c1": c1})
            print(f"round {index}/{o.rounds} {target.name:24s} c{o.connections}: {c50['rps']:>10,.0f} rps "
                  f"p99 {c50['p99_ms']:.3f} ms  cpu {c50['cpu_us_per_request']} us/req | "
                  f"c1: p50 {c1['p50_ms']:.3f} ms p99 {c1['p99_ms']:.3f} ms", flush=True)


def measure_hostile(run: Run) -> dict[str, Any] | None:
    """H1 (bench/hostile_phase.py): a fresh gateway with setup 5's config and key, clean and attacked rounds."""
    if run.hostile_upstream is None or "portcullis_full" not in run.targets:
        return None
    name = hostile_phase.HOSTILE_SETUP
    port, (upstream_port, upstream_log) = free_port(), run.hostile_upstream
    cfg = gateway.full_config(run.workdir / name, port, upstream_port, free_port())
    cfg["store"] = {"url": f"sqlite:///{run.workdir / 'portcullis_full' / 'portcullis.db'}"}  # setup 5's API key
    proc, _ = _start_gateway(run, name, cfg, run.gateway_env)
    target = Target(name, port, proc, upstream_log)
    _await_port(proc, port)
    probe(run, target)
    o = run.opts
    try:
        return hostile_phase.measure(
            run.group, sut=proc, port=port, url=target.url, headers=run.headers, api_key=dict(run.headers)["X-API-Key"],
            rounds=o.rounds, duration_s=o.duration_s, warmup_s=o.warmup_s, connections=o.connections,
            load_cpu=run.load_cpu, workdir=run.workdir / name,
        )
    finally:
        proc.stop()


def measure_auth_methods(run: Run) -> dict[str, Any] | None:
    """Each method's check on one core (bench/auth_costs.py, its own process on the SUT's CPU), then
    full TLS and mutual-TLS handshakes per second through a real listener (bench/mtls_handshakes.py)."""
    if not run.opts.auth_methods:
        return None
    print("authentication methods: one check each on one core, then TLS and mTLS handshakes", flush=True)
    pin = ["taskset", "-c", str(SUT_CPU)] if run.group.pinned else []
    done = subprocess.run([*pin, sys.executable, "-m", "bench.auth_costs", "--json", "--seconds", "2"],  # noqa: S603
                          cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise BenchError(f"bench.auth_costs failed:\n{done.stderr[-2000:]}")
    checks = json.loads(done.stdout)
    handshakes = mtls_handshakes.measure(runs=run.opts.rounds, duration_s=4, clients=4)
    return {"checks": checks, "handshakes": handshakes}


def _count_lines(path: Path, *, skip: Sequence[bytes] = ()) -> int:
    """Lines in a file and its rotated siblings (``audit.jsonl.1`` …), less those containing any of ``skip``."""
    total = 0
    for candidate in sorted(path.parent.glob(path.name + "*")):
        if candidate.name == path.name or candidate.name[len(path.name) + 1:].isdigit():
            with candidate.open("rb") as f:
                total += sum(1 for line in f if not any(marker in line for marker in skip))
    return total


# The chain's signed checkpoints share the audit file with the records they seal (docs/audit.md):
# one every ``audit.checkpoint_every`` records and interval. They are no request, so not counted.
_CHECKPOINT_LINE = b'"kind":"checkpoint"'
# Security events share it too: the egress door's vault read is a ``secret.read`` event (one per
# route and execution a minute), next to the calls' own records. Counted apart (``security_events``).
_SECURITY_LINE = b'"class":"security"'


def audit_check(run: Run) -> dict[str, dict[str, Any]]:
    """Stop each audited gateway gracefully (it drains its queue), then count what it wrote.

    See bench/README.md ("Audit check") for why ``match`` is defined this way.
    """
    out: dict[str, dict[str, Any]] = {}
    for name in AUDITED:
        target = run.targets.get(name)
        if target is None or target.audit_file is None:
            continue
        status = target.sut.stop(timeout_s=60)
        exists = target.audit_file.exists()
        audit_records = _count_lines(target.audit_file, skip=(_CHECKPOINT_LINE, _SECURITY_LINE)) if exists else 0
        security_events = (_count_lines(target.audit_file, skip=(_CHECKPOINT_LINE,)) - audit_records) if exists else 0
        upstream_requests = _count_lines(target.upstream_log) if target.upstream_log.exists() else 0
        wrk_requests = target.wrk_requests + target.probes
        match = (audit_records == upstream_requests
                 and wrk_requests <= audit_records <= wrk_requests + target.in_flight_bound)
        out[name] = {"audit_records": audit_records, "wrk_requests": wrk_requests,
                     "upstream_requests": upstream_requests, "in_flight_bound": target.in_flight_bound,
                     "security_events": security_events,
                     "gateway_exit_status": status, "match": match}
    return out


def _command_version(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(list(argv), capture_output=True, timeout=10, check=False)  # noqa: S603
    except OSError as exc:
        return f"unavailable ({exc})"
    text = (done.stdout + done.stderr).decode(errors="replace").strip().splitlines()
    return text[0].strip() if text else "unknown"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _git_commit() -> str | None:
    argv = ["git", "-C", str(REPO), "rev-parse", "HEAD"]  # read-only
    done = subprocess.run(argv, capture_output=True, timeout=10, check=False)  # noqa: S603
    return done.stdout.decode().strip() or None


def machine_info(pinned: bool) -> dict[str, Any]:
    from bench.bare_proxy import CLIENT_NAME

    nproc = os.cpu_count() or 1
    return {
        "cpu_model": _cpu_model(),
        "nproc": nproc,
        "pinned": pinned,
        "pinning": (f"SUT on CPU {SUT_CPU}; wrk and upstream nginx on CPU {LOAD_CPU}" if pinned
                    else f"not pinned: {nproc} CPU(s) or no taskset"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nginx": _command_version(["nginx", "-v"]),
        "wrk": _command_version(["wrk", "-v"]).split(" [")[0],
        "bare_proxy_upstream_client": CLIENT_NAME,
        "portcullis_commit": _git_commit(),
    }


def build_result(run: Run, audits: dict[str, dict[str, Any]], hostile: dict[str, Any] | None,
                 auth_methods: dict[str, Any] | None = None) -> dict[str, Any]:
    setups: dict[str, Any] = {}
    for name in run.opts.setups:
        label = SETUPS[name]
        target = run.targets.get(name)
        if target is None:
            setups[name] = {"label": label, "status": NOT_AVAILABLE.get(name, "not run"),
                            "median": None, "rounds": [], "warmup": None, "errors": None}
            continue
        errors = sum(r[level]["non_2xx_3xx"] + r[level]["socket_errors"] for r in target.runs for level in r)
        upstream_requests = _count_lines(target.upstream_log) if target.upstream_log.exists() else None
        setups[name] = {"label": label, "status": "ok", "url": target.url, "median": report.medians(target.runs),
                        "rounds": target.runs, "warmup": target.warmup, "errors": errors,
                        "wrk_requests_total": target.wrk_requests, "probes": target.probes,
                        "upstream_requests": upstream_requests}
    audit_ok = [a["match"] for a in audits.values()]
    return {
        "ratios": report.ratios(setups),
        "added_latency_ms": report.added_latency(setups),
        "tail_ratio": report.tail_ratio(setups),
        "hostile_ratio": report.hostile_ratio(hostile),
        "hostile": hostile,
        "auth_methods": auth_methods,
        "audit_records_match": all(audit_ok) if audit_ok else None,
        "audit": audits,
        "setups": setups,
        "machine": machine_info(run.group.pinned),
        "targets": report.TARGETS,
        "config": {"rounds": run.opts.rounds, "duration_s": run.opts.duration_s,
                   "c1_duration_s": run.opts.c1_duration_s, "warmup_s": run.opts.warmup_s,
                   "connections": run.opts.connections, "request": f"GET {REQUEST_PATH}",
                   "egress_request": f"POST {egress_door.DOOR_PATH} ({len(egress_door.CHAT_REQUEST_BODY)}-byte JSON)",
                   "request_headers": [name for name, _ in run.headers]},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_results(result: dict[str, Any], results_dir: Path) -> str:
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "latest.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    markdown = report.render_markdown(result)
    (results_dir / "latest.md").write_text(markdown, encoding="utf-8")
    return markdown


def _check_tools() -> None:
    missing = [tool for tool in ("nginx", "wrk") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: run `make bench` (it installs them) or apt-get install")


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> int:
    opts = Options.from_env()
    _check_tools()
    pinned = cpu_pinning_available()
    if not pinned:
        print("only one CPU (or no taskset): running without CPU pinning", flush=True)
    # SIGTERM (e.g. make interrupted by a CI timeout) unwinds through the `finally` below, so every
    # server the harness started is stopped by PID instead of being left behind in its own session.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix="portcullis-bench-"))
    run = Run(opts, workdir, ProcessGroup(workdir, pinned))
    try:
        start_setups(run)
        measure_all(run)
        audits = audit_check(run)
        hostile = measure_hostile(run)
        result = build_result(run, audits, hostile, measure_auth_methods(run))
    except (RuntimeError, subprocess.TimeoutExpired) as exc:  # BenchError, wrk or `keys create` failures
        print(f"\nBENCH FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        run.group.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    markdown = write_results(result, opts.results_dir)
    print("\n" + markdown, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
