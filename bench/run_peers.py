"""``make bench-peers``: the egress door against LiteLLM's proxy, same upstream, same request, same run.

Why LiteLLM: it is the Python proxy people put between their agents and LLM providers today, so
it is the yardstick for the egress door's cost per call. Both get the same chat-completion POST
(``bench.egress_door``) and forward it to the same upstream nginx (one ``server`` block each, so
every upstream request is counted per setup) answering an OpenAI chat completion; both check a
key, both inject the provider key. Setups are measured in interleaved rounds, the system under test
on CPU 0 and wrk plus the upstream on CPU 1, as in ``bench.run``.

LiteLLM is measured on two of its routes, both against the same upstream:
- ``litellm_passthrough``: what LiteLLM calls a pass-through endpoint (``general_settings.
  pass_through_endpoints``): the body is forwarded as it is to ``target`` with the configured
  headers; ``auth: true`` makes it check the caller's key (the master key here) first;
- ``litellm_chat``: its OpenAI-compatible ``/v1/chat/completions`` with a model (``openai/…``)
  whose ``api_base`` is the upstream: parsed, routed, sent with the OpenAI client, re-serialised.

LiteLLM runs from its own virtualenv (``.venv-peers``, installed by ``make bench-peers`` from the
hash-locked ``bench/peers/requirements.txt``), one worker, no database, and offline: every remote
document it would fetch at start (model cost map, blog posts, beta headers, policy templates,
autorouter presets) is read from its package instead, and outbound proxies point at a closed
loopback port so a stray fetch fails instead of leaving the machine.

Options (environment): BENCH_ROUNDS (3), BENCH_DURATION (8), BENCH_C1_DURATION (4), BENCH_WARMUP (3),
BENCH_CONNECTIONS (50), BENCH_RESULTS (bench/results), PEERS_VENV (.venv-peers).
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench import egress_door, gateway, report
from bench.nginx import CHAT_COMPLETION_PATH, NginxPaths, start_nginx, upstream_conf, write_large_body
from bench.procs import ManagedProcess, ProcessGroup, cpu_pinning_available, free_port, tree_cpu_seconds, wait_for_port
from bench.run import machine_info
from bench.wrk import run_wrk

__all__ = ["LITELLM_OFFLINE_ENV", "main"]

REPO = Path(__file__).resolve().parent.parent
SUT_CPU, LOAD_CPU = 0, 1

SETUPS: dict[str, str] = {
    "portcullis_egress": "Portcullis egress door (API key, budgets, vault key)",
    "litellm_passthrough": "LiteLLM pass-through endpoint (auth: true)",
    "litellm_chat": "LiteLLM /v1/chat/completions (openai/ model, api_base: the upstream)",
}
# Goal → (numerator, denominator, text, target): the door at least 30 times LiteLLM's throughput.
PEER_RATIOS: dict[str, tuple[str, str, str, float]] = {
    "P1": ("portcullis_egress", "litellm_passthrough", "egress door vs. LiteLLM pass-through (rps, c50)", 30.0),
    "P2": ("portcullis_egress", "litellm_chat", "egress door vs. LiteLLM chat completions (rps, c50)", 30.0),
}
PASSTHROUGH_PATH = "/bench/v1/chat/completions"
# Remote documents LiteLLM fetches at start unless told to read its bundled copy; and proxies that
# go nowhere, for anything else that would try to leave the machine (loopback is exempt).
LITELLM_OFFLINE_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_BLOG_POSTS": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
    "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
    "DISABLE_ADMIN_UI": "True",
    "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
}


class PeersError(RuntimeError):
    """A setup could not be started or answered wrongly: the run stops, loudly."""


@dataclass
class Peer:
    """One running setup: where to send the POST, with which headers, and whose CPU it is."""

    name: str
    port: int
    path: str
    headers: list[tuple[str, str]]
    sut: ManagedProcess
    upstream_log: Path
    runs: list[dict[str, Any]] = field(default_factory=list)
    wrk_requests: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"


def _litellm_config(upstream_chat: int, upstream_passthrough: int, master_key: str) -> dict[str, Any]:
    return {
        "model_list": [{
            "model_name": "gpt-4o-mini",
            "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": f"http://127.0.0.1:{upstream_chat}/v1",
                               "api_key": egress_door.PROVIDER_KEY},
        }],
        "general_settings": {
            "master_key": master_key,
            "pass_through_endpoints": [{
                "path": PASSTHROUGH_PATH,
                "target": f"http://127.0.0.1:{upstream_passthrough}{CHAT_COMPLETION_PATH}",
                "headers": {"Authorization": f"Bearer {egress_door.PROVIDER_KEY}"},
                "auth": True,
            }],
        },
        "litellm_settings": {"drop_params": True},
    }


def _start_litellm(group: ProcessGroup, work: Path, venv: Path, port: int, config: dict[str, Any],
                   cpu: int | None) -> ManagedProcess:
    binary = venv / "bin" / "litellm"
    if not binary.exists():
        raise PeersError(f"{binary} is missing: run `make bench-peers` (it installs LiteLLM into {venv})")
    config_path = work / "litellm.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    env = {**LITELLM_OFFLINE_ENV, "VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}"}
    argv = [str(binary), "--config", str(config_path), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    return group.start("litellm", argv, cpu=cpu, env=env, cwd=work)


def _probe(peer: Peer) -> None:
    """One POST; anything but 200 with a chat completion in the body stops the run."""
    conn = http.client.HTTPConnection("127.0.0.1", peer.port, timeout=30)
    try:
        conn.request("POST", peer.path, body=egress_door.CHAT_REQUEST_BODY.encode(), headers=dict(peer.headers))
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    if resp.status != 200 or b"chat.completion" not in body:
        raise PeersError(f"{peer.name}: probe answered {resp.status}: {body[:500]!r}\n{peer.sut.log_tail()}")


def _measure(peer: Peer, connections: int, duration_s: int, script: Path, load_cpu: int | None) -> dict[str, Any]:
    before = tree_cpu_seconds(peer.sut.pid)
    result = run_wrk(peer.url, peer.headers, connections=connections, duration_s=duration_s, cpu=load_cpu,
                     script=script)
    cpu_s = tree_cpu_seconds(peer.sut.pid) - before
    peer.wrk_requests += result.requests
    figures = result.as_dict()
    figures["cpu_s"] = round(cpu_s, 4)
    figures["cpu_us_per_request"] = round(cpu_s * 1e6 / result.requests, 2) if result.requests else None
    if peer.sut.popen.poll() is not None:
        raise PeersError(f"{peer.name} exited during the run:\n{peer.sut.log_tail()}")
    return figures


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as f:
        return sum(1 for _ in f)


def _litellm_version(venv: Path) -> str:
    done = subprocess.run(  # noqa: S603 - argv built here
        [str(venv / "bin" / "python"), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True, text=True, timeout=60, check=False)
    return done.stdout.strip() or "unknown"


def render_markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    cfg = result["config"]
    lines = ["# Portcullis egress door vs. LiteLLM's proxy", "",
             f"{m['cpu_model']}, {m['nproc']} CPUs, pinned: {m['pinned']} ({m['pinning']}); Python {m['python']}, "
             f"LiteLLM {result['litellm_version']} (its own virtualenv, one worker, offline); {cfg['rounds']} rounds, "
             f"c{cfg['connections']} {cfg['duration_s']}s / c1 {cfg['c1_duration_s']}s, medians. Every setup gets "
             f"`{cfg['request']}` and forwards it to the same upstream nginx, which answers an OpenAI chat completion.",
             "", "| setup | rps (c50) | p50 c50 ms | p99 c50 ms | p50 c1 ms | p99 c1 ms | CPU us/req | errors | "
             "upstream requests |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for s in result["setups"].values():
        c50, c1 = s["median"]["c50"], s["median"]["c1"]
        fmt = report._fmt
        lines.append(f"| {s['label']} | {fmt(c50['rps'], 0)} | {fmt(c50['p50_ms'])} | {fmt(c50['p99_ms'])} | "
                     f"{fmt(c1['p50_ms'])} | {fmt(c1['p99_ms'])} | {fmt(c50['cpu_us_per_request'], 1)} | "
                     f"{s['errors']} | {s['upstream_requests']} |")
    lines += ["", "| goal | definition | value | target | result |", "| --- | --- | ---: | ---: | --- |"]
    for goal, (_, _, text, target) in PEER_RATIOS.items():
        for key, label, what in ((goal, goal, text), (f"{goal}_cpu", f"{goal} (CPU)", _cpu_text(text))):
            value = result["ratios"].get(key)
            if value is None and key != goal:
                continue
            ok = None if value is None else value >= target
            shown = f"≥ {target:g}" if key == goal else f"(≥ {target:g})"
            lines.append(f"| {label} | {what} | {report._fmt(value, 1)} | {shown} | "
                         f"{'n/a' if ok is None else ('pass' if ok else '**fail**')} |")
    return "\n".join(lines) + "\n"


def _cpu_text(text: str) -> str:
    return text.replace("(rps, c50)", "(CPU per request, c50; complement)")


def peer_ratios(setups: dict[str, Any]) -> dict[str, float | None]:
    """Each goal by requests per second, and by CPU per request (the peer's over the door's): the
    second barely moves with whatever else runs on the machine, the first follows it."""
    ratios: dict[str, float | None] = {}
    for goal, (num, den, _, _) in PEER_RATIOS.items():
        a, b = setups[num]["median"]["c50"]["rps"], setups[den]["median"]["c50"]["rps"]
        ratios[goal] = round(a / b, 2) if a is not None and b else None
        ca, cb = (setups[n]["median"]["c50"]["cpu_us_per_request"] for n in (num, den))
        ratios[f"{goal}_cpu"] = round(cb / ca, 2) if ca and cb is not None else None
    return ratios


def main() -> int:
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    duration = int(os.environ.get("BENCH_DURATION", "8"))
    c1_duration = int(os.environ.get("BENCH_C1_DURATION", "4"))
    warmup = int(os.environ.get("BENCH_WARMUP", "3"))
    connections = int(os.environ.get("BENCH_CONNECTIONS", "50"))
    results_dir = Path(os.environ.get("BENCH_RESULTS", str(REPO / "bench" / "results")))
    venv = Path(os.environ.get("PEERS_VENV", str(REPO / ".venv-peers"))).resolve()
    missing = [t for t in ("nginx", "wrk") if shutil.which(t) is None and shutil.which(t, path="/usr/sbin") is None]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: run `make bench-peers` (it installs them)")
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    pinned = cpu_pinning_available()
    sut_cpu, load_cpu = (SUT_CPU, LOAD_CPU) if pinned else (None, None)
    work = Path(tempfile.mkdtemp(prefix="portcullis-peers-"))
    group = ProcessGroup(work, pinned)
    try:
        blocks = {name: free_port() for name in SETUPS}
        logs = {name: work / "upstream-logs" / f"{name}.access.log" for name in SETUPS}
        (work / "upstream-logs").mkdir()
        www = work / "www"
        www.mkdir()
        work.chmod(0o711)
        www.chmod(0o755)
        write_large_body(www)
        paths = NginxPaths.under(work / "upstream")
        upstream = start_nginx(group, "upstream", paths, upstream_conf(paths, blocks, logs, free_port(), www), load_cpu)
        if not wait_for_port(blocks["portcullis_egress"], 30, upstream):
            raise PeersError(f"upstream nginx did not start:\n{upstream.log_tail()}")

        door_port, litellm_port = free_port(), free_port()
        door = egress_door.prepare(work / "portcullis", door_port, blocks["portcullis_egress"], free_port(),
                                   {gateway.PEPPER_ENV: os.urandom(32).hex()})
        door_proc = group.start("portcullis", [*gateway.portcullis_argv(), "serve", str(door.config_path),
                                               "--log-level", "warning"],
                                cpu=sut_cpu, env=door.env, cwd=door.config_path.parent)
        master_key = "sk-bench-master-" + secrets.token_hex(16)
        litellm = _start_litellm(group, work, venv, litellm_port,
                                 _litellm_config(blocks["litellm_chat"], blocks["litellm_passthrough"], master_key),
                                 sut_cpu)
        litellm_headers = [("Accept", "application/json"), ("Content-Type", "application/json"),
                           ("Authorization", f"Bearer {master_key}")]
        peers = {
            "portcullis_egress": Peer("portcullis_egress", door_port, egress_door.DOOR_PATH,
                                      egress_door.call_headers(door.api_key), door_proc, logs["portcullis_egress"]),
            "litellm_passthrough": Peer("litellm_passthrough", litellm_port, PASSTHROUGH_PATH, litellm_headers, litellm,
                                        logs["litellm_passthrough"]),
            "litellm_chat": Peer("litellm_chat", litellm_port, CHAT_COMPLETION_PATH, litellm_headers, litellm,
                                 logs["litellm_chat"]),
        }
        for peer in peers.values():
            if not wait_for_port(peer.port, 180, peer.sut):
                raise PeersError(f"{peer.name} is not listening on {peer.port}:\n{peer.sut.log_tail()}")
        for peer in peers.values():
            _probe(peer)
        script = egress_door.write_post_script(work)
        for peer in peers.values():
            print(f"warm-up {peer.name} ({warmup}s, c{connections})", flush=True)
            _measure(peer, connections, warmup, script, load_cpu)
        for index in range(1, rounds + 1):
            for peer in peers.values():
                c50 = _measure(peer, connections, duration, script, load_cpu)
                c1 = _measure(peer, 1, c1_duration, script, load_cpu)
                peer.runs.append({"c50": c50, "c1": c1})
                print(f"round {index}/{rounds} {peer.name:20s} c{connections}: {c50['rps']:>9,.0f} rps p99 "
                      f"{c50['p99_ms']:.2f} ms cpu {c50['cpu_us_per_request']} us/req | c1 p50 {c1['p50_ms']:.2f} ms",
                      flush=True)
        version = _litellm_version(venv)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"\nBENCH-PEERS FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        group.stop_all()
    setups: dict[str, Any] = {}
    for name, peer in peers.items():
        errors = sum(r[level]["non_2xx_3xx"] + r[level]["socket_errors"] for r in peer.runs for level in r)
        setups[name] = {"label": SETUPS[name], "url": peer.url, "median": report.medians(peer.runs),
                        "rounds": peer.runs, "errors": errors, "wrk_requests_total": peer.wrk_requests,
                        "upstream_requests": _count_lines(peer.upstream_log)}
    shutil.rmtree(work, ignore_errors=True)
    ratios = peer_ratios(setups)
    result = {
        "ratios": ratios, "targets": {g: t for g, (_, _, _, t) in PEER_RATIOS.items()}, "setups": setups,
        "machine": machine_info(pinned), "litellm_version": version,
        "config": {"rounds": rounds, "duration_s": duration, "c1_duration_s": c1_duration, "warmup_s": warmup,
                   "connections": connections,
                   "request": f"POST (chat completion, {len(egress_door.CHAT_REQUEST_BODY)}-byte JSON body)"},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "peers.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    markdown = render_markdown(result)
    (results_dir / "peers.md").write_text(markdown, encoding="utf-8")
    print("\n" + markdown, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
