"""One claimed job as a task sees it: bounded-rate progress, cooperative cancel, a heartbeat.

- ``tick`` is called from the models' progress callbacks (every learning iteration, every
  Langevin step). It writes progress at most once per ``GCN_PROGRESS_INTERVAL`` seconds and reads
  the job's cancel flag at most once per ``GCN_CANCEL_POLL_INTERVAL`` seconds; a raised flag turns
  into ``models.Cancelled``, which the learner and the sampler let through. So the database sees a
  bounded load however fast the loop runs, and cancel takes effect within about a second.
- A heartbeat thread stamps the row every ``GCN_HEARTBEAT_INTERVAL`` seconds even while the main
  thread is inside one long step, so the reconciler can tell a slow job from a dead worker.
- Every write is guarded by ownership; when the job was taken away (``JobLost``), the task stops.
- Webhooks: a job that asked for ``progress`` events gets one written with a progress write at
  most once per ``GCN_WEBHOOK_PROGRESS_INTERVAL`` seconds (a row in the outbox, nothing more: this
  process's sender thread POSTs it); the ending writes the ``completed`` one (``JobStore.finish``).
  The training thread never waits for a receiver.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Optional

from models import Cancelled
from service.db import Job, TrainedModel
from service import webhooks
from service.jobs import JobLost, JobStatus
from service.settings import Settings

from .runtime import Runtime

log = logging.getLogger("gcn.worker")


class JobRun:
    def __init__(self, runtime: Runtime, job: Job, owner: str):
        self.runtime = runtime
        self.settings: Settings = runtime.settings
        self.store = runtime.store
        self.artifacts = runtime.artifacts
        self.job = job
        self.owner = owner
        self._last_report = 0.0
        self._last_cancel_check = time.monotonic()
        self._pending: Optional[dict[str, Any]] = None
        hook = job.webhook or {}
        self._progress_events = bool(hook.get("url")) and "progress" in (hook.get("events") or [])
        self._last_progress_event: Optional[float] = None
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @property
    def id(self) -> str:
        return self.job.id

    # ---- heartbeat -----------------------------------------------------------------------
    def __enter__(self) -> "JobRun":
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{self.id}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_interval):
            try:
                if not self.store.beat(self.id, self.owner):
                    self._lost.set()
                    return
            except Exception:  # a database blip: the next beat may get through
                log.exception("heartbeat of job %s failed", self.id)

    # ---- progress and cancel -------------------------------------------------------------
    def tick(self, step: int, total: int, *, eta: Optional[float] = None,
             metrics: Optional[dict[str, Any]] = None, preview: bool = False, force: bool = False) -> None:
        """Record progress (rate-limited) and stop the job if a cancel was asked for."""
        if self._lost.is_set():
            raise JobLost(self.id)
        now = time.monotonic()
        self._pending = dict(step=step, total=total, eta=eta, metrics=metrics,
                             preview=preview or bool(self._pending and self._pending["preview"]))
        if force or now - self._last_report >= self.settings.progress_interval:
            self.flush()
        if now - self._last_cancel_check >= self.settings.cancel_poll_interval:
            self._last_cancel_check = now
            if self.store.cancel_flag(self.id):
                raise Cancelled()

    def flush(self) -> None:
        """Write the latest progress now (always done at the end of a job)."""
        if self._pending is not None:
            now = time.monotonic()
            event = self._progress_events and (self._last_progress_event is None or
                                               now - self._last_progress_event >= self.settings.webhook_progress_interval)
            if self.store.report(self.id, self.owner, **self._pending, webhook_event=event):
                self._last_progress_event = now
                webhooks.wake()
            self._pending = None
            self._last_report = now

    # ---- endings ---------------------------------------------------------------------------
    def succeed(self, result: dict[str, Any], model: Optional[TrainedModel] = None) -> bool:
        self.flush()
        return self._ended(self.store.finish(self.id, self.owner, JobStatus.succeeded, result=result,
                                             rows=[model] if model is not None else []))

    def fail(self, reason: str) -> bool:
        return self._ended(self.store.finish(self.id, self.owner, JobStatus.failed, error=reason))

    def canceled(self) -> bool:
        return self._ended(self.store.finish(self.id, self.owner, JobStatus.canceled, error="canceled"))

    @staticmethod
    def _ended(ok: bool) -> bool:
        webhooks.wake()  # the completed event (if any) is in the outbox: send it now, not at the next poll
        return ok
