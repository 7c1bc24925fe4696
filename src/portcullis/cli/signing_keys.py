"""``portcullis signing-keys create | list | rotate | revoke``: consumers' request-signing keys (RFC 9421).

Like ``portcullis keys``, these write the configured store directly (first set-up works without a
running gateway) and record their own security event. An HMAC key's secret is drawn here, printed
once (base64: what ``portcullis sign --secret-file`` and ``portcullis.signing.load_signing_secret``
read) and kept in the vault, so ``create --algorithm hmac-sha256`` needs ``PORTCULLIS_SECRET_KEY``
in the environment. An Ed25519 key is made from the consumer's public key (``--public-key-file``,
PEM or base64); the private key never comes near the gateway. ``rotate`` goes through the running
gateway's admin API (``POST /signing-keys/{id}/rotate``, a token as for ``portcullis keys rotate``),
which drops every instance's cache and keeps the former key verifying for ``--overlap``.

A revocation here is heard by running gateways over Redis when ``shared_state`` is configured,
else within ``signing_keys.cache_ttl``. Exit codes: 0 done, 1 failed (no such key, store or vault
unavailable), 2 bad input or config.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from portcullis.cli.admin_client import DEFAULT_ADMIN, AdminOption, admin_result
from portcullis.cli.common import (
    ConfigOption,
    JsonOption,
    duration_option,
    fail,
    load_or_fail,
    record_cli_event,
    show_once,
    tell_revoked,
    when,
)
from portcullis.cli.common import with_store as run_with_store
from portcullis.cli.tables import plain_table
from portcullis.clock import SystemClock
from portcullis.errors import VaultError, VaultLocked
from portcullis.identity.api_keys import CONSUMER_PATTERN, SCOPE_PATTERN
from portcullis.identity.signing_keys import IssuedSigningKey, SigningKeyring, create_signing_key
from portcullis.signing import Algorithm
from portcullis.stores.base import SigningKeyRecord, Store
from portcullis.vault import MasterKeys, Vault

__all__ = ["app"]

app = typer.Typer(help="Create, list and revoke request-signing keys (RFC 9421).", no_args_is_help=True)

_CONSUMER = re.compile(CONSUMER_PATTERN)
_SCOPE = re.compile(SCOPE_PATTERN)


def _vault(store: Store, *, needs_key: bool) -> Vault:
    keys = None
    try:
        keys = MasterKeys.from_env()
    except VaultLocked as exc:
        if needs_key:
            raise fail(f"{exc} (HMAC signing secrets are kept in the vault)") from None
    return Vault(store, keys, SystemClock())


def _view(record: SigningKeyRecord, now: float) -> dict[str, object]:
    return {"key_id": record.key_id, "consumer": record.consumer_id, "algorithm": record.algorithm,
            "scopes": sorted(record.scopes), "created_at": record.created_at, "not_before": record.not_before,
            "expires_at": record.expires_at, "status": record.state(now), "public_key": record.public_key}


@app.command()
def create(
    consumer: Annotated[str, typer.Option(help="Consumer the key belongs to (1-64 of A-Z a-z 0-9 _ . @ -).")],
    algorithm: Annotated[str, typer.Option(help="hmac-sha256 (the gateway draws a shared secret) or ed25519.")]
    = "hmac-sha256",
    public_key_file: Annotated[Path | None, typer.Option(
        help="ed25519: the consumer's public key (PEM, or base64 of its 32 bytes).")] = None,
    scopes: Annotated[str, typer.Option(help="Comma-separated scopes, e.g. orders:read,orders:write.")] = "",
    expires: Annotated[str | None, typer.Option(help="Lifetime, e.g. 90d. Default: no expiry.")] = None,
    config: ConfigOption = Path("portcullis.yaml"),
    as_json: JsonOption = False,
) -> None:
    """Create a signing key. An HMAC secret is shown once: store it now."""
    if not _CONSUMER.fullmatch(consumer):
        raise fail("--consumer: consumer names are 1-64 characters: letters, digits, _ . @ -")
    if algorithm not in ("hmac-sha256", "ed25519"):
        raise fail("--algorithm: hmac-sha256 or ed25519")
    alg: Algorithm = "ed25519" if algorithm == "ed25519" else "hmac-sha256"
    scope_set = frozenset(s.strip() for s in scopes.split(",") if s.strip())
    if any(not _SCOPE.fullmatch(s) for s in scope_set):
        raise fail("--scopes: scopes are 1-64 characters: letters, digits, _ . @ : -")
    if (alg == "ed25519") != (public_key_file is not None):
        raise fail("--public-key-file is required for ed25519 keys and refused for hmac-sha256 keys")
    public_key = None
    if public_key_file is not None:
        try:
            public_key = public_key_file.read_text()
        except OSError as exc:
            raise fail(f"--public-key-file: {exc.strerror or exc}") from None
    expires_s = duration_option(expires, "--expires") if expires is not None else None
    cfg = load_or_fail(config)

    async def work(store: Store) -> IssuedSigningKey:
        vault = _vault(store, needs_key=alg == "hmac-sha256")
        issued = await create_signing_key(store, vault, consumer, alg, clock=SystemClock(), public_key=public_key,
                                          scopes=scope_set, expires_in_s=expires_s)
        await record_cli_event(store, action="signing_key.create", target=f"key_id={issued.record.key_id}",
                               details={"consumer": consumer, "algorithm": alg, "scopes": sorted(scope_set)})
        return issued

    try:
        issued = run_with_store(cfg.store, work)
    except ValueError as exc:
        raise fail(str(exc)) from None
    except VaultError as exc:
        raise fail(str(exc), code=1) from None
    record = issued.record
    if as_json:
        typer.echo(json.dumps({**_view(record, SystemClock().wall()), "secret": issued.secret}))
        return
    done = f"Created {alg} signing key {record.key_id} for {consumer}."
    show_once(done, issued.secret, "secret")


@app.command("list")
def list_keys(
    consumer: Annotated[str | None, typer.Option(help="Only this consumer's keys.")] = None,
    config: ConfigOption = Path("portcullis.yaml"),
    as_json: JsonOption = False,
) -> None:
    """List signing keys with their algorithm, validity and status (never a secret)."""
    cfg = load_or_fail(config)
    records = run_with_store(cfg.store, lambda store: store.list_signing_keys(consumer))
    now = SystemClock().wall()
    if as_json:
        typer.echo(json.dumps([_view(r, now) for r in records]))
        return
    Console().print(plain_table(
        ("key id", "consumer", "algorithm", "scopes", "created", "expires", "status"),
        [(r.key_id, r.consumer_id, r.algorithm, ",".join(sorted(r.scopes)) or "-", when(r.created_at),
          when(r.expires_at), r.state(now)) for r in records],
        title=f"{len(records)} signing keys" + (f" of {consumer}" if consumer else "")))


@app.command()
def rotate(
    key_id: Annotated[str, typer.Argument(help="The key id (sig_…).")],
    overlap: Annotated[str, typer.Option(help="How long the former key keeps verifying (e.g. 1h, 1d; at most "
                                         "30d).")] = "1d",
    public_key_file: Annotated[Path | None, typer.Option(
        help="ed25519: the consumer's new public key (PEM, or base64 of its 32 bytes).")] = None,
    admin: AdminOption = DEFAULT_ADMIN,
    as_json: JsonOption = False,
) -> None:
    """A new key for the same consumer through the admin API; the former one verifies for --overlap more."""
    body: dict[str, Any] = {"overlap_s": duration_option(overlap, "--overlap", positive=False)}
    if public_key_file is not None:
        try:
            body["public_key"] = public_key_file.read_text()
        except OSError as exc:
            raise fail(f"--public-key-file: {exc.strerror or exc}") from None
    made = admin_result("POST", admin, f"/signing-keys/{key_id}/rotate", body=body, as_json=as_json)
    if made is None:
        return
    done = f"Rotated {key_id} to {made['key_id']}; the former key verifies for {overlap} more."
    show_once(done, made["secret"], "secret")


@app.command()
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key id (sig_…).")],
    config: ConfigOption = Path("portcullis.yaml"),
) -> None:
    """Revoke a signing key for good (an HMAC key's secret leaves the vault)."""
    cfg = load_or_fail(config)

    async def work(store: Store) -> bool:
        keyring = SigningKeyring(store, _vault(store, needs_key=False), clock=SystemClock(), cache_ttl_s=0)
        found = await keyring.revoke(key_id)
        await record_cli_event(store, action="signing_key.revoke", target=f"key_id={key_id}",
                               outcome="ok" if found else "refused")
        return found

    if not run_with_store(cfg.store, work):
        raise fail(f"no signing key with id {key_id!r}, or it is revoked already", code=1)
    Console(highlight=False).print(Text(f"Revoked {key_id}.", style="green"))
    tell_revoked(cfg.shared_state, key_id, "signing_keys.cache_ttl")
