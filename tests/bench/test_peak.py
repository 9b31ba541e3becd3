"""bench's matmul peak is probed before and after the Langevin cases and the better of each probe
kept (``bench.common.best_peaks``): a probe that ran in a slow phase of a shared VM must not make
the cases' share of the peak look better than it is."""

from __future__ import annotations

import copy

import torch

from bench import common, langevin, report


def _scaled(peak: dict, factor: float) -> dict:
    """The same measurement as if the machine had run at ``factor`` times its speed then (under 1:
    a slow phase)."""
    slow = copy.deepcopy(peak)
    for probe in slow["probes"].values():
        probe["gflops_best"] *= factor
        probe["gflops_median"] *= factor
    return common._peak_of(slow)


def test_the_peak_is_the_better_moment_of_each_probe():
    before = common.matmul_peak(torch.device("cpu"), repeats=1)
    slow_before = _scaled(before, 0.5)
    merged = common.best_peaks(slow_before, before)
    assert merged["peak_gflops"] == before["peak_gflops"]
    assert merged["peak_gflops_before_after"] == [slow_before["peak_gflops"], before["peak_gflops"]]
    for name, probe in merged["probes"].items():
        assert probe["gflops_best"] == before["probes"][name]["gflops_best"]
    # each probe on its own: one faster before, another faster after
    after = copy.deepcopy(before)
    first, second = list(before["probes"])[:2]
    after["probes"][first]["gflops_best"] *= 2
    before2 = copy.deepcopy(before)
    before2["probes"][second]["gflops_best"] *= 3
    merged = common.best_peaks(common._peak_of(before2), common._peak_of(after))
    assert merged["probes"][first]["gflops_best"] == 2 * before["probes"][first]["gflops_best"]
    assert merged["probes"][second]["gflops_best"] == 3 * before["probes"][second]["gflops_best"]


def test_a_case_is_scored_against_the_stricter_peak_and_bf16_against_its_own():
    fp32 = common._peak_of({"probes": {"mm1024": {"gflops_best": 100.0, "gflops_median": 90.0}}})
    fp32["bf16"] = common._peak_of({"probes": {"mm1024": {"gflops_best": 400.0, "gflops_median": 380.0}}})
    faster = _scaled(fp32, 2.0)
    faster["bf16"] = _scaled(fp32["bf16"], 1.5)
    peaks = common.best_peaks(fp32, faster)
    row = {"gflops_best": 150.0, "gflops_median": 120.0, "peak_dtype": "fp32"}
    langevin.against_peak(row, fp32)
    assert row["peak_fraction_best"] == 1.5  # against the slow moment alone: 150 %
    langevin.against_peak(row, peaks)
    assert row["peak_fraction_best"] == 0.75 and row["peak_fraction_median"] == 0.6
    bf16_row = {"gflops_best": 300.0, "gflops_median": 300.0, "peak_dtype": "bf16"}
    langevin.against_peak(bf16_row, peaks)
    assert bf16_row["peak_fraction_best"] == 0.5  # of the bf16 peak, 600 after


def test_the_report_shows_both_moments_of_the_peak():
    fp32 = common._peak_of({"probes": {"mm1024": {"gflops_best": 100.0, "gflops_median": 90.0}}})
    entry = {"threads": 2, "peak": common.best_peaks(fp32, _scaled(fp32, 1.3)), "cases": [], "learning": [],
             "load_avg_after": [1.0]}
    text = "\n".join(report.langevin_tables({"by_threads": [entry]}))
    assert "probed before and after the cases (peaks 100 and 130); each probe's better figure: mm1024 130" in text
    entry["peak"] = fp32  # a run recorded before the second probe: rendered as it was
    assert "best of each probe: mm1024 100" in "\n".join(report.langevin_tables({"by_threads": [entry]}))


def test_the_langevin_section_scores_its_cases_against_the_peak_after_them_when_that_is_higher(monkeypatch):
    """``bench.langevin.run`` probes before and after the cases and re-scores every row: here the
    (faked) machine was slow at the first probe, so a row scored only against it would read 10x
    too high."""
    moments = iter([1.0, 10.0])  # the fp32 probe's GFLOP/s before the cases, then after (a bf16 probe reads 50)

    def fake_peak(device, repeats=5, dtype=torch.float32):
        g = next(moments) if dtype == torch.float32 else 50.0
        return common._peak_of({"probes": {"mm1024": {"gflops_best": g, "gflops_median": g}}})

    monkeypatch.setattr(common, "matmul_peak", fake_peak)
    monkeypatch.setattr(langevin, "cases", lambda device, quick: [
        {"name": "texture-fast@32", "preset": "texture-fast", "size": 32, "chains": 2, "steps": 4}])
    monkeypatch.setattr(langevin, "variants", lambda device: {"models (fp32)": {"amp": False}})
    threads = torch.get_num_threads()
    try:
        entry = langevin.run(torch.device("cpu"), [1], quick=True)["by_threads"][0]
    finally:
        torch.set_num_threads(threads)
    assert entry["peak"]["peak_gflops_before_after"] == [1.0, 10.0]
    for row in entry["cases"][0]["variants"].values():
        assert row["peak_fraction_best"] == row["gflops_best"] / 10.0
