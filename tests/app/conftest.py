"""The API in-process (TestClient) on a temporary data folder, with the embedded broker: jobs
are really queued, but no worker runs, so every job stays where the test puts it."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from service.db import TrainedModel
from service.jobs import new_id
from service.settings import Settings


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path, max_upload_bytes=64 * 1024, max_dataset_images=4, auth="off",
                    max_request_bytes=1024 * 1024)


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def services(client):
    return client.app.state.services


def png(image, fmt="PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture
def brick_png(brick64) -> bytes:
    return png(brick64)


@pytest.fixture
def dataset(client, brick_png) -> dict:
    r = client.post("/v1/datasets", files=[("images", ("b.png", brick_png, "image/png"))], data={"kind": "texture"})
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture
def make_model(services, dataset):
    """A ready model row (as a finished learning job would leave it), without learning."""

    def make(kind="texture", learner="short_run", image_size=32, chain_size=None) -> TrainedModel:
        m = TrainedModel(id=new_id(), dataset_id=dataset["id"], job_id=new_id(), preset="texture-fast", kind=kind,
                         learner=learner, image_size=image_size, chain_size=chain_size, iterations=1,
                         config={"sample_steps": 40}, curve=[{"iteration": 1, "gap": 0.5}])
        services.store.add(m)
        return m

    return make


# ---- API keys ------------------------------------------------------------------------------
@pytest.fixture
def keyed_settings(tmp_path) -> Settings:
    """Keys required (as on any non-loopback address), small limits so that tests reach them; no
    limit on invalid keys (these tests send many; test_access checks the limit itself)."""
    return Settings(data_dir=tmp_path, max_upload_bytes=64 * 1024, max_dataset_images=4, auth="required",
                    max_request_bytes=1024 * 1024, max_queued_jobs=3, auth_failure_limit=0)


@pytest.fixture
def keyed_client(keyed_settings):
    with TestClient(create_app(keyed_settings)) as c:
        yield c


@pytest.fixture
def keys(keyed_client) -> dict[str, str]:
    """Tokens of two ordinary keys (a, b) and an admin key, and a revoked one."""
    from service.auth import KeyStore

    store = KeyStore(keyed_client.app.state.services.db)
    out = {name: store.create(name=name, admin=name == "admin") for name in ("a", "b", "admin", "revoked")}
    store.revoke(out["revoked"].row.id)
    ids = {f"{name}_id": k.row.id for name, k in out.items()}
    return {**{name: k.token for name, k in out.items()}, **ids}
