"""Signing keys through the admin API, end to end: what an operator makes there signs requests the
gateway accepts; a rotation overlaps; a revocation refuses at once; a developer sees only their own.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tests.conftest import Gateway, GatewayFactory, UpstreamServer, gateway_yaml
from tests.signing_fixtures import ROUTES, SigningKey, hmac_key, send, signature_env, signed_headers
from typer.testing import CliRunner

from portcullis.cli.main import app as cli
from portcullis.signing import SigningSecret, load_signing_secret


async def _gateway(make_gateway: GatewayFactory, upstream: UpstreamServer, *, vault: bool = True) -> Gateway:
    return await make_gateway(gateway_yaml(upstream.url, ROUTES), env=signature_env() if vault else {})


async def _accepted(gw: Gateway, key: SigningKey) -> int:
    return (await send(gw, "GET", "/orders", signed_headers(gw, key.signer(gw), "GET", "/orders"))).status_code


async def test_an_hmac_key_made_through_the_admin_api_signs_requests_until_revoked(
    make_gateway: GatewayFactory, upstream: UpstreamServer,
) -> None:
    gw = await _gateway(make_gateway, upstream)
    async with await gw.admin("admin") as admin:
        made = await admin.post("/signing-keys", json={"consumer": "alice", "scopes": ["orders:read"]})
        assert made.status_code == 201, made.text
        body = made.json()
        key = SigningKey(body["key_id"], load_signing_secret(body["secret"]))
        assert await _accepted(gw, key) == 200
        read = await admin.get(f"/signing-keys/{key.key_id}")
        assert read.status_code == 200 and read.json()["state"] == "active" and "secret" not in read.json()
        revoked = await admin.post(f"/signing-keys/{key.key_id}/revoke")
        assert revoked.json() == {"key_id": key.key_id, "status": "revoked", "broadcast": False}
        assert await _accepted(gw, key) == 401  # the very next request
        assert (await admin.post(f"/signing-keys/{key.key_id}/revoke")).status_code == 404
    trail = await gw.audit_records()
    assert body["secret"] not in str(trail)
    actions = [(e["event"]["action"], e["event"]["outcome"]) for e in trail if e["class"] == "security"]
    assert actions == [("signing_key.create", "ok"), ("signing_key.revoke", "ok"), ("signing_key.revoke", "refused")]


async def test_a_rotation_through_the_admin_api_keeps_the_old_key_for_the_overlap(
    make_gateway: GatewayFactory, upstream: UpstreamServer,
) -> None:
    gw = await _gateway(make_gateway, upstream)
    async with await gw.admin("security") as admin:
        made = (await admin.post("/signing-keys", json={"consumer": "alice"})).json()
        old = SigningKey(made["key_id"], load_signing_secret(made["secret"]))
        assert await _accepted(gw, old) == 200  # cached before the rotation: the rotation must drop it
        rotated = await admin.post(f"/signing-keys/{old.key_id}/rotate", json={"overlap_s": 600})
        assert rotated.status_code == 200, rotated.text
        new = SigningKey(rotated.json()["key_id"], load_signing_secret(rotated.json()["secret"]))
        assert rotated.json()["consumer"] == "alice" and new.key_id != old.key_id
        assert (await _accepted(gw, old), await _accepted(gw, new)) == (200, 200)
        gw.clock.advance(600)
        assert (await _accepted(gw, old), await _accepted(gw, new)) == (401, 200)
        listed = (await admin.get("/signing-keys", params={"consumer": "alice"})).json()
        assert [(k["key_id"], k["state"]) for k in listed] == sorted(
            [(old.key_id, "expired"), (new.key_id, "active")])


async def test_an_ed25519_key_is_made_from_a_public_key_and_its_rotation_needs_the_new_one(
    make_gateway: GatewayFactory, upstream: UpstreamServer,
) -> None:
    gw = await _gateway(make_gateway, upstream, vault=False)  # no master key: Ed25519 keys need none
    private = Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    async with await gw.admin("admin") as admin:
        made = await admin.post("/signing-keys", json={"consumer": "partner", "algorithm": "ed25519",
                                                       "public_key": base64.b64encode(raw).decode()})
        assert made.status_code == 201 and made.json()["secret"] is None
        key = SigningKey(made.json()["key_id"], SigningSecret("ed25519", private_key=private))
        assert await _accepted(gw, key) == 200
        no_key = await admin.post(f"/signing-keys/{key.key_id}/rotate", json={})
        assert no_key.status_code == 409
        hmac = await admin.post("/signing-keys", json={"consumer": "partner"})
        assert hmac.status_code == 409 and "PORTCULLIS_SECRET_KEY" in hmac.json()["detail"]
        bad = await admin.post("/signing-keys", json={"consumer": "p", "algorithm": "ed25519", "public_key": "AAAA"})
        assert bad.status_code == 409


async def test_a_developer_reads_only_their_own_consumers_signing_keys(
    make_gateway: GatewayFactory, upstream: UpstreamServer,
) -> None:
    gw = await _gateway(make_gateway, upstream)
    async with await gw.admin("admin") as admin:
        mine = (await admin.post("/signing-keys", json={"consumer": "acme"})).json()["key_id"]
        theirs = (await admin.post("/signing-keys", json={"consumer": "other"})).json()["key_id"]
    async with await gw.admin("developer", consumers=("acme",)) as dev:
        assert [k["key_id"] for k in (await dev.get("/signing-keys", params={"consumer": "acme"})).json()] == [mine]
        assert (await dev.get("/signing-keys")).status_code == 403
        assert (await dev.get("/signing-keys", params={"consumer": "other"})).status_code == 403
        assert (await dev.get(f"/signing-keys/{mine}")).status_code == 200
        assert (await dev.get(f"/signing-keys/{theirs}")).status_code == 404
        assert (await dev.post("/signing-keys", json={"consumer": "acme"})).status_code == 403


@pytest.mark.multi_instance
async def test_a_signing_key_revoked_on_one_gateway_is_refused_by_the_other_within_a_second(
    make_gateway: GatewayFactory, upstream: UpstreamServer, redis_space: tuple[Any, str],
) -> None:
    text = gateway_yaml(upstream.url, f"""
shared_state: {{url: "redis://127.0.0.1:6379/0", key_prefix: "{redis_space[1]}", instances: 2}}
signing_keys: {{cache_ttl: 1h}}
""" + ROUTES)
    env = signature_env()
    first = await make_gateway(text, env=env)
    second = await make_gateway(text, env=env)
    for gw in (first, second):
        assert gw.services.shared is not None
        await asyncio.wait_for(gw.services.shared.events.connected.wait(), 5)
    key = await hmac_key(first, "alice")
    assert await _accepted(second, key) == 200  # now cached there, for an hour
    async with await first.admin() as api:
        answer = await api.post(f"/signing-keys/{key.key_id}/revoke")
    assert answer.json() == {"key_id": key.key_id, "status": "revoked", "broadcast": True}
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(1.0):
        while await _accepted(second, key) != 401:
            await asyncio.sleep(0.01)
    assert loop.time() - started < 1.0


async def test_portcullis_signing_keys_rotate_goes_through_the_admin_api_and_shows_the_new_secret_once(
    make_gateway: GatewayFactory, upstream: UpstreamServer,
) -> None:
    gw = await _gateway(make_gateway, upstream)
    async with await gw.admin("admin") as admin:
        made = (await admin.post("/signing-keys", json={"consumer": "alice"})).json()
    old = SigningKey(made["key_id"], load_signing_secret(made["secret"]))
    async with gw.admin_listener() as url:
        def rotate(token: str, *extra: str) -> Any:
            return CliRunner().invoke(cli, ["signing-keys", "rotate", old.key_id, "--admin", url, *extra],
                                      env={"COLUMNS": "200", "PORTCULLIS_ADMIN_TOKEN": token})
        denied = await asyncio.to_thread(rotate, await gw.admin_token("developer"))
        done = await asyncio.to_thread(rotate, await gw.admin_token("admin"), "--overlap", "10m", "--json")
    assert denied.exit_code == 3
    assert done.exit_code == 0, done.output
    rotated = json.loads(done.stdout)
    new = SigningKey(rotated["key_id"], load_signing_secret(rotated["secret"]))
    assert (await _accepted(gw, old), await _accepted(gw, new)) == (200, 200)
    gw.clock.advance(600)
    assert (await _accepted(gw, old), await _accepted(gw, new)) == (401, 200)
