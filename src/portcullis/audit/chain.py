"""The hash chain over the audit trail: every record sealed to the one before it, checkpoints signed.

Scheme (``docs/audit.md`` has the operator's view):

- **Chains.** Each writer process (instance) keeps one chain per record class (``request``,
  ``security``, ``compliance``, ``debug``, or any other class a record names). A chain id is
  ``<instance>/<class>``, the instance being 16 random hex digits drawn when the writer starts.
  Why per process: several gateways write into one PostgreSQL table, and a chain shared between
  them would need a cross-instance lock on the writer path; separate chains need nothing.
  Why per class: retention removes old records class by class (request after 90 days, security
  after a year). With one chain per class, expiry only ever removes the *oldest prefix* of a
  chain, up to a checkpoint, and what remains still links to that checkpoint; with a mixed chain,
  expiring request records would punch holes that no verifier could tell from deletions.
- **Records.** The writer adds ``chain``, ``seq`` (1, 2, … within the chain) and ``prev`` (the
  previous record's ``hash``; for seq 1 the genesis hash) to the record, serialises it once with
  orjson (``body``), and appends ``"hash"``: ``hash = SHA-256(body)`` in hex, where ``body`` is the
  stored line with its final ``,"hash":"…"`` member removed. ``body`` holds ``prev``, so the hash
  covers the previous hash and the record. Verification works on the stored bytes and needs no
  canonical re-serialisation: any change to the line (a field, a space) changes the hash.
- **Checkpoints.** A line (JSONL) or a row (``audit_checkpoints``) of its own, marked
  ``"kind": "checkpoint"``: the chain, the ``seq`` and ``hash`` of the chain's latest record, the
  time, and a signature (``sig``, with ``alg`` and ``key_id``) over the checkpoint's other fields
  as JSON with sorted keys. One is written after every ``every`` records of a chain, when
  ``interval_s`` has passed since the last one and records arrived meanwhile, and a ``final`` one
  when the writer closes. Without a signing key checkpoints still carry the heads, unsigned.
- **Genesis.** A chain begins with a checkpoint at ``seq`` 0 whose ``hash`` is
  ``SHA-256("portcullis-audit-genesis\\n" + chain id)``, and whose ``previous`` names the head
  (chain, seq, hash) that the previous writer process of this instance left in its head file
  (``audit.heads_file``, rewritten at every checkpoint), when there was one. ``verify`` checks
  that the referenced chain reaches that head, so a truncated tail of the previous run shows.

Cost on the writer path: one ``sha256`` over bytes already serialised and one bytes concatenation
per record (about 1 µs for a 600-byte record); the batch is serialised in a worker thread as
before, and sealing happens in the same thread call, in submission order, so every sink receives
the same sealed lines.

What this module does not do: read the trail back (``audit.verify``), or persist anything but the
small head file. It trusts its caller to seal batches one at a time (the writer's dispatch lock).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from portcullis.audit.signing import CheckpointSigner
from portcullis.clock import Clock
from portcullis.ids import random_hex
from portcullis.stores.audit_rows import CHECKPOINT, is_checkpoint

__all__ = [
    "CHECKPOINT", "ChainHead", "Chainer", "checkpoint_payload", "genesis_hash", "is_checkpoint", "read_heads",
    "split_sealed",
]

log = logging.getLogger("portcullis.audit")

_HASH_MEMBER = b',"hash":"'
_HASH_TAIL = len(_HASH_MEMBER) + 64 + 2  # ,"hash":"<64 hex>"}


class ChainHead(NamedTuple):
    """Where a chain stands: its id, its last record's ``seq`` and that record's ``hash``."""

    chain: str
    seq: int
    hash: str


class SealedLine(NamedTuple):
    """A stored record split into what its hash covers (``body``) and the hash it claims."""

    body: bytes
    hash: str


def genesis_hash(chain: str) -> str:
    """The ``prev`` of a chain's first record."""
    return hashlib.sha256(b"portcullis-audit-genesis\n" + chain.encode()).hexdigest()


def split_sealed(line: bytes) -> SealedLine | None:
    """``line`` as body and claimed hash, or None if it does not end in a hash member."""
    line = line.rstrip(b"\r\n")
    if len(line) < _HASH_TAIL or not line.endswith(b'"}'):
        return None
    cut = len(line) - _HASH_TAIL
    if line[cut:cut + len(_HASH_MEMBER)] != _HASH_MEMBER:
        return None
    claimed = line[cut + len(_HASH_MEMBER):-2]
    try:
        text = claimed.decode("ascii")
    except UnicodeDecodeError:
        return None
    return SealedLine(line[:cut] + b"}", text)


def checkpoint_payload(checkpoint: Mapping[str, Any]) -> bytes:
    """The bytes a checkpoint's signature covers: every field but ``sig``, as JSON with sorted keys."""
    return orjson.dumps({k: v for k, v in checkpoint.items() if k != "sig"}, option=orjson.OPT_SORT_KEYS)


@dataclass(slots=True)
class _Chain:
    id: str
    record_class: str
    seq: int
    hash: str
    since_checkpoint: int
    checkpoint_at: float


@dataclass(frozen=True, slots=True)
class Sealed:
    """One sealed batch: the rows (records and checkpoints, in stream order) and their JSON lines."""

    rows: list[dict[str, Any]]
    lines: list[bytes]


class Chainer:
    """Seals records into per-class chains and emits checkpoints; see the module docstring."""

    def __init__(
        self, *, clock: Clock, signer: CheckpointSigner | None = None, every: int = 10_000,
        interval_s: float = 60.0, head_file: Path | None = None, instance: str | None = None,
    ) -> None:
        if every < 1:
            raise ValueError("checkpoints need every >= 1")
        self.instance = instance or random_hex(64)
        self._clock = clock
        self._signer = signer
        self._every = every
        self._interval = interval_s
        self._head_file = head_file
        self._previous: dict[str, ChainHead] | None = None  # read at the first seal, in the writer's thread
        self._chains: dict[str, _Chain] = {}

    @property
    def heads(self) -> dict[str, ChainHead]:
        """Each class's chain head now."""
        return {cls: ChainHead(c.id, c.seq, c.hash) for cls, c in self._chains.items()}

    def seal(self, records: Iterable[dict[str, Any]]) -> Sealed:
        """Seal ``records`` in order (each mapping gains ``chain``, ``seq``, ``prev``, ``hash``),
        with genesis and due checkpoints placed after the record they attest."""
        out = Sealed([], [])
        touched: dict[str, _Chain] = {}
        sha256 = hashlib.sha256
        for record in records:
            cls = str(record.get("class") or "request")
            chain = self._chains.get(cls) or self._open(cls, out)
            seq = chain.seq + 1
            record["chain"], record["seq"], record["prev"] = chain.id, seq, chain.hash
            body = orjson.dumps(record)
            digest = sha256(body).hexdigest()
            record["hash"] = digest
            out.rows.append(record)
            out.lines.append(body[:-1] + _HASH_MEMBER + digest.encode() + b'"}')
            chain.seq, chain.hash = seq, digest
            chain.since_checkpoint += 1
            touched[cls] = chain
            if chain.since_checkpoint >= self._every:
                self._checkpoint(chain, out, final=False)
        now = self._clock.wall()
        for chain in touched.values():
            if chain.since_checkpoint and now - chain.checkpoint_at >= self._interval:
                self._checkpoint(chain, out, final=False)
        return out

    def due(self) -> Sealed:
        """Checkpoints whose interval has passed with records not yet attested (the writer's idle tick)."""
        out = Sealed([], [])
        now = self._clock.wall()
        for chain in self._chains.values():
            if chain.since_checkpoint and now - chain.checkpoint_at >= self._interval:
                self._checkpoint(chain, out, final=False)
        return out

    def close(self) -> Sealed:
        """A ``final`` checkpoint for every chain (the writer is closing)."""
        out = Sealed([], [])
        for chain in self._chains.values():
            self._checkpoint(chain, out, final=True)
        return out

    def _open(self, cls: str, out: Sealed) -> _Chain:
        chain_id = f"{self.instance}/{cls}"
        chain = _Chain(chain_id, cls, 0, genesis_hash(chain_id), 0, self._clock.wall())
        self._chains[cls] = chain
        if self._previous is None:
            self._previous = read_heads(self._head_file) if self._head_file is not None else {}
        previous = self._previous.get(cls)
        extra = {"previous": previous._asdict()} if previous is not None else {"previous": None}
        self._emit(chain, out, final=False, extra=extra)
        return chain

    def _checkpoint(self, chain: _Chain, out: Sealed, *, final: bool) -> None:
        self._emit(chain, out, final=final, extra={})
        self._save_heads()

    def _emit(self, chain: _Chain, out: Sealed, *, final: bool, extra: dict[str, Any]) -> None:
        now = self._clock.wall()
        checkpoint: dict[str, Any] = {
            "id": f"{chain.id}:{chain.seq}{':final' if final else ''}", "kind": CHECKPOINT, "chain": chain.id,
            "class": chain.record_class, "seq": chain.seq,
            "hash": chain.hash, "ts": now, "time": _iso(now), "final": final, **extra,
            "alg": self._signer.alg if self._signer else None,
            "key_id": self._signer.key_id if self._signer else None,
        }
        checkpoint["sig"] = self._signer.sign(checkpoint_payload(checkpoint)) if self._signer else None
        out.rows.append(checkpoint)
        out.lines.append(orjson.dumps(checkpoint))
        chain.since_checkpoint = 0
        chain.checkpoint_at = now

    def _save_heads(self) -> None:
        if self._head_file is None:
            return
        data = orjson.dumps({cls: head._asdict() for cls, head in self.heads.items()})
        # A temporary name of this instance's own: with ``listen.workers`` > 1 several processes share the file.
        tmp = self._head_file.with_name(f"{self._head_file.name}.{self.instance}.tmp")
        try:
            self._head_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            tmp.replace(self._head_file)
        except OSError as exc:  # the chain stays sound; only the next genesis loses its back-reference
            log.warning("audit chain head file %s not written (%r)", self._head_file, exc)


def read_heads(path: Path) -> dict[str, ChainHead]:
    """The heads a previous writer left in ``path`` (empty when there is none or it is unreadable)."""
    try:
        data = orjson.loads(path.read_bytes())
        return {str(cls): ChainHead(str(h["chain"]), int(h["seq"]), str(h["hash"])) for cls, h in data.items()}
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return {}


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"
