"""Pictures of the dashboard's queries and the alert rules over live data, for docs/operations.md.

Run: ``.venv/bin/python -m tests.ops.dashboard_screenshots docs/images`` (about two minutes; needs
Debian's prometheus and chromium, which ``make test-tools`` installs).

Why Prometheus and not Grafana: Grafana is packaged in none of the registries this project installs
from, so the pictures show the dashboard's own PromQL (read from deploy/grafana/portcullis.json,
``$instance`` dropped and rates over 30 s instead of 5 minutes, for a run this short) in
Prometheus's graph page, and the rules of deploy/prometheus/alerts.yml on
its alerts page, against a real gateway under generated traffic: allowed requests, a failing
upstream (502), bad keys (401), rate-limit refusals (429) and egress calls spending a budget.
Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from tests.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "portcullis.json"
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
TRAFFIC_S = 75.0
# Dashboard panels shown, by title: one picture each.
PANELS = (
    "Requests/s by route", "5xx share by route", "p95 request duration by route", "Responses by decision",
    "Failed authentications by reason", "Budget used by route (fullest caller)",
)
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars")

CONFIG = """
version: 1
listen: {{host: 127.0.0.1, port: {api}}}
admin: {{host: 127.0.0.1, port: {admin}, roles: {{scraper: [metrics.read]}}}}
keys: {{pepper: "{pepper}"}}
store: {{url: "sqlite:///portcullis.db"}}
audit: {{file: audit.jsonl}}
upstreams:
  demo: {{url: "http://127.0.0.1:{backend}"}}
  gone: {{url: "http://127.0.0.1:{closed}"}}
routes:
  - {{name: health, path: /health, upstream: demo, auth: none,
     rate_limits: [{{name: health-per-ip, key: ip, rates: ["20/second"]}}]}}
  - {{name: orders, methods: [GET], path: "/orders/{{order_id}}", upstream: demo}}
  - {{name: reports, methods: [GET], path: /reports, upstream: gone}}
egress:
  budgets: {{execution_calls: 50, workflow_calls_per_hour: 400}}
  routes:
    - {{name: partner, url: "http://127.0.0.1:{backend}", allow_http: true, allow_networks: [127.0.0.0/8]}}
"""


def _wait(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {url}")


@contextmanager
def _process(args: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def _cli(*args: str, cwd: Path, env: dict[str, str]) -> dict[str, str]:
    done = subprocess.run([sys.executable, "-m", "portcullis", *args], cwd=cwd, env=env, check=True,
                          capture_output=True, text=True)
    result: dict[str, str] = json.loads(done.stdout)
    return result


def _get(url: str, headers: dict[str, str]) -> None:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            answer.read()
    except urllib.error.HTTPError as refused:
        refused.read()
    except OSError:
        pass


def _traffic(api: str, key: str, until: float) -> None:
    """Two minutes of a small service's day: mostly allowed, a failing route, a flood, a stuffing run."""
    good = {"X-API-Key": key}
    bad = {"X-API-Key": "pcl_AAAAAAAAAAAA_" + "B" * 43}
    n = 0
    while time.monotonic() < until:
        n += 1
        _get(f"{api}/orders/{n}", good)
        _get(f"{api}/health", {})
        if n % 3 == 0:
            _get(f"{api}/reports", good)
        if n % 2 == 0:
            _get(f"{api}/egress/partner/v1/items", {**good, "X-Workflow-Id": "wf-nightly",
                                                      "X-Execution-Id": f"ex-{n // 40}"})
        if 200 < n % 600 < 320:  # a run of bad keys, then a flood on the public route
            _get(f"{api}/orders/1", bad)
            for _ in range(6):
                _get(f"{api}/health", {})
        time.sleep(0.02)


def _short(expr: str) -> str:
    """A panel's query for one instance and a run of a minute or two: no ``$instance``, 30 s rates."""
    expr = expr.replace('instance=~"$instance",', "").replace('{instance=~"$instance"}', "")
    return expr.replace("[5m]", "[30s]").replace("[10m]", "[30s]")


def _panel_queries() -> list[tuple[str, list[str]]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    by_title = {p["title"]: [_short(t["expr"]) for t in p.get("targets", [])] for p in panels}
    return [(title, by_title[title]) for title in PANELS]


def _shoot(url: str, out: Path, *, width: int = 1400, height: int = 900) -> None:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                        "--virtual-time-budget=8000", f"--screenshot={out}", url],
                       check=True, capture_output=True, timeout=120)
    print(f"wrote {out}")


def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    ports = {name: free_port() for name in ("api", "admin", "backend", "closed", "prometheus")}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        work = Path(tmp)
        config = work / "portcullis.yaml"
        config.write_text(CONFIG.format(pepper="p" * 48, **ports))
        env = {**os.environ, "PORTCULLIS_CONFIG": str(config)}
        stack.enter_context(_process([sys.executable, "-m", "portcullis.demo.backend", "--port",
                                      str(ports["backend"])], cwd=work))
        key = _cli("keys", "create", "--json", "--consumer", "reporting-service", cwd=work, env=env)["key"]
        token = _cli("admin", "bootstrap", "--json", "--role", "scraper", "--name", "prometheus",
                     "--expires", "1d", cwd=work, env=env)["token"]
        (work / "token").write_text(token)
        stack.enter_context(_process([sys.executable, "-m", "portcullis", "serve", str(config)], cwd=work, env=env))
        admin = f"http://127.0.0.1:{ports['admin']}"
        _wait(f"{admin}/healthz")
        (work / "prometheus.yml").write_text(f"""
global: {{scrape_interval: 2s, evaluation_interval: 5s}}
rule_files: ["{RULES}"]
scrape_configs:
  - job_name: portcullis
    authorization: {{type: Bearer, credentials_file: "{work / 'token'}"}}
    static_configs: [{{targets: ["127.0.0.1:{ports['admin']}"]}}]
""")
        prometheus = f"http://127.0.0.1:{ports['prometheus']}"
        stack.enter_context(_process([
            "prometheus", f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{ports['prometheus']}"], cwd=work))
        _wait(f"{prometheus}/-/ready")
        api = f"http://127.0.0.1:{ports['api']}"
        until = time.monotonic() + TRAFFIC_S
        workers = [threading.Thread(target=_traffic, args=(api, key, until)) for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        for index, (title, exprs) in enumerate(_panel_queries(), start=1):
            params = {}
            for n, expr in enumerate(exprs):
                params.update({f"g{n}.expr": expr, f"g{n}.tab": "0", f"g{n}.range_input": "2m",
                               f"g{n}.stacked": "0", f"g{n}.show_exemplars": "0"})
            slug = title.lower().split(" (")[0].replace("/", " per ").replace(" ", "-")
            _shoot(f"{prometheus}/graph?{urllib.parse.urlencode(params)}",
                   out_dir / f"dashboard-{index}-{slug}.png", height=900 if len(exprs) == 1 else 1500)
        _shoot(f"{prometheus}/classic/alerts", out_dir / "alerts.png", height=1400)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images"))
