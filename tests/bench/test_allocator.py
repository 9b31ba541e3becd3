"""bench.common.settle_allocator: the reference loop is timed as a warm process runs it, with no
page faults from glibc's low starting thresholds, whatever ran before it in the process."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from bench import report
from bench.common import ROOT

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's thresholds are glibc's")

# a fresh process: the allocator as the bench leaves it, then the reference's minor page faults a step
FAULTS_A_STEP = """
import resource, torch
from bench import common
print(common.settle_allocator())
torch.set_num_threads(1)
from bench.langevin import _model
from bench.reference import ReferenceNet, langevin
model = _model("texture-fast", 64, 4, torch.device("cpu"))
ref, p = ReferenceNet(model.net), model.preset
x0 = torch.randn(4, 3, 64, 64) * 20
langevin(ref, x0, 40, p.step_size, p.sigma)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
langevin(ref, x0, 40, p.step_size, p.sigma)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 40)
"""


def faults_a_step(malloc: str) -> tuple[str, float]:
    done = subprocess.run([sys.executable, "-c", FAULTS_A_STEP], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "GCN_BENCH_MALLOC": malloc}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    said, faults = done.stdout.strip().splitlines()[-2:]
    return said, float(faults)


def test_settled_the_reference_pays_no_page_faults_a_step_and_left_to_glibc_it_does():
    said, settled = faults_a_step("settled")
    assert said == "glibc, mmap threshold 32 MiB, trim threshold 64 MiB"
    assert settled < 20, settled  # 0 once the heap has grown to its size (40 steps); glibc alone ~360
    said, default = faults_a_step("default")
    assert said == "glibc's own (GCN_BENCH_MALLOC=default)"
    # the reason the bench settles it (313-364 a step on the machines of the 29th)
    assert default > 100, default


def test_the_report_says_how_malloc_ran_and_older_runs_render_as_before():
    m = {"cpu": "x", "cores": 2, "capability": "AVX512", "torch": "2.13.0", "python": "3.11.7",
         "load_avg": [1.0, 1.0, 1.0], "date": "2026-11-29 14:00:00 UTC"}
    assert "malloc" not in report.machine_line(m)
    line = report.machine_line({**m, "allocator": "glibc, mmap threshold 32 MiB, trim threshold 64 MiB"})
    assert line.endswith("; malloc: glibc, mmap threshold 32 MiB, trim threshold 64 MiB")
