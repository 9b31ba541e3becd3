"""bench.scaling: the models steps it times are the way the pipeline samples that shape once
models.cpu_split has decided, and the table says which way that was."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench import report, scaling
from bench.common import ROOT


def point(*args: str) -> dict:
    """One scaling point in its own process, as ``bench.scaling.run`` starts it (under the
    default split policy, whatever GCN_CPU_SPLIT says here)."""
    done = subprocess.run([sys.executable, "-m", "bench.scaling", "--one", *args], cwd=ROOT,
                          env={**os.environ, "GCN_CPU_SPLIT": "auto"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_on_two_threads_the_split_trial_is_over_before_the_timed_steps():
    p = point("models", "texture-fast", "64", "4", "2", "cpu", "2")
    assert p["cpu_split"]["split"] is not None, p["cpu_split"]  # decided: the timed steps ran that way
    assert p["cpu_split"]["loops"] >= 1


def test_a_point_times_loops_of_its_steps_as_a_job_samples_not_one_step_loops():
    p = point("models", "texture-fast", "32", "1", "3", "cpu", "1")
    assert p["loop_steps"] == 3 and len(p["step_s_all"]) == scaling.LOOPS
    assert p["step_s"] == sorted(p["step_s_all"])[scaling.LOOPS // 2]


def test_one_thread_has_nothing_to_split_and_the_reference_nothing_to_settle():
    assert point("models", "texture-fast", "32", "2", "1", "cpu", "1")["cpu_split"] == {"split": False, "loops": 0}
    assert "cpu_split" not in point("reference", "texture-fast", "32", "2", "1", "cpu", "2")


@pytest.mark.parametrize("way, shown", [(None, "-"),
                                        ({"split": False, "loops": 0}, "one pass"),
                                        ({"split": True, "loops": 0}, "split"),
                                        ({"split": True, "loops": 13}, "split (13 loops of trial)"),
                                        ({"split": None, "loops": 40}, "undecided (40 loops of trial)")])
def test_the_table_names_the_way_each_point_ran(way, shown):
    models = {"impl": "models", "preset": "texture", "size": 64, "chains": 1, "step_s": 0.01, "gflops": 5.0,
              "peak_mib": 10.0, **({"cpu_split": way} if way else {})}
    reference = {**models, "impl": "reference", "step_s": 0.02}
    reference.pop("cpu_split", None)
    lines = report.scaling_tables({"threads": 2, "points": [models, reference]})
    row = next(line for line in lines if line.startswith("| texture | 64 |"))
    assert row.endswith(f"| 2.00x | 5 | 10 | 10 | {shown} |")


def test_the_table_says_how_its_steps_were_timed():
    old = {"impl": "models", "preset": "texture", "size": 64, "chains": 1, "step_s": 0.01, "gflops": 5.0,
           "peak_mib": 10.0, "step_s_all": [0.01] * 4}
    new = [{**old, "impl": impl, "size": size, "loop_steps": steps, "step_s_all": [0.01] * 3}
           for impl in ("models", "reference") for size, steps in ((64, 4), (512, 2))]
    assert "the median of one-step loops" in report.scaling_tables({"threads": 1, "points": [old]})[0]
    assert "the median over 3 timed loops of 2 or 4 steps" in report.scaling_tables({"threads": 1, "points": new})[0]


def test_each_point_settles_the_allocator_as_the_parent_does_unless_told_not_to():
    assert point("reference", "texture-fast", "32", "1", "1", "cpu", "1")["allocator"].startswith("glibc, mmap threshold")
    done = subprocess.run([sys.executable, "-m", "bench.scaling", "--one", "reference", "texture-fast", "32", "1",
                           "1", "cpu", "1"], cwd=ROOT, env={**os.environ, "GCN_BENCH_MALLOC": "default"},
                          capture_output=True, text=True, timeout=300)
    assert json.loads(done.stdout.strip().splitlines()[-1])["allocator"] == "glibc's own (GCN_BENCH_MALLOC=default)"
