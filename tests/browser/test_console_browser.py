"""The console in a real browser: Debian's headless Chromium, driven by Playwright, against a real
``portcullis serve`` process, walked as each built-in role.

One gateway and one browser for the module (the machine has two cores); each role gets a fresh
browser context (its own cookies). Each walk signs in by pasting a token, watches the overview's
numbers change after traffic this test sends, moves a breaker where the role may (and is refused
where it may not), finds a request by the id the gateway gave it, and signs out. Waiting is
Playwright's bounded waiting on what the page shows; nothing sleeps.

With ``PORTCULLIS_SCREENSHOTS=<dir>`` the security walk (the widest role) also saves a PNG of each
page to ``<dir>/console-<page>.png`` (1280x800), which is how docs/images/ is made.

Chromium comes from the Debian package (``make test-tools``); ``playwright install`` is never run.
Under CI=true a missing Chromium fails the run (``missing_service``).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.cluster import mint_admin_token, serving
from tests.conftest import PEPPER, missing_service

from portcullis.vault.vault import generate_master_key

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
_WAIT_MS = 15_000
SHOTS = os.environ.get("PORTCULLIS_SCREENSHOTS")

playwright_sync = pytest.importorskip("playwright.sync_api")


@pytest.fixture(autouse=True)
def no_blocking_calls_in_the_loop() -> None:
    """This module runs no event loop of ours (the gateway is another process; Playwright's sync API
    drives its own), so the suite's blocking-call guard has nothing to guard here."""


class _Upstream(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"order": self.path.rsplit("/", 1)[-1]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return


@dataclass
class Served:
    api: str
    admin: str
    tokens: dict[str, str]
    key: str


def _config(tmp: Path, upstream: str) -> str:
    return f"""
version: 1
listen: {{host: 127.0.0.1, port: 0}}
admin: {{host: 127.0.0.1, port: 0}}
keys: {{pepper: "{PEPPER}"}}
store: {{url: "sqlite:///{tmp / 'console.db'}"}}
audit: {{file: "{tmp / 'audit.jsonl'}", spill_file: "{tmp / 'audit.spill'}", flush_interval: 0.05s}}
anomaly: {{window: 1h, warmup_windows: 5, min_requests: 10}}
upstreams: {{api: {{url: "{upstream}"}}}}
routes:
  - {{name: orders, path: "/orders/{{order_id}}", upstream: api}}
  - {{name: health, path: /health, upstream: api, auth: none}}
egress:
  budgets: {{execution_calls: 100}}
  routes:
    - {{name: partner, url: "http://127.0.0.1:9", allow_http: true, allow_networks: [127.0.0.0/8]}}
    - {{name: payments, url: "http://127.0.0.1:9", allow_http: true, allow_networks: [127.0.0.0/8]}}
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("console")
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    config = tmp / "portcullis.yaml"
    config.write_text(_config(tmp, f"http://127.0.0.1:{upstream.server_address[1]}"))
    try:
        with serving(config, env={"PORTCULLIS_SECRET_KEY": generate_master_key()}) as (api, admin):
            tokens = {role: asyncio.run(mint_admin_token(config, role)) or "" for role in ("admin", "security",
                                                                                           "compliance")}
            with httpx.Client(base_url=admin, headers={"Authorization": f"Bearer {tokens['security']}"}) as http:
                developer = http.post("/admin-tokens", json={"name": "dev", "role": "developer", "consumers": ["acme"]})
                tokens["developer"] = developer.json()["token"]
                key = http.post("/keys", json={"consumer": "acme"}).json()["key"]
            yield Served(api, admin, tokens, key)
    finally:
        upstream.shutdown()
        upstream.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium for the module; Playwright's ``launch`` gives it a fresh temporary profile."""
    if not os.path.exists(CHROMIUM):
        missing_service("chromium is not installed (make test-tools)")
    with playwright_sync.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        yield context.new_page()
    finally:
        context.close()


def _shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"console-{name}.png"))


def _traffic(served: Served, n: int) -> list[str]:
    """``n`` requests as consumer acme, and the request ids the gateway gave them."""
    with httpx.Client(base_url=served.api, headers={"X-API-Key": served.key}) as http:
        ids = [http.get(f"/orders/{i}").headers["x-request-id"] for i in range(n)]
        http.get("/orders/1", headers={"X-API-Key": "pcl_wrong"})  # a refusal, for the 4xx column
    return ids


def _sign_in(page: Any, served: Served, role: str) -> None:
    page.goto(f"{served.admin}/console/")
    expect = playwright_sync.expect
    expect(page).to_have_url(f"{served.admin}/console/login")
    _shot(page, "login") if role == "security" else None
    page.fill("#credential", served.tokens[role])
    page.click("#sign-in")
    expect(page).to_have_url(f"{served.admin}/console/overview")
    expect(page.locator("#who")).to_contain_text(role)


def _requests_on(page: Any, route: str) -> int:
    cells = page.locator("#traffic-rows tr", has_text=route).locator("td")
    return int(cells.nth(1).inner_text()) if cells.count() else 0


def _watch_numbers_move(page: Any, served: Served) -> list[str]:
    before = _requests_on(page, "orders")
    ids = _traffic(served, 5)
    playwright_sync.expect(page.locator("#traffic-rows tr", has_text="orders").locator("td").nth(1)).to_have_text(
        str(before + 6), timeout=_WAIT_MS)  # five answered, one refused: the page's script fetched the numbers
    return ids


def _find_request(page: Any, served: Served, search_page: str, request_id: str) -> None:
    page.goto(f"{served.admin}{search_page}")
    page.fill("#request_id", request_id)
    page.click("#search")
    deadline = time.monotonic() + _WAIT_MS / 1000
    while not page.locator("#records", has_text=request_id).count():  # the audit writer flushes every 50 ms
        assert time.monotonic() < deadline, f"request {request_id} not found"
        page.reload()
    playwright_sync.expect(page.locator("#records tbody tr")).to_have_count(1)


def _move_breaker(page: Any, served: Served) -> None:
    page.goto(f"{served.admin}/console/breakers")
    row = page.locator("tr[data-route=partner]")
    row.get_by_role("button", name="Force open").click()
    playwright_sync.expect(page.locator("tr[data-route=partner] [data-state]")).to_have_text("forced_open")
    _shot(page, "breakers")
    page.locator("tr[data-route=partner]").get_by_role("button", name="Reset").click()
    playwright_sync.expect(page.locator("tr[data-route=partner] [data-state]")).to_have_text("closed")


def _refused(page: Any, served: Served, path: str, permission: str) -> None:
    answer = page.goto(f"{served.admin}{path}")
    assert answer is not None and answer.status == 403
    playwright_sync.expect(page.locator("#message")).to_contain_text(f"needs the {permission} permission")


def _sign_out(page: Any, served: Served) -> None:
    page.click("#sign-out")
    playwright_sync.expect(page).to_have_url(f"{served.admin}/console/login")
    page.goto(f"{served.admin}/console/overview")
    playwright_sync.expect(page).to_have_url(f"{served.admin}/console/login")


def test_an_admin_watches_traffic_resets_a_breaker_finds_a_request_and_is_refused_blocks(
    served: Served, page: Any
) -> None:
    _sign_in(page, served, "admin")
    ids = _watch_numbers_move(page, served)
    _move_breaker(page, served)
    _refused(page, served, "/console/blocks", "blocks.read")
    _find_request(page, served, "/console/audit", ids[-1])
    _sign_out(page, served)


def test_security_walks_every_page_and_is_refused_chain_verification(served: Served, page: Any) -> None:
    _sign_in(page, served, "security")
    ids = _watch_numbers_move(page, served)
    _shot(page, "overview")
    _move_breaker(page, served)
    page.goto(f"{served.admin}/console/budgets?route=partner&workflow_id=wf-1&execution_id=ex-1&user=acme")
    playwright_sync.expect(page.locator("main table")).to_contain_text("execution_calls")
    _shot(page, "budgets")
    page.goto(f"{served.admin}/console/anomalies")
    _shot(page, "anomalies")
    page.goto(f"{served.admin}/console/blocks")
    page.select_option("select[name=kind]", "address")
    page.fill("input[name=subject]", "198.51.100.7")
    page.fill("input[name=reason]", "credential stuffing from this address")
    page.locator("#new-block").get_by_role("button", name="Block").click()
    playwright_sync.expect(page.locator("#blocks")).to_contain_text("198.51.100.7")
    _shot(page, "blocks")
    page.goto(f"{served.admin}/console/keys?consumer=acme")
    playwright_sync.expect(page.locator("#keys")).to_contain_text("acme")
    _shot(page, "keys")
    _find_request(page, served, "/console/audit", ids[0])
    _shot(page, "audit")
    # security holds every console permission but audit.verify: post the form the page does not offer it
    page.evaluate("""() => {
        const form = document.createElement("form");
        form.method = "post"; form.action = "/console/audit/verify";
        const token = document.querySelector("input[name=csrf_token]").cloneNode();
        form.appendChild(token); document.body.appendChild(form); form.submit();
    }""")
    playwright_sync.expect(page.locator("#message")).to_contain_text("needs the audit.verify permission")
    _shot(page, "refused")
    _sign_out(page, served)


def test_compliance_finds_a_request_verifies_the_chain_and_is_refused_keys(served: Served, page: Any) -> None:
    ids = _traffic(served, 1)
    _sign_in(page, served, "compliance")
    assert page.locator("#traffic").count() == 0  # no metrics.read: the status summary alone
    _find_request(page, served, "/console/audit", ids[0])
    page.click("#verify")
    playwright_sync.expect(page.locator("#report")).to_contain_text("intact")
    _refused(page, served, "/console/breakers", "breakers.read")
    _sign_out(page, served)


def test_a_developer_finds_their_own_request_and_is_refused_breakers(served: Served, page: Any) -> None:
    ids = _traffic(served, 1)
    _sign_in(page, served, "developer")
    assert page.locator("#traffic").count() == 0
    page.get_by_role("link", name="Audit: acme").click()
    _find_request(page, served, "/console/audit/consumers/acme", ids[0])
    _refused(page, served, "/console/breakers", "breakers.read")
    _sign_out(page, served)
