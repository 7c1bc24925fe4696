"""``portcullis blocks list|add|lift``, ``portcullis emergency list|set|lift`` and ``portcullis
anomalies``: incident controls, and what the detector saw, from the command line, through the running
gateway's admin API.

Why through the admin API and not the store: an act must reach every instance within a second, which
the gateway that takes it does (it swaps its snapshot and tells the others), and it must be recorded
as the operator's security event with their token's identity and role, which the admin route class
does. The CLI only shapes the call and the table (``cli/admin_client.py``: token from
``PORTCULLIS_ADMIN_TOKEN`` or a private file, shared exit codes: 0 done, 1 refused, 2 usage, 3 denied,
4 unreachable).

Durations are written as in the config (``30s``, ``15m``, ``2h``); times are shown in UTC (``…Z``).
"""

from __future__ import annotations

import urllib.parse
from typing import Annotated, Any

import typer
from rich.console import Console

from portcullis.cli.admin_client import (
    DEFAULT_ADMIN,
    EXIT_USAGE,
    AdminOption,
    JsonOption,
    admin_call,
    admin_result,
    fail_unless_ok,
)
from portcullis.cli.common import duration_option, when
from portcullis.cli.tables import plain_table

__all__ = ["anomalies", "blocks_app", "emergency_app"]

blocks_app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
emergency_app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

_KINDS = ("address", "consumer", "key", "workflow", "user", "execution")
_SCOPES = ("gateway", "route", "consumer")
AllOption = Annotated[bool, typer.Option("--all", help="Also lifted and expired ones.")]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why (kept in the audit trail; never shown to the "
                                           "blocked party).")]


@blocks_app.command("list")
def list_blocks(admin: AdminOption = DEFAULT_ADMIN, everything: AllOption = False, as_json: JsonOption = False) -> None:
    """Blocks in force (every block ever made, with --all)."""
    body = admin_result("GET", admin, "/blocks", query={"all": "true" if everything else None}, as_json=as_json)
    if body is None:
        return
    Console(highlight=False).print(plain_table(("id", "kind", "subject", "expires", "by", "reason", "lifted"), [
        (b["id"], b["kind"], b["subject"], when(b["expires_at"]), b["created_by"], b["reason"], when(b["lifted_at"]))
        for b in body], ids=(0, 2)))


@blocks_app.command("add")
def add_block(
    kind: Annotated[str, typer.Argument(help="address, consumer, key, workflow, user or execution.")],
    subject: Annotated[str, typer.Argument(help="The address or CIDR, or the id.")],
    reason: ReasonOption,
    expires: Annotated[str | None, typer.Option("--expires", help="Lifetime (e.g. 1h); none: until lifted.")] = None,
    admin: AdminOption = DEFAULT_ADMIN,
    as_json: JsonOption = False,
) -> None:
    """Block a subject on every instance (within a second)."""
    if kind not in _KINDS:
        Console(stderr=True).print(f"[red]kind is one of {', '.join(_KINDS)}[/red]")
        raise typer.Exit(EXIT_USAGE)
    body: dict[str, Any] = {"kind": kind, "subject": subject, "reason": reason}
    if expires is not None:
        body["expires_in_s"] = duration_option(expires, "--expires")
    made = admin_result("POST", admin, "/blocks", body=body, as_json=as_json)
    if made is not None:
        Console(highlight=False).print(f"Blocked {made['kind']} {made['subject']}: {made['id']}")


@blocks_app.command("lift")
def lift_block(
    block_id: Annotated[str, typer.Argument(help="The block's id (blk_…).")],
    admin: AdminOption = DEFAULT_ADMIN,
) -> None:
    """Lift a block on every instance (within a second)."""
    answer = admin_call("DELETE", admin, f"/blocks/{urllib.parse.quote(block_id, safe='')}")
    fail_unless_ok(answer)
    Console(highlight=False).print(f"Lifted {block_id}.")


@emergency_app.command("list")
def list_emergencies(
    admin: AdminOption = DEFAULT_ADMIN, everything: AllOption = False, as_json: JsonOption = False,
) -> None:
    """Emergency limits in force or restoring (every one ever made, with --all)."""
    body = admin_result("GET", admin, "/emergency-limits", query={"all": "true" if everything else None},
                        as_json=as_json)
    if body is None:
        return
    Console(highlight=False).print(plain_table(
        ("id", "scope", "subject", "factor", "now", "until", "restore (s)", "by", "reason"),
        [(e["id"], e["scope"], e["subject"] or "*", f"{e['factor']:g}", f"{e['factor_now']:g}", when(e["until"]),
          f"{e['restore_s']:g}", e["created_by"], e["reason"]) for e in body], ids=(0, 2)))


@emergency_app.command("set")
def set_emergency(
    scope: Annotated[str, typer.Argument(help="gateway, route or consumer.")],
    factor: Annotated[float, typer.Argument(help="Share of every limit kept, 0.01 to 1 (e.g. 0.1).")],
    duration: Annotated[str, typer.Option("--for", help="How long the factor holds (e.g. 30m).")],
    reason: ReasonOption,
    subject: Annotated[str, typer.Option("--subject", help="The route or consumer (not for gateway).")] = "",
    restore: Annotated[str | None, typer.Option("--restore", help="Ramp back to the full limits over this long "
                                                "(default: controls.emergency_restore).")] = None,
    admin: AdminOption = DEFAULT_ADMIN,
    as_json: JsonOption = False,
) -> None:
    """Scale rate limits down on every instance, then restore them gradually."""
    if scope not in _SCOPES:
        Console(stderr=True).print(f"[red]scope is one of {', '.join(_SCOPES)}[/red]")
        raise typer.Exit(EXIT_USAGE)
    body: dict[str, Any] = {"scope": scope, "subject": subject, "factor": factor,
                            "duration_s": duration_option(duration, "--for"), "reason": reason}
    if restore is not None:
        body["restore_s"] = duration_option(restore, "--restore", positive=False)
    e = admin_result("POST", admin, "/emergency-limits", body=body, as_json=as_json)
    if e is not None:
        Console(highlight=False).print(
            f"Emergency limit {e['id']}: {e['scope']} {e['subject'] or '*'} at {e['factor']:g} until "
            f"{when(e['until'])}, restored over {e['restore_s']:g}s")


@emergency_app.command("lift")
def lift_emergency(
    emergency_id: Annotated[str, typer.Argument(help="The emergency limit's id (emg_…).")],
    admin: AdminOption = DEFAULT_ADMIN,
) -> None:
    """End an emergency limit now, everywhere (the full limits at once, no ramp)."""
    answer = admin_call("DELETE", admin, f"/emergency-limits/{urllib.parse.quote(emergency_id, safe='')}")
    fail_unless_ok(answer)
    Console(highlight=False).print(f"Lifted {emergency_id}.")


def anomalies(admin: AdminOption = DEFAULT_ADMIN, as_json: JsonOption = False) -> None:
    """What the anomaly detector reported, newest first (the last 500; each is also an audit event)."""
    body = admin_result("GET", admin, "/anomalies", as_json=as_json)
    if body is None:
        return
    if not body["enabled"]:
        Console(highlight=False).print("Anomaly detection is off (anomaly.enabled: false).")
        return
    Console(highlight=False).print(plain_table(("window end", "kind", "subject", "observed", "expected"), [
        (when(a["window_end"]), a["kind"], a["subject"], f"{a['observed']:.4g}", f"{a['expected']:.4g}")
        for a in body["anomalies"]], ids=(2,)))
