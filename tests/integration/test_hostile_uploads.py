"""Hostile uploads against a real `gcn serve` bound to 0.0.0.0 (so API keys are required): every
file of a generated corpus of 50+ malformed, hostile and awkward-but-valid images gets the right
answer, the server answers a health check after each, and its memory never grows by more than a
little (bombs are refused from their headers, never decoded)."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
from PIL import Image

from gcn_e2e import Serve
from hostile import MAX_FILE, MAX_PIXELS, corpus

pytestmark = pytest.mark.slow


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from service.auth import KeyStore
    from service.db import Database

    folder = tmp_path_factory.mktemp("hostile")
    db = Database(f"sqlite:///{folder / 'data' / 'jobs.db'}")
    db.create_all()
    token = KeyStore(db).create(name="corpus").token
    db.dispose()
    serve = Serve(folder / "data", folder / "serve.log", "--host", "0.0.0.0", "--workers", "0",
                  GCN_MAX_IMAGE_PIXELS=str(MAX_PIXELS), GCN_MAX_UPLOAD_BYTES=str(MAX_FILE),
                  GCN_MAX_REQUEST_BYTES=str(4 * MAX_FILE))
    try:
        yield serve, httpx.Client(base_url=serve.url, timeout=30, headers={"Authorization": f"Bearer {token}"})
    finally:
        serve.kill()


def test_a_non_loopback_serve_requires_keys(server):
    serve, _ = server
    r = httpx.get(f"{serve.url}/v1/jobs", timeout=10)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert "API keys required" in serve.log.read_text()


def test_every_file_of_the_corpus_gets_the_right_answer_and_the_server_keeps_serving(server, brick64):
    serve, http = server
    cases = corpus(brick64)
    assert len(cases) >= 30
    rss_before = peak_rss_mb(serve.proc.pid)
    wrong = []
    for case in cases:
        r = http.post("/v1/datasets", files=[("images", (case.filename, case.data, case.content_type))],
                      data={"kind": "texture"})
        if r.status_code not in case.expect:
            wrong.append((case.name, r.status_code, r.text[:200]))
        elif r.status_code != 201:
            body = r.json()
            assert r.headers["content-type"].startswith("application/problem+json") and body["detail"], case.name
            assert body["errors"][0]["field"] == "images", case.name
        else:
            stored = http.get(r.json()["links"]["images"][0])
            assert stored.status_code == 200 and stored.content.startswith(b"\x89PNG"), case.name
            assert b"PK\x03\x04" not in stored.content  # a polyglot's payload does not survive re-encoding
            size = Image.open(io.BytesIO(stored.content)).size
            assert size == (32, 64) if "exif" in case.name else size == (64, 64), (case.name, size)
        health = httpx.get(f"{serve.url}/healthz", timeout=5)
        assert health.status_code == 200, f"server down after {case.name!r}"
        assert serve.proc.poll() is None
    assert not wrong, wrong
    grew = peak_rss_mb(serve.proc.pid) - rss_before
    assert grew < 300, f"peak memory grew by {grew:.0f} MiB"


def test_request_limits(server, brick64):
    serve, http = server
    import numpy as np

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (780, 780, 3), dtype=np.uint8)).save(buf, format="PNG")
    assert 1.5 * 2**20 < len(buf.getvalue()) < MAX_FILE  # each file is under the per-file limit
    files = [("images", (f"{k}.png", buf.getvalue(), "image/png")) for k in range(5)]  # over 8 MiB in all
    r = http.post("/v1/datasets", files=files, data={"kind": "texture"})
    assert r.status_code == 413 and r.headers["content-type"].startswith("application/problem+json")
    assert httpx.get(f"{serve.url}/healthz", timeout=5).status_code == 200
