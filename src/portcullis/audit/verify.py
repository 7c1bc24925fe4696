"""Checking the audit trail against its hash chains and checkpoints (``portcullis audit verify``).

Why a streaming state machine (``ChainVerifier``): a trail is gigabytes of JSONL or millions of
rows; the verifier holds per chain only its head, the last checkpoint, one record of lookahead and
a bounded window of recent hashes, and is fed records and checkpoints in stream order by either
reader below (``verify_files`` for the JSONL file and its rotated copies, ``verify_store`` for the
``audit`` and ``audit_checkpoints`` tables, paged).

What it reports is the *first* problem of each chain, naming the record (chain, seq, id, and where
it was read) and what happened to it:

- ``changed``: the record's bytes no longer hash to its ``hash``, or its successor links to another
  hash (the record was replaced by one with a recomputed hash);
- ``missing``: a seq never appears (a line or row deleted);
- ``reordered``: a record comes before one it should follow;
- ``truncated``: the chain ends before a seq that a checkpoint, a later run's genesis or an expected
  head (the writer's head file) says it reached;
- ``checkpoint_forged`` / ``checkpoint_unsigned`` / ``checkpoint_mismatch``: a checkpoint whose
  signature does not verify, that has none while a key was given, or whose head is not the chain's.

What it cannot see (``docs/audit.md``): records before a chain's first record or checkpoint here
(rotated, expired or cut off at the start look alike; the report gives where each chain starts);
records cut from the end after the last checkpoint unless an expected head is given; and anything
done by someone holding the signing key, who can rewrite and re-sign history. Exact duplicates (a
replay after a failed write) are counted, not reported. Lines that are not JSON (a torn write) are
counted as torn.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson

from portcullis.audit.chain import ChainHead, checkpoint_payload, genesis_hash, is_checkpoint, split_sealed
from portcullis.audit.signing import CheckpointSigner
from portcullis.stores.base import AuditStore

__all__ = [
    "ChainSummary", "ChainVerifier", "Problem", "ProblemKind", "VerifyReport", "rotated_files", "verify_files",
    "verify_store",
]

_WINDOW = 4096
_PAGE = 1000


class ProblemKind(StrEnum):
    CHANGED = "changed"
    MISSING = "missing"
    REORDERED = "reordered"
    TRUNCATED = "truncated"
    CHECKPOINT_FORGED = "checkpoint_forged"
    CHECKPOINT_UNSIGNED = "checkpoint_unsigned"
    CHECKPOINT_MISMATCH = "checkpoint_mismatch"


@dataclass(frozen=True, slots=True)
class Problem:
    """The first thing wrong with one chain: which record (or checkpoint), where it was read, and how."""

    kind: ProblemKind
    chain: str
    seq: int
    record_id: str | None
    where: str
    detail: str


@dataclass(frozen=True, slots=True)
class ChainSummary:
    """What was verified of one chain: from which seq (and whether from a checkpoint) to which."""

    chain: str
    first_seq: int | None
    last_seq: int | None
    records: int
    checkpoints: int
    anchored: bool  # started at a checkpoint (genesis or retention anchor), not at a bare record
    attested_seq: int | None  # the last seq a checkpoint covers
    final: bool  # the last checkpoint was written by a writer closing cleanly


@dataclass(frozen=True, slots=True)
class VerifyReport:
    chains: list[ChainSummary]
    problems: list[Problem]
    unchained: int  # records written before chaining existed
    duplicates: int
    torn: int
    signatures_checked: bool

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (``portcullis audit verify --json`` and the admin API)."""
        return {
            "ok": self.ok, "signatures_checked": self.signatures_checked, "unchained": self.unchained,
            "duplicates": self.duplicates, "torn": self.torn,
            "problems": [{"kind": p.kind.value, "chain": p.chain, "seq": p.seq, "record_id": p.record_id,
                          "where": p.where, "detail": p.detail} for p in self.problems],
            "chains": [{"chain": c.chain, "first_seq": c.first_seq, "last_seq": c.last_seq, "records": c.records,
                        "checkpoints": c.checkpoints, "anchored": c.anchored, "attested_seq": c.attested_seq,
                        "final": c.final} for c in self.chains],
        }


@dataclass(slots=True)
class _Pending:
    seq: int
    record_id: str | None
    where: str


@dataclass(slots=True)
class _State:
    chain: str
    started: bool = False
    anchored: bool = False
    expect: int = 0
    prev: str = ""
    last_id: str | None = None
    first_seq: int | None = None
    records: int = 0
    checkpoints: int = 0
    attested: int | None = None
    final: bool = False
    pending: _Pending | None = None
    gap_checkpoint: int | None = None  # a checkpoint attested a seq not seen yet
    failed: bool = False
    window: dict[int, str] = field(default_factory=dict)


class ChainVerifier:
    """Feed records and checkpoints in stream order, then ``finish``; see the module docstring."""

    def __init__(self, *, signer: CheckpointSigner | None = None, heads: Sequence[ChainHead] = ()) -> None:
        self._signer = signer
        self._heads = list(heads)
        self._chains: dict[str, _State] = {}
        self._problems: list[Problem] = []
        self._references: list[tuple[ChainHead, str]] = []
        self.unchained = 0
        self.duplicates = 0
        self.torn = 0

    def feed_line(self, line: bytes, where: str) -> None:
        """One JSONL line: a record or a checkpoint."""
        if not line.strip():
            return
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            self.torn += 1
            return
        if not isinstance(row, dict):
            self.torn += 1
        elif is_checkpoint(row):
            self.feed_checkpoint(row, where)
        else:
            self.feed_record(row, line, where)

    def feed_record(self, row: Mapping[str, Any], line: bytes, where: str) -> None:
        chain_id, seq = row.get("chain"), row.get("seq")
        if not isinstance(chain_id, str) or not isinstance(seq, int):
            self.unchained += 1
            return
        state = self._state(chain_id)
        if state.failed:
            return
        record_id = str(row["id"]) if "id" in row else None
        sealed = split_sealed(line)
        actual = hashlib.sha256(sealed.body).hexdigest() if sealed else None
        if sealed is None or actual != sealed.hash:
            self._fail(state, ProblemKind.CHANGED, seq, record_id, where, "its content does not match its hash")
            return
        if not state.started:
            state.started, state.expect, state.prev, state.first_seq = True, seq, str(row.get("prev")), seq
        if state.pending is not None:
            p = state.pending
            if seq == state.expect:
                self._fail(state, ProblemKind.REORDERED, p.seq, p.record_id, p.where,
                           f"seq {p.seq} comes before seq {seq}")
            else:
                self._fail(state, ProblemKind.MISSING, state.expect, None, p.where,
                           f"seq {state.expect} is missing before seq {p.seq} (record {p.record_id})")
            return
        if seq < state.expect:
            if state.window.get(seq) == sealed.hash:
                self.duplicates += 1
            else:
                self._fail(state, ProblemKind.REORDERED, seq, record_id, where,
                           f"seq {seq} comes after seq {state.expect - 1}")
            return
        if seq > state.expect:
            if state.gap_checkpoint is not None:
                self._fail(state, ProblemKind.MISSING, state.expect, None, where,
                           f"seq {state.expect} is missing before seq {seq} (record {record_id})")
            else:
                state.pending = _Pending(seq, record_id, where)
            return
        if row.get("prev") != state.prev:
            self._fail(state, ProblemKind.CHANGED, seq - 1, state.last_id, where,
                       f"record seq {seq} links to another hash than the stored seq {seq - 1}")
            return
        state.prev, state.expect, state.last_id = sealed.hash, seq + 1, record_id
        state.records += 1
        state.gap_checkpoint = None
        state.window[seq] = sealed.hash
        if len(state.window) > _WINDOW:
            del state.window[next(iter(state.window))]

    def feed_checkpoint(self, cp: Mapping[str, Any], where: str) -> None:
        chain_id, seq, head = cp.get("chain"), cp.get("seq"), cp.get("hash")
        if not isinstance(chain_id, str) or not isinstance(seq, int) or not isinstance(head, str):
            self.torn += 1
            return
        state = self._state(chain_id)
        if state.failed:
            return
        cp_id = str(cp.get("id"))
        if self._signer is not None:
            sig = cp.get("sig")
            if not isinstance(sig, str):
                self._fail(state, ProblemKind.CHECKPOINT_UNSIGNED, seq, cp_id, where, "the checkpoint has no signature")
                return
            if cp.get("key_id") != self._signer.key_id or not self._signer.verify(checkpoint_payload(cp), sig):
                self._fail(state, ProblemKind.CHECKPOINT_FORGED, seq, cp_id, where,
                           "the checkpoint's signature does not verify with this key")
                return
        if state.pending is not None:
            p = state.pending
            self._fail(state, ProblemKind.MISSING, state.expect, None, p.where,
                       f"seq {state.expect} is missing before seq {p.seq} (record {p.record_id})")
            return
        if seq == 0 and head != genesis_hash(chain_id):
            self._fail(state, ProblemKind.CHECKPOINT_MISMATCH, seq, cp_id, where,
                       "the genesis hash is not this chain's")
            return
        if not state.started:
            state.started, state.anchored, state.expect, state.prev = True, True, seq + 1, head
            state.first_seq = seq + 1
        elif seq == state.expect - 1:
            if head != state.prev:
                self._fail(state, ProblemKind.CHECKPOINT_MISMATCH, seq, cp_id, where,
                           f"the checkpoint's head is not the hash of record seq {seq}")
                return
        elif seq < state.expect - 1:
            if seq in state.window and state.window[seq] != head:
                self._fail(state, ProblemKind.CHECKPOINT_MISMATCH, seq, cp_id, where,
                           f"the checkpoint's head is not the hash of record seq {seq}")
                return
        else:
            state.gap_checkpoint = seq
        state.checkpoints += 1
        state.attested = max(seq, state.attested or 0)
        state.final = bool(cp.get("final"))
        previous = cp.get("previous")
        if isinstance(previous, dict):
            try:
                ref = ChainHead(str(previous["chain"]), int(previous["seq"]), str(previous["hash"]))
            except (KeyError, TypeError, ValueError):
                return
            self._references.append((ref, f"{where} (genesis of {chain_id})"))

    def finish(self) -> VerifyReport:
        for state in self._chains.values():
            if state.failed:
                continue
            if state.pending is not None:
                p = state.pending
                self._fail(state, ProblemKind.MISSING, state.expect, None, p.where,
                           f"seq {state.expect} is missing before seq {p.seq} (record {p.record_id})")
            elif state.gap_checkpoint is not None:
                self._fail(state, ProblemKind.TRUNCATED, state.expect, None, "end",
                           f"a checkpoint attests seq {state.gap_checkpoint}; the chain ends at seq {state.expect - 1}")
        for ref, where in [*self._references, *((h, "expected head") for h in self._heads)]:
            found = self._chains.get(ref.chain)
            if found is None or found.failed or not found.started:
                continue
            last = found.expect - 1
            if last < ref.seq:
                self._fail(found, ProblemKind.TRUNCATED, last + 1, None, where,
                           f"the chain ends at seq {last}; {where} says it reached seq {ref.seq}")
            elif found.window.get(ref.seq, ref.hash) != ref.hash:
                self._fail(found, ProblemKind.CHECKPOINT_MISMATCH, ref.seq, None, where,
                           f"{where} names another hash for seq {ref.seq}")
        chains = [
            ChainSummary(s.chain, s.first_seq, s.expect - 1 if s.started else None, s.records, s.checkpoints,
                         s.anchored, s.attested, s.final)
            for s in sorted(self._chains.values(), key=lambda s: s.chain)
        ]
        return VerifyReport(chains, list(self._problems), self.unchained, self.duplicates, self.torn,
                            self._signer is not None)

    def _state(self, chain_id: str) -> _State:
        state = self._chains.get(chain_id)
        if state is None:
            state = self._chains[chain_id] = _State(chain_id)
        return state

    def _fail(self, state: _State, kind: ProblemKind, seq: int, record_id: str | None, where: str,
              detail: str) -> None:
        state.failed = True
        self._problems.append(Problem(kind, state.chain, seq, record_id, where, detail))


def rotated_files(path: Path) -> list[Path]:
    """``path`` and its rotated copies, oldest first (``path.N`` … ``path.1``, ``path``)."""
    rotated: list[tuple[int, Path]] = []
    for candidate in path.parent.glob(f"{path.name}.*"):
        suffix = candidate.name[len(path.name) + 1:]
        if suffix.isdigit():
            rotated.append((int(suffix), candidate))
    files = [p for _, p in sorted(rotated, reverse=True)]
    return [*files, path] if path.exists() else files


def verify_files(
    paths: Iterable[Path], *, signer: CheckpointSigner | None = None, heads: Sequence[ChainHead] = (),
) -> VerifyReport:
    """Verify JSONL files read in the order given (``rotated_files`` gives the writer's order).
    Blocking file I/O: call it from a worker thread inside an event loop."""
    verifier = ChainVerifier(signer=signer, heads=heads)
    for path in paths:
        with path.open("rb") as f:
            for number, line in enumerate(f, 1):
                verifier.feed_line(line, f"{path}:{number}")
    return verifier.finish()


async def verify_store(
    store: AuditStore, *, signer: CheckpointSigner | None = None, heads: Sequence[ChainHead] = (), page: int = _PAGE,
) -> VerifyReport:
    """Verify every chain in the store, chain by chain, records and checkpoints merged by seq, in pages."""
    verifier = ChainVerifier(signer=signer, heads=heads)
    for info in await store.audit_chains():
        checkpoints = _Paged(page)
        records = _Paged(page)
        while True:
            if checkpoints.empty and not checkpoints.done:
                checkpoints.fill(await store.chain_checkpoints(info.chain, after_seq=checkpoints.after, limit=page),
                                 lambda c: int(c["seq"]))
            if records.empty and not records.done:
                records.fill(await store.chain_lines(info.chain, after_seq=records.after, limit=page),
                             lambda r: r.seq)
            cp = checkpoints.peek()
            rec = records.peek()
            if cp is None and rec is None:
                break
            if cp is not None and (rec is None or int(cp["seq"]) < rec.seq):
                verifier.feed_checkpoint(checkpoints.pop(), f"store checkpoint {cp.get('id')}")
            else:
                line = records.pop()
                verifier.feed_line(line.line, f"store seq {line.seq}")
    return verifier.finish()


class _Paged:
    """One page of rows in hand, with where the next page starts."""

    def __init__(self, page: int) -> None:
        self._page = page
        self._rows: Iterator[Any] = iter(())
        self._head: Any = None
        self.after = -1
        self.done = False

    @property
    def empty(self) -> bool:
        return self._head is None

    def fill(self, rows: Sequence[Any], seq_of: Callable[[Any], int]) -> None:
        if len(rows) < self._page:
            self.done = True
            if rows:
                self.after = seq_of(rows[-1])
        else:
            # Two checkpoints can share a seq (a periodic and a final one): never end a full page in
            # the middle of a seq; its rows are read again with the next page.
            last = seq_of(rows[-1])
            kept = [r for r in rows if seq_of(r) != last]
            if kept:
                rows = kept
                self.after = last - 1
            else:
                self.after = last
        self._rows = iter(rows)
        self._head = next(self._rows, None)

    def peek(self) -> Any:
        return self._head

    def pop(self) -> Any:
        head = self._head
        self._head = next(self._rows, None)
        return head
