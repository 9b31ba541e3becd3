"""Submitting a job: write the row first, then publish its id; never a message without a row.

If the broker refuses the id the row is failed at once with the reason, so no job waits forever
for a message that was never sent. A key's queued-jobs limit is checked after the row is written
(counting it), so two simultaneous submissions cannot both slip under the limit: an over-limit
row is withdrawn before anything is published.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Optional

from .db import Job
from .jobs import JobKind, JobStore
from .queue import JobQueue

log = logging.getLogger("gcn.submit")

DEFAULT_RETRY_AFTER = 30


class BrokerUnavailable(RuntimeError):
    """The job row exists (failed) but its message could not be sent."""

    def __init__(self, job_id: str, reason: str):
        super().__init__(reason)
        self.job_id = job_id


class TooManyJobs(RuntimeError):
    """The key already has as many jobs queued as it may; nothing was created."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


def submit(store: JobStore, queue: JobQueue, kind: JobKind, params: dict[str, Any], *,
           dataset_id: Optional[str] = None, model_id: Optional[str] = None, job_id: Optional[str] = None,
           total: int = 0, api_key_id: Optional[str] = None, max_queued: Optional[int] = None,
           webhook: Optional[dict[str, Any]] = None) -> Job:
    """``webhook``: ``{"url", "events"}`` from ``webhooks.admit`` (checked by the caller)."""
    job = store.create(kind, params, dataset_id=dataset_id, model_id=model_id, job_id=job_id, total=total,
                       api_key_id=api_key_id, webhook=webhook)
    if max_queued is not None:
        queued = store.active_counts(api_key_id)["queued"]
        if queued > max_queued:
            store.withdraw(job.id)
            eta = store.soonest_eta(api_key_id)
            wait = DEFAULT_RETRY_AFTER if eta is None else min(max(math.ceil(eta), 1), 3600)
            raise TooManyJobs(f"this API key has {queued - 1} jobs queued, the most it may have "
                              f"({max_queued}); retry when one has started", wait)
    try:
        queue.publish(job.id)
    except Exception as e:
        log.error("could not publish job %s: %s", job.id, e)
        store.fail_unsent(job.id, f"the job queue is unavailable: {e.__class__.__name__}")
        raise BrokerUnavailable(job.id, str(e)) from None
    return job
