"""Models of several categories over HTTP (no worker): learning from several datasets, the bad
requests (422 naming the field), the model document's categories, and sampling a category."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from service.db import TrainedModel
from service.jobs import new_id
from service.limits import estimate_bytes
from service.settings import Settings

PROBLEM = "application/problem+json"
TINY = {"iterations": 30, "image_size": 32}


def problem(r, status: int, *fields: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    for field in fields:
        assert field in [e["field"] for e in body["errors"]], body
    return body


def upload(client, *images, headers=None) -> dict:
    files = []
    for k, im in enumerate(images):
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        files.append(("images", (f"{k}.png", buf.getvalue(), "image/png")))
    r = client.post("/v1/datasets", files=files, data={"kind": "texture"}, headers=headers or {})
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture
def two(client, brick64) -> list[dict]:
    """Two datasets: one image, and three."""
    return [upload(client, brick64), upload(client, *(brick64.rotate(90 * k) for k in range(3)))]


def categories(*pairs) -> list[dict]:
    return [{"name": n, "dataset_id": d} for n, d in pairs]


def test_learning_from_several_datasets_is_one_job_that_records_the_categories(client, two):
    cats = categories(("brick", two[0]["id"]), ("turned", two[1]["id"]))
    r = client.post("/v1/models", json={"categories": cats, "preset": "texture-fast", "overrides": TINY})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["kind"] == "learn" and job["status"] == "queued" and job["progress"]["total"] == 30
    assert job["params"]["categories"] == cats
    assert job["dataset_id"] == two[0]["id"] and job["links"]["dataset"] == f"/v1/datasets/{two[0]['id']}"
    # the single-dataset form is as it was: no categories in its params
    single = client.post("/v1/models", json={"dataset_id": two[0]["id"], "overrides": TINY}).json()
    assert "categories" not in single["params"] and single["dataset_id"] == two[0]["id"]
    # any number from 2 to 16, the same dataset may serve several (odd, but not wrong)
    many = categories(*((f"c{k}", two[k % 2]["id"]) for k in range(16)))
    assert client.post("/v1/models", json={"categories": many, "overrides": TINY}).status_code == 202


def test_a_retried_request_with_categories_is_one_job(client, two):
    cats = categories(("brick", two[0]["id"]), ("turned", two[1]["id"]))
    headers = {"Idempotency-Key": "learn-two-1"}
    first = client.post("/v1/models", json={"categories": cats, "overrides": TINY}, headers=headers)
    again = client.post("/v1/models", json={"categories": cats, "overrides": TINY}, headers=headers)
    assert first.status_code == again.status_code == 202 and first.json()["id"] == again.json()["id"]
    renamed = categories(("brick", two[0]["id"]), ("other", two[1]["id"]))
    other = client.post("/v1/models", json={"categories": renamed, "overrides": TINY}, headers=headers)
    problem(other, 422, "Idempotency-Key")
    assert len(client.get("/v1/jobs").json()["items"]) == 1


LONG = "x" * 41


@pytest.mark.parametrize("body,fields", [
    ({"dataset_id": "FIRST", "categories": [["a", "FIRST"], ["b", "SECOND"]]}, ["categories"]),
    ({}, ["dataset_id"]),
    ({"categories": [["a", "FIRST"]]}, ["categories"]),
    ({"categories": [[f"c{k}", "FIRST"] for k in range(17)]}, ["categories"]),
    ({"categories": []}, ["categories"]),
    ({"categories": [["a b", "FIRST"], ["b", "SECOND"]]}, ["categories.0.name"]),
    ({"categories": [["a", "FIRST"], ["", "SECOND"]]}, ["categories.1.name"]),
    ({"categories": [["a", "FIRST"], [LONG, "SECOND"]]}, ["categories.1.name"]),
    ({"categories": [["a", "FIRST"], ["../b", "SECOND"]]}, ["categories.1.name"]),
    ({"categories": [["a", "FIRST"], ["b", "SECOND"], ["a", "SECOND"]]}, ["categories.2.name"]),
    ({"categories": [["a", "FIRST"], ["b", "0" * 32]]}, ["categories.1.dataset_id"]),
    ({"categories": [["a", "FIRST"], ["b", "not an id"]]}, ["categories.1.dataset_id"]),
    ({"categories": [{"name": "a"}, ["b", "SECOND"]]}, ["categories.0.dataset_id"]),
    ({"categories": [{"name": "a", "dataset_id": "FIRST", "weight": 2}, ["b", "SECOND"]]}, ["categories.0.weight"]),
    ({"categories": "a,b"}, ["categories"]),
    ({"categories": [["a", "FIRST"], ["b", "SECOND"]], "preset": "texture"}, ["categories", "preset"]),
    ({"categories": [["a", "FIRST"], ["b", "SECOND"]], "overrides": {"schedule": "layer_by_layer"}},
     ["categories", "overrides.schedule"]),
    ({"categories": [["a", "FIRST"], ["b", "SECOND"]], "overrides": {"categories": 2}}, ["overrides.categories"]),
])
def test_bad_requests_for_several_categories_are_422_naming_the_field(client, two, body, fields):
    ids = {"FIRST": two[0]["id"], "SECOND": two[1]["id"]}

    def fill(v):
        return ids.get(v, v) if isinstance(v, str) else v

    full = {"preset": "texture-fast", **body}
    if "dataset_id" in full:
        full["dataset_id"] = fill(full["dataset_id"])
    if isinstance(full.get("categories"), list):
        full["categories"] = [{"name": c[0], "dataset_id": fill(c[1])} if isinstance(c, list)
                              else {k: fill(v) for k, v in c.items()} for c in full["categories"]]
    p = problem(client.post("/v1/models", json=full), 422, *fields)
    if "preset" in fields or "overrides.schedule" in fields:  # the library's own words, and the way out
        assert "categories must be 1 with schedule layer_by_layer" in p["detail"] and "end_to_end" in p["detail"]
    assert client.get("/v1/jobs").json()["items"] == []  # nothing was queued


def test_the_memory_estimate_counts_every_category(tmp_path, brick64):
    """The batch of a job of K categories is K x n_chains chains and every dataset's images: here
    2 x 4 + 1 + 4 = 13 images, over a limit of 11 that 4 chains + 1 image (one category), or
    counting only the first dataset's images (9) or one category's chains (9), would pass."""
    layers = [(32, 7, 2, 3), (32, 5, 1, 2)]  # texture-fast's net, at 128 px
    limit_mb = estimate_bytes(layers, 128, 11) // 2**20
    assert estimate_bytes(layers, 128, 9) < limit_mb * 2**20 < estimate_bytes(layers, 128, 13)
    settings = Settings(data_dir=tmp_path, auth="off", max_upload_bytes=64 * 1024, max_dataset_images=4,
                        max_job_memory_mb=limit_mb)
    overrides = {"image_size": 128}
    with TestClient(create_app(settings)) as client:
        one, four = upload(client, brick64), upload(client, *[brick64] * 4)
        assert client.post("/v1/models", json={"dataset_id": one["id"], "overrides": overrides}).status_code == 202
        body = {"categories": categories(("a", one["id"]), ("b", four["id"])), "overrides": overrides}
        p = problem(client.post("/v1/models", json=body), 422, "overrides.n_chains")
        assert "MiB" in p["detail"] and "batch 13" in p["detail"]


def test_another_keys_dataset_is_not_a_category(keyed_client, keys, brick64):
    a = {"Authorization": f"Bearer {keys['a']}"}
    b = {"Authorization": f"Bearer {keys['b']}"}
    mine, theirs = upload(keyed_client, brick64, headers=a), upload(keyed_client, brick64, headers=b)
    body = {"categories": categories(("mine", mine["id"]), ("theirs", theirs["id"])), "overrides": TINY}
    p = problem(keyed_client.post("/v1/models", json=body, headers=a), 422, "categories.1.dataset_id")
    assert theirs["id"] in p["detail"]
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    assert keyed_client.post("/v1/models", json=body, headers=admin).status_code == 202


# ---- the model document and sampling --------------------------------------------------------------
@pytest.fixture
def multi(services, two) -> TrainedModel:
    """A ready model of three categories, as a finished learning job leaves it."""
    m = TrainedModel(id=new_id(), dataset_id=two[0]["id"], job_id=new_id(), preset="texture-fast", kind="texture",
                     learner="short_run", image_size=32, chain_size=None, iterations=1,
                     config={"sample_steps": 40, "categories": 3}, curve=[{"iteration": 1, "gap": 0.5}],
                     categories=categories(("brick", two[0]["id"]), ("grass", two[1]["id"]),
                                           ("sand", two[1]["id"])))
    services.store.add(m)
    return m


def test_the_model_document_lists_its_categories(client, multi, make_model, dataset):
    got = client.get(f"/v1/models/{multi.id}").json()
    assert [c["name"] for c in got["categories"]] == ["brick", "grass", "sand"]
    assert got["categories"][0]["dataset_id"] == got["dataset_id"]
    single = make_model()  # a row as models were written before categories: none recorded
    assert single.categories is None
    got = client.get(f"/v1/models/{single.id}").json()
    assert got["categories"] == [{"name": "default", "dataset_id": dataset["id"]}]
    listed = {m["id"]: m for m in client.get("/v1/models").json()["items"]}
    assert len(listed[multi.id]["categories"]) == 3


@pytest.mark.parametrize("asked,name", [("grass", "grass"), (2, "sand"), (0, "brick"), (None, "brick")])
def test_sampling_a_category_by_name_or_index(client, multi, asked, name):
    body = {"n": 2, "steps": 5} | ({} if asked is None else {"category": asked})
    r = client.post(f"/v1/models/{multi.id}/samples", json=body)
    assert r.status_code == 202, r.text
    assert r.json()["params"]["category"] == name  # resolved to the name when the job is submitted


@pytest.mark.parametrize("asked,words", [
    ("mud", "unknown category 'mud'; this model's categories are: brick (0), grass (1), sand (2)"),
    (3, "category index 3 is out of range; this model's categories are: brick (0), grass (1), sand (2)"),
    ("Brick", "unknown category 'Brick'"),
    ("2", "unknown category '2'"),  # a string is a name, never an index
])
def test_an_unknown_category_is_422_listing_the_models_categories(client, multi, asked, words):
    p = problem(client.post(f"/v1/models/{multi.id}/samples", json={"category": asked}), 422, "category")
    assert words in p["detail"]


@pytest.mark.parametrize("asked", [-1, 16, "", "x" * 41, True, 1.5, ["a"], {"name": "a"}])
def test_malformed_categories_are_422(client, multi, asked):
    problem(client.post(f"/v1/models/{multi.id}/samples", json={"category": asked}), 422, "category")


@pytest.mark.parametrize("asked,name", [("grass", "grass"), ("2", "sand"), (None, "brick")])
def test_reconstructing_with_a_category_by_name_or_index(client, multi, brick64, asked, name):
    buf = io.BytesIO()
    brick64.save(buf, format="PNG")
    r = client.post(f"/v1/models/{multi.id}/reconstructions", files={"image": ("b.png", buf.getvalue(), "image/png")},
                    data={} if asked is None else {"category": asked})
    assert r.status_code == 202, r.text
    assert r.json()["params"]["category"] == name  # a form field: digits that are not a name are an index
    p = problem(client.post(f"/v1/models/{multi.id}/reconstructions", data={"category": "mud"},
                            files={"image": ("b.png", buf.getvalue(), "image/png")}), 422, "category")
    assert "brick (0), grass (1), sand (2)" in p["detail"]


def test_a_single_category_model_answers_to_default_and_zero_only(client, make_model):
    m = make_model()
    for asked in ("default", 0):
        r = client.post(f"/v1/models/{m.id}/samples", json={"category": asked})
        assert r.status_code == 202 and r.json()["params"]["category"] == "default"
    p = problem(client.post(f"/v1/models/{m.id}/samples", json={"category": 1}), 422, "category")
    assert "default (0)" in p["detail"]


def test_openapi_documents_categories(client):
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    create = schemas["ModelCreate"]
    assert "categories" in create["properties"] and "dataset_id" in create["properties"]
    assert "dataset_id" not in create.get("required", [])
    cat = schemas["CategoryIn"]
    assert set(cat["required"]) == {"name", "dataset_id"} and cat["properties"]["name"]["maxLength"] == 40
    assert "categories" in schemas["ModelOut"]["required"]
    category = schemas["SampleCreate"]["properties"]["category"]
    kinds = {s.get("type") for s in category["anyOf"]}
    assert kinds == {"integer", "string", "null"}
