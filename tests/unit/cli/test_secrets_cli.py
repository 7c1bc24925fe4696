"""``portcullis secrets …`` and the vault check of ``portcullis serve``, through the root app.

Asserted is what an operator sees, and what no one may see: a secret value is never in any output.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from portcullis.cli.main import app
from portcullis.clock import SystemClock
from portcullis.config.loader import load_config
from portcullis.config.model import StoreConfig
from portcullis.gateway.build import open_vault
from portcullis.stores.opening import open_store
from portcullis.vault import generate_master_key

VALUE = "sk_live_" + "Z9y8X7w6" * 4
runner = CliRunner()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "portcullis.yaml"
    path.write_text(
        f'store: {{url: "sqlite:///{tmp_path / "p.db"}"}}\n'
        'upstreams: {api: {url: "http://127.0.0.1:9"}}\n'
        'routes: [{name: r, path: "/r", upstream: api, auth: none}]\n'
    )
    return path


def secrets(config: Path, *args: str, key: str | None, stdin: str | None = None) -> Result:
    env = {"COLUMNS": "200", "PORTCULLIS_SECRET_KEY": key or ""}
    return runner.invoke(app, ["secrets", *args, "--config", str(config)], input=stdin, env=env)


def test_set_list_delete_never_show_the_value(config: Path) -> None:
    key = generate_master_key()
    stored = secrets(config, "set", "stripe_key", key=key, stdin=VALUE + "\n")
    assert stored.exit_code == 0, stored.output
    assert "Stored stripe_key (fp_" in stored.output
    listed = secrets(config, "list", "--json", key=None)  # listing needs no key
    assert listed.exit_code == 0
    [entry] = json.loads(listed.output)
    assert entry["name"] == "stripe_key" and entry["fingerprint"].startswith("fp_")
    table = secrets(config, "list", key=key)
    assert "stripe_key" in table.output
    deleted = secrets(config, "delete", "stripe_key", key=None)
    assert deleted.exit_code == 0
    assert secrets(config, "delete", "stripe_key", key=None).exit_code == 1
    for r in (stored, listed, table, deleted):
        assert VALUE not in r.output


def test_the_value_is_never_taken_from_the_command_line(config: Path) -> None:
    r = secrets(config, "set", "stripe_key", VALUE, key=generate_master_key(), stdin="x\n")
    assert r.exit_code == 2 and VALUE not in r.output
    assert "never taken from the command line" in r.output
    assert json.loads(secrets(config, "list", "--json", key=None).output) == []


def test_setting_without_a_master_key_is_refused_clearly(config: Path) -> None:
    r = secrets(config, "set", "stripe_key", key=None, stdin=VALUE)
    assert r.exit_code == 2 and "PORTCULLIS_SECRET_KEY is not set" in r.output


def test_rotation_moves_every_secret_to_the_new_key(config: Path) -> None:
    old, new = generate_master_key(), generate_master_key()
    assert secrets(config, "set", "a", key=old, stdin="alpha").exit_code == 0
    assert secrets(config, "set", "b", key=old, stdin="beta").exit_code == 0
    rotated = secrets(config, "rotate-master", key=f"{new},{old}")
    assert rotated.exit_code == 0 and "Re-encrypted 2 secret(s)" in rotated.output
    assert "cannot be decrypted" in serve_check(config, old).output  # the old key alone no longer opens it
    # the new key alone does: setting another secret re-reads the store under it
    assert secrets(config, "set", "c", key=new, stdin="gamma").exit_code == 0


def stored_rows(config: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(config.parent / "p.db") as db:
        return db.execute("SELECT * FROM secrets ORDER BY name").fetchall()


def test_set_with_a_master_key_that_cannot_decrypt_the_vault_is_refused_and_writes_nothing(config: Path) -> None:
    key = generate_master_key()
    assert secrets(config, "set", "github_token", key=key, stdin=VALUE).exit_code == 0
    before = stored_rows(config)
    for name in ("stripe_key", "github_token"):  # a new secret, or replacing the existing one
        refused = secrets(config, "set", name, key=generate_master_key(), stdin="sk_other\n")
        assert refused.exit_code == 1
        assert refused.output == (
            "PORTCULLIS_SECRET_KEY cannot decrypt secret 'github_token' already in the vault, so nothing was "
            "written; use the key the vault was stored with (new,old during a rotation)\n"
        )
    assert stored_rows(config) == before
    revealed = asyncio.run(unlocked_vault(load_config(config).store, key))  # the gateway still opens it
    assert revealed == [("github_token", VALUE)]


async def unlocked_vault(store_cfg: StoreConfig, key: str) -> list[tuple[str, str]]:
    """What a starting gateway does: open the store, unlock the vault, reveal each secret."""
    store = await open_store(store_cfg)
    try:
        vault = await open_vault(store, SystemClock(), {"PORTCULLIS_SECRET_KEY": key})
        return [(info.name, await vault.reveal(info.name)) for info in await vault.list()]
    finally:
        await store.aclose()


def serve_check(config: Path, key: str | None) -> Result:
    """``serve`` checks the vault before it binds anything: a locked vault exits 2 with the reason.
    Only called with keys that fail (a good key would go on to serve)."""
    return runner.invoke(app, ["serve", str(config)], env={"PORTCULLIS_SECRET_KEY": key or "", "COLUMNS": "200"})


def test_serve_refuses_to_start_when_secrets_exist_and_the_key_is_missing_or_wrong(config: Path) -> None:
    key = generate_master_key()
    assert secrets(config, "set", "github_token", key=key, stdin=VALUE).exit_code == 0
    missing = serve_check(config, None)
    assert missing.exit_code == 2 and "vault locked" in missing.output and "is not set" in missing.output
    wrong = serve_check(config, generate_master_key())
    assert wrong.exit_code == 2 and "cannot be decrypted" in wrong.output
    assert VALUE not in missing.output + wrong.output


def test_generate_key_prints_a_usable_key(config: Path) -> None:
    r = runner.invoke(app, ["secrets", "generate-key"])
    assert r.exit_code == 0
    assert secrets(config, "set", "x", key=r.output.strip(), stdin="v").exit_code == 0
