"""GET /v1/jobs/{id} reads the job on the event loop with SQLite (no thread hand-off), and takes
a worker thread when that read meets a lock, so a locked database delays the answer instead of
failing it."""

from __future__ import annotations

import gc
import threading
import time

from service.jobs import JobKind

from sqlite_locks import hold_exclusive_lock


def recording_get(store, calls: list):
    real = store.get

    def get(job_id, *, inline=False):
        try:
            job = real(job_id, inline=inline)
        except Exception as e:
            calls.append((inline, type(e).__name__))
            raise
        calls.append((inline, "ok"))
        return job

    return get


def test_the_status_read_takes_no_thread_on_sqlite(client, services, monkeypatch):
    job = services.store.create(JobKind.sample, {"n": 1})
    calls: list = []
    monkeypatch.setattr(services.store, "get", recording_get(services.store, calls))
    r = client.get(f"/v1/jobs/{job.id}")
    assert r.status_code == 200 and r.json()["id"] == job.id
    assert calls == [(True, "ok")]


def test_a_locked_database_delays_the_status_answer_through_a_thread_instead_of_failing_it(
        client, services, settings, monkeypatch):
    job = services.store.create(JobKind.sample, {"n": 1})
    calls: list = []
    monkeypatch.setattr(services.store, "get", recording_get(services.store, calls))
    services.db.dispose()  # an exclusive lock needs every other connection closed
    holder = hold_exclusive_lock(settings.data_dir / "jobs.db")
    release = threading.Timer(1.0, holder.close)
    release.start()
    try:
        started = time.monotonic()
        r = client.get(f"/v1/jobs/{job.id}")
        took = time.monotonic() - started
    finally:
        release.join()
    assert r.status_code == 200, r.text
    assert r.json()["id"] == job.id
    assert calls == [(True, "OperationalError"), (False, "ok")]
    assert took >= 0.9  # it waited for the lock in the thread, after the inline read gave up


def test_start_up_moves_what_it_allocated_out_of_the_garbage_collectors_reach(settings):
    """Full collections over the libraries' objects stalled every request for 250-310 ms."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    with TestClient(create_app(settings)):
        assert gc.get_freeze_count() > 10_000
