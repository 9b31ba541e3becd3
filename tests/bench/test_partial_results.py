"""What a bench run shows when part of it fails (as the CUDA-graph path did on a torch release
that takes no weak references to generators): the rest of the figures, what was left out and
why, and an exit status of 1 so that a one-shot GPU check says it is incomplete."""

from __future__ import annotations

import json

import pytest

import bench.__main__ as bench_main
from bench import common, langevin, report


def _entry(**extra) -> dict:
    peak = common._peak_of({"probes": {"mm1024": {"gflops_best": 100.0, "gflops_median": 90.0}}})
    return {"threads": 1, "peak": peak, "cases": [], "learning": [], "load_avg_after": [0.5], **extra}


def test_the_graph_check_and_the_stale_graph_scale_are_reported_apart():
    entry = _entry(graph_vs_eager_rel_max={"first call": 0.0, "cached graph": 0.0, "after a weight update": 2e-7},
                   stale_graph_rel_max=1.3e-2)
    text = "\n".join(report.langevin_tables({"by_threads": [entry]}))
    line = next(l for l in text.splitlines() if l.startswith("CUDA graph against eager"))
    assert "after a weight update: 2.0e-07" in line and "1.3e-02" not in line
    assert "weights before the update would differ by 1.3e-02" in text


def test_a_failed_variant_and_a_failed_graph_check_are_named():
    entry = _entry(graph_check_error="Traceback ...\nTypeError: cannot create weak reference to 'Generator' object\n")
    entry["cases"].append({"name": "texture@224", "gflop_per_step": 1.0, "variants": {}, "agreement_rel_max": {},
                           "errors": {"models (bf16 + CUDA graph)": "TypeError: no weak reference"}})
    text = "\n".join(report.langevin_tables({"by_threads": [entry]}))
    assert "Left out, they failed: texture@224 models (bf16 + CUDA graph): TypeError: no weak reference." in text
    assert "CUDA graph check failed: `TypeError: cannot create weak reference to 'Generator' object`" in text


def test_targets_say_so_when_every_implementation_of_a_case_failed():
    entry = _entry()
    entry["cases"].append({"name": "texture@224", "variants": {"reference": {"speedup_vs_reference": None}},
                           "errors": {"models (bf16)": "RuntimeError: boom"}})
    rows = report.targets({"langevin": {"by_threads": [entry]}}, "cuda")
    assert "| texture@224, 1 thr | not measured: every implementation failed | not met |" in rows


@pytest.mark.parametrize("errors, rc", [(None, 0), (["1 thread(s), texture@224, models (bf16 + CUDA graph): boom"], 1)])
def test_the_exit_status_says_when_part_of_a_section_is_missing(monkeypatch, tmp_path, capsys, errors, rc):
    result = {"by_threads": [_entry()]}
    if errors:
        result["errors"] = errors
    monkeypatch.setattr(langevin, "run", lambda device, threads, quick: result)
    monkeypatch.setattr(common, "OUT", tmp_path)
    assert bench_main.main(["--only", "langevin", "--threads", "1", "--no-docs", "--device", "cpu"]) == rc
    (written,) = tmp_path.glob("*.json")
    assert json.loads(written.read_text())["langevin"] == result  # the figures are kept either way
    if errors:
        assert "parts left out: 1 thread(s), texture@224, models (bf16 + CUDA graph): boom" in capsys.readouterr().out
