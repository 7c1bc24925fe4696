"""``portcullis ca init``: make the interception CA for the proxy door's ``intercept: true`` routes.

Why a command and not a config option that makes one on start: a CA is a key every intercepted
client will trust, so it is made once, on purpose, by an operator who then decides where its
certificate is trusted; the gateway only ever reads it (``egress.proxy.ca``) and refuses a key file
anyone but its owner can read.

What it refuses to do: overwrite an existing key without ``--force``, or print the key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from portcullis.cli.common import fail
from portcullis.clock import SystemClock
from portcullis.egress.proxy.authority import create_ca

__all__ = ["app", "init"]

_DNS_NAME = re.compile(r"(\*\.)?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+")

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.command("init")
def init(
    cert: Annotated[Path, typer.Option("--cert", help="Where to write the CA certificate (PEM).")] = Path("ca.pem"),
    key: Annotated[Path, typer.Option("--key", help="Where to write the CA key (PEM, mode 0600).")] = Path("ca.key"),
    name: Annotated[str, typer.Option("--name", help="The CA's common name, as clients will show it.")] = (
        "Portcullis egress interception CA"),
    days: Annotated[int, typer.Option("--days", min=1, max=3650, help="Validity in days.")] = 365,
    permit: Annotated[
        list[str] | None,
        typer.Option("--permit", help="Restrict the CA to this DNS name and its subdomains (name constraints; "
                     "repeatable). Clients that honour them refuse a certificate for any other name."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key file.")] = False,
) -> None:
    """Make the CA key (0600) and certificate. Exit status: 0 made, 2 refused."""
    names = tuple(p.strip().lower().rstrip(".") for p in permit or ())
    if not all(_DNS_NAME.fullmatch(n) for n in names):
        raise fail("--permit: expected DNS names such as api.openai.com or *.example.com")
    if key.exists() and not force:
        raise fail(f"{key} exists; pass --force to replace it (clients trusting the old CA stop being served)")
    try:
        made = create_ca(cert, key, common_name=name, days=days, clock=SystemClock(), permitted=names, force=force)
    except OSError as exc:
        raise fail(f"cannot write the CA files: {exc.strerror or type(exc).__name__}") from None
    console = Console(highlight=False)
    console.print(f"CA certificate: {made.cert_file}", markup=False)
    console.print(f"CA key (0600):  {made.key_file}", markup=False)
    console.print(f"SHA-256:        {made.fingerprint_sha256}", markup=False)
    console.print(f"Valid until:    {made.not_after.isoformat()}", markup=False)
    if names:
        console.print(f"Only for:       {', '.join(names)}", markup=False)
    console.print("Set egress.proxy.ca.cert_file/key_file to these files and `intercept: true` on a route. "
                  "Trust the certificate only in the clients you mean to intercept: see docs/egress.md "
                  "(the proxy door).",
                  markup=False)
