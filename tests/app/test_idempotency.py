"""Idempotency-Key: a retried POST returns the first answer and creates nothing new; the same key
with another request is 422; keys are per API key; the record outlives an API restart."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient

from app.main import create_app


def bearer(token: str, idem: str | None = None) -> dict[str, str]:
    h = {"Authorization": f"Bearer {token}"}
    if idem is not None:
        h["Idempotency-Key"] = idem
    return h


def png(image, fmt="PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def jobs_of(client, token) -> list[str]:
    return [j["id"] for j in client.get("/v1/jobs", params={"limit": 100}, headers=bearer(token)).json()["items"]]


@pytest.fixture
def dataset_id(keyed_client, keys, brick64) -> str:
    r = keyed_client.post("/v1/datasets", files=[("images", ("b.png", png(brick64), "image/png"))],
                          data={"kind": "texture"}, headers=bearer(keys["a"]))
    return r.json()["id"]


def test_a_retried_learning_request_returns_the_first_job(keyed_client, keys, dataset_id):
    c = keyed_client
    body = {"dataset_id": dataset_id, "overrides": {"iterations": 5, "image_size": 32}}
    first = c.post("/v1/models", json=body, headers=bearer(keys["a"], "retry-1"))
    assert first.status_code == 202
    again = c.post("/v1/models", json={"overrides": {"image_size": 32, "iterations": 5}, "dataset_id": dataset_id},
                   headers=bearer(keys["a"], "retry-1"))  # same content, other key order
    assert again.status_code == 202 and again.json() == first.json()
    assert again.headers["location"] == first.headers["location"] and again.headers["idempotent-replayed"] == "true"
    assert jobs_of(c, keys["a"]) == [first.json()["id"]]

    other = c.post("/v1/models", json={**body, "preset": "object-fast"}, headers=bearer(keys["a"], "retry-1"))
    assert other.status_code == 422 and other.headers["content-type"].startswith("application/problem+json")
    assert other.json()["errors"][0]["field"] == "Idempotency-Key"
    assert jobs_of(c, keys["a"]) == [first.json()["id"]]

    # another API key's Idempotency-Key space is its own (and it cannot see a's dataset)
    b = c.post("/v1/models", json=body, headers=bearer(keys["b"], "retry-1"))
    assert b.status_code == 422 and b.json()["errors"][0]["field"] == "dataset_id"
    # without the header, every POST is new
    assert c.post("/v1/models", json=body, headers=bearer(keys["a"])).json()["id"] != first.json()["id"]


def test_uploads_samples_and_reconstructions_are_idempotent(keyed_client, keys, brick64):
    c = keyed_client
    a = keys["a"]
    data = png(brick64)
    first = c.post("/v1/datasets", files=[("images", ("b.png", data, "image/png"))], data={"kind": "texture"},
                   headers=bearer(a, "up-1"))
    # the same bytes under another name and content type (and another multipart boundary)
    again = c.post("/v1/datasets", files=[("images", ("other.jpg", data, "image/jpeg"))], data={"kind": "texture"},
                   headers=bearer(a, "up-1"))
    assert first.status_code == again.status_code == 201 and again.json() == first.json()
    folders = list((c.app.state.services.settings.data_dir / "datasets").iterdir())
    assert len(folders) == 1
    changed = c.post("/v1/datasets", files=[("images", ("b.png", png(brick64.rotate(90)), "image/png"))],
                     data={"kind": "texture"}, headers=bearer(a, "up-1"))
    assert changed.status_code == 422

    from service.db import TrainedModel
    from service.jobs import new_id

    model = TrainedModel(id=new_id(), dataset_id=first.json()["id"], job_id=new_id(), preset="texture-fast",
                         kind="texture", learner="short_run", image_size=32, chain_size=None, iterations=1,
                         config={"sample_steps": 5}, curve=[], api_key_id=keys["a_id"])
    c.app.state.services.store.add(model)
    s1 = c.post(f"/v1/models/{model.id}/samples", json={"n": 2}, headers=bearer(a, "s-1"))
    s2 = c.post(f"/v1/models/{model.id}/samples", json={"n": 2}, headers=bearer(a, "s-1"))
    assert s1.status_code == s2.status_code == 202 and s1.json() == s2.json()
    assert c.post(f"/v1/models/{model.id}/samples", json={"n": 3}, headers=bearer(a, "s-1")).status_code == 422
    r1 = c.post(f"/v1/models/{model.id}/reconstructions", files={"image": ("x.png", data, "image/png")},
                headers=bearer(a, "r-1"))
    r2 = c.post(f"/v1/models/{model.id}/reconstructions", files={"image": ("y.png", data, "image/png")},
                headers=bearer(a, "r-1"))
    assert r1.status_code == r2.status_code == 202 and r1.json() == r2.json()
    assert sorted(jobs_of(c, a)) == sorted([s1.json()["id"], r1.json()["id"]])


def test_a_refused_first_attempt_leaves_the_key_free(keyed_client, keys, dataset_id):
    c = keyed_client
    body = {"dataset_id": dataset_id, "overrides": {"iterations": 5, "image_size": 32}}
    for _ in range(3):  # the key's queued-jobs limit in these tests
        assert c.post("/v1/models", json=body, headers=bearer(keys["a"])).status_code == 202
    refused = c.post("/v1/models", json=body, headers=bearer(keys["a"], "later"))
    assert refused.status_code == 429
    job = jobs_of(c, keys["a"])[0]
    c.post(f"/v1/jobs/{job}/cancel", headers=bearer(keys["a"]))
    accepted = c.post("/v1/models", json=body, headers=bearer(keys["a"], "later"))
    assert accepted.status_code == 202


@pytest.mark.parametrize("value", ["", "x" * 256, "has space", "naïve"])
def test_malformed_idempotency_keys_are_422(keyed_client, keys, dataset_id, value):
    headers = {"Authorization": f"Bearer {keys['a']}", "Idempotency-Key": value.encode("utf-8")}
    r = keyed_client.post("/v1/models", json={"dataset_id": dataset_id}, headers=headers)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "Idempotency-Key", r.text


def test_the_first_answer_survives_an_api_restart(keyed_settings, keys, keyed_client, dataset_id):
    body = {"dataset_id": dataset_id, "overrides": {"iterations": 5, "image_size": 32}}
    first = keyed_client.post("/v1/models", json=body, headers=bearer(keys["a"], "restart-1"))
    with TestClient(create_app(keyed_settings)) as restarted:
        again = restarted.post("/v1/models", json=body, headers=bearer(keys["a"], "restart-1"))
        assert again.status_code == 202 and again.json() == first.json()
        assert restarted.get(f"/v1/jobs/{first.json()['id']}", headers=bearer(keys["a"])).json()["status"] == "queued"
        assert jobs_of(restarted, keys["a"]) == [first.json()["id"]]
