"""Guard an agent's LLM calls in process: the SDK talks through Portcullis's egress transport.

The process never holds the provider's key: the route injects it from the vault. Set it once with
`portcullis secrets set openai_key -c portcullis.yaml` (PORTCULLIS_SECRET_KEY in the environment),
with a config whose egress section has:

    egress:
      routes:
        - name: openai
          url: https://api.openai.com/v1
          methods: [POST]
          headers: {Authorization: "Bearer {secret:openai_key}"}
          cost: 0.002

Run: python examples/egress_in_process.py portcullis.yaml
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx

from portcullis.clock import SystemClock
from portcullis.config.loader import load_config
from portcullis.egress.budgets import CallContext
from portcullis.egress.executor import EgressExecutor
from portcullis.egress.resolver import SystemResolver
from portcullis.egress.transport import AsyncTransport
from portcullis.ingress.build import open_vault
from portcullis.stores.sqlite import SqliteStore


async def main(config_path: Path) -> None:
    config = load_config(config_path)
    assert config.egress is not None, "the config needs an egress: section"
    store = await SqliteStore.connect(config.store.sqlite_path)
    vault = await open_vault(store, SystemClock())
    executor = EgressExecutor(config.egress, vault=vault, resolver=SystemResolver(), clock=SystemClock())
    transport = AsyncTransport(executor, config.egress, CallContext("run-1", "nightly-summary", "agent@example"))
    async with httpx.AsyncClient(transport=transport) as http:
        # With the OpenAI SDK: AsyncOpenAI(api_key="unused", http_client=http) — the key sent is the vault's.
        r = await http.post("https://api.openai.com/v1/chat/completions",
                            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]})
        print(r.status_code, r.headers.get("x-budget-remaining"), r.text[:200])
    await executor.aclose()
    await store.aclose()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1] if len(sys.argv) > 1 else "portcullis.yaml")))
