"""A model of several categories through the task bodies: a real learning job on two tiny
synthetic datasets (horizontal and vertical stripes), then sampling each category: the result
names the category and the samples have that category's orientation."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from models import checkpoint
from models.pipeline import reconstruct_image
from service.artifacts import keys, png_bytes
from service.db import Dataset
from service.jobs import JobKind, new_id
from stripes import HORIZONTAL, LEARN, VERTICAL, anisotropy
from worker.tasks import execute


def upload(runtime, images) -> Dataset:
    d = Dataset(id=new_id(), kind="texture", image_count=len(images), sizes=[list(im.size) for im in images])
    for k, im in enumerate(images):
        runtime.artifacts.put(keys.dataset_image(d.id, k), png_bytes(im))
    runtime.store.add(d)
    return d


@pytest.fixture
def stripes_model(runtime):
    """The learning job (succeeded) and its model row."""
    h, v = upload(runtime, HORIZONTAL), upload(runtime, VERTICAL)
    categories = [{"name": "horizontal", "dataset_id": h.id}, {"name": "vertical", "dataset_id": v.id}]
    job = runtime.store.create(JobKind.learn, {"preset": "texture-fast", "overrides": LEARN, "categories": categories},
                               dataset_id=h.id, model_id=new_id(), api_key_id="k" * 32)
    assert execute(runtime, job.id) == "succeeded", runtime.store.get(job.id).error
    return runtime.store.get(job.id), runtime.store.model(job.model_id), categories


def sample(runtime, model_id, **params) -> tuple[dict, list[Image.Image]]:
    job = runtime.store.create(JobKind.sample, {"n": 4, "size": None, "steps": None, "seed": 3, "init": None, **params},
                               model_id=model_id)
    assert execute(runtime, job.id) == "succeeded", runtime.store.get(job.id).error
    done = runtime.store.get(job.id)
    images = [Image.open(runtime.artifacts.path(keys.job_image(job.id, k))) for k in range(done.result["images"])]
    return done.result, images


def test_a_model_of_two_categories_learns_each_and_samples_the_one_asked_for(runtime, stripes_model):
    job, model, categories = stripes_model
    assert job.result["categories"] == ["horizontal", "vertical"]
    assert model.categories == categories and model.dataset_id == categories[0]["dataset_id"]
    assert model.api_key_id == "k" * 32  # the model belongs to the key that asked for it
    assert model.config["categories"] == 2
    loaded, _ = checkpoint.load(runtime.artifacts.path(keys.model_weights(model.id)))
    assert loaded.category_names == ["horizontal", "vertical"]
    assert abs(anisotropy(HORIZONTAL) - 1) < 1e-9 and abs(anisotropy(VERTICAL) + 1) < 1e-9

    by_name = {}
    for category in ("horizontal", "vertical"):
        result, images = sample(runtime, model.id, category=category)
        assert result["category"] == category and len(images) == 4
        by_name[category] = anisotropy(images)
    # samples start as isotropic noise (anisotropy about 0); each category's take its orientation
    assert by_name["horizontal"] > 0.5 and by_name["vertical"] < -0.5, by_name

    result, images = sample(runtime, model.id, category=1)  # by index
    assert result["category"] == "vertical" and result["category_index"] == 1
    assert anisotropy(images) == pytest.approx(by_name["vertical"])  # the same seed, the same images
    result, _ = sample(runtime, model.id)  # the first category by default
    assert result["category"] == "horizontal"


def test_a_reconstruction_is_the_asked_categorys(runtime, stripes_model):
    _, model, _ = stripes_model
    loaded, _ = checkpoint.load(runtime.artifacts.path(keys.model_weights(model.id)))
    rebuilt = {}
    for params, name in (({"category": "vertical"}, "vertical"), ({"category": 0}, "horizontal"),
                         ({}, "horizontal")):  # {}: a job queued before reconstructions took a category
        job = runtime.store.create(JobKind.reconstruct, {"width": 32, "height": 32, **params}, model_id=model.id)
        runtime.artifacts.put(keys.job_input(job.id), png_bytes(HORIZONTAL[0]))
        assert execute(runtime, job.id) == "succeeded", runtime.store.get(job.id).error
        assert runtime.store.get(job.id).result["category"] == name
        got = np.asarray(Image.open(runtime.artifacts.path(keys.job_image(job.id, 1))), dtype=np.int16)
        _, expected = reconstruct_image(loaded, HORIZONTAL[0], name)
        assert np.abs(got - np.asarray(expected, dtype=np.int16)).max() <= 1  # PNG round trip
        rebuilt.setdefault(name, got)
    assert np.abs(rebuilt["vertical"] - rebuilt["horizontal"]).mean() > 1  # two categories, two decoders


def test_an_unknown_category_fails_the_job_with_the_names(runtime, stripes_model):
    _, model, _ = stripes_model
    job = runtime.store.create(JobKind.sample, {"n": 1, "size": None, "steps": 1, "seed": 0, "init": None,
                                                "category": "diagonal"}, model_id=model.id)
    assert execute(runtime, job.id) == "failed"
    assert "horizontal, vertical" in runtime.store.get(job.id).error


def test_a_single_category_model_names_its_category_default(runtime, dataset, learn_job):
    job = learn_job(iterations=2)
    assert execute(runtime, job.id) == "succeeded"
    model = runtime.store.model(job.model_id)
    assert model.categories == [{"name": "default", "dataset_id": dataset.id}]
    result, _ = sample(runtime, model.id, steps=1)
    assert result["category"] == "default"


def test_a_missing_category_dataset_fails_the_job(runtime, dataset):
    categories = [{"name": "a", "dataset_id": dataset.id}, {"name": "b", "dataset_id": "f" * 32}]
    job = runtime.store.create(JobKind.learn, {"preset": "texture-fast", "overrides": LEARN, "categories": categories},
                               dataset_id=dataset.id, model_id=new_id())
    assert execute(runtime, job.id) == "failed"
    assert "no longer exists" in runtime.store.get(job.id).error
    assert runtime.store.model(job.model_id) is None
