"""Where the egress door's CPU goes: py-spy on the door's gateway under wrk, stacks aggregated.

Why this exists beside ``bench.run``: the bench says how much a call costs (CPU microseconds per
request); this says where. It starts the upstream nginx (CPU 1), the door exactly as setup 8 runs
it (``bench.egress_door``, CPU 0), drives it with wrk at c50 (CPU 1) and samples the gateway with
``py-spy record --gil`` (only the thread holding the GIL, so idle threads do not dilute it). The
collapsed stacks are kept (``egress-profile.txt``, for a flame graph) and summarised: each
sample's part of a call (``PARTS``), the functions with the most self time, and the most inclusive.

    python -m bench.egress_profile [--duration 10] [--rate 500] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bench import egress_door, gateway, nginx
from bench.procs import free_port, pinned, tree_cpu_seconds, wait_for_port
from bench.wrk import run_wrk

__all__ = ["PARTS", "Summary", "aggregate", "main", "render"]

# Each sample goes to one part of a call: walking its stack from the leaf to the root, the first
# frame that names a part decides (a needle is a substring of py-spy's "function (file:line)").
# Order matters only between parts one frame could name twice; none does.
PARTS: dict[str, tuple[str, ...]] = {
    "breaker (outcome bookkeeping)": ("egress/breaker.py",),
    "retry bookkeeping": ("egress/retry.py",),
    "vault read (SQLite read + touch, Fernet) and its security event": (
        "portcullis/vault/", "aiosqlite/", "stores/sqlite.py", "cryptography/", "security_event"),
    "send: HTTP client (request, response read)": (
        "aiohttp/", "yarl/", "multidict/", "portcullis/upstream/", "httptools", "phase5_", "_send (portcullis/egress/"),
    "response guard (limits, content type)": ("egress/response_guard.py",),
    "budgets": ("egress/budgets.py", "stores/memory_budgets", "budget_usage.py", "phase3_limits"),
    "rate limits (door and route)": ("portcullis/limiting/", "stores/memory.py"),
    "audit (record, chain, JSONL)": ("portcullis/audit/",),
    "header rules": ("header_rules.py",),
    "SSRF guard (URL, policy, resolve)": ("egress/ssrf.py", "egress/pinning.py", "egress/policy.py", "ipaddress.py"),
    "URL canonicalise, path match": ("http/target.py", "path_matches", "urllib/parse.py"),
    "tracing (pass-through spans)": ("observability/tracing",),
    "metrics": ("observability/",),
    "door handler (context, headers, response head)": ("egress/http_door.py", "pipeline/handler.py",
                                                       "portcullis/ingress/", "portcullis/gateway/"),
    "door chain (auth, shield, headers)": ("portcullis/pipeline/", "portcullis/policies/", "portcullis/identity/",
                                          "portcullis/http/"),
    "server (HTTP parse, response write)": ("portcullis/server/", "httptools"),
    "executor, other egress lines": ("portcullis/egress/",),
    "event loop, other threads": ("asyncio/", "uvloop", "threading.py", "concurrent/"),
}
# Frames above the request (the CLI, the loop's runner) are in every sample: left out of the list.
_ROOT_FILES = ("typer/", "click/", "portcullis/cli/", "asyncio/runners", "uvloop/__init__", "<module>")


def _stacks(raw: Iterable[str]) -> Iterable[tuple[list[str], int]]:
    for line in raw:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if stack and count.isdigit():
            yield stack.split(";"), int(count)


def _part(frames: list[str]) -> str:
    for frame in reversed(frames):
        for part, needles in PARTS.items():
            if any(n in frame for n in needles):
                return part
    return "other"


@dataclass(frozen=True, slots=True)
class Summary:
    """A profile in three lists of (name, samples), largest first."""

    samples: int
    parts: list[tuple[str, int]]
    own: list[tuple[str, int]]  # self time per frame (function and line)
    inclusive: list[tuple[str, int]]  # per function, below the request's root frames


def aggregate(raw: Iterable[str], top: int = 30) -> Summary:
    """Self time per frame, inclusive time per function, and each sample's part of the call."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    parts: Counter[str] = Counter()
    total = 0
    for frames, count in _stacks(raw):
        total += count
        own[frames[-1]] += count
        parts[_part(frames)] += count
        for function in {f.split(" (", 1)[0] + " (" + _file(f) + ")" for f in frames}:
            if not any(r in function for r in _ROOT_FILES):
                inclusive[function] += count
    return Summary(total, parts.most_common(), own.most_common(top), inclusive.most_common(top))


def _file(frame: str) -> str:
    inside = frame.rsplit(" (", 1)[-1].rstrip(")")
    path = inside.rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return path


def render(summary: Summary, us_per_call: float | None) -> str:
    """Markdown tables; with ``us_per_call`` each share is also turned into microseconds per call."""
    total = max(summary.samples, 1)

    def per(n: int) -> str:
        us = f"{us_per_call * n / total:,.0f}" if us_per_call else "n/a"
        return f"{100 * n / total:.1f}% | {us}"

    head = f"samples: {summary.samples}" + (f"; CPU per call: {us_per_call:.0f} us" if us_per_call else "")
    lines = [head, "", "| part of the call (each sample once) | share | us/call |", "| --- | ---: | ---: |"]
    lines += [f"| {name} | {per(n)} |" for name, n in summary.parts]
    lines += ["", "| function (self time) | share | us/call |", "| --- | ---: | ---: |"]
    lines += [f"| `{frame}` | {per(n)} |" for frame, n in summary.own]
    lines += ["", "| function (inclusive) | share | us/call |", "| --- | ---: | ---: |"]
    lines += [f"| `{frame}` | {per(n)} |" for frame, n in summary.inclusive]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "egress-profile")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="portcullis-egress-profile-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        upstream, up_port = nginx.start_probe_upstream(work, 1)
        procs.append(upstream)
        port = free_port()
        pepper = {gateway.PEPPER_ENV: os.urandom(32).hex()}
        door = egress_door.prepare(work / "door", port, up_port, free_port(), pepper)
        log = (work / "door" / "gateway.log").open("wb")
        gw = subprocess.Popen(  # noqa: S603 - argv built here
            [*pinned(0), *gateway.portcullis_argv(), "serve", str(door.config_path), "--log-level", "warning"],
            env={**os.environ, **door.env}, cwd=door.config_path.parent, stdout=log, stderr=subprocess.STDOUT)
        procs.append(gw)
        if not wait_for_port(port, 30):
            raise RuntimeError("the door did not start: " + (work / "door" / "gateway.log").read_text()[-2000:])
        url, headers = f"http://127.0.0.1:{port}{egress_door.DOOR_PATH}", egress_door.call_headers(door.api_key)
        script = egress_door.write_post_script(work)
        run_wrk(url, headers, connections=50, duration_s=3, cpu=1, script=script)  # warm-up
        raw = args.out / "egress-profile.txt"
        spy = subprocess.Popen(  # noqa: S603
            [str(Path(sys.executable).parent / "py-spy"), "record", "--gil", "-r", str(args.rate), "-f", "raw",
             "-o", str(raw), "-p", str(gw.pid), "-d", str(args.duration + 1), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        before = tree_cpu_seconds(gw.pid)
        result = run_wrk(url, headers, connections=50, duration_s=args.duration, cpu=1, script=script)
        cpu_s = tree_cpu_seconds(gw.pid) - before
        spy.wait(timeout=args.duration + 60)
        us = cpu_s * 1e6 / result.requests if result.requests else None
        print(f"{result.rps:,.0f} rps, {result.non_2xx_3xx} non-2xx, CPU {us:.0f} us/call (under py-spy)", flush=True)
        with raw.open() as f:
            text = render(aggregate(f), us)
        (args.out / "egress-profile.md").write_text(text, encoding="utf-8")
        print(text)
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
