"""The job table's state machine, on SQLite and PostgreSQL: claims, ownership, cancel, pagination,
and the reconciler."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from service.db import Job, utcnow
from service.jobs import BadCursor, JobKind, JobLost, JobStatus
from service.reconcile import reconcile
from service.settings import Settings

ME = "test-host:1"


def claim(store, job_id, owner=ME, timeout=60.0, attempts=3):
    return store.claim(job_id, owner, heartbeat_timeout=timeout, max_attempts=attempts)


def age_heartbeat(store, job_id, seconds):
    with store.db.session() as s:
        s.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow() - timedelta(seconds=seconds)))
        s.commit()


def test_a_job_is_claimed_once_and_reported_only_by_its_owner(store):
    job = store.create(JobKind.learn, {"preset": "texture-fast"}, total=30)
    assert job.status == "queued" and job.total == 30

    first = claim(store, job.id)
    assert first.job is not None and first.job.status == "running" and first.job.attempts == 1
    again = claim(store, job.id, owner="other-host:2")
    assert again.job is None and "running on" in again.reason  # owner alive: not run twice

    store.report(job.id, ME, step=3, total=30, eta=1.5, metrics={"gap": 0.5})
    with pytest.raises(JobLost):
        store.report(job.id, "other-host:2", step=4, total=30)
    got = store.get(job.id)
    assert (got.step, got.eta_seconds, got.metrics) == (3, 1.5, {"gap": 0.5})

    assert store.finish(job.id, ME, JobStatus.succeeded, result={"model_id": "m"})
    assert claim(store, job.id).reason == "already succeeded"  # idempotent per job id
    assert not store.finish(job.id, ME, JobStatus.failed, error="late")
    assert store.get(job.id).status == "succeeded"


def test_a_job_whose_owner_died_is_taken_over_until_attempts_run_out(store):
    job = store.create(JobKind.sample, {"n": 1})
    claim(store, job.id, owner="elsewhere:5")
    age_heartbeat(store, job.id, 120)
    second = claim(store, job.id, attempts=2)
    assert second.job is not None and second.job.attempts == 2 and second.job.owner == ME

    age_heartbeat(store, job.id, 120)
    third = claim(store, job.id, owner="third:7", attempts=2)
    assert third.job is None and third.reason == "attempts exhausted"
    failed = store.get(job.id)
    assert failed.status == "failed" and "gave up after 2 attempts" in failed.error


def test_a_dead_local_process_is_noticed_without_waiting_for_the_timeout(store):
    import socket
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    job = store.create(JobKind.sample, {"n": 1})
    claim(store, job.id, owner=f"{socket.gethostname()}:{p.pid}")
    taken = claim(store, job.id, timeout=3600)
    assert taken.job is not None and taken.job.owner == ME


def test_cancel_is_idempotent_and_depends_on_the_state(store):
    queued = store.create(JobKind.sample, {"n": 1})
    first = store.request_cancel(queued.id)
    assert first.status == "canceled" and first.cancel_requested
    assert store.request_cancel(queued.id).version == first.version  # nothing changes the second time
    assert claim(store, queued.id).reason == "already canceled"

    running = store.create(JobKind.learn, {})
    claim(store, running.id)
    flagged = store.request_cancel(running.id)
    assert flagged.status == "running" and flagged.cancel_requested and store.cancel_flag(running.id)
    assert store.request_cancel(running.id).version == flagged.version
    store.finish(running.id, ME, JobStatus.canceled, error="canceled")
    assert store.request_cancel(running.id).status == "canceled"
    assert store.request_cancel("0" * 32) is None


def test_pagination_walks_every_job_once_newest_first_with_filters(store):
    ids = [store.create(JobKind.sample if i % 2 else JobKind.learn, {"i": i}).id for i in range(7)]
    seen, cursor = [], None
    while True:
        rows, cursor = store.list(limit=3, cursor=cursor)
        seen += [r.id for r in rows]
        if cursor is None:
            break
    assert seen == ids[::-1]
    learn, _ = store.list(kind="learn", limit=50)
    assert [r.id for r in learn] == ids[::2][::-1]
    store.request_cancel(ids[0])
    canceled, _ = store.list(status="canceled")
    assert [r.id for r in canceled] == [ids[0]]
    for bad in ("not-a-cursor", "WyIyMDI2LTAxLTAxVDAwOjAwOjAwIiwgIngiXQ"):  # the second: a naive time
        with pytest.raises(BadCursor):
            store.list(cursor=bad)


def test_reconciler_requeues_cancels_or_fails_orphans(store, queue):
    settings = Settings(heartbeat_timeout=30, max_attempts=2)
    alive = store.create(JobKind.learn, {})
    claim(store, alive.id, owner="alive:1")
    orphan = store.create(JobKind.learn, {})
    claim(store, orphan.id, owner="gone:1")
    age_heartbeat(store, orphan.id, 60)
    doomed = store.create(JobKind.learn, {})
    claim(store, doomed.id, owner="gone:2")
    age_heartbeat(store, doomed.id, 60)
    claim(store, doomed.id, owner="gone:3")  # second attempt
    age_heartbeat(store, doomed.id, 60)
    unwanted = store.create(JobKind.sample, {})
    claim(store, unwanted.id, owner="gone:4")
    store.request_cancel(unwanted.id)
    age_heartbeat(store, unwanted.id, 60)

    actions = {a.job_id: a.action for a in reconcile(store, queue, settings)}
    assert actions == {orphan.id: "requeued", doomed.id: "failed", unwanted.id: "canceled"}
    assert queue.sent == [orphan.id]
    assert store.get(orphan.id).status == "queued" and store.get(orphan.id).owner is None
    assert "gave up after 2 attempts" in store.get(doomed.id).error
    assert store.get(alive.id).status == "running"
    with pytest.raises(JobLost):  # the old owner of the requeued job is told to stop
        store.report(orphan.id, "gone:1", step=1, total=2)
    assert reconcile(store, queue, settings) == []  # a second pass finds nothing


def test_counts_by_kind_and_status(store):
    store.create(JobKind.learn, {})
    j = store.create(JobKind.sample, {})
    store.request_cancel(j.id)
    assert store.counts() == {("learn", "queued"): 1, ("sample", "canceled"): 1}


def test_a_process_may_take_back_a_job_it_left_unfinished(store):
    job = store.create(JobKind.sample, {"n": 1})
    claim(store, job.id)
    again = claim(store, job.id, timeout=3600)  # same owner: its earlier attempt ended abnormally
    assert again.job is not None and again.job.attempts == 2


def test_an_older_job_table_gets_the_new_columns(db):
    """A database made before API keys existed: create_all adds the ownership columns (and their
    indexes), existing rows belong to no key (only an admin sees them)."""
    from sqlalchemy import inspect, text

    from service.jobs import JobStore

    old = JobStore(db).create(JobKind.sample, {"n": 1})
    with db.engine.begin() as conn:
        for table in ("gcn_jobs", "gcn_datasets", "gcn_models"):
            conn.execute(text(f"DROP INDEX ix_{table}_api_key_id"))
            conn.execute(text(f"ALTER TABLE {table} DROP COLUMN api_key_id"))
    assert "api_key_id" not in {c["name"] for c in inspect(db.engine).get_columns("gcn_jobs")}
    db.create_all()
    for table in ("gcn_jobs", "gcn_datasets", "gcn_models"):
        assert "api_key_id" in {c["name"] for c in inspect(db.engine).get_columns(table)}
        assert f"ix_{table}_api_key_id" in {i["name"] for i in inspect(db.engine).get_indexes(table)}
    store = JobStore(db)
    assert store.get(old.id).api_key_id is None
    mine = store.create(JobKind.sample, {"n": 1}, api_key_id="k" * 32)
    assert [j.id for j in store.list(api_key_id="k" * 32)[0]] == [mine.id]


def test_models_learned_before_keys_were_recorded_on_them_get_their_jobs_key(store):
    """Workers once wrote model rows without the API key, hiding them from their owners;
    create_all gives such rows their learning job's key (and leaves keyless ones alone)."""
    from service.db import TrainedModel
    from service.jobs import new_id

    keyed = store.create(JobKind.learn, {}, api_key_id="k" * 32, model_id=new_id())
    keyless = store.create(JobKind.learn, {}, model_id=new_id())
    for job in (keyed, keyless):
        store.add(TrainedModel(id=job.model_id, dataset_id=new_id(), job_id=job.id, preset="texture-fast",
                               kind="texture", learner="short_run", image_size=32, iterations=1, config={},
                               curve=[]))
    store.db.create_all()
    assert store.model(keyed.model_id).api_key_id == "k" * 32
    assert store.model(keyless.model_id).api_key_id is None
    store.db.create_all()  # idempotent
    assert store.model(keyed.model_id).api_key_id == "k" * 32
