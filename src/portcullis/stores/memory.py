"""In-process counter store: limits for one gateway process, with bounded memory.

Why bounded: per-IP limits create one entry per client address, and an attacker controls how many
addresses it shows (IPv6 gives it plenty). Entries expire when idle (a GCRA entry once its
theoretical arrival time has passed, a sliding-window entry once both its buckets are stale); each
call sweeps a few of the least recently updated entries, and a hard ``max_entries`` cap evicts the
least recently updated ones first. Evicting a live entry forgets that key's spending (it fails open
for that key), so the cap is set far above normal working sets; it exists so memory cannot be
exhausted.

Atomicity: ``apply`` never awaits, so one decision cannot interleave with another on the loop.
"""

from __future__ import annotations

from collections.abc import Sequence

from portcullis.limiting.gcra import gcra_check, gcra_remaining
from portcullis.limiting.rules import LimitDecision, LimitRule, QuotaState
from portcullis.limiting.sliding_window import sliding_check

__all__ = ["MemoryCounterStore"]

_SWEEP_PER_CALL = 4

# state: [expires_at, a, b, c] — GCRA: a = tat; sliding: a = bucket, b = current, c = previous
_State = list[float]


class MemoryCounterStore:
    """``CounterStore`` in a dict kept in least-recently-updated order."""

    def __init__(self, *, max_entries: int = 1_000_000) -> None:
        self._entries: dict[tuple[str, str, int], _State] = {}
        self._max_entries = max_entries

    def __len__(self) -> int:
        return len(self._entries)

    def entry_count(self) -> int:
        return len(self._entries)

    async def apply(
        self, hits: Sequence[tuple[LimitRule, str]], now: float, cost: int, *, commit: bool
    ) -> LimitDecision:
        return self.apply_now(hits, now, cost, commit=commit)

    def apply_now(
        self, hits: Sequence[tuple[LimitRule, str]], now: float, cost: int, *, commit: bool
    ) -> LimitDecision:
        entries = self._entries
        self._sweep(now)
        allowed = True
        retry_after = 0.0
        violated: str | None = None
        updates: list[tuple[tuple[str, str, int], _State]] = []
        quota: list[QuotaState] = []
        for rule, subject in hits:
            # the tightest window of this rule so far: (remaining, limit, window_s, reset_s)
            best: tuple[int, int, float, float] | None = None
            for spec in rule.specs:
                key = (rule.name, subject, spec.index)
                state = entries.get(key)
                if spec.gcra:
                    tat = state[1] if state is not None else now
                    ok, new_tat, wait = gcra_check(tat, now, spec.emission_s, spec.tolerance_s, cost)
                    remaining, reset = gcra_remaining(new_tat, now, spec.emission_s, spec.tolerance_s)
                    new_state: _State = [new_tat, new_tat, 0.0, 0.0]
                else:
                    bucket, current, previous = (int(state[1]), int(state[2]), int(state[3])) if state else (-2, 0, 0)
                    ok, bucket, current, previous, wait, remaining = sliding_check(
                        bucket, current, previous, now, spec.window_s, spec.limit, cost
                    )
                    reset = (bucket + 1) * spec.window_s - now
                    new_state = [(bucket + 2) * spec.window_s, float(bucket), float(current), float(previous)]
                if not ok:
                    if allowed or wait > retry_after:
                        retry_after = wait
                    if allowed:
                        violated = rule.name
                    allowed = False
                updates.append((key, new_state))
                if best is None or remaining * best[1] < best[0] * spec.limit:
                    best = (remaining, spec.limit, spec.window_s, reset)
            if best is not None:
                quota.append(QuotaState(rule.name, best[1], best[2], best[0], best[3]))
        if allowed and commit:
            for key, new_state in updates:
                entries.pop(key, None)
                entries[key] = new_state
            overflow = len(entries) - self._max_entries
            for _ in range(max(0, overflow)):
                del entries[next(iter(entries))]
        return LimitDecision(allowed, retry_after, violated, tuple(quota))

    async def refund(self, hits: Sequence[tuple[LimitRule, str]], now: float, cost: int) -> None:
        entries = self._entries
        for rule, subject in hits:
            for spec in rule.specs:
                state = entries.get((rule.name, subject, spec.index))
                if state is None:
                    continue
                if spec.gcra:
                    tat = max(now, state[1] - spec.emission_s * cost)
                    state[0] = state[1] = tat
                elif int(state[1]) == int(now // spec.window_s):
                    state[2] = max(0.0, state[2] - cost)

    def _sweep(self, now: float) -> None:
        entries = self._entries
        for _ in range(_SWEEP_PER_CALL):
            if not entries:
                return
            key = next(iter(entries))
            if entries[key][0] > now:
                return
            del entries[key]

    async def aclose(self) -> None:
        self._entries.clear()
