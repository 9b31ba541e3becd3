"""Submitting a job: write the row first, then publish its id; never a message without a row.

If the broker refuses the id the row is failed at once with the reason, so no job waits forever
for a message that was never sent.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from .db import Job
from .jobs import JobKind, JobStore
from .queue import JobQueue

log = logging.getLogger("gcn.submit")


class BrokerUnavailable(RuntimeError):
    """The job row exists (failed) but its message could not be sent."""

    def __init__(self, job_id: str, reason: str):
        super().__init__(reason)
        self.job_id = job_id


def submit(store: JobStore, queue: JobQueue, kind: JobKind, params: dict[str, Any], *,
           dataset_id: Optional[str] = None, model_id: Optional[str] = None, job_id: Optional[str] = None, total: int = 0) -> Job:
    job = store.create(kind, params, dataset_id=dataset_id, model_id=model_id, job_id=job_id, total=total)
    try:
        queue.publish(job.id)
    except Exception as e:
        log.error("could not publish job %s: %s", job.id, e)
        store.fail_unsent(job.id, f"the job queue is unavailable: {e.__class__.__name__}")
        raise BrokerUnavailable(job.id, str(e)) from None
    return job
