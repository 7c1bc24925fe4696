"""``portcullis serve`` as an operator runs it: a real process, signals, probes, metrics, TLS."""

from __future__ import annotations

import asyncio
import signal
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from tests.cluster import AdminAuth, Served, start
from tests.conftest import PEPPER, UpstreamServer, self_signed_cert

from portcullis.audit.chain import is_checkpoint


def config_text(upstream_url: str, *, extra_routes: str = "", listen_extra: str = "", admin_extra: str = "") -> str:
    return f"""
version: 1
listen: {{host: 127.0.0.1, port: 0, graceful_timeout: 10s{listen_extra}}}
admin: {{host: 127.0.0.1, port: 0{admin_extra}}}
keys: {{pepper: "{PEPPER}"}}
store: {{url: "sqlite:///gw.db"}}
audit: {{file: audit.jsonl, flush_interval: 0.1s}}
upstreams:
  api: {{url: "{upstream_url}"}}
routes:
  - {{name: open, path: "/open/{{rest:path}}", upstream: api, auth: none}}
{extra_routes}"""


@pytest.fixture
async def served(tmp_path: Path, upstream: UpstreamServer) -> AsyncIterator[Served]:
    s = await start(tmp_path, config_text(upstream.url))
    yield s
    await s.stop()


async def test_probes_and_metrics_answer_on_the_admin_listener(served: Served) -> None:
    async with httpx.AsyncClient(auth=AdminAuth(served)) as client:
        assert (await client.get(served.base + "/open/x")).status_code == 200
        assert (await client.get(served.admin + "/healthz")).json() == {"status": "ok"}
        ready = await client.get(served.admin + "/readyz")
        assert ready.status_code == 200 and ready.json()["checks"] == {"config": "ok", "store": "ok"}
        metrics = (await client.get(served.admin + "/metrics")).text
        assert 'portcullis_requests_total{decision="allowed",route="open",status="200"} 1.0' in metrics
        assert "portcullis_upstream_duration_seconds_bucket" in metrics
        # the admin endpoints are not on the API listener
        assert (await client.get(served.base + "/metrics")).status_code == 404


async def test_sighup_applies_a_valid_config_and_keeps_the_old_one_on_error(
    served: Served, upstream: UpstreamServer
) -> None:
    async with httpx.AsyncClient(auth=AdminAuth(served)) as client:
        assert (await client.get(served.base + "/new")).status_code == 404
        good = config_text(upstream.url, extra_routes='  - {name: new, path: "/new", upstream: api, auth: none}\n')
        await asyncio.to_thread(served.config.write_text, good)
        served.proc.send_signal(signal.SIGHUP)
        async with asyncio.timeout(10):
            while (await client.get(served.base + "/new")).status_code != 200:
                await asyncio.sleep(0.05)
        await asyncio.to_thread(served.config.write_text, good + "  - {name: broken, path: nope}\n")
        served.proc.send_signal(signal.SIGHUP)
        async with asyncio.timeout(10):
            while 'portcullis_config_reloads_total{result="rejected"} 1.0' not in (
                await client.get(served.admin + "/metrics")
            ).text:
                await asyncio.sleep(0.05)
        assert (await client.get(served.base + "/new")).status_code == 200
        assert (await client.get(served.base + "/open/still")).status_code == 200


async def test_admin_reload_reports_a_refused_config(served: Served, upstream: UpstreamServer) -> None:
    await asyncio.to_thread(served.config.write_text, "routes: [}")
    async with httpx.AsyncClient(auth=AdminAuth(served)) as client:
        r = await client.post(served.admin + "/reload")
        assert r.status_code == 422 and r.json()["code"] == "admin.config_rejected"
        assert (await client.get(served.base + "/open/x")).status_code == 200


async def test_graceful_shutdown_finishes_in_flight_requests_and_writes_every_audit_record(
    tmp_path: Path, upstream: UpstreamServer
) -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.json_response({"slow": True})

    upstream.responses["/open/slow"] = slow
    served = await start(tmp_path, config_text(upstream.url))
    async with httpx.AsyncClient(timeout=20) as client:
        results = await asyncio.gather(*(client.get(served.base + f"/open/{i}") for i in range(50)))
        assert all(r.status_code == 200 for r in results)
        in_flight = asyncio.create_task(client.get(served.base + "/open/slow"))
        async with asyncio.timeout(10):
            while not any(s.raw_path == "/open/slow" for s in upstream.seen):
                await asyncio.sleep(0.01)
        served.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)  # let the server stop accepting before the slow upstream answers
        release.set()
        slow_response = await in_flight
    assert slow_response.status_code == 200
    async with asyncio.timeout(20):
        assert await served.proc.wait() == 0
    text = await asyncio.to_thread((tmp_path / "audit.jsonl").read_text)
    records = [r for r in map(orjson.loads, text.splitlines()) if not is_checkpoint(r)]
    assert len(records) == 51
    assert len({r["id"] for r in records}) == 51


async def test_tls_termination_serves_https_with_hsts(tmp_path: Path, upstream: UpstreamServer) -> None:
    cert, key = await asyncio.to_thread(self_signed_cert, tmp_path)
    served = await start(tmp_path, config_text(
        upstream.url, listen_extra=f', tls: {{cert_file: "{cert}", key_file: "{key}"}}'))
    try:
        assert served.base.startswith("https://")
        async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(cert))) as client:
            r = await client.get(served.base + "/open/x")
        assert r.status_code == 200
        assert r.headers["strict-transport-security"].startswith("max-age=31536000")
        assert upstream.seen[-1].header("x-forwarded-proto") == "https"
    finally:
        served.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            await served.proc.wait()


async def test_an_invalid_config_refuses_to_start_with_the_path_in_the_message(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    await asyncio.to_thread(config.write_text, "upstreams: {}\nroutes: [{name: r, path: /r, upstream: nope, auth: none}]\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "portcullis", "serve", str(config), cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 2
    assert b"no upstream named 'nope'" in out
    assert b"Traceback" not in out


async def test_two_workers_share_the_listener_and_stop_cleanly(tmp_path: Path, upstream: UpstreamServer) -> None:
    served = await start(tmp_path, config_text(upstream.url, listen_extra=", workers: 2"))
    async with httpx.AsyncClient(timeout=20) as client:
        results = await asyncio.gather(*(client.get(served.base + f"/open/{i}") for i in range(40)))
    assert [r.status_code for r in results] == [200] * 40
    served.proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        assert await served.proc.wait() == 0
    text = await asyncio.to_thread((tmp_path / "audit.jsonl").read_text)
    assert len([r for r in map(orjson.loads, text.splitlines()) if not is_checkpoint(r)]) == 40


async def test_the_admin_listener_serves_tls_and_tokens_work_over_it(tmp_path: Path, upstream: UpstreamServer) -> None:
    cert, key = await asyncio.to_thread(self_signed_cert, tmp_path)
    served = await start(tmp_path, config_text(
        upstream.url, admin_extra=f', tls: {{cert_file: "{cert}", key_file: "{key}"}}'))
    try:
        assert served.admin.startswith("https://")
        verify = ssl.create_default_context(cafile=str(cert))
        async with httpx.AsyncClient(verify=verify, auth=AdminAuth(served)) as client:
            assert (await client.get(served.admin + "/status")).json()["ready"] is True
        async with httpx.AsyncClient(verify=verify) as anonymous:
            assert (await anonymous.get(served.admin + "/status")).status_code == 401
        async with httpx.AsyncClient() as plaintext:
            with pytest.raises(httpx.HTTPError):  # no clear-text token ever gets an answer
                await plaintext.get(served.admin.replace("https://", "http://") + "/status",
                                    headers={"Authorization": f"Bearer {served.token}"})
    finally:
        await served.stop()


async def test_one_scrape_of_two_workers_counts_every_request_both_answered(
    tmp_path: Path, upstream: UpstreamServer
) -> None:
    served = await start(tmp_path, config_text(upstream.url, listen_extra=", workers: 2"))
    try:
        fresh = httpx.Limits(max_keepalive_connections=0)  # a connection per request: the kernel spreads them
        async with httpx.AsyncClient(timeout=20, limits=fresh) as client:
            results = await asyncio.gather(*(client.get(served.base + f"/open/{i}") for i in range(60)))
        assert [r.status_code for r in results] == [200] * 60
        async with httpx.AsyncClient(timeout=20, auth=AdminAuth(served)) as admin:
            async with asyncio.timeout(15):  # worker 1's figures arrive within a snapshot interval
                while True:
                    families = list(text_string_to_metric_families((await admin.get(served.admin + "/metrics")).text))
                    answered = sum(s.value for f in families for s in f.samples
                                   if s.name == "portcullis_requests_total" and s.labels.get("route") == "open")
                    workers = {s.labels.get("worker") for f in families for s in f.samples
                               if s.name == "portcullis_requests_in_flight"}
                    if answered == 60 and workers == {"0", "1"}:
                        break
                    await asyncio.sleep(0.2)
    finally:
        await served.stop()
