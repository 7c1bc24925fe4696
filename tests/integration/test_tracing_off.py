"""Tracing off (the default): no OpenTelemetry needed or loaded by us, and the trace context passed
on only when valid.

The import checks run in a fresh interpreter: the test process itself imports OpenTelemetry for
the other tracing tests, so ``sys.modules`` here proves nothing. ``opentelemetry-api`` is not ours
to keep out: FastAPI (the admin API) depends on it and imports it, and redis-py 8 imports the
metrics SDK for its own optional metrics when the SDK is installed. What the ``tracing`` extra
adds (``opentelemetry.sdk``, the exporter, the protobuf classes) is what is checked, in two runs:
with those made unimportable (as without the extra) the gateway serves and loads none of them;
with them installed it still loads no tracing SDK, exporter or ``tracing_otel`` module.
"""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import GatewayFactory, UpstreamServer, gateway_yaml

from portcullis.config.loader import load_config_text
from portcullis.errors import ConfigError

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
VALID = f"00-{TRACE}-00f067aa0ba902b7-01"

# Builds and serves a gateway in front of a real upstream, sends a request with a traceparent, then
# prints what reached the upstream and every opentelemetry module the process had loaded.
_SCRIPT = textwrap.dedent("""
    import asyncio, json, sys

    class NoOpenTelemetry:
        def find_spec(self, name, path=None, target=None):
            if name.startswith(("opentelemetry.sdk", "opentelemetry.exporter", "opentelemetry.proto")):
                raise ModuleNotFoundError(name)
            return None

    if sys.argv[3] == "blocked":
        sys.meta_path.insert(0, NoOpenTelemetry())
    import httpx
    from aiohttp import web
    from portcullis.cli.serving import portcullis_listener
    from portcullis.clock import SystemClock
    from portcullis.config.loader import load_config_text
    from portcullis.ingress.app import GatewayApp
    from portcullis.gateway.build import build_runtime, open_services
    from portcullis.testing import catch_all, serve_app

    async def main():
        seen = []
        async def handle(request):
            seen.append(request.headers.get("traceparent"))
            return web.json_response({})
        async with serve_app(catch_all(handle)) as port:
            config = load_config_text(sys.argv[1].replace("UPSTREAM", f"http://127.0.0.1:{port}"))
            services = await open_services(config, clock=SystemClock())
            runtime = build_runtime(config, services)
            listener = portcullis_listener(GatewayApp(runtime), config)
            await listener.start("127.0.0.1", 0)
            async with httpx.AsyncClient() as client:
                r = await client.get(f"http://127.0.0.1:{listener.port}/items/1", headers={"traceparent": sys.argv[2]})
            await listener.stop()
            await runtime.aclose()
            await services.aclose()
        print(json.dumps({"status": r.status_code, "seen": seen,
                          "extra": sorted(m for m in sys.modules if m.startswith((
                              "opentelemetry.sdk", "opentelemetry.exporter", "opentelemetry.proto"))),
                          "tracing": sorted(m for m in sys.modules if m.startswith((
                              "opentelemetry.sdk.trace", "opentelemetry.exporter", "opentelemetry.proto",
                              "portcullis.observability.tracing_otel")))}))

    asyncio.run(main())
""")


async def _serve_once(tmp_path: Path, opentelemetry: str) -> dict[str, Any]:
    config = gateway_yaml("UPSTREAM", 'routes:\n  - {name: items, path: "/items/{id}", upstream: api, auth: none}\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SCRIPT, config, VALID, opentelemetry, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def test_with_tracing_off_the_gateway_serves_without_the_tracing_extra_and_loads_none_of_it(
    tmp_path: Path,
) -> None:
    result = await _serve_once(tmp_path, "blocked")
    assert result == {"status": 200, "seen": [VALID], "extra": [], "tracing": []}


async def test_with_tracing_off_and_the_extra_installed_no_tracing_module_is_loaded(tmp_path: Path) -> None:
    result = await _serve_once(tmp_path, "installed")
    assert (result["status"], result["seen"], result["tracing"]) == (200, [VALID], [])


ROUTES = 'routes:\n  - {name: items, path: "/items/{id}", upstream: api, auth: none}\n'


async def test_with_tracing_off_a_valid_traceparent_and_tracestate_reach_the_upstream_and_the_audit(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    r = await gw.client.get("/items/1", headers={"traceparent": VALID, "tracestate": "congo=t61rcWkgMzE"})
    assert r.status_code == 200 and "traceparent" not in r.headers
    assert upstream.seen[-1].all("traceparent") == [VALID]
    assert upstream.seen[-1].all("tracestate") == ["congo=t61rcWkgMzE"]
    [record] = await gw.audit_records()
    assert record["trace_id"] == TRACE


async def test_with_tracing_off_a_request_without_traceparent_gets_none_and_no_trace_id(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    await gw.client.get("/items/1", headers={"tracestate": "congo=t61rcWkgMzE"})  # a tracestate alone is nothing
    assert upstream.seen[-1].all("traceparent") == [] and upstream.seen[-1].all("tracestate") == []
    [record] = await gw.audit_records()
    assert record["trace_id"] is None


@pytest.mark.parametrize(("tracing", "message"), [
    pytest.param("{enabled: true}", "tracing.exporter.endpoint is required", id="enabled-without-endpoint"),
    pytest.param("{enabled: true, exporter: {endpoint: 'grpc://collector:4317'}}", "http:// or https://",
                 id="not-an-http-endpoint"),
    pytest.param("{enabled: true, exporter: {endpoint: 'http://user:pw@collector:4318'}}", "cannot carry credentials",
                 id="credentials-in-the-endpoint"),
    pytest.param("{sample_ratio: 1.5}", "sample_ratio", id="ratio-above-one"),
    pytest.param("{trusted_peers: [not-a-network]}", "trusted_peers", id="bad-cidr"),
])
def test_an_unusable_tracing_section_is_a_config_error_naming_it(tracing: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(gateway_yaml("http://127.0.0.1:9", f"tracing: {tracing}\n" + ROUTES))
    assert message in str(info.value) and "tracing" in str(info.value)


def test_the_otlp_endpoint_gets_the_traces_path_only_when_it_has_none() -> None:
    def url(endpoint: str) -> str | None:
        text = gateway_yaml("http://127.0.0.1:9", f"tracing: {{enabled: true, exporter: {{endpoint: '{endpoint}'}}}}\n"
                            + ROUTES)
        return load_config_text(text).tracing.exporter.traces_url

    assert url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert url("https://collector:4318/") == "https://collector:4318/v1/traces"
    assert url("https://otlp.example/api/v2/spans") == "https://otlp.example/api/v2/spans"


_CHECK_WITHOUT_EXTRA = textwrap.dedent("""
    import sys

    class NoTracingExtra:
        def find_spec(self, name, path=None, target=None):
            if name.startswith(("opentelemetry.sdk", "opentelemetry.exporter")):
                raise ModuleNotFoundError(name)
            return None

    sys.meta_path.insert(0, NoTracingExtra())
    from portcullis.config.loader import load_config_text
    from portcullis.errors import ConfigError
    try:
        load_config_text(sys.argv[1])
    except ConfigError as exc:
        print(exc)
""")


async def test_tracing_enabled_without_the_extra_installed_is_a_config_error_saying_what_to_install(
    tmp_path: Path,
) -> None:
    config = gateway_yaml("http://127.0.0.1:9", "tracing: {enabled: true, exporter: {endpoint: 'http://c:4318'}}\n"
                          + ROUTES)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CHECK_WITHOUT_EXTRA, config, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    message = out.decode()
    assert "tracing" in message and "pip install 'portcullis-gateway[tracing]'" in message
