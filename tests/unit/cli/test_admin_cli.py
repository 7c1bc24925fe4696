"""``portcullis admin bootstrap`` and the checks that keep admin credentials off the network in clear text."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from portcullis.clock import SystemClock
from portcullis.config.loader import load_config_text
from portcullis.errors import ConfigError, Unauthenticated
from portcullis.identity.admin_tokens import verify_admin_token
from portcullis.stores.sqlite import SqliteStore

PEPPER = "cli-pepper-" + "p" * 29
runner = CliRunner()


def write_config(tmp_path: Path, extra: str = f'keys: {{pepper: "{PEPPER}"}}') -> Path:
    path = tmp_path / "portcullis.yaml"
    path.write_text(
        f"{extra}\n"
        f'store: {{url: "sqlite:///{tmp_path / "p.db"}"}}\n'
        'upstreams: {api: {url: "http://127.0.0.1:9"}}\n'
        'routes: [{name: r, path: "/r", upstream: api, auth: none}]\n'
    )
    return path


def cli(*args: str) -> Result:
    from portcullis.cli.main import app

    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


async def _check(db: Path, token: str) -> str:
    store = await SqliteStore.connect(str(db))
    try:
        return (await verify_admin_token(store, token, pepper=PEPPER.encode(), clock=SystemClock())).role
    finally:
        await store.aclose()


def test_bootstrap_prints_a_working_token_once_and_records_itself(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = cli("admin", "bootstrap", "--role", "admin", "--name", "alice", "--config", str(config), "--json")
    assert result.exit_code == 0, result.output
    made = json.loads(result.output)
    assert made["token"].startswith("pca_") and made["role"] == "admin"
    assert asyncio.run(_check(tmp_path / "p.db", made["token"])) == "admin"
    with sqlite3.connect(tmp_path / "p.db") as db:
        stored = db.execute("SELECT secret_hash FROM admin_tokens").fetchone()[0]
        [record] = [json.loads(r[0]) for r in db.execute("SELECT record FROM audit")]
    assert made["token"].rsplit("_", 1)[1] not in stored  # only the hash is kept
    assert record["class"] == "security" and record["event"]["action"] == "token.bootstrap"
    assert record["event"]["actor"].startswith("cli:") and record["event"]["granted_role"] == "admin"
    assert made["token"] not in json.dumps(record)


def test_a_bootstrap_token_of_another_pepper_does_not_verify(tmp_path: Path) -> None:
    config = write_config(tmp_path, 'admin: {token_pepper: "' + "q" * 40 + '"}')
    made = json.loads(cli("admin", "bootstrap", "--config", str(config), "--json").output)
    assert made["role"] == "security"  # the default: the widest operator role
    with pytest.raises(Unauthenticated):
        asyncio.run(_check(tmp_path / "p.db", made["token"]))  # checked with keys' pepper: refused


@pytest.mark.parametrize(("extra", "message"), [
    ("", "admin tokens need"),
    (f'keys: {{pepper: "{PEPPER}"}}\nadmin: {{roles: {{ops: [status.read]}}}}', "no role named 'nope'"),
])
def test_bootstrap_refuses_without_a_pepper_or_with_an_unknown_role(tmp_path: Path, extra: str, message: str) -> None:
    result = cli("admin", "bootstrap", "--role", "nope" if "roles" in extra else "admin",
                 "--config", str(write_config(tmp_path, extra)))
    assert result.exit_code == 2 and message in result.output


BASE = 'upstreams: {api: {url: "http://127.0.0.1:9"}}\nroutes: [{name: r, path: "/r", upstream: api, auth: none}]\n'


@pytest.mark.parametrize("admin", ["{host: 0.0.0.0}", "{host: 10.0.0.5}", "{host: '::'}"])
def test_a_network_facing_admin_listener_without_tls_is_refused(admin: str) -> None:
    with pytest.raises(ConfigError, match=r"needs `admin\.tls`"):
        load_config_text(f"admin: {admin}\n" + BASE)


@pytest.mark.parametrize("admin", [
    "{host: 127.0.0.1}", "{host: '::1'}", "{host: 0.0.0.0, allow_plaintext_admin: true}",
    "{host: 0.0.0.0, tls: {cert_file: c.pem, key_file: k.pem}}", "{host: 0.0.0.0, enabled: false}",
])
def test_loopback_tls_or_an_explicit_waiver_is_accepted(admin: str) -> None:
    load_config_text(f"admin: {admin}\n" + BASE)


@pytest.mark.parametrize(("roles", "message"), [
    ("{admin: [status.read]}", "built in"),
    ("{ops: [keys.write, root]}", "root"),
])
def test_custom_roles_cannot_redefine_built_ins_or_name_unknown_permissions(roles: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config_text(f"admin: {{roles: {roles}}}\n" + BASE)


def test_check_warns_when_nobody_could_authenticate_to_the_admin_api(tmp_path: Path) -> None:
    result = cli("check", str(write_config(tmp_path, "")))
    assert result.exit_code == 0 and "every admin API call gets 401" in result.output
