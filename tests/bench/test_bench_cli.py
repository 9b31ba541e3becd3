"""``python -m bench``'s arguments: a device, thread count or time cap it cannot use is a one-line
usage error (exit 2) before anything runs, not a traceback from deep in a section."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from bench import __main__ as bench_main
from bench.common import ROOT


@pytest.mark.parametrize("args, says", [
    (["--device", "tpu"], "--device tpu: choose cpu, cuda, cuda:N or auto"),
    (["--device", "cuda:x"], "--device cuda:x: choose cpu, cuda, cuda:N or auto"),
    (["--threads", "0"], "--threads 0: give thread counts of at least 1"),
    (["--threads", "a,b"], "--threads a,b: give thread counts of at least 1"),
    (["--quality-cap", "-5"], "--quality-cap -5: give a number of seconds above 0"),
    (["--only", "speed"], "unknown section(s): speed"),
])
def test_an_argument_it_cannot_use_is_a_usage_error(args, says, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(bench_main.common, "OUT", tmp_path)
    with pytest.raises(SystemExit) as exit_:
        bench_main.main([*args, "--no-docs"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing ran, nothing written


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU, --device cuda runs")
def test_cuda_without_a_gpu_says_so_in_one_line():
    run = subprocess.run([sys.executable, "-m", "bench", "--device", "cuda", "--only", "langevin", "--no-docs"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == (
        f"python -m bench: error: --device cuda: torch {torch.__version__} sees no CUDA device here")
    assert "Traceback" not in run.stderr


def test_the_devices_it_takes():
    assert bench_main._device(None, "cpu") == torch.device("cpu")
    assert bench_main._device(None, "auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert bench_main._thread_counts(None, "1,2") == [1, 2]
