"""Near-miss secrets: truncated, padded, case-flipped and last-character variants of a real key.

Sources: OWASP API Security Top 10 2023 API2 (broken authentication), CWE-208 (observable timing
discrepancy). The real key must still pass after each attempt. Leaked rows, the pepper and crossed
keys are in ``test_api_key_attacks.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from portcullis.errors import Unauthenticated
from portcullis.identity.api_keys import ApiKeyVerifier, IssuedKey, issue_key, parse_api_key
from portcullis.stores.sqlite import SqliteStore
from portcullis.testing import ManualClock

PEPPER = b"attack-pepper-" + b"q" * 30


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = await SqliteStore.connect(str(tmp_path / "keys.db"))
    yield s
    await s.aclose()


@pytest.fixture
def verifier(store: SqliteStore, clock: ManualClock) -> ApiKeyVerifier:
    return ApiKeyVerifier(store, pepper=PEPPER, clock=clock, cache_ttl_s=30.0)


async def new_key(store: SqliteStore, clock: ManualClock, consumer: str = "alice") -> IssuedKey:
    issued = issue_key(consumer, frozenset({"orders:read"}), pepper=PEPPER, clock=clock)
    await store.create(issued.record)
    return issued


def secret_of(key: str) -> str:
    return parse_api_key(key)[1]


def _truncated(s: str) -> str:
    return s[:-1]


def _padded(s: str) -> str:
    return s + "A"


def _padded_equals(s: str) -> str:
    return s + "="


def _truncated_padded(s: str) -> str:
    return s[:-1] + ("A" if s[-1] != "A" else "B")


def _case_flipped(s: str) -> str:
    return s.swapcase() if s.swapcase() != s else "Z" + s[1:]


def _first_char_case_flipped(s: str) -> str:
    i = next((n for n, c in enumerate(s) if c.isalpha()), 0)
    c = s[i]
    return s[:i] + (c.swapcase() if c.isalpha() else "z") + s[i + 1:]


@pytest.mark.parametrize("mutate", [
    _truncated, _padded, _padded_equals, _truncated_padded, _case_flipped, _first_char_case_flipped,
], ids=[
    "OWASP-API2-broken-authentication-truncated",
    "OWASP-API2-broken-authentication-padded",
    "OWASP-API2-broken-authentication-base64-padding",
    "CWE-208-timing-last-char-differs",
    "OWASP-API2-broken-authentication-case-flipped",
    "CWE-208-timing-one-char-case-flipped",
])
async def test_near_miss_secrets_are_refused(
    store: SqliteStore, clock: ManualClock, verifier: ApiKeyVerifier, mutate: Callable[[str], str]
) -> None:
    # CWE-208: the comparison is hmac.compare_digest; here we pin that near misses never pass.
    issued = await new_key(store, clock)
    forged = f"pcl_{issued.record.key_id}_{mutate(secret_of(issued.key))}"
    assert forged != issued.key
    with pytest.raises(Unauthenticated):
        await verifier.verify(forged)
    assert (await verifier.verify(issued.key)).consumer_id == "alice"
