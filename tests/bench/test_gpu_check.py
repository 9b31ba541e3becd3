"""bench/gpu_check.sh, the one prepared run for a lent GPU machine: where torch sees no GPU it
says so in one line and exits 2 before any step, having recorded the machine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the script runs its whole check (minutes)")
def test_without_a_gpu_the_check_stops_at_once_and_says_why(tmp_path):
    run = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh")], capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "OUT": str(tmp_path), "PYTHON": sys.executable})
    assert run.returncode == 2, run.stdout + run.stderr
    assert "gpu_check: torch sees no CUDA device here; nothing to measure" in run.stdout
    env = (tmp_path / "env.txt").read_text()
    assert torch.__version__ in env and "nothing to measure" in env
    assert sorted(p.name for p in tmp_path.iterdir()) == ["env.txt"]  # no test or bench step ran
