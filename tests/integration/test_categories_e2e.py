"""A model of several categories end to end: `gcn serve` (the API and a real Celery worker),
two datasets uploaded over HTTP, one learning job, then samples of each category fetched as PNGs."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from gcn_e2e import Api, serving
from stripes import HORIZONTAL, LEARN, VERTICAL, anisotropy  # tests/stripes.py

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("categories"), GCN_CHECKPOINT_EVERY="50") as server:
        yield Api(server.url)


def test_learn_two_categories_over_http_and_sample_each(served):
    api = served
    h, v = api.upload(*HORIZONTAL), api.upload(*VERTICAL)
    categories = [{"name": "horizontal", "dataset_id": h["id"]}, {"name": "vertical", "dataset_id": v["id"]}]
    r = api.http.post("/v1/models", json={"categories": categories, "preset": "texture-fast", "overrides": LEARN})
    assert r.status_code == 202, r.text
    learn = api.wait(r.json()["id"], timeout=180)
    assert learn["status"] == "succeeded", learn
    assert learn["result"]["categories"] == ["horizontal", "vertical"]

    model = api.http.get(learn["links"]["model"]).json()
    assert model["categories"] == categories and model["dataset_id"] == h["id"]
    assert model["config"]["categories"] == 2

    p = api.http.post(f"/v1/models/{model['id']}/samples", json={"category": "diagonal"})
    assert p.status_code == 422 and p.json()["errors"][0]["field"] == "category"
    assert "horizontal (0), vertical (1)" in p.json()["detail"]

    found = {}
    for asked in ("horizontal", 1):
        job = api.http.post(f"/v1/models/{model['id']}/samples", json={"n": 4, "seed": 5, "category": asked}).json()
        done = api.wait(job["id"])
        assert done["status"] == "succeeded", done
        name = done["result"]["category"]
        assert name == {1: "vertical"}.get(asked, asked) and done["params"]["category"] == name
        images = [Image.open(io.BytesIO(api.http.get(url).content)) for url in done["links"]["images"]]
        found[name] = anisotropy(images)
    # Gaussian starts are isotropic (about 0); each category's samples take its stripes' direction
    assert found["horizontal"] > 0.5 and found["vertical"] < -0.5, found

    # the downloaded weights carry the names (for `gcn sample --category vertical`)
    weights = api.http.get(model["links"]["weights"])
    assert weights.status_code == 200 and b"category_names" in weights.content[:20000]
