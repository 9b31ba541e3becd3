"""Real components for end-to-end tests: Redis, PostgreSQL, Celery worker subprocesses, uvicorn.

Each run uses its own Celery queue name on a Redis database of its own (default 15) and its own
PostgreSQL schema, and removes them afterwards, so concurrent runs do not collide. Without Redis
or PostgreSQL the tests that need them skip and say why.
"""

from __future__ import annotations

import uuid
from typing import Iterator

import pytest

from gcn_e2e import POSTGRES_URL, REDIS_URL


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as e:
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {e}")
    return REDIS_URL


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    schema = f"gcn_e2e_{uuid.uuid4().hex[:12]}"
    engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
    except OperationalError as e:
        engine.dispose()
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}: {str(e).splitlines()[0]}")
    yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
    engine.dispose()


@pytest.fixture(scope="module")
def own_postgres_url(postgres_url) -> Iterator[str]:
    """A PostgreSQL schema for this module alone: its workers' reconcilers see only its jobs."""
    from sqlalchemy import create_engine, text

    from gcn_e2e import POSTGRES_URL

    schema = f"gcn_e2e_{uuid.uuid4().hex[:12]}"
    engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
    engine.dispose()
