"""``portcullis db upgrade | status``: the durable store's schema.

PostgreSQL is shared by every instance, so its schema changes only here, run once per release
before the new gateways start (they refuse a schema they do not know). Upgrading is idempotent and
safe to run from several places at once (an advisory lock serialises it). SQLite migrates itself
when a gateway opens the file; ``upgrade`` on it does the same without starting one.

Exit codes: 0 done (``status``: the schema is current), 1 the store is unavailable or ``status``
found a schema this Portcullis cannot serve on, 2 bad config.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import typer

from portcullis.cli.common import ConfigOption, JsonOption, fail, load_or_fail, store_label
from portcullis.config.model import StoreConfig
from portcullis.errors import StoreUnavailable
from portcullis.stores.opening import store_version, upgrade_store

__all__ = ["app"]

app = typer.Typer(help="Upgrade or inspect the store's schema.", no_args_is_help=True)


@app.command()
def upgrade(config: ConfigOption = Path("portcullis.yaml"), as_json: JsonOption = False) -> None:
    """Apply every pending schema migration (idempotent)."""
    cfg = load_or_fail(config).store
    before, after = _versions(cfg, upgrade_store)
    if as_json:
        typer.echo(json.dumps({"store": store_label(cfg), "before": before, "after": after}))
    elif before == after:
        typer.echo(f"{store_label(cfg)}: schema is current (version {after})")
    else:
        typer.echo(f"{store_label(cfg)}: schema upgraded from version {before} to {after}")


@app.command()
def status(config: ConfigOption = Path("portcullis.yaml"), as_json: JsonOption = False) -> None:
    """Show the schema version against the one this Portcullis needs."""
    cfg = load_or_fail(config).store
    current, needed = _versions(cfg, store_version)
    state = "current" if current == needed else ("behind: run `portcullis db upgrade`" if current < needed
                                                  else "newer than this Portcullis")
    if as_json:
        typer.echo(json.dumps({"store": store_label(cfg), "version": current, "needed": needed,
                               "current": current == needed}))
    else:
        typer.echo(f"{store_label(cfg)}: schema version {current}, this Portcullis needs {needed} ({state})")
    if current != needed:
        raise typer.Exit(1)


def _versions(cfg: StoreConfig, ask: Callable[[StoreConfig], Coroutine[Any, Any, tuple[int, int]]]) -> tuple[int, int]:
    try:
        return asyncio.run(ask(cfg))
    except StoreUnavailable as exc:
        raise fail(f"store unavailable ({store_label(cfg)}): {exc}", code=1) from None
