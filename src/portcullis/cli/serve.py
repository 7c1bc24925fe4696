"""``portcullis serve``: validate the config, then run the gateway until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from portcullis.cli.common import config_error_text, fail, with_store
from portcullis.clock import SystemClock
from portcullis.config.loader import load_config
from portcullis.config.model import StoreConfig
from portcullis.errors import ConfigError, VaultError
from portcullis.ingress.build import open_vault
from portcullis.stores.base import Store

__all__ = ["serve"]


def serve(
    config: Annotated[Path, typer.Argument(help="The gateway's YAML config.", envvar="PORTCULLIS_CONFIG")],
    log_level: Annotated[str, typer.Option(help="Log level: debug, info, warning, error.")] = "info",
) -> None:
    """Run the gateway (API listener and admin listener). SIGHUP reloads the config."""
    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        raise fail(config_error_text(config, exc)) from None
    _check_vault(cfg.store)
    from portcullis.cli.serving import serve_forever

    serve_forever(config)


def _check_vault(store_cfg: StoreConfig) -> None:
    """Refuse to start, with what to do, when stored secrets cannot be decrypted."""

    async def check(store: Store) -> None:
        await open_vault(store, SystemClock())

    try:
        with_store(store_cfg, check)
    except VaultError as exc:
        Console(stderr=True).print(f"[red]vault locked[/red]\n{exc}", markup=True, highlight=False)
        raise typer.Exit(2) from None
