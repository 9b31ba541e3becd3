"""Webhooks in the service layer: admission, signing, backoff, the outbox written with a job's
ending (SQLite and PostgreSQL), and the sender against a real receiver on 127.0.0.1."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from service import webhooks
from service.db import Job, WebhookDelivery, utcnow
from service.jobdoc import JobOut, body as job_body
from service.jobs import JobKind, JobStatus
from service.reconcile import reconcile
from service.settings import Settings
from service.submit import BrokerUnavailable, submit
from webhook_receiver import HANG, Receiver

ME = "test-host:1"
SECRET = "test-secret-0123456789abcdef"


@pytest.fixture
def settings(tmp_path, db) -> Settings:
    return Settings(data_dir=tmp_path, database_url=db.url, webhook_allow_private=True, webhook_secret=SECRET,
                    webhook_backoff=0.01, webhook_backoff_max=0.02, webhook_timeout=2, webhook_max_attempts=4)


@pytest.fixture
def receiver():
    with Receiver() as r:
        yield r


def hooked(store, url, events=("completed",), kind=JobKind.sample):
    return store.create(kind, {"n": 1}, webhook=webhooks.admit(url, list(events), allow_private=True))


def deliveries(store, job_id) -> list[WebhookDelivery]:
    return store.get(job_id).deliveries


def payload(store, delivery_id) -> str:
    with store.db.session() as s:
        return s.scalar(select(WebhookDelivery.payload).where(WebhookDelivery.id == delivery_id))


def run_until_settled(dispatcher, store, job_id, timeout=20.0):
    """Passes of the sender until no delivery of the job is pending."""
    deadline = time.monotonic() + timeout
    while any(d.status == "pending" for d in deliveries(store, job_id)):
        assert time.monotonic() < deadline, [(d.status, d.attempts, d.error) for d in deliveries(store, job_id)]
        dispatcher.run_once()
        time.sleep(0.02)
    return deliveries(store, job_id)


# ---- admission, signing, backoff -----------------------------------------------------------------
@pytest.mark.parametrize("url, part", [
    ("", "url"), ("ftp://example.com/x", "url"), ("example.com/hook", "url"), ("http://", "url"),
    ("http://user:pw@example.com/", "url"), ("http://example.com:99999/", "url"), ("http://exa mple.com/", "url"),
    ("http://example.com/\x00", "url"), ("http://exämple.com/", "url"), ("http://ex_ample..com/", "url"),
    ("https://example.com/" + "a" * 2100, "url"), ("javascript:alert(1)", "url"),
])
def test_urls_that_are_refused_whatever_the_settings(url, part):
    with pytest.raises(webhooks.BadWebhook) as e:
        webhooks.admit(url, allow_private=True)
    assert e.value.part == part


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/x", "http://localhost/x", "http://app.localhost/", "http://10.1.2.3/",
    "http://192.168.0.10/", "http://172.16.0.1/", "http://169.254.169.254/latest/meta-data/", "http://[::1]/",
    "http://[fd00::1]/", "http://[::ffff:127.0.0.1]/", "http://0.0.0.0/", "http://100.64.0.1/", "http://224.0.0.1/",
])
def test_private_addresses_are_refused_unless_allowed(url):
    with pytest.raises(webhooks.BadWebhook, match="GCN_WEBHOOK_ALLOW_PRIVATE"):
        webhooks.admit(url)
    assert webhooks.admit(url, allow_private=True)["url"] == url


def test_what_a_job_stores_for_its_webhook():
    assert webhooks.admit("https://example.com/h?x=1") == {"url": "https://example.com/h?x=1", "events": ["completed"]}
    assert webhooks.admit("http://93.184.215.14:8080/", ["progress", "completed", "progress"])["events"] == [
        "progress", "completed"]
    for events, message in (([], "at least one"), (["done"], "not an event")):
        with pytest.raises(webhooks.BadWebhook, match=message) as e:
            webhooks.admit("https://example.com/", events)
        assert e.value.part == "events"


def test_the_signature_is_an_hmac_of_timestamp_dot_body():
    secret, body, ts = b"k" * 32, b'{"id":"x"}', 1_700_000_000
    expected = hmac.new(secret, b"1700000000." + body, hashlib.sha256).hexdigest()
    assert webhooks.sign(secret, ts, body) == f"sha256={expected}"
    sig = webhooks.sign(secret, ts, body)
    assert webhooks.verify(secret, str(ts), body, sig, now=ts + 10)
    assert not webhooks.verify(secret, ts, body + b" ", sig, now=ts)  # body changed
    assert not webhooks.verify(secret, ts + 1, body, sig, now=ts)  # timestamp changed
    assert not webhooks.verify(b"other" * 8, ts, body, sig, now=ts)  # another key
    assert not webhooks.verify(secret, ts, body, sig, now=ts + 301)  # too old: a replay
    assert not webhooks.verify(secret, "soon", body, sig)


def test_backoff_doubles_up_to_the_cap_with_jitter_in_the_second_half():
    low = [webhooks.backoff(n, 5, 60, rand=lambda: 0.0) for n in range(1, 7)]
    high = [webhooks.backoff(n, 5, 60, rand=lambda: 1.0) for n in range(1, 7)]
    assert high == [5, 10, 20, 40, 60, 60] and low == [2.5, 5, 10, 20, 30, 30]
    assert all(2.5 <= webhooks.backoff(1, 5, 60) <= 5 for _ in range(100))


@pytest.mark.parametrize("status, delivered, permanent", [
    (200, True, False), (204, True, False), (400, False, True), (401, False, True), (404, False, True),
    (410, False, True), (422, False, True), (408, False, False), (429, False, False), (301, False, False),
    (500, False, False), (502, False, False), (503, False, False),
])
def test_which_answers_are_retried(status, delivered, permanent):
    outcome = webhooks.classify(status, "Reason")
    assert (outcome.delivered, outcome.permanent) == (delivered, permanent)


def test_a_generated_secret_is_made_once_kept_private_and_shared(tmp_path):
    settings = Settings(data_dir=tmp_path)
    found: list[bytes] = []
    threads = [threading.Thread(target=lambda: found.append(webhooks.load_secret(settings))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    path = tmp_path / "webhook-secret"
    assert len(set(found)) == 1 and len(found[0]) == 64 and path.read_text().strip().encode() == found[0]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name != "webhook-secret"]  # no temporary file left
    assert webhooks.load_secret(Settings(data_dir=tmp_path)) == found[0]  # a restart keeps it
    assert webhooks.load_secret(Settings(data_dir=tmp_path, webhook_secret=SECRET)) == SECRET.encode()
    with pytest.raises(ValueError, match="16 characters"):
        Settings(data_dir=tmp_path, webhook_secret="short")


# ---- the outbox --------------------------------------------------------------------------------
def test_the_ending_writes_its_delivery_with_the_job_document_of_that_moment(store, receiver):
    job = hooked(store, receiver.url)
    assert store.claim(job.id, ME, heartbeat_timeout=60, max_attempts=3).job is not None
    assert store.report(job.id, ME, step=1, total=2, webhook_event=True) is None  # progress not asked for
    assert deliveries(store, job.id) == []
    assert store.finish(job.id, ME, JobStatus.succeeded, result={"images": 1})
    [d] = deliveries(store, job.id)
    assert (d.event, d.status, d.attempts, d.url) == ("completed", "pending", 0, receiver.url)
    # the payload is exactly the document GET /v1/jobs/{id} gives now (the delivery pending in it)
    now = JobOut.of(store.get(job.id)).model_dump(mode="json")
    assert json.loads(payload(store, d.id)) == now
    assert now["status"] == "succeeded" and now["webhook"]["deliveries"][0]["status"] == "pending"
    assert payload(store, d.id) == job_body(store.get(job.id))
    assert not store.finish(job.id, ME, JobStatus.failed, error="late")  # no ending, no second delivery
    assert len(deliveries(store, job.id)) == 1


def test_jobs_without_a_webhook_get_no_delivery(store):
    job = store.create(JobKind.sample, {"n": 1})
    store.claim(job.id, ME, heartbeat_timeout=60, max_attempts=3)
    store.finish(job.id, ME, JobStatus.succeeded, result={})
    with store.db.session() as s:
        assert s.scalar(select(func.count()).select_from(WebhookDelivery)) == 0
    assert JobOut.of(store.get(job.id)).webhook is None


def test_an_ending_is_never_written_without_its_delivery(store, receiver, monkeypatch):
    """Same transaction: when the outbox write fails, the ending is rolled back with it."""
    job = hooked(store, receiver.url)
    store.claim(job.id, ME, heartbeat_timeout=60, max_attempts=3)

    def broken(*_a, **_k):
        raise RuntimeError("outbox down")

    monkeypatch.setattr(webhooks, "enqueue", broken)
    with pytest.raises(RuntimeError):
        store.finish(job.id, ME, JobStatus.succeeded, result={})
    assert store.get(job.id).status == "running"
    monkeypatch.undo()
    assert store.finish(job.id, ME, JobStatus.succeeded, result={})
    assert [d.event for d in deliveries(store, job.id)] == ["completed"]


def test_every_way_a_job_ends_writes_the_completed_event(store, receiver, tmp_path):
    settings = Settings(data_dir=tmp_path, heartbeat_timeout=1, max_attempts=1)
    canceled = hooked(store, receiver.url)
    store.request_cancel(canceled.id)  # queued: canceled at once, by the API

    class Down:
        def publish(self, _job_id):
            raise ConnectionError("broker down")

    with pytest.raises(BrokerUnavailable):
        submit(store, Down(), JobKind.sample, {"n": 1}, webhook=webhooks.admit(receiver.url, allow_private=True))
    unsent = store.list()[0][0]

    orphan = hooked(store, receiver.url)  # running, its worker gone, no attempts left: the reconciler fails it
    store.claim(orphan.id, "gone-host:9", heartbeat_timeout=60, max_attempts=3)
    with store.db.session() as s:
        s.execute(update(Job).where(Job.id == orphan.id).values(heartbeat_at=utcnow() - timedelta(seconds=30)))
        s.commit()
    reconcile(store, None, settings)

    gave_up = hooked(store, receiver.url)  # a claim that finds the attempts spent fails it
    with store.db.session() as s:
        s.execute(update(Job).where(Job.id == gave_up.id).values(attempts=3))
        s.commit()
    assert store.claim(gave_up.id, ME, heartbeat_timeout=60, max_attempts=3).reason == "attempts exhausted"

    for job, status in ((canceled, "canceled"), (unsent, "failed"), (orphan, "failed"), (gave_up, "failed")):
        row = store.get(job.id)
        assert row.status == status, (job.id, row.status)
        assert [(d.event, d.status) for d in row.deliveries] == [("completed", "pending")]
        assert json.loads(payload(store, row.deliveries[0].id))["status"] == status


def test_progress_events_when_asked_for_only_the_latest_kept(store, receiver):
    job = hooked(store, receiver.url, events=("completed", "progress"))
    store.claim(job.id, ME, heartbeat_timeout=60, max_attempts=3)
    ids = [store.report(job.id, ME, step=k, total=9, webhook_event=True) for k in range(1, 6)]
    assert all(ids)
    rows = deliveries(store, job.id)
    # a newer event replaces progress events not sent yet: one pending, never out of order
    assert [(d.id, d.status) for d in rows] == [(ids[-1], "pending")]
    assert json.loads(payload(store, ids[-1]))["progress"]["step"] == 5
    store.finish(job.id, ME, JobStatus.succeeded, result={})
    assert [d.event for d in deliveries(store, job.id)] == ["completed"]


# ---- the sender, with a real receiver -------------------------------------------------------------
def test_a_delivery_is_posted_signed_with_the_job_document(store, settings, receiver):
    job = hooked(store, receiver.url)
    store.request_cancel(job.id)
    [pending] = deliveries(store, job.id)
    webhooks.Dispatcher(store.db, settings).run_once()
    [got] = receiver.wait(1)
    assert got.path == "/hooks/gcn?token=t" and got.headers["Content-Type"] == "application/json"
    assert got.event == "completed" and got.delivery == pending.id and got.headers["X-GCN-Attempt"] == "1"
    # verified as the README tells receivers to (not with our own helper)
    ts = got.headers["X-GCN-Timestamp"]
    mac = "sha256=" + hmac.new(SECRET.encode(), ts.encode() + b"." + got.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(mac, got.headers["X-GCN-Signature"]) and abs(int(ts) - time.time()) < 30
    assert got.body.decode() == payload(store, pending.id)
    assert got.json["id"] == job.id and got.json["status"] == "canceled"
    [d] = deliveries(store, job.id)
    assert (d.status, d.attempts, d.response_status, d.error, d.next_attempt_at) == ("delivered", 1, 200, None, None)
    assert [(a["attempt"], a["response_status"]) for a in d.log] == [(1, 200)]
    assert webhooks.Dispatcher(store.db, settings).run_once() == 0 and len(receiver.received) == 1


def test_each_api_keys_webhooks_are_signed_with_that_keys_own_secret(store, settings, receiver):
    """A receiver holds the key that verifies it; one API key's receiver must not be able to sign
    what another key's receiver accepts, so each key has its own (derived) signing key."""
    server = SECRET.encode()
    a, b = webhooks.signing_key(server, "a" * 32), webhooks.signing_key(server, "b" * 32)
    assert webhooks.signing_key(server, None) == server and len({a, b, server}) == 3
    assert webhooks.signing_key(server, "a" * 32) == a  # derived, so every worker agrees without storing it
    job = store.create(JobKind.sample, {"n": 1}, api_key_id="a" * 32,
                       webhook=webhooks.admit(receiver.url, allow_private=True))
    store.request_cancel(job.id)
    webhooks.Dispatcher(store.db, settings).run_once()
    [got] = receiver.wait(1)
    h = got.headers
    assert webhooks.verify(a, h["X-GCN-Timestamp"], got.body, h["X-GCN-Signature"])
    assert not webhooks.verify(b, h["X-GCN-Timestamp"], got.body, h["X-GCN-Signature"])
    assert not webhooks.verify(server, h["X-GCN-Timestamp"], got.body, h["X-GCN-Signature"])


def test_a_failing_receiver_gets_retries_until_it_answers_2xx(store, settings):
    with Receiver(500, 503, 429) as receiver:
        job = hooked(store, receiver.url)
        store.request_cancel(job.id)
        [d] = run_until_settled(webhooks.Dispatcher(store.db, settings), store, job.id)
        assert (d.status, d.attempts, d.response_status) == ("delivered", 4, 200)
        assert [a["response_status"] for a in d.log] == [500, 503, 429, 200]
        assert [a["attempt"] for a in d.log] == [1, 2, 3, 4]
        assert "HTTP 500" in d.log[0]["error"] and d.log[-1]["error"] is None
        assert len({r.delivery for r in receiver.received}) == 1 and len(receiver.received) == 4
        assert all(webhooks.verify(SECRET.encode(), r.headers["X-GCN-Timestamp"], r.body, r.headers["X-GCN-Signature"])
                   for r in receiver.received)  # each signed when sent
        assert len({r.body for r in receiver.received}) == 1  # the same body every time


def test_a_receiver_that_refuses_is_not_retried(store, settings):
    with Receiver(410) as receiver:
        job = hooked(store, receiver.url)
        store.request_cancel(job.id)
        dispatcher = webhooks.Dispatcher(store.db, settings)
        [d] = run_until_settled(dispatcher, store, job.id)
        assert (d.status, d.attempts, d.response_status) == ("failed", 1, 410)
        assert "not retried" in d.error and d.next_attempt_at is None
        time.sleep(0.1)  # well past any backoff
        assert dispatcher.run_once() == 0 and len(receiver.received) == 1


def test_retries_stop_after_the_most_attempts(store, settings):
    with Receiver(default=500) as receiver:
        job = hooked(store, receiver.url)
        store.request_cancel(job.id)
        [d] = run_until_settled(webhooks.Dispatcher(store.db, settings), store, job.id)
        assert (d.status, d.attempts) == ("failed", settings.webhook_max_attempts)
        assert d.error.endswith("gave up after 4 attempt(s)") and len(receiver.received) == 4


def test_no_receiver_at_all_is_retried_with_a_reason(store, settings):
    with Receiver() as receiver:
        url = receiver.url
    job = hooked(store, url)  # its port is closed now
    store.request_cancel(job.id)
    settings.webhook_backoff, settings.webhook_backoff_max = 10, 60
    webhooks.Dispatcher(store.db, settings).run_once()
    [d] = deliveries(store, job.id)
    assert d.status == "pending" and d.attempts == 1 and d.response_status is None
    assert "no answer" in d.error
    assert 5 <= (d.next_attempt_at - d.last_attempt_at).total_seconds() <= 11  # the first backoff, jittered


def test_retry_after_is_honoured(store, settings):
    settings.webhook_backoff_max = 120
    with Receiver(429) as receiver:
        job = hooked(store, receiver.url)
        store.request_cancel(job.id)
        dispatcher = webhooks.Dispatcher(store.db, settings, send=lambda *a, **k: webhooks.Outcome(
            429, "HTTP 429", retry_after=100))
        dispatcher.run_once()
        [d] = deliveries(store, job.id)
        assert (d.next_attempt_at - d.last_attempt_at).total_seconds() >= 99
        assert dispatcher.run_once() == 0  # not due yet


def test_a_private_address_is_refused_when_sending_too(store, settings, receiver):
    """A webhook admitted while allowed, or a name that resolves to a private address later."""
    job = hooked(store, receiver.url)
    store.request_cancel(job.id)
    settings.webhook_allow_private = False
    webhooks.Dispatcher(store.db, settings).run_once()
    [d] = deliveries(store, job.id)
    assert d.status == "failed" and "not a public address" in d.error and receiver.received == []


def test_a_delivery_survives_its_sender_crashing_before_sending(store, settings, receiver):
    """The ending committed, then the process died before any POST: the outbox row is all that
    is left, and any other sender's next pass delivers it."""
    job = hooked(store, receiver.url)
    store.claim(job.id, ME, heartbeat_timeout=60, max_attempts=3)
    store.finish(job.id, ME, JobStatus.succeeded, result={})
    # (no sender ran in this "process")
    fresh = webhooks.Dispatcher(store.db, settings)
    assert fresh.run_once() == 1
    assert receiver.wait(1)[0].json["status"] == "succeeded"
    assert deliveries(store, job.id)[0].status == "delivered"


def test_a_delivery_survives_its_sender_crashing_mid_post(store, settings):
    """A sender took the lease and died while POSTing: nobody sends it while the lease runs;
    then another sender does, and the lost attempt shows in the log."""
    with Receiver() as receiver:
        job = hooked(store, receiver.url)
        store.request_cancel(job.id)
        crashed = webhooks.Dispatcher(store.db, settings)
        lease = crashed._lease(crashed._due()[0])  # leased, then "killed" before recording anything
        assert lease is not None and lease.attempt == 1
        other = webhooks.Dispatcher(store.db, settings)
        assert other.run_once() == 0  # the lease holds: no second POST at the same time
        with store.db.session() as s:  # time passes: the lease runs out
            s.execute(update(WebhookDelivery).values(leased_until=utcnow() - timedelta(seconds=1)))
            s.commit()
        assert other.run_once() == 1
        [d] = deliveries(store, job.id)
        assert (d.status, d.attempts) == ("delivered", 2)
        assert d.log[0]["attempt"] == 1 and "sender stopped" in d.log[0]["error"]
        assert (d.log[1]["attempt"], d.log[1]["response_status"]) == (2, 200)
        # the dead sender's late result cannot overwrite the outcome (its lease token is gone)
        assert not crashed.record(lease, webhooks.Outcome(error="late"), 1.0)
        assert deliveries(store, job.id)[0].status == "delivered"


def test_a_hanging_receiver_holds_one_slot_while_other_deliveries_go_on(store, settings):
    """The running sender (two slots): while one receiver holds its POST open until the timeout,
    deliveries that fall due meanwhile, to another receiver, go out at once on the other slot."""
    running = settings.model_copy(update={"webhook_timeout": 20, "webhook_concurrency": 2,
                                          "webhook_poll_interval": 0.1})
    with Receiver(HANG) as slow, Receiver() as fast:
        stuck = hooked(store, slow.url)
        store.request_cancel(stuck.id)
        dispatcher = webhooks.Dispatcher(store.db, running).start()
        try:
            assert slow.hanging.wait(10)
            started = time.monotonic()
            later = [hooked(store, fast.url) for _ in range(3)]
            for job in later:
                store.request_cancel(job.id)
            dispatcher.wake()
            assert sorted(r.json["id"] for r in fast.wait(3, timeout=8)) == sorted(j.id for j in later)
            assert time.monotonic() - started < 8 < running.webhook_timeout  # not after the hanging POST
            assert [d.status for d in deliveries(store, stuck.id)] == ["pending"]  # still in flight
        finally:
            slow.release()
            dispatcher.stop()


def test_two_senders_never_post_one_delivery_twice(store, settings, receiver):
    jobs = [hooked(store, receiver.url) for _ in range(6)]
    for j in jobs:
        store.request_cancel(j.id)
    senders = [webhooks.Dispatcher(store.db, settings) for _ in range(3)]
    threads = [threading.Thread(target=lambda d=d: [d.run_once() for _ in range(4)]) for d in senders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = sorted(r.delivery for r in receiver.received)
    assert len(ids) == 6 and len(set(ids)) == 6


def test_housekeeping_gives_up_spent_deliveries_expires_old_progress_and_prunes(store, settings, receiver):
    spent = hooked(store, receiver.url)
    store.request_cancel(spent.id)
    progress = hooked(store, receiver.url, events=("progress",))
    store.claim(progress.id, ME, heartbeat_timeout=60, max_attempts=3)
    store.report(progress.id, ME, step=1, total=2, webhook_event=True)
    gone = hooked(store, receiver.url)
    store.request_cancel(gone.id)
    webhooks.Dispatcher(store.db, settings).run_once()  # delivers all three... then age them
    with store.db.session() as s:
        s.execute(update(WebhookDelivery).where(WebhookDelivery.job_id == spent.id).values(
            status="pending", attempts=settings.webhook_max_attempts, leased_until=utcnow() - timedelta(seconds=1)))
        s.execute(update(WebhookDelivery).where(WebhookDelivery.job_id == progress.id).values(
            status="pending", attempts=0, created_at=utcnow() - timedelta(hours=1)))
        s.execute(Job.__table__.delete().where(Job.id == gone.id))  # retention removed the job
        s.commit()
    assert webhooks.housekeeping(store.db, settings) == {"given_up": 1, "expired": 1, "pruned": 1}
    assert "gave up" in deliveries(store, spent.id)[0].error
    assert "expired" in deliveries(store, progress.id)[0].error
    with store.db.session() as s:
        assert s.scalar(select(func.count()).where(WebhookDelivery.job_id == gone.id)) == 0


def test_a_pending_delivery_outlives_its_job_row(store, settings, receiver):
    """Retention may remove a finished job before its delivery went out: the snapshot is sent."""
    job = hooked(store, receiver.url)
    store.request_cancel(job.id)
    with store.db.session() as s:
        s.execute(Job.__table__.delete().where(Job.id == job.id))
        s.commit()
    webhooks.Dispatcher(store.db, settings).run_once()
    assert receiver.wait(1)[0].json["id"] == job.id


def test_the_sender_thread_delivers_when_woken(store, settings, receiver):
    settings.webhook_poll_interval = 30  # only a wake-up can make it look in time
    dispatcher = webhooks.Dispatcher(store.db, settings).start()
    try:
        time.sleep(0.2)  # its first pass found nothing
        job = hooked(store, receiver.url)
        store.request_cancel(job.id)
        dispatcher.wake()
        assert receiver.wait(1, timeout=10)[0].json["id"] == job.id
    finally:
        dispatcher.stop()


def test_a_receiver_that_answers_a_byte_at_a_time_cannot_hold_the_sender_past_its_timeout():
    """The timeout bounds the whole POST, not each read: a drip-feeding receiver is cut off."""
    import socket as sk

    server = sk.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    stop = threading.Event()

    def drip():
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n":
                if stop.wait(0.3):
                    return
                try:
                    conn.send(bytes([byte]))
                except OSError:
                    return

    threading.Thread(target=drip, daemon=True).start()
    started = time.monotonic()
    outcome = webhooks.post(f"http://127.0.0.1:{server.getsockname()[1]}/hook", b"{}", {}, timeout=1.0,
                            allow_private=True)
    took = time.monotonic() - started
    stop.set()
    server.close()
    assert not outcome.delivered and "timed out" in outcome.error, outcome
    assert took < 2.0, took  # the drip would take ~11 s to finish its status line
