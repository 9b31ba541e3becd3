"""Webhooks through the HTTP API (no worker): every job-creating route takes one, bad ones are
422 naming the field, private addresses are refused by default, and the job shows its webhook and
deliveries; the outbox payload equals what GET /v1/jobs/{id} answers."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.main import create_app
from service.db import WebhookDelivery
from service.settings import Settings

from test_api import problem

HOOK = "https://hooks.example.com/gcn?token=abc"


@pytest.fixture
def open_client(tmp_path):
    """Private webhook addresses allowed (as in development and the tests with a receiver)."""
    settings = Settings(data_dir=tmp_path, auth="off", max_upload_bytes=64 * 1024, webhook_allow_private=True)
    with TestClient(create_app(settings)) as c:
        yield c


def test_learning_with_a_webhook_shows_it_on_the_job(client, dataset):
    r = client.post("/v1/models", json={"dataset_id": dataset["id"], "overrides": {"iterations": 5},
                                        "webhook": {"url": HOOK, "events": ["completed", "progress"]}})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["webhook"] == {"url": HOOK, "events": ["completed", "progress"], "deliveries": []}
    assert "webhook" not in job["params"]
    assert client.get(f"/v1/jobs/{job['id']}").json()["webhook"]["url"] == HOOK
    plain = client.post("/v1/models", json={"dataset_id": dataset["id"]}).json()
    assert plain["webhook"] is None


def test_sampling_and_reconstruction_take_a_webhook(client, make_model, brick_png):
    m = make_model()
    r = client.post(f"/v1/models/{m.id}/samples", json={"n": 1, "webhook": {"url": HOOK}})
    assert r.status_code == 202, r.text
    assert r.json()["webhook"]["events"] == ["completed"] and "webhook" not in r.json()["params"]
    r = client.post(f"/v1/models/{m.id}/reconstructions", files={"image": ("b.png", brick_png, "image/png")},
                    data={"webhook_url": HOOK, "webhook_events": "completed, progress"})
    assert r.status_code == 202, r.text
    assert r.json()["webhook"] == {"url": HOOK, "events": ["completed", "progress"], "deliveries": []}
    r = client.post(f"/v1/models/{m.id}/reconstructions", files={"image": ("b.png", brick_png, "image/png")})
    assert r.status_code == 202 and r.json()["webhook"] is None


@pytest.mark.parametrize("webhook, field", [
    ({"url": "ftp://example.com/"}, "webhook.url"),
    ({"url": "example.com/hook"}, "webhook.url"),
    ({"url": "https://user:pw@example.com/"}, "webhook.url"),
    ({"url": "https://exa mple.com/"}, "webhook.url"),
    ({"url": "https://example.com/" + "a" * 2100}, "webhook.url"),
    ({"url": HOOK, "events": ["finished"]}, "webhook.events.0"),
    ({"url": HOOK, "events": []}, "webhook.events"),
    ({"url": HOOK, "secret": "x"}, "webhook.secret"),
    ({"events": ["completed"]}, "webhook.url"),
    ({"url": "http://127.0.0.1:9000/hook"}, "webhook.url"),  # private: refused by default
    ({"url": "http://169.254.169.254/latest/meta-data/"}, "webhook.url"),
    ({"url": "http://localhost/hook"}, "webhook.url"),
])
def test_bad_webhooks_are_422_naming_the_field(client, make_model, webhook, field):
    m = make_model()
    body = problem(client.post(f"/v1/models/{m.id}/samples", json={"n": 1, "webhook": webhook}), 422, field)
    assert client.get("/v1/jobs").json()["items"] == []  # nothing was created
    if "127.0.0.1" in str(webhook):
        assert "GCN_WEBHOOK_ALLOW_PRIVATE" in body["detail"]


@pytest.mark.parametrize("data, field", [
    ({"webhook_url": "gopher://example.com/"}, "webhook_url"),
    ({"webhook_url": "http://10.0.0.1/"}, "webhook_url"),
    ({"webhook_url": HOOK, "webhook_events": "completed,done"}, "webhook_events"),
    ({"webhook_events": "completed"}, "webhook_url"),
])
def test_bad_multipart_webhooks_are_422_naming_the_field(client, make_model, brick_png, data, field):
    m = make_model()
    r = client.post(f"/v1/models/{m.id}/reconstructions", files={"image": ("b.png", brick_png, "image/png")},
                    data=data)
    problem(r, 422, field)
    assert client.get("/v1/jobs").json()["items"] == []


def test_private_addresses_when_the_server_allows_them(open_client, brick_png):
    d = open_client.post("/v1/datasets", files=[("images", ("b.png", brick_png, "image/png"))],
                         data={"kind": "texture"}).json()
    r = open_client.post("/v1/models", json={"dataset_id": d["id"], "webhook": {"url": "http://127.0.0.1:9/h"}})
    assert r.status_code == 202, r.text


def test_the_delivery_payload_is_the_job_document_the_api_serves(client, make_model, services):
    """The outbox row is written by the service layer (no FastAPI): its payload must be the very
    body GET /v1/jobs/{id} answers with at that moment."""
    m = make_model()
    job = client.post(f"/v1/models/{m.id}/samples", json={"n": 2, "webhook": {"url": HOOK}}).json()
    canceled = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    [d] = canceled.json()["webhook"]["deliveries"]
    assert (d["event"], d["status"], d["attempts"], d["log"]) == ("completed", "pending", 0, [])
    got = client.get(f"/v1/jobs/{job['id']}")
    with services.db.session() as s:
        payload = s.scalar(select(WebhookDelivery.payload).where(WebhookDelivery.id == d["id"]))
    assert payload == got.text  # byte for byte
    assert json.loads(payload) == got.json() == canceled.json()
    listed = client.get("/v1/jobs").json()["items"]
    assert listed[0]["webhook"]["deliveries"][0]["id"] == d["id"]


def test_the_webhook_is_part_of_the_idempotent_request(client, make_model, brick_png):
    m = make_model()
    files = {"image": ("b.png", brick_png, "image/png")}
    first = client.post(f"/v1/models/{m.id}/reconstructions", files=files, data={"webhook_url": HOOK},
                        headers={"Idempotency-Key": "k1"})
    again = client.post(f"/v1/models/{m.id}/reconstructions", files=files, data={"webhook_url": HOOK},
                        headers={"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 202 and first.json()["id"] == again.json()["id"]
    other = client.post(f"/v1/models/{m.id}/reconstructions", files=files, headers={"Idempotency-Key": "k1"},
                        data={"webhook_url": HOOK + "x"})
    problem(other, 422)


def test_the_openapi_document_describes_webhooks(client):
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert {"WebhookIn", "WebhookOut", "WebhookDeliveryOut", "WebhookAttempt"} <= set(schemas)
    assert "webhook" in schemas["ModelCreate"]["properties"] and "webhook" in schemas["SampleCreate"]["properties"]
    assert "webhook" in schemas["JobOut"]["properties"]
    form = spec["paths"]["/v1/models/{model_id}/reconstructions"]["post"]["requestBody"]["content"]
    ref = form["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert {"webhook_url", "webhook_events"} <= set(schemas[ref]["properties"])


def test_each_key_fetches_its_own_signing_secret(keyed_client, keys, client):
    from service import webhooks

    services = keyed_client.app.state.services
    server = webhooks.load_secret(services.settings)

    def fetch(token):
        return keyed_client.get("/v1/webhooks/secret", headers={"Authorization": f"Bearer {token}"})

    a, b = fetch(keys["a"]), fetch(keys["b"])
    assert a.status_code == b.status_code == 200 and a.headers["cache-control"] == "no-store"
    assert a.json() == {"secret": webhooks.signing_key(server, keys["a_id"]).decode(), "scope": "api-key"}
    assert b.json()["secret"] == webhooks.signing_key(server, keys["b_id"]).decode() != a.json()["secret"]
    problem(keyed_client.get("/v1/webhooks/secret"), 401)
    # keys off (one user): the server's own secret
    own = webhooks.load_secret(client.app.state.services.settings).decode()
    assert client.get("/v1/webhooks/secret").json() == {"secret": own, "scope": "server"}
