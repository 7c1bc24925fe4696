"""An audit sink that POSTs each batch to a SIEM's HTTP collector as one JSON array.

Why a plain ``AuditSink``, like the syslog one: the lane in front of it (``audit.lane``) already
bounds memory, spills to disk, replays in order and backs off; this module only turns a batch into
one request body and sends it.

The body is a JSON array: OCSF events (``format: ocsf``) or the sealed records as stored
(``format: native``, checkpoints included), built by ``audit.siem_payload`` in a worker thread.
Any answer other than 2xx, a connection failure or a timeout (``connect_timeout`` to connect,
``timeout`` for the whole exchange) raises ``StoreUnavailable``, so the lane keeps the batch and
tries again; the collector should de-duplicate on ``metadata.uid`` (OCSF) or ``id`` (native), since
a batch whose answer was lost is sent again.

Headers come from the config; ``{secret:NAME}`` in a value is filled from the vault once, when the
gateway starts (``resolve_headers``), so a bearer token never sits in the YAML. The values are
never logged. Redirects are not followed (a collector that moves must be re-configured, not
trusted to send the trail elsewhere).

What it refuses: plain http:// unless the config says ``allow_http``; skipping certificate checks.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import aiohttp

from portcullis.audit.siem_payload import PayloadFormat, messages
from portcullis.config.egress import SECRET_REFERENCE
from portcullis.config.model import HttpSiemConfig
from portcullis.errors import StoreUnavailable
from portcullis.stores.base import AuditBatch

__all__ = ["HttpSink", "resolve_headers"]


async def resolve_headers(headers: Mapping[str, str], reveal: Callable[[str], Awaitable[str]]) -> dict[str, str]:
    """``headers`` with every ``{secret:NAME}`` replaced by the vault's value (``reveal``)."""
    out: dict[str, str] = {}
    for name, template in headers.items():
        value = template
        for secret in SECRET_REFERENCE.findall(template):
            revealed = await reveal(secret)
            if any(c in revealed for c in "\r\n\0"):
                raise ValueError(f"vault secret {secret!r} cannot go in a header (it holds a line break or NUL)")
            value = value.replace("{secret:" + secret + "}", revealed)
        out[name] = value
    return out


class HttpSink:
    """``AuditSink`` posting each batch as a JSON array; see the module docstring."""

    def __init__(self, config: HttpSiemConfig, *, base_dir: Path, headers: Mapping[str, str]) -> None:
        self.name = config.name
        self._config = config
        self._base = base_dir
        self._format: PayloadFormat = config.format
        self._headers = {**headers, "content-type": "application/json"}
        self._session: aiohttp.ClientSession | None = None

    def body(self, batch: AuditBatch) -> bytes:
        """The batch as one JSON array (pure CPU; run in a worker thread)."""
        return b"[" + b",".join(m.body for m in messages(batch.rows, batch.lines, self._format)) + b"]"

    async def write(self, batch: AuditBatch) -> None:
        """POST the batch; raises ``StoreUnavailable`` unless the collector answers 2xx."""
        if not len(batch):
            return
        body = await asyncio.to_thread(self.body, batch)
        if body == b"[]":
            return
        session = await self._open()
        try:
            async with session.post(self._config.url, data=body, headers=self._headers, allow_redirects=False) as r:
                if not 200 <= r.status < 300:
                    raise StoreUnavailable(f"http sink {self.name}: the collector answered {r.status}")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"http sink {self.name}: POST failed ({exc!r})") from None

    async def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            cfg = self._config
            context: ssl.SSLContext | bool = True
            if cfg.ca_file is not None:
                cafile = str(self._base / cfg.ca_file)
                context = await asyncio.to_thread(ssl.create_default_context, ssl.Purpose.SERVER_AUTH, cafile=cafile)
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=cfg.timeout, sock_connect=cfg.connect_timeout),
                connector=aiohttp.TCPConnector(ssl=context, limit=1),
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
