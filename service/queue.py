"""Celery, configured for long GPU jobs, and the one message the service sends: a job id.

The API publishes with ``JobQueue.publish`` (by task name, so app/ never imports worker/); the
worker registers the task under the same name on an app built by the same ``make_celery``.

Settings that matter for jobs lasting minutes to hours (Celery's "optimizing" guide):
- ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged only after its
  job ended, so a worker that dies mid-job leaves it to be delivered again (the task then resumes
  from the job's checkpoint);
- ``worker_prefetch_multiplier = 1``: a busy worker does not hoard jobs that an idle one could run;
- Redis ``visibility_timeout`` above the longest job: otherwise Redis would hand a running job to a
  second worker; set for the broker and for result-backend options alike (there is no result
  backend: ``task_ignore_result``, since the job table is where users read results).

Embedded mode uses kombu's SQLAlchemy transport on a SQLite file: no server to run. It has no
visibility timeout; a message taken by a worker that is then killed is lost by the broker, which
is acceptable because the job row is the truth: the worker-side reconciler requeues such jobs.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

from celery import Celery
from kombu.transport import sqlalchemy as kombu_sqlalchemy
from sqlalchemy.exc import IntegrityError, OperationalError

from .settings import Settings

TASK_NAME = "gcn.run_job"


class EmbeddedChannel(kombu_sqlalchemy.Channel):
    """kombu's SQLAlchemy channel, where what another process created between this one's
    look-up and its own creation is found rather than failing the call: the broker's tables (on
    a new data folder) and a queue's row.

    kombu guards each look-up-then-create with a lock of its process only, but the API and the
    workers of `gcn serve` are processes sharing one SQLite file: the API's first publish and a
    worker's start-up both declare the job queue, and the loser's insert failed ("UNIQUE
    constraint failed: kombu_queue.name"), which failed that job with a 503; on a new data
    folder their CREATE TABLEs could collide the same way ("table kombu_queue already exists",
    which kombu's retry of the publish turned into an AttributeError on a closed channel).
    tests/service/test_embedded_broker.py makes each race."""

    _made = None  # the engine of this channel's latest _open that created one

    def _engine_from_config(self):
        self._made = super()._engine_from_config()
        return self._made

    def _open(self):
        self._made = None
        try:
            return super()._open()
        except (OperationalError, IntegrityError):  # the tables exist now: another process made them
            if self._made is not None:  # never cached by kombu: its pooled connection closes now
                self._made.dispose()
            return super()._open()  # its create_all checks first, and finds them

    def _get_or_create(self, queue):
        try:
            return super()._get_or_create(queue)
        except IntegrityError:  # the row exists now: another process won the insert
            self.session.rollback()
        try:
            return super()._get_or_create(queue)
        except Exception:  # a real failure: raised, with the session usable for the next call
            self.session.rollback()
            raise


class EmbeddedTransport(kombu_sqlalchemy.Transport):
    """kombu's SQLAlchemy transport (the embedded broker), polling its table every 0.1 s instead
    of every second: with the default, each job of `gcn serve` waited up to a second before a
    worker saw it (about 1 s of overhead per job, docs/benchmarks.md). An idle poll is one
    indexed SELECT on a local SQLite file. Its channels are ``EmbeddedChannel``."""

    Channel = EmbeddedChannel
    polling_interval = 0.1


def make_celery(settings: Settings) -> Celery:
    transport_options: dict[str, Any]
    if settings.embedded_broker:
        # the same SQLite URL, through EmbeddedTransport (a "sqla+" URL would pick kombu's own class)
        app = Celery("gcn", broker=settings.broker_url.split("+", 1)[1], set_as_current=False)
        app.conf.broker_transport = EmbeddedTransport
        # The SQLAlchemy transport passes its options to create_engine(): only engine arguments here.
        transport_options = {"connect_args": {"timeout": 30}}
    else:
        app = Celery("gcn", broker=settings.broker_url, set_as_current=False)
        transport_options = {"visibility_timeout": settings.visibility_timeout}
    app.conf.update(
        task_ignore_result=True,
        result_backend=None,
        result_backend_transport_options={"visibility_timeout": settings.visibility_timeout},
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_pool="prefork",
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        # A broker blip must not kill a two-hour job: its message is redelivered later, and
        # claiming (JobStore.claim) refuses to run a job twice while its owner is alive.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        # Remote control needs fanout, which the SQLAlchemy transport lacks (and polls for it).
        worker_enable_remote_control=not settings.embedded_broker,
        worker_hijack_root_logger=False,
        task_default_queue=settings.queue,
        task_routes={TASK_NAME: {"queue": settings.queue}},
        task_serializer="json",
        accept_content=["json"],
        task_track_started=False,
        task_send_sent_event=False,
        enable_utc=True,
    )
    return app


class JobQueue:
    """Publishes job ids; knows nothing of what the worker does with them."""

    def __init__(self, celery: Celery, queue: str):
        self.celery = celery
        self.queue = queue

    def publish(self, job_id: str, countdown: Optional[float] = None) -> None:
        self.celery.send_task(
            TASK_NAME, args=[job_id], queue=self.queue, retry=True, countdown=countdown,
            retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2},
        )

    def waiting(self, job_ids: Iterable[str]) -> Optional[set[str]]:
        """Which of ``job_ids`` have a message waiting in the broker's queue (not yet taken by a
        worker), or None when this broker cannot be inspected. A message that a worker took and
        then died with is not waiting: Redis keeps it aside until the visibility timeout (days)
        and the SQLAlchemy transport never gives it back, so for the reconciler it is lost."""
        wanted = set(job_ids)
        if not wanted:
            return set()
        transport = self.celery.conf.broker_url.split(":", 1)[0].lower()
        try:
            if transport.startswith(("redis", "rediss")):
                return self._waiting_redis(wanted)
            if self.celery.conf.broker_transport is EmbeddedTransport:
                return self._waiting_sqla(wanted)
        except Exception:
            return None
        return None

    def _waiting_redis(self, wanted: set[str]) -> set[str]:
        found: set[str] = set()
        with self.celery.connection_for_read() as conn:
            channel = conn.default_channel
            client = channel.client
            for pri in getattr(channel, "priority_steps", [0]):
                key = channel._q_for_pri(self.queue, pri)
                size = client.llen(key)
                for start in range(0, size, 500):
                    for raw in client.lrange(key, start, start + 499):
                        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
                        found.update(j for j in wanted if j in text)
        return found

    def _waiting_sqla(self, wanted: set[str]) -> set[str]:
        from sqlalchemy import create_engine, inspect, text

        engine = create_engine(self.celery.conf.broker_url, connect_args={"timeout": 30})
        try:
            if not inspect(engine).has_table("kombu_message"):
                return set()
            with engine.connect() as conn:
                rows = conn.execute(text(
                    "SELECT m.payload FROM kombu_message m JOIN kombu_queue q ON m.queue_id = q.id "
                    "WHERE m.visible = 1 AND q.name = :name"), {"name": self.queue})
                found: set[str] = set()
                for (payload,) in rows:
                    found.update(j for j in wanted if j in str(payload))
                return found
        finally:
            engine.dispose()

    def ping(self, timeout: float = 3.0) -> None:
        """Raise when the broker cannot be reached (for /readyz)."""
        with self.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)

    def close(self) -> None:
        self.celery.close()


def cleanup_embedded_broker(settings: Settings) -> int:
    """Delete delivered messages from the embedded broker's table (kombu's SQLAlchemy transport
    marks them invisible and never deletes them; an unacknowledged one is re-put by kombu itself
    if its channel closes, so deleting the invisible rows is safe)."""
    if not settings.embedded_broker:
        return 0
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(settings.broker_url.split("+", 1)[1], connect_args={"timeout": 30})
    try:
        if not inspect(engine).has_table("kombu_message"):
            return 0
        with engine.begin() as conn:
            return conn.execute(text("DELETE FROM kombu_message WHERE visible = 0")).rowcount or 0
    finally:
        engine.dispose()
