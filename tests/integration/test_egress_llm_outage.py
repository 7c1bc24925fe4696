"""LLM reservations in Redis while Redis goes away and comes back: a real gateway, a private
redis-server this test kills and restarts, the fake provider on 127.0.0.1.

What an operator must be able to rely on when Redis dies under LLM traffic (``budgets_on_failure``
at its default, ``closed``): a stream already flowing is relayed to its end; a new call is refused
before anything is sent, saying budgets cannot be checked; the settlement that could not reach
Redis is marked on the call's record (``charge_lost``) and counted, so the budgets can be reconciled
from the audit; and calls are admitted again once Redis is back.
"""

from __future__ import annotations

import uuid

import pytest
from tests.conftest import GatewayFactory
from tests.integration.test_egress_llm import CHAT, HEADERS, start
from tests.llm_provider import fake_provider
from tests.redis_server import PrivateRedis

from portcullis.testing import ManualClock

pytestmark = pytest.mark.faults


async def test_redis_dying_under_a_stream_relays_it_marks_its_charge_lost_and_refuses_new_calls_until_it_returns(
    make_gateway: GatewayFactory, private_redis: PrivateRedis,
) -> None:
    clock = ManualClock()
    shared = f'shared_state: {{url: "redis://127.0.0.1:{private_redis.port}/0", key_prefix: "pcltest:{uuid.uuid4().hex}:"}}'
    async with fake_provider(input_tokens=40, output_tokens=9, stall_after=2) as fake:
        setup = await start(make_gateway, fake, top=shared, clock=clock)
        headers = {**HEADERS, "X-API-Key": setup.key}
        async with setup.gw.client.stream("POST", "/egress/openai/chat/completions", headers=headers,
                                          json={**CHAT, "stream": True, "stream_options": {"include_usage": True}}) as streamed:
            assert streamed.status_code == 200
            chunks = streamed.aiter_raw()
            first = await anext(chunks)  # the reservation is held in Redis; the provider now stalls
            await private_redis.kill()

            refused = await setup.post("openai", "/chat/completions", CHAT)
            sent_meanwhile = len(fake.requests)
            fake.release.set()
            rest = b"".join([chunk async for chunk in chunks])
        await private_redis.start()
        clock.advance(1.0)  # past the first reconnect backoff
        recovered = await setup.post("openai", "/chat/completions", CHAT)
        records = await setup.llm_records()
        metrics = setup.gw.services.metrics.render().decode()

    body = first + rest
    assert b'"prompt_tokens":40' in body and body.endswith(b"data: [DONE]\n\n")  # the whole stream reached the caller
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert (refused.json()["code"], refused.json()["detail"]) == (
        "budget.exhausted", "Budgets cannot be checked right now; retry shortly.")
    assert sent_meanwhile == 1  # the refused call never reached the provider
    assert recovered.status_code == 200, recovered.text
    # a refusal is recorded at once, a stream when it ends
    refused_record, stream_record, recovered_record = records
    llm = stream_record["egress"]["llm"]
    assert (stream_record["status"], llm["stream_end"], llm["usage"], llm["charged_tokens"]) == (
        200, "complete", "reported", 49)  # what was used, on record
    assert llm["charge_lost"] is True  # ... though no budget received it
    assert refused_record["status"] == 429
    assert "charge_lost" not in recovered_record["egress"]["llm"]
    assert 'portcullis_egress_llm_charges_lost_total{route="openai"} 1.0' in metrics
