"""Events every gateway instance must hear at once: a key revoked, a config reloaded, a breaker moved,
an incident control (block, emergency limit) made or lifted.

Why Redis pub/sub: the instances already share a Redis, and these events are small, rare and need
no history. Delivery is at most once; what a missed event would leave stale has a second line of
its own (cached keys expire after ``keys.cache_ttl``; breaker states are re-read from their keys
on every reconnect; incident controls are re-read on every reconnect and every
``controls.refresh_interval``; a missed reload is a config that differs until the next one, which ``/readyz``
and the reload metric show).

The listener runs on its own connection without a read timeout (a subscriber waits for as long as
nothing happens) but with a health-check ping, so a silently dead link is noticed. It reconnects
with a backoff doubling from 0.1 s to 5 s and tells ``on_connected`` callbacks each time, so state
that may have changed meanwhile is read again. An instance hears its own events too; ``Event``
carries the sender's id for handlers that must not act twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from portcullis.background import stop_task

__all__ = ["BREAKER_EVENT", "CONTROLS_EVENT", "RELOAD_EVENT", "REVOKE_EVENT", "Event", "RedisEventBus", "encode_event"]

log = logging.getLogger("portcullis.shared_state")

_MAX_EVENT_BYTES = 4096

REVOKE_EVENT = "revoke"  # {key_id}: forget the cached key
RELOAD_EVENT = "reload"  # {}: reload the config file
BREAKER_EVENT = "breaker"  # {route, state, open_for_s}: adopt a breaker state
CONTROLS_EVENT = "controls"  # {}: re-read the incident controls (a block or emergency limit changed)


@dataclass(frozen=True, slots=True)
class Event:
    kind: str
    origin: str  # the sending instance's id
    data: dict[str, Any]


Handler = Callable[[Event], Awaitable[None]]


def encode_event(kind: str, origin: str, data: dict[str, Any]) -> bytes:
    """The wire form of an event (also used by the CLI, which publishes without listening)."""
    return orjson.dumps({"k": kind, "o": origin, "d": data})


class RedisEventBus:
    """Publish on ``publisher`` (the shared, short-timeout client); listen on ``subscriber``."""

    def __init__(self, publisher: Redis, subscriber: Redis, *, channel: str, instance_id: str) -> None:
        self._pub = publisher
        self._sub = subscriber
        self._channel = channel
        self.instance_id = instance_id
        self._handlers: list[Handler] = []
        self._on_connected: list[Callable[[], Awaitable[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def subscribe(self, handler: Handler) -> None:
        self._handlers.append(handler)

    def on_connected(self, callback: Callable[[], Awaitable[None]]) -> None:
        self._on_connected.append(callback)

    async def publish(self, kind: str, **data: Any) -> bool:
        """Tell every instance (this one included). False, logged, when Redis cannot be reached."""
        message = encode_event(kind, self.instance_id, data)
        try:
            await self._pub.publish(self._channel, message)
        except (RedisError, OSError) as exc:
            log.warning("could not broadcast %s (%s); other instances catch up by TTL or reconnect",
                        kind, type(exc).__name__)
            return False
        return True

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name="portcullis-shared-events")

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            pubsub = self._sub.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                backoff = 0.1
                self.connected.set()
                for callback in self._on_connected:
                    await self._safely(callback())
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        await self._dispatch(message.get("data"))
            except (RedisError, OSError) as exc:
                if self.connected.is_set():
                    log.warning("shared events: lost the subscription (%s); reconnecting", type(exc).__name__)
                self.connected.clear()
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(backoff)  # operational backoff, not a decision: real time
            backoff = min(5.0, backoff * 2)

    async def _dispatch(self, raw: object) -> None:
        if not isinstance(raw, bytes | str) or len(raw) > _MAX_EVENT_BYTES:
            return
        try:
            body = orjson.loads(raw)
            event = Event(kind=str(body["k"]), origin=str(body["o"]), data=dict(body["d"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("shared events: ignored a malformed message")
            return
        for handler in self._handlers:
            await self._safely(handler(event))

    @staticmethod
    async def _safely(work: Awaitable[None]) -> None:
        try:
            await work
        except Exception:  # one failing handler must not stop the listener
            log.exception("shared events: a handler failed")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)
