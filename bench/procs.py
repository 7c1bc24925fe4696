"""Processes the harness owns: start, track by PID, measure CPU, stop.

Why this module: every server in a run is started here and only here, so the ``finally`` in
``bench.run`` can stop exactly what it started (by PID, SIGTERM then SIGKILL) and never anything
else on the machine. CPU time is read from ``/proc`` for a whole process tree because nginx does
its work in a worker child and the gateway may fork workers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "CLK_TCK",
    "ManagedProcess",
    "ProcessGroup",
    "cpu_pinning_available",
    "free_port",
    "pin_prefix",
    "pinned",
    "tool",
    "tree_cpu_seconds",
    "wait_for_port",
]

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A port the kernel considers free on 127.0.0.1 right now (tiny race accepted: loopback only)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout_s: float, proc: ManagedProcess | None = None) -> bool:
    """True once something accepts TCP connections on 127.0.0.1:port; False on timeout or if
    ``proc`` died first. A bare connect sends no request, so it is neither logged nor audited."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            return False
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


def cpu_pinning_available() -> bool:
    """Pinning needs two CPUs (SUT on 0, load generator and upstream on 1) and ``taskset``."""
    return (os.cpu_count() or 1) >= 2 and _which("taskset") is not None


def _which(name: str) -> str | None:
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _children(pid: int) -> list[int]:
    """Direct children, from every thread's ``children`` file (a child may be parented to any thread)."""
    kids: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                kids.extend(int(p) for p in (task / "children").read_text().split())
    return kids


def _own_cpu_ticks(pid: int) -> int:
    """utime + stime of one process (all its threads), in clock ticks; 0 if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    # The command name is in parentheses and may contain spaces: split after the last ')'.
    fields = raw[raw.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5), counted from 'state'


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by ``pid`` and all its living descendants."""
    total, stack, seen = 0, [pid], set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        total += _own_cpu_ticks(current)
        stack.extend(_children(current))
    return total / CLK_TCK


@dataclass
class ManagedProcess:
    """One process the harness started; its output goes to a log file for post-mortems."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL. Returns the exit status."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(timeout=5)
        return self.popen.returncode


@dataclass
class ProcessGroup:
    """Every process of a run, so one ``finally`` can stop them all, newest first, by PID."""

    workdir: Path
    pinned: bool
    processes: list[ManagedProcess] = field(default_factory=list)

    def start(
        self, name: str, argv: Sequence[str], *, cpu: int | None, env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> ManagedProcess:
        """Start ``argv`` (pinned to ``cpu`` when pinning is on) with stdout+stderr to a log file."""
        log_path = self.workdir / f"{name}.log"
        full = [*pin_prefix(cpu if self.pinned else None), *argv]
        with log_path.open("wb") as log:
            popen = subprocess.Popen(  # noqa: S603 - argv built by the harness, no shell
                full, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})}, cwd=cwd or self.workdir, start_new_session=True,
            )
        proc = ManagedProcess(name, popen, log_path)
        self.processes.append(proc)
        return proc

    def stop_all(self) -> None:
        """Stop every process still running, in reverse start order (clients before servers)."""
        for proc in reversed(self.processes):
            proc.stop()


def tool(name: str) -> str:
    """The path of a command the probes run (nginx lives in /usr/sbin, which PATH may lack)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin")
    if found is None:
        raise RuntimeError(f"{name} not found (make test-tools installs nginx, wrk and openssl's tools)")
    return found


def pinned(cpu: int) -> list[str]:
    """``taskset -c N`` for a probe's process, which always pins (it needs two CPUs)."""
    return [tool("taskset"), "-c", str(cpu)]


def pin_prefix(cpu: int | None) -> list[str]:
    """``taskset -c N`` when pinning; ``taskset`` execs the command, so the PID stays the same."""
    return [] if cpu is None else ["taskset", "-c", str(cpu)]
