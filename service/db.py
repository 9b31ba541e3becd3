"""The database: typed SQLAlchemy 2 ORM rows and one engine per process.

The job table is the source of truth for every job's status, progress and results; the broker
only carries job ids. Datasets and learned models are rows beside it. Tables are prefixed
``gcn_`` so that they can share a database (PostgreSQL in production, SQLite by default).

Engines are created lazily and per process: a Celery prefork child must not reuse the sockets
or SQLite handles of the parent it was forked from, so ``Database.engine`` notices a new pid and
builds a fresh engine.
"""

from __future__ import annotations

import functools
import os
import threading
import time
import weakref
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from sqlalchemy import (JSON, Boolean, DateTime, Float, Index, Integer, String, Text, create_engine, event, inspect,
                        text)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import SingletonThreadPool
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite has no time zones: store naive UTC)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: Optional[datetime], dialect) -> Optional[datetime]:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: Optional[datetime], dialect) -> Optional[datetime]:
        return None if value is None else value.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


class Dataset(Base):
    """Uploaded training images, stored as normalised RGB PNGs under ``datasets/<id>/``."""

    __tablename__ = "gcn_datasets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # texture | object
    image_count: Mapped[int] = mapped_column(Integer)
    sizes: Mapped[list[Any]] = mapped_column(JSON)  # [[width, height], ...] as uploaded
    api_key_id: Mapped[Optional[str]] = mapped_column(String(32), nullable=True, index=True)  # None: made without a key
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TrainedModel(Base):
    """A learned model; the row appears when its learning job succeeds (weights in ``models/<id>/``)."""

    __tablename__ = "gcn_models"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(String(32), index=True)  # the (first category's) dataset
    job_id: Mapped[str] = mapped_column(String(32))
    preset: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # the preset's kind: texture | codebook | object
    learner: Mapped[str] = mapped_column(String(16))
    image_size: Mapped[int] = mapped_column(Integer)
    chain_size: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)  # persistent chains' side, if kept
    iterations: Mapped[int] = mapped_column(Integer)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)  # the full preset
    curve: Mapped[list[Any]] = mapped_column(JSON)  # learning curve, thinned
    api_key_id: Mapped[Optional[str]] = mapped_column(String(32), nullable=True, index=True)
    # [{"name": ..., "dataset_id": ...}, ...]: one per output of the net, in order (index = position);
    # None (rows written before categories): one category, "default", learned from dataset_id
    categories: Mapped[Optional[list[Any]]] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def category_list(self) -> list[dict[str, str]]:
        """Its categories in order, ``[{"name", "dataset_id"}, ...]``; a row without any has one,
        ``default``, learned from ``dataset_id``."""
        if self.categories:
            return [{"name": str(c["name"]), "dataset_id": str(c["dataset_id"])} for c in self.categories]
        return [{"name": "default", "dataset_id": self.dataset_id}]


class Job(Base):
    """One unit of work for a worker. ``version`` grows with every write (optimistic locking, SSE ids)."""

    __tablename__ = "gcn_jobs"
    __table_args__ = (Index("ix_gcn_jobs_created", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)  # learn | sample | reconstruct | inpaint
    status: Mapped[str] = mapped_column(String(16), index=True)  # queued | running | succeeded | failed | canceled
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    dataset_id: Mapped[Optional[str]] = mapped_column(String(32), nullable=True)
    model_id: Mapped[Optional[str]] = mapped_column(String(32), nullable=True, index=True)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    eta_seconds: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    has_preview: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    owner: Mapped[Optional[str]] = mapped_column(String(255), nullable=True)  # "host:pid" of the worker child
    api_key_id: Mapped[Optional[str]] = mapped_column(String(32), nullable=True, index=True)  # who asked for it
    heartbeat_at: Mapped[Optional[datetime]] = mapped_column(nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[Optional[datetime]] = mapped_column(nullable=True)
    finished_at: Mapped[Optional[datetime]] = mapped_column(nullable=True)
    # {"url": ..., "events": ["completed", "progress"]}: where to POST the job document (None: nowhere)
    webhook: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON, nullable=True)
    # Its webhook deliveries, oldest first. Not loaded with the row: JobStore reads fill them in
    # (``jobs.with_deliveries``) only for jobs that have a webhook, so the status read of the
    # common job without one stays a single query.
    deliveries: Mapped[list["WebhookDelivery"]] = relationship(
        primaryjoin="Job.id == foreign(WebhookDelivery.job_id)", viewonly=True, lazy="select",
        order_by=lambda: (WebhookDelivery.created_at, WebhookDelivery.id),
    )


class WebhookDelivery(Base):
    """The outbox: one webhook POST to make (or made). A ``completed`` row is written in the same
    transaction as its job's ending, a ``progress`` row with a progress write, so a crash between
    the two cannot lose it; a sender leases a due row (``leased_until``, ``lease_token``), POSTs
    ``payload`` and records the outcome (service/webhooks.py). Rows outlive their job's row until
    they are finished (the payload is a snapshot of the job document)."""

    __tablename__ = "gcn_webhook_deliveries"
    __table_args__ = (Index("ix_gcn_webhook_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(32), index=True)
    event: Mapped[str] = mapped_column(String(16))  # completed | progress
    url: Mapped[str] = mapped_column(Text)
    payload: Mapped[Optional[str]] = mapped_column(Text, nullable=True, deferred=True)  # the body, JSON text
    status: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    response_status: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)  # of the last attempt
    error: Mapped[Optional[str]] = mapped_column(Text, nullable=True)  # of the last attempt
    log: Mapped[list[Any]] = mapped_column(JSON, default=list)  # [{attempt, at, response_status, error, duration_ms}]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_attempt_at: Mapped[Optional[datetime]] = mapped_column(nullable=True)
    next_attempt_at: Mapped[Optional[datetime]] = mapped_column(nullable=True)  # None unless pending
    delivered_at: Mapped[Optional[datetime]] = mapped_column(nullable=True)
    leased_until: Mapped[Optional[datetime]] = mapped_column(nullable=True)  # a sender is on it until then
    lease_token: Mapped[Optional[str]] = mapped_column(String(32), nullable=True)
    # the job's API key: its deliveries are signed with that key's own secret (webhooks.signing_key)
    api_key_id: Mapped[Optional[str]] = mapped_column(String(32), nullable=True)


class ApiKey(Base):
    """An API key: only the SHA-256 of the token is stored; the token is shown once, at creation."""

    __tablename__ = "gcn_api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # hex SHA-256 of the whole token
    prefix: Mapped[str] = mapped_column(String(16))  # the token's first characters, to recognise it in lists
    name: Mapped[str] = mapped_column(String(200), default="")
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    max_running_jobs: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)  # None: GCN_MAX_RUNNING_JOBS
    max_queued_jobs: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)  # None: GCN_MAX_QUEUED_JOBS
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[Optional[datetime]] = mapped_column(nullable=True)


class IdempotencyRecord(Base):
    """The first answer to a POST carrying an ``Idempotency-Key``, per API key (``""``: no key).

    ``status`` is None while the first request is still being handled."""

    __tablename__ = "gcn_idempotency"

    api_key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))  # SHA-256 of the route and the request's content
    status: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    body: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    location: Mapped[Optional[str]] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Tombstone(Base):
    """A job, model or dataset that cleanup removed when it expired, kept so that the API answers
    its owner 410 Gone (and when) instead of 404 (pruned after ``GCN_TOMBSTONE_TTL``)."""

    __tablename__ = "gcn_tombstones"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # job | model | dataset
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    api_key_id: Mapped[Optional[str]] = mapped_column(String(32), nullable=True)  # its owner's, as on its row
    removed_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


def _sqlite_pragmas(dbapi_connection, _record, busy_ms: int = 30000) -> None:
    # WAL lets the API read while a worker writes; busy_timeout waits out short write locks.
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
    cur.close()


# Connections kept open to a database server per process. The API serves up to 40 requests at
# once in threads (anyio's default); with SQLAlchemy's default of 5, the rest opened and closed a
# connection each time (a new server process per connection on PostgreSQL): 20 measured 1.4-1.6x
# the status endpoint's throughput on PostgreSQL (docs/benchmarks.md).
SERVER_POOL_SIZE = 20

# The longest an inline read (``Database.inline_session``) may wait for a lock, in ms: it runs on
# an event loop, which must not stall; past it the read fails and the caller takes a thread.
INLINE_BUSY_MS = 200


_INSTANCES: "weakref.WeakSet[Database]" = weakref.WeakSet()


def is_disconnect(error: BaseException) -> bool:
    """Whether a database error was a lost connection (SQLAlchemy has discarded it and its pool's
    other connections: the same read again gets a fresh one)."""
    return isinstance(error, DBAPIError) and bool(error.connection_invalidated)


def _after_fork_in_child() -> None:
    # A lock held by another thread of the parent at fork time would never be released here.
    for db in list(_INSTANCES):
        db._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Database:
    """A URL, and lazily (per process) its engine and session factory."""

    def __init__(self, url: str):
        self.url = url
        self._lock = threading.Lock()
        self._pid: Optional[int] = None
        self._engine: Optional[Engine] = None
        self._sessions: Optional[sessionmaker[Session]] = None
        self._inline: Optional[tuple[int, Engine, sessionmaker[Session]]] = None  # (pid, engine, sessions)
        self._reads: Optional[tuple[Engine, sessionmaker[Session]]] = None  # read_session's own pool
        _INSTANCES.add(self)

    @property
    def is_sqlite(self) -> bool:
        return make_url(self.url).get_backend_name() == "sqlite"

    @property
    def engine(self) -> Engine:
        with self._lock:
            if self._engine is None or self._pid != os.getpid():
                if self._engine is not None:
                    self._engine.dispose(close=False)  # inherited across fork: leave the parent's connections alone
                self._engine = self._create_engine()
                self._sessions = sessionmaker(self._engine, expire_on_commit=False)
                if self._reads is not None:  # the parent's read engine, inherited across fork
                    self._reads[0].dispose(close=False)
                    self._reads = None
                self._pid = os.getpid()
            return self._engine

    def _create_engine(self) -> Engine:
        url = make_url(self.url)
        if url.get_backend_name() == "sqlite":
            if url.database and url.database != ":memory:":
                Path(url.database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
            event.listen(engine, "connect", _sqlite_pragmas)
            return engine
        return create_engine(url, pool_pre_ping=True, pool_size=SERVER_POOL_SIZE, max_overflow=10)

    def session(self) -> Session:
        self.engine  # builds the session factory for this process
        assert self._sessions is not None
        return self._sessions()

    def read_session(self) -> Session:
        """A session for one read statement (it must not write), in one round trip to a
        database server: its connections of their own stay in autocommit mode (no BEGIN, and no
        ROLLBACK when the session hands its connection back) and are not pinged before use (a
        connection the server dropped fails the read once and is discarded with its pool:
        callers retry once, ``is_disconnect``). A status read on PostgreSQL had made three
        round trips (ping, SELECT, ROLLBACK). Each statement sees the data committed when it
        starts, which is what PostgreSQL's default isolation (read committed) gives every
        statement of a transaction anyway. SQLite: the usual session."""
        if self.engine.dialect.name == "sqlite":  # (engine: also drops a parent's read engine after a fork)
            return self.session()
        with self._lock:
            if self._reads is None:
                engine = create_engine(self.url, pool_size=SERVER_POOL_SIZE, max_overflow=10,
                                       isolation_level="AUTOCOMMIT")
                self._reads = (engine, sessionmaker(engine, expire_on_commit=False))
            return self._reads[1]()

    @functools.cached_property
    def reads_inline(self) -> bool:
        """Whether short point reads may run on the calling (event loop) thread: true for an
        SQLite file. Its reads, in WAL mode, do not wait for writers, and a read by primary key
        takes a fraction of a millisecond, far less than handing the call to a worker thread and
        back (measured: that hand-off was most of a status request's cost, docs/benchmarks.md).
        A server database keeps reads in threads: its pool or its network may make a caller wait."""
        url = make_url(self.url)
        return url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")

    def inline_session(self) -> Session:
        """A session on the calling thread's own SQLite connection (one per thread, so no pool
        to wait on), which gives up on a lock after ``INLINE_BUSY_MS`` (OperationalError)."""
        if not self.reads_inline:
            raise ValueError("inline reads are for SQLite files only")
        inline = self._inline
        if inline is None or inline[0] != os.getpid():
            with self._lock:
                inline = self._inline
                if inline is None or inline[0] != os.getpid():
                    engine = create_engine(self.url, poolclass=SingletonThreadPool, pool_size=8,
                                           connect_args={"timeout": INLINE_BUSY_MS / 1000, "check_same_thread": False})
                    event.listen(engine, "connect", lambda c, r: _sqlite_pragmas(c, r, INLINE_BUSY_MS))
                    inline = self._inline = (os.getpid(), engine, sessionmaker(engine, expire_on_commit=False))
        return inline[2]()

    def create_all(self) -> None:
        """Create missing tables and add columns that a newer version declares (nullable ones
        only, so an existing job table keeps working); tolerate another process doing the same at
        the same moment."""
        for attempt in range(5):
            try:
                Base.metadata.create_all(self.engine)
                self._add_missing_columns()
                self._backfill_model_keys()
                self._checkpoint()
                return
            except (IntegrityError, ProgrammingError, OperationalError):
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def _backfill_model_keys(self) -> None:
        """Models learned before workers recorded the API key on the model row have none, which
        hid them from their owners (404): give each its learning job's key. Idempotent."""
        with self.engine.begin() as conn:
            conn.execute(text(
                "UPDATE gcn_models SET api_key_id = (SELECT j.api_key_id FROM gcn_jobs j WHERE j.id = gcn_models.job_id) "
                "WHERE api_key_id IS NULL AND EXISTS (SELECT 1 FROM gcn_jobs j WHERE j.id = gcn_models.job_id "
                "AND j.api_key_id IS NOT NULL)"))

    def _add_missing_columns(self) -> None:
        engine = self.engine
        existing = inspect(engine)
        for table in Base.metadata.sorted_tables:
            have = {c["name"] for c in existing.get_columns(table.name)}
            for column in table.columns:
                if column.name in have:
                    continue
                if not column.nullable:
                    raise RuntimeError(f"{table.name}.{column.name} is missing and cannot be added (NOT NULL)")
                kind = column.type.compile(dialect=engine.dialect)
                with engine.begin() as conn:
                    conn.execute(text(f'ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}'))
                for index in table.indexes:
                    if column.name in [c.name for c in index.columns]:
                        index.create(engine, checkfirst=True)

    def _checkpoint(self) -> None:
        """SQLite: fold the schema statements' write-ahead log into the database file and empty
        it (each DDL statement commits on its own, so the log would otherwise keep a copy of
        every page they touched until the next automatic checkpoint). Best effort."""
        if not self.is_sqlite:
            return
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        except OperationalError:
            pass

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
            if self._inline is not None and self._inline[0] == os.getpid():
                self._inline[1].dispose()
            if self._reads is not None:
                self._reads[0].dispose()
            self._engine = None
            self._reads = None
            self._sessions = None
            self._inline = None
