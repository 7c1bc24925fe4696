"""``EventThrottle``: at most one security event per subject per interval, with a count of the rest.

Why: some security events stand for something every request or call already records (a block's
refusal is the request's ``blocked:<id>`` decision; a vault secret injected by an egress call is in
the call's ``egress.secrets``). One event per occurrence would double the audit volume under a flood
(and cost a whole record per call on the egress hot path) without telling an auditor anything the
request records do not; one per subject per interval keeps the security trail (its longer retention,
its own class in a SIEM) with the count of what it stands for.

Memory is bounded: past ``max_tracked`` subjects the table starts over, which at worst writes one
extra event per subject.
"""

from __future__ import annotations

from collections.abc import Hashable

from portcullis.clock import Clock

__all__ = ["EventThrottle"]


class EventThrottle:
    def __init__(self, clock: Clock, *, every_s: float = 60.0, max_tracked: int = 10_000) -> None:
        self._clock = clock
        self._every_s = every_s
        self._max = max_tracked
        self._last: dict[Hashable, list[float]] = {}  # subject -> [monotonic of its last event, occurrences since]

    def admit(self, subject: Hashable) -> int | None:
        """``None``: counted, no event now. Otherwise write the event now; the number is how many
        occurrences of ``subject`` went without one since its last event (0 for the first)."""
        now = self._clock.monotonic()
        last = self._last.get(subject)
        if last is not None and now - last[0] < self._every_s:
            last[1] += 1
            return None
        if last is None and len(self._last) >= self._max:
            self._last.clear()
        self._last[subject] = [now, 0.0]
        return 0 if last is None else int(last[1])
