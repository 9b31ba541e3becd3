"""The reconciler: no job stays ``running`` after its worker is gone.

Run by every worker when it starts and then every ``GCN_RECONCILE_INTERVAL`` seconds. A running
job is orphaned when its heartbeat is older than ``GCN_HEARTBEAT_TIMEOUT`` or its worker process
(same host) no longer exists. An orphan is then
- canceled, when a cancel was asked for (nobody is left to honour it);
- failed with the reason, when it has used up ``GCN_MAX_ATTEMPTS``;
- otherwise put back to ``queued`` and its id published again: the next worker resumes it from
  its last checkpoint.
Every change is conditional on the row's version, so several reconcilers can run at once.

It also finds ``queued`` jobs whose message was lost: not (re)published for
``GCN_REPUBLISH_AFTER`` seconds and not waiting in the broker's queue (a broker restarted without
persistence, a worker killed holding the message). Their ids are published again. A message
that turns out not to be lost after all only makes a duplicate delivery, which ``JobStore.claim``
skips (the job is running with a live owner, or finished): a job never runs twice at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Optional

from .db import utcnow
from .jobs import JobStatus, JobStore, owner_gone
from .queue import JobQueue
from .settings import Settings

log = logging.getLogger("gcn.reconcile")


@dataclass
class Action:
    job_id: str
    action: str  # requeued | failed | canceled | republished
    reason: str


def reconcile(store: JobStore, queue: Optional[JobQueue], settings: Settings) -> list[Action]:
    actions = []
    for job in store.running():
        gone = owner_gone(job, settings.heartbeat_timeout)
        if gone is None:
            continue
        if job.cancel_requested:
            if store.end_orphan(job, JobStatus.canceled, f"canceled (worker lost: {gone})"):
                actions.append(Action(job.id, "canceled", gone))
        elif job.attempts >= settings.max_attempts:
            reason = f"worker lost ({gone}); gave up after {job.attempts} attempts"
            if store.end_orphan(job, JobStatus.failed, reason):
                actions.append(Action(job.id, "failed", reason))
        elif store.requeue(job, gone):
            if queue is not None:
                try:
                    queue.publish(job.id)
                except Exception as e:  # broker down: fail loudly rather than leave it queued silently
                    store.fail_unsent(job.id, f"worker lost ({gone}) and requeueing failed: {e}")
                    actions.append(Action(job.id, "failed", str(e)))
                    continue
            actions.append(Action(job.id, "requeued", gone))
    if queue is not None:
        actions += republish_lost(store, queue, settings)
    for a in actions:
        log.warning("reconciler: job %s %s (%s)", a.job_id, a.action, a.reason)
    return actions


def republish_lost(store: JobStore, queue: JobQueue, settings: Settings) -> list[Action]:
    stale = store.stale_queued(utcnow() - timedelta(seconds=settings.republish_after))
    if not stale:
        return []
    waiting = queue.waiting(j.id for j in stale)  # None: cannot tell; publishing again is safe
    actions = []
    for job in stale:
        if waiting is not None and job.id in waiting:
            store.mark_published(job)  # still in line: look again in another period
            continue
        if not store.mark_published(job):
            continue  # claimed, canceled or republished by someone else meanwhile
        try:
            queue.publish(job.id)
        except Exception as e:
            log.error("reconciler: could not republish job %s: %s", job.id, e)
            continue  # still queued and stale: the next pass tries again
        age = (utcnow() - job.created_at).total_seconds()
        actions.append(Action(job.id, "republished", f"queued {age:.0f} s and not waiting in the broker"))
    return actions
