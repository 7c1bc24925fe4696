"""Identifiers for requests and audit records: unique and unguessable enough, without a syscall.

Why not ``os.urandom`` per id: two ids per request made ``urandom`` one of the larger costs on the
hot path. These ids correlate logs; they are never secrets or capabilities, so a PRNG seeded from
the OS (and reseeded in a forked child, so two processes never share a sequence) is enough.
"""

from __future__ import annotations

import os
import random

__all__ = ["random_hex"]

_rng = random.Random(os.urandom(32))


def _reseed() -> None:
    _rng.seed(os.urandom(32))


os.register_at_fork(after_in_child=_reseed)


def random_hex(bits: int) -> str:
    """``bits`` random bits (a multiple of 4) as lower-case hex, zero-padded."""
    return f"{_rng.getrandbits(bits):0{bits // 4}x}"
