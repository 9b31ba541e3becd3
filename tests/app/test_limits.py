"""Limits: queued jobs per key (429 + Retry-After), bounded parameters (422 naming the field),
job memory, request size (413, chunked too) and the data quota (507). Nothing happens on refusal."""

from __future__ import annotations


import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from service.auth import KeyStore
from service.db import TrainedModel
from service.jobs import new_id
from service.settings import Settings

from test_access import bearer, png


def upload(client, image, token):
    return client.post("/v1/datasets", files=[("images", ("b.png", png(image), "image/png"))],
                       data={"kind": "texture"}, headers=bearer(token))


def field_of(r) -> str:
    assert r.status_code == 422, r.text
    return r.json()["errors"][0]["field"]


def test_queued_jobs_beyond_the_keys_limit_are_429_with_retry_after(keyed_client, keys, brick64):
    c = keyed_client
    d = upload(c, brick64, keys["a"]).json()
    body = {"dataset_id": d["id"], "overrides": {"iterations": 5, "image_size": 32}}
    for _ in range(3):
        assert c.post("/v1/models", json=body, headers=bearer(keys["a"])).status_code == 202
    r = c.post("/v1/models", json=body, headers=bearer(keys["a"]))
    assert r.status_code == 429 and r.headers["content-type"].startswith("application/problem+json")
    assert int(r.headers["retry-after"]) >= 1 and "3" in r.json()["detail"]
    listed = c.get("/v1/jobs", params={"limit": 100}, headers=bearer(keys["a"])).json()["items"]
    assert len(listed) == 3  # the refused request left nothing behind
    # other keys have their own allowance
    d_b = upload(c, brick64, keys["b"]).json()
    assert c.post("/v1/models", json={**body, "dataset_id": d_b["id"]}, headers=bearer(keys["b"])).status_code == 202
    # a key's own limit overrides the default
    tight = KeyStore(c.app.state.services.db).create(name="tight", max_queued_jobs=1)
    d_t = upload(c, brick64, tight.token).json()
    assert c.post("/v1/models", json={**body, "dataset_id": d_t["id"]}, headers=bearer(tight.token)).status_code == 202
    assert c.post("/v1/models", json={**body, "dataset_id": d_t["id"]}, headers=bearer(tight.token)).status_code == 429


@pytest.mark.parametrize("overrides,field", [
    ({"step_size": 0}, "overrides.step_size"), ({"step_size": 1e6}, "overrides.step_size"),
    ({"sigma": -1}, "overrides.sigma"), ({"sigma": 1e9}, "overrides.sigma"),
    ({"lr": 0}, "overrides.lr"), ({"lr": 1e3}, "overrides.lr"),
    ({"n_chains": 0}, "overrides.n_chains"), ({"n_chains": 10_000}, "overrides.n_chains"),
    ({"image_size": 2048}, "overrides.image_size"), ({"langevin_steps": 10**5}, "overrides.langevin_steps"),
    ({"sample_steps": 10**6}, "overrides.sample_steps"), ({"momentum": 1.0}, "overrides.momentum"),
    ({"weight_decay": 5}, "overrides.weight_decay"), ({"clip": 0}, "overrides.clip"),
    ({"adam_betas": [0.5, 1.5]}, "overrides.adam_betas.1"), ({"preview_every": 0}, "overrides.preview_every"),
    ({"layers": []}, "overrides.layers"), ({"layers": [{"out_channels": 8, "kernel": 3}] * 7}, "overrides.layers"),
    ({"layers": [{"out_channels": 100000, "kernel": 3}]}, "overrides.layers.0.out_channels"),
    ({"layers": [{"out_channels": 8, "kernel": 99}]}, "overrides.layers.0.kernel"),
    ({"learner": "magic"}, "overrides.learner"), ({"step_size": "NaN"}, "overrides.step_size"),
    ({"step_size": "Infinity"}, "overrides.step_size"),
    ({"name": "x"}, "overrides.name"), ({"description": "x"}, "overrides.description"),
    # the whole job: memory of 256 chains of 1024 px, an image too small for its kernels
    ({"n_chains": 256, "image_size": 1024}, "overrides.n_chains"),
    ({"image_size": 8, "layers": [{"out_channels": 8, "kernel": 31}]}, "overrides.layers"),
])
def test_learning_parameters_are_bounded(keyed_client, keys, brick64, overrides, field):
    c = keyed_client
    d = upload(c, brick64, keys["a"]).json()
    r = c.post("/v1/models", json={"dataset_id": d["id"], "overrides": overrides}, headers=bearer(keys["a"]))
    assert field_of(r) == field
    assert c.get("/v1/jobs", headers=bearer(keys["a"])).json()["items"] == []


def test_sampling_memory_is_bounded(keyed_client, keys, brick64):
    c = keyed_client
    d = upload(c, brick64, keys["a"]).json()
    layers = [{"out_channels": 64, "kernel": 7, "stride": 1, "padding": 3}, {"out_channels": 64, "kernel": 5,
                                                                          "stride": 1, "padding": 2}]
    m = TrainedModel(id=new_id(), dataset_id=d["id"], job_id=new_id(), preset="texture-fast", kind="texture",
                     learner="short_run", image_size=64, chain_size=None, iterations=1,
                     config={"sample_steps": 5, "layers": layers}, curve=[], api_key_id=keys["a_id"])
    c.app.state.services.store.add(m)
    assert field_of(c.post(f"/v1/models/{m.id}/samples", json={"n": 64, "size": 1024},
                           headers=bearer(keys["a"]))) == "n"
    assert c.post(f"/v1/models/{m.id}/samples", json={"n": 4, "size": 256}, headers=bearer(keys["a"])).status_code == 202


def test_a_chunked_body_is_cut_off_at_the_request_limit(keyed_client, keys):
    def chunks():
        for _ in range(40):
            yield b"x" * 65536  # 2.5 MiB with no Content-Length; the limit here is 1 MiB

    r = keyed_client.post("/v1/datasets", content=chunks(), headers={
        **bearer(keys["a"]), "content-type": "multipart/form-data; boundary=zz"})
    assert r.status_code == 413 and r.headers["content-type"].startswith("application/problem+json")


def test_uploads_past_the_data_quota_are_507(tmp_path, brick64):
    settings = Settings(data_dir=tmp_path, auth="off", max_data_bytes=200_000)
    with TestClient(create_app(settings)) as c:
        (tmp_path / "filler.bin").write_bytes(b"\0" * 190_000)
        c.app.state.services.usage.max_age = 0
        r = c.post("/v1/datasets", files=[("images", ("b.png", png(brick64), "image/png"))], data={"kind": "texture"})
        assert r.status_code == 507 and r.headers["content-type"].startswith("application/problem+json")
        assert not (tmp_path / "datasets").exists()
        (tmp_path / "filler.bin").unlink()
        assert c.post("/v1/datasets", files=[("images", ("b.png", png(brick64), "image/png"))],
                      data={"kind": "texture"}).status_code == 201


def test_the_memory_estimate_counts_every_categorys_top_channels():
    """A texture model of K categories has K groups of top channels; object models' K outputs
    are FC units, not channels."""
    from service.limits import TooBig, check, top_multiplier

    layers = [[32, 7, 2, 3], [32, 5, 1, 2]]
    one = check(layers, 256, 8, 10_000, size_field="size", batch_field="n")
    assert check(layers, 256, 8, 10_000, size_field="size", batch_field="n", top=16) > 4 * one
    limit_mb = int(2 * one / 2**20) + 1
    check(layers, 256, 8, limit_mb, size_field="size", batch_field="n")
    with pytest.raises(TooBig):
        check(layers, 256, 8, limit_mb, size_field="size", batch_field="n", top=16)
    assert top_multiplier({"kind": "texture", "categories": 3}) == 3
    assert top_multiplier({"kind": "object", "categories": 3}) == top_multiplier({"kind": "texture"}) == 1
