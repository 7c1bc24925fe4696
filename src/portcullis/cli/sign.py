"""``portcullis sign``: the headers that sign one request, for curl or any other client.

Prints ``Name: value`` lines (``Content-Digest`` when there is a body, ``Signature-Input``,
``Signature``), which is the format ``curl -H @file`` reads::

    curl -H @<(portcullis sign --key-id sig_… --secret-file key.txt POST https://api.example.com/orders \\
              --data '{"qty": 1}') --data-binary '{"qty": 1}' https://api.example.com/orders

The body must be sent byte for byte as signed (``--data-binary``: curl's ``--data`` strips
newlines from a file). ``--header`` adds headers the signature may cover (e.g. ``content-type``
with ``--component``). The secret file holds what ``portcullis signing-keys create`` printed (an
HMAC secret, base64) or the consumer's Ed25519 private key (PEM); it is never read from argv.
Each run draws a new nonce, so each printed set of headers is good for one request.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from portcullis.cli.common import fail
from portcullis.errors import Unauthenticated
from portcullis.signing import Algorithm, RequestSigner, load_signing_secret

__all__ = ["sign"]

_MAX_BODY = 64 * 1024 * 1024


def sign(
    method: Annotated[str, typer.Argument(help="The request method, e.g. POST.")],
    url: Annotated[str, typer.Argument(help="The full URL the request goes to (scheme, host, path, query).")],
    key_id: Annotated[str, typer.Option("--key-id", help="The signing key id (sig_…).")],
    secret_file: Annotated[Path, typer.Option("--secret-file", help="The HMAC secret (base64) or Ed25519 private "
                                              "key (PEM).")],
    data: Annotated[str | None, typer.Option("--data", help="The body, or @FILE to read it from a file "
                                             "(@- for stdin).")] = None,
    header: Annotated[list[str] | None, typer.Option("--header", "-H", help="'Name: value' the signature may "
                                                     "cover (repeatable).")] = None,
    component: Annotated[list[str] | None, typer.Option("--component", help="Cover exactly these components "
                                                        "(repeatable). Default: what a route requires by default.")]
    = None,
    algorithm: Annotated[str | None, typer.Option(help="hmac-sha256 or ed25519; default: PEM is ed25519, "
                                                  "else hmac-sha256.")] = None,
) -> None:
    """Print the headers that sign METHOD URL (Content-Digest, Signature-Input, Signature)."""
    if algorithm not in (None, "hmac-sha256", "ed25519"):
        raise fail("--algorithm: hmac-sha256 or ed25519")
    alg: Algorithm | None = None if algorithm is None else ("ed25519" if algorithm == "ed25519" else "hmac-sha256")
    try:
        secret = load_signing_secret(secret_file.read_bytes(), alg)
    except OSError as exc:
        raise fail(f"--secret-file: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise fail(f"--secret-file: {exc}") from None
    headers: list[tuple[str, str]] = []
    for line in header or []:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise fail(f"--header: {line!r} is not 'Name: value'")
        headers.append((name.strip(), value.strip()))
    body = _body(data)
    if "://" not in url:
        raise fail("URL: give the full URL, e.g. https://api.example.com/orders")
    signer = RequestSigner(key_id, secret, components=component or None)
    try:
        added = signer.sign(method.upper(), url, headers, body)
    except Unauthenticated as exc:  # a component to cover is not in the request (e.g. a header not given)
        raise fail(f"cannot sign: {exc.reason} (give covered headers with --header)") from None
    for name, value in added.items():
        typer.echo(f"{name}: {value}")


def _body(data: str | None) -> bytes:
    if data is None:
        return b""
    if not data.startswith("@"):
        return data.encode()
    source = data[1:]
    try:
        raw = sys.stdin.buffer.read(_MAX_BODY + 1) if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise fail(f"--data: {exc.strerror or exc}") from None
    if len(raw) > _MAX_BODY:
        raise fail("--data: at most 64 MiB")
    return raw
