"""The ``portcullis`` command: the root Typer app and its command groups.

Why Typer + Rich: conventions operators already know, and tables that make a route's protections
readable at a glance. Each group lives in its own module; this one only assembles them.
"""

from __future__ import annotations

import typer

from portcullis import __version__
from portcullis.cli import admin, audit, ca, check, controls, db, egress, keys, secrets, serve, sign, signing_keys

__all__ = ["app", "main"]

app = typer.Typer(
    name="portcullis",
    help="Portcullis: a security gateway for APIs, driven by one YAML file.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"portcullis {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_print_version, is_eager=True,
    ),
) -> None:
    """Portcullis: a security gateway for APIs, driven by one YAML file."""


app.command("serve")(serve.serve)
app.command("check")(check.check)
app.command("explain")(check.explain)
app.command("config-reference")(check.config_reference)
app.add_typer(keys.app, name="keys", help="Create, list and revoke API keys.")
app.add_typer(signing_keys.app, name="signing-keys", help="Create, list and revoke request-signing keys (RFC 9421).")
app.command("sign")(sign.sign)
app.add_typer(secrets.app, name="secrets", help="Store, list, delete and rotate egress credentials.")
app.add_typer(db.app, name="db", help="Upgrade or inspect the store's schema.")
app.add_typer(egress.app, name="egress", help="Check egress destinations against the SSRF guard.")
app.add_typer(ca.app, name="ca", help="The interception CA of the proxy door (routes with intercept: true).")
app.add_typer(controls.blocks_app, name="blocks", help="Incident blocks: list, add and lift (admin API).")
app.add_typer(controls.emergency_app, name="emergency", help="Emergency rate limits: list, set and lift (admin API).")
app.command("anomalies")(controls.anomalies)
app.add_typer(audit.app, name="audit", help="Verify, expire, search, export and follow the audit trail.")
app.add_typer(admin.app, name="admin", help="Admin tokens: bootstrap the first, then manage them.")
app.command("status")(admin.status)


def main() -> None:
    app()
