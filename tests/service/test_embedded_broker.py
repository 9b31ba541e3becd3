"""The embedded broker (kombu's SQLAlchemy transport on a SQLite file, shared by the API and the
workers of `gcn serve`): a process that finds no row for the job queue (or no tables, on a new
data folder) and creates it must not fail when another process created it in between.

Seen in the browser test: the API's first publish and the worker's start-up declared the queue in
the same few milliseconds; the API lost ("UNIQUE constraint failed: kombu_queue.name"), failed the
job and answered 503. Here the other process's insert is made, through a connection of its own,
exactly in that window: just before this process's INSERT reaches SQLite."""

from __future__ import annotations

import sqlite3

import kombu
import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from service.queue import JobQueue, make_celery
from service.settings import Settings


@pytest.fixture
def broker(tmp_path):
    settings = Settings(data_dir=tmp_path)
    assert settings.embedded_broker
    app = make_celery(settings)
    yield settings, app, tmp_path / "broker.db"
    app.close()


def insert_first_from_elsewhere(app, db_path, queue: str) -> list[str]:
    """Before this process's first INSERT into kombu_queue, another connection inserts ``queue``
    and commits, as another process would. Returns the statements it went before."""
    with app.connection_for_write() as conn:
        engine, _ = conn.default_channel._open()  # kombu caches one engine per URL: the one publishes use
    went_before: list[str] = []

    def other_process_first(_conn, _cursor, statement, *_args):
        if statement.lstrip().upper().startswith("INSERT INTO KOMBU_QUEUE") and not went_before:
            went_before.append(statement)
            with sqlite3.connect(db_path, timeout=30) as other:
                other.execute("INSERT INTO kombu_queue (name) VALUES (?)", (queue,))

    event.listen(engine, "before_cursor_execute", other_process_first)
    return went_before


def queue_rows(db_path) -> list[tuple]:
    with sqlite3.connect(db_path) as db:
        return db.execute("SELECT name FROM kombu_queue").fetchall()


def test_a_publish_survives_the_queue_row_appearing_meanwhile(broker):
    settings, app, db_path = broker
    went_before = insert_first_from_elsewhere(app, db_path, settings.queue)
    queue = JobQueue(app, settings.queue)
    queue.publish("job-1")
    assert went_before, "the other process's insert never ran: the test did not make the race"
    assert queue_rows(db_path) == [(settings.queue,)]
    assert queue.waiting({"job-1", "job-2"}) == {"job-1"}  # stored, in the one queue, for a worker


def test_a_consumer_declaring_the_queue_survives_it_too(broker):
    settings, app, db_path = broker
    went_before = insert_first_from_elsewhere(app, db_path, settings.queue)
    with app.connection_for_read() as conn:  # what a worker does as it starts consuming
        kombu.Queue(settings.queue, channel=conn.default_channel).declare()
        assert went_before
        JobQueue(app, settings.queue).publish("job-2")
        with conn.SimpleQueue(settings.queue) as simple:
            message = simple.get(timeout=5)
            assert message.payload is not None and "job-2" in str(message.headers or message.payload)
            message.ack()
    assert queue_rows(db_path) == [(settings.queue,)]


def test_a_publish_survives_the_tables_appearing_meanwhile(broker):
    """On a new data folder the first process to open the broker creates its tables; here another
    process creates kombu_queue just before this one's CREATE TABLE reaches SQLite ("table
    kombu_queue already exists"; kombu's own retry of the publish then failed with an
    AttributeError on a closed channel)."""
    settings, app, db_path = broker
    went_before: list[str] = []

    def other_process_first(_conn, _cursor, statement, *_args):
        if statement.lstrip().upper().startswith("CREATE TABLE KOMBU_QUEUE") and not went_before:
            went_before.append(statement)
            with sqlite3.connect(db_path, timeout=30) as other:
                other.execute(statement.strip())

    disposed: list[Engine] = []

    def on_dispose(engine):
        disposed.append(engine)

    event.listen(Engine, "before_cursor_execute", other_process_first)  # no engine exists yet
    event.listen(Engine, "engine_disposed", on_dispose)
    try:
        queue = JobQueue(app, settings.queue)
        queue.publish("job-3")
    finally:
        event.remove(Engine, "before_cursor_execute", other_process_first)
        event.remove(Engine, "engine_disposed", on_dispose)
    assert went_before, "the other process's CREATE TABLE never ran: the test did not make the race"
    with app.connection_for_write() as conn:
        in_use, _ = conn.default_channel._open()
    # the failed attempt's engine (with the connection its CREATE TABLE used) is closed, not leaked
    assert len(disposed) == 1 and disposed[0] is not in_use
    assert queue_rows(db_path) == [(settings.queue,)]
    assert queue.waiting({"job-3"}) == {"job-3"}
