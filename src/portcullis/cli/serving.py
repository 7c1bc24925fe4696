"""Run the gateway process: the API listener, the admin listener, signals, and an orderly shutdown.

Why here, in ``cli``: this is the composition root. It wires config, runtime, the ingress app, the
admin app and an HTTP server together, so it imports from every layer; ``cli`` is the top layer and
may. ``portcullis.server`` (the HTTP server) stays a library that imports none of them (an
import-linter contract).

``listen.server`` picks the API listener's server: ``portcullis`` (our own, ``server.Listener``,
with ``ServerLimits`` built here from ``listen.*`` and the app as its ``RefusalSink`` and
``BodyPlanner``) or ``uvicorn``. The admin listener is always uvicorn.

Why uvicorn's ``Server`` is driven directly instead of ``uvicorn.run``: the gateway needs two
listeners in one process sharing one runtime, SIGHUP for reload, and a shutdown that first stops
accepting, then lets in-flight requests finish (``listen.graceful_timeout``), then drains the audit
queue. Forwarded-header trust is ours (``trusted_proxies``), so uvicorn's ``proxy_headers`` is off.

Logging: ``log.format`` and ``log.level`` (``observability.logs``) configure the root logger of
this process and of every worker (spawned workers start unconfigured). uvicorn is given no logging
config of its own (``log_config=None``), so its records reach the root logger and are formatted and
masked like ours. The ready line is printed, not logged: it stays one plain line on stdout.

With ``listen.workers`` > 1 the parent binds the socket and starts that many worker processes on
it; worker 0 also serves the admin listener, and its ``/metrics`` adds the other workers' figures
(``observability/worker_metrics.py``: snapshots in a directory private to this gateway).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import resource
import shutil
import signal
import socket
import ssl
import sys
import tempfile
from collections.abc import Callable, Generator
from pathlib import Path

import uvicorn

from portcullis.admin.app import create_admin_app
from portcullis.background import stop_task
from portcullis.clock import SystemClock
from portcullis.config.loader import load_config
from portcullis.config.model import GatewayConfig, ListenConfig, TlsConfig
from portcullis.egress.proxy import ProxyListener
from portcullis.gateway.build import build_runtime, open_services
from portcullis.gateway.proxy import start_proxy
from portcullis.gateway.reload import Reloader
from portcullis.gateway.shared_events import attach_shared_events
from portcullis.ingress.app import GatewayApp
from portcullis.ingress.tls import listener_context
from portcullis.observability.logs import LEVELS, LogFormat, configure_logging
from portcullis.observability.worker_metrics import MergedWorkers, WorkerShare, keep_sharing
from portcullis.server.limits import ServerLimits
from portcullis.server.listener import Listener
from portcullis.server.protocol import TargetPreservingProtocol
from portcullis.server.tls import follow

__all__ = ["portcullis_listener", "serve", "serve_forever", "server_limits", "uvicorn_tls_factory"]

log = logging.getLogger("portcullis.server")


class _AdminServer(uvicorn.Server):
    """The admin listener leaves signal handling to the API server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class _GatewayServer(uvicorn.Server):
    """uvicorn's server, minus one thing: after a graceful stop uvicorn re-raises the captured
    SIGTERM, which would kill the process before the audit queue is drained. Here a signal only
    starts the graceful stop; ``serve`` then returns normally and the caller finishes the shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.handle_exit, sig, None)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):  # not the main thread
                pass
        try:
            yield
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)


def server_limits(listen: ListenConfig, *, fd_limit: int | None = None) -> ServerLimits:
    """``listen.*`` as the server's limits; ``max_connections`` at most half the open-file limit."""
    if fd_limit is None:
        fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    max_connections = listen.max_connections
    if fd_limit > 0:
        max_connections = max(1, min(max_connections, fd_limit // 2))
    return ServerLimits(
        max_header_bytes=listen.max_header_bytes, max_target_bytes=listen.max_target_bytes,
        max_header_count=listen.max_header_count, max_body_bytes=listen.max_body_bytes,
        body_buffer_bytes=listen.body_buffer_bytes, first_byte_timeout=listen.first_byte_timeout,
        head_timeout=listen.head_timeout, body_timeout=listen.body_timeout, body_min_rate=listen.body_min_rate,
        keepalive_timeout=listen.keepalive_timeout, write_timeout=listen.write_timeout,
        write_high_water=listen.write_buffer_bytes, max_stalled_responses=listen.max_stalled_responses,
        max_connections=max_connections,
        max_connections_per_ip=listen.max_connections_per_ip,
        graceful_timeout=max(0.001, listen.graceful_timeout),
    )


def portcullis_listener(app: GatewayApp, config: GatewayConfig, limits: ServerLimits | None = None) -> Listener:
    """Our server in front of ``app``: the app is its refusal sink and body-limit source."""
    context = None
    tls = config.listen.tls
    if tls is not None:
        # New connections move onto the current runtime's context: a reload applies new files.
        context = follow(listener_context(tls, where="listen.tls"), lambda: app.runtime.server_tls)
    return Listener(
        app, limits=limits or server_limits(config.listen), sink=app, body_plan=app,
        exempt_from_ip_cap=lambda ip: app.runtime.is_trusted_peer(ip), ssl=context,
    )


def _gateway_config(app: GatewayApp, config: GatewayConfig) -> uvicorn.Config:
    listen = config.listen
    return uvicorn.Config(
        app, host=listen.host, port=listen.port, http=TargetPreservingProtocol, lifespan="off",
        proxy_headers=False, server_header=False, access_log=False, log_level="warning", log_config=None,
        timeout_graceful_shutdown=int(max(1, listen.graceful_timeout)),
        ssl_certfile=listen.tls.cert_file if listen.tls else None,
        ssl_keyfile=listen.tls.key_file if listen.tls else None,
        ssl_context_factory=uvicorn_tls_factory(listen.tls, "listen.tls"),
        h11_max_incomplete_event_size=listen.max_header_bytes,
    )


def uvicorn_tls_factory(tls: TlsConfig | None, where: str) -> Callable[[uvicorn.Config, Callable[[], ssl.SSLContext]],
                                                                ssl.SSLContext] | None:
    """uvicorn's context replaced by ours, so a listener on uvicorn gets the same TLS policy (versions,
    ciphers, no renegotiation, client CAs) as our server's."""
    if tls is None:
        return None
    return lambda _config, _default: listener_context(tls, where=where)


def _freeze_startup_objects() -> None:
    """Move every object alive after start-up out of the cyclic garbage collector's sight.

    Why: a full collection walks every tracked object, and start-up leaves hundreds of thousands
    (the config model, the compiled routes, the libraries' own state) that live as long as the
    process. Walking them took tens of milliseconds, every few seconds under load: the p99 of
    every setup of ours in ``make bench`` sat near 70 ms against the bare proxy's 7. ``gc.freeze``
    (Python 3.7+, what Instagram's Django fleet does) leaves them to reference counting; objects
    made later, per request or by a reload, are collected as before.
    """
    gc.collect()
    gc.freeze()


async def serve(
    config_path: Path,
    *,
    announce: Callable[[str], None] | None = None,
    sockets: list[socket.socket] | None = None,
    with_admin: bool = True,
    share: WorkerShare | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM. ``announce`` receives one line once both listeners are up.
    ``share``: with several workers, where this one's metrics meet the others' (``worker_metrics``)."""
    config = load_config(config_path)
    services = await open_services(config, clock=SystemClock())
    runtime = build_runtime(config, services)
    app = GatewayApp(runtime)
    await runtime.start()
    sharing: asyncio.Task[None] | None = None
    if share is not None and share.index == 0:
        services.metrics.workers = MergedWorkers(services.metrics.registry, share)
    elif share is not None:
        sharing = asyncio.create_task(keep_sharing(services.metrics.registry, share))
    _freeze_startup_objects()
    reloader = Reloader(app, config_path, grace_s=config.listen.graceful_timeout)
    attach_shared_events(app, reloader)
    admin: uvicorn.Server | None = None
    if config.admin.enabled and with_admin:
        admin = _AdminServer(uvicorn.Config(
            create_admin_app(app, reloader), host=config.admin.host, port=config.admin.port,
            lifespan="off", access_log=False, log_level="warning", log_config=None, server_header=False,
            ssl_certfile=config.admin.tls.cert_file if config.admin.tls else None,
            ssl_keyfile=config.admin.tls.key_file if config.admin.tls else None,
            ssl_context_factory=uvicorn_tls_factory(config.admin.tls, "admin.tls"),
        ))
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGHUP, reloader.request)
    admin_task = asyncio.create_task(admin.serve()) if admin else None
    # The proxy door has its own port: the first worker serves it, as it serves the admin listener.
    proxy: ProxyListener | None = None
    try:
        if with_admin:
            proxy = await start_proxy(app, config, clock=services.clock)
        if config.listen.server == "portcullis":
            await _serve_portcullis(app, config, admin, announce, sockets, proxy)
        else:
            gateway = _GatewayServer(_gateway_config(app, config))
            announcer = asyncio.create_task(_announce(lambda: gateway.started, lambda: _bound_port(gateway),
                                                      admin, config, announce, proxy))
            try:
                await gateway.serve(sockets=sockets)
            finally:
                announcer.cancel()
    finally:
        if proxy is not None:
            await proxy.stop()  # its tunnels end (recorded) before the runtime they read closes
        if admin is not None and admin_task is not None:
            admin.should_exit = True
            await admin_task
        await reloader.aclose()
        await app.runtime.aclose()
        await stop_task(sharing)  # its last snapshot holds every request this worker answered
        await services.aclose()


async def _serve_portcullis(
    app: GatewayApp, config: GatewayConfig, admin: uvicorn.Server | None,
    announce: Callable[[str], None] | None, sockets: list[socket.socket] | None, proxy: ProxyListener | None = None,
) -> None:
    """Our server until SIGINT/SIGTERM, then its graceful drain (``listen.graceful_timeout``)."""
    listener = portcullis_listener(app, config)
    await listener.start(config.listen.host, config.listen.port, sock=sockets[0] if sockets else None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    announcer = asyncio.create_task(_announce(lambda: True, lambda: listener.port, admin, config, announce, proxy))
    try:
        await stop.wait()
    finally:
        announcer.cancel()
        for sig in installed:
            loop.remove_signal_handler(sig)
        await listener.stop()


async def _announce(
    started: Callable[[], bool], port: Callable[[], int], admin: uvicorn.Server | None, config: GatewayConfig,
    announce: Callable[[str], None] | None, proxy: ProxyListener | None = None,
) -> None:
    # uvicorn exposes readiness only as a flag, not an event.
    while not started() or (admin is not None and not admin.started):  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    scheme = "https" if config.listen.tls else "http"
    line = f"Portcullis listening on {scheme}://{config.listen.host}:{port()}"
    if admin is not None:
        line += f" (admin {'https' if config.admin.tls else 'http'}://{config.admin.host}:{_bound_port(admin)})"
    if proxy is not None and config.egress is not None and config.egress.proxy is not None:
        line += f" (proxy http://{config.egress.proxy.host}:{proxy.port})"
    if announce is not None:
        announce(line)
    else:
        log.info(line)


def _bound_port(server: uvicorn.Server) -> int:
    for s in server.servers:
        for sock in s.sockets:
            return int(sock.getsockname()[1])
    return 0


def _run(config_path: Path, sockets: list[socket.socket] | None, with_admin: bool,
         share: WorkerShare | None = None) -> None:
    def say(line: str) -> None:
        print(line, flush=True)

    try:
        import uvloop

        uvloop.run(serve(config_path, announce=say, sockets=sockets, with_admin=with_admin, share=share))
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported platform
        asyncio.run(serve(config_path, announce=say, sockets=sockets, with_admin=with_admin, share=share))


def _worker(config_path: Path, sock: socket.socket, share: WorkerShare, log_format: LogFormat, log_level: int) -> None:
    configure_logging(log_format, log_level)
    _run(config_path, [sock], share.index == 0, share)


def serve_forever(config_path: Path, *, log_level: int | None = None) -> None:
    """The blocking entry used by ``portcullis serve``; ``log_level`` (the ``--log-level`` flag) wins
    over the config's ``log.level``."""
    config = load_config(config_path)
    level = log_level if log_level is not None else LEVELS[config.log.level]
    configure_logging(config.log.format, level)
    if config.listen.workers == 1:
        _run(config_path, None, True)
        return
    sock = uvicorn.Config(
        lambda: None, host=config.listen.host, port=config.listen.port, log_config=None
    ).bind_socket()
    ctx = multiprocessing.get_context("spawn")
    shared = Path(tempfile.mkdtemp(prefix="portcullis-metrics-"))  # 0700: this gateway's workers only
    workers = [
        ctx.Process(target=_worker, args=(config_path, sock, WorkerShare(shared, index), config.log.format, level),
                    daemon=False)
        for index in range(config.listen.workers)
    ]
    for w in workers:
        w.start()

    def forward(signum: int, _frame: object) -> None:
        for w in workers:
            if w.pid is not None and w.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.pid, signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    for w in workers:
        w.join()
    shutil.rmtree(shared, ignore_errors=True)
    sys.exit(max((w.exitcode or 0) for w in workers))
