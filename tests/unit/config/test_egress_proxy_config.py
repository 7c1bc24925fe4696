"""The ``egress.proxy`` section and ``intercept``: off unless written, refused where it cannot work."""

from __future__ import annotations

import pytest

from portcullis.config.advice import config_warnings
from portcullis.config.loader import load_config_text
from portcullis.errors import ConfigError

BASE = """
upstreams: {api: {url: "http://127.0.0.1:9"}}
routes: [{name: r, path: /r, upstream: api, auth: none}]
"""
KEYS = 'keys: {pepper: "egress-config-test-pepper-0123456789abcdef"}\n'
CA = "ca: {cert_file: ca.pem, key_file: ca.key}"


def load(text: str, *, keys: bool = True):  # type: ignore[no-untyped-def]
    return load_config_text(BASE + (KEYS if keys else "") + text, env={})


def test_the_proxy_door_is_off_unless_written() -> None:
    cfg = load("egress: {routes: [{name: gh, url: 'https://api.github.com'}]}\n")
    assert cfg.egress is not None and cfg.egress.proxy is None
    assert not cfg.egress.routes[0].intercept


def test_a_proxy_listener_takes_its_bounds_with_safe_defaults() -> None:
    cfg = load("egress: {proxy: {listen: '127.0.0.1:8081', tunnel_idle_timeout: 30s}}\n")
    assert cfg.egress is not None and cfg.egress.proxy is not None
    proxy = cfg.egress.proxy
    assert (proxy.host, proxy.port, proxy.tunnel_idle_timeout, proxy.tunnel_max_duration) == ("127.0.0.1", 8081, 30, 3600)
    assert (proxy.max_header_bytes, proxy.max_body_bytes, proxy.scopes, proxy.ca) == (16384, 1 << 20, [], None)
    assert config_warnings(cfg) == []


@pytest.mark.parametrize(("text", "keys", "message"), [
    ("egress: {proxy: {listen: '127.0.0.1:8081'}}\n", False, "keys.pepper"),
    ("egress: {proxy: {listen: '8081'}}\n", True, "host:port"),
    ("egress: {proxy: {listen: '127.0.0.1:99999'}}\n", True, "host:port"),
    ("listen: {host: 127.0.0.1, port: 8080}\negress: {proxy: {listen: '127.0.0.1:8080'}}\n", True, "API listener"),
    ("egress: {routes: [{name: llm, url: 'https://llm.example', intercept: true}]}\n", True, "egress.proxy.ca"),
    ("egress: {proxy: {listen: '127.0.0.1:1'}, routes: [{name: llm, url: 'https://llm.example', "
     "intercept: true}]}\n", True, "egress.proxy.ca"),
    (f"egress: {{proxy: {{listen: '127.0.0.1:1', {CA}}}, routes: [{{name: p, url: 'http://p.example', "
     f"allow_http: true, intercept: true}}]}}\n", True, "only an https:// route"),
], ids=["no-keys", "no-host", "bad-port", "same-as-api-listener", "intercept-no-proxy", "intercept-no-ca",
        "intercept-http"])
def test_a_proxy_config_that_cannot_work_is_refused(text: str, keys: bool, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(text, keys=keys)


def test_interception_is_accepted_with_a_ca() -> None:
    cfg = load(f"egress: {{proxy: {{listen: '127.0.0.1:1', {CA}}}, routes: [{{name: llm, url: 'https://llm.example', "
               "intercept: true}]}\n")
    assert cfg.egress is not None and cfg.egress.routes[0].intercept


def test_a_proxy_listening_beyond_loopback_is_warned_about() -> None:
    cfg = load("egress: {proxy: {listen: '0.0.0.0:8081'}}\n")
    [warning] = config_warnings(cfg)
    assert warning.startswith("egress.proxy.listen (0.0.0.0:8081) is not a loopback address")
