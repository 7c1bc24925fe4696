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
from portcullis.stores.lru import LruTable, evict, refresh, sweep

__all__ = ["MemoryCounterStore"]

# One entry per (rule, subject): [expires_at, then three numbers per window of the rule]. GCRA
# window: (tat, 0, 0); sliding window: (bucket, current, previous). One entry per rule rather than
# one per window: a three-window rule costs one lookup and one move to the end, not three.
_State = list[float]


class MemoryCounterStore:
    """``CounterStore`` in a table kept in least-recently-updated order (``stores.lru``)."""

    def __init__(self, *, max_entries: int = 1_000_000) -> None:
        self._entries: LruTable[tuple[str, str], _State] = LruTable()
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
        sweep(entries, now)
        allowed = True
        retry_after = 0.0
        violated: str | None = None
        updates: list[tuple[tuple[str, str], _State]] = []
        quota: list[QuotaState] = []
        for rule, subject in hits:
            key = (rule.name, subject)
            state = entries.get(key)
            new_state: _State = [0.0]
            expires = 0.0
            # the tightest window of this rule so far: (remaining, limit, window_s, reset_s)
            best: tuple[int, int, float, float] | None = None
            for spec in rule.specs:
                at = 1 + 3 * spec.index
                if spec.gcra:
                    tat = state[at] if state is not None else now
                    ok, new_tat, wait = gcra_check(tat, now, spec.emission_s, spec.tolerance_s, cost)
                    remaining, reset = gcra_remaining(new_tat, now, spec.emission_s, spec.tolerance_s)
                    new_state += (new_tat, 0.0, 0.0)
                    window_expires = new_tat
                else:
                    bucket, current, previous = (
                        (int(state[at]), int(state[at + 1]), int(state[at + 2])) if state is not None else (-2, 0, 0)
                    )
                    ok, bucket, current, previous, wait, remaining = sliding_check(
                        bucket, current, previous, now, spec.window_s, spec.limit, cost
                    )
                    reset = (bucket + 1) * spec.window_s - now
                    new_state += (float(bucket), float(current), float(previous))
                    window_expires = (bucket + 2) * spec.window_s
                if window_expires > expires:
                    expires = window_expires
                if not ok:
                    if allowed or wait > retry_after:
                        retry_after = wait
                    if allowed:
                        violated = rule.name
                    allowed = False
                if best is None or remaining * best[1] < best[0] * spec.limit:
                    best = (remaining, spec.limit, spec.window_s, reset)
            new_state[0] = expires
            updates.append((key, new_state))
            if best is not None:
                quota.append(QuotaState(rule.name, best[1], best[2], best[0], best[3]))
        if allowed and commit:
            for key, new_state in updates:
                refresh(entries, key, new_state)
            evict(entries, self._max_entries)
        return LimitDecision(allowed, retry_after, violated, tuple(quota))

    async def refund(self, hits: Sequence[tuple[LimitRule, str]], now: float, cost: int) -> None:
        entries = self._entries
        for rule, subject in hits:
            state = entries.get((rule.name, subject))
            if state is None:
                continue
            for spec in rule.specs:
                at = 1 + 3 * spec.index
                if spec.gcra:
                    state[at] = max(now, state[at] - spec.emission_s * cost)
                elif int(state[at]) == int(now // spec.window_s):
                    state[at + 1] = max(0.0, state[at + 1] - cost)

    async def aclose(self) -> None:
        self._entries.clear()
