"""What the store-backed commands share: the --config option, failing with one red line, running
work against the configured store, and showing times.

Exit codes across those commands: 0 done, 1 the thing asked for failed (not found, store
unavailable, vault locked), 2 bad input or config. Never a traceback, never a secret.
"""

from __future__ import annotations

import asyncio
import datetime
import getpass
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.text import Text

from portcullis.audit.security_event import security_event
from portcullis.clock import SystemClock
from portcullis.config.loader import load_config
from portcullis.config.model import GatewayConfig, SharedStateConfig, StoreConfig
from portcullis.config.types import parse_duration
from portcullis.errors import ConfigError, ConfigFileError, StoreUnavailable
from portcullis.ids import random_hex
from portcullis.stores.base import AuditBatch, Store
from portcullis.stores.opening import open_store
from portcullis.stores.redis_events import REVOKE_EVENT
from portcullis.stores.shared_state import broadcast_once

__all__ = [
    "ConfigOption", "JsonOption", "config_error_text", "duration_option", "fail", "load_or_fail", "record_cli_event",
    "show_once", "store_label", "tell_revoked", "when", "with_store",
]

_T = TypeVar("_T")

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", envvar="PORTCULLIS_CONFIG", help="The gateway's YAML config.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one red line on stderr; return the ``Exit`` to raise."""
    Console(stderr=True, highlight=False, soft_wrap=True).print(Text(message, style="red"))
    return typer.Exit(code)


def config_error_text(path: Path, exc: ConfigError) -> str:
    """What every command prints for a refused config: one line when the file itself is refused (the
    error names the file and where in it), else the file, then one line per problem."""
    if isinstance(exc, ConfigFileError):
        return f"invalid config: {exc}"
    return f"{path}: invalid config\n{exc}"


def load_or_fail(path: Path) -> GatewayConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise fail(config_error_text(path, exc)) from None


def with_store(cfg: StoreConfig, work: Callable[[Store], Awaitable[_T]]) -> _T:
    """Open the store, run ``work`` on it, close it; an unreachable store exits 1."""
    async def run() -> _T:
        store = await open_store(cfg)
        try:
            return await work(store)
        finally:
            await store.aclose()

    try:
        return asyncio.run(run())
    except StoreUnavailable as exc:
        raise fail(f"store unavailable ({store_label(cfg)}): {exc}", code=1) from None


async def record_cli_event(store: Store, *, action: str, target: str | None, outcome: str = "ok",
                           details: dict[str, Any] | None = None) -> None:
    """Write the security event of a command that changed the store directly (no gateway saw it).

    The actor is ``cli:<os user>``. It goes straight into the store's audit table, in the same
    transaction-free way a gateway's writer would; if that fails the command still reports its own
    result, and the failure is printed."""
    record = security_event(
        clock=SystemClock(), action=action, outcome=outcome, actor=f"cli:{_os_user()}", role=None, target=target,
        client_ip="local", request_id=random_hex(128), status=0, details=details,
    )
    try:
        await store.write(AuditBatch.of([record.to_dict()]))
    except StoreUnavailable as exc:
        Console(stderr=True).print(Text(f"warning: the security event was not recorded ({exc})", style="yellow"))


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return f"uid{os.getuid()}"


def duration_option(text: str, option: str, *, positive: bool = True) -> float:
    """A duration given on the command line (``30s``, ``15m``, ``90d``), or exit 2 naming the option."""
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise fail(f"{option}: {exc}") from None
    if positive and seconds <= 0:
        raise fail(f"{option}: must be longer than zero")
    return seconds


def store_label(cfg: StoreConfig) -> str:
    """The store's URL without a password, for messages."""
    if not cfg.is_postgres:
        return cfg.url
    parts = urlsplit(cfg.url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


def show_once(done: str, secret: str | None, what: str = "key") -> None:
    """A new credential on the terminal: what was done, the secret on a line of its own (whole,
    however narrow the terminal), and the warning that it cannot be shown again. ``None``: nothing
    secret was made (an Ed25519 key is the consumer's own), so only what was done."""
    console = Console(highlight=False)
    console.print(Text(done, style="green"))
    if secret is None:
        return
    console.print(secret, markup=False, soft_wrap=True)
    console.print(Text(f"This {what} is shown once and cannot be recovered. Store it now.", style="yellow"))


def tell_revoked(shared: SharedStateConfig | None, key_id: str, cache_option: str) -> None:
    """After a revocation written to the store: tell running gateways through Redis so they drop the
    key now; if that fails, say that they refuse it once their cache (``cache_option``) expires."""
    if shared is None:
        return
    told = asyncio.run(broadcast_once(shared.url, key_prefix=shared.key_prefix, timeout_s=shared.timeout,
                                      kind=REVOKE_EVENT, key_id=key_id))
    if not told:
        Console(stderr=True, highlight=False).print(Text(
            "Could not tell running gateways through Redis; they refuse the key once their cache "
            f"expires ({cache_option}).", style="yellow"))


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
