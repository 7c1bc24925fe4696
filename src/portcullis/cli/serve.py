"""``portcullis serve``: validate the config, then run the gateway until SIGINT/SIGTERM."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from portcullis.cli.common import config_error_text, fail, with_store
from portcullis.clock import SystemClock
from portcullis.config.loader import load_config
from portcullis.config.model import GatewayConfig, StoreConfig
from portcullis.egress.proxy.authority import CaUnusable, CertificateAuthority
from portcullis.errors import ConfigError, VaultError
from portcullis.gateway.build import open_vault
from portcullis.observability.logs import LEVELS, configure_logging
from portcullis.stores.base import Store

__all__ = ["serve"]


def serve(
    config: Annotated[Path, typer.Argument(help="The gateway's YAML config.", envvar="PORTCULLIS_CONFIG")],
    log_level: Annotated[
        str | None, typer.Option(help="Log level: debug, info, warning, error. Wins over the config's `log.level`.")
    ] = None,
) -> None:
    """Run the gateway (API listener and admin listener). SIGHUP reloads the config."""
    level = None
    if log_level is not None:
        level = LEVELS.get(log_level.lower())
        if level is None:
            raise fail(f"unknown log level {log_level!r}: choose debug, info, warning or error")
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        raise fail(config_error_text(config, exc)) from None
    configure_logging(cfg.log.format, level if level is not None else LEVELS[cfg.log.level])
    _check_vault(cfg.store)
    _check_proxy_ca(cfg)
    from portcullis.cli.serving import serve_forever

    serve_forever(config, log_level=level)


def _check_vault(store_cfg: StoreConfig) -> None:
    """Refuse to start, with what to do, when stored secrets cannot be decrypted."""

    async def check(store: Store) -> None:
        await open_vault(store, SystemClock())

    try:
        with_store(store_cfg, check)
    except VaultError as exc:
        Console(stderr=True).print(f"[red]vault locked[/red]\n{exc}", markup=True, highlight=False)
        raise typer.Exit(2) from None


def _check_proxy_ca(cfg: GatewayConfig) -> None:
    """Refuse to start, with what to do, when the proxy door's interception CA cannot be used."""
    proxy = cfg.egress.proxy if cfg.egress is not None else None
    if proxy is None or proxy.ca is None:
        return
    try:
        CertificateAuthority.load(Path(proxy.ca.cert_file), Path(proxy.ca.key_file), clock=SystemClock()).close()
    except CaUnusable as exc:
        raise fail(f"egress.proxy.ca: {exc.reason.replace('_', ' ')} ({proxy.ca.cert_file}, {proxy.ca.key_file}); "
                   "make one with `portcullis ca init`") from None
