"""End to end on a laptop: `gcn serve` runs the API and a real Celery worker subprocess with no
server at all (SQLite job table, kombu's SQLAlchemy transport on a SQLite file)."""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image

from gcn_e2e import SERVE_FAST, Api, Serve, alive, descendants, serving

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("embedded")
    with serving(folder) as server:
        yield server, Api(server.url), folder


def test_learn_sample_and_cancel_without_any_server(served, brick64):
    server, api, folder = served
    log = (folder / "serve.log").read_text()
    assert "job table sqlite:///" in log and "broker sqla+sqlite:///" in log  # no server needed
    dataset = api.upload(brick64)
    learn = api.learn(dataset["id"])
    events = api.events(learn["id"])
    assert events[-1][0] == "end" and events[-1][1]["status"] == "succeeded", events[-1]
    assert any(e == "job" and d["status"] == "running" for e, d in events)
    model_url = events[-1][1]["links"]["model"]

    sample = api.http.post(f"{model_url}/samples", json={"n": 2, "size": 96, "steps": 20}).json()
    done = api.wait(sample["id"])
    assert done["status"] == "succeeded", done
    for url in done["links"]["images"]:
        im = Image.open(io.BytesIO(api.http.get(url).content))
        assert im.size == (96, 96)
    assert (folder / "data" / "jobs" / sample["id"] / "grid.png").is_file()  # paths from ids only

    long = api.learn(dataset["id"], iterations=100000)
    api.wait(long["id"], until=lambda j: j["progress"]["step"] >= 3, timeout=60)
    asked = time.monotonic()
    api.http.post(f"/v1/jobs/{long['id']}/cancel")
    assert api.wait(long["id"], timeout=30)["status"] == "canceled" and time.monotonic() - asked < 10


def test_ctrl_c_stops_everything_and_a_restart_resumes_the_interrupted_job(served, brick64):
    server, api, folder = served
    dataset = api.upload(brick64)
    job = api.learn(dataset["id"], iterations=150)
    api.wait(job["id"], until=lambda j: j["progress"]["step"] >= 12, timeout=90)
    children = descendants(server.proc.pid)
    assert len(children) >= 2  # the worker and its job process

    started = time.monotonic()
    assert server.interrupt() == 0
    assert time.monotonic() - started < 45
    assert not [pid for pid in children if alive(pid)]
    assert "gcn: stopped" in (folder / "serve.log").read_text()

    again = Serve(folder / "data", folder / "serve.log", **SERVE_FAST)
    try:
        api2 = Api(again.url)
        done = api2.wait(job["id"], timeout=180)
        assert done["status"] == "succeeded", done
        assert done["attempts"] == 2 and done["result"]["resumed_from"] >= 10
        assert again.interrupt() == 0
    finally:
        if again.proc.poll() is None:
            again.kill()


def test_workers_0_runs_the_api_alone(tmp_path):
    server = Serve(tmp_path / "data", tmp_path / "serve.log", "--workers", "0")
    try:
        assert descendants(server.proc.pid) == set()
        assert Api(server.url).http.get("/healthz").json() == {"status": "ok"}
        assert server.interrupt(timeout=20) == 0
    finally:
        if server.proc.poll() is None:
            server.kill()
