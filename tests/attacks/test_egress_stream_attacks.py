"""Attacks on streamed LLM answers through the egress door: a caller that asks for a long stream
and never reads it, so that the gateway would buffer the provider's answer, hold the provider's
connection, the route's bulkhead place and the token reservation for as long as the caller likes.

The defence is the front door's write timeout (CWE-400, the "slow read" attack of Sergey Shekyan's
slowhttptest): a client that does not take what is written within ``listen.write_timeout`` is cut;
the stream is then closed towards the provider, the reservation settled (in full: the usage was
never seen) and the bulkhead place given back, so the next caller is served. The provider is the
fake OpenAI server on 127.0.0.1, streaming far more than every buffer on the way can hold.
"""

from __future__ import annotations

import asyncio
from ipaddress import ip_address

import orjson
from tests.conftest import GatewayFactory, front_door_yaml, read_until_closed
from tests.integration.test_egress_llm import MASTER, config
from tests.llm_provider import fake_provider

from portcullis.egress.budgets import CallContext
from portcullis.egress.resolver import StaticResolver
from portcullis.gateway.runtime import serving_runtime

BODY = orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "Say hello"}], "stream": True,
                     "stream_options": {"include_usage": True}})


async def test_a_caller_that_never_reads_its_stream_is_cut_and_releases_the_provider_the_place_and_the_tokens(
    make_gateway: GatewayFactory,
) -> None:
    async with fake_provider(chunks=200_000) as fake:  # about 30 MiB of events, sent as fast as it can
        listen = front_door_yaml("http://127.0.0.1:9", "", write_timeout="0.3s", write_buffer_bytes="16KiB")
        listen_line = next(line for line in listen.splitlines() if line.startswith("listen:"))
        yaml = config(fake.port, execution_tokens=100_000).replace("listen: {host: 127.0.0.1, port: 0}", listen_line)
        yaml = yaml.replace("      llm:\n        provider: openai", "      bulkhead: {max_concurrent: 1, max_queue: 0}\n"
                            "      llm:\n        provider: openai", 1)
        gw = await make_gateway(yaml, secrets={"openai-key": "sk-provider"}, env={"PORTCULLIS_SECRET_KEY": MASTER},
                                resolver=StaticResolver({"llm.test": [[ip_address("127.0.0.1")]]}),
                                http_server="portcullis")
        key = await gw.key("agent")
        head = (f"POST /egress/openai/chat/completions HTTP/1.1\r\nHost: gw\r\nX-API-Key: {key}\r\n"
                f"X-Workflow-Id: wf-1\r\nX-Execution-Id: ex-1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(BODY)}\r\n\r\n").encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port, limit=1024)
        writer.transport.pause_reading()  # asks for the stream, and never reads it
        writer.write(head + BODY)
        await gw.wait_for_record("egress")  # written once the stream is settled
        writer.transport.resume_reading()
        received = await read_until_closed(reader)
        writer.close()

        # The one bulkhead place is free again and the provider answers the next caller.
        after = await gw.client.post("/egress/openai/chat/completions", headers={
            "X-API-Key": key, "X-Workflow-Id": "wf-1", "X-Execution-Id": "ex-2"}, json={
            "model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
        runtime = serving_runtime(gw.app)
        assert runtime.egress is not None
        left = await runtime.egress.budgets_remaining(CallContext("ex-1", "wf-1", "agent"), "openai")

    [record, _] = [r for r in await gw.audit_records() if r["route"] == "egress"]
    llm = record["egress"]["llm"]
    assert 0 < received < 200_000 * 100  # cut long before the answer's end
    assert llm["stream_end"] != "complete" and llm["usage"] == "unknown"
    assert llm["charged_tokens"] == llm["reserved_tokens"]  # settled: the usage was never seen
    assert left["llm_execution_tokens"] == 100_000 - llm["reserved_tokens"]  # nothing left held
    assert after.status_code == 200, after.text
