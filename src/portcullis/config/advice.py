"""Warnings about settings that validate but interact in a way an operator should hear about.

Why apart from the model's validators: these configs are legal and sometimes meant, so refusing
them would be wrong, yet the effect is not what the field names suggest. ``portcullis check``
prints each warning as one line naming the YAML path. What this module refuses to do: change or
refuse a config, or read anything but the validated model.
"""

from __future__ import annotations

import ipaddress

from portcullis.config.model import GatewayConfig

__all__ = ["config_warnings"]


def _seconds(value: float) -> str:
    return f"{value:g}s"


def config_warnings(config: GatewayConfig) -> list[str]:
    """One line per interaction worth knowing about, in config order; empty when there is none."""
    warnings: list[str] = []
    for index, issuer in enumerate(config.jwt_issuers):
        ttl, interval = issuer.jwks_cache_ttl, issuer.jwks_min_refresh_interval
        if issuer.jwks_uri and interval > ttl:
            # identity/jwks.py: the TTL refresh never waits for the unknown-kid interval.
            warnings.append(
                f"jwt_issuers[{index}] ({issuer.name}): jwks_min_refresh_interval ({_seconds(interval)}) is longer "
                f"than jwks_cache_ttl ({_seconds(ttl)}). The JWKS is still fetched every {_seconds(ttl)}, so a "
                f"withdrawn key stops verifying and a new key is learned within {_seconds(ttl)}; the interval "
                f"only limits the extra fetches unknown kids cause (one per {_seconds(interval)}), it does not "
                f"slow the TTL refresh."
            )
    admin = config.admin
    if admin.enabled and admin.token_pepper is None and config.keys is None and admin.operators is None:
        warnings.append(
            "admin: no admin token pepper (admin.token_pepper or keys.pepper) and no admin.operators issuer: nobody "
            "can authenticate, so every admin API call gets 401 (only /healthz and /readyz answer)."
        )
    stalled = config.listen.max_stalled_responses
    for name, upstream in config.upstreams.items():
        if upstream.pool_size <= stalled:
            # server/connection.py drain(): stalled clients may hold up to this many upstream connections.
            warnings.append(
                f"upstreams.{name}.pool_size ({upstream.pool_size}) is not above listen.max_stalled_responses "
                f"({stalled}): clients that never read their answers could hold every connection to this "
                f"upstream until write_timeout, and other requests would wait for one."
            )
    proxy = config.egress.proxy if config.egress is not None else None
    if proxy is not None and not _loopback(proxy.host):
        # egress/proxy/listener.py: the door speaks plain HTTP; Proxy-Authorization carries the API key.
        warnings.append(
            f"egress.proxy.listen ({proxy.listen}) is not a loopback address: the proxy door speaks plain HTTP, so "
            "API keys (Proxy-Authorization) and unintercepted http:// traffic cross that network in clear; keep it "
            "on loopback or a network you trust."
        )
    warnings += _egress_warnings(config)
    return warnings


def _egress_warnings(config: GatewayConfig) -> list[str]:
    """Run modes and priorities that do what the names say, but maybe not what was meant."""
    egress = config.egress
    if egress is None:
        return []
    warnings = []
    untested = [r.name for r in egress.routes if not r.test_run]
    if egress.run_modes.default == "test_run" and untested:
        # egress/run_mode.py: a call that names no mode runs in the default, and test_run needs the route's mark.
        warnings.append(
            "egress.run_modes.default is test_run, so every call that names no X-Run-Mode is refused (403 "
            f"egress.run_mode_denied) on the routes not marked test_run: {', '.join(untested)}."
        )
    classes = egress.priorities.classes
    for index, route in enumerate(egress.routes):
        bulkhead = route.bulkhead
        if bulkhead is None:
            continue
        default = bulkhead.default_priority or egress.priorities.default
        higher = [c for c in bulkhead.header_priorities if classes.index(c) < classes.index(default)]
        if higher:
            # egress/priority.py: a listed header value wins over the workflow's and consumer's classes.
            warnings.append(
                f"egress.routes[{index}] ({route.name}): bulkhead.header_priorities lets any caller raise its class "
                f"above the default ({default}) to {', '.join(higher)} with X-Priority, ahead of the workflows and "
                "consumers configured with a class."
            )
    return warnings


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
