"""What a worker process holds: settings, database, job store, artifact store and queue.

Built lazily in the process that uses it. The Celery parent builds it for the reconciler; each
prefork child gets its own database engine after the fork (``Database`` notices the new pid) and
sets torch's threads there, so nothing heavy is set up, and CUDA never touched, in the parent.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from service.artifacts import LocalArtifactStore
from service.db import Database
from service.jobs import JobStore
from service.queue import JobQueue, make_celery
from service.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    db: Database
    store: JobStore
    artifacts: LocalArtifactStore
    queue: JobQueue

    @classmethod
    def from_settings(cls, settings: Settings) -> "Runtime":
        db = Database(settings.database_url)
        return cls(
            settings=settings,
            db=db,
            store=JobStore(db),
            artifacts=LocalArtifactStore(settings.data_dir),
            queue=JobQueue(make_celery(settings), settings.queue),
        )


@functools.lru_cache(maxsize=1)
def get_runtime() -> Runtime:
    return Runtime.from_settings(Settings())


def init_child_process() -> None:
    """In a fresh worker child: cap torch threads (``GCN_TORCH_THREADS``); nothing touches CUDA."""
    settings = get_runtime().settings
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
