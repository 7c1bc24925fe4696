"""Real clients that honour ``HTTPS_PROXY`` / ``HTTP_PROXY``, through the proxy door: one policy for all.

curl and Node's fetch (undici's ``EnvHttpProxyAgent``) run as subprocesses with only the proxy
variables and a trust bundle in their environment; Python's requests and httpx run in this process
with ``trust_env``. undici tunnels plain-http URLs through ``CONNECT`` by default (the door reads the requests inside)
and sends them in absolute form with ``proxyTunnel: false``; both are run. Each client gets the
same three destinations (a plain-http route, an https
route tunnelled unread, an https route intercepted with the gateway's CA) and the same refusal
without credentials. The trust bundle holds the throwaway CA of the TLS upstream (for the tunnel)
and the gateway's interception CA (for the intercepted route), as an agent's container would.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import requests
from aiohttp import web
from tests.conftest import GatewayFactory, issue_tls_files, missing_service
from tests.proxy_kit import ProxyGateway, proxy_gateway

from portcullis.clock import SystemClock
from portcullis.egress.proxy.authority import create_ca
from portcullis.testing import catch_all, serve_app

NODE_DIR = Path(__file__).parent.parent / "proxy_clients"
# Looked up once, at import: the event loop must not touch the file system (blockbuster).
CURL = shutil.which("curl")
NODE = shutil.which("node")
UNDICI = (NODE_DIR / "node_modules" / "undici").is_dir()


@dataclass(frozen=True)
class Answer:
    status: int  # 0: the client failed (a refused tunnel surfaces as an error in most clients)
    body: str


@dataclass
class World:
    lab: ProxyGateway
    plain_port: int
    tls_port: int
    bundle: Path

    encoded: bool = False  # the context percent-encoded in the proxy URL's user info

    def env(self, *, credentials: bool = True) -> dict[str, str]:
        url = self.lab.proxy_url() if credentials else f"http://127.0.0.1:{self.lab.port}"
        if credentials and self.encoded:
            url = url.replace("wf=wf-1;ex=ex-1", "wf%3Dwf-1%3Bex%3Dex-1")
        return {"HTTPS_PROXY": url, "HTTP_PROXY": url, "https_proxy": url, "http_proxy": url}

    @property
    def urls(self) -> dict[str, str]:
        return {"http": f"http://plain.partner.test:{self.plain_port}/v1/items?x=1",
                "tunnel": f"https://api.partner.test:{self.tls_port}/v1/items?x=1",
                "intercept": f"https://llm.partner.test:{self.tls_port}/v1/items?x=1"}


async def _echo(request: web.Request) -> web.Response:
    return web.json_response({"path": request.path_qs, "proxy_auth": request.headers.get("Proxy-Authorization")})


@pytest.fixture
async def world(make_gateway: GatewayFactory, tmp_path: Path) -> AsyncIterator[World]:
    def files() -> tuple[ssl.SSLContext, Path, Path, Path]:
        upstream = issue_tls_files(tmp_path, names=("api.partner.test", "llm.partner.test"))
        ca = create_ca(tmp_path / "gw-ca.pem", tmp_path / "gw-ca.key", common_name="Gateway CA", days=2,
                       clock=SystemClock())
        bundle = tmp_path / "bundle.pem"
        bundle.write_bytes(upstream.ca.read_bytes() + ca.cert_file.read_bytes())
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.load_cert_chain(upstream.cert, upstream.key)
        return server, upstream.ca, ca.cert_file, bundle

    server_ctx, upstream_ca, gateway_ca, bundle = await asyncio.to_thread(files)
    async with serve_app(catch_all(_echo)) as plain, serve_app(catch_all(_echo), ssl_context=server_ctx) as tls:
        routes = [
            {"name": "plain", "url": f"http://plain.partner.test:{plain}", "allow_http": True,
             "allow_networks": ["127.0.0.0/8"]},
            {"name": "partner", "url": f"https://api.partner.test:{tls}", "allow_networks": ["127.0.0.0/8"]},
            {"name": "llm", "url": f"https://llm.partner.test:{tls}", "intercept": True,
             "allow_networks": ["127.0.0.0/8"], "ca_file": str(upstream_ca)},
        ]
        proxy = {"ca": {"cert_file": str(gateway_ca), "key_file": str(tmp_path / "gw-ca.key")}}
        answers = {name: [["127.0.0.1"]] for name in ("plain.partner.test", "api.partner.test", "llm.partner.test")}
        async with proxy_gateway(make_gateway, routes, answers=answers, proxy=proxy) as lab:
            yield World(lab, plain, tls, bundle)


async def _subprocess(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(*argv, env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.DEVNULL)
    async with asyncio.timeout(20):
        out, _ = await proc.communicate()
    return out.decode()


async def curl(world: World, url: str, *, credentials: bool = True) -> Answer:
    if CURL is None:
        missing_service("curl is not installed")
    env = {"PATH": os.environ["PATH"], "CURL_CA_BUNDLE": str(world.bundle), **world.env(credentials=credentials)}
    out = await _subprocess([str(CURL), "-sS", "--max-time", "10", "-w", "\n%{http_code}", url], env)
    body, _, code = out.rpartition("\n")
    return Answer(int(code or 0), body)


async def node(world: World, url: str, *, credentials: bool = True, absolute: bool = False) -> Answer:
    if NODE is None:
        missing_service("node is not installed")
    if not UNDICI:
        missing_service("undici is not installed: run `make test-tools` (npm ci in tests/proxy_clients)")
    env = {"PATH": os.environ["PATH"], "NODE_EXTRA_CA_CERTS": str(world.bundle), **world.env(credentials=credentials)}
    argv = [str(NODE), "fetch.mjs", url, *(["--absolute"] if absolute else [])]
    result = json.loads(await _subprocess(argv, env, cwd=NODE_DIR))
    return Answer(result.get("status", 0), result.get("body", result.get("error", "")))


def _requests_call(url: str, bundle: Path) -> Answer:
    with requests.Session() as session:  # trust_env: the proxy and REQUESTS_CA_BUNDLE from the environment
        try:
            response = session.get(url, timeout=10)
        except requests.exceptions.ProxyError as exc:
            return Answer(0, str(exc))
        return Answer(response.status_code, response.text)


async def python_requests(world: World, url: str, *, credentials: bool = True,
                          monkeypatch: pytest.MonkeyPatch) -> Answer:
    for name, value in {**world.env(credentials=credentials), "REQUESTS_CA_BUNDLE": str(world.bundle)}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    return await asyncio.to_thread(_requests_call, url, world.bundle)


async def python_httpx(world: World, url: str, *, credentials: bool = True,
                       monkeypatch: pytest.MonkeyPatch) -> Answer:
    for name, value in world.env(credentials=credentials).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    trust = await asyncio.to_thread(ssl.create_default_context, cafile=str(world.bundle))
    async with httpx.AsyncClient(trust_env=True, verify=trust) as client:
        try:
            response = await client.get(url)
        except httpx.ProxyError as exc:
            return Answer(0, str(exc))
    return Answer(response.status_code, response.text)


Client = Callable[..., Awaitable[Answer]]
async def node_absolute(world: World, url: str, *, credentials: bool = True) -> Answer:
    """undici with ``proxyTunnel: false``: plain-http URLs as absolute-form requests, not CONNECT."""
    return await node(world, url, credentials=credentials, absolute=True)


CLIENTS: dict[str, Client] = {"curl": curl, "node-undici": node, "node-undici-absolute": node_absolute,
                              "requests": python_requests, "httpx": python_httpx}


async def _call(name: str, world: World, url: str, monkeypatch: pytest.MonkeyPatch, *, credentials: bool = True) -> Answer:
    client = CLIENTS[name]
    if name in ("requests", "httpx"):
        return await client(world, url, credentials=credentials, monkeypatch=monkeypatch)
    return await client(world, url, credentials=credentials)


@pytest.mark.parametrize("client", list(CLIENTS))
@pytest.mark.parametrize("destination", ["http", "tunnel", "intercept"])
async def test_every_client_reaches_every_kind_of_route_through_the_door(
    world: World, client: str, destination: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    answer = await _call(client, world, world.urls[destination], monkeypatch)
    assert answer.status == 200, answer.body
    assert json.loads(answer.body) == {"path": "/v1/items?x=1", "proxy_auth": None}
    if destination == "tunnel":
        record = await world.lab.tunnel()
        assert record.egress is not None
        assert (record.egress["mode"], record.egress["route"], record.egress["address"], record.decision) == (
            "splice", "partner", "127.0.0.1", "allowed")
    else:
        [call] = world.lab.calls
        assert (call.path, call.query, call.decision, call.consumer_id) == (
            f"/{'plain' if destination == 'http' else 'llm'}/v1/items", "x=1", "allowed", "alice")
        assert call.egress is not None and call.egress["workflow_id"] == "wf-1"


@pytest.mark.parametrize("client", list(CLIENTS))
async def test_every_client_without_credentials_is_refused_with_407(
    world: World, client: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    answer = await _call(client, world, world.urls["tunnel"], monkeypatch, credentials=False)
    assert answer.status in (0, 407)  # clients report a refused CONNECT as an error, curl as the proxy's code
    record = await world.lab.tunnel()
    assert (record.status, record.decision) == (407, "auth:proxy_credentials_missing")
    assert world.lab.calls == []


@pytest.mark.parametrize("client", list(CLIENTS))
async def test_every_client_decodes_a_percent_encoded_context(
    world: World, client: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    world.encoded = True
    answer = await _call(client, world, world.urls["http"], monkeypatch)
    assert answer.status == 200, answer.body
    [call] = world.lab.calls
    assert call.egress is not None and (call.egress["workflow_id"], call.egress["execution_id"]) == ("wf-1", "ex-1")
