"""Webhooks from a task body (``worker.tasks.execute``) with a sender thread beside it, as in a
worker's job process: progress events while learning, the completed event at the end, and a
receiver that hangs never slows the learning loop."""

from __future__ import annotations

import time

import pytest

from service import webhooks
from service.jobs import JobKind, new_id
from webhook_receiver import HANG, Receiver
from worker.tasks import execute

TINY = {"iterations": 30, "image_size": 32}


@pytest.fixture
def hooked_runtime(runtime):
    s = runtime.settings
    s.webhook_allow_private, s.webhook_secret = True, "worker-test-secret-0123"
    s.webhook_progress_interval, s.webhook_poll_interval, s.webhook_timeout = 0.2, 0.1, 2
    dispatcher = webhooks.start_dispatcher(runtime.db, s)
    yield runtime
    webhooks.stop_dispatcher()
    assert not dispatcher.alive


def learn(runtime, dataset, url, events, iterations=30):
    hook = webhooks.admit(url, events, allow_private=True)
    return runtime.store.create(JobKind.learn, {"preset": "texture-fast", "overrides": {**TINY, "iterations": iterations}},
                                dataset_id=dataset.id, model_id=new_id(), webhook=hook)


def test_learning_sends_progress_events_then_the_completed_one(hooked_runtime, dataset):
    rt = hooked_runtime
    with Receiver() as receiver:
        job = learn(rt, dataset, receiver.url, ["completed", "progress"], iterations=60)
        assert execute(rt, job.id) == "succeeded"
        [done] = receiver.wait(1, event="completed", timeout=20)
        progress = [r for r in receiver.received if r.event == "progress"]
        assert progress, "no progress event while learning"
        assert all(p.json["status"] == "running" for p in progress)
        steps = [p.json["progress"]["step"] for p in progress]
        assert steps == sorted(steps)
        assert done.json["status"] == "succeeded" and done.json["result"]["model_id"] == job.model_id
        for r in receiver.received:
            assert webhooks.verify(b"worker-test-secret-0123", r.headers["X-GCN-Timestamp"], r.body,
                                   r.headers["X-GCN-Signature"])
        kept = rt.store.get(job.id).deliveries
        assert [d.event for d in kept].count("progress") <= webhooks.KEEP_PROGRESS


def test_only_the_completed_event_unless_progress_is_asked_for(hooked_runtime, dataset):
    rt = hooked_runtime
    with Receiver() as receiver:
        job = learn(rt, dataset, receiver.url, ["completed"])
        assert execute(rt, job.id) == "succeeded"
        receiver.wait(1, timeout=20)
        time.sleep(0.3)
        assert [r.event for r in receiver.received] == ["completed"]


def test_a_hanging_receiver_does_not_slow_the_job(hooked_runtime, dataset, runtime):
    """The receiver holds every POST for as long as the sender's timeout allows: the learning
    loop only writes rows, so the job takes as long as without a webhook."""
    rt = hooked_runtime
    plain = rt.store.create(JobKind.learn, {"preset": "texture-fast", "overrides": TINY}, dataset_id=dataset.id,
                            model_id=new_id())
    started = time.monotonic()
    assert execute(rt, plain.id) == "succeeded"
    without = time.monotonic() - started
    with Receiver(*[HANG] * 50) as receiver:
        job = learn(rt, dataset, receiver.url, ["completed", "progress"])
        started = time.monotonic()
        assert execute(rt, job.id) == "succeeded"
        took = time.monotonic() - started
        assert receiver.hanging.is_set()  # the sender was stuck on the receiver meanwhile
        assert took < without * 1.5 + 1.0, (took, without)
        receiver.release()
