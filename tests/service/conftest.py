"""Job-store fixtures: every store test runs on SQLite and on PostgreSQL (a fresh schema per run)."""

from __future__ import annotations

import os
import uuid

import pytest

from service.db import Database
from service.jobs import JobStore

POSTGRES_URL = os.environ.get("GCN_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


def postgres_schema_url():
    """(url with a fresh search_path, drop function), or skip when PostgreSQL is not reachable."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    schema = f"gcn_test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
    except OperationalError as e:
        engine.dispose()
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}: {str(e).splitlines()[0]}")

    def drop() -> None:
        with engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        engine.dispose()

    return f"{POSTGRES_URL}?options=-csearch_path%3D{schema}", drop


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'jobs.db'}")
        drop = None
    else:
        url, drop = postgres_schema_url()
        database = Database(url)
    database.create_all()
    yield database
    database.dispose()
    if drop:
        drop()


@pytest.fixture
def store(db) -> JobStore:
    return JobStore(db)


class RecordingQueue:
    """Stands in for the broker where a test only needs to see what was published."""

    def __init__(self):
        self.sent: list[str] = []

    def publish(self, job_id: str) -> None:
        self.sent.append(job_id)


@pytest.fixture
def queue() -> RecordingQueue:
    return RecordingQueue()
