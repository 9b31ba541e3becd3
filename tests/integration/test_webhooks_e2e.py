"""Webhooks end to end: a real worker (Celery on Redis, jobs on PostgreSQL; and `gcn serve` with
nothing else) POSTs to a receiver on 127.0.0.1 in this process. Checks the signature, that the
body is the job document GET /v1/jobs/{id} serves, retries, a refusing receiver, and a worker
killed in the middle of a POST."""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest

from gcn_e2e import SERVE_FAST, Api, Serve, redis_stack, start_worker
from service import webhooks
from webhook_receiver import HANG, Receiver

pytestmark = pytest.mark.slow

SECRET = "e2e-webhook-secret-0123456789"
FAST = dict(webhook_allow_private=True, webhook_secret=SECRET, webhook_backoff=0.2, webhook_backoff_max=0.5,
            webhook_poll_interval=0.2, webhook_timeout=2, webhook_progress_interval=0.3)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, redis_url, own_postgres_url):
    with redis_stack(tmp_path_factory.mktemp("webhooks"), own_postgres_url, redis_url, "hooks",
                     progress_interval=0.2, **FAST) as state:
        yield state


def verified(got) -> dict:
    h = got.headers
    assert h["Content-Type"] == "application/json" and h["X-GCN-Event"] in ("completed", "progress")
    assert webhooks.verify(SECRET.encode(), h["X-GCN-Timestamp"], got.body, h["X-GCN-Signature"]), h
    return got.json


def same_but_deliveries(a: dict, b: dict) -> bool:
    strip = lambda d: {**d, "webhook": {**d["webhook"], "deliveries": None}}  # noqa: E731
    return strip(a) == strip(b)


def settled(api: Api, job_id: str, timeout: float = 60) -> dict:
    return api.wait(job_id, timeout=timeout, until=lambda j: j["status"] in ("succeeded", "failed", "canceled") and all(
        d["status"] != "pending" for d in (j["webhook"] or {}).get("deliveries", []) if d["event"] == "completed")
        and any(d["event"] == "completed" for d in (j["webhook"] or {}).get("deliveries", [])))


@pytest.fixture(scope="module")
def model_id(stack, brick64):
    """Learns with a webhook for progress and completion (the first test), then serves its model."""
    api = stack["api"]
    with Receiver() as receiver:
        dataset = api.upload(brick64)
        r = api.http.post("/v1/models", json={"dataset_id": dataset["id"], "overrides": {"iterations": 40,
                                              "image_size": 32},
                                              "webhook": {"url": receiver.url, "events": ["completed", "progress"]}})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        [done] = receiver.wait(1, timeout=120, event="completed")
        progress = receiver.wait(1, event="progress")
        stack["learned"] = (job_id, done, progress, settled(stack["api"], job_id))
    return stack["learned"][3]["model_id"]


def test_a_finished_job_posts_its_signed_document(stack, model_id):
    job_id, done, progress, job = stack["learned"]
    body = verified(done)
    assert body["id"] == job_id and body["status"] == "succeeded" and body["progress"]["fraction"] == 1.0
    assert body["links"]["model"] == f"/v1/models/{model_id}"
    # the body is the job document GET /v1/jobs/{id} serves; only the delivery log moved on since
    assert same_but_deliveries(body, job), (body, job)
    [sent] = [d for d in body["webhook"]["deliveries"] if d["event"] == "completed"]
    [now] = [d for d in job["webhook"]["deliveries"] if d["event"] == "completed"]
    assert sent["id"] == now["id"] == done.delivery and sent["status"] == "pending" and sent["attempts"] == 0
    assert (now["status"], now["attempts"], now["response_status"]) == ("delivered", 1, 200)
    # progress while it learned: signed too, the job running
    for p in progress:
        assert verified(p)["status"] == "running" and p.json["progress"]["step"] <= 40


def test_a_failing_receiver_is_retried_until_it_answers(stack, model_id):
    api = stack["api"]
    with Receiver(500, 502) as receiver:
        r = api.http.post(f"/v1/models/{model_id}/samples",
                          json={"n": 1, "size": 32, "steps": 3, "webhook": {"url": receiver.url}})
        assert r.status_code == 202, r.text
        job = settled(api, r.json()["id"])
        [d] = job["webhook"]["deliveries"]
        assert job["status"] == "succeeded" and (d["status"], d["attempts"], d["response_status"]) == (
            "delivered", 3, 200)
        assert [a["response_status"] for a in d["log"]] == [500, 502, 200]
        assert len(receiver.received) == 3 and {g.delivery for g in receiver.received} == {d["id"]}
        assert all(verified(g)["status"] == "succeeded" for g in receiver.received)


def test_a_refusing_receiver_is_not_retried(stack, model_id):
    api = stack["api"]
    with Receiver(410) as receiver:
        r = api.http.post(f"/v1/models/{model_id}/samples",
                          json={"n": 1, "size": 32, "steps": 3, "webhook": {"url": receiver.url}})
        job = settled(api, r.json()["id"])
        [d] = job["webhook"]["deliveries"]
        assert (d["status"], d["attempts"], d["response_status"]) == ("failed", 1, 410) and "not retried" in d["error"]
        time.sleep(1.5)  # several backoff periods and sender passes
        assert len(receiver.received) == 1


def test_a_delivery_survives_its_worker_being_killed_mid_post(stack, model_id):
    """The whole worker is SIGKILLed while its sender waits on the receiver: the job had ended
    and its delivery is in the outbox; the next worker's sender posts it again when the lease
    runs out, with the same delivery id."""
    api = stack["api"]
    with Receiver(HANG) as receiver:
        r = api.http.post(f"/v1/models/{model_id}/samples",
                          json={"n": 1, "size": 32, "steps": 3, "webhook": {"url": receiver.url}})
        job_id = r.json()["id"]
        assert receiver.hanging.wait(60)
        os.killpg(stack["worker"].pid, signal.SIGKILL)
        stack["worker"].wait(10)
        receiver.release()
        assert api.job(job_id)["status"] == "succeeded"  # ended before the POST: that is not undone
        stack["worker"] = start_worker(stack["settings"], stack["folder"] / "worker2.log", f"hooks2-{uuid.uuid4().hex[:6]}")
        first, second = receiver.wait(2, timeout=60)
        assert first.delivery == second.delivery and verified(second)["id"] == job_id
        job = settled(api, job_id)
        [d] = job["webhook"]["deliveries"]
        assert (d["status"], d["attempts"]) == ("delivered", 2)
        assert "sender stopped" in d["log"][0]["error"] and d["log"][1]["response_status"] == 200


def test_embedded_serve_delivers_signed_with_its_generated_secret(tmp_path, brick64):
    """`gcn serve` (SQLite, no broker server): the worker's sender POSTs, signed with the key it
    generated into the data folder."""
    with Receiver() as receiver:
        server = Serve(tmp_path / "data", tmp_path / "serve.log", **SERVE_FAST, GCN_WEBHOOK_ALLOW_PRIVATE="true",
                       GCN_WEBHOOK_POLL_INTERVAL="0.2")
        try:
            api = Api(server.url)
            dataset = api.upload(brick64)
            r = api.http.post("/v1/models", json={"dataset_id": dataset["id"], "overrides": {
                "iterations": 10, "image_size": 32}, "webhook": {"url": receiver.url}})
            assert r.status_code == 202, r.text
            [got] = receiver.wait(1, timeout=120)
            secret = (tmp_path / "data" / "webhook-secret").read_text().strip().encode()
            h = got.headers
            assert webhooks.verify(secret, h["X-GCN-Timestamp"], got.body, h["X-GCN-Signature"])
            job = settled(api, r.json()["id"])
            assert got.json["status"] == job["status"] == "succeeded" and same_but_deliveries(got.json, job)
            assert server.interrupt() == 0
        finally:
            if server.proc.poll() is None:
                server.kill()
