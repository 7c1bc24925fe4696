"""The CLI as the admin API's client: a real admin listener on a loopback socket, real commands.

What an operator sees is asserted: exit codes (0 done, 1 refused, 3 not authenticated or not
permitted, 4 unreachable), ids printed whole at 80 columns, and keys that work or stop working.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.conftest import GatewayFactory, UpstreamServer, gateway_yaml
from typer.testing import CliRunner

from portcullis.cli.main import app as cli

ROUTES = """
routes:
  - {name: orders, path: "/orders/{order_id}", upstream: api}
"""


async def run(admin: str, token: str | None, *args: str) -> Any:
    env = {"COLUMNS": "80", "PORTCULLIS_ADMIN_URL": admin, "PORTCULLIS_ADMIN_TOKEN": token or "",
           "PORTCULLIS_ADMIN_TOKEN_FILE": "/nonexistent"}
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args), env=env)


async def test_tokens_and_status_through_the_api_with_exit_codes_an_operator_can_script(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    token = await gw.admin_token("admin")
    async with gw.admin_listener() as admin:
        assert (await run(admin, None, "status")).exit_code == 3  # no token: 401
        status = await run(admin, token, "status", "--json")
        assert status.exit_code == 0 and json.loads(status.output)["ready"] is True
        made = await run(admin, token, "admin", "tokens", "create", "--role", "developer", "--name", "ci",
                         "--consumers", "acme", "--json")
        assert made.exit_code == 0, made.output
        ci = json.loads(made.output)
        assert (await run(admin, token, "admin", "tokens", "create", "--role", "security", "--name", "x")).exit_code == 3
        listed = await run(admin, token, "admin", "tokens", "list")
        assert listed.exit_code == 0 and ci["token_id"] in listed.output  # whole, at 80 columns
        assert (await run(admin, ci["token"], "admin", "tokens", "list")).exit_code == 3  # a developer may not
        assert (await run(admin, token, "admin", "tokens", "revoke", ci["token_id"])).exit_code == 0
        assert (await run(admin, token, "admin", "tokens", "revoke", ci["token_id"])).exit_code == 1  # gone
        assert (await run(admin, ci["token"], "status")).exit_code == 3
    assert (await run(admin, token, "status")).exit_code == 4  # the listener is gone


async def test_keys_rotate_disable_and_enable_through_the_api(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    token = await gw.admin_token("admin")
    old = await gw.key("alice")
    key_id = old.split("_")[1]
    async with gw.admin_listener() as admin:
        rotated = await run(admin, token, "keys", "rotate", key_id, "--grace", "10m", "--json")
        assert rotated.exit_code == 0, rotated.output
        new = json.loads(rotated.output)["key"]
        for key in (old, new):
            assert (await gw.client.get("/orders/1", headers={"X-API-Key": key})).status_code == 200
        disabled = await run(admin, token, "keys", "disable", key_id)
        assert disabled.exit_code == 0 and f"{key_id}: disabled." in disabled.output
        assert (await gw.client.get("/orders/1", headers={"X-API-Key": new})).status_code == 401
        assert (await run(admin, token, "keys", "enable", key_id)).exit_code == 0
        assert (await gw.client.get("/orders/1", headers={"X-API-Key": new})).status_code == 200
        assert (await run(admin, token, "keys", "disable", "nosuchkey000")).exit_code == 1
    gw.clock.advance(601)
    assert (await gw.client.get("/orders/1", headers={"X-API-Key": old})).status_code == 401
