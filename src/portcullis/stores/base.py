"""Protocols for durable state: API keys, vault secrets, incident controls and the audit trail.

Why Protocols: the same contract is served by SQLite on one machine and PostgreSQL when many
gateways share state; one contract test suite runs against every backend.
Backends translate their own exceptions into ``StoreUnavailable`` and nothing else escapes.

What this module refuses to hold: key and admin-token secrets. A record carries only the HMAC of its secret.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import orjson

__all__ = [
    "MAX_CONTROLS", "AdminTokenRecord", "AdminTokenStore", "ApiKeyRecord", "AuditBatch", "AuditChainInfo",
    "AuditPage", "AuditQuery", "AuditSearch", "AuditSink", "AuditStore", "BudgetCounterStore", "BudgetLine",
    "ChainLine", "ControlRecord", "ControlStore", "EgressStateStore", "ExecutionClockStore", "KeyPage", "KeyStore",
    "LineUsage", "NonceStore", "Reservation", "ReservationRefused", "ReservationStore", "SecretRecord", "SecretStore",
    "Settlement", "SigningKeyRecord", "SigningKeyStore", "Spend", "Store",
]


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """One API key as stored. ``secret_hash`` is HMAC-SHA256(pepper, secret), hex."""

    key_id: str
    consumer_id: str
    secret_hash: str
    scopes: frozenset[str]
    created_at: float
    expires_at: float | None = None
    disabled: bool = False
    last_used_at: float | None = None
    roles: frozenset[str] = frozenset()
    # A rotated key's former secret, accepted until ``previous_valid_until`` (the grace period).
    previous_secret_hash: str | None = None
    previous_valid_until: float | None = None
    revoked_at: float | None = None  # revoked for good (``disabled`` alone can be undone)

    @property
    def state(self) -> str:
        """``revoked``, ``disabled`` or ``active`` (expiry is the reader's to judge against its clock)."""
        if self.revoked_at is not None:
            return "revoked"
        return "disabled" if self.disabled else "active"


@dataclass(frozen=True, slots=True)
class KeyPage:
    """One page of keys in key-id order; ``next_after`` is the cursor for the next page (None: the last)."""

    keys: list[ApiKeyRecord]
    next_after: str | None


class KeyStore(Protocol):
    """Consumers' API keys, looked up by key id."""

    async def create(self, record: ApiKeyRecord) -> None:
        """Store a new key. Raises ``ValueError`` if the key id exists."""
        ...

    async def get(self, key_id: str) -> ApiKeyRecord | None:
        """The key with this id, or None."""
        ...

    async def list(self, consumer_id: str | None = None) -> list[ApiKeyRecord]:
        """Every key, or one consumer's, oldest first."""
        ...

    async def page(self, *, consumer_id: str | None = None, consumer_prefix: str | None = None,
                   after: str | None = None, limit: int = 100) -> KeyPage:
        """Keys in key-id order after the cursor ``after``, filtered by consumer (exact or prefix)."""
        ...

    async def revoke(self, key_id: str, at: float) -> bool:
        """Disable a key for good (``revoked_at``: ``at``). False if there was no such key."""
        ...

    async def set_disabled(self, key_id: str, disabled: bool) -> bool:
        """Disable or enable a key. False if there is no such key or it is revoked."""
        ...

    async def rotate(self, key_id: str, secret_hash: str, previous_valid_until: float) -> bool:
        """Give the key a new secret; the current one keeps working until ``previous_valid_until``.
        False if there is no such key or it is revoked."""
        ...

    async def touch(self, key_id: str, at: float) -> None:
        """Record that the key was used at ``at`` (wall seconds)."""
        ...

    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the store answers."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


@dataclass(frozen=True, slots=True)
class AdminTokenRecord:
    """One admin token as stored. ``consumers``: what a developer token's ``*_own`` permissions cover."""

    token_id: str
    name: str
    role: str
    secret_hash: str
    created_at: float
    created_by: str
    consumers: frozenset[str] = frozenset()
    expires_at: float | None = None
    revoked_at: float | None = None
    last_used_at: float | None = None


class AdminTokenStore(Protocol):
    async def create_admin_token(self, record: AdminTokenRecord) -> None:
        """Store a new token. Raises ``ValueError`` if the id exists."""
        ...

    async def get_admin_token(self, token_id: str) -> AdminTokenRecord | None:
        ...

    async def list_admin_tokens(self) -> list[AdminTokenRecord]:
        """Every token, oldest first."""
        ...

    async def revoke_admin_token(self, token_id: str, at: float) -> bool:
        """Revoke for good. False if there was no such token (or it was already revoked)."""
        ...

    async def touch_admin_token(self, token_id: str, at: float) -> None:
        ...


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Filters for reading the audit trail back."""

    since: float | None = None
    until: float | None = None
    consumer_id: str | None = None
    route: str | None = None
    decision: str | None = None
    limit: int = 100


@dataclass(frozen=True, slots=True)
class AuditSearch:
    """Filters for searching the audit trail; every field that is set must match. ``cursor`` resumes
    after the last record of a previous page (``AuditPage.next_cursor``); ``limit`` is a page size."""

    since: float | None = None
    until: float | None = None
    consumer_id: str | None = None
    key_id: str | None = None
    route: str | None = None
    decision: str | None = None
    status: int | None = None
    workflow_id: str | None = None
    execution_id: str | None = None
    user_id: str | None = None
    request_id: str | None = None
    record_class: str | None = None
    limit: int = 100
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class AuditPage:
    """One page of a search, ordered by (ts, id); ``next_cursor`` is None on the last page."""

    records: list[dict[str, Any]]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class AuditChainInfo:
    """A hash chain the store holds records or checkpoints of, and its record class."""

    chain: str
    record_class: str


@dataclass(frozen=True, slots=True)
class ChainLine:
    """One stored record of a chain: its ``seq`` column and the line as the writer sealed it."""

    seq: int
    line: bytes


@dataclass(frozen=True, slots=True)
class AuditBatch:
    """Audit records as every sink receives them: each one both as a mapping and as its JSON line.

    Why both: a record is serialised once, by the writer, off the request path; the JSONL sink and
    the spill file write the lines, the database sinks read the filter columns from the mappings
    and store the line as the record text. ``lines[i]`` is ``rows[i]`` as compact JSON, no newline.
    """

    rows: Sequence[Mapping[str, Any]]
    lines: Sequence[bytes]

    @classmethod
    def of(cls, rows: Sequence[Mapping[str, Any]]) -> AuditBatch:
        """Serialise ``rows`` (JSON-ready mappings) into a batch."""
        return cls(rows, [orjson.dumps(r) for r in rows])

    def __len__(self) -> int:
        return len(self.rows)

    def payload(self) -> bytes:
        """The batch as JSON lines, each ending in a newline: one write for a file."""
        return b"\n".join(self.lines) + b"\n" if self.lines else b""


class AuditSink(Protocol):
    """Somewhere audit records are written in batches.

    Records are JSON-ready mappings carrying a unique ``id``; writing the same record twice must
    store it once (replay after a failure is idempotent).
    """

    async def write(self, batch: AuditBatch) -> None:
        """Write a batch. Raises ``StoreUnavailable`` (or ``OSError`` for files) on failure."""
        ...

    async def aclose(self) -> None:
        """Flush and release resources."""
        ...


@dataclass(frozen=True, slots=True)
class SecretRecord:
    """One vault secret as stored: only its ciphertext (a Fernet token) and a keyed fingerprint."""

    name: str
    ciphertext: bytes
    fingerprint: str
    created_at: float
    updated_at: float
    last_used_at: float | None = None


class SecretStore(Protocol):
    """Encrypted secrets by name. The store never sees a plaintext."""

    async def put_secret(self, record: SecretRecord) -> None:
        """Insert or replace (keeping ``created_at`` and ``last_used_at`` of an existing name)."""
        ...

    async def get_secret(self, name: str) -> SecretRecord | None:
        ...

    async def list_secrets(self) -> list[SecretRecord]:
        """Every secret, by name."""
        ...

    async def delete_secret(self, name: str) -> bool:
        """True if it existed."""
        ...

    async def touch_secret(self, name: str, at: float) -> None:
        """Record a use (only moves forward)."""
        ...

    async def replace_ciphertexts(self, ciphertexts: Mapping[str, bytes], at: float) -> None:
        """Swap every named ciphertext at once (master-key rotation): all or nothing."""
        ...


MAX_CONTROLS = 100_000  # the most active controls one read returns: a snapshot stays a few MB at most


@dataclass(frozen=True, slots=True)
class ControlRecord:
    """One incident control as stored (``portcullis.controls`` gives it meaning): a block, or an
    emergency limit (``factor`` set). Times are wall seconds.

    ``expires_at``: a block stops applying then (None: until lifted); an emergency limit holds its
    factor until then and ramps back to 1 over the next ``restore_s`` seconds. ``lifted_at``: an
    operator ended it; the row stays, for the record."""

    control_id: str
    kind: str  # "block" | "emergency"
    subject_kind: str  # block: consumer|key|address|workflow|user|execution; emergency: gateway|route|consumer
    subject: str
    reason: str
    created_at: float
    created_by: str
    expires_at: float | None = None
    factor: float | None = None
    restore_s: float = 0.0
    lifted_at: float | None = None
    lifted_by: str | None = None

    def ends_at(self) -> float | None:
        """When it stops having any effect (None: never, unless lifted)."""
        return None if self.expires_at is None else self.expires_at + self.restore_s


class ControlStore(Protocol):
    """Incident controls (blocks and emergency limits), durable and shared by every instance."""

    async def add_control(self, record: ControlRecord) -> None:
        """Store a new control. Raises ``ValueError`` if its id exists."""
        ...

    async def lift_control(self, control_id: str, at: float, by: str) -> bool:
        """End a control now. False if there is no such control or it was already lifted."""
        ...

    async def list_controls(self, *, active_at: float | None = None) -> list[ControlRecord]:
        """Controls oldest first, at most ``MAX_CONTROLS``. ``active_at``: only those not lifted and
        still having an effect at that wall time; None: every control ever made, lifted ones included."""
        ...


class Spend(NamedTuple):
    """One budget counter an egress call touches: its key, its cap, its window, what the call costs from it.

    A named tuple rather than a frozen dataclass: a call makes one per budget (seven with every
    budget on), and a tuple is made in a third of the time."""

    name: str  # which budget, for the 429 body and the audit: "execution_calls", "user_cost_per_day", …
    key: str
    limit: int
    window_s: float
    amount: int


class BudgetCounterStore(Protocol):
    """Anchored-window counters for egress budgets, spent all or nothing (memory or Redis)."""

    async def spend(self, items: Sequence[Spend], now: float) -> tuple[bool, int | None, list[int], float]:
        """(allowed, index of the first refusing item, used after the call per item, its reset in s).

        The index is -1 when the store refuses without deciding (a shared store that is down)."""
        ...

    async def used(self, items: Sequence[Spend], now: float) -> list[int]:
        """What each counter holds now (0 for one not used in its current window). Spends nothing."""
        ...

    async def reset(self, keys: Sequence[str]) -> None:
        """Forget these counters (an operator's budget reset): the next call starts a fresh window."""
        ...


class ExecutionClockStore(Protocol):
    """When each egress execution started, for its maximum lifetime (the budget stores hold it too)."""

    async def execution_age(self, key: str, now: float, keep_s: float, *, start: bool = True) -> float | None:
        """Seconds since ``key``'s first call. The first time, with ``start``, its clock starts now
        (0.0) and is remembered for ``keep_s``; without ``start`` (a dry run) nothing is written and
        an unknown key is ``None``."""
        ...


class EgressStateStore(BudgetCounterStore, ExecutionClockStore, Protocol):
    """What a budget store backend holds: the counters and the executions' starts."""


@dataclass(frozen=True, slots=True)
class BudgetLine:
    """One budget a reservation holds from: its key, its cap, its window, and the amount (tokens or
    cost micro-units) this call reserves, or, given to ``settle``, what it used.

    ``window_s`` None: a lifetime total that never resets (an operator's reset clears it)."""

    name: str  # which budget, for the 429 body and the audit: "llm_execution_tokens", "llm_route_tokens_per_minute", …
    key: str
    limit: int
    window_s: float | None
    amount: int


@dataclass(frozen=True, slots=True)
class Reservation:
    """Capacity held on every line until settled, released, or ``expires_at`` (the store's clock).

    ``left``: per line, what another call could reserve right after this hold (limit - used -
    reserved, this hold included, at least 0), read in the same atomic step as the hold."""

    reservation_id: str
    lines: tuple[BudgetLine, ...]
    expires_at: float
    left: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ReservationRefused:
    """The first line the reservation did not fit. ``available``: limit - used - reserved (>= 0);
    ``reset_s``: until that line's window starts again (None for a lifetime total). ``index`` -1:
    the store refused without deciding (a shared store that is down)."""

    index: int
    name: str
    available: int
    reset_s: float | None


@dataclass(frozen=True, slots=True)
class Settlement:
    """What ``settle`` did: ``charged`` per line, and whether the hold had expired before it came
    (its capacity was then already released; the actual amount is charged all the same).
    ``left``: per line, what a call could reserve right after it (as ``Reservation.left``); empty
    when the store could not tell. ``lost``: the shared store was down, so the charge never reached
    it (the hold stops holding at its expiry, and the amount is not charged anywhere)."""

    charged: tuple[int, ...]
    expired: bool
    left: tuple[int, ...]
    lost: bool = False

    def over(self, reservation: Reservation) -> tuple[int, ...]:
        """Per line, how far the charge passed what was reserved (0 when it did not)."""
        return tuple(max(0, c - line.amount) for c, line in zip(self.charged, reservation.lines, strict=True))


@dataclass(frozen=True, slots=True)
class LineUsage:
    """One line now: spent in its current window, and held by live reservations."""

    used: int
    reserved: int


class ReservationStore(Protocol):
    """Budgets spent in two steps: reserve the most a call can spend, then settle to what it used.

    Why: a budget charged after the answer lets every parallel call pass the check before any is
    charged (the overshoot peers report). Here a line admits a reservation only if
    ``used + reserved + amount <= limit``, for every line at once or for none, atomically, so the
    sum of what is admitted never passes a limit however many calls race. Windows are anchored at
    a line's first charge (like ``BudgetCounterStore``); reservations are not windowed: a hold
    counts against whatever window is current until it ends.

    A reservation that is never settled (a crashed instance) stops holding capacity at its
    ``expires_at``: ``reserve`` drops expired holds before it checks.

    Each step answers what is left of its lines (``left``), read in the same atomic step, so the
    caller can say what is left (``X-Budget-Remaining``, the budget gauges) without another read.
    """

    async def reserve(
        self, lines: Sequence[BudgetLine], now: float, *, ttl_s: float,
    ) -> Reservation | ReservationRefused:
        """Hold ``line.amount`` on every line, or on none. Raises ``StoreUnavailable`` when it cannot tell."""
        ...

    async def settle(self, reservation: Reservation, actual: Sequence[int], now: float) -> Settlement:
        """End the hold and charge ``actual[i]`` to line ``i``'s current window, whatever was
        reserved: less than reserved releases the rest, more is charged in full (the tokens were
        spent; the line may then stand over its limit, and refuses until its window resets). Call
        once per reservation; ``release`` instead when nothing was sent."""
        ...

    async def release(self, reservation: Reservation, now: float) -> tuple[int, ...]:
        """End the hold and charge nothing (the call failed before it was sent). Returns what is
        left per line after it, as ``Settlement.left`` (empty when the store could not tell)."""
        ...

    async def usage(self, lines: Sequence[BudgetLine], now: float) -> list[LineUsage]:
        """Each line's used and reserved amounts now. Spends nothing."""
        ...

    async def reset(self, keys: Sequence[str]) -> None:
        """Forget these lines (an operator's reset): used and holds alike."""
        ...


@dataclass(frozen=True, slots=True)
class SharedBreakerState:
    """A breaker state another instance shared: its route, the state's name, and what is left of an
    open period (0 for the forced states, which last until a reset)."""

    route: str
    state: str
    open_for_s: float


class BreakerStateStore(Protocol):
    """Egress breaker states shared by every instance: a key per route for late readers, an event for
    the listening ones. Never on a call's path: the writes go on in the background."""

    async def share(self, route: str, state: str, open_for_s: float) -> None:
        """Put the route's new state on record (``closed`` removes it) and tell the other instances.
        Raises ``StoreUnavailable`` when the store cannot be reached."""
        ...

    async def states(self, routes: Sequence[str]) -> list[SharedBreakerState]:
        """The states on record for these routes (start-up, reload, reconnect). Raises ``StoreUnavailable``."""
        ...

    def moved(self, kind: str, origin: str, data: Mapping[str, Any]) -> SharedBreakerState | None:
        """The state in another instance's event, or None (not a breaker event, ours, or malformed)."""
        ...


class AuditStore(AuditSink, Protocol):
    """The audit table read back: search, the chains for ``verify``, and retention.

    Checkpoint lines the writer sends are kept apart (``audit_checkpoints``) from the records.
    """

    async def query_audit(self, query: AuditQuery) -> list[dict[str, Any]]:
        """Matching audit records, oldest first."""
        ...

    async def search_audit(self, search: AuditSearch) -> AuditPage:
        """One page of matching records, ordered by (ts, id), at most ``MAX_AUDIT_ROWS``.
        Raises ``CursorInvalid`` for a cursor this store did not make."""
        ...

    async def audit_chains(self) -> list[AuditChainInfo]:
        """Every chain with a record or a checkpoint, by id."""
        ...

    async def chain_lines(self, chain: str, *, after_seq: int, limit: int) -> list[ChainLine]:
        """The chain's records with ``seq > after_seq``, by seq, at most ``limit``."""
        ...

    async def chain_checkpoints(self, chain: str, *, after_seq: int, limit: int) -> list[dict[str, Any]]:
        """The chain's checkpoints with ``seq > after_seq`` (final ones after the others at a seq), by seq."""
        ...

    async def expire_chain(self, chain: str, *, through_seq: int, batch_rows: int) -> int:
        """Delete the chain's records with ``seq <= through_seq`` and its checkpoints below
        ``through_seq``, in one transaction of statements of at most ``batch_rows`` rows; the
        checkpoint at ``through_seq`` stays as the anchor ``verify`` starts from. Callers step from
        checkpoint to checkpoint, so one call deletes at most one checkpoint interval. Returns the
        records deleted."""
        ...


@dataclass(frozen=True, slots=True)
class SigningKeyRecord:
    """A consumer's request-signing key (RFC 9421), by key id.

    ``algorithm`` is the only algorithm the key verifies with. An ``ed25519`` key holds the
    consumer's public key (raw 32 bytes, base64); an ``hmac-sha256`` key holds no secret here, only
    ``secret_name``, the vault entry where the shared secret is kept encrypted (so the vault's
    unlock check and master-key rotation cover it). A key verifies from ``not_before`` until
    ``expires_at`` and never after ``revoked_at``: two keys of one consumer overlap during a rotation.
    """

    key_id: str
    consumer_id: str
    algorithm: str
    created_at: float
    public_key: str | None = None
    secret_name: str | None = None
    scopes: frozenset[str] = frozenset()
    not_before: float | None = None
    expires_at: float | None = None
    revoked_at: float | None = None

    def state(self, now: float) -> str:
        """``revoked``, ``expired``, ``pending`` (before ``not_before``) or ``active`` at ``now``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        if self.not_before is not None and now < self.not_before:
            return "pending"
        return "active"


class SigningKeyStore(Protocol):
    """Request-signing keys by key id."""

    async def create_signing_key(self, record: SigningKeyRecord) -> None:
        """Insert; ``ValueError`` if the key id exists."""
        ...

    async def get_signing_key(self, key_id: str) -> SigningKeyRecord | None:
        ...

    async def list_signing_keys(self, consumer_id: str | None = None) -> list[SigningKeyRecord]:
        """Every key (of one consumer), in key-id order."""
        ...

    async def revoke_signing_key(self, key_id: str, at: float) -> bool:
        """Revoke for good; False if there is no such key or it was revoked already."""
        ...

    async def expire_signing_key(self, key_id: str, at: float) -> bool:
        """Move the key's expiry to ``at`` (a rotation's end of overlap) unless it already ends sooner;
        False if there is no such key or it is revoked."""
        ...


class NonceStore(Protocol):
    """Single-use nonces: a signed request's nonce is claimed once, and refused while remembered."""

    async def claim(self, key: str, ttl_s: float) -> bool:
        """Remember ``key`` for ``ttl_s``; True if it was not already remembered (one atomic step).
        Raises ``StoreUnavailable`` when it cannot tell."""
        ...


class Store(KeyStore, SecretStore, AdminTokenStore, ControlStore, AuditStore, SigningKeyStore, Protocol):
    """The durable store a gateway opens: keys, admin tokens, secrets, incident controls, request-signing
    keys and the audit table in one database (``SqliteStore`` or ``PostgresStore``)."""
