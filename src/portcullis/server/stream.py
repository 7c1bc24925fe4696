"""``StreamedBody``: a request body handed to the app as it arrives, for a route that opts in.

Why: buffering a whole body before dispatch (``body.py``, nginx's ``proxy_request_buffering on``)
is the safe default, but a large upload then costs a temporary file and reaches the upstream only
after the client's last byte. A route with ``request.body_buffering: streamed`` gets its request
dispatched once the head is checked, and its body fed to the app from ``data_received`` (nginx's
``proxy_request_buffering off``). The trade-off is the operator's to make: the upstream is
contacted before the body is known to be complete and well framed, so a malformed chunk, a body
over the route's limit or a stalled upload is found mid-stream and the upstream sees a cut request.

How the connection uses it (the same ``next_chunk`` / ``finish`` / ``close`` interface the request
cycle knows from ``RequestBody``):

- ``append`` adds what llhttp parsed and says when reading should pause: more than ``high_water``
  bytes wait for an app that has not taken them (backpressure). Taking them, or waiting with
  nothing left, calls ``on_wanted``, and the connection reads on;
- ``end`` marks the body's last byte; ``fail`` hands the app the server's refusal (too large, bad
  framing, too slow) as the ``ClientError`` ``next_chunk`` raises; ``close`` (the client is gone,
  or the app is done) makes ``next_chunk`` raise ``BodyGone``;
- ``paused_s``: how long the body was waiting for the app rather than for the client (before the
  app first asked, and while the app had not taken what was read), which the body timeout and the
  minimum rate do not count against the client.

What it refuses to do: hold more than ``high_water`` bytes (plus one read) for an app that does not
read, or let a body that stopped early look complete: it ends with a refusal or ``BodyGone``,
never with "no more body".
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from portcullis.errors import ClientError

__all__ = ["BodyGone", "StreamedBody"]


class BodyGone(Exception):
    """The body will not go on: the client went away, or the request is over. The request cycle
    answers ``receive`` with ``http.disconnect``."""


class StreamedBody:
    """Bytes parsed but not yet taken by the app, and how the body stands."""

    __slots__ = ("_buffered", "_chunks", "_clock", "_closed", "_error", "_high_water", "_paused_since",
                 "_paused_total", "_waiter", "ended", "on_wanted", "size")

    def __init__(self, high_water: int, clock: Callable[[], float]) -> None:
        self._high_water = high_water
        self._clock = clock
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._closed = False
        self._error: ClientError | None = None
        self._waiter: asyncio.Future[None] | None = None
        # Until the app first asks for the body, the wait is the gateway's (its policies run first).
        self._paused_since: float | None = clock()
        self._paused_total = 0.0
        self.ended = False
        self.size = 0
        self.on_wanted: Callable[[], None] | None = None

    @property
    def paused_s(self) -> float:
        """Seconds the body waited for the app (so far), not for the client."""
        since = self._paused_since
        return self._paused_total + (self._clock() - since if since is not None else 0.0)

    def append(self, data: bytes) -> bool:
        """Add ``data``; ``True`` when the connection should pause reading until ``on_wanted``."""
        if self._closed or self._error is not None:
            return True  # nobody will take it: read no more for this body
        self.size += len(data)
        self._chunks.append(data)
        self._buffered += len(data)
        self._wake()
        if self._buffered <= self._high_water:
            return False
        if self._paused_since is None:
            self._paused_since = self._clock()
        return True

    def end(self) -> None:
        """The body's last byte has been appended."""
        self.ended = True
        self._wake()

    def fail(self, error: ClientError) -> None:
        """The server refused the body mid-way: the app's next ``next_chunk`` raises ``error``."""
        self._error = error
        self._chunks.clear()
        self._wake()

    def close(self) -> None:
        """Drop what is buffered; ``next_chunk`` raises ``BodyGone`` from now on."""
        self._closed = True
        self._chunks.clear()
        self._wake()

    async def finish(self) -> None:
        """Nothing to wait for before dispatch: the app reads the body as it arrives."""

    async def next_chunk(self) -> tuple[bytes, bool]:
        """The bytes that arrived since the last call and whether more follow, waiting for some.

        Raises the server's refusal (``ClientError``) if it refused the body, ``BodyGone`` once
        the body is closed.
        """
        while True:
            if self._closed:
                raise BodyGone()
            if self._error is not None:
                raise self._error
            if self._chunks:
                data = b"".join(self._chunks)
                self._chunks.clear()
                self._buffered = 0
                more = not self.ended
                if more:
                    self._want()
                return data, more
            if self.ended:
                return b"", False
            self._want()
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter

    def _want(self) -> None:
        since, self._paused_since = self._paused_since, None
        if since is not None:
            self._paused_total += self._clock() - since
        if self.on_wanted is not None:
            self.on_wanted()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
