"""A worker runtime on a temporary data folder (SQLite job table, SQLite broker), for running
task bodies (``worker.tasks.execute``) in this process: no Celery, no eager mode."""

from __future__ import annotations

import pytest
import torch

from service.artifacts import keys, png_bytes
from service.db import Dataset
from service.jobs import JobKind, new_id
from service.settings import Settings
from worker.runtime import Runtime

TINY = {"iterations": 30, "image_size": 32}


@pytest.fixture
def runtime(tmp_path) -> Runtime:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rt = Runtime.from_settings(Settings(data_dir=tmp_path, checkpoint_every=5, progress_interval=0.2,
                                        cancel_poll_interval=0.1, heartbeat_interval=0.2, device="cpu"))
    rt.db.create_all()
    yield rt
    rt.db.dispose()
    torch.set_num_threads(threads)


@pytest.fixture
def dataset(runtime, brick64) -> Dataset:
    d = Dataset(id=new_id(), kind="texture", image_count=1, sizes=[[64, 64]])
    runtime.artifacts.put(keys.dataset_image(d.id, 0), png_bytes(brick64))
    runtime.store.add(d)
    return d


@pytest.fixture
def learn_job(runtime, dataset):
    """Make a queued learning job on ``dataset`` with the tiny overrides (plus any given)."""

    def make(preset="texture-fast", **overrides):
        return runtime.store.create(JobKind.learn, {"preset": preset, "overrides": {**TINY, **overrides}},
                                    dataset_id=dataset.id, model_id=new_id())

    return make
