"""Whatever a client sends, the gateway answers with a status below 500 and never leaks internals.

Random request targets, methods and headers go through a real gateway on a socket (raw bytes, so
nothing is cleaned up by a client library). A refusal must be a problem document with a request
id; nothing may produce a 500, a traceback or an upstream request for a refused target. The backend
records each request head as it arrives (before any body), so a head forwarded for a request that
was then refused is seen.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import ON_PORTCULLIS, GatewayFactory, RawResponse, gateway_yaml, raw_request

from portcullis.testing import RecordingUpstream

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


def _declares_unsent_body(raw: bytes) -> bool:
    head, _, body = raw.partition(b"\r\n\r\n")
    lengths = [line.partition(b":")[2].strip() for line in head.split(b"\r\n")[1:]
               if line.partition(b":")[0].strip().lower() == b"content-length"]
    return len(lengths) == 1 and lengths[0].isdigit() and int(lengths[0]) > len(body)


@dataclass(frozen=True)
class Exchange:
    """One random request and what the client saw: status, headers (lower-case names), body."""

    raw: bytes
    status: int
    headers: dict[bytes, bytes]
    body: bytes

    @property
    def is_refusal(self) -> bool:
        return self.status >= 400


def _random_requests(*, derandomize: bool) -> list[bytes]:
    made: list[bytes] = []

    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), database=None,
              derandomize=derandomize)
    @given(methods, targets, st.lists(st.tuples(header_names, header_values), max_size=4), bodies)
    def probe(method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> None:
        made.append(_request(method, target, headers, body))

    probe()
    assert len(made) >= 200
    return made


async def _exchanges(port: int, *, derandomize: bool, first: Sequence[bytes] = ()) -> list[Exchange]:
    """Send ``first``, then the random requests, one by one; those the HTTP parser dropped
    unanswered are left out."""
    # hypothesis touches the file system; keep it off the loop
    requests = await asyncio.to_thread(_random_requests, derandomize=derandomize)
    out = []
    for raw in [*first, *requests]:
        try:
            response = await raw_request(port, raw, timeout=5)
        except TimeoutError:
            # The one request a server rightly leaves unanswered: it declared a body the client
            # never sent, so the server waits (listen.body_timeout cuts it, much later).
            assert _declares_unsent_body(raw), raw
            continue
        if not response:
            continue  # the HTTP parser closed the connection on malformed framing: acceptable
        parsed = RawResponse.parse(response)
        out.append(Exchange(raw, parsed.status, parsed.headers, parsed.body))
    assert len(out) >= 100
    return out


async def test_random_requests_never_produce_a_server_error(
    make_gateway: GatewayFactory, recording_upstream: RecordingUpstream
) -> None:
    gw = await make_gateway(gateway_yaml(recording_upstream.url, ROUTES))
    for ex in await _exchanges(gw.port, derandomize=False):
        assert ex.status < 500 or ex.status in (502, 504), (ex.raw, ex.status, ex.body[:300])
        assert b"Traceback" not in ex.body
    assert gw.services.metrics.registry.get_sample_value("portcullis_internal_errors_total") == 0


# Only on the former server (listen.server: uvicorn) do these fail: when llhttp refuses what it is
# parsing, uvicorn answers its own plain-text 400 (no problem document, no request id), and a head
# it had already handed to the app is forwarded before the rest of the request fails. There they
# run derandomized, so the strict xfails fail every run; on our own server they run random.
FRONT_DOOR = pytest.mark.xfail(not ON_PORTCULLIS, strict=True, raises=AssertionError, reason=(
    'issue "The front door": refusals made by the HTTP parser are plain text, and a head can be '
    "forwarded before its body framing fails"))


@FRONT_DOOR
async def test_every_refusal_of_a_random_request_is_a_problem_document(
    make_gateway: GatewayFactory, recording_upstream: RecordingUpstream
) -> None:
    gw = await make_gateway(gateway_yaml(recording_upstream.url, ROUTES))
    for ex in await _exchanges(gw.port, derandomize=not ON_PORTCULLIS):
        if not ex.is_refusal:
            continue
        # RFC 9457: the problem document, and the request id the client can quote to support.
        assert ex.headers.get(b"content-type") == b"application/problem+json", (ex.raw, ex.status, ex.body[:200])
        request_id = ex.headers.get(b"x-request-id", b"").decode()
        assert request_id, ex.raw
        if not ex.raw.startswith(b"HEAD "):
            doc = orjson.loads(ex.body)
            assert set(doc) >= {"type", "title", "status", "code", "request_id"}
            assert (doc["status"], doc["request_id"]) == (ex.status, request_id)


# Requests this property found forwarded although refused: an invalid Transfer-Encoding passes
# llhttp's head callbacks and failed only after the app had started forwarding (hypothesis found
# the first; the second is CVE-2019-18277's TE obfuscation). The app now refuses any coding but
# exactly `chunked` before forwarding (ingress/app.py _check_request, and our server before that);
# sent first, every run.
FORWARDED_THOUGH_REFUSED = [
    b"DELETE /open/%25 HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: I\r\nTransfer-Encoding: !(!\r\n"
    b"Connection: close\r\n\r\n",
    b"POST /open/x HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: xchunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
]


async def test_no_upstream_request_is_made_for_a_refused_random_request(
    make_gateway: GatewayFactory, recording_upstream: RecordingUpstream
) -> None:
    gw = await make_gateway(gateway_yaml(recording_upstream.url, ROUTES))
    exchanges = await _exchanges(gw.port, derandomize=not ON_PORTCULLIS, first=FORWARDED_THOUGH_REFUSED)
    # A follow-up round trip through the same backend: every head forwarded earlier has arrived.
    assert (await raw_request(gw.port, b"GET /open/last HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n")
            ).startswith(b"HTTP/1.1 200")
    # 502 and 504 are answers about a request that was (rightly) sent; every other head must
    # belong to a request the client got a non-refusal for.
    sent = {ex.headers.get(b"x-request-id", b"").decode() for ex in exchanges if ex.status < 400 or ex.status in (502, 504)}
    forwarded = [head for head in recording_upstream.heads if head.target != "/open/last"]
    assert [(h.method, h.target) for h in forwarded if h.header("x-request-id") not in sent] == []
