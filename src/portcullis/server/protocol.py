"""A uvicorn HTTP protocol that keeps the original request target and can end a response early.

Why: uvicorn's httptools protocol reduces ``GET http://other-host/path`` to ``/path`` and drops the
authority, so the gateway could not tell that the target names a different host than ``Host``
(a routing-confusion vector, RFC 9112 section 3.2.2). This subclass stores the raw target in the
scope's ``extensions`` when it is not origin-form; the canonicalizer then checks it.

Why the abort hook: when an upstream cuts a body after the response head went out, the only
honest answer left is to close the connection before the response's proper end (RFC 9112
section 8). ASGI has no message for that; returning early makes uvicorn close the connection but
also log an error, and raising logs a traceback, for what is an upstream fault the gateway has
already audited and logged. ``extensions[ABORT_KEY]["abort"]`` closes the connection (what was
written is still flushed) and tells uvicorn that this response is over, with nothing logged.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from portcullis.server.base import ABORT_KEY, RAW_TARGET_KEY

__all__ = ["TargetPreservingProtocol"]


class TargetPreservingProtocol(HttpToolsProtocol):
    """HttpToolsProtocol plus ``scope["extensions"]``: the raw target (non-origin-form) and ``abort``."""

    def on_headers_complete(self) -> None:
        url = bytes(self.url)
        scope = self.scope
        # ASGI extensions are one dict per extension name.
        extensions: dict[str, Any] = {}
        if url and url[:1] != b"/":
            extensions[RAW_TARGET_KEY] = {"target": url}
        scope["extensions"] = extensions
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is scope:  # not for an upgrade, which starts no cycle
            transport = self.transport

            def abort() -> None:
                # uvicorn's own flag for "the client went away": nothing more is sent for this
                # response, and run_asgi does not report it as incomplete.
                cycle.disconnected = True
                transport.close()

            extensions[ABORT_KEY] = {"abort": abort}
