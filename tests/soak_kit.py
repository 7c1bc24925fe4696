"""What the soak tests share: the upstream nginx, wrk at saturation with the gateway's RSS sampled,
the growth slope, and counting audit records.

A soak (``tests/integration/test_audit_soak.py``, ``test_egress_soak.py``, ``test_llm_stream_soak.py``,
``test_proxy_soak.py``) runs ``portcullis serve`` in front of nginx, drives it with wrk for
``PORTCULLIS_SOAK_SECONDS`` (default 60) while sampling the gateway's RSS from ``/proc/<pid>/status``,
and asserts a flat slope after a warm-up and every request audited once. Everything listens on 127.0.0.1; wrk and nginx are stopped by PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sqlite3
import statistics
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from tests.cluster import PEPPER, Served, start
from tests.conftest import missing_service
from tests.integration.test_http1_against_nginx import NGINX, Nginx, _prepare

SOAK_S = int(os.environ.get("PORTCULLIS_SOAK_SECONDS", "60"))
WARMUP_S = 15
SAMPLE_EVERY_S = 2
CONNECTIONS = 50
GROWTH_BOUND_MIB_PER_MIN = 20.0
WRK = "/usr/bin/wrk"


def gateway_head(upstream: str) -> str:
    """A soak gateway's config up to its routes: one worker, the operator's store, the audit to JSONL
    and that store, ``upstream`` as ``api``."""
    return f"""
version: 1
listen: {{host: 127.0.0.1, port: 0, workers: 1, graceful_timeout: 10s}}
admin: {{host: 127.0.0.1, port: 0}}
keys: {{pepper: "{PEPPER}"}}
store: {{url: "sqlite:///gateway.db"}}
audit: {{file: audit.jsonl, max_file_bytes: 8GiB, to_store: true}}
upstreams:
  api: {{url: "{upstream}"}}
"""

# Call budgets no soak spends (every budget on, so each call pays for all of them).
BIG_BUDGET = 1_000_000_000
BIG_CALL_BUDGETS = f"""  budgets:
    execution_calls: {BIG_BUDGET}
    workflow_calls_per_hour: {BIG_BUDGET}
    workflow_calls_per_day: {BIG_BUDGET}
    user_calls_per_day: {BIG_BUDGET}
"""


def rotating_executions(executions: int, prelude: str = "") -> str:
    """A wrk script (after ``prelude``, e.g. a method and body) whose requests name one of
    ``executions`` execution ids in turn (an agent platform's many runs at once); wrk sends the
    other headers with -H."""
    return f"""{prelude}
local n = 0
request = function()
  n = n + 1
  wrk.headers["X-Execution-Id"] = "run-" .. (n % {executions})
  return wrk.format()
end
"""


_WRK_REQUESTS = re.compile(r"^\s*(\d+) requests in", re.MULTILINE)
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


@dataclass(frozen=True, slots=True)
class SoakRun:
    """What wrk said, and the gateway's RSS while it ran: (seconds since the start, MiB)."""

    output: str
    samples: list[tuple[float, float]]
    warmup_s: float = WARMUP_S

    @property
    def requests(self) -> int:
        return int(_WRK_REQUESTS.search(self.output).group(1))  # type: ignore[union-attr]

    @property
    def non_2xx(self) -> bool:
        return _WRK_NON2XX.search(self.output) is not None

    def settled(self) -> list[tuple[float, float]]:
        return [s for s in self.samples if s[0] >= self.warmup_s]

    def growth(self) -> float:
        """The RSS slope after the warm-up, MiB per minute."""
        return slope_per_minute(self.settled())

    def report(self, summary: str) -> None:
        print(f"\nRSS of the gateway (MiB) every {SAMPLE_EVERY_S}s under wrk -c{CONNECTIONS} for {SOAK_S}s:")
        for t, mib in self.samples:
            print(f"  t={t:6.1f}s  rss={mib:7.1f} MiB")
        print(f"{summary}; RSS slope after warm-up {self.growth():+.1f} MiB/min")
        print(self.output, file=sys.stderr)


async def need_tools() -> None:
    if NGINX is None:
        missing_service("nginx is not installed (make test installs it)")
    if not await asyncio.to_thread(os.path.exists, WRK):
        missing_service("wrk is not installed (make test installs it)")


@contextlib.asynccontextmanager
async def gateway_before_nginx(tmp: Path, config: Callable[[str], str]) -> AsyncIterator[tuple[Served, Nginx]]:
    """nginx in ``tmp/nginx``, then ``portcullis serve`` in ``tmp/gateway`` with ``config(nginx's URL)``;
    both stopped on the way out (the gateway gracefully, and it must exit 0)."""
    await need_tools()
    upstream_dir = tmp / "nginx"
    await asyncio.to_thread(upstream_dir.mkdir)
    nginx_proc, nginx = await run_nginx(upstream_dir)
    try:
        served = await start(tmp / "gateway", config(nginx.url))
        try:
            yield served, nginx
        finally:
            await stop(served.proc)
        assert served.proc.returncode == 0, "".join(served.output[-30:])
    finally:
        await stop(nginx_proc, signal.SIGQUIT)


async def soak(url: str, pid: int, *wrk_options: str, warmup_s: float = WARMUP_S) -> SoakRun:
    """wrk at saturation on ``url`` for ``SOAK_S`` seconds, sampling ``pid``'s RSS meanwhile; the
    slope is taken after ``warmup_s``."""
    wrk = await asyncio.create_subprocess_exec(
        WRK, "-t1", f"-c{CONNECTIONS}", f"-d{SOAK_S}s", "--timeout", "10s", *wrk_options, url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    samples: list[tuple[float, float]] = []
    loop = asyncio.get_running_loop()
    began = loop.time()
    report = asyncio.ensure_future(wrk.communicate())
    try:
        while not report.done():
            samples.append((loop.time() - began, await asyncio.to_thread(rss_mib, pid)))
            await asyncio.wait([report], timeout=SAMPLE_EVERY_S)
        out = (await report)[0].decode()
    finally:
        await stop(wrk, signal.SIGKILL)
    return SoakRun(out, samples, warmup_s)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def slope_per_minute(samples: list[tuple[float, float]]) -> float:
    """Theil-Sen slope of (seconds, MiB), in MiB per minute: the median of the slopes between every
    pair of samples, so a transient batch in hand (a spike of 10-20 MiB) does not read as growth."""
    slopes = sorted(
        (m2 - m1) / (t2 - t1) for i, (t1, m1) in enumerate(samples) for t2, m2 in samples[i + 1:] if t2 > t1
    )
    return statistics.median(slopes) * 60


def count_lines(path: Path) -> int:
    """Request records in a JSONL file: the operator's own acts are security events, and the chain's
    checkpoint lines (which name their chain's class) are not records at all."""
    count = 0
    with path.open("rb") as f:
        for line in f:
            count += b'"class":"request"' in line and b'"kind":"checkpoint"' not in line
    return count


def sqlite_counts(path: Path) -> tuple[int, int]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        total, distinct = db.execute("SELECT count(*), count(DISTINCT id) FROM audit"
                                     " WHERE json_extract(record, '$.class') = 'request'").fetchone()
    return int(total), int(distinct)


async def run_nginx(tmp: Path) -> tuple[asyncio.subprocess.Process, Nginx]:
    assert NGINX is not None
    port = await asyncio.to_thread(_prepare, tmp)
    proc = await asyncio.create_subprocess_exec(
        NGINX, "-p", str(tmp), "-c", str(tmp / "nginx.conf"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    async with asyncio.timeout(10):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return proc, Nginx(port, tmp)


async def stop(proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> None:
    if proc.returncode is None:
        proc.send_signal(sig)
        try:
            async with asyncio.timeout(60):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
