"""After results and uploads expire (GCN_RESULT_TTL / GCN_UPLOAD_TTL) and cleanup runs, the API
answers 404 for them."""

from __future__ import annotations

import io
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import update

from app.main import create_app
from service.artifacts import keys
from service.cleanup import cleanup
from service.db import Dataset, Job, utcnow
from service.settings import Settings


def test_expired_results_and_uploads_answer_404(tmp_path, brick64):
    settings = Settings(data_dir=tmp_path, auth="off", result_ttl=3600, upload_ttl=3600)
    buf = io.BytesIO()
    brick64.save(buf, format="PNG")
    with TestClient(create_app(settings)) as c:
        services = c.app.state.services
        d = c.post("/v1/datasets", files=[("images", ("b.png", buf.getvalue(), "image/png"))],
                   data={"kind": "texture"}).json()
        job = c.post("/v1/models", json={"dataset_id": d["id"], "overrides": {"iterations": 5, "image_size": 32}}).json()
        c.post(f"/v1/jobs/{job['id']}/cancel")
        services.artifacts.put(keys.job_preview(job["id"]), buf.getvalue())
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
            assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json"), url
        assert c.get("/v1/jobs").json()["items"] == []
