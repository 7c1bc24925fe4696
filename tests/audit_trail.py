"""A sealed audit trail for the evidence tests: real records through a real ``Chainer``.

Shared by the JSONL tests (``tests/unit/audit/test_audit_verify.py``) and the store contract
(``tests/contract/test_audit_evidence.py``), so both tamper with the same kind of trail.
"""

from __future__ import annotations

from typing import Any

from portcullis.audit.chain import Chainer
from portcullis.audit.record import AuditRecord
from portcullis.audit.signing import HmacSigner
from portcullis.stores.base import AuditBatch
from portcullis.testing import ManualClock

SIGNER = HmacSigner(b"k" * 32)


def record(clock: ManualClock, n: int, *, record_class: str = "request", **fields: Any) -> AuditRecord:
    clock.advance(0.001)
    values: dict[str, Any] = {
        "request_id": f"req-{n}", "client_ip": "192.0.2.1", "consumer_id": "acme", "key_id": "k1", "method": "GET",
        "route": "orders", "path": f"/orders/{n}", "query": None, "status": 200, "decision": "allowed",
        "latency_ms": 1.0, "bytes_in": 0, "bytes_out": 10, "upstream_status": 200, "user_agent": None,
    }
    values.update(fields)
    return AuditRecord.create(clock=clock, record_class=record_class, **values)


def sealed_batches(chainer: Chainer, clock: ManualClock, count: int, *, batch: int = 10, start: int = 0,
                   record_class: str = "request") -> list[AuditBatch]:
    """``count`` records sealed in batches of ``batch``, then the chainer's final checkpoints."""
    out = []
    for first in range(start, start + count, batch):
        rows = [record(clock, n, record_class=record_class).to_dict()
                for n in range(first, min(first + batch, start + count))]
        sealed = chainer.seal(rows)
        out.append(AuditBatch(sealed.rows, sealed.lines))
    return out


def closing(chainer: Chainer) -> AuditBatch:
    sealed = chainer.close()
    return AuditBatch(sealed.rows, sealed.lines)
