"""API keys: no key -> 401 on every guarded route; another key's datasets, models and jobs are 404
on every route (lists filtered too); an admin key sees everything."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from service.db import TrainedModel
from service.jobs import new_id

PROBLEM = "application/problem+json"
X = "0123456789abcdef0123456789abcdef"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def guarded_operations(client) -> list[tuple[str, str]]:
    """Every operation of the OpenAPI document under /v1 except the public preset catalogue."""
    spec = client.get("/openapi.json").json()
    ops = []
    for path, item in spec["paths"].items():
        for method in item:
            if path.startswith("/v1") and path != "/v1/presets":
                ops.append((method.upper(), path))
    return ops


def concrete(path: str, ident: str = X) -> str:
    return (path.replace("{dataset_id}", ident).replace("{model_id}", ident).replace("{job_id}", ident)
            .replace("{k}", "0"))


def assert_401(r, invalid: bool) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith("Bearer")
    assert ('error="invalid_token"' in challenge) == invalid
    assert r.json()["status"] == 401 and r.json()["detail"]


def test_every_guarded_route_needs_a_valid_key(keyed_client, keys):
    ops = guarded_operations(keyed_client)
    assert len(ops) >= 17
    for method, path in ops:
        url = concrete(path)
        assert_401(keyed_client.request(method, url), invalid=False)
        assert_401(keyed_client.request(method, url, headers=bearer("gcn_" + "x" * 43)), invalid=True)
        assert_401(keyed_client.request(method, url, headers=bearer(keys["revoked"])), invalid=True)
        assert_401(keyed_client.request(method, url, headers={"Authorization": f"Basic {keys['a']}"}), invalid=True)
    # the spec says so too: every guarded operation documents the bearer scheme and 401
    spec = keyed_client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["ApiKey"] == {
        "type": "http", "scheme": "bearer", "description": spec["components"]["securitySchemes"]["ApiKey"]["description"]}
    for method, path in ops:
        op = spec["paths"][path][method.lower()]
        assert {"ApiKey": []} in op["security"] and "401" in op["responses"], (method, path)


def test_public_routes_need_no_key(keyed_client):
    for path in ("/healthz", "/readyz", "/v1/presets", "/openapi.json", "/", "/metrics"):
        assert keyed_client.get(path).status_code == 200, path


def test_an_unauthenticated_upload_is_refused_before_its_body_is_read(keyed_client, keys, brick64):
    r = keyed_client.post("/v1/datasets", files=[("images", ("b.png", png(brick64), "image/png"))],
                          data={"kind": "texture"})
    assert_401(r, invalid=False)
    assert not (keyed_client.app.state.services.settings.data_dir / "datasets").exists()


@pytest.fixture
def owned(keyed_client, keys, brick64):
    """Key a's dataset, ready model, learning job, sampling job and reconstruction job; key b's dataset."""
    c, services = keyed_client, keyed_client.app.state.services
    a = bearer(keys["a"])
    dataset = c.post("/v1/datasets", files=[("images", ("b.png", png(brick64), "image/png"))],
                     data={"kind": "texture"}, headers=a).json()
    learn = c.post("/v1/models", json={"dataset_id": dataset["id"], "overrides": {"iterations": 5, "image_size": 32}},
                   headers=a).json()
    model = TrainedModel(id=new_id(), dataset_id=dataset["id"], job_id=learn["id"], preset="texture-fast",
                         kind="texture", learner="short_run", image_size=32, chain_size=None, iterations=1,
                         config={"sample_steps": 5}, curve=[{"iteration": 1, "gap": 0.1}], api_key_id=keys["a_id"])
    services.store.add(model)
    services.artifacts.put(f"models/{model.id}/model.safetensors", b"weights")
    sample = c.post(f"/v1/models/{model.id}/samples", json={"n": 1, "steps": 1}, headers=a).json()
    recon = c.post(f"/v1/models/{model.id}/reconstructions", files={"image": ("x.png", png(brick64), "image/png")},
                   headers=a).json()
    theirs = c.post("/v1/datasets", files=[("images", ("b.png", png(brick64), "image/png"))],
                    data={"kind": "texture"}, headers=bearer(keys["b"])).json()
    return {"dataset": dataset["id"], "learn": learn["id"], "pending_model": learn["model_id"], "model": model.id,
            "sample": sample["id"], "recon": recon["id"], "b_dataset": theirs["id"]}


def resource_requests(o: dict[str, str], brick: bytes) -> list[tuple[str, str, str, dict]]:
    """(method, route template, url, request arguments) for every route that names a resource,
    aimed at key a's resources."""
    return [
        ("GET", "/v1/datasets/{dataset_id}", f"/v1/datasets/{o['dataset']}", {}),
        ("GET", "/v1/datasets/{dataset_id}/images/{k}.png", f"/v1/datasets/{o['dataset']}/images/0.png", {}),
        ("GET", "/v1/models/{model_id}", f"/v1/models/{o['model']}", {}),
        ("GET", "/v1/models/{model_id}", f"/v1/models/{o['pending_model']}", {}),  # still learning: 409 for a
        ("GET", "/v1/models/{model_id}/weights", f"/v1/models/{o['model']}/weights", {}),
        ("POST", "/v1/models/{model_id}/samples", f"/v1/models/{o['model']}/samples", {"json": {"n": 1}}),
        ("POST", "/v1/models/{model_id}/reconstructions", f"/v1/models/{o['model']}/reconstructions",
         {"files": {"image": ("x.png", brick, "image/png")}}),
        ("POST", "/v1/models/{model_id}/inpaintings", f"/v1/models/{o['model']}/inpaintings",
         {"files": {"image": ("x.png", brick, "image/png")}, "data": {"drop": "0.5"}}),
        ("GET", "/v1/jobs/{job_id}", f"/v1/jobs/{o['learn']}", {}),
        ("GET", "/v1/jobs/{job_id}/events", f"/v1/jobs/{o['learn']}/events", {}),
        ("GET", "/v1/jobs/{job_id}/preview.png", f"/v1/jobs/{o['learn']}/preview.png", {}),
        ("GET", "/v1/jobs/{job_id}", f"/v1/jobs/{o['sample']}", {}),
        ("GET", "/v1/jobs/{job_id}/images/{k}.png", f"/v1/jobs/{o['sample']}/images/0.png", {}),
        ("GET", "/v1/jobs/{job_id}/grid.png", f"/v1/jobs/{o['sample']}/grid.png", {}),
        ("GET", "/v1/jobs/{job_id}/grid.png", f"/v1/jobs/{o['recon']}/grid.png", {}),
        ("POST", "/v1/jobs/{job_id}/cancel", f"/v1/jobs/{o['sample']}/cancel", {}),
        ("DELETE", "/v1/models/{model_id}", f"/v1/models/{o['model']}", {}),  # last: it works for a
    ]


def test_another_key_gets_404_on_every_route(keyed_client, keys, owned, brick64):
    c, b = keyed_client, bearer(keys["b"])
    requests = resource_requests(owned, png(brick64))
    for method, _, url, kw in requests:
        r = c.request(method, url, headers=b, **kw)
        assert r.status_code == 404, (method, url, r.text)
        assert r.headers["content-type"].startswith(PROBLEM)
    # every route that names a resource was tried
    assert {(m, t) for m, t, _, _ in requests} == {(m, p) for m, p in guarded_operations(c) if "{" in p}
    # b's requests changed nothing of a's
    a = bearer(keys["a"])
    assert c.get(f"/v1/jobs/{owned['sample']}", headers=a).json()["status"] == "queued"
    assert c.get(f"/v1/models/{owned['model']}", headers=a).status_code == 200
    # learning from someone else's dataset: as if it did not exist
    r = c.post("/v1/models", json={"dataset_id": owned["dataset"]}, headers=b)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "dataset_id"


def test_lists_show_only_the_keys_own_rows(keyed_client, keys, owned):
    c = keyed_client
    for params in ({}, {"status": "queued"}, {"kind": "learn"}, {"kind": "sample"}, {"limit": 1}):
        assert c.get("/v1/jobs", params=params, headers=bearer(keys["b"])).json() == {"items": [], "next_cursor": None}
    assert c.get("/v1/models", headers=bearer(keys["b"])).json()["items"] == []
    mine = {j["id"] for j in c.get("/v1/jobs", params={"limit": 100}, headers=bearer(keys["a"])).json()["items"]}
    assert mine == {owned["learn"], owned["sample"], owned["recon"]}
    assert [m["id"] for m in c.get("/v1/models", headers=bearer(keys["a"])).json()["items"]] == [owned["model"]]
    # a cursor from a's list does not reveal a's rows to b
    page = c.get("/v1/jobs", params={"limit": 1}, headers=bearer(keys["a"])).json()
    assert c.get("/v1/jobs", params={"cursor": page["next_cursor"]}, headers=bearer(keys["b"])).json()["items"] == []


def test_the_owner_and_an_admin_see_everything(keyed_client, keys, owned, brick64):
    c = keyed_client
    for who in ("a", "admin"):
        h = bearer(keys[who])
        for method, _, url, _ in resource_requests(owned, png(brick64))[:-1]:
            if method != "GET" or url.endswith("/events"):
                continue
            r = c.get(url, headers=h)
            assert r.status_code in (200, 409), (who, url, r.text)  # 409: the result is not there yet
        assert c.get(f"/v1/datasets/{owned['b_dataset']}", headers=h).status_code == (200 if who == "admin" else 404)
    admin = bearer(keys["admin"])
    assert len(c.get("/v1/jobs", params={"limit": 100}, headers=admin).json()["items"]) == 3
    assert c.post(f"/v1/jobs/{owned['sample']}/cancel", headers=admin).json()["status"] == "canceled"
    assert c.delete(f"/v1/models/{owned['model']}", headers=admin).status_code == 204
    # jobs record who asked for them, whoever runs them
    assert c.app.state.services.store.get(owned["learn"]).api_key_id == keys["a_id"]


def test_keys_off_on_loopback_only(tmp_path):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from service.settings import Settings

    for auth, host, required in [("auto", "127.0.0.1", False), ("auto", "::1", False), ("auto", "localhost", False),
                                 ("auto", "0.0.0.0", True), ("auto", "192.168.1.5", True), ("auto", None, True),
                                 ("off", "0.0.0.0", False), ("required", "127.0.0.1", True)]:
        assert Settings(data_dir=tmp_path, auth=auth).auth_required(host) is required, (auth, host)
    with TestClient(create_app(Settings(data_dir=tmp_path), host="0.0.0.0")) as c:
        assert_401(c.get("/v1/jobs"), invalid=False)
    with TestClient(create_app(Settings(data_dir=tmp_path), host="127.0.0.1")) as c:
        assert c.get("/v1/jobs").status_code == 200


def test_failed_auth_limiter_counts_per_address_in_a_sliding_window():
    from app.security import FailedAuthLimiter

    now = [1000.0]
    limiter = FailedAuthLimiter(3, window=60, max_addresses=2, clock=lambda: now[0])
    for _ in range(2):
        limiter.failed("1.2.3.4")
        now[0] += 10
    assert limiter.retry_after("1.2.3.4") is None  # 2 of 3
    limiter.failed("1.2.3.4")
    assert limiter.retry_after("1.2.3.4") == 40  # the first failure (t=1000) ages out at t=1060
    assert limiter.retry_after("5.6.7.8") is None
    now[0] += 41
    assert limiter.retry_after("1.2.3.4") is None  # a sliding window: one failure aged out
    limiter.failed("5.6.7.8")
    limiter.failed("9.9.9.9")  # a third address: the least recently failing one is forgotten
    assert list(limiter._failures) == ["5.6.7.8", "9.9.9.9"]
    off = FailedAuthLimiter(0)
    for _ in range(100):
        off.failed("1.2.3.4")
    assert off.retry_after("1.2.3.4") is None


def test_an_address_that_keeps_sending_invalid_keys_gets_429_without_a_lookup(tmp_path):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from service.auth import KeyStore
    from service.settings import Settings

    settings = Settings(data_dir=tmp_path, auth="required", auth_failure_limit=3)
    with TestClient(create_app(settings)) as c:
        good = KeyStore(c.app.state.services.db).create(name="good").token
        assert c.get("/v1/jobs", headers=bearer(good)).status_code == 200
        for _ in range(3):
            assert_401(c.get("/v1/jobs", headers=bearer("gcn_wrong")), invalid=True)
        lookups = []
        keys = c.app.state.services.keys
        real = keys.authenticate
        keys.authenticate = lambda token: lookups.append(token) or real(token)
        try:
            r = c.get("/v1/jobs", headers=bearer("gcn_wrong"))
            assert r.status_code == 429 and r.headers["content-type"].startswith(PROBLEM)
            assert 1 <= int(r.headers["retry-after"]) <= 60 and r.json()["type"] == "/problems/too-many-auth-failures"
            # the address is held back, whatever key it sends (a shared proxy: raise the limit there)
            assert c.get("/v1/jobs", headers=bearer(good)).status_code == 429
            assert lookups == []
            assert_401(c.get("/v1/jobs"), invalid=False)  # no key: no lookup, nothing to limit
            assert c.get("/v1/presets").status_code == 200
        finally:
            keys.authenticate = real


def test_lookups_in_progress_count_and_addresses_are_grouped_sensibly():
    from app.security import FailedAuthLimiter, client_bucket

    limiter = FailedAuthLimiter(3, clock=lambda: 0.0)
    for _ in range(3):
        limiter.begin("1.2.3.4")
    assert limiter.retry_after("1.2.3.4") == 1  # three lookups already running
    limiter.end("1.2.3.4", ok=True)
    assert limiter.retry_after("1.2.3.4") is None
    limiter.end("1.2.3.4", ok=False)
    limiter.end("1.2.3.4", ok=False)
    limiter.begin("1.2.3.4")
    assert limiter.retry_after("1.2.3.4") == 1 and limiter._pending == {"1.2.3.4": 1}
    assert client_bucket({"client": ("2001:db8:1:2:aaaa::1", 5)}) == client_bucket({"client": ("2001:db8:1:2::9", 6)})
    assert client_bucket({"client": ("2001:db8:1:3::1", 5)}) == "2001:db8:1:3::/64"
    assert client_bucket({"client": ("10.0.0.1", 5)}) == "10.0.0.1"
    assert client_bucket({"client": None}) is None and client_bucket({}) is None


def test_a_burst_of_concurrent_invalid_keys_is_held_to_the_limit(tmp_path):
    """Requests already waiting for their lookup count, so 40 bad keys at once from one address
    cost at most the limit's worth of lookups, not 40."""
    import asyncio
    import threading
    import time

    import httpx

    from app.main import create_app
    from service.settings import Settings

    app = create_app(Settings(data_dir=tmp_path, auth="required", auth_failure_limit=3))
    app.state.services.db.create_all()
    keys = app.state.services.keys
    lookups, lock = [], threading.Lock()

    def slow_authenticate(token):
        with lock:
            lookups.append(token)
        time.sleep(0.05)  # a slow database: every request arrives before the first answer
        return None

    keys.authenticate = slow_authenticate

    async def burst():
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            return await asyncio.gather(*(c.get("/v1/jobs", headers=bearer("gcn_wrong")) for _ in range(40)))

    statuses = sorted(r.status_code for r in asyncio.run(burst()))
    assert len(lookups) == 3 and statuses == [401] * 3 + [429] * 37, (len(lookups), statuses)
