"""The one Celery task, ``gcn.run_job(job_id)``, and ``execute``, its body without Celery.

``execute`` claims the job (idempotent per id: finished jobs and jobs whose worker is alive are
not run again), runs the handler of its kind inside a ``JobRun`` (heartbeat, progress, cancel)
and ends it: succeeded by the handler, canceled on ``models.Cancelled``, failed with a one-line
reason otherwise. Failures are the job's business, never Celery's: the task returns normally so
the message is acknowledged and never retried behind the job table's back. The one exception is
an unreachable database: then nothing can be recorded, so the message is handed back (``Reject``)
to be delivered again once the database answers.
"""

from __future__ import annotations

import logging
import time
from typing import Optional

from celery.exceptions import Reject
from sqlalchemy.exc import InterfaceError, OperationalError

from models import Cancelled, CheckpointError, ImageError, NumericalError, PresetError
from service import webhooks
from service.artifacts import keys
from service.auth import KeyStore
from service.jobs import JobKind, JobLost, worker_identity
from service.queue import TASK_NAME

from .celery_app import celery
from .inpaint import run_inpainting
from .jobrun import JobRun
from .learn import run_learning
from .runtime import Runtime, get_runtime
from .sample import run_reconstruction, run_sampling

log = logging.getLogger("gcn.worker")
RETRY_PAUSE = 5.0

HANDLERS = {
    JobKind.learn.value: run_learning,
    JobKind.sample.value: run_sampling,
    JobKind.reconstruct.value: run_reconstruction,
    JobKind.inpaint.value: run_inpainting,
}


def running_limit(runtime: Runtime, job_id: str) -> Optional[int]:
    """The running-jobs limit of the API key that made the job (None: made without a key)."""
    job = runtime.store.get(job_id)
    if job is None or job.api_key_id is None:
        return None
    key = KeyStore(runtime.db).get(job.api_key_id)
    if key is not None and key.max_running_jobs is not None:
        return key.max_running_jobs
    return runtime.settings.max_running_jobs


def execute(runtime: Runtime, job_id: str) -> str:
    """Run one job to its end; returns what happened (for logs and tests)."""
    s = runtime.settings
    claim = runtime.store.claim(job_id, worker_identity(), heartbeat_timeout=s.heartbeat_timeout,
                                max_attempts=s.max_attempts, running_limit=running_limit(runtime, job_id))
    if claim.deferred:
        # Its key has as many jobs running as allowed: offer it again later (the job stays
        # queued; were this message lost, the reconciler republishes it).
        job = runtime.store.get(job_id)
        try:
            if job is not None and runtime.store.mark_published(job):
                runtime.queue.publish(job_id, countdown=s.defer_interval)
        except Exception:
            log.exception("job %s: could not offer it again; the reconciler will", job_id)
        log.info("job %s deferred: %s", job_id, claim.reason)
        return "deferred"
    if claim.job is None:
        log.info("job %s not run: %s", job_id, claim.reason)
        webhooks.wake()  # a claim that canceled or failed the job wrote its completed event
        return f"skipped: {claim.reason}"
    job = claim.job
    log.info("job %s (%s) started, attempt %d", job.id, job.kind, job.attempts)
    with JobRun(runtime, job, worker_identity()) as run:
        try:
            HANDLERS[job.kind](run)
            return "succeeded"
        except Cancelled:
            run.canceled()
            _drop_checkpoint(runtime, job.id)
            return "canceled"
        except JobLost:
            log.warning("job %s was taken from this worker; stopping", job.id)
            return "lost"
        except (OperationalError, InterfaceError):
            raise  # the database, not the job, failed: run_job hands the message back
        except NumericalError as e:
            run.fail(f"learning diverged (NaN/inf): {e}; no model was published")
            _drop_checkpoint(runtime, job.id)
            return "failed"
        except (CheckpointError, ImageError, PresetError, ValueError, KeyError) as e:
            run.fail(str(e) or e.__class__.__name__)
            return "failed"
        except Exception as e:
            log.exception("job %s crashed", job.id)
            run.fail(f"internal error: {e.__class__.__name__}: {e}")
            return "failed"


def _drop_checkpoint(runtime: Runtime, job_id: str) -> None:
    """A canceled or diverged run will not be resumed: free its checkpoint (previews stay)."""
    runtime.artifacts.delete(keys.job_checkpoint(job_id))


@celery.task(name=TASK_NAME, ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def run_job(job_id: str) -> None:
    try:
        execute(get_runtime(), job_id)
    except (OperationalError, InterfaceError) as e:
        # The job table is unreachable, so the job's state is unknown: hand the message back
        # rather than acknowledge it, after a pause so that an outage is not a busy loop.
        log.error("job %s: database unreachable (%s); requeueing its message", job_id, e.__class__.__name__)
        time.sleep(RETRY_PAUSE)
        raise Reject(f"database unreachable: {e.__class__.__name__}", requeue=True) from None
