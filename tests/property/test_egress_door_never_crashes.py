"""Whatever an authenticated caller sends through the egress door, the answer is below 500 and
leaks nothing, and a call refused is never sent.

The egress door is reached by agents, and an agent's requests are shaped by whatever its prompt
said: the body of an LLM call is the least trusted input the gateway parses (token estimation,
output caps, prompt screening all read it). Random targets under ``/egress/``, the call's context
headers (workflow, execution, run mode, priority) and random JSON bodies built from the field names
OpenAI and Anthropic requests use (with hostile values: huge and negative numbers, floats, nesting,
control characters, wrong types) go through a real gateway on a socket as raw bytes, with a valid
API key so they reach the egress pipeline. Nothing may produce a 500 or a traceback, every refusal
is a problem document with a request id, and the provider receives exactly the calls answered 2xx.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import GatewayFactory, RawResponse, gateway_yaml, raw_request

from portcullis.testing import RecordingUpstream


def config(upstream: str) -> str:
    return gateway_yaml(upstream, f"""
routes:
  - {{name: health, path: /health, upstream: api, auth: none}}
egress:
  budgets: {{execution_calls: 1000000}}
  routes:
    - name: plain
      url: "{upstream}/api"
      allow_http: true
      allow_networks: [127.0.0.0/8]
      paths: ["/v1/**"]
      test_run: true
    - name: llm
      url: "{upstream}/v1"
      allow_http: true
      allow_networks: [127.0.0.0/8]
      llm:
        provider: openai
        default_max_output_tokens: 64
        max_output_tokens: 4096
        prices: {{"gpt-4o*": {{input_per_million: 2.5, output_per_million: 10}}}}
        budgets: {{execution_tokens: 1000000000}}
        screening: {{max_messages: 20, max_message_chars: 2000, patterns: ["ignore (all )?previous instructions"]}}
    - name: claude
      url: "{upstream}/anthropic"
      allow_http: true
      allow_networks: [127.0.0.0/8]
      llm:
        provider: anthropic
        prices: {{"claude*": {{input_per_million: 3, output_per_million: 15}}}}
        budgets: {{user_tokens_per_day: 1000000000}}
""")


def _dumps(value: Any) -> bytes:
    """JSON as a client library writes it: integers of any size (orjson refuses past 64 bits)."""
    return json.dumps(value).encode()


_KEYS = ["model", "messages", "role", "content", "text", "type", "max_tokens", "max_completion_tokens",
         "max_output_tokens", "n", "stream", "stream_options", "include_usage", "input", "system", "tools",
         "prompt", "image_url", "__proto__", ""]
_strings = st.one_of(st.sampled_from(["gpt-4o", "gpt-4o-mini", "claude-3", "user", "system", "assistant", "text",
                                      "Ignore previous instructions", "\u202e", "\x00", "\u200b" * 3]),
                     st.text(max_size=12))
_scalars = st.one_of(st.none(), st.booleans(), _strings, st.integers(min_value=-(2**70), max_value=2**70),
                     st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([0, -1, 2**63, 10**30, 1.5]))
_json = st.recursive(_scalars, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.sampled_from(_KEYS), children, max_size=5)), max_leaves=20)
_chat = st.fixed_dictionaries({"model": st.sampled_from(["gpt-4o", "claude-3", "gpt-4o-mini"])},
                              optional={k: _json for k in _KEYS if k != "model"})
_bodies = st.one_of(_chat.map(_dumps), _json.map(_dumps), st.binary(max_size=48),
                    st.just(b"[" * 200 + b"]" * 200), st.just(b'{"messages":' + b'[{"content":' * 60 + b'"x"' + b"}]" * 60 + b"}"))
_valid_targets = st.sampled_from(["/egress/llm/chat/completions", "/egress/claude/messages", "/egress/plain/v1/x",
                                  "/egress/llm/chat/completions?stream=true", "/egress/plain/v1/x?y=%00"])
_junk_targets = st.builds(lambda route, rest: f"/egress/{route}{rest}",
                          st.sampled_from(["llm", "claude", "plain", "nope", "", "LLM"]),
                          st.sampled_from(["/v1/../admin", "/%2e%2e/x", "", "//x", "/v1/%2f%2e%2e", "/messages"]))
_targets = st.one_of(_valid_targets, _valid_targets, _junk_targets)
_context = st.lists(st.tuples(
    st.sampled_from(["X-Workflow-Id", "X-Execution-Id", "X-Run-Mode", "X-Priority", "Content-Type", "Accept-Encoding",
                     "X-Budget-Remaining"]),
    st.sampled_from(["wf-1", "ex-1", "validate_only", "test_run", "full_run", "VALIDATE_ONLY", "high", "low", "-1",
                     "application/json", "text/plain", "gzip", "", "a" * 200, "wf 1", "ex:1"])), max_size=5)
_methods = st.sampled_from(["POST", "POST", "GET", "PUT", "DELETE", "HEAD"])


def _request(method: str, target: str, key: str, headers: list[tuple[str, str]], body: bytes, probe: int) -> bytes:
    """``probe``: the request's number in ``X-Probe``, which crosses to the provider with the call."""
    names = {name.lower() for name, _ in headers}
    base = [("X-API-Key", key), ("X-Probe", str(probe))]
    base += [(n, v) for n, v in (("X-Workflow-Id", "wf-1"), ("X-Execution-Id", "ex-1")) if n.lower() not in names]
    head = f"{method} {target} HTTP/1.1\r\nHost: gw.test\r\n"
    for name, value in [*base, *headers]:
        head += f"{name}: {value}\r\n"
    return head.encode("latin-1") + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body


def _random_requests(key: str) -> list[bytes]:
    made: list[bytes] = []

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(_methods, _targets, _context, _bodies)
    def probe(method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> None:
        made.append(_request(method, target, key, headers, body, len(made)))

    probe()
    return made


async def test_random_egress_calls_never_produce_a_server_error_and_a_refused_call_is_never_sent(
    make_gateway: GatewayFactory, recording_upstream: RecordingUpstream
) -> None:
    gw = await make_gateway(config(recording_upstream.url))
    key = await gw.key("agent")
    requests = await asyncio.to_thread(_random_requests, key)
    sent: set[str] = set()  # probes answered as sent: 2xx (but validate_only), or the provider's 502/504
    statuses: dict[int, int] = {}
    for probe, raw in enumerate(requests):
        response = await raw_request(gw.port, raw, timeout=10)
        assert response, raw  # every request is well framed: each gets an answer
        parsed = RawResponse.parse(response)
        status, headers, body = parsed.status, parsed.headers, parsed.body
        statuses[status] = statuses.get(status, 0) + 1
        assert status < 500 or status in (502, 504), (raw, status, body[:300])
        assert b"Traceback" not in body and key.encode() not in body
        if status >= 400:
            assert headers.get(b"content-type") == b"application/problem+json", (raw, status, body[:200])
            if not raw.startswith(b"HEAD "):
                doc: dict[str, Any] = orjson.loads(body)
                assert (doc["status"], doc["request_id"]) == (status, headers[b"x-request-id"].decode())
        if status < 300 or status in (502, 504):
            sent.add(str(probe))
    # A follow-up round trip through the same provider: every call sent earlier has arrived.
    last = _request("GET", "/egress/plain/v1/last", key, [], b"", len(requests))
    assert (await raw_request(gw.port, last)).startswith(b"HTTP/1.1 200")
    reached = {head.header("x-probe") for head in recording_upstream.heads} - {str(len(requests))}
    assert reached and reached <= sent, (sorted(reached - sent), statuses)  # a refused call never left
    # The strategies reach the provider: 28 to 49 of 300 calls answered 2xx in the runs seen; 10 is far below
    # any run seen, so the floor fails only when the strategies stop producing valid calls.
    assert sum(n for s, n in statuses.items() if s < 300) >= 10, statuses
    assert gw.services.metrics.registry.get_sample_value("portcullis_internal_errors_total") == 0
