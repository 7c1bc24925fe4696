"""``make run``: the demo backend, the gateway on ``examples/quickstart.yaml``, two demo keys, an admin
token for the demo operator, curl lines.

Why a script and not a shell recipe: it must work from a fresh clone with nothing but the venv,
wait for both servers to be ready, and stop both on Ctrl-C. State (SQLite, audit, a generated
pepper) lives in ``.demo/`` so a second run reuses the same keys' pepper.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DEMO = ROOT / ".demo"
CONFIG = ROOT / "examples" / "quickstart.yaml"
GATEWAY = "http://127.0.0.1:8080"


def _wait_http(url: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - loopback URL built here
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {url}")


def _portcullis(*args: str, env: dict[str, str]) -> str:
    out = subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
        [sys.executable, "-m", "portcullis", *args], cwd=DEMO, env=env, check=True,
        capture_output=True, text=True,
    )
    return out.stdout


def main() -> None:
    DEMO.mkdir(exist_ok=True)
    pepper_file = DEMO / "pepper"
    if not pepper_file.exists():
        pepper_file.write_text(secrets.token_urlsafe(48))
        pepper_file.chmod(0o600)
    env = {**os.environ, "PORTCULLIS_KEY_PEPPER": pepper_file.read_text().strip(), "PORTCULLIS_CONFIG": str(CONFIG)}
    procs: list[subprocess.Popen[bytes]] = []

    def stop(*_: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()

    def on_term(*_: object) -> None:
        stop()
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    try:
        procs.append(subprocess.Popen([sys.executable, "-m", "portcullis.demo.backend", "--port", "9000"], cwd=DEMO))  # noqa: S603
        _wait_http("http://127.0.0.1:9000/")
        create = ("keys", "create", "--json", "--consumer")
        reader = json.loads(_portcullis(*create, "demo-reader", "--scopes", "orders:read", env=env))
        other = json.loads(_portcullis(*create, "demo-other", "--scopes", "profile:read", env=env))
        operator = json.loads(_portcullis("admin", "bootstrap", "--json", "--role", "admin", "--name", "demo",
                                          "--expires", "1d", env=env))
        procs.append(subprocess.Popen([sys.executable, "-m", "portcullis", "serve", str(CONFIG)], cwd=DEMO, env=env))  # noqa: S603
        _wait_http("http://127.0.0.1:9090/healthz")
        key, other_key, token = reader["key"], other["key"], operator["token"]
        print(f"""
Portcullis is up: API on {GATEWAY}, admin on http://127.0.0.1:9090 (demo state in .demo/).

  # 200: a valid key with the orders:read scope
  curl -i -H 'X-API-Key: {key}' {GATEWAY}/orders/42

  # 401: no credentials (a problem document with the request id)
  curl -i {GATEWAY}/orders/42

  # 403: a valid key without the orders:read scope
  curl -i -H 'X-API-Key: {other_key}' {GATEWAY}/orders/42

  # 429: the per-consumer limit is 5/minute; the 6th call is refused with Retry-After
  for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w '%{{http_code}}\\n' -H 'X-API-Key: {key}' {GATEWAY}/orders/7; done

  # the audit trail: one JSON line per request
  tail -n 3 .demo/audit.jsonl

  # the admin API needs a token (this demo made one with `portcullis admin bootstrap`; 401 without it)
  export PORTCULLIS_ADMIN_TOKEN='{token}'
  curl -s -H "Authorization: Bearer $PORTCULLIS_ADMIN_TOKEN" http://127.0.0.1:9090/status
  curl -s -H "Authorization: Bearer $PORTCULLIS_ADMIN_TOKEN" http://127.0.0.1:9090/metrics | grep requests_total
  curl -i http://127.0.0.1:9090/keys
  .venv/bin/portcullis status

  # readiness needs no token (for load balancers and orchestrators)
  curl -s http://127.0.0.1:9090/readyz

Press Ctrl-C to stop.
""", flush=True)
        procs[-1].wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop()


if __name__ == "__main__":
    main()
