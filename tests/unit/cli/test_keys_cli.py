"""``portcullis keys create | list | revoke`` through the root app, a real config and a real SQLite file.

What is asserted is what an operator sees: the output, the exit code, and whether the key works.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from portcullis.errors import Unauthenticated
from portcullis.identity.api_keys import ApiKeyVerifier, issue_key
from portcullis.stores.sqlite import SqliteStore
from portcullis.testing import ManualClock

PEPPER = "cli-pepper-" + "p" * 29
assert len(PEPPER) == 40
runner = CliRunner()


def write_config(tmp_path: Path, *, keys: str = f'keys: {{pepper: "{PEPPER}"}}', name: str = "portcullis.yaml") -> Path:
    path = tmp_path / name
    path.write_text(
        f"{keys}\n"
        f'store: {{url: "sqlite:///{tmp_path / "p.db"}"}}\n'
        'upstreams: {api: {url: "http://127.0.0.1:9"}}\n'
        'routes: [{name: r, path: "/r", upstream: api}]\n'
    )
    return path


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path)


def keys(*args: str, env: dict[str, str] | None = None) -> Result:
    from portcullis.cli.main import app

    return runner.invoke(app, ["keys", *args], env={"COLUMNS": "200", **(env or {})})


def create_json(config: Path, *args: str) -> dict[str, Any]:
    result = keys("create", "-c", str(config), *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def verify(db: Path, key: str) -> str:
    """Check a printed key the way the gateway would; the consumer, or the refusal reason."""
    async def run() -> str:
        store = await SqliteStore.connect(str(db))
        try:
            verifier = ApiKeyVerifier(store, pepper=PEPPER.encode(), clock=ManualClock(wall=2e9), cache_ttl_s=5)
            try:
                return (await verifier.verify(key)).consumer_id
            except Unauthenticated as exc:
                return exc.reason
        finally:
            await store.aclose()

    return asyncio.run(run())


def seed(db: Path, **fields: Any) -> str:
    """Put a key with chosen fields straight into the store (e.g. already expired)."""
    issued = issue_key("seeded", ("a",), pepper=PEPPER.encode(), clock=ManualClock())
    record = issued.record
    values = {"key_id": record.key_id, "consumer_id": record.consumer_id, "secret_hash": record.secret_hash,
              "scopes": record.scopes, "created_at": record.created_at, **fields}

    async def run() -> None:
        from portcullis.stores.base import ApiKeyRecord

        store = await SqliteStore.connect(str(db))
        try:
            await store.create(ApiKeyRecord(**values))
        finally:
            await store.aclose()

    asyncio.run(run())
    return record.key_id


# --- create ---------------------------------------------------------------------------------

def test_create_json_prints_a_key_that_the_gateway_accepts(config: Path, tmp_path: Path) -> None:
    created = create_json(config, "--consumer", "acme", "--scopes", "orders:read, orders:write")
    assert set(created) == {"key", "key_id", "consumer", "scopes", "roles", "expires_at"}
    assert re.fullmatch(rf"pcl_{created['key_id']}_[A-Za-z0-9_\-]{{43}}", created["key"])
    assert created["consumer"] == "acme"
    assert created["scopes"] == ["orders:read", "orders:write"]
    assert created["expires_at"] is None
    assert verify(tmp_path / "p.db", created["key"]) == "acme"


def test_create_shows_the_key_once_with_a_warning(config: Path) -> None:
    result = keys("create", "--config", str(config), "--consumer", "acme", "--scopes", "a,b")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    key_lines = [line for line in lines if line.startswith("pcl_")]
    assert len(key_lines) == 1 and len(key_lines[0]) == 60  # whole, on its own line
    assert "shown once" in result.stdout
    listed = keys("list", "-c", str(config))
    assert key_lines[0] not in listed.stdout
    assert key_lines[0].split("_", 2)[2] not in listed.stdout


def test_create_with_expiry_sets_it(config: Path) -> None:
    created = create_json(config, "--consumer", "acme", "--expires", "30d")
    listed = json.loads(keys("list", "-c", str(config), "--json").stdout)
    assert created["expires_at"] == listed[0]["expires_at"]
    assert abs(listed[0]["expires_at"] - listed[0]["created_at"] - 30 * 86400) < 1e-3


def test_the_config_comes_from_the_environment(config: Path) -> None:
    result = keys("create", "--consumer", "acme", "--json", env={"PORTCULLIS_CONFIG": str(config)})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["consumer"] == "acme"


@pytest.mark.parametrize(("args", "message"), [
    (["--consumer", "bad name!"], "--consumer"),
    (["--consumer", ""], "--consumer"),
    (["--consumer", "x" * 65], "--consumer"),
    (["--consumer", "a:b"], "--consumer"),
    (["--consumer", "acme", "--scopes", "a b"], "--scopes"),
    (["--consumer", "acme", "--scopes", "a,<script>"], "--scopes"),
    (["--consumer", "acme", "--scopes", "s" * 65], "--scopes"),
    (["--consumer", "acme", "--expires", "soon"], "--expires"),
    (["--consumer", "acme", "--expires", "0s"], "--expires"),
    (["--consumer", "acme", "--expires", "-5m"], "--expires"),
], ids=["space-and-bang", "empty", "too-long", "colon", "scope-space", "scope-markup", "scope-too-long",
        "expiry-word", "expiry-zero", "expiry-negative"])
def test_bad_input_is_refused_with_exit_2_and_nothing_stored(
    config: Path, args: list[str], message: str
) -> None:
    result = keys("create", "-c", str(config), *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert "pcl_" not in result.output


def test_consumer_names_may_use_the_documented_characters(config: Path) -> None:
    created = create_json(config, "--consumer", "Team_A.svc@example-1", "--scopes", "orders:read,admin.all")
    assert created["consumer"] == "Team_A.svc@example-1"


def test_create_with_roles_gives_the_key_roles_that_authorization_reads(config: Path, tmp_path: Path) -> None:
    created = create_json(config, "--consumer", "helpdesk", "--roles", "support, billing")
    assert created["roles"] == ["billing", "support"]
    listed = json.loads(keys("list", "-c", str(config), "--json").stdout)
    assert [k["roles"] for k in listed] == [["billing", "support"]]

    async def roles() -> frozenset[str]:
        store = await SqliteStore.connect(str(tmp_path / "p.db"))
        try:
            verifier = ApiKeyVerifier(store, pepper=PEPPER.encode(), clock=ManualClock(wall=2e9), cache_ttl_s=5)
            return (await verifier.verify(created["key"])).roles
        finally:
            await store.aclose()

    assert asyncio.run(roles()) == {"billing", "support"}
    bad = keys("create", "-c", str(config), "--consumer", "x", "--roles", "not a role")
    assert bad.exit_code == 2 and "--roles" in bad.stderr


# --- list -----------------------------------------------------------------------------------

def test_list_shows_every_column_and_never_a_hash(config: Path, tmp_path: Path) -> None:
    created = create_json(config, "--consumer", "acme", "--scopes", "orders:read")
    result = keys("list", "-c", str(config))
    assert result.exit_code == 0, result.output
    for heading in ("key id", "consumer", "scopes", "roles", "created", "expires", "status", "last used"):
        assert heading in result.stdout
    assert created["key_id"] in result.stdout
    assert "orders:read" in result.stdout and "active" in result.stdout

    def stored_hash() -> str:
        db = sqlite3.connect(tmp_path / "p.db")
        try:
            return str(db.execute("SELECT secret_hash FROM api_keys").fetchone()[0])
        finally:
            db.close()

    digest = stored_hash()
    assert digest not in result.stdout
    assert digest not in keys("list", "-c", str(config), "--json").stdout


def test_list_reports_active_expired_and_revoked(config: Path, tmp_path: Path) -> None:
    active = create_json(config, "--consumer", "acme")["key_id"]
    expired = seed(tmp_path / "p.db", expires_at=1000.0)
    revoked = create_json(config, "--consumer", "acme")["key_id"]
    assert keys("revoke", revoked, "-c", str(config)).exit_code == 0
    listed = {r["key_id"]: r["status"] for r in json.loads(keys("list", "-c", str(config), "--json").stdout)}
    assert listed == {active: "active", expired: "expired", revoked: "revoked"}
    table = keys("list", "-c", str(config)).stdout
    assert "expired" in table and "revoked" in table


def test_list_shows_last_use_once_flushed(config: Path, tmp_path: Path) -> None:
    seeded = seed(tmp_path / "p.db", last_used_at=1_700_000_000.0)
    listed = json.loads(keys("list", "-c", str(config), "--json").stdout)
    assert listed[0]["key_id"] == seeded and listed[0]["last_used_at"] == 1_700_000_000.0
    assert "2023-11-14 22:13:20Z" in keys("list", "-c", str(config)).stdout


def test_list_filters_by_consumer(config: Path) -> None:
    mine = create_json(config, "--consumer", "acme")["key_id"]
    theirs = create_json(config, "--consumer", "other")["key_id"]
    result = keys("list", "-c", str(config), "--consumer", "acme")
    assert mine in result.stdout and theirs not in result.stdout
    assert [r["key_id"] for r in json.loads(keys("list", "-c", str(config), "--json").stdout)] == [mine, theirs]


def test_list_of_an_empty_store_says_so(config: Path) -> None:
    result = keys("list", "-c", str(config))
    assert result.exit_code == 0
    assert "0 API keys" in result.stdout
    assert json.loads(keys("list", "-c", str(config), "--json").stdout) == []


# --- revoke ---------------------------------------------------------------------------------

def test_a_revoked_key_stops_working(config: Path, tmp_path: Path) -> None:
    created = create_json(config, "--consumer", "acme")
    result = keys("revoke", created["key_id"], "-c", str(config))
    assert result.exit_code == 0, result.output
    assert f"Revoked {created['key_id']}" in result.stdout
    assert verify(tmp_path / "p.db", created["key"]) == "disabled"


def test_revoking_an_unknown_key_exits_1(config: Path) -> None:
    result = keys("revoke", "nosuchkey000", "-c", str(config))
    assert result.exit_code == 1
    assert "no key with id 'nosuchkey000'" in result.stderr


# --- config and store problems --------------------------------------------------------------

def test_a_config_without_keys_is_refused_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "nokeys.yaml"
    path.write_text("upstreams: {api: {url: 'http://127.0.0.1:9'}}\n"
                    "routes: [{name: r, path: /r, upstream: api, auth: none}]\n")
    for args in (["list"], ["revoke", "abcdefgh1234"], ["create", "--consumer", "acme"]):
        result = keys(*args, "-c", str(path))
        assert result.exit_code == 2, args
        assert "keys.pepper" in result.stderr


def test_a_missing_config_file_is_exit_2_without_a_traceback(tmp_path: Path) -> None:
    result = keys("list", "-c", str(tmp_path / "absent.yaml"))
    assert result.exit_code == 2
    assert "cannot read config file" in result.stderr
    assert "Traceback" not in result.output


def test_an_invalid_config_names_the_field_but_not_the_secret(tmp_path: Path) -> None:
    path = write_config(tmp_path, keys='keys: {pepper: "too-short-s3cr3t"}')
    result = keys("list", "-c", str(path))
    assert result.exit_code == 2
    assert "keys.pepper" in result.stderr
    assert "too-short-s3cr3t" not in result.output


def test_an_unreachable_store_is_exit_1(tmp_path: Path) -> None:
    path = tmp_path / "bad-store.yaml"
    path.write_text(f'keys: {{pepper: "{PEPPER}"}}\n'
                    f'store: {{url: "sqlite:///{tmp_path / "missing-dir" / "p.db"}"}}\n'
                    'upstreams: {api: {url: "http://127.0.0.1:9"}}\n'
                    'routes: [{name: r, path: "/r", upstream: api}]\n')
    result = keys("list", "-c", str(path))
    assert result.exit_code == 1
    assert "store unavailable" in result.stderr
    assert "Traceback" not in result.output


def test_the_list_keeps_every_key_id_whole_at_80_columns_and_when_piped(config: Path) -> None:
    from portcullis.cli.main import app

    ids = [create_json(config, "--consumer", "a-very-long-consumer-name-for-a-narrow-terminal",
                       "--scopes", "orders:read,orders:write,profile:read,billing:admin")["key_id"] for _ in range(3)]
    listed = runner.invoke(app, ["keys", "list", "--config", str(config)], env={"COLUMNS": "80"})
    assert listed.exit_code == 0
    assert all(key_id in listed.output for key_id in ids)  # one line each, copyable into the next command
    assert max(len(line) for line in listed.output.splitlines()) <= 80
