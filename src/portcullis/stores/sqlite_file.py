"""Opening one SQLite file from many processes at once, and keeping it private to its owner.

Why this module exists: two gateways, or a gateway and the CLI, often start together on the same
file, the first time before it even exists. Three things make that safe:

- **A busy timeout on every connection** (``BUSY_TIMEOUT_S``): SQLite then waits for a lock held
  by another process instead of failing at once.
- **A bounded retry with backoff** (``retry_while_busy``) around the steps that need a lock the
  busy handler does not always wait for. ``PRAGMA journal_mode=WAL`` on a fresh file needs an
  exclusive lock, and SQLite returns ``SQLITE_BUSY`` without calling the busy handler when waiting
  could deadlock (https://www.sqlite.org/c3ref/busy_handler.html) or while another connection
  recovers the WAL (``SQLITE_BUSY_RECOVERY``). The migration transaction is retried the same way.
  Delays grow exponentially with full jitter (the openers started together; they must not retry
  together), on an injected ``Clock`` and ``random.Random``, until ``RETRY_BUDGET_S`` has passed.
- **A private file** (``make_private``): the database holds API key hashes and the vault's
  ciphertexts, so it is created ``0600`` before SQLite opens it, whatever the process umask.
  SQLite gives the ``-wal``, ``-shm`` and ``-journal`` files it creates the main file's mode
  (``robust_open`` in its ``os_unix.c``), so they follow. A file that already exists and that
  group or others may read loses those bits, with a warning, and so do its companions: silently
  leaving a key store world-readable is worse than surprising an operator once. A file owned by
  another user cannot be changed, and is only warned about.

What this module refuses to do: retry any error but "busy" or "locked" (a file that is not a
database fails at once), retry without end, or loosen a mode.
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import stat
from collections.abc import Awaitable, Callable
from typing import TypeVar

from portcullis.clock import Clock
from portcullis.errors import StoreUnavailable

__all__ = ["BUSY_TIMEOUT_S", "PRIVATE_MODE", "RETRY_BUDGET_S", "make_private", "retry_while_busy"]

log = logging.getLogger("portcullis.store")

BUSY_TIMEOUT_S = 5.0
RETRY_BUDGET_S = 15.0
PRIVATE_MODE = 0o600
_FIRST_DELAY_S = 0.005
_MAX_DELAY_S = 0.25
_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
_COMPANIONS = ("-wal", "-shm", "-journal")
_T = TypeVar("_T")


def is_busy(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite saying another connection holds a lock (any extended busy code)."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in _BUSY_CODES


async def retry_while_busy(
    step: Callable[[], Awaitable[_T]], *, clock: Clock, rng: random.Random, budget_s: float = RETRY_BUDGET_S
) -> _T:
    """Run ``step`` until it is not busy; after ``budget_s`` the last busy error is raised.

    ``step`` must leave nothing half done when it fails (roll its transaction back), since it runs
    again from the start.
    """
    deadline = clock.monotonic() + budget_s
    attempt = 0
    while True:
        try:
            return await step()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or clock.monotonic() >= deadline:
                raise
        ceiling = min(_MAX_DELAY_S, _FIRST_DELAY_S * 2**attempt)
        attempt += 1
        await clock.sleep(rng.uniform(0, ceiling))


def make_private(path: str) -> None:
    """Create ``path`` as an empty ``0600`` file if it is missing; tighten it if it is not private.

    Blocking (it calls the OS): run it on a worker thread. Raises ``StoreUnavailable`` when the
    file cannot be created or opened for writing.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_MODE)
    except FileExistsError:
        _tighten(path)
    except OSError as exc:
        raise StoreUnavailable(f"sqlite: cannot create {path}: {exc.strerror}") from exc
    else:
        try:
            os.fchmod(fd, PRIVATE_MODE)  # the umask may have taken owner bits away, never added others
        finally:
            os.close(fd)
    for suffix in _COMPANIONS:
        _tighten(path + suffix, missing_ok=True)


def _tighten(path: str, *, missing_ok: bool = False) -> None:
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        if missing_ok:
            return
        raise StoreUnavailable(f"sqlite: {path} vanished while it was being opened") from None
    except OSError as exc:
        raise StoreUnavailable(f"sqlite: cannot open {path}: {exc.strerror}") from exc
    if not mode & 0o077:
        return
    try:
        os.chmod(path, mode & 0o700)
    except FileNotFoundError:
        return  # a companion SQLite removed between the two calls
    except OSError as exc:
        log.warning("%s can be read by group or others (mode %04o) and cannot be made private (%s); "
                    "it holds API key hashes and vault ciphertexts: chmod 600 it", path, mode, exc.strerror)
        return
    log.warning("%s could be read by group or others (mode %04o); made it private (%04o): it holds "
                "API key hashes and vault ciphertexts", path, mode, mode & 0o700)
