"""The CLI's client for the admin API: one JSON call, authenticated with an admin token.

Why the standard library: the CLI needs no HTTP client library for a handful of JSON calls, and a
smaller install is a smaller attack surface on an operator's machine.

The token comes from ``PORTCULLIS_ADMIN_TOKEN``, else from the file named by
``PORTCULLIS_ADMIN_TOKEN_FILE``, else from ``~/.config/portcullis/admin-token`` (which must not
be readable by group or others, as ssh insists for its keys). It is sent only in the
``Authorization`` header and never printed. Without a token the call is made anyway and the
listener answers 401, which the CLI reports.

Exit codes shared by every admin command (``docs/operator-guide.md``): 0 done, 1 the listener
refused or failed (the problem's code is printed), 2 bad usage, 3 not authenticated or not
permitted (401/403), 4 unreachable.
"""

from __future__ import annotations

import json
import os
import stat
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

__all__ = [
    "DEFAULT_ADMIN", "EXIT_DENIED", "EXIT_REFUSED", "EXIT_UNREACHABLE", "EXIT_USAGE", "AdminAnswer", "AdminOption",
    "JsonOption", "admin_call", "admin_result", "fail_unless_ok", "load_token",
]

DEFAULT_ADMIN = "http://127.0.0.1:9090"
TOKEN_ENV = "PORTCULLIS_ADMIN_TOKEN"
TOKEN_FILE_ENV = "PORTCULLIS_ADMIN_TOKEN_FILE"
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_DENIED = 3
EXIT_UNREACHABLE = 4
_TIMEOUT_S = 10

AdminOption = Annotated[str, typer.Option("--admin", envvar="PORTCULLIS_ADMIN_URL",
                                          help="The admin listener's base URL.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the answer as JSON instead of a table.")]


@dataclass(frozen=True, slots=True)
class AdminAnswer:
    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def _default_token_file() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "portcullis" / "admin-token"


def load_token() -> str | None:
    """The admin token from the environment or the token file, or None."""
    token = os.environ.get(TOKEN_ENV)
    if token:
        return token.strip()
    named = os.environ.get(TOKEN_FILE_ENV)
    path = Path(named) if named else _default_token_file()
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        Console(stderr=True).print(f"[red]{escape(str(path))} is readable by others; chmod 600 it[/red]")
        raise typer.Exit(EXIT_USAGE)
    return path.read_text().strip() or None


def admin_call(method: str, admin: str, path: str, *, body: Any = None,
               query: dict[str, Any] | None = None) -> AdminAnswer:
    """One JSON call to ``admin`` + ``path``. Exits 2 for a URL that is not http(s), 4 when unreachable."""
    base = admin.rstrip("/")
    if urllib.parse.urlsplit(base).scheme not in ("http", "https"):
        Console(stderr=True).print("[red]--admin must be an http:// or https:// URL[/red]")
        raise typer.Exit(EXIT_USAGE)
    params = {k: v for k, v in (query or {}).items() if v is not None}
    url = base + path + ("?" + urllib.parse.urlencode(params, doseq=True) if params else "")
    headers = {"Accept": "application/json"}
    token = load_token()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as resp:  # noqa: S310 - scheme checked above
            return AdminAnswer(resp.status, _json(resp.read()))
    except urllib.error.HTTPError as exc:
        return AdminAnswer(exc.code, _json(exc.read()))
    except (urllib.error.URLError, OSError) as exc:
        Console(stderr=True).print(f"[red]admin listener unreachable at {escape(base)}: {escape(str(exc))}[/red]")
        raise typer.Exit(EXIT_UNREACHABLE) from None


def fail_unless_ok(answer: AdminAnswer) -> None:
    """Print the problem and exit (3 for 401/403, else 1) unless the answer is a success."""
    if answer.ok:
        return
    body = answer.body if isinstance(answer.body, dict) else {}
    code = body.get("code", "unknown")
    detail = body.get("detail") or body.get("title") or ""
    Console(stderr=True).print(f"[red]{answer.status} {escape(str(code))}[/red] {escape(str(detail))}")
    if answer.status in (401, 403):
        hint = f"set {TOKEN_ENV} to an admin token" if answer.status == 401 else "this token's role lacks it"
        Console(stderr=True).print(f"({hint})")
    raise typer.Exit(EXIT_DENIED if answer.status in (401, 403) else EXIT_REFUSED)


def admin_result(method: str, admin: str, path: str, *, as_json: bool, body: Any = None,
                 query: dict[str, Any] | None = None) -> Any:
    """One call for a command: exit on a refusal; with ``--json`` print the answer and return None,
    else return the answer's body for the command to show."""
    answer = admin_call(method, admin, path, body=body, query=query)
    fail_unless_ok(answer)
    if as_json:
        typer.echo(json.dumps(answer.body))
        return None
    return answer.body


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"null")
    except ValueError:
        return None
