"""The API process never loads torch: it checks uploads, masks and presets with torch-free
modules (models.images, models.presets; models.precision for settings), so it starts in half the time and about a third of the
memory of a process that loads torch (docs/deploy.md)."""

from __future__ import annotations

import subprocess
import sys

PROBE = r"""
import io, sys
from fastapi.testclient import TestClient
from PIL import Image
from app.main import create_app
from service.settings import Settings
import service.cli  # `gcn serve` runs the API in the command line's process

settings = Settings(data_dir=sys.argv[1], auth="off")
with TestClient(create_app(settings)) as client:
    assert client.get("/healthz").status_code == 200
    assert client.get("/v1/presets").status_code == 200
    png = io.BytesIO()
    Image.new("RGB", (40, 40), (120, 60, 30)).save(png, "PNG")
    upload = client.post("/v1/datasets", data={"kind": "texture"}, files={"images": ("a.png", png.getvalue())})
    assert upload.status_code == 201, upload.text  # decoded and checked in this process
print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
"""


def test_the_api_process_does_not_import_torch(tmp_path):
    out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
