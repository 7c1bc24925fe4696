"""``ServerState``: what every connection of one listener shares.

Why a separate module: the listener creates it and the connections read it; keeping it apart
avoids an import cycle and gives the drain one place to look (``connections``, ``draining``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from portcullis.server.base import ASGIApp, BodyPlanner, RefusalSink
from portcullis.server.caps import ConnectionCaps
from portcullis.server.limits import ServerLimits

if TYPE_CHECKING:
    from portcullis.server.connection import HttpConnection

__all__ = ["ServerState"]


@dataclass(slots=True, eq=False)
class ServerState:
    app: ASGIApp
    limits: ServerLimits
    caps: ConnectionCaps
    sink: RefusalSink | None
    body_plan: BodyPlanner | None
    scheme: str
    connections: set[HttpConnection] = field(default_factory=set)
    # Connections whose response is waiting for the client to read, oldest wait first (dicts keep
    # insertion order). While it waits, the app keeps what the response holds (an upstream
    # connection): their number is capped by ``limits.max_stalled_responses``.
    stalled: dict[HttpConnection, None] = field(default_factory=dict)
    draining: bool = False
    all_closed: asyncio.Event = field(default_factory=asyncio.Event)

    def forget(self, connection: HttpConnection) -> None:
        self.stalled.pop(connection, None)
        self.connections.discard(connection)
        if not self.connections:
            self.all_closed.set()
