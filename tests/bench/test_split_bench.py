"""bench's handling of models.cpu_split: ``python -m bench.split_ab`` refuses bad arguments with a
one-line error and exit 2, and the Langevin benchmark lets a trial finish before it times."""

from __future__ import annotations

import pytest
import torch

from bench import langevin, report, split_ab
from models import cpu_split


@pytest.mark.parametrize("argv, message", [
    (["--threads", "1"], "--threads must be 2 or more (it is 1"),
    (["--rounds", "0"], "--rounds must be 1 or more"),
    (["--threads", "2", "--cases", "texture224"], "is not PRESET@SIZExCHAINS"),
    (["--threads", "2", "--cases", "nope@64x4"], "unknown preset 'nope'"),
    (["--threads", "2", "--cases", "texture@64x0"], "1 chain or more"),
    (["--threads", "2", "--cases", "texture@8x4"], "too small for layer 1"),
    (["--threads", "2", "--cases", "texture-fast@9999x4"], "image_size must be between"),
])
def test_split_ab_refuses_bad_arguments_in_one_line(usage_error, argv, message):
    assert message in usage_error(split_ab.main, argv, "python -m bench.split_ab")


def test_split_ab_reads_cases_with_spaces():
    assert split_ab.parse_case(" texture-fast@64x4") == ("texture-fast", 64, 4)


def test_settle_split_runs_auto_variants_until_decided(monkeypatch):
    """Only the variants left to the policy are run, each until ``settled`` answers; one that
    times fp32 beside bf16 is run although a single bf16 chain cannot split."""
    W = cpu_split.Way
    answers = {(False, False): [None, None, W(False, True)], (True, False): [None, W(True, False)],
               (True, True): [None, None, None, W(False, False)]}  # by (amp, amp_if_faster)
    monkeypatch.setattr(cpu_split, "settled", lambda net, x, amp, amp_if_faster=False: answers[amp, amp_if_faster][0])
    monkeypatch.setattr(cpu_split, "splittable", lambda net, x, amp: not amp)
    monkeypatch.setattr(langevin, "variants", lambda device: {
        "timed": {"amp": True, "amp_if_faster": True}, "fp32": {"amp": False}, "bf16": {"amp": True},
        "fp32, one pass": {"amp": False, "cpu_split": "off"}})
    calls = []

    def runner(name, key):
        def run():
            calls.append(name)
            if len(answers[key]) > 1:
                answers[key].pop(0)
        return run

    fns = {"timed": runner("timed", (True, True)), "fp32": runner("fp32", (False, False)),
           "bf16": runner("bf16", (True, False)), "fp32, one pass": runner("off", (False, False))}
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        settled = langevin.settle_split(fns, None, torch.zeros(1, 3, 8, 8), budget_s=60)
    finally:
        torch.set_num_threads(torch_threads)
    assert calls == ["timed"] * 3 + ["fp32"] * 2  # bf16: one chain, not splittable, not timed
    assert settled["timed"] == {"policy": "auto", "loops": 3, "timed": True, "split": False, "amp": False}
    assert settled["fp32"]["split"] is True and settled["fp32"]["loops"] == 2
    assert "bf16" not in settled and "fp32, one pass" not in settled
    assert langevin.runs_bf16("timed", {"amp": True, "amp_if_faster": True}, settled) is False
    assert langevin.runs_bf16("bf16", {"amp": True}, settled) is True
    assert report._split_choice(settled["timed"]) == "fp32, one pass (3 loops of trial)"


def test_settle_split_passes_over_a_variant_left_out(monkeypatch):
    """A variant whose first calls failed is no longer in ``fns``: it is not settled (nor run)."""
    monkeypatch.setattr(cpu_split, "settled", lambda net, x, amp, amp_if_faster=False: None)
    monkeypatch.setattr(cpu_split, "splittable", lambda net, x, amp: True)
    monkeypatch.setattr(langevin, "variants", lambda device: {"fp32": {"amp": False}, "bf16": {"amp": True}})
    calls = []
    settled = langevin.settle_split({"bf16": lambda: calls.append("bf16")}, None, torch.zeros(1, 3, 8, 8), budget_s=60)
    assert set(settled) == {"bf16"} and calls == ["bf16"] * 100  # undecided: the cap of loops


def test_the_report_names_an_undecided_trial_and_a_forced_policy():
    assert report._split_choice({"policy": "auto", "loops": 100, "split": None}) == "undecided (100 loops of trial)"
    assert report._split_choice({"policy": "auto", "loops": 1, "split": True}) == "split (1 loop of trial)"
    assert report._split_choice({"policy": "off", "loops": 0, "split": False}) == "one pass (GCN_CPU_SPLIT=off)"


def test_split_ab_memory_comes_from_a_fresh_process_per_policy():
    """--memory starts a process per policy and reads its own peak (VmHWM), not one inherited
    from the parent: a parent that has just held a large tensor does not raise the figure."""
    big = torch.ones(160 * 2**20, dtype=torch.uint8)  # 160 MiB in this process
    big.fill_(1)
    mib = split_ab.peak_rss("texture-fast", 32, 2, False, "on", threads=2)
    del big
    own = int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM:")).split()[1]) // 1024
    assert 20 < mib and mib < own  # this process's peak includes the 160 MiB; the child's does not
