"""``portcullis signing-keys create | list | revoke`` and ``portcullis sign``, through the root app, a real
config, a real SQLite file and the real vault.

What is asserted is what an operator or a consumer sees: the output, the exit code, and whether the
printed headers verify with the gateway's own verifier.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner, Result

from portcullis.clock import SystemClock
from portcullis.errors import Unauthenticated
from portcullis.identity.signatures import SignatureRules, SignatureVerifier
from portcullis.identity.signing_keys import SigningKeyring
from portcullis.signing.message import RequestFacts
from portcullis.stores.nonces import MemoryNonceStore
from portcullis.stores.sqlite import SqliteStore
from portcullis.vault import MasterKeys, Vault, generate_master_key

runner = CliRunner()
MASTER = generate_master_key()
RULES = SignatureRules(algorithms=frozenset({"hmac-sha256", "ed25519"}), components=None, skew_s=300,
                       max_header_bytes=4096)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "portcullis.yaml"
    path.write_text(
        f'store: {{url: "sqlite:///{tmp_path / "p.db"}"}}\n'
        'upstreams: {api: {url: "http://127.0.0.1:9"}}\n'
        'routes: [{name: r, path: "/r", upstream: api, auth: {signature: {}}}]\n'
    )
    return path


def cli(*args: str, master: str | None = MASTER, stdin: str | None = None) -> Result:
    from portcullis.cli.main import app

    env = {"COLUMNS": "200", "PORTCULLIS_SECRET_KEY": master or ""}
    return runner.invoke(app, list(args), env=env, input=stdin)


def create_json(config: Path, *args: str) -> dict[str, Any]:
    result = cli("signing-keys", "create", "-c", str(config), *args, "--json")
    assert result.exit_code == 0, result.output
    created: dict[str, Any] = json.loads(result.stdout)
    return created


def verify(db: Path, method: str, url: str, printed: str, body: bytes = b"") -> str:
    """Check the printed headers the way the gateway would; the consumer, or the refusal reason."""
    headers = [(k.strip().lower().encode(), v.strip().encode()) for k, _, v in
               (line.partition(":") for line in printed.splitlines())]
    parts = urlsplit(url)
    facts = RequestFacts(method, parts.scheme, RequestFacts.normal_authority(parts.scheme, parts.netloc),
                         parts.path, parts.query or None, headers)

    async def run() -> str:
        store = await SqliteStore.connect(str(db))
        try:
            vault = Vault(store, MasterKeys.from_env({"PORTCULLIS_SECRET_KEY": MASTER}), SystemClock())
            keyring = SigningKeyring(store, vault, clock=SystemClock(), cache_ttl_s=5)
            verifier = SignatureVerifier(keyring, MemoryNonceStore(SystemClock()), clock=SystemClock())
            try:
                return (await verifier.verify(facts, body, RULES)).consumer_id
            except Unauthenticated as exc:
                return exc.reason
        finally:
            await store.aclose()

    return asyncio.run(run())


def test_an_hmac_key_s_printed_secret_signs_requests_the_gateway_accepts(config: Path, tmp_path: Path) -> None:
    created = create_json(config, "--consumer", "acme", "--scopes", "orders:write")
    assert created["algorithm"] == "hmac-sha256" and created["status"] == "active" and created["secret"]
    secret = tmp_path / "key.txt"
    secret.write_text(created["secret"] + "\n")
    url = "https://api.example.com/orders?dry_run=1"
    signed = cli("sign", "--key-id", created["key_id"], "--secret-file", str(secret), "POST", url,
                 "--data", '{"qty": 1}')
    assert signed.exit_code == 0, signed.output
    assert [line.split(":")[0] for line in signed.stdout.splitlines()] == [
        "Content-Digest", "Signature-Input", "Signature"]
    assert verify(tmp_path / "p.db", "POST", url, signed.stdout, b'{"qty": 1}') == "acme"
    assert verify(tmp_path / "p.db", "POST", url, signed.stdout, b'{"qty": 2}') == "digest_mismatch"


def test_an_ed25519_key_is_made_from_the_consumer_s_public_key(config: Path, tmp_path: Path) -> None:
    private = Ed25519PrivateKey.generate()
    (tmp_path / "pub.pem").write_bytes(private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    (tmp_path / "priv.pem").write_bytes(private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    created = create_json(config, "--consumer", "partner", "--algorithm", "ed25519", "--public-key-file",
                          str(tmp_path / "pub.pem"))
    assert created["secret"] is None and created["public_key"]
    signed = cli("sign", "--key-id", created["key_id"], "--secret-file", str(tmp_path / "priv.pem"), "GET",
                 "https://api.example.com/orders")
    assert signed.exit_code == 0, signed.output
    assert "Content-Digest" not in signed.stdout
    assert verify(tmp_path / "p.db", "GET", "https://api.example.com/orders", signed.stdout) == "partner"


def test_an_hmac_key_needs_the_vault_s_master_key(config: Path) -> None:
    result = cli("signing-keys", "create", "-c", str(config), "--consumer", "acme", master=None)
    assert result.exit_code == 2 and "PORTCULLIS_SECRET_KEY" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (("--consumer", "bad name"), "--consumer"),
    (("--consumer", "a", "--algorithm", "rsa"), "--algorithm"),
    (("--consumer", "a", "--algorithm", "ed25519"), "--public-key-file"),
    (("--consumer", "a", "--scopes", "bad scope"), "--scopes"),
])
def test_bad_input_is_refused_with_exit_2(config: Path, args: tuple[str, ...], message: str) -> None:
    result = cli("signing-keys", "create", "-c", str(config), *args)
    assert result.exit_code == 2 and message in result.output


def test_list_shows_keys_and_revoke_ends_one_for_good(config: Path, tmp_path: Path) -> None:
    first = create_json(config, "--consumer", "acme")
    second = create_json(config, "--consumer", "other")
    listed = cli("signing-keys", "list", "-c", str(config), "--json")
    assert {k["key_id"] for k in json.loads(listed.stdout)} == {first["key_id"], second["key_id"]}
    assert all("secret" not in k for k in json.loads(listed.stdout))
    revoked = cli("signing-keys", "revoke", first["key_id"], "-c", str(config))
    assert revoked.exit_code == 0 and f"Revoked {first['key_id']}" in revoked.output
    table = cli("signing-keys", "list", "-c", str(config), "--consumer", "acme")
    assert first["key_id"] in table.stdout and "revoked" in table.stdout and second["key_id"] not in table.stdout
    again = cli("signing-keys", "revoke", first["key_id"], "-c", str(config))
    assert again.exit_code == 1
    vault = cli("secrets", "list", "-c", str(config))
    assert f"signing.{first['key_id']}" not in vault.stdout and f"signing.{second['key_id']}" in vault.stdout


def test_sign_refuses_a_secret_file_that_is_neither_base64_nor_pem(tmp_path: Path) -> None:
    (tmp_path / "key.txt").write_text("not base64!")
    result = cli("sign", "--key-id", "sig_aaaaaaaaaaaa", "--secret-file", str(tmp_path / "key.txt"), "GET",
                 "https://api.example.com/")
    assert result.exit_code == 2 and "--secret-file" in result.output


def test_sign_covers_a_given_header_when_asked(tmp_path: Path) -> None:
    (tmp_path / "key.txt").write_text("c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0")
    args = ("sign", "--key-id", "sig_aaaaaaaaaaaa", "--secret-file", str(tmp_path / "key.txt"), "GET",
            "https://api.example.com/", "--component", "@method", "--component", "content-type")
    assert cli(*args).exit_code == 2  # content-type was not given
    result = cli(*args, "-H", "Content-Type: application/json")
    assert result.exit_code == 0 and '("@method" "content-type")' in result.stdout
