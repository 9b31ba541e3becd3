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


FAKE_PYTHON = """#!/bin/bash
# Stands in for a GPU machine's python3: CUDA "available", the tests and the bench exit as told.
# MISSING names a module that fails to import, OTHER_TORCH=1 makes torch another release than the
# pinned one, TESTS_SLEEP holds the tests past TEST_LIMIT.
case "$1 $2" in
  "-m pytest") sleep "${TESTS_SLEEP:-0}"; echo "4 passed"; exit "${TESTS_RC:-0}" ;;
  "-m bench") echo '{}' > "$GCN_BENCH_OUT/cuda-fake.json"; echo "bench ran: $*"; exit "${BENCH_RC:-0}" ;;
  "-c import $MISSING") exit 1 ;;
  "-c "*2.13.0*) exit "${OTHER_TORCH:-0}" ;;
  "-c "*) echo "3.11 fake-torch cuda 12.8 Fake GPU"; exit 0 ;;
esac
exit 3
"""


def _check(tmp_path, **env) -> tuple[subprocess.CompletedProcess, Path]:
    """gpu_check.sh with the stand-in python, its results under ``tmp_path/out``."""
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    out = tmp_path / "out"
    run = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh")], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "OUT": str(out), "PYTHON": str(fake), **env})
    return run, out


@pytest.mark.parametrize("tests_rc, bench_rc, want", [(0, 0, 0), (1, 0, 1), (0, 1, 1), (0, 124, 1)])
def test_the_checks_exit_status_says_whether_every_step_passed(tmp_path, tests_rc, bench_rc, want):
    """With CUDA (faked), every step runs; a failed test, a failed bench section (bench exits 1)
    or a step cut off by its limit (124) makes the script's exit status 1; the run's JSON is kept."""
    run, out = _check(tmp_path, TESTS_RC=str(tests_rc), BENCH_RC=str(bench_rc))
    assert run.returncode == want, run.stdout + run.stderr
    assert "4 passed" in (out / "cuda-tests.txt").read_text() and "bench ran" in (out / "bench.log").read_text()
    assert (out / "cuda-fake.json").exists()
    # the GPU target's section first, time to quality (the hardest to foresee) last
    assert "--device cuda --quick --only langevin,scaling,quality --no-docs" in (out / "bench.log").read_text()


def test_a_missing_module_another_torch_and_a_step_past_its_limit_are_recorded(tmp_path):
    run, out = _check(tmp_path, MISSING="skimage", OTHER_TORCH="1", TESTS_SLEEP="5", TEST_LIMIT="1")
    assert run.returncode == 1, run.stdout + run.stderr
    env = (out / "env.txt").read_text()
    assert "python module 'skimage' is missing here" in env and "module 'numpy'" not in env
    assert "the project pins torch 2.13.0" in env
    assert "4 passed" not in (out / "cuda-tests.txt").read_text()  # cut off at 1 s
    assert "bench ran" in (out / "bench.log").read_text()  # the next step still ran
    run, out = _check(tmp_path)
    assert run.returncode == 0 and "missing" not in (out / "env.txt").read_text()
    assert "pins torch" not in (out / "env.txt").read_text()
