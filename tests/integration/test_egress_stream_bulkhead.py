"""A streamed LLM answer holds its endpoint's bulkhead place until the stream ends, not until its
head arrives: a stream is a call in flight, and a cap that forgot it would let a provider's
concurrency limit be passed by every caller that streams."""

from __future__ import annotations

from ipaddress import ip_address

from tests.conftest import GatewayFactory, gateway_yaml
from tests.llm_provider import fake_provider

from portcullis.egress.resolver import StaticResolver

CONTEXT = {"X-Workflow-Id": "wf-1", "X-Execution-Id": "ex-1"}
STREAM = {"model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True},
          "messages": [{"role": "user", "content": "Say hello"}]}


def config(port: int) -> str:
    return gateway_yaml("http://127.0.0.1:9", f"""
routes:
  - {{name: health, path: /health, upstream: api, auth: none}}
egress:
  routes:
    - name: openai
      url: "http://llm.test:{port}/v1"
      allow_http: true
      allow_networks: [127.0.0.0/8]
      bulkhead: {{max_concurrent: 1, max_queue: 0}}
      llm:
        provider: openai
        default_max_output_tokens: 50
        prices: {{gpt-4o: {{input_per_million: 2.5, output_per_million: 10}}}}
        budgets: {{execution_tokens: 100000}}
""")


async def test_a_stream_holds_its_bulkhead_place_until_it_ends(make_gateway: GatewayFactory) -> None:
    async with fake_provider(input_tokens=40, output_tokens=9) as provider:
        provider.stall_after = 2  # two chunks, then the provider waits: the stream is still open
        gw = await make_gateway(config(provider.port),
                                resolver=StaticResolver({"llm.test": [[ip_address("127.0.0.1")]]}))
        headers = {**CONTEXT, "X-API-Key": await gw.key("agent")}
        async with gw.client.stream("POST", "/egress/openai/chat/completions", json=STREAM,
                                    headers=headers) as first:
            received = b""
            chunks = first.aiter_raw()
            while received.count(b"\n\n") < 2:
                received += await anext(chunks)
            second = await gw.client.post("/egress/openai/chat/completions", json=STREAM, headers=headers)
            assert second.status_code == 503 and second.json()["code"] == "egress.shed"
            assert "retry-after" in second.headers
            provider.release.set()
            async for chunk in chunks:
                received += chunk
        assert received.endswith(b"data: [DONE]\n\n")
        third = await gw.client.post("/egress/openai/chat/completions", json=STREAM, headers=headers)
        assert third.status_code == 200  # the place came back when the first stream ended
        assert len(provider.requests) == 2
