"""``python -m bench.precision_ab``: bad arguments are one-line errors with exit 2, and its table
says what the timed sampler kept, from a real trial."""

from __future__ import annotations

import pytest
import torch

from bench import precision_ab
from models import cpu_split


@pytest.mark.parametrize("argv, message", [
    (["--rounds", "0"], "--rounds must be 1 or more"),
    (["--threads", "0"], "each count must be 1 or more"),
    (["--threads", "two"], "are not comma-separated counts"),
    (["--cases", "texture224"], "is not PRESET@SIZExCHAINS"),
])
def test_precision_ab_refuses_bad_arguments_in_one_line(usage_error, argv, message):
    assert message in usage_error(precision_ab.main, argv, "python -m bench.precision_ab")


@pytest.mark.parametrize("amp_margin, kept", [(1e-9, "fp32, one pass"), (1e9, "bf16, one pass")])
def test_precision_ab_reports_what_the_trial_kept(monkeypatch, capsys, amp_margin, kept):
    monkeypatch.setattr(cpu_split, "MIN_FLOPS", 0)  # a tiny net, timed all the same
    monkeypatch.setattr(cpu_split, "MARGIN", 1e-9)  # one pass always
    monkeypatch.setattr(cpu_split, "AMP_MARGIN", amp_margin)
    monkeypatch.setattr(cpu_split, "_policy", "auto")  # whatever GCN_CPU_SPLIT says here
    threads = torch.get_num_threads()
    assert precision_ab.main(["--threads", "2", "--rounds", "1", "--cases", "texture-fast@32x2"]) == 0
    assert torch.get_num_threads() == threads
    row = capsys.readouterr().out.strip().splitlines()[-1].split("|")
    assert row[1].strip() == "texture-fast@32 x2" and row[2].strip() == "2"
    assert all(float(row[i]) > 0 for i in (4, 5, 6))
    assert row[7].strip() == kept and row[8].strip().startswith("2 loops")  # 60 trial steps in loops of 40
