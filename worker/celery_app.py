"""The worker's Celery app (``celery -A worker.celery_app worker``; ``gcn worker`` runs it).

Built from the environment's ``Settings`` by ``service.queue.make_celery``, the same factory the
API publishes with. Process layout: one prefork child (concurrency 1, one per GPU); the parent
only consumes messages and reconciles, the child runs jobs. torch is imported in the parent
(children share its pages) but CUDA is first touched in the child, when a job picks its device.

Webhooks are sent by a thread of each child (``service.webhooks.Dispatcher``): the parent forks
children, so it runs no threads of its own that could hold a lock across a fork; the child's
sender works beside the job (it only waits on the network) and is woken when the job ends. A
Celery task would not do: with one child per GPU it would wait behind hour-long jobs. The
reconciler loop adds the outbox's housekeeping (``service.webhooks.housekeeping``).
"""

from __future__ import annotations

import logging
import time

from celery import bootsteps
from celery.signals import worker_process_init, worker_process_shutdown

from service import webhooks
from service.cleanup import cleanup
from service.queue import cleanup_embedded_broker
from service.reconcile import reconcile

from .runtime import get_runtime, init_child_process

log = logging.getLogger("gcn.worker")

# One Celery app per process: the one the reconciler republishes with is the one that consumes.
celery = get_runtime().queue.celery
app = celery


class Reconciler(bootsteps.StartStopStep):
    """Reconcile orphaned and lost jobs when the worker starts, then every
    ``GCN_RECONCILE_INTERVAL`` s on the worker's own timer, in the parent process (which never
    runs jobs itself); remove expired results and uploads every ``GCN_CLEANUP_INTERVAL`` s."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self.tref = None
        self.last_cleanup = 0.0

    def start(self, worker) -> None:
        try:
            get_runtime().db.create_all()
        except Exception:
            log.exception("could not create the job tables")
        self.run()
        self.tref = worker.timer.call_repeatedly(get_runtime().settings.reconcile_interval, self.run, priority=10)

    def stop(self, worker) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    def run(self) -> None:
        rt = get_runtime()
        try:
            reconcile(rt.store, rt.queue, rt.settings)
            cleanup_embedded_broker(rt.settings)
        except Exception:
            log.exception("reconciler pass failed")
        try:
            webhooks.housekeeping(rt.db, rt.settings)
        except Exception:
            log.exception("webhook housekeeping failed")
        if time.monotonic() - self.last_cleanup >= rt.settings.cleanup_interval or not self.last_cleanup:
            self.last_cleanup = time.monotonic()
            try:
                cleanup(rt.settings, rt.db, rt.artifacts)
            except Exception:
                log.exception("cleanup pass failed")


celery.steps["worker"].add(Reconciler)


@worker_process_init.connect
def _child_started(**_kwargs) -> None:
    init_child_process()
    try:
        rt = get_runtime()
        webhooks.start_dispatcher(rt.db, rt.settings)
    except Exception:  # the outbox keeps every delivery: another process's sender, or this one's next start, sends it
        log.exception("could not start the webhook sender")


@worker_process_shutdown.connect
def _child_stopping(**_kwargs) -> None:
    webhooks.stop_dispatcher(timeout=2.0)


from . import tasks  # noqa: E402,F401  (registers gcn.run_job)
