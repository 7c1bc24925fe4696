"""A uvicorn HTTP protocol that keeps the original request target for absolute-form requests.

Why: uvicorn's httptools protocol reduces ``GET http://other-host/path`` to ``/path`` and drops the
authority, so the gateway could not tell that the target names a different host than ``Host``
(a routing-confusion vector, RFC 9112 section 3.2.2). This subclass stores the raw target in the
scope's ``extensions`` when it is not origin-form; the canonicalizer then checks it.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from portcullis.ingress.app import RAW_TARGET_KEY

__all__ = ["TargetPreservingProtocol"]


class TargetPreservingProtocol(HttpToolsProtocol):
    """HttpToolsProtocol plus ``scope["extensions"][RAW_TARGET_KEY]`` for non-origin-form targets."""

    def on_headers_complete(self) -> None:
        url = bytes(self.url)
        if url and url[:1] != b"/":
            # ASGI extensions are one dict per extension name.
            self.scope["extensions"] = {RAW_TARGET_KEY: {"target": url}}
        super().on_headers_complete()
