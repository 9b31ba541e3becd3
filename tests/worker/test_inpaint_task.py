"""The inpainting task body against a real database and artifact folder."""

from __future__ import annotations

import numpy as np
from PIL import Image

from service.artifacts import keys, png_bytes
from service.jobs import JobKind
from worker.tasks import execute


def _params(**changes):
    return {"drop": None, "noise": True, "steps": 4, "init": None, "size": None, "seed": 0, **changes}


def test_inpainting_writes_observed_recovered_original_and_the_errors(runtime, dataset, learn_job):
    learn = learn_job(iterations=5)
    assert execute(runtime, learn.id) == "succeeded"

    job = runtime.store.create(JobKind.inpaint, _params(drop=0.5, size=48), model_id=learn.model_id)
    runtime.artifacts.copy(keys.dataset_image(dataset.id, 0), keys.job_input(job.id))
    assert execute(runtime, job.id) == "succeeded"
    done = runtime.store.get(job.id)
    assert (done.step, done.total) == (4, 4)
    r = done.result
    assert r["images"] == 3 and r["order"] == ["observed", "recovered", "original"] and r["size"] == 48
    assert 0.4 < r["missing_fraction"] < 0.6 and r["init"] == "noise"  # a short-run model starts from noise
    assert r["category"] == "default"
    assert r["errors"]["rmse"] > 0 and r["errors"]["baselines"]["blur"]["rmse"] > 0
    observed, recovered, original = (np.asarray(Image.open(runtime.artifacts.path(keys.job_image(job.id, k))))
                                     for k in range(3))
    assert observed.shape == (48, 48, 3)
    kept = ~(observed == 0).all(axis=-1)
    assert (recovered[kept] == original[kept]).all()
    assert runtime.artifacts.exists(keys.job_grid(job.id))

    mask = np.zeros((64, 64), np.uint8)
    mask[:, :32] = 255  # the left half is missing
    masked = runtime.store.create(JobKind.inpaint, _params(noise=False, init="blur"), model_id=learn.model_id)
    runtime.artifacts.copy(keys.dataset_image(dataset.id, 0), keys.job_input(masked.id))
    runtime.artifacts.put(keys.job_mask(masked.id), png_bytes(Image.fromarray(mask)))
    assert execute(runtime, masked.id) == "succeeded"
    assert runtime.store.get(masked.id).result["missing_fraction"] == 0.5


def test_an_inpainting_whose_mask_hides_nothing_fails_with_a_reason(runtime, dataset, learn_job):
    learn = learn_job(iterations=2)
    assert execute(runtime, learn.id) == "succeeded"
    job = runtime.store.create(JobKind.inpaint, _params(), model_id=learn.model_id)
    runtime.artifacts.copy(keys.dataset_image(dataset.id, 0), keys.job_input(job.id))
    runtime.artifacts.put(keys.job_mask(job.id), png_bytes(Image.new("L", (64, 64), 0)))
    assert execute(runtime, job.id) == "failed"
    assert "no pixel to fill in" in runtime.store.get(job.id).error
