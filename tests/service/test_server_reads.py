"""Point reads on a database server (``Database.read_session``): one statement in autocommit mode,
fresh data, and a connection the server dropped costs a retry, not an error."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from service.jobs import JobKind, JobStatus, JobStore

on_postgresql = pytest.mark.parametrize("db", ["postgresql"], indirect=True)  # conftest.py's fixture


@pytest.fixture
def pg_store(db) -> JobStore:
    return JobStore(db)


@on_postgresql
def test_reads_run_outside_a_transaction_and_see_every_commit(pg_store):
    job = pg_store.create(JobKind.sample, {"n": 1}, model_id="m" * 32)
    with pg_store.db.read_session() as s:
        assert s.connection().connection.dbapi_connection.autocommit
    with pg_store.db.session() as s:  # writes keep their transactions
        assert not s.connection().connection.dbapi_connection.autocommit
    assert pg_store.get(job.id).status == JobStatus.queued.value
    pg_store.request_cancel(job.id)
    assert pg_store.get(job.id).status == JobStatus.canceled.value


@on_postgresql
def test_a_connection_the_server_dropped_is_replaced_without_an_error(pg_store):
    job = pg_store.create(JobKind.sample, {"n": 1}, model_id="m" * 32)
    assert pg_store.get(job.id) is not None  # the read pool now holds a connection
    with pg_store.db.read_session() as s:
        pid = s.execute(text("SELECT pg_backend_pid()")).scalar_one()
    admin = create_engine(pg_store.db.url)
    try:
        with admin.begin() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar_one()
    finally:
        admin.dispose()
    assert pg_store.get(job.id).id == job.id
    with pg_store.db.read_session() as s:
        assert s.execute(text("SELECT pg_backend_pid()")).scalar_one() != pid


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_sqlite_reads_use_the_usual_sessions(db):
    with db.read_session() as s:
        assert s.bind is db.engine
