"""``portcullis serve``: validate the config, then run the gateway until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from portcullis.config.loader import load_config
from portcullis.errors import ConfigError

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
        load_config(config)
    except ConfigError as exc:
        Console(stderr=True).print(f"[red]config error[/red]\n{exc}", markup=True, highlight=False)
        raise typer.Exit(2) from None
    from portcullis.server.run import serve_forever

    serve_forever(config)
