"""What each authentication method costs, per check on one core: the table `make bench` ends with.

Why in process and not through wrk: a signed request is single-use (its nonce is spent), so wrk
cannot replay one, and what differs between methods is the check itself, which the kept-alive
setups of ``bench.run`` already surround with the same pipeline (setup 5 is the API key, setup 6
the JWT). So each check runs here, pinned to one CPU, over inputs made beforehand (every signed
request with its own nonce), and is reported as checks per second and microseconds per check:

- ``api_key``: ``ApiKeyVerifier.verify`` on a cached key (the steady state of setup 5);
- ``signature hmac-sha256`` / ``signature ed25519``: ``SignatureVerifier.verify`` on a POST with a
  1 KiB JSON body: parse, coverage, key from the keyring's cache, the signature, the
  ``Content-Digest`` of the body and the nonce spent in the memory store;
- ``webhook t=,v1=``: ``WebhookVerifier.verify`` on a 1 KiB body (secret from the vault's cache,
  the delivery spent in the memory store);
- ``cel rule``: one three-clause authorization rule (``scopes``, a header and a path parameter).

Mutual TLS is a handshake, not a check on a request: ``bench.mtls_handshakes`` measures full
handshakes per second through a real listener, and ``bench.run`` adds its figures to the same table.

    python -m bench.auth_costs [--seconds 2] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from portcullis.clock import SystemClock
from portcullis.expressions import compile_expression, request_time
from portcullis.identity.api_keys import ApiKeyVerifier, create_key
from portcullis.identity.signatures import SignatureRules, SignatureVerifier
from portcullis.identity.signing_keys import SigningKeyring, create_signing_key
from portcullis.identity.webhook_signatures import WebhookRules, WebhookVerifier
from portcullis.signing import RequestSigner, SigningSecret, load_signing_secret, webhook_signature_header
from portcullis.signing.message import RequestFacts
from portcullis.stores.nonces import MemoryNonceStore
from portcullis.stores.sqlite import SqliteStore
from portcullis.vault import MasterKeys, Vault, generate_master_key

__all__ = ["measure"]

BODY = b'{"items": [' + b", ".join(b'{"sku": "A-%04d", "qty": 1}' % i for i in range(40)) + b"]}"
URL = "https://api.example.test/orders?dry_run=1"
RULES = SignatureRules(algorithms=frozenset({"hmac-sha256", "ed25519"}), components=None, skew_s=3600,
                       max_header_bytes=4096)


def _pin_to_one_cpu() -> bool:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})
        return True
    return False


async def _rate(check: Callable[[int], Awaitable[Any]], inputs: int, seconds: float) -> dict[str, float]:
    """Run ``check(i)`` over fresh inputs for about ``seconds``; CPU time per check, checks per second."""
    for i in range(min(200, inputs)):  # warm caches and code paths
        await check(i)
    done, started_cpu, started = 200, time.process_time(), time.perf_counter()
    while done < inputs and time.perf_counter() - started < seconds:
        await check(done)
        done += 1
    cpu = time.process_time() - started_cpu
    per = cpu / max(done - 200, 1)
    return {"checks": done - 200, "us_per_check": round(per * 1e6, 1), "per_second": round(1 / per) if per else 0}


async def _measure(seconds: float, work: Path) -> dict[str, dict[str, float]]:
    clock = SystemClock()
    store = await SqliteStore.connect(str(work / "auth.db"))
    try:
        vault = Vault(store, MasterKeys.from_env({"PORTCULLIS_SECRET_KEY": generate_master_key()}), clock)
        out: dict[str, dict[str, float]] = {}
        pepper = os.urandom(32)
        issued = await create_key(store, "bench", ["orders:write"], pepper=pepper, clock=clock)
        keys = ApiKeyVerifier(store, pepper=pepper, clock=clock, cache_ttl_s=3600)
        out["api_key (cached)"] = await _rate(lambda _: keys.verify(issued.key), 10**9, seconds)

        keyring = SigningKeyring(store, vault, clock=clock, cache_ttl_s=3600)
        hmac_key = await create_signing_key(store, vault, "bench", "hmac-sha256", clock=clock)
        private = Ed25519PrivateKey.generate()
        public = base64.b64encode(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
        ed_key = await create_signing_key(store, vault, "bench", "ed25519", clock=clock, public_key=public)
        assert hmac_key.secret is not None
        secrets = {"hmac-sha256": (hmac_key.record.key_id, load_signing_secret(hmac_key.secret)),
                   "ed25519": (ed_key.record.key_id, SigningSecret("ed25519", private_key=private))}
        for algorithm, (key_id, secret) in secrets.items():
            signer = RequestSigner(key_id, secret)
            verifier = SignatureVerifier(keyring, MemoryNonceStore(clock), clock=clock)
            count = int(seconds * 40_000)
            facts = [_facts(signer.sign("POST", URL, [("Content-Type", "application/json")], BODY))
                     for _ in range(count)]
            out[f"signature {algorithm}"] = await _rate(_signed_check(verifier, facts), count, seconds)

        await vault.set("bench-webhook", base64.b64encode(os.urandom(32)).decode())
        webhook_secret = (await vault.reveal("bench-webhook")).encode()
        webhooks = WebhookVerifier(vault, MemoryNonceStore(clock), clock=clock, cache_ttl_s=3600)
        webhook_rules = WebhookRules(route="hooks", consumer="provider", secrets=("bench-webhook",), tolerance_s=300)
        stamp = int(clock.wall())
        bodies = [BODY + b"%d" % i for i in range(int(seconds * 60_000))]
        headers = [webhook_signature_header(webhook_secret, body, stamp).encode() for body in bodies]
        out["webhook t=,v1="] = await _rate(
            lambda i: webhooks.verify([headers[i]], bodies[i], webhook_rules), len(headers), seconds)

        rule = compile_expression("'orders:write' in principal.scopes && request.headers['x-run-mode'] == 'full_run'"
                                  " && params.order_id.startsWith('ord_')")
        variables = {"request": {"method": "POST", "path": "/orders/ord_1", "host": "api", "scheme": "https",
                                 "headers": {"x-run-mode": "full_run"}, "query": {}},
                     "params": {"order_id": "ord_1"},
                     "principal": {"id": "bench", "sub": "bench", "method": "api_key", "scopes": ["orders:write"],
                                   "roles": [], "claims": {}, "key_id": "k", "issuer": ""},
                     "context": {"client_ip": "10.0.0.1", "route": "orders"}, "now": request_time(clock.wall())}

        async def cel(_: int) -> bool:
            return rule.allows(variables)

        out["cel rule (3 clauses)"] = await _rate(cel, 10**9, seconds)
        return out
    finally:
        await store.aclose()


def _signed_check(verifier: SignatureVerifier, facts: list[RequestFacts]) -> Callable[[int], Awaitable[Any]]:
    def check(i: int) -> Awaitable[Any]:
        return verifier.verify(facts[i], BODY, RULES)
    return check


def _facts(added: dict[str, str]) -> RequestFacts:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]
    headers += [(k.lower().encode(), v.encode()) for k, v in added.items()]
    return RequestFacts("POST", "https", "api.example.test", "/orders", "dry_run=1", headers)


def measure(seconds: float = 2.0) -> dict[str, Any]:
    """Every method's figures, in a process pinned to one CPU where there are several."""
    pinned = _pin_to_one_cpu()
    with tempfile.TemporaryDirectory(prefix="portcullis-auth-") as work:
        methods = asyncio.run(_measure(seconds, Path(work)))
    return {"pinned": pinned, "seconds_per_method": seconds, "methods": methods}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object (bench.run)")
    args = parser.parse_args()
    result = measure(args.seconds)
    if args.json:
        print(json.dumps(result))
        return 0
    for name, figures in result["methods"].items():
        print(f"{name:28s} {figures['per_second']:>10,} checks/s  {figures['us_per_check']:>8.1f} us each")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
