"""Shared fixtures: a real upstream server, a real gateway on a loopback socket, a raw socket client.

Only time is faked (``ManualClock``); the upstream, the gateway's listener, SQLite and the audit
files are real. Everything listens on 127.0.0.1 with port 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from aiohttp import web
from blockbuster import blockbuster_ctx
from tests.redis_server import REDIS_SERVER, PrivateRedis, free_port

from portcullis.admin.app import create_admin_app
from portcullis.admin.auth import admin_pepper
from portcullis.cli.serving import portcullis_listener
from portcullis.config.loader import load_config_text
from portcullis.gateway.build import build_runtime, open_services
from portcullis.gateway.reload import Reloader
from portcullis.gateway.shared_events import attach_shared_events
from portcullis.identity.admin_tokens import issue_admin_token
from portcullis.identity.api_keys import issue_key
from portcullis.ingress.app import GatewayApp
from portcullis.ingress.runtime import Runtime, Services
from portcullis.server.listener import Listener
from portcullis.server.protocol import TargetPreservingProtocol
from portcullis.testing import ManualClock, RecordingUpstream

PEPPER = "test-pepper-" + "x" * 40


@dataclass
class SeenRequest:
    method: str
    raw_path: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


@dataclass
class UpstreamServer:
    """A real HTTP backend that records what reached it."""

    url: str = ""
    seen: list[SeenRequest] = field(default_factory=list)
    hang: asyncio.Event = field(default_factory=asyncio.Event)
    responses: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = field(default_factory=dict)


@pytest.fixture
async def upstream() -> AsyncIterator[UpstreamServer]:
    server = UpstreamServer()

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        server.seen.append(SeenRequest(request.method, request.raw_path, list(request.raw_headers and [
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]), body))
        custom = server.responses.get(request.path)
        if custom is not None:
            return await custom(request)
        return web.json_response(
            {"path": request.raw_path, "method": request.method, "body_bytes": len(body)},
            headers={"Server": "backend/1.2.3", "X-Powered-By": "Express"},
        )

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://127.0.0.1:{port}"
    yield server
    server.hang.set()
    await runner.cleanup()


@pytest.fixture
async def recording_upstream() -> AsyncIterator[RecordingUpstream]:
    """A raw backend that records each request head on arrival, before reading its body: a head
    the gateway forwards ahead of a body it then refuses is seen here, unlike with ``upstream``."""
    async with RecordingUpstream() as server:
        yield server


@dataclass
class Gateway:
    """A gateway served by uvicorn on a real loopback socket, with a manual clock."""

    base_url: str
    port: int
    app: GatewayApp
    services: Services
    clock: ManualClock
    tmp: Path
    client: httpx.AsyncClient
    listener: Listener | None = None  # our server, when the gateway runs on it

    @property
    def runtime(self) -> Runtime:
        return self.app.runtime

    async def key(self, consumer: str = "alice", scopes: tuple[str, ...] = (), expires_in_s: float | None = None,
                  roles: tuple[str, ...] = ()) -> str:
        issued = issue_key(consumer, frozenset(scopes), pepper=PEPPER.encode(), clock=self.clock,
                           expires_in_s=expires_in_s, roles=roles)
        await self.services.store.create(issued.record)
        return issued.key

    async def admin_token(self, role: str = "security", consumers: tuple[str, ...] = ()) -> str:
        """A new admin token of ``role`` in this gateway's store (as ``portcullis admin bootstrap`` makes one)."""
        pepper = admin_pepper(self.runtime.config)
        assert pepper is not None, "the config has no admin token pepper (admin.token_pepper or keys.pepper)"
        issued = issue_admin_token(name="tests", role=role, created_by="tests", pepper=pepper, clock=self.clock,
                                   consumers=frozenset(consumers))
        await self.services.store.create_admin_token(issued.record)
        return issued.token

    async def admin(self, role: str = "security", *, reloader: Reloader | None = None,
                    consumers: tuple[str, ...] = ()) -> httpx.AsyncClient:
        """A client of this gateway's admin API (in process), authenticated with a new token of ``role``."""
        token = await self.admin_token(role, consumers)
        return httpx.AsyncClient(transport=httpx.ASGITransport(create_admin_app(self.app, reloader)),
                                 base_url="http://127.0.0.1", headers={"Authorization": f"Bearer {token}"})

    @contextlib.asynccontextmanager
    async def admin_listener(self, *, reloader: Reloader | None = None) -> AsyncIterator[str]:
        """This gateway's admin app on a loopback socket (uvicorn, as ``serve`` runs it); yields its URL."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)  # connections wait in the backlog until uvicorn accepts: no readiness polling
        server = uvicorn.Server(uvicorn.Config(create_admin_app(self.app, reloader), lifespan="off",
                                               log_level="warning", access_log=False))
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        finally:
            server.should_exit = True
            await task

    async def audit_records(self) -> list[dict[str, Any]]:
        await self.services.audit.flush()
        path = self.tmp / "audit.jsonl"
        text = await asyncio.to_thread(lambda: path.read_text() if path.exists() else "")
        import orjson

        from portcullis.audit.chain import is_checkpoint

        rows = [orjson.loads(line) for line in text.splitlines() if line.strip()]
        return [r for r in rows if not is_checkpoint(r)]  # the chain's checkpoint lines are not records

    async def wait_for_record(self, route: str, timeout_s: float = 20.0) -> None:
        """Until a record of ``route`` is written: what a cut connection's request leaves once the
        gateway has let go of it (a cut is driven by the server's own timers, not the test's clock)."""
        async with asyncio.timeout(timeout_s):
            while not [r for r in await self.audit_records() if r["route"] == route]:
                await asyncio.sleep(0.05)


async def read_until_closed(reader: asyncio.StreamReader) -> int:
    """Bytes the gateway sent until it closed the connection (a reset counts as the close)."""
    received = 0
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(1024 * 1024):
            received += len(chunk)
    return received


DEFAULT_AUDIT = "audit: {file: audit.jsonl, spill_file: audit.spill.jsonl, flush_interval: 0.05s}"


def gateway_yaml(upstream_url: str, body: str, *, keys: bool = True) -> str:
    head = f"""
version: 1
listen: {{host: 127.0.0.1, port: 0}}
admin: {{enabled: false}}
store: {{url: "sqlite:///gateway.db"}}
{DEFAULT_AUDIT}
upstreams:
  api: {{url: "{upstream_url}", connect_timeout: 2s, read_timeout: 2s, total_timeout: 5s}}
"""
    if keys:
        head += f"keys: {{pepper: \"{PEPPER}\"}}\n"
    return head + body


GatewayFactory = Callable[..., Awaitable[Gateway]]


# Which server carries the API listener in tests: the config's ``listen.server`` unless this
# environment variable names one (``portcullis`` or ``uvicorn``), so the whole suite can run on either.
TEST_SERVER = os.environ.get("PORTCULLIS_TEST_SERVER", "")
ON_PORTCULLIS = TEST_SERVER in ("", "portcullis")  # the default listen.server


@pytest.fixture
async def make_gateway(tmp_path: Path) -> AsyncIterator[GatewayFactory]:
    started: list[tuple[uvicorn.Server | Listener, asyncio.Task[None] | None, Gateway]] = []

    async def factory(
        yaml_text: str, *, env: dict[str, str] | None = None, clock: ManualClock | None = None,
        resolver: Any = None, secrets: dict[str, str] | None = None, http_server: str | None = None,
        verify: ssl.SSLContext | bool = True, tracer: Any = None,
    ) -> Gateway:
        """``http_server`` pins the server whatever PORTCULLIS_TEST_SERVER says (tests of one server's own
        behaviour); ``verify`` is what ``Gateway.client`` trusts when our server serves ``listen.tls``."""
        config = load_config_text(yaml_text, env=env or {})
        clk = clock or ManualClock()
        services = await open_services(config, clock=clk, base_dir=tmp_path, env=env or {})
        for name, value in (secrets or {}).items():
            await services.vault.set(name, value)
        if resolver is not None:
            services.egress_resolver = resolver  # egress names answered without DNS
        if tracer is not None:
            services.tracer = tracer  # spans exported to memory (tests/integration/test_tracing.py)
        runtime = build_runtime(config, services)
        app = GatewayApp(runtime)
        if services.shared is not None:
            await runtime.start()  # loads shared breaker states
            attach_shared_events(app, None)
        if (http_server or TEST_SERVER or config.listen.server) == "portcullis":
            listener = portcullis_listener(app, config)
            await listener.start("127.0.0.1", 0)
            port = listener.port
            base = f"{'https' if config.listen.tls else 'http'}://127.0.0.1:{port}"
            client = httpx.AsyncClient(base_url=base, timeout=10, verify=verify)
            gw = Gateway(base, port, app, services, clk, tmp_path, client, listener)
            started.append((listener, None, gw))
            return gw
        server = uvicorn.Server(uvicorn.Config(
            app, host="127.0.0.1", port=0, http=TargetPreservingProtocol, lifespan="off",
            proxy_headers=False, server_header=False, access_log=False, log_level="warning",
            h11_max_incomplete_event_size=config.listen.max_header_bytes,
        ))
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.005)
        port = server.servers[0].sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        gw = Gateway(base, port, app, services, clk, tmp_path, httpx.AsyncClient(base_url=base, timeout=10))
        started.append((server, task, gw))
        return gw

    yield factory
    for server, task, gw in started:
        await gw.client.aclose()
        if isinstance(server, Listener):
            await server.stop()
        else:
            server.should_exit = True
            assert task is not None
            await task
        await gw.app.runtime.aclose()
        await gw.services.aclose()


# Routes for the front-door tests (tests/attacks/test_front_door.py, integration/test_front_door_http.py).
ROUTES_FRONT_DOOR = """
routes:
  - {name: echo, path: "/echo", methods: [GET, POST, HEAD], upstream: api, auth: none}
  - {name: small, path: "/small", methods: [POST], upstream: api, auth: none, request: {max_body_bytes: 100}}
  - {name: big, path: "/big", methods: [GET], upstream: api, auth: none}
  - {name: hang, path: "/hang", methods: [GET], upstream: api, auth: none}
"""

def front_door_yaml(upstream_url: str, routes: str = ROUTES_FRONT_DOOR, **listen: Any) -> str:
    fields = {"host": "127.0.0.1", "port": 0, "server": "portcullis", **listen}
    text = ", ".join(f"{k}: {v}" for k, v in fields.items())
    return gateway_yaml(upstream_url, routes).replace(
        "listen: {host: 127.0.0.1, port: 0}", "listen: {" + text + "}", 1)


async def start_front_door(make_gateway: GatewayFactory, upstream: UpstreamServer, **listen: Any) -> Gateway:
    """The gateway on our own server, whatever PORTCULLIS_TEST_SERVER says: these tests are of its behaviour."""
    return await make_gateway(front_door_yaml(upstream.url, **listen), http_server="portcullis")


@contextlib.asynccontextmanager
async def raw_connection(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A client socket to the gateway for raw bytes, closed on the way out whatever the server did."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get(b"content-length", b"0"))
    return status, headers, await reader.readexactly(length) if length else b""


@dataclass(frozen=True)
class RawResponse:
    """A response as ``raw_request`` returned it, read: status, headers (lower-case names), body."""

    status: int
    headers: dict[bytes, bytes]
    body: bytes

    @classmethod
    def parse(cls, response: bytes) -> RawResponse:
        head, _, body = response.partition(b"\r\n\r\n")
        status_line, *lines = head.split(b"\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        return cls(int(status_line.split(b" ")[1]), headers, body)


async def raw_request(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send raw bytes; return the first response (head + Content-Length body), or b"" if the
    server closed without answering. For framing attacks that a normal client refuses to send."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        head = b""
        async with asyncio.timeout(timeout):
            while b"\r\n\r\n" not in head:
                chunk = await reader.read(65536)
                if not chunk:
                    return head
                head += chunk
            head_part, _, rest = head.partition(b"\r\n\r\n")
            length = 0
            for line in head_part.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            while len(rest) < length:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                rest += chunk
            return head_part + b"\r\n\r\n" + rest
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def random_ip() -> str:
    return "203.0.113." + str(secrets.randbelow(250) + 1)


os.environ.setdefault("PORTCULLIS_TESTING", "1")


@pytest.fixture(autouse=True)
def no_blocking_calls_in_the_loop() -> Iterator[None]:
    """Fail any test in which the event loop makes a blocking call (file or socket I/O, sleep)."""
    with blockbuster_ctx():
        yield


def self_signed_cert(tmp: Path, *, names: tuple[str, ...] = ("127.0.0.1", "localhost")) -> tuple[Path, Path]:
    """A self-signed certificate (its own CA) for ``names`` (IPs or DNS names): (cert.pem, key.pem)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    entries: list[x509.GeneralName] = []
    for n in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            entries.append(x509.DNSName(n))
    san = x509.SubjectAlternativeName(entries)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@dataclass(frozen=True)
class TlsFiles:
    """A throwaway CA and a server certificate it issued: PEM files."""

    ca: Path
    cert: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts only this CA (reads a file: call it off the event loop)."""
        return ssl.create_default_context(cafile=str(self.ca))


def issue_tls_files(tmp: Path, *, names: tuple[str, ...] = ("127.0.0.1", "localhost")) -> TlsFiles:
    """A CA (its key thrown away) and a server certificate for ``names``, valid for a day."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Portcullis test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    entries: list[x509.GeneralName] = []
    for n in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            entries.append(x509.DNSName(n))
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(entries), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(tmp / "ca.pem", tmp / "server.pem", tmp / "server.key")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return files


# --- services on this machine ------------------------------------------------------------------

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


def missing_service(what: str) -> None:
    """The one place the policy lives: under CI=true a missing service fails the run; elsewhere it skips."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} (required under CI)")
    pytest.skip(what)


async def redis_client(**extra: Any) -> Any:
    """A client for the machine's Redis, built off the loop (redis-py stats its package metadata)."""
    from redis.asyncio import Redis

    return await asyncio.to_thread(lambda: Redis(host=REDIS_HOST, port=REDIS_PORT, **extra))


async def redis_reachable() -> bool:
    client = await redis_client(socket_connect_timeout=1)
    try:
        await client.ping()
        return True
    except Exception:  # redis' ConnectionError is not an OSError
        return False
    finally:
        await client.aclose()


@pytest.fixture
async def redis_space() -> AsyncIterator[tuple[Any, str]]:
    """The machine's Redis and a fresh key prefix, deleted afterwards."""
    import uuid

    if not await redis_reachable():
        missing_service(f"Redis is not reachable on {REDIS_HOST}:{REDIS_PORT}")
    client = await redis_client()
    prefix = f"pcltest:{uuid.uuid4().hex}:"
    try:
        yield client, prefix
    finally:
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
async def private_redis() -> AsyncIterator[PrivateRedis]:
    """A redis-server of the test's own on a free port, for tests that stop and restart Redis."""
    if REDIS_SERVER is None:
        missing_service("redis-server is not installed")
    server = PrivateRedis(await asyncio.to_thread(free_port))
    await server.start()
    try:
        yield server
    finally:
        await server.kill()
