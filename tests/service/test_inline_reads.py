"""Point reads on the caller's own SQLite connection (``Database.inline_session``), which the API
makes from its event loop: fresh, and never waiting long on a lock."""

from __future__ import annotations

import time

import pytest
from sqlalchemy.exc import OperationalError

from service.db import INLINE_BUSY_MS, Database
from service.jobs import JobKind, JobStatus, JobStore

from sqlite_locks import hold_exclusive_lock


@pytest.fixture
def sqlite_store(tmp_path) -> JobStore:
    db = Database(f"sqlite:///{tmp_path / 'jobs.db'}")
    db.create_all()
    yield JobStore(db)
    db.dispose()


def test_only_sqlite_files_are_read_inline(tmp_path):
    assert Database(f"sqlite:///{tmp_path / 'jobs.db'}").reads_inline
    assert not Database("sqlite://").reads_inline
    assert not Database("sqlite:///:memory:").reads_inline
    assert not Database("postgresql+psycopg2://postgres@127.0.0.1:5432/test").reads_inline
    with pytest.raises(ValueError):
        Database("postgresql+psycopg2://postgres@127.0.0.1:5432/test").inline_session()


def test_an_inline_read_sees_what_other_connections_just_committed(sqlite_store):
    job = sqlite_store.create(JobKind.sample, {"n": 1})
    assert sqlite_store.get(job.id, inline=True).status == JobStatus.queued.value
    sqlite_store.request_cancel(job.id)  # written through the pooled connections
    again = sqlite_store.get(job.id, inline=True)
    assert again.status == JobStatus.canceled.value
    assert again.version == sqlite_store.get(job.id).version
    assert sqlite_store.get("0" * 32, inline=True) is None


def test_an_inline_read_gives_up_on_a_lock_quickly_and_reads_again_once_it_is_gone(sqlite_store, tmp_path):
    job = sqlite_store.create(JobKind.sample, {"n": 1})
    sqlite_store.db.dispose()  # an exclusive lock needs every other connection closed
    holder = hold_exclusive_lock(tmp_path / "jobs.db")
    try:
        started = time.monotonic()
        with pytest.raises(OperationalError, match="locked"):
            sqlite_store.get(job.id, inline=True)
        waited = time.monotonic() - started
        assert INLINE_BUSY_MS / 1000 * 0.8 <= waited < 2.0, waited  # the pooled path would wait 30 s
    finally:
        holder.close()
    assert sqlite_store.get(job.id, inline=True).id == job.id
