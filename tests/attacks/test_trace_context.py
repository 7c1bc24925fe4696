"""Malformed W3C trace context never reaches a backend, and never breaks a request.

Cases follow the W3C Trace Context spec (https://www.w3.org/TR/trace-context/, sections 3.2 and
3.3) and the malformations its test suite sends (w3c/trace-context ``test/test.py``: version
``ff``, all-zero ids, uppercase hex, wrong lengths, extra fields after version 00, illegal
characters, duplicate headers; tracestate with too many members, duplicate or invalid keys,
oversize values). The gateway replaces rather than rejects ("restart the trace", section 4.3):
each request is answered 200 by the real upstream, which never sees the malformed value.

Both modes are covered: tracing off (a valid context is passed on, a malformed one removed) and
on with the client as a trusted peer (a valid context continued, a malformed one replaced).
"""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tests.conftest import Gateway, GatewayFactory, UpstreamServer, gateway_yaml

from portcullis.config.model import TracingConfig
from portcullis.observability.tracing_otel import OtelTracer

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
VALID = f"00-{TRACE}-{PARENT}-01"

ROUTES = """
routes:
  - {name: items, path: "/items/{id}", upstream: api, auth: none}
"""

# (traceparent values sent, source); every one invalid by the spec.
MALFORMED_TRACEPARENT = [
    pytest.param([f"ff-{TRACE}-{PARENT}-01"], id="w3c-3.2.2.1-version-ff-is-invalid"),
    pytest.param([f"00-{'0' * 32}-{PARENT}-01"], id="w3c-3.2.2.3-all-zero-trace-id"),
    pytest.param([f"00-{TRACE}-{'0' * 16}-01"], id="w3c-3.2.2.4-all-zero-parent-id"),
    pytest.param([f"00-{TRACE.upper()}-{PARENT.upper()}-01"], id="w3c-3.2.2-uppercase-hex"),
    pytest.param([f"00-{TRACE[:-1]}-{PARENT}-01"], id="w3c-testsuite-trace-id-too-short"),
    pytest.param([f"00-{TRACE}0-{PARENT}-01"], id="w3c-testsuite-trace-id-too-long"),
    pytest.param([f"00-{TRACE}-{PARENT[:-1]}-01"], id="w3c-testsuite-parent-id-too-short"),
    pytest.param([f"00-{TRACE}-{PARENT}0-01"], id="w3c-testsuite-parent-id-too-long"),
    pytest.param([f"00-{TRACE}-{PARENT}-1"], id="w3c-testsuite-flags-one-digit"),
    pytest.param([f"00-{TRACE}-{PARENT}-01-extra"], id="w3c-3.2.4-extra-field-on-version-00"),
    pytest.param([f"00-{TRACE}-{PARENT}-01-"], id="w3c-3.2.4-trailing-dash-on-version-00"),
    pytest.param([f"0-{TRACE}-{PARENT}-01"], id="w3c-testsuite-version-one-digit"),
    pytest.param([f"00-{TRACE[:-1]}g-{PARENT}-01"], id="w3c-testsuite-illegal-character"),
    pytest.param([f"00_{TRACE}_{PARENT}_01"], id="w3c-testsuite-wrong-delimiter"),
    pytest.param([f"00- {TRACE}-{PARENT}-01"], id="w3c-testsuite-space-inside"),
    pytest.param([f"cc-{TRACE}-{PARENT}"], id="w3c-3.2.4-future-version-shorter-than-55"),
    pytest.param([f"cc-{TRACE}-{PARENT}-01x"], id="w3c-3.2.4-future-version-without-dash-after-flags"),
    pytest.param([""], id="w3c-testsuite-empty"),
    pytest.param([VALID, f"00-{'1' * 32}-{PARENT}-01"], id="w3c-testsuite-two-traceparent-headers"),
    pytest.param(["x" * 4000], id="oversize-value"),
]

# (tracestate values sent beside a valid traceparent, source): the tracestate is dropped, the
# traceparent still stands (section 3.3: "MUST NOT affect the parsing of traceparent").
MALFORMED_TRACESTATE = [
    pytest.param([",".join(f"k{i}=v" for i in range(33))], id="w3c-3.3.1.1-more-than-32-members"),
    pytest.param(["a=" + "x" * 255 + ",b=" + "y" * 255], id="w3c-3.3.1.5-longer-than-512-characters"),
    pytest.param(["foo=1,foo=2"], id="w3c-3.3.1.2-duplicate-key"),
    pytest.param(["foo=1", "foo=2"], id="w3c-3.3.1.2-duplicate-key-across-headers"),
    pytest.param(["Foo=1"], id="w3c-3.3.1.3-uppercase-key"),
    pytest.param(["foo=a=b"], id="w3c-3.3.1.3-equals-in-value"),
    pytest.param(["foo"], id="w3c-3.3.1.3-member-without-value"),
    pytest.param(["foo="], id="w3c-3.3.1.3-empty-value"),
    pytest.param(["k" * 257 + "=v"], id="w3c-3.3.1.3-key-too-long"),
    pytest.param(["foo=" + "v" * 257], id="w3c-3.3.1.3-value-too-long"),
    pytest.param(["t@" + "s" * 15 + "=1"], id="w3c-3.3.1.3-system-id-too-long"),
]

# Legitimate contexts that must pass: (traceparent, tracestate values, tracestate forwarded).
LEGITIMATE = [
    pytest.param(VALID, [], None, id="w3c-3.2-plain-version-00"),
    pytest.param(f"00-{TRACE}-{PARENT}-00", ["congo=t61rcWkgMzE"], "congo=t61rcWkgMzE", id="w3c-3.2-unsampled"),
    pytest.param(f"cc-{TRACE}-{PARENT}-01-what-the-future-will-be-like", [], None,
                 id="w3c-3.2.4-future-version-with-more-fields"),
    pytest.param(VALID, ["rojo=00f067aa0ba902b7 , ,congo=t61rcWkgMzE"], "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
                 id="w3c-3.3.1.1-empty-members-and-optional-white-space"),
    pytest.param(VALID, ["rojo=1", "tenant@vendor=x/y*z"], "rojo=1,tenant@vendor=x/y*z",
                 id="w3c-3.3.1.3-multi-tenant-key-and-two-headers"),
    pytest.param(VALID, [",".join(f"k{i}=v" for i in range(32))], ",".join(f"k{i}=v" for i in range(32)),
                 id="w3c-3.3.1.1-exactly-32-members"),
]


def _sent(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in headers if k.lower() == name]


@pytest.fixture(params=["off", "on"])
async def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def gateway(make_gateway: GatewayFactory, upstream: UpstreamServer, mode: str) -> tuple[Gateway, OtelTracer | None]:
    tracer = None
    if mode == "on":
        tracer = OtelTracer(TracingConfig.model_validate({
            "enabled": True, "trusted_peers": ["127.0.0.0/8"], "exporter": {"endpoint": "http://127.0.0.1:9"},
        }), exporter=InMemorySpanExporter())
    return await make_gateway(gateway_yaml(upstream.url, ROUTES), tracer=tracer), tracer


@pytest.mark.parametrize("values", MALFORMED_TRACEPARENT)
async def test_a_malformed_traceparent_never_reaches_the_upstream(
    make_gateway: GatewayFactory, upstream: UpstreamServer, mode: str, values: list[str]
) -> None:
    gw, _ = await gateway(make_gateway, upstream, mode)
    headers = [("traceparent", v) for v in values] + [("tracestate", "congo=t61rcWkgMzE")]
    r = await gw.client.get("/items/1", headers=headers)
    assert r.status_code == 200
    forwarded = _sent(upstream.seen[-1].headers, "traceparent")
    assert not set(forwarded) & set(values)
    if mode == "off":
        assert forwarded == [] and _sent(upstream.seen[-1].headers, "tracestate") == []
    else:  # a new trace: exactly one traceparent of the gateway's, with no tracestate from the client
        [own] = forwarded
        assert TRACE not in own and _sent(upstream.seen[-1].headers, "tracestate") == []
    [record] = await gw.audit_records()
    assert record["trace_id"] is None if mode == "off" else record["trace_id"] == own[3:35]


@pytest.mark.parametrize("values", MALFORMED_TRACESTATE)
async def test_a_malformed_tracestate_is_dropped_and_its_traceparent_still_stands(
    make_gateway: GatewayFactory, upstream: UpstreamServer, mode: str, values: list[str]
) -> None:
    gw, _ = await gateway(make_gateway, upstream, mode)
    headers = [("traceparent", VALID)] + [("tracestate", v) for v in values]
    r = await gw.client.get("/items/1", headers=headers)
    assert r.status_code == 200
    [forwarded] = _sent(upstream.seen[-1].headers, "traceparent")
    assert forwarded.startswith(f"00-{TRACE}-")
    assert _sent(upstream.seen[-1].headers, "tracestate") == []


@pytest.mark.parametrize(("traceparent", "tracestate", "expected_state"), LEGITIMATE)
async def test_a_valid_trace_context_is_carried_to_the_upstream(
    make_gateway: GatewayFactory, upstream: UpstreamServer, mode: str, traceparent: str, tracestate: list[str],
    expected_state: str | None,
) -> None:
    gw, tracer = await gateway(make_gateway, upstream, mode)
    headers = [("traceparent", traceparent)] + [("tracestate", v) for v in tracestate]
    r = await gw.client.get("/items/1", headers=headers)
    assert r.status_code == 200
    [forwarded] = _sent(upstream.seen[-1].headers, "traceparent")
    flags = traceparent[53:55]
    if mode == "off":  # passed on as received, in its version-00 form
        assert forwarded == f"00-{TRACE}-{PARENT}-{flags}"
    else:  # continued: same trace, the gateway's client span as the parent, the caller's sampled flag
        assert forwarded.startswith(f"00-{TRACE}-") and PARENT not in forwarded
        assert int(forwarded[-2:], 16) & 1 == int(flags, 16) & 1
        assert tracer is not None and await asyncio.to_thread(tracer.force_flush)
    assert _sent(upstream.seen[-1].headers, "tracestate") == ([expected_state] if expected_state else [])
    [record] = await gw.audit_records()
    assert record["trace_id"] == TRACE
