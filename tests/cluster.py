"""Real gateway processes for the multi-instance and fault suites: ``portcullis serve`` as operators run it.

Each instance runs in its own working directory (its own audit file and spill files) on ports the
kernel picks (``port: 0``); the ready line says which. Instances share what the config points them
at: the machine's PostgreSQL (one schema per test) and a Redis (a key prefix per test, or a private
``redis-server``).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import orjson
from tests.conftest import PEPPER

from portcullis.admin.auth import admin_pepper
from portcullis.audit.chain import is_checkpoint
from portcullis.clock import SystemClock
from portcullis.config.loader import load_config
from portcullis.identity.admin_tokens import issue_admin_token
from portcullis.stores.opening import open_store

READY = re.compile(r"listening on (https?)://127\.0\.0\.1:(\d+) \(admin (https?)://127\.0\.0\.1:(\d+)\)")


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    base: str
    admin: str
    config: Path
    cwd: Path
    output: list[str]
    token: str | None = None  # an admin token (role security) in the instance's store, when it has a pepper

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(20):
                await self.proc.wait()

    def audit_records(self) -> list[dict[str, object]]:
        path = self.cwd / "audit.jsonl"
        if not path.exists():
            return []
        rows = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
        return [r for r in rows if not is_checkpoint(r)]  # the chain's checkpoint lines are not records


async def run_cli(*args: str, cwd: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "portcullis", *args, cwd=cwd, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(30):
        out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def start(cwd: Path, text: str) -> Served:
    """Write ``text`` as the config, start ``portcullis serve``, wait for its ready line."""
    await asyncio.to_thread(cwd.mkdir, parents=True, exist_ok=True)
    config = cwd / "portcullis.yaml"
    await asyncio.to_thread(config.write_text, text)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "portcullis", "serve", str(config), "--log-level", "warning",
        cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    output: list[str] = []
    try:
        async with asyncio.timeout(30):
            while True:
                line = (await proc.stdout.readline()).decode()
                if not line:
                    raise AssertionError("gateway exited before it was ready:\n" + "".join(output))
                output.append(line)
                if m := READY.search(line):
                    scheme, port, admin_scheme, admin = m.groups()
                    served = Served(proc, f"{scheme}://127.0.0.1:{port}", f"{admin_scheme}://127.0.0.1:{admin}",
                                    config, cwd, output, await mint_admin_token(config))
                    asyncio.get_running_loop().create_task(_drain(proc, output))
                    return served
    except BaseException:
        # Not ready in time (a loaded machine): end the process, so its pipe is closed here and not
        # reported as an unclosed transport in whichever later test the collector runs in.
        if proc.returncode is None:
            proc.kill()
        await proc.communicate()
        raise


@contextmanager
def serving(config: Path, *, env: dict[str, str] | None = None) -> Iterator[tuple[str, str]]:
    """``portcullis serve config`` for a module-scoped fixture (no event loop): its API and admin base
    URLs once the ready line is out, SIGTERM on leaving. Output goes to ``serve.log`` beside the config."""
    log = config.parent / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "portcullis", "serve", str(config), "--log-level", "warning"], cwd=config.parent,
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    try:
        deadline = time.monotonic() + 30
        while (m := READY.search(log.read_text())) is None:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)  # polling a child's log for its ready line, bounded by the deadline
        scheme, port, admin_scheme, admin = m.groups()
        yield f"{scheme}://127.0.0.1:{port}", f"{admin_scheme}://127.0.0.1:{admin}"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


async def mint_admin_token(config_path: Path, role: str = "security") -> str | None:
    """An admin token written straight into the store ``config_path`` names (as ``portcullis admin
    bootstrap`` does), or None when the config has no pepper for admin tokens."""
    cfg = await asyncio.to_thread(load_config, config_path)
    pepper = admin_pepper(cfg)
    if pepper is None:
        return None
    issued = issue_admin_token(name="tests", role=role, created_by="tests", pepper=pepper, clock=SystemClock())
    store = await open_store(cfg.store, base_dir=config_path.parent)
    try:
        await store.create_admin_token(issued.record)
    finally:
        await store.aclose()
    return issued.token


class AdminAuth(httpx.Auth):
    """Sends each instance's admin token to its admin listener, and nothing to any other address."""

    def __init__(self, *instances: Served) -> None:
        self._tokens = {urlsplit(i.admin).port: i.token for i in instances if i.token}

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        token = self._tokens.get(request.url.port)
        if token is not None:
            request.headers["Authorization"] = f"Bearer {token}"
        yield request


async def _drain(proc: asyncio.subprocess.Process, output: list[str]) -> None:
    """Keep reading the instance's output (a full pipe would stall it); kept for failure messages."""
    assert proc.stdout is not None
    while line := await proc.stdout.readline():
        output.append(line.decode())


def cluster_config(
    *, upstream_url: str, pg_url: str, schema: str, redis_url: str, key_prefix: str, on_failure: str = "open",
    instances: int = 3, extra_routes: str = "",
) -> str:
    return f"""
version: 1
listen: {{host: 127.0.0.1, port: 0, graceful_timeout: 5s}}
admin: {{host: 127.0.0.1, port: 0}}
keys: {{pepper: "{PEPPER}", cache_ttl: 1h}}
store: {{url: "{pg_url}", schema: {schema}, pool_size: 4, statement_timeout: 2s, connect_timeout: 2s}}
shared_state: {{url: "{redis_url}", key_prefix: "{key_prefix}", instances: {instances}, on_failure: {on_failure},
                timeout: 250ms}}
audit: {{file: audit.jsonl, to_store: true, flush_interval: 0.05s}}
upstreams:
  api: {{url: "{upstream_url}"}}
routes:
  - name: orders
    path: "/orders/{{rest:path}}"
    upstream: api
    auth: {{api_key: {{}}}}
    rate_limits: [{{name: per-consumer, key: consumer, rates: ["10/minute"]}}]
  - {{name: open, path: "/open/{{rest:path}}", upstream: api, auth: none}}
{extra_routes}
egress:
  budgets: {{execution_calls: 0, workflow_calls_per_day: 10}}
  routes:
    - {{name: partner, url: "{upstream_url}", allow_http: true, allow_networks: [127.0.0.0/8]}}
"""
