"""The HTTP contract without a worker: resources, status codes, and problem+json for every error."""

from __future__ import annotations

import io

import pytest
from PIL import Image

PROBLEM = "application/problem+json"


def problem(r, status: int, field: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["status"] == status and body["title"] and body["type"] and body["detail"]
    if field is not None:
        assert field in [e["field"] for e in body["errors"]], body
    return body


def encode(image, fmt) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


# ---- datasets --------------------------------------------------------------------------------
def test_upload_normalises_images_and_serves_them_back(client, brick64):
    files = [("images", ("../../a.jpg", encode(brick64, "JPEG"), "image/png")),
             ("images", ("b.webp", encode(brick64.resize((80, 48)), "WEBP"), "application/octet-stream"))]
    r = client.post("/v1/datasets", files=files, data={"kind": "object"})
    assert r.status_code == 201, r.text
    d = r.json()
    assert d["kind"] == "object" and d["image_count"] == 2
    assert d["sizes"] == [{"width": 64, "height": 64}, {"width": 80, "height": 48}]
    assert client.get(f"/v1/datasets/{d['id']}").json() == d
    img = client.get(d["links"]["images"][1])
    assert img.status_code == 200 and img.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(img.content)).size == (80, 48)
    problem(client.get(f"/v1/datasets/{d['id']}/images/2.png"), 404)
    problem(client.get(f"/v1/datasets/{d['id']}/images/-1.png"), 422, "k")


@pytest.mark.parametrize("data,kind,status,field", [
    ({}, "texture", 422, "images"),
    ({"images": [("x.gif", "gif")]}, "texture", 415, "images"),
    ({"images": [("x.png", b"\x89PNG\r\n\x1a\n garbage")]}, "texture", 422, "images"),  # a damaged PNG
    ({"images": [("x.png", "truncated")]}, "texture", 422, "images"),
    ({"images": [("x.png", "brick")]}, "landscape", 422, "kind"),
    ({"images": [("x.png", "brick")] * 5}, "texture", 422, "images"),
])
def test_bad_uploads_are_problems_naming_the_field(client, brick64, data, kind, status, field):
    def content(what):
        if what == "gif":
            return encode(brick64, "GIF")
        if what == "brick":
            return encode(brick64, "PNG")
        if what == "truncated":
            noisy = Image.effect_noise((64, 64), 80).convert("RGB")
            full = encode(noisy, "PNG")
            return full[: len(full) // 2]
        return what

    files = [("images", (name, content(what), "image/png")) for name, what in data.get("images", [])]
    r = client.post("/v1/datasets", files=files or None, data={"kind": kind})
    problem(r, status, field)


def test_too_large_files_are_413(client):
    noisy = Image.effect_noise((300, 300), 120).convert("RGB")  # ~200 kB PNG, limit is 64 kB per file
    r = client.post("/v1/datasets", files=[("images", ("n.png", encode(noisy, "PNG"), "image/png"))],
                    data={"kind": "texture"})
    assert "65536 bytes" in problem(r, 413, "images")["detail"]
    huge = b"x" * (2 * 1024 * 1024)  # above the whole-request limit (1 MiB here): refused unread
    r = client.post("/v1/datasets", content=huge, headers={"content-type": "multipart/form-data; boundary=b"})
    problem(r, 413)


# ---- models and jobs -------------------------------------------------------------------------
def test_learning_is_accepted_as_a_queued_job(client, dataset, services):
    body = {"dataset_id": dataset["id"], "preset": "texture-fast", "overrides": {"iterations": 30, "image_size": 32}}
    r = client.post("/v1/models", json=body)
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}" == job["links"]["self"]
    assert job["kind"] == "learn" and job["status"] == "queued" and job["progress"]["total"] == 30
    assert client.get(f"/v1/jobs/{job['id']}").json()["id"] == job["id"]
    # the model does not exist until its job succeeds: 409 with the job's status
    p = problem(client.get(f"/v1/models/{job['model_id']}"), 409)
    assert p["job_status"] == "queued" and p["job_id"] == job["id"]
    problem(client.get(f"/v1/models/{job['model_id']}/weights"), 409)
    assert problem(client.get(f"/v1/jobs/{job['id']}/preview.png"), 409)["job_status"] == "queued"
    assert client.get("/v1/models").json()["items"] == []


@pytest.mark.parametrize("body,field", [
    ({"preset": "texture-fast"}, "dataset_id"),
    ({"dataset_id": "0" * 32}, "dataset_id"),
    ({"preset": "nope"}, "preset"),
    ({"overrides": {"iterations": 0}}, "overrides.iterations"),
    ({"overrides": {"iterations": 10**9}}, "overrides.iterations"),
    ({"overrides": {"image_size": 4}}, "overrides.image_size"),
    ({"overrides": {"bogus": 1}}, "overrides.bogus"),
    ({"overrides": {"lr": -1}}, "overrides.lr"),
    ({"extra": 1}, "extra"),
])
def test_bad_learning_requests_are_422_naming_the_field(client, dataset, body, field):
    full = {"dataset_id": dataset["id"], "preset": "texture-fast", **body}
    if "dataset_id" not in body and field == "dataset_id":
        full.pop("dataset_id")
    problem(client.post("/v1/models", json=full), 422, field)


def test_malformed_json_is_a_problem(client):
    problem(client.post("/v1/models", content=b"{not json", headers={"content-type": "application/json"}), 422)


def test_sampling_requests(client, make_model):
    model = make_model()
    r = client.post(f"/v1/models/{model.id}/samples", json={"n": 2, "size": 96, "steps": 10, "seed": 3})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["kind"] == "sample" and job["params"]["n"] == 2 and job["progress"]["total"] == 10
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    p = problem(client.get(f"/v1/jobs/{job['id']}/images/0.png"), 409)
    assert p["job_status"] == "queued"
    problem(client.get(f"/v1/jobs/{job['id']}/grid.png"), 409)
    problem(client.get(f"/v1/jobs/{job['id']}/preview.png"), 404)
    assert client.post(f"/v1/models/{model.id}/samples", json={}).json()["progress"]["total"] == 40


@pytest.mark.parametrize("body,field", [
    ({"n": 0}, "n"), ({"n": 65}, "n"), ({"size": 4}, "size"), ({"size": 5000}, "size"),
    ({"steps": -1}, "steps"), ({"steps": 10**6}, "steps"), ({"seed": -1}, "seed"), ({"init": "bogus"}, "init"),
    ({"n": "many"}, "n"), ({"colour": "red"}, "colour"),
])
def test_bad_sampling_parameters_are_422(client, make_model, body, field):
    problem(client.post(f"/v1/models/{make_model().id}/samples", json=body), 422, field)


def test_model_specific_sampling_rules(client, make_model):
    obj = make_model(kind="object", image_size=48)
    problem(client.post(f"/v1/models/{obj.id}/samples", json={"size": 96}), 422, "size")
    assert client.post(f"/v1/models/{obj.id}/samples", json={"size": 48}).status_code == 202
    short_run = make_model()
    problem(client.post(f"/v1/models/{short_run.id}/samples", json={"init": "persistent"}), 422, "init")
    ml = make_model(learner="ml", chain_size=32)
    problem(client.post(f"/v1/models/{ml.id}/samples", json={"init": "persistent", "size": 64}), 422, "size")
    assert client.post(f"/v1/models/{ml.id}/samples", json={"init": "persistent"}).status_code == 202


def test_reconstruction_requests(client, make_model, brick_png):
    model = make_model()
    r = client.post(f"/v1/models/{model.id}/reconstructions", files={"image": ("x.png", brick_png, "image/png")})
    assert r.status_code == 202 and r.json()["kind"] == "reconstruct"
    problem(client.post(f"/v1/models/{model.id}/reconstructions", files={"image": ("x.txt", b"hello", "text/plain")}),
            415, "image")
    problem(client.post(f"/v1/models/{model.id}/reconstructions"), 422, "image")


def test_models_list_get_and_delete(client, make_model, services):
    a, b = make_model(), make_model()
    page = client.get("/v1/models", params={"limit": 1}).json()
    assert [m["id"] for m in page["items"]] == [b.id] and page["next_cursor"]
    rest = client.get("/v1/models", params={"limit": 1, "cursor": page["next_cursor"]}).json()
    assert [m["id"] for m in rest["items"]] == [a.id] and rest["next_cursor"] is None
    got = client.get(f"/v1/models/{a.id}").json()
    assert got["status"] == "ready" and got["learning_curve"] == [{"iteration": 1, "gap": 0.5}]
    assert got["links"]["weights"] == f"/v1/models/{a.id}/weights"
    assert client.delete(f"/v1/models/{a.id}").status_code == 204
    problem(client.get(f"/v1/models/{a.id}"), 404)
    problem(client.delete(f"/v1/models/{a.id}"), 404)



def test_a_deleted_model_is_404_even_though_its_learning_job_succeeded(client, dataset, services):
    """Not 409 "not ready": a succeeded learning job made the model, so no row means deleted."""
    from sqlalchemy import update

    from service.db import Job, TrainedModel
    from service.jobs import JobStatus

    job = client.post("/v1/models", json={"dataset_id": dataset["id"], "overrides": {"iterations": 5,
                                                                                   "image_size": 32}}).json()
    model_id = job["model_id"]
    problem(client.get(f"/v1/models/{model_id}"), 409)  # queued: not ready yet
    m = TrainedModel(id=model_id, dataset_id=dataset["id"], job_id=job["id"], preset="texture-fast", kind="texture",
                     learner="short_run", image_size=32, chain_size=None, iterations=5, config={}, curve=[])
    services.store.add(m)
    with services.db.session() as s:
        s.execute(update(Job).where(Job.id == job["id"]).values(status=JobStatus.succeeded.value))
        s.commit()
    assert client.get(f"/v1/models/{model_id}").status_code == 200
    assert client.delete(f"/v1/models/{model_id}").status_code == 204
    for r in (client.get(f"/v1/models/{model_id}"), client.delete(f"/v1/models/{model_id}"),
              client.post(f"/v1/models/{model_id}/samples", json={})):
        problem(r, 404)


@pytest.mark.parametrize("path", [
    "/v1/datasets/{x}", "/v1/datasets/{x}/images/0.png", "/v1/models/{x}", "/v1/models/{x}/weights",
    "/v1/jobs/{x}", "/v1/jobs/{x}/events", "/v1/jobs/{x}/images/0.png", "/v1/jobs/{x}/grid.png",
    "/v1/jobs/{x}/preview.png", "/no/such/route",
])
@pytest.mark.parametrize("ident", ["0123456789abcdef0123456789abcdef", "..%2F..%2Fetc"])
def test_unknown_ids_are_404(client, path, ident):
    problem(client.get(path.format(x=ident)), 404)


def test_unknown_ids_in_posts_are_404(client):
    x = "0" * 32
    problem(client.post(f"/v1/models/{x}/samples", json={}), 404)
    problem(client.post(f"/v1/jobs/{x}/cancel"), 404)
    problem(client.delete(f"/v1/models/{x}"), 404)


def test_cancel_is_idempotent(client, make_model):
    job = client.post(f"/v1/models/{make_model().id}/samples", json={}).json()
    first = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert first.status_code == 200 and first.json()["status"] == "canceled"
    second = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert second.status_code == 200 and second.json() == first.json()
    assert problem(client.get(f"/v1/jobs/{job['id']}/grid.png"), 409)["job_status"] == "canceled"


def test_job_list_filters_and_paginates(client, make_model):
    model = make_model()
    ids = [client.post(f"/v1/models/{model.id}/samples", json={}).json()["id"] for _ in range(5)]
    client.post(f"/v1/jobs/{ids[0]}/cancel")
    seen, cursor = [], None
    while True:
        page = client.get("/v1/jobs", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ids[::-1]
    canceled = client.get("/v1/jobs", params={"status": "canceled"}).json()["items"]
    assert [j["id"] for j in canceled] == [ids[0]]
    assert client.get("/v1/jobs", params={"kind": "learn"}).json()["items"] == []
    problem(client.get("/v1/jobs", params={"status": "done"}), 422, "status")
    problem(client.get("/v1/jobs", params={"kind": "x"}), 422, "kind")
    problem(client.get("/v1/jobs", params={"limit": 0}), 422, "limit")
    problem(client.get("/v1/jobs", params={"cursor": "zzz"}), 422, "cursor")


def test_events_of_a_finished_job_end_the_stream(client, make_model):
    job = client.post(f"/v1/models/{make_model().id}/samples", json={}).json()
    client.post(f"/v1/jobs/{job['id']}/cancel")
    with client.stream("GET", f"/v1/jobs/{job['id']}/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_text())
    assert "event: job" in text and "event: end" in text and '"status": "canceled"' in text.replace('":"', '": "')


# ---- operations ------------------------------------------------------------------------------
def test_health_ready_metrics(client, dataset):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ok", "database": "ok", "broker": "ok"}
    text = client.get("/metrics").text
    assert 'gcn_http_requests_total{method="POST",route="/v1/datasets",status="201"} 1.0' in text
    assert 'gcn_jobs{kind="learn",status="queued"} 0.0' in text


def test_readyz_names_what_is_down(tmp_path):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from service.settings import Settings

    app = create_app(Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:1/0"))
    with TestClient(app) as c:
        body = problem(c.get("/readyz"), 503)
        assert body["checks"]["database"] == "ok" and body["checks"]["broker"].startswith("unreachable")


def test_openapi_documents_every_route_and_problem_json(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path, method in [
        ("/v1/datasets", "post"), ("/v1/datasets/{dataset_id}", "get"), ("/v1/datasets/{dataset_id}/images/{k}.png", "get"),
        ("/v1/models", "post"), ("/v1/models", "get"), ("/v1/models/{model_id}", "get"),
        ("/v1/models/{model_id}", "delete"), ("/v1/models/{model_id}/weights", "get"),
        ("/v1/models/{model_id}/samples", "post"), ("/v1/models/{model_id}/reconstructions", "post"),
        ("/v1/jobs", "get"), ("/v1/jobs/{job_id}", "get"), ("/v1/jobs/{job_id}/events", "get"),
        ("/v1/jobs/{job_id}/cancel", "post"), ("/v1/jobs/{job_id}/images/{k}.png", "get"),
        ("/v1/jobs/{job_id}/grid.png", "get"), ("/v1/jobs/{job_id}/preview.png", "get"),
        ("/healthz", "get"), ("/readyz", "get"), ("/metrics", "get"),
    ]:
        assert method in paths.get(path, {}), (path, method)
    for path, ops in paths.items():
        for method, op in ops.items():
            for status, resp in op["responses"].items():
                if status.startswith(("4", "5")):
                    assert list(resp["content"]) == [PROBLEM], (path, method, status)
    assert "text/event-stream" in paths["/v1/jobs/{job_id}/events"]["get"]["responses"]["200"]["content"]
    assert "ProblemDetails" in spec["components"]["schemas"]


def test_the_page_is_served(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert client.get("/static/app.js").status_code == 200
    assert "/" not in client.get("/openapi.json").json()["paths"]
