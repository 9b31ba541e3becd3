"""The reconciler republishes queued jobs whose broker message was lost, and only those: a job
still waiting in the broker is left alone. Checked against a stand-in queue and against the real
brokers (Redis, kombu's SQLAlchemy transport) that ``JobQueue.waiting`` inspects."""

from __future__ import annotations

import os
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import update

from service.db import Job, utcnow
from service.jobs import JobKind
from service.queue import JobQueue, make_celery
from service.reconcile import reconcile
from service.settings import Settings

REDIS_URL = os.environ.get("GCN_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


class Broker:
    """Stands in for the broker: remembers what was published and what is still waiting."""

    def __init__(self, waiting=()):
        self.sent: list[str] = []
        self.in_line = set(waiting)

    def publish(self, job_id, countdown=None):
        self.sent.append(job_id)

    def waiting(self, ids):
        return {i for i in ids if i in self.in_line}


def age(store, job_id, seconds):
    with store.db.session() as s:
        s.execute(update(Job).where(Job.id == job_id).values(updated_at=utcnow() - timedelta(seconds=seconds)))
        s.commit()


def test_only_stale_jobs_missing_from_the_broker_are_republished(store):
    settings = Settings(republish_after=60)
    lost = store.create(JobKind.learn, {})
    in_line = store.create(JobKind.learn, {})
    fresh = store.create(JobKind.sample, {})
    for j in (lost, in_line):
        age(store, j.id, 120)
    broker = Broker(waiting=[in_line.id])
    actions = reconcile(store, broker, settings)
    assert [(a.job_id, a.action) for a in actions] == [(lost.id, "republished")]
    assert broker.sent == [lost.id]
    assert store.get(lost.id).status == "queued"
    # both stale jobs have their clock restarted: the next pass leaves them alone
    assert reconcile(store, broker, settings) == [] and broker.sent == [lost.id]
    assert store.get(fresh.id).version == fresh.version


def test_republishing_when_the_broker_cannot_be_inspected(store):
    class Opaque(Broker):
        def waiting(self, ids):
            return None  # cannot tell: publishing again is safe (a duplicate delivery is skipped)

    job = store.create(JobKind.learn, {})
    age(store, job.id, 120)
    broker = Opaque()
    assert [a.action for a in reconcile(store, broker, Settings(republish_after=60))] == ["republished"]
    assert broker.sent == [job.id]


def test_a_failed_republish_is_retried_on_the_next_pass(store):
    class Down(Broker):
        def publish(self, job_id, countdown=None):
            raise ConnectionError("broker down")

    job = store.create(JobKind.learn, {})
    age(store, job.id, 120)
    assert reconcile(store, Down(), Settings(republish_after=60)) == []
    assert store.get(job.id).status == "queued"
    age(store, job.id, 120)
    broker = Broker()
    assert [a.action for a in reconcile(store, broker, Settings(republish_after=60))] == ["republished"]


def _ids() -> tuple[str, str]:
    return uuid.uuid4().hex, uuid.uuid4().hex


def test_waiting_reads_the_redis_queue(tmp_path):
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as e:
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {e}")
    name = f"gpu-test-{uuid.uuid4().hex[:10]}"
    queue = JobQueue(make_celery(Settings(data_dir=tmp_path, broker_url=REDIS_URL, queue=name)), name)
    sent, not_sent = _ids()
    try:
        queue.publish(sent)
        assert queue.waiting([sent, not_sent]) == {sent}
    finally:
        r = redis.Redis.from_url(REDIS_URL)
        for key in r.scan_iter(match=f"*{name}*"):
            r.delete(key)
        queue.close()


def test_waiting_reads_the_embedded_broker(tmp_path):
    settings = Settings(data_dir=tmp_path)
    queue = JobQueue(make_celery(settings), settings.queue)
    sent, not_sent = _ids()
    queue.publish(sent)
    assert queue.waiting([sent, not_sent]) == {sent}
    queue.close()
