"""Task bodies against a real database and artifact folder: learning publishes a model, sampling
writes PNGs, NaN fails cleanly, cancel stops mid-run, a redelivered job resumes, and a job is
never run twice."""

from __future__ import annotations

import threading
import time

import pytest
from PIL import Image

from models import checkpoint
from models.pipeline import train
from models.presets import get_preset
from service.artifacts import keys
from service.jobs import JobKind
from worker.tasks import execute

TINY = {"iterations": 30, "image_size": 32}


def test_learning_publishes_a_model_with_previews_and_bounded_progress_writes(runtime, dataset, learn_job):
    job = learn_job()
    started = time.monotonic()
    assert execute(runtime, job.id) == "succeeded"
    took = time.monotonic() - started
    done = runtime.store.get(job.id)
    assert done.status == "succeeded" and done.result["model_id"] == job.model_id
    assert (done.step, done.total) == (30, 30) and done.has_preview
    # progress is written at most once per progress_interval (plus claim, preview and ending
    # writes), not once per iteration: on a machine that learns 30 iterations in a second or
    # two, a dozen writes rather than 30
    interval = runtime.settings.progress_interval
    assert done.version <= 6 + took / interval, (done.version, took)
    model = runtime.store.model(job.model_id)
    assert model.iterations == 30 and len(model.curve) == 30 and model.preset == "texture-fast"
    loaded, _ = checkpoint.load(runtime.artifacts.path(keys.model_weights(model.id)))
    assert loaded.preset.image_size == 32
    assert Image.open(runtime.artifacts.path(keys.job_preview(job.id))).mode == "RGB"
    assert not runtime.artifacts.exists(keys.job_checkpoint(job.id))

    assert execute(runtime, job.id) == "skipped: already succeeded"  # idempotent per job id

    sample = runtime.store.create(JobKind.sample, {"n": 2, "size": 48, "steps": 5, "seed": 1, "init": None},
                                  model_id=model.id)
    assert execute(runtime, sample.id) == "succeeded"
    s = runtime.store.get(sample.id)
    assert s.result["images"] == 2 and s.result["size"] == 48
    for k in range(2):
        assert Image.open(runtime.artifacts.path(keys.job_image(sample.id, k))).size == (48, 48)
    assert runtime.artifacts.exists(keys.job_grid(sample.id))

    recon = runtime.store.create(JobKind.reconstruct, {}, model_id=model.id)
    runtime.artifacts.copy(keys.dataset_image(dataset.id, 0), keys.job_input(recon.id))
    assert execute(runtime, recon.id) == "succeeded"
    assert Image.open(runtime.artifacts.path(keys.job_image(recon.id, 1))).size == (32, 32)


def test_nan_fails_the_job_and_publishes_nothing(runtime, learn_job):
    job = learn_job(step_size=1e4)
    assert execute(runtime, job.id) == "failed"
    failed = runtime.store.get(job.id)
    assert failed.status == "failed" and "diverged" in failed.error and "NaN" in failed.error
    assert runtime.store.model(job.model_id) is None
    assert not runtime.artifacts.exists(keys.model_weights(job.model_id))


def test_cancel_stops_learning_within_about_a_second(runtime, learn_job):
    job = learn_job(iterations=100000)
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", execute(runtime, job.id)))
    t.start()
    deadline = time.monotonic() + 60
    while runtime.store.get(job.id).step < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    asked = time.monotonic()
    runtime.store.request_cancel(job.id)
    t.join(timeout=30)
    assert result["r"] == "canceled" and time.monotonic() - asked < 5
    assert runtime.store.get(job.id).status == "canceled"
    assert runtime.store.model(job.model_id) is None


def test_a_redelivered_job_resumes_from_its_checkpoint(runtime, dataset, brick64, learn_job):
    job = learn_job()
    # The checkpoint a previous attempt left behind after 12 of 30 iterations:
    partial = get_preset("texture-fast", {**TINY, "iterations": 12})
    train([brick64], partial, runtime.artifacts.path(keys.job_checkpoint(job.id)), checkpoint_every=4)
    assert execute(runtime, job.id) == "succeeded"
    done = runtime.store.get(job.id)
    assert done.result["resumed_from"] == 12 and done.result["iterations"] == 30
    assert done.result["device"] == "cpu" and done.metrics["device"] == "cpu"
    assert runtime.store.model(job.model_id).iterations == 30


def test_sampling_a_deleted_model_fails_with_a_reason(runtime):
    job = runtime.store.create(JobKind.sample, {"n": 1, "size": None, "steps": 1, "seed": 0, "init": None},
                               model_id="f" * 32)
    assert execute(runtime, job.id) == "failed"
    assert "no longer exists" in runtime.store.get(job.id).error


def test_the_parent_never_initialises_cuda():
    import torch

    import worker.celery_app  # noqa: F401  (what `celery -A worker.celery_app` imports)

    assert not torch.cuda.is_initialized()


def test_a_keys_running_limit_defers_its_next_job(runtime, dataset, learn_job):
    """A key with as many jobs running as allowed: its next job stays queued and is offered again
    later (a delayed message); once a slot frees, it is claimed."""
    from service.auth import KeyStore
    from service.jobs import JobStatus

    sent = []

    class Recording:
        def publish(self, job_id, countdown=None):
            sent.append((job_id, countdown))

    runtime.queue = Recording()
    key = KeyStore(runtime.db).create(name="one-at-a-time", max_running_jobs=1).row
    first, second = learn_job(), learn_job()
    for j in (first, second):
        with runtime.db.session() as s:
            s.get(type(j), j.id).api_key_id = key.id
            s.commit()
    assert runtime.store.claim(first.id, "elsewhere:1", heartbeat_timeout=60, max_attempts=3,
                               running_limit=1).job is not None  # running on a live worker elsewhere
    assert execute(runtime, second.id) == "deferred"
    assert runtime.store.get(second.id).status == "queued" and runtime.store.get(second.id).attempts == 0
    assert sent == [(second.id, runtime.settings.defer_interval)]
    runtime.store.finish(first.id, "elsewhere:1", JobStatus.succeeded, result={})
    claim = runtime.store.claim(second.id, "me:1", heartbeat_timeout=60, max_attempts=3, running_limit=1)
    assert claim.job is not None and claim.job.status == "running"
