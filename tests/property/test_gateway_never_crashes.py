"""Whatever a client sends, the gateway answers with a status below 500 and never leaks internals.

Random request targets, methods and headers go through a real gateway on a socket (raw bytes, so
nothing is cleaned up by a client library). A refusal must be a problem document with a request
id; nothing may produce a 500, a traceback or an upstream request for a refused target.
"""

from __future__ import annotations

import asyncio

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import GatewayFactory, UpstreamServer, gateway_yaml, raw_request

ROUTES = """
routes:
  - {name: open, path: "/open/{rest:path}", upstream: api, auth: none}
  - {name: keyed, path: "/keyed/{item}", upstream: api}
  - name: json
    path: /json
    methods: [POST]
    upstream: api
    auth: none
    request: {max_body_bytes: 4KiB, json: {max_depth: 4, max_keys: 20}}
"""

_target_chars = st.sampled_from([*list("abc/.%;?#&=~-_ "), "%2e", "%2f", "%00", "%c0%ae", "%25", "%zz", "..", "//"])
targets = st.builds(lambda parts, base: base + "".join(parts), st.lists(_target_chars, max_size=20),
                    st.sampled_from(["/open/", "/keyed/", "/json", "/", "", "*", "http://x/open/"]))
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS", "HEAD", "PATCH", "BREW"])
header_names = st.sampled_from(["X-API-Key", "Authorization", "Content-Type", "Content-Length", "X-Forwarded-For",
                                "Transfer-Encoding", "Connection", "Origin", "X-Request-ID", "Cookie"])
header_values = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=40)
bodies = st.one_of(st.just(b""), st.binary(max_size=64), st.just(b'{"a":{"b":{"c":{"d":{"e":1}}}}}'),
                   st.just(b'{"__proto__":{"x":1}}'))


def _request(method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    head = f"{method} {target or '/'} HTTP/1.1\r\nHost: gw.test\r\n"
    for name, value in headers:
        head += f"{name}: {value}\r\n"
    if body and not any(n.lower() in ("content-length", "transfer-encoding") for n, _ in headers):
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode("latin-1") + b"Connection: close\r\n\r\n" + body


async def test_random_requests_never_produce_a_server_error(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    seen: list[tuple[bytes, bytes]] = []

    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(methods, targets, st.lists(st.tuples(header_names, header_values), max_size=4), bodies)
    def probe(method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> None:
        seen.append((_request(method, target, headers, body), b""))

    await asyncio.to_thread(probe)  # hypothesis touches the file system; keep it off the loop
    assert len(seen) >= 200
    answered = 0
    for raw, _ in seen:
        response = await raw_request(gw.port, raw, timeout=5)
        if not response:
            continue  # the HTTP parser closed the connection on malformed framing: acceptable
        answered += 1
        status_line, _, rest = response.partition(b"\r\n")
        status = int(status_line.split(b" ")[1])
        assert status < 500 or status in (502, 504), (raw, response[:300])
        assert b"Traceback" not in response
        head, _, body = rest.partition(b"\r\n\r\n")
        if status >= 400 and b"application/problem+json" in head and not raw.startswith(b"HEAD "):
            doc = orjson.loads(body)
            assert set(doc) >= {"type", "title", "status", "code", "request_id"}
            assert doc["status"] == status
    assert answered >= 100
    assert b"portcullis_internal_errors_total 0.0" in gw.services.metrics.render()
