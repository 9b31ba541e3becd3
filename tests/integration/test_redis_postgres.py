"""End to end as deployed on GPU machines: the API (uvicorn, real HTTP), a Celery worker
subprocess on Redis, and the job table on PostgreSQL. Learning is tiny so that it takes seconds
on a CPU."""

from __future__ import annotations

import io
import os
import signal
import time

import pytest
from PIL import Image

from gcn_e2e import redis_stack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory, redis_url, postgres_url):
    from service.db import Database
    from service.jobs import JobStore

    with redis_stack(tmp_path_factory.mktemp("e2e"), postgres_url, redis_url, "e2e") as s:
        yield s["api"], JobStore(Database(postgres_url)), s["worker"], s["folder"] / "worker.log"


def test_learn_then_sample_two_96px_pngs(stack, brick64):
    api, _, _, _ = stack
    dataset = api.upload(brick64)
    job = api.wait(api.learn(dataset["id"])["id"])
    assert job["status"] == "succeeded", job
    assert job["progress"] == {"step": 30, "total": 30, "fraction": 1.0}
    assert job["links"]["model"] == f"/v1/models/{job['model_id']}"
    model = api.http.get(job["links"]["model"]).json()
    assert model["status"] == "ready" and model["iterations"] == 30 and len(model["learning_curve"]) == 30
    preview = api.http.get(job["links"]["preview"])
    assert preview.status_code == 200 and Image.open(io.BytesIO(preview.content)).mode == "RGB"

    weights = api.http.get(model["links"]["weights"])
    assert weights.status_code == 200 and weights.content[8:9] == b"{"  # safetensors: u64 length, JSON header

    r = api.http.post(model["links"]["samples"], json={"n": 2, "size": 96, "steps": 20, "seed": 7})
    assert r.status_code == 202
    sample = api.wait(r.json()["id"])
    assert sample["status"] == "succeeded", sample
    assert len(sample["links"]["images"]) == 2
    for url in sample["links"]["images"]:
        png = api.http.get(url)
        assert png.headers["content-type"] == "image/png"
        im = Image.open(io.BytesIO(png.content))
        im.load()
        assert im.size == (96, 96) and im.format == "PNG"
    assert api.http.get(sample["links"]["grid"]).status_code == 200

    buf = io.BytesIO()
    brick64.save(buf, format="JPEG")
    r = api.http.post(model["links"]["reconstructions"], files={"image": ("b.jpg", buf.getvalue(), "image/jpeg")})
    recon = api.wait(r.json()["id"])
    assert recon["status"] == "succeeded" and len(recon["links"]["images"]) == 2

    r = api.http.post(model["links"]["inpaintings"], files={"image": ("b.jpg", buf.getvalue(), "image/jpeg")},
                      data={"drop": "0.5", "steps": "10", "seed": "2"})
    assert r.status_code == 202, r.text
    inpainting = api.wait(r.json()["id"])
    assert inpainting["status"] == "succeeded", inpainting
    assert inpainting["result"]["order"] == ["observed", "recovered", "original"]
    assert 0.4 < inpainting["result"]["missing_fraction"] < 0.6
    errors = inpainting["result"]["errors"]
    assert errors["rmse"] > 0 and set(errors["baselines"]) == {"mean", "blur"}
    recovered = Image.open(io.BytesIO(api.http.get(inpainting["links"]["images"][1]).content))
    assert recovered.size == (32, 32)


def test_events_stream_progress_until_the_end(stack, brick64):
    api, _, _, _ = stack
    dataset = api.upload(brick64)
    job = api.learn(dataset["id"], iterations=80)
    events = api.events(job["id"])
    kinds = [e for e, _ in events]
    assert kinds[-1] == "end" and kinds.count("end") == 1 and kinds.count("job") >= 3
    steps = [d["progress"]["step"] for e, d in events if e == "job"]
    assert steps == sorted(steps) and len(set(steps)) >= 3, steps
    assert any(d["status"] == "running" and 0 < d["progress"]["step"] < 80 for _, d in events)
    assert any(d["metrics"].get("gap") is not None for _, d in events)
    assert events[-1][1]["status"] == "succeeded"


def test_cancel_midway_ends_canceled_within_seconds(stack, brick64):
    api, _, _, _ = stack
    dataset = api.upload(brick64)
    job = api.learn(dataset["id"], iterations=100000)
    api.wait(job["id"], until=lambda j: j["progress"]["step"] >= 3, timeout=60)
    asked = time.monotonic()
    r = api.http.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 202 and r.json()["cancel_requested"]
    done = api.wait(job["id"], timeout=30)
    assert done["status"] == "canceled" and time.monotonic() - asked < 10
    assert api.http.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "canceled"  # idempotent
    gone = api.http.get(f"/v1/models/{job['model_id']}")
    assert gone.status_code == 409 and gone.json()["job_status"] == "canceled"


def test_a_killed_worker_process_costs_a_checkpoint_not_the_job(stack, brick64):
    """SIGKILL the process running a learning job: Celery redelivers it (acks late, reject on
    worker lost), the new process takes the job over and resumes from the last checkpoint."""
    api, store, _, log = stack
    dataset = api.upload(brick64)
    job = api.learn(dataset["id"], iterations=200)
    api.wait(job["id"], until=lambda j: j["progress"]["step"] >= 12, timeout=90)
    owner = store.get(job["id"]).owner
    os.kill(int(owner.rpartition(":")[2]), signal.SIGKILL)
    done = api.wait(job["id"], timeout=180)
    assert done["status"] == "succeeded", (done, log.read_text()[-3000:])
    assert done["attempts"] == 2 and done["result"]["resumed_from"] >= 10
    assert done["result"]["iterations"] == 200
