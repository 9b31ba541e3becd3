"""The job store: every state transition of a job, as one guarded SQL statement.

    queued -> running -> succeeded | failed | canceled      (and running -> queued when a worker is lost)

Two rules keep concurrent writers (API, workers, reconciler) honest without locks:

- a worker writes only while it owns the job: ``UPDATE ... WHERE id = :id AND owner = :me AND
  status = 'running'``; zero rows means the job was taken from it (``JobLost``);
- everyone else changes a job only from the ``version`` it read (optimistic locking), so two
  reconcilers or a reconciler and a late worker cannot both win.

Every ending of a job (``finish``, ``request_cancel`` of a queued job, ``fail_unsent``,
``claim`` giving up or canceling, ``end_orphan``) also writes, in the same transaction, the
``completed`` webhook delivery of a job that has a webhook (the outbox: ``service/webhooks.py``).

Nothing here knows about Celery or HTTP.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import socket
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Iterable, Optional

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm.attributes import set_committed_value

from .db import (ApiKey, Base, Database, Dataset, Job, Tombstone, TrainedModel, WebhookDelivery, is_disconnect,
                 utcnow)


class JobStatus(str, Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"


class JobKind(str, Enum):
    learn = "learn"
    sample = "sample"
    reconstruct = "reconstruct"
    inpaint = "inpaint"


TERMINAL = frozenset({JobStatus.succeeded.value, JobStatus.failed.value, JobStatus.canceled.value})


class JobLost(Exception):
    """This worker no longer owns the job (the reconciler requeued it, or it was finished elsewhere)."""


class BadCursor(ValueError):
    """A pagination cursor that this server did not write."""


_ID = re.compile(r"^[0-9a-f]{32}$")


def new_id() -> str:
    """Ids are random hex: they name rows and artifact folders, never derived from user input."""
    return uuid.uuid4().hex


def is_id(value: object) -> bool:
    """Only strings shaped like our ids reach the database (anything else cannot name a row)."""
    return isinstance(value, str) and _ID.match(value) is not None


def worker_identity() -> str:
    """``host:pid`` of this process: lets a reconciler on the same host see that it died."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_gone(job: Job, timeout: float, now: Optional[datetime] = None, me: Optional[str] = None) -> Optional[str]:
    """Why the worker of a running job is presumed dead, or None while it looks alive.

    Dead when its heartbeat is older than ``timeout``, or at once when it ran on this host and
    its process no longer exists (a restarted ``gcn serve`` need not wait out the timeout), or
    when it is ``me`` asking to claim it: a process claims only when it is not running a job, so
    an earlier attempt of its own ended without finishing the row (a database outage, say).
    """
    if me is not None and job.owner == me:
        return "an earlier attempt in this process did not finish"
    now = now or utcnow()
    if job.heartbeat_at is None or (now - job.heartbeat_at).total_seconds() > timeout:
        return f"no heartbeat for more than {timeout:g} s"
    host, _, pid = (job.owner or "").rpartition(":")
    if host == socket.gethostname() and pid.isdigit() and not _pid_alive(int(pid)):
        return f"worker process {pid} on {host} exited"
    return None


@dataclass
class Claim:
    """The answer to a worker asking for a job: ``job`` is set only when it now owns it;
    ``deferred`` when it stays queued because its API key has as many jobs running as allowed."""

    job: Optional[Job]
    reason: str = ""
    deferred: bool = False


def encode_cursor(created_at: datetime, row_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        stamp, row_id = json.loads(raw)
        when = datetime.fromisoformat(stamp)
        if when.tzinfo is None:
            raise ValueError("naive time")
        return when, str(row_id)
    except (ValueError, TypeError, binascii.Error, json.JSONDecodeError):
        raise BadCursor("not a cursor returned by this server") from None


def page(session, model: type[Base], filters: Iterable[Any], limit: int, cursor: Optional[str]):
    """Newest first, ``limit`` rows after ``cursor``; returns (rows, next cursor or None)."""
    query = select(model).where(*filters)
    if cursor:
        stamp, row_id = decode_cursor(cursor)
        query = query.where(
            or_(model.created_at < stamp, and_(model.created_at == stamp, model.id < row_id))
        )
    rows = list(session.scalars(query.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (encode_cursor(rows[-1].created_at, rows[-1].id) if more and rows else None)


def with_deliveries(session, jobs: list[Job]) -> list[Job]:
    """Fill in ``deliveries`` (oldest first) of those ``jobs`` that have a webhook, in one query;
    the others keep them unloaded, which their documents never read. Returns ``jobs``."""
    hooked = [j for j in jobs if j.webhook]
    if hooked:
        found: dict[str, list[WebhookDelivery]] = defaultdict(list)
        for d in session.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id.in_([j.id for j in hooked]))
                                 .order_by(WebhookDelivery.created_at, WebhookDelivery.id)):
            found[d.job_id].append(d)
        for j in hooked:
            set_committed_value(j, "deliveries", found[j.id])
    return jobs


class JobStore:
    """Jobs, datasets and models in the database (one short session per call)."""

    def __init__(self, db: Database):
        self.db = db

    # ---- reads ---------------------------------------------------------------------------
    def get(self, job_id: str, *, inline: bool = False) -> Optional[Job]:
        """The job, or None. ``inline``: on the calling thread's own connection, giving up on a
        lock quickly (``Database.inline_session``, SQLite only), for callers on an event loop."""
        if not is_id(job_id):
            return None

        def read() -> Optional[Job]:
            with (self.db.inline_session() if inline else self.db.read_session()) as s:
                job = s.get(Job, job_id)
                return None if job is None else with_deliveries(s, [job])[0]

        try:
            return read()
        except DBAPIError as e:
            if not is_disconnect(e):
                raise
            return read()  # a connection the server had dropped: once more, on a new one

    def list(self, *, status: Optional[str] = None, kind: Optional[str] = None, limit: int = 20,
             cursor: Optional[str] = None, api_key_id: Optional[str] = None) -> tuple[list[Job], Optional[str]]:
        """Newest first; ``api_key_id`` set: only that key's jobs."""
        filters = []
        if status:
            filters.append(Job.status == status)
        if kind:
            filters.append(Job.kind == kind)
        if api_key_id is not None:
            filters.append(Job.api_key_id == api_key_id)
        with self.db.session() as s:
            rows, next_cursor = page(s, Job, filters, limit, cursor)
            return with_deliveries(s, rows), next_cursor

    def active_counts(self, api_key_id: Optional[str]) -> dict[str, int]:
        """{"queued": n, "running": m} for one key's jobs (None: jobs made without a key)."""
        key_filter = Job.api_key_id.is_(None) if api_key_id is None else Job.api_key_id == api_key_id
        with self.db.session() as s:
            rows = s.execute(select(Job.status, func.count()).where(
                key_filter, Job.status.in_([JobStatus.queued.value, JobStatus.running.value])).group_by(Job.status))
            counts = {st: n for st, n in rows}
        return {"queued": counts.get("queued", 0), "running": counts.get("running", 0)}

    def soonest_eta(self, api_key_id: Optional[str]) -> Optional[float]:
        """Seconds until the first of this key's running jobs should end, when known."""
        with self.db.session() as s:
            return s.scalar(select(func.min(Job.eta_seconds)).where(
                Job.api_key_id == api_key_id, Job.status == JobStatus.running.value))

    def stale_queued(self, older_than: datetime, limit: int = 1000) -> list[Job]:
        """Queued jobs not (re)published since ``older_than``: their message may be lost."""
        with self.db.session() as s:
            return list(s.scalars(select(Job).where(Job.status == JobStatus.queued.value, Job.updated_at < older_than)
                                  .order_by(Job.updated_at).limit(limit)))

    def counts(self) -> dict[tuple[str, str], int]:
        """(kind, status) -> number of jobs, for /metrics."""
        with self.db.session() as s:
            rows = s.execute(select(Job.kind, Job.status, func.count()).group_by(Job.kind, Job.status))
            return {(k, st): n for k, st, n in rows}

    def running(self) -> list[Job]:
        with self.db.session() as s:
            return list(s.scalars(select(Job).where(Job.status == JobStatus.running.value)))

    def learn_job_for_model(self, model_id: str) -> Optional[Job]:
        if not is_id(model_id):
            return None
        with self.db.session() as s:
            return s.scalars(
                select(Job).where(Job.kind == JobKind.learn.value, Job.model_id == model_id)
                .order_by(Job.created_at.desc()).limit(1)
            ).first()

    def cancel_flag(self, job_id: str) -> bool:
        with self.db.session() as s:
            return bool(s.scalar(select(Job.cancel_requested).where(Job.id == job_id)))

    # ---- datasets and models -------------------------------------------------------------
    def add(self, row: Base) -> None:
        with self.db.session() as s:
            s.add(row)
            s.commit()

    def dataset(self, dataset_id: str) -> Optional[Dataset]:
        if not is_id(dataset_id):
            return None
        with self.db.session() as s:
            return s.get(Dataset, dataset_id)

    def model(self, model_id: str) -> Optional[TrainedModel]:
        if not is_id(model_id):
            return None
        with self.db.session() as s:
            return s.get(TrainedModel, model_id)

    def tombstone(self, kind: str, ident: str) -> Optional[Tombstone]:
        """What cleanup left of an expired job / model / dataset (``kind``), or None."""
        if not is_id(ident):
            return None
        with self.db.session() as s:
            return s.get(Tombstone, (kind, ident))

    def models(self, *, limit: int = 20, cursor: Optional[str] = None,
               api_key_id: Optional[str] = None) -> tuple[list[TrainedModel], Optional[str]]:
        filters = [] if api_key_id is None else [TrainedModel.api_key_id == api_key_id]
        with self.db.session() as s:
            return page(s, TrainedModel, filters, limit, cursor)

    def delete_model(self, model_id: str) -> bool:
        with self.db.session() as s:
            row = s.get(TrainedModel, model_id)
            if row is None:
                return False
            s.delete(row)
            s.commit()
            return True

    # ---- API-side transitions --------------------------------------------------------------
    def create(self, kind: JobKind, params: dict[str, Any], *, dataset_id: Optional[str] = None,
               model_id: Optional[str] = None, job_id: Optional[str] = None, total: int = 0,
               api_key_id: Optional[str] = None, webhook: Optional[dict[str, Any]] = None) -> Job:
        """``webhook``: ``{"url": ..., "events": [...]}`` as ``webhooks.admit`` returns it."""
        now = utcnow()
        job = Job(
            id=job_id or new_id(), kind=kind.value, status=JobStatus.queued.value, params=params,
            dataset_id=dataset_id, model_id=model_id, metrics={}, result={}, total=total, api_key_id=api_key_id,
            created_at=now, updated_at=now, webhook=webhook,
        )
        self.add(job)
        return job

    def withdraw(self, job_id: str) -> bool:
        """Delete a queued job that was never published (a refused submission)."""
        with self.db.session() as s:
            n = s.execute(delete(Job).where(Job.id == job_id, Job.status == JobStatus.queued.value)).rowcount
            s.commit()
        return bool(n)

    def mark_published(self, job: Job) -> bool:
        """A queued job's id was sent again: restart its republish clock (from the version seen)."""
        now = utcnow()
        with self.db.session() as s:
            ok = s.execute(update(Job).where(Job.id == job.id, Job.version == job.version,
                                             Job.status == JobStatus.queued.value)
                           .values(updated_at=now, version=Job.version + 1)).rowcount
            s.commit()
        return bool(ok)

    def request_cancel(self, job_id: str) -> Optional[Job]:
        """Idempotent: a queued job is canceled at once, a running one gets its flag raised (the
        worker stops within seconds), a finished one is left as it is."""
        now = utcnow()
        with self.db.session() as s:
            done = s.execute(
                update(Job).where(Job.id == job_id, Job.status == JobStatus.queued.value).values(
                    status=JobStatus.canceled.value, cancel_requested=True, finished_at=now,
                    updated_at=now, version=Job.version + 1, error="canceled before it started",
                )
            ).rowcount
            if done:
                _outbox(s, job_id, "completed")
            else:
                s.execute(
                    update(Job).where(Job.id == job_id, Job.status == JobStatus.running.value,
                                      Job.cancel_requested.is_(False))
                    .values(cancel_requested=True, updated_at=now, version=Job.version + 1)
                )
            s.commit()
        return self.get(job_id)

    def fail_unsent(self, job_id: str, reason: str) -> None:
        """The broker refused the job: fail it rather than leave it queued forever."""
        self._finish_from(job_id, None, JobStatus.failed, error=reason, expect=JobStatus.queued)

    # ---- worker-side transitions ---------------------------------------------------------
    def claim(self, job_id: str, owner: str, *, heartbeat_timeout: float, max_attempts: int,
              running_limit: Optional[int] = None) -> Claim:
        """Take a delivered job, or say why not. Makes tasks idempotent per job id: a finished
        job, or one whose owner is alive, is not run again; one whose owner died is taken over
        (it resumes from its checkpoint) until ``max_attempts`` is spent.

        ``running_limit`` (the job's API key's limit on running jobs; jobs made without a key
        have none): a queued job of a key that already has that many running stays queued and
        the claim says ``deferred``. The count and the claim are one statement, serialised per
        key (a row lock on the key on PostgreSQL; SQLite writes one at a time)."""
        job = self.get(job_id)
        if job is None:
            return Claim(None, "no such job")
        if job.status in TERMINAL:
            return Claim(None, f"already {job.status}")
        if job.status == JobStatus.running.value:
            gone = owner_gone(job, heartbeat_timeout, me=owner)
            if gone is None:
                return Claim(None, f"running on {job.owner}")
        else:
            gone = None
        if job.cancel_requested:
            self._finish_from(job_id, job.version, JobStatus.canceled, error="canceled")
            return Claim(None, "canceled")
        if job.attempts >= max_attempts:
            why = f"worker lost ({gone}); " if gone else ""
            self._finish_from(job_id, job.version, JobStatus.failed,
                              error=f"{why}gave up after {job.attempts} attempts")
            return Claim(None, "attempts exhausted")
        limited = running_limit is not None and job.api_key_id is not None and job.status == JobStatus.queued.value
        now = utcnow()
        with self.db.session() as s:
            query = update(Job).where(Job.id == job_id, Job.version == job.version)
            if limited:
                s.execute(select(ApiKey.id).where(ApiKey.id == job.api_key_id).with_for_update())
                others = (select(func.count()).select_from(Job)
                          .where(Job.api_key_id == job.api_key_id, Job.status == JobStatus.running.value)
                          .scalar_subquery())
                query = query.where(others < running_limit)
            won = s.execute(query.values(
                status=JobStatus.running.value, owner=owner, heartbeat_at=now, updated_at=now,
                started_at=job.started_at or now, attempts=Job.attempts + 1, version=Job.version + 1,
            )).rowcount
            s.commit()
        if not won:
            if limited and self.active_counts(job.api_key_id)["running"] >= running_limit:
                return Claim(None, f"deferred: its API key has {running_limit} job(s) running", deferred=True)
            return Claim(None, "claimed by another worker")
        return Claim(self.get(job_id), "claimed")

    def _owned(self, job_id: str, owner: str):
        return update(Job).where(Job.id == job_id, Job.owner == owner, Job.status == JobStatus.running.value)

    def beat(self, job_id: str, owner: str) -> bool:
        now = utcnow()
        with self.db.session() as s:
            ok = s.execute(self._owned(job_id, owner).values(heartbeat_at=now)).rowcount
            s.commit()
        return bool(ok)

    def report(self, job_id: str, owner: str, *, step: int, total: int, eta: Optional[float] = None,
               metrics: Optional[dict[str, Any]] = None, preview: bool = False,
               webhook_event: bool = False) -> Optional[str]:
        """Progress from the owning worker; raises ``JobLost`` when it no longer owns the job.
        ``webhook_event``: also write a ``progress`` webhook delivery (if the job asked for them)
        in the same transaction; its id is returned."""
        now = utcnow()
        values: dict[str, Any] = dict(step=step, total=total, eta_seconds=eta, heartbeat_at=now,
                                      updated_at=now, version=Job.version + 1)
        if metrics is not None:
            values["metrics"] = metrics
        if preview:
            values["has_preview"] = True
        delivery = None
        with self.db.session() as s:
            ok = s.execute(self._owned(job_id, owner).values(**values)).rowcount
            if ok and webhook_event:
                delivery = _outbox(s, job_id, "progress")
            s.commit()
        if not ok:
            raise JobLost(job_id)
        return delivery

    def finish(self, job_id: str, owner: str, status: JobStatus, *, result: Optional[dict[str, Any]] = None,
               error: Optional[str] = None, rows: Iterable[Base] = ()) -> bool:
        """End an owned job; ``rows`` (a new model) and the job's webhook delivery are written in
        the same transaction, so a model exists exactly when its job succeeded, and an ending is
        never without its delivery."""
        now = utcnow()
        values: dict[str, Any] = dict(status=status.value, finished_at=now, updated_at=now, eta_seconds=None,
                                      version=Job.version + 1)
        if result is not None:
            values["result"] = result
        if error is not None:
            values["error"] = error
        with self.db.session() as s:
            ok = s.execute(self._owned(job_id, owner).values(**values)).rowcount
            if ok:
                s.add_all(list(rows))
                _outbox(s, job_id, "completed")
            s.commit()
        return bool(ok)

    # ---- reconciler-side transitions -------------------------------------------------------
    def requeue(self, job: Job, reason: str) -> bool:
        """running -> queued, from the version the reconciler saw (the caller republishes)."""
        now = utcnow()
        with self.db.session() as s:
            ok = s.execute(
                update(Job).where(Job.id == job.id, Job.version == job.version,
                                  Job.status == JobStatus.running.value).values(
                    status=JobStatus.queued.value, owner=None, heartbeat_at=None, updated_at=now,
                    version=Job.version + 1, metrics={**(job.metrics or {}), "requeued": reason},
                )
            ).rowcount
            s.commit()
        return bool(ok)

    def end_orphan(self, job: Job, status: JobStatus, reason: str) -> bool:
        return self._finish_from(job.id, job.version, status, error=reason, expect=JobStatus.running)

    def _finish_from(self, job_id: str, version: Optional[int], status: JobStatus, *, error: str,
                     expect: Optional[JobStatus] = None) -> bool:
        now = utcnow()
        query = update(Job).where(Job.id == job_id)
        if version is not None:
            query = query.where(Job.version == version)
        if expect is not None:
            query = query.where(Job.status == expect.value)
        with self.db.session() as s:
            ok = s.execute(query.values(status=status.value, error=error, finished_at=now, updated_at=now,
                                        version=Job.version + 1)).rowcount
            if ok:
                _outbox(s, job_id, "completed")
            s.commit()
        return bool(ok)


def _outbox(s, job_id: str, event: str) -> Optional[str]:
    """The job's webhook delivery of ``event``, in the caller's transaction (if it has one)."""
    from .webhooks import enqueue  # webhooks -> jobdoc -> this module

    return enqueue(s, job_id, event)


def thin_curve(history: list[dict[str, Any]], limit: int = 500) -> list[dict[str, Any]]:
    """At most ``limit`` points of a learning history, always keeping the last one."""
    if len(history) <= limit:
        return list(history)
    stride = -(-len(history) // limit)
    points = history[::stride]
    if points[-1] is not history[-1]:
        points.append(history[-1])
    return points


__all__ = [
    "Claim", "JobKind", "JobLost", "JobStatus", "JobStore", "TERMINAL", "BadCursor", "is_id", "new_id",
    "owner_gone", "thin_curve", "worker_identity",
]
