"""An audit sink that streams records to a syslog receiver over TCP, optionally TLS (RFC 5425).

Why a plain ``AuditSink``: the writer already gives every sink a ``SinkLane`` with a bounded
in-memory backlog, a spill file, ordered replay and backoff (``audit.lane``). This sink only turns
a batch into frames (``audit.siem_payload``) and writes them on one connection; it keeps no queue
of its own, so a SIEM that is down or slow costs what any other slow sink costs: records wait on
disk, not in memory.

Connection handling:

- One connection, opened when a batch is to be written and kept while it works. Opening (TCP and
  the TLS handshake) is bounded by ``connect_timeout``.
- A batch is written whole and drained within ``write_timeout``. A receiver that accepts and never
  reads fills the socket buffers, the drain times out, and the connection is aborted, which drops
  whatever the transport still held: memory holds at most one batch. The write raises, the lane
  puts the batch in its spill file and retries later with backoff, on a new connection.
- Before each batch a connection the receiver has closed (end of stream seen) is replaced, so a
  receiver that restarted gets the next batch on a fresh connection.
- TLS (RFC 5425): the server certificate must chain to ``tls.ca_file`` and carry ``server_name``
  (default: ``host``); TLS 1.2 at least; an optional client certificate. Files are read once, off
  the event loop, at the first connection.

Delivery is at least once: syslog over TCP has no acknowledgement, so a batch that failed half-way
is sent again whole, and a receiver that vanished without closing may lose what the kernel had
accepted. Each OCSF event carries the record id (``metadata.uid``) for de-duplication.

What it refuses: to send without TLS unless the config says ``allow_plaintext``, and to skip
certificate verification at all.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from pathlib import Path

from portcullis.audit.siem_payload import PayloadFormat, messages, octet_frame, syslog_message
from portcullis.config.model import SiemTlsConfig, SyslogSiemConfig
from portcullis.errors import StoreUnavailable
from portcullis.stores.base import AuditBatch

__all__ = ["SyslogSink", "siem_tls_context"]


def siem_tls_context(tls: SiemTlsConfig, base_dir: Path) -> ssl.SSLContext:
    """A client context that trusts only ``tls.ca_file`` and checks the name (reads files: call off the loop)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(base_dir / tls.ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert_file is not None and tls.key_file is not None:
        context.load_cert_chain(str(base_dir / tls.cert_file), str(base_dir / tls.key_file))
    return context


class SyslogSink:
    """``AuditSink`` writing RFC 5424 messages in octet-counting frames to one TCP (or TLS) connection."""

    def __init__(self, config: SyslogSiemConfig, *, base_dir: Path, hostname: str | None = None) -> None:
        self.name = config.name
        self._config = config
        self._base = base_dir
        self._format: PayloadFormat = config.format
        self._hostname = hostname if hostname is not None else socket.gethostname()
        self._procid = str(os.getpid())
        self._context: ssl.SSLContext | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()

    @property
    def buffered(self) -> int:
        """Bytes the open connection still holds for the receiver (0 without one)."""
        if self._writer is None or self._writer.transport.is_closing():
            return 0
        return self._writer.transport.get_write_buffer_size()

    def frames(self, batch: AuditBatch) -> bytes:
        """The batch as consecutive frames (pure CPU; the sink runs it in a worker thread)."""
        cfg = self._config
        return b"".join(
            octet_frame(syslog_message(m, facility=cfg.facility, hostname=self._hostname, app_name=cfg.app_name,
                                       procid=self._procid))
            for m in messages(batch.rows, batch.lines, self._format)
        )

    async def write(self, batch: AuditBatch) -> None:
        """Send the batch; raises ``StoreUnavailable`` when it cannot (the lane spills it and retries)."""
        if not len(batch):
            return
        data = await asyncio.to_thread(self.frames, batch)
        if not data:
            return
        async with self._lock:
            writer = await self._connection()
            try:
                writer.write(data)
                async with asyncio.timeout(self._config.write_timeout):
                    await writer.drain()
            except (OSError, TimeoutError) as exc:
                self._drop()
                raise StoreUnavailable(f"syslog sink {self.name}: write failed ({exc!r})") from None

    async def _connection(self) -> asyncio.StreamWriter:
        if self._writer is not None and self._reader is not None:
            if not self._writer.transport.is_closing() and not self._reader.at_eof():
                return self._writer
            self._drop()
        cfg = self._config
        try:
            context = None
            if cfg.tls is not None:
                if self._context is None:
                    self._context = await asyncio.to_thread(siem_tls_context, cfg.tls, self._base)
                context = self._context
            async with asyncio.timeout(cfg.connect_timeout):
                self._reader, self._writer = await asyncio.open_connection(
                    cfg.host, cfg.port, ssl=context,
                    server_hostname=(cfg.tls.server_name or cfg.host) if cfg.tls is not None else None,
                    ssl_handshake_timeout=cfg.connect_timeout if context is not None else None,
                )
        except (OSError, TimeoutError) as exc:
            self._drop()
            raise StoreUnavailable(f"syslog sink {self.name}: cannot connect ({exc!r})") from None
        return self._writer

    def _drop(self) -> None:
        """Abort the connection: what the transport still holds is discarded (it waits in the spill file)."""
        if self._writer is not None:
            self._writer.transport.abort()
        self._reader = self._writer = None

    async def aclose(self) -> None:
        async with self._lock:
            writer = self._writer
            self._reader = self._writer = None
            if writer is not None:
                writer.close()
                try:
                    async with asyncio.timeout(self._config.write_timeout):
                        await writer.wait_closed()
                except (OSError, TimeoutError):
                    writer.transport.abort()
