"""The audit chain as the config describes it: the signer, the chainer and where the head file lives.

Why one place: the gateway (which seals) and ``portcullis audit verify`` (which checks) must read
``audit.signing_key``, ``audit.signing_algorithm`` and the head file path the same way, or a
trail sealed by one would not verify with the other. The head file is ``audit.heads_file``.
"""

from __future__ import annotations

from pathlib import Path

from portcullis.audit.chain import Chainer
from portcullis.audit.signing import CheckpointSigner, make_signer
from portcullis.clock import Clock
from portcullis.config.model import AuditConfig

__all__ = ["audit_chainer", "audit_signer"]


def audit_signer(cfg: AuditConfig) -> CheckpointSigner | None:
    """The configured checkpoint signer, or None when no key is set (checked at config load)."""
    if cfg.signing_key is None:
        return None
    return make_signer(cfg.signing_algorithm, cfg.signing_key.get_secret_value())


def audit_chainer(cfg: AuditConfig, *, clock: Clock, head_file: Path | None) -> Chainer:
    """A chainer for a new writer process: a fresh instance id, the configured signer and intervals."""
    return Chainer(clock=clock, signer=audit_signer(cfg), every=cfg.checkpoint_every,
                   interval_s=cfg.checkpoint_interval, head_file=head_file)
