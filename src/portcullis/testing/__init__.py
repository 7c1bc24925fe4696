"""Public test kit: fakes for time (``ManualClock``) and the pieces tests of Portcullis need.

Only time, DNS and chance are faked in Portcullis tests; everything else is real, such as the
``RecordingUpstream`` backend that records request heads as they arrive.
"""

from __future__ import annotations

from portcullis.testing.upstream import RecordedHead, RecordingUpstream

__all__ = ["ManualClock", "RecordedHead", "RecordingUpstream"]


class ManualClock:
    """A clock that moves only when told to. ``sleep`` advances it instead of waiting."""

    __slots__ = ("_monotonic", "_wall")

    def __init__(self, *, wall: float = 1_700_000_000.0, monotonic: float = 1000.0) -> None:
        self._wall = wall
        self._monotonic = monotonic

    def monotonic(self) -> float:
        return self._monotonic

    def wall(self) -> float:
        return self._wall

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self._wall += seconds
        self._monotonic += seconds

    async def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))
