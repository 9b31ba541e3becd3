"""After results and uploads expire (GCN_RESULT_TTL / GCN_UPLOAD_TTL) and cleanup runs, the API
answers their owner 410 Gone for them (with when), and anyone else 404 as before."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from app.main import create_app
from service.artifacts import keys
from service.cleanup import cleanup
from service.db import Dataset, Job, utcnow
from service.settings import Settings


def dataset_and_canceled_learning(c: TestClient, brick64) -> tuple[io.BytesIO, dict, dict]:
    """(the PNG uploaded, its dataset, a learning job on it, canceled, with a preview file)."""
    buf = io.BytesIO()
    brick64.save(buf, format="PNG")
    d = c.post("/v1/datasets", files=[("images", ("b.png", buf.getvalue(), "image/png"))],
               data={"kind": "texture"}).json()
    job = c.post("/v1/models", json={"dataset_id": d["id"], "overrides": {"iterations": 5, "image_size": 32}}).json()
    c.post(f"/v1/jobs/{job['id']}/cancel")
    c.app.state.services.artifacts.put(keys.job_preview(job["id"]), buf.getvalue())
    return buf, d, job


def test_expired_results_and_uploads_answer_410(tmp_path, brick64):
    settings = Settings(data_dir=tmp_path, auth="off", result_ttl=3600, upload_ttl=3600)
    with TestClient(create_app(settings)) as c:
        services = c.app.state.services
        buf, d, job = dataset_and_canceled_learning(c, brick64)
        assert c.get(f"/v1/jobs/{job['id']}/preview.png").status_code == 200
        old = utcnow() - timedelta(hours=2)
        with services.db.session() as s:
            s.execute(update(Job).where(Job.id == job["id"]).values(finished_at=old))
            s.execute(update(Dataset).where(Dataset.id == d["id"]).values(created_at=old))
            s.commit()
        report = cleanup(settings, services.db, services.artifacts)
        assert report.jobs == [job["id"]] and report.datasets == [d["id"]]
        for url in (f"/v1/jobs/{job['id']}", f"/v1/jobs/{job['id']}/preview.png", f"/v1/datasets/{d['id']}",
                    f"/v1/datasets/{d['id']}/images/0.png"):
            r = c.get(url)
            assert r.status_code == 410 and r.headers["content-type"].startswith("application/problem+json"), url
            body = r.json()
            assert body["type"] == "/problems/gone" and "expired and was removed at" in body["detail"]
            assert body["removed_at"].endswith("Z"), body
        assert c.get(f"/v1/jobs/{'0' * 32}").status_code == 404  # never existed: still 404
        assert c.get("/v1/jobs").json()["items"] == []
        r = c.post("/v1/models", json={"dataset_id": d["id"]})
        assert r.status_code == 422 and "expired and was removed at" in r.text


def test_only_the_owner_learns_that_something_expired(keyed_client, keys, brick64):
    """Key a's expired dataset, model and job: 410 for a (and the admin), 404 for key b, exactly
    as b got before they expired; a sampling request on the expired model is 410 too."""
    from service.db import TrainedModel
    from service.jobs import new_id

    c, services = keyed_client, keyed_client.app.state.services
    a, b, admin = ({"Authorization": f"Bearer {keys[k]}"} for k in ("a", "b", "admin"))
    buf = io.BytesIO()
    brick64.save(buf, format="PNG")
    d = c.post("/v1/datasets", files=[("images", ("b.png", buf.getvalue(), "image/png"))], data={"kind": "texture"},
               headers=a).json()
    m = TrainedModel(id=new_id(), dataset_id=d["id"], job_id=new_id(), preset="texture-fast", kind="texture",
                     learner="short_run", image_size=32, chain_size=None, iterations=1, config={"sample_steps": 40},
                     curve=[], api_key_id=keys["a_id"])
    services.store.add(m)
    job = c.post(f"/v1/models/{m.id}/samples", json={"n": 1}, headers=a).json()
    c.post(f"/v1/jobs/{job['id']}/cancel", headers=a)
    urls = (f"/v1/jobs/{job['id']}", f"/v1/datasets/{d['id']}", f"/v1/models/{m.id}", f"/v1/models/{m.id}/weights")
    assert [c.get(u, headers=b).status_code for u in urls] == [404] * 4
    old = utcnow() - timedelta(hours=2)
    with services.db.session() as s:
        s.execute(update(Job).where(Job.id == job["id"]).values(finished_at=old))
        s.execute(update(Dataset).where(Dataset.id == d["id"]).values(created_at=old))
        s.execute(update(TrainedModel).where(TrainedModel.id == m.id).values(created_at=old))
        s.commit()
    settings = services.settings.model_copy(update={"result_ttl": 3600, "upload_ttl": 3600})
    report = cleanup(settings, services.db, services.artifacts)
    assert report.jobs == [job["id"]] and report.models == [m.id] and report.datasets == [d["id"]]
    assert [c.get(u, headers=a).status_code for u in urls] == [410] * 4
    assert [c.get(u, headers=admin).status_code for u in urls] == [410] * 4
    assert [c.get(u, headers=b).status_code for u in urls] == [404] * 4
    r = c.post(f"/v1/models/{m.id}/samples", json={"n": 1}, headers=a)
    assert r.status_code == 410 and r.json()["type"] == "/problems/gone"
    assert c.post(f"/v1/models/{m.id}/samples", json={"n": 1}, headers=b).status_code == 404


@pytest.mark.parametrize("what", ["dataset image", "model weights", "job image", "job grid", "job preview"])
def test_a_file_removed_after_its_row_was_read_answers_410_not_500(tmp_path, brick64, monkeypatch, what):
    """Cleanup removes rows (leaving tombstones), then files. A request that read its row just
    before gets the 410 the tombstone gives, never a 500 from a file that vanished before the
    answer was sent. The race forced: cleanup runs when the route asks for the file's path."""
    from service.db import TrainedModel
    from service.jobs import new_id

    settings = Settings(data_dir=tmp_path, auth="off", result_ttl=3600, upload_ttl=3600)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        services = c.app.state.services
        buf, d, learn = dataset_and_canceled_learning(c, brick64)
        m = TrainedModel(id=new_id(), dataset_id=d["id"], job_id=learn["id"], preset="texture-fast", kind="texture",
                         learner="short_run", image_size=32, chain_size=None, iterations=1,
                         config={"sample_steps": 40}, curve=[], api_key_id=None)
        services.store.add(m)
        services.artifacts.put(keys.model_weights(m.id), b"weights")
        sample = c.post(f"/v1/models/{m.id}/samples", json={"n": 1}).json()
        c.post(f"/v1/jobs/{sample['id']}/cancel")
        services.artifacts.put(keys.job_grid(sample["id"]), buf.getvalue())
        services.artifacts.put(keys.job_image(sample["id"], 0), buf.getvalue())
        old = utcnow() - timedelta(hours=2)
        with services.db.session() as s:
            s.execute(update(Job).values(finished_at=old))
            s.execute(update(Job).where(Job.id == sample["id"]).values(status="succeeded"))
            s.execute(update(Dataset).values(created_at=old))
            s.execute(update(TrainedModel).values(created_at=old))
            s.commit()
        url = {"dataset image": f"/v1/datasets/{d['id']}/images/0.png", "model weights": f"/v1/models/{m.id}/weights",
               "job image": f"/v1/jobs/{sample['id']}/images/0.png", "job grid": f"/v1/jobs/{sample['id']}/grid.png",
               "job preview": f"/v1/jobs/{learn['id']}/preview.png"}[what]
        first = c.get(url)
        assert first.status_code == 200 and first.content in (buf.getvalue(), b"weights")
        assert first.headers["content-length"] == str(len(first.content))
        real_path, ran = services.artifacts.path, []

        def path_after_cleanup(key):
            if not ran:
                ran.append("running")  # cleanup itself asks for paths
                ran[0] = cleanup(settings, services.db, services.artifacts)
            return real_path(key)

        monkeypatch.setattr(services.artifacts, "path", path_after_cleanup)
        r = c.get(url)
        assert ran and ran[0].datasets == [d["id"]] and ran[0].models == [m.id], ran
        assert sorted(ran[0].jobs) == sorted([learn["id"], sample["id"]]), ran
        assert r.status_code == 410 and r.headers["content-type"].startswith("application/problem+json"), r.text
        assert r.json()["type"] == "/problems/gone"
