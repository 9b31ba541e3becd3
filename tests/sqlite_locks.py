"""Hold an SQLite database locked the way no WAL reader can get past (tests of lock handling)."""

from __future__ import annotations

import sqlite3


def hold_exclusive_lock(path) -> sqlite3.Connection:
    """Lock the database at ``path`` until the returned connection is closed (from any thread).
    Every other connection to it must be closed first: an exclusive lock in WAL mode waits for none."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA locking_mode=EXCLUSIVE")
    conn.execute("BEGIN EXCLUSIVE")
    return conn
