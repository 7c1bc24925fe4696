"""``portcullis serve`` with ``egress.proxy``: the process starts the proxy door, names it in its
ready line, and curl (with ``HTTP_PROXY``) reaches a route through it; the call is in the audit file.

The route names its upstream by address (127.0.0.1, through the route's network exception), so the
process needs no resolver of the test's: this is the gateway exactly as an operator runs it.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import ssl
from pathlib import Path

import orjson
from aiohttp import web
from tests.cluster import run_cli, start
from tests.conftest import PEPPER, issue_tls_files, missing_service

from portcullis.clock import SystemClock
from portcullis.config.loader import load_config
from portcullis.identity.api_keys import create_key
from portcullis.stores.opening import open_store
from portcullis.testing import catch_all, serve_app

CURL = shutil.which("curl")
PROXY = re.compile(r"\(proxy http://127\.0\.0\.1:(\d+)\)")


async def _echo(request: web.Request) -> web.Response:
    return web.json_response({"path": request.path_qs})


def _config(upstream: int) -> str:
    return f"""
version: 1
listen: {{host: 127.0.0.1, port: 0}}
admin: {{host: 127.0.0.1, port: 0}}
store: {{url: "sqlite:///gateway.db"}}
audit: {{file: audit.jsonl, spill_file: audit.spill.jsonl, flush_interval: 0.05s}}
keys: {{pepper: "{PEPPER}"}}
upstreams:
  api: {{url: "http://127.0.0.1:9"}}
routes:
  - {{name: health, path: /health, upstream: api, auth: none}}
egress:
  entry: {{enabled: false}}
  routes:
    - {{name: local, url: "http://127.0.0.1:{upstream}", allow_http: true, allow_networks: [127.0.0.0/8]}}
  proxy: {{listen: "127.0.0.1:0"}}
"""


async def _key(config: Path) -> str:
    cfg = await asyncio.to_thread(load_config, config)
    store = await open_store(cfg.store, base_dir=config.parent)
    try:
        issued = await create_key(store, "ops-agent", (), pepper=PEPPER.encode(), clock=SystemClock())
    finally:
        await store.aclose()
    return issued.key


async def test_serve_starts_the_proxy_door_and_curl_goes_through_it(tmp_path: Path) -> None:
    if CURL is None:
        missing_service("curl is not installed")
    async with serve_app(catch_all(_echo)) as upstream:
        served = await start(tmp_path / "gw", _config(upstream))
        try:
            match = PROXY.search("".join(served.output))
            assert match is not None, served.output
            key = await _key(served.config)
            proxy = f"http://wf=nightly;ex=run-1:{key}@127.0.0.1:{match.group(1)}"
            proc = await asyncio.create_subprocess_exec(
                str(CURL), "-sS", "--max-time", "10", f"http://127.0.0.1:{upstream}/v1/ping?x=1",
                env={"PATH": os.environ["PATH"], "HTTP_PROXY": proxy, "http_proxy": proxy},
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            async with asyncio.timeout(20):
                out, err = await proc.communicate()
            assert orjson.loads(out) == {"path": "/v1/ping?x=1"}, err
        finally:
            await served.stop()
    records = await asyncio.to_thread(served.audit_records)
    [call] = [r for r in records if (r.get("egress") or {}).get("door") == "proxy"]
    assert (call["consumer_id"], call["path"], call["decision"], call["status"]) == (
        "ops-agent", "/local/v1/ping", "allowed", 200)
    assert call["egress"]["workflow_id"] == "nightly"  # type: ignore[index]


async def test_serve_intercepts_a_route_with_the_ca_made_by_ca_init(tmp_path: Path) -> None:
    if CURL is None:
        missing_service("curl is not installed")
    cwd = tmp_path / "gw"
    await asyncio.to_thread(cwd.mkdir)
    code, out = await run_cli("ca", "init", "--cert", "ca.pem", "--key", "ca.key", "--days", "2", cwd=cwd)
    assert code == 0, out

    def upstream_tls() -> tuple[ssl.SSLContext, Path]:
        (tmp_path / "up").mkdir()
        files = issue_tls_files(tmp_path / "up", names=("127.0.0.1",))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(files.cert, files.key)
        return context, files.ca

    server_ctx, upstream_ca = await asyncio.to_thread(upstream_tls)
    async with serve_app(catch_all(_echo), ssl_context=server_ctx) as upstream:
        text = _config(upstream).replace(
            f'{{name: local, url: "http://127.0.0.1:{upstream}", allow_http: true, allow_networks: [127.0.0.0/8]}}',
            f'{{name: local, url: "https://127.0.0.1:{upstream}", allow_networks: [127.0.0.0/8], intercept: true, '
            f'ca_file: "{upstream_ca}", paths: ["/v1/**"]}}',
        ).replace('proxy: {listen: "127.0.0.1:0"}', 'proxy: {listen: "127.0.0.1:0", ca: {cert_file: ca.pem, key_file: ca.key}}')
        served = await start(cwd, text)
        try:
            match = PROXY.search("".join(served.output))
            assert match is not None, served.output
            proxy = f"http://wf=nightly;ex=run-1:{await _key(served.config)}@127.0.0.1:{match.group(1)}"
            answers = []
            for path in ("/v1/ping", "/admin"):
                proc = await asyncio.create_subprocess_exec(
                    str(CURL), "-sS", "--max-time", "10", "--cacert", str(cwd / "ca.pem"),
                    f"https://127.0.0.1:{upstream}{path}",
                    env={"PATH": os.environ["PATH"], "HTTPS_PROXY": proxy, "https_proxy": proxy},
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                async with asyncio.timeout(20):
                    body, err = await proc.communicate()
                answers.append(orjson.loads(body or b"null") or err.decode())
        finally:
            await served.stop()
    assert answers[0] == {"path": "/v1/ping"}
    assert answers[1]["code"] == "egress.destination_denied"  # the route's path rules, inside the tunnel
    records = await asyncio.to_thread(served.audit_records)
    proxied = [r for r in records if (r.get("egress") or {}).get("door") == "proxy"]
    assert [r["decision"] for r in proxied if r["method"] == "GET"] == ["allowed", "egress_refused:path_not_allowed"]
    assert [(r["decision"], r["egress"]["mode"]) for r in proxied if r["method"] == "CONNECT"] == [  # type: ignore[index]
        ("allowed", "intercept"), ("allowed", "intercept")]  # one tunnel per curl
