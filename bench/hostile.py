"""The hostile-client driver: slowloris, endless heads, idle, never-reading and slow-upload clients.

Run as its own process (``python -m bench.hostile --port P --attack slowloris=200 ...``), pinned
to the load CPU by whoever starts it (``start_driver`` below, used by ``bench.hostile_phase`` and
``bench.hostile_suite``), so the attack never shares a core with the gateway it attacks.

Why it keeps re-opening connections: the gateway's own timeouts cut each attack (``head_timeout``
answers a slowloris 408, ``first_byte_timeout`` drops an idle connection, ``write_timeout`` cuts a
client that does not read, the header caps answer an endless head 431). A real attacker simply
connects again, so every slot here does: it holds one connection at a time, notices when the
gateway has ended it (TCP state read with ``TCP_INFO``, or a failed send) and opens the next.
The number attached is sampled twice a second and reported with what ended each connection.

How a cut is noticed without reading: a connection the gateway closed is no longer ESTABLISHED
once its FIN arrives. A never-reading client may not see that FIN (its receive window is full and
the FIN waits behind unread data), so it sends an empty line (``CRLF``, which RFC 9112 section
2.2 lets a server ignore before a request) every second; once the gateway's socket is gone, the
kernel answers that byte with a reset, which the next check sees.

Why several source addresses (``--sources``): every client on loopback would otherwise be
127.0.0.1, and ``listen.max_connections_per_ip`` (256 by default) would refuse most of the attack
before it cost the gateway anything, measuring the per-address cap rather than the timeouts. The
attacks the timeouts exist for come from many addresses, so slots are spread round-robin over
127.0.0.2, 127.0.0.3, ... (all of 127.0.0.0/8 is the loopback interface on Linux; every
connection still goes to 127.0.0.1 and nothing leaves the machine). ``--sources 1`` keeps every
slot on 127.0.0.2, which shows the per-address cap instead.

What it refuses to do: connect anywhere but 127.0.0.1, run unbounded (at most ``MAX_SLOTS``
slots and ``MAX_DURATION_S`` seconds; every socket is closed on exit), or reconnect in a tight
loop (a connection that lived under a second is followed by a one-second pause).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.nginx import LARGE_BODY_BYTES
from bench.procs import ManagedProcess, ProcessGroup

__all__ = [
    "API_KEY_ENV",
    "ATTACKS",
    "LARGE_PATH",
    "MAX_DURATION_S",
    "MAX_SLOTS",
    "AttackKind",
    "Driver",
    "DriverOptions",
    "parse_args",
    "parse_attack",
    "start_driver",
    "summarize",
]

HOST = "127.0.0.1"
API_KEY_ENV = "BENCH_HOSTILE_API_KEY"  # read from the environment: a key never goes on a command line
LARGE_PATH = "/api/large/blob"  # the upstream serves a multi-MiB body here (bench.nginx)
MAX_SLOTS = 5000
MAX_DURATION_S = 600.0
READY = "ready"
_TCP_ESTABLISHED = 1  # tcpi_state, the first byte of struct tcp_info (linux/tcp.h)
_FIRST_CHECK_S = 0.2  # a connection refused at the cap (503) is noticed this soon
_SAMPLE_S = 0.5


@dataclass(frozen=True, slots=True)
class AttackKind:
    """What one slot sends: ``head`` (``{host}`` and ``{key}`` filled in), then ``drip`` every ``interval_s``."""

    name: str
    description: str
    head: str
    interval_s: float
    drip: bytes
    rcvbuf: int | None = None  # a small receive buffer makes a non-reader stall after a few KiB

    def opening(self, api_key: str) -> bytes:
        return self.head.format(host=HOST, key=api_key).encode("latin-1")


_GET = "GET /api/items/42 HTTP/1.1\r\nHost: {host}\r\n"
ATTACKS: dict[str, AttackKind] = {
    kind.name: kind for kind in (
        AttackKind("slowloris", "a partial head, then one byte a second", _GET + "X-Slow: ", 1.0, b"a"),
        AttackKind("unterminated_head", "header lines of 1 KiB every 0.1 s, never the blank line", _GET, 0.1,
                   b"X-Pad: " + b"p" * 1015 + b"\r\n"),
        AttackKind("idle", "connects and sends nothing", "", 1.0, b""),
        AttackKind("non_reader", f"GET {LARGE_PATH} ({LARGE_BODY_BYTES // 2**20} MiB), never reads; an empty line "
                   "a second", f"GET {LARGE_PATH} HTTP/1.1\r\nHost: {{host}}\r\nX-API-Key: {{key}}\r\n\r\n", 1.0,
                   b"\r\n", rcvbuf=4096),
        AttackKind("slow_body", "POST with a 512 KiB body sent at 1 KiB/s",
                   "POST /api/upload HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {key}\r\n"
                   "Content-Type: application/octet-stream\r\nContent-Length: 524288\r\n\r\n", 1.0, b"b" * 1024),
    )
}


def parse_attack(text: str) -> tuple[str, int]:
    """``slowloris=200`` → ``("slowloris", 200)``; unknown kinds and counts outside 1..MAX_SLOTS are errors."""
    name, sep, count = text.partition("=")
    if not sep or name not in ATTACKS:
        raise argparse.ArgumentTypeError(f"expected KIND=COUNT with KIND one of {', '.join(ATTACKS)}: {text!r}")
    try:
        n = int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"count is not a number: {text!r}") from None
    if not 1 <= n <= MAX_SLOTS:
        raise argparse.ArgumentTypeError(f"count must be 1..{MAX_SLOTS}: {text!r}")
    return name, n


@dataclass(frozen=True, slots=True)
class DriverOptions:
    """The driver's whole command line, parsed and bounded."""

    port: int
    attacks: tuple[tuple[str, int], ...]
    sources: int
    ramp_s: float
    duration_s: float
    stats: Path

    def argv(self) -> list[str]:
        """The command line that parses back to these options (what ``start_driver`` runs)."""
        out = ["--port", str(self.port), "--sources", str(self.sources), "--ramp", str(self.ramp_s),
               "--duration", str(self.duration_s), "--stats", str(self.stats)]
        for name, count in self.attacks:
            out += ["--attack", f"{name}={count}"]
        return out


def parse_args(argv: Sequence[str]) -> DriverOptions:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True, help="the gateway's port on 127.0.0.1")
    parser.add_argument("--attack", type=parse_attack, action="append", required=True,
                        help=f"KIND=COUNT, repeatable; KIND: {', '.join(ATTACKS)}")
    parser.add_argument("--sources", type=int, default=16, help="source addresses 127.0.0.2 ... (1..200)")
    parser.add_argument("--ramp", type=float, default=2.0, help="seconds over which the first connections open")
    parser.add_argument("--duration", type=float, default=60.0, help=f"hard stop, seconds (at most {MAX_DURATION_S})")
    parser.add_argument("--stats", type=Path, required=True, help="JSON file written on exit")
    ns = parser.parse_args(list(argv))
    attacks = tuple(ns.attack)
    if sum(n for _, n in attacks) > MAX_SLOTS:
        parser.error(f"at most {MAX_SLOTS} connections in all")
    if not 1 <= ns.sources <= 200:
        parser.error("--sources must be 1..200")
    if not 0 < ns.duration <= MAX_DURATION_S or not 0 <= ns.ramp < ns.duration:
        parser.error(f"need 0 <= --ramp < --duration <= {MAX_DURATION_S}")
    if not 0 < ns.port < 65536:
        parser.error("--port must be 1..65535")
    return DriverOptions(ns.port, attacks, ns.sources, ns.ramp, ns.duration, ns.stats)


# -- the driver process --------------------------------------------------------------------------

class _Attack:
    """One driver run: what its slots counted. Slots are tasks, cancelled together when the run stops."""

    def __init__(self, opts: DriverOptions, api_key: str) -> None:
        self.opts = opts
        self.api_key = api_key
        self.attached: Counter[str] = Counter()
        self.opened: Counter[str] = Counter()
        self.outcomes: dict[str, Counter[str]] = {name: Counter() for name, _ in opts.attacks}
        self.samples: list[tuple[float, dict[str, int]]] = []
        self.ready_at: float | None = None
        self.started = time.monotonic()

    async def slot(self, kind: AttackKind, source: str, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            outcome = await self.connection(kind, source)
            self.outcomes[kind.name][outcome] += 1
            if loop.time() - started < 1.0:
                await asyncio.sleep(1.0)

    async def connection(self, kind: AttackKind, source: str) -> str:
        """Hold one connection until the gateway ends it; return what ended it."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            if kind.rcvbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, kind.rcvbuf)
            sock.bind((source, 0))
            try:
                await asyncio.wait_for(loop.sock_connect(sock, (HOST, self.opts.port)), 5.0)
            except (OSError, TimeoutError):
                return "connect_failed"
            self.opened[kind.name] += 1
            self.attached[kind.name] += 1
            try:
                return await self._hold(kind, sock)
            finally:
                self.attached[kind.name] -= 1
        finally:
            sock.close()

    async def _hold(self, kind: AttackKind, sock: socket.socket) -> str:
        if not _send(sock, kind.opening(self.api_key)):
            return _ended(sock)
        await asyncio.sleep(min(_FIRST_CHECK_S, kind.interval_s))
        while True:
            if not _established(sock) or not _send(sock, kind.drip):
                return _ended(sock)
            await asyncio.sleep(kind.interval_s)

    async def sampler(self) -> None:
        ready_at = self.opts.ramp_s + 1.0
        while True:
            await asyncio.sleep(_SAMPLE_S)
            now = time.monotonic() - self.started
            self.samples.append((round(now, 2), dict(self.attached)))
            if self.ready_at is None and now >= ready_at:
                self.ready_at = now
                print(f"{READY} attached={sum(self.attached.values())}", flush=True)

    def stats(self) -> dict[str, Any]:
        wall = time.monotonic() - self.started
        return {"attacks": dict(self.opts.attacks), "sources": self.opts.sources, "ready_after_s": self.ready_at,
                "opened": dict(self.opened), "outcomes": {k: dict(v) for k, v in self.outcomes.items()},
                "samples": self.samples, "driver_cpu_share": round(time.process_time() / wall, 3) if wall else None}


def _send(sock: socket.socket, data: bytes) -> bool:
    """Best-effort non-blocking send; False once the connection is gone (a full buffer is not an end)."""
    if not data:
        return True
    try:
        sock.send(data)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return True


def _established(sock: socket.socket) -> bool:
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] == _TCP_ESTABLISHED
    except OSError:
        return False


def _ended(sock: socket.socket) -> str:
    """Why the gateway ended a connection: the error it answered, a cut answer, a reset, or a silent close."""
    try:
        head = sock.recv(16, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        head = b""
    except OSError:
        return "reset"
    if head.startswith(b"HTTP/1.1 200"):
        return "cut_mid_response"  # a never-reading client's answer, cut after write_timeout
    if head.startswith(b"HTTP/1.1 ") and len(head) >= 12:
        return f"answered_{head[9:12].decode(errors='replace')}"
    return "closed_without_answer" if not head else "closed_other"


def _raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        cap = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (cap, hard))


async def _run(opts: DriverOptions, api_key: str) -> dict[str, Any]:
    attack = _Attack(opts, api_key)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.call_later(opts.duration_s, stop.set)
    sources = [f"127.0.0.{2 + i}" for i in range(opts.sources)]
    tasks, index = [], 0
    for name, count in opts.attacks:
        for i in range(count):
            delay = opts.ramp_s * i / count
            tasks.append(asyncio.create_task(attack.slot(ATTACKS[name], sources[index % len(sources)], delay)))
            index += 1
    tasks.append(asyncio.create_task(attack.sampler()))
    await stop.wait()
    stats = attack.stats()
    # Written before the sockets close: closing hundreds of them can outlast the harness's patience
    # (a socket whose unsent bytes the gateway never reads does not close quickly), and a driver
    # killed then must still leave its figures.
    opts.stats.write_text(json.dumps(stats) + "\n", encoding="utf-8")
    for task in tasks:
        task.cancel()  # every ``connection`` closes its socket on the way out
    await asyncio.wait(tasks, timeout=5)
    return stats


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    _raise_fd_limit(sum(n for _, n in opts.attacks) + 256)
    asyncio.run(_run(opts, os.environ.get(API_KEY_ENV, "")))
    return 0


# -- the parent's side ---------------------------------------------------------------------------

@dataclass
class Driver:
    """A running driver process: wait until its connections are up, then stop it and read its figures."""

    proc: ManagedProcess
    stats_path: Path

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.popen.poll() is not None:
                raise RuntimeError(f"hostile driver exited early:\n{self.proc.log_tail()}")
            with contextlib.suppress(OSError):
                if READY in self.proc.log_path.read_text(errors="replace"):
                    return
            time.sleep(0.1)
        raise RuntimeError(f"hostile driver not ready after {timeout_s:.0f}s:\n{self.proc.log_tail()}")

    def finish(self) -> dict[str, Any]:
        """SIGTERM (every socket closes), then the stats it wrote."""
        status = self.proc.stop(timeout_s=15)
        try:
            stats: dict[str, Any] = json.loads(self.stats_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"hostile driver (exit {status}) wrote no stats: {exc}\n{self.proc.log_tail()}") from exc
        return stats


def start_driver(group: ProcessGroup, name: str, opts: DriverOptions, *, api_key: str, cpu: int | None) -> Driver:
    """Start ``python -m bench.hostile`` under ``group`` (so the harness's ``finally`` stops it too)."""
    repo = Path(__file__).resolve().parent.parent
    proc = group.start(name, [sys.executable, "-m", "bench.hostile", *opts.argv()], cpu=cpu, cwd=repo,
                       env={"PYTHONPATH": str(repo), API_KEY_ENV: api_key})
    return Driver(proc, opts.stats)


def summarize(stats: dict[str, Any]) -> dict[str, Any]:
    """Attached connections after the ramp (mean and least, all kinds together), opens and outcomes."""
    ready = stats.get("ready_after_s")
    window = [sum(counts.values()) for t, counts in stats["samples"] if ready is not None and t >= ready]
    outcomes: Counter[str] = Counter()
    for per_kind in stats["outcomes"].values():
        outcomes.update(per_kind)
    return {
        "target": sum(stats["attacks"].values()),
        "attached_mean": round(sum(window) / len(window), 1) if window else None,
        "attached_min": min(window) if window else None,
        "opened": sum(stats["opened"].values()),
        "ended_by_gateway": dict(sorted(outcomes.items())),
        "driver_cpu_share": stats.get("driver_cpu_share"),
    }


if __name__ == "__main__":
    sys.exit(main())
