"""The proxy door in the gateway process: its listener, over the pipeline of the runtime now serving.

Why in ``gateway``: the proxy door (``egress.proxy``) is egress code and must not import the ingress
app, while its backend must follow the app's runtime across reloads (a reload swaps the executor,
its routes and budgets); this composition module is the one place that knows both. ``serve``
starts the listener when ``egress.proxy`` is set (in the first worker only: the door has its own
port) and stops it on shutdown, before the runtime it reads is closed.

What it refuses to do: start a listener the config did not ask for, or intercept without a CA the
config named (the config refuses ``intercept: true`` without ``egress.proxy.ca``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from portcullis.clock import Clock
from portcullis.config.egress_proxy import EgressProxyConfig
from portcullis.config.model import GatewayConfig
from portcullis.egress.proxy import ProxyDoorSettings, ProxyListener, SpliceLimits
from portcullis.egress.proxy.authority import CertificateAuthority
from portcullis.egress.proxy.backend import PipelineBackend, ProxyPipeline
from portcullis.gateway.runtime import serving_runtime
from portcullis.ingress.app import GatewayApp
from portcullis.policies.stage2_authenticate.failed_auth_shield import FailedAuthShield, failed_auth_rule
from portcullis.server.limits import ServerLimits

__all__ = ["proxy_limits", "start_proxy"]


def proxy_limits(proxy: EgressProxyConfig, graceful_timeout: float) -> ProxyDoorSettings:
    """The listener's bounds from ``egress.proxy``, in the server's plain units."""
    limits = ServerLimits(
        max_header_bytes=proxy.max_header_bytes, max_target_bytes=min(8 * 1024, proxy.max_header_bytes),
        max_header_count=proxy.max_header_count, max_body_bytes=proxy.max_body_bytes,
        first_byte_timeout=proxy.first_byte_timeout, head_timeout=proxy.head_timeout,
        body_timeout=proxy.body_timeout, keepalive_timeout=proxy.keepalive_timeout,
        write_timeout=proxy.write_timeout, max_connections=proxy.max_connections,
        max_connections_per_ip=proxy.max_connections_per_ip, graceful_timeout=graceful_timeout,
    )
    splice = SpliceLimits(idle_timeout_s=proxy.tunnel_idle_timeout, max_duration_s=proxy.tunnel_max_duration)
    return ProxyDoorSettings(limits=limits, splice=splice, max_body_bytes=proxy.max_body_bytes)


async def start_proxy(app: GatewayApp, config: GatewayConfig, *, clock: Clock) -> ProxyListener | None:
    """Start the proxy door if ``egress.proxy`` asks for it; ``None`` otherwise. The CA files are
    read as the listener's TLS files are (relative names from the working directory)."""
    if config.egress is None or config.egress.proxy is None:
        return None
    proxy = config.egress.proxy
    authority = None
    if proxy.ca is not None:
        ca = proxy.ca
        authority = await asyncio.to_thread(
            CertificateAuthority.load, Path(ca.cert_file), Path(ca.key_file), clock=clock, leaf_days=ca.leaf_days,
            max_leaves=ca.max_leaves)

    def current() -> ProxyPipeline | None:
        runtime = serving_runtime(app)
        if runtime.egress is None or runtime.config.egress is None:
            return None  # a reload took the egress section away; the listener stays until a restart
        return ProxyPipeline(runtime.egress, runtime.config.egress, runtime.key_verifier)

    services = serving_runtime(app).services
    # The same rule and limiter as the ingress routes' shield: one budget of failures per address.
    shield = FailedAuthShield(failed_auth_rule(config.shield.failed_auth_rate), services.limiter, clock)
    backend = PipelineBackend(current, audit=services.audit.submit, clock=clock, metrics=services.metrics,
                              shield=shield)
    listener = ProxyListener(backend, proxy_limits(proxy, config.listen.graceful_timeout), clock=clock,
                             authority=authority)
    await listener.start(proxy.host, proxy.port)
    return listener
