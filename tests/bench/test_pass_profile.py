"""``python -m bench.pass_profile``: a one-line usage error and exit 2 for what it cannot profile,
and on a small net a row for every meeting of ``models.channel_pass``'s threads, in its order,
with the caller's threads, policy and pool left as they were."""

from __future__ import annotations

import pytest
import torch

from bench import pass_profile
from models import cpu_split


@pytest.fixture
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("argv, message", [
    (["--threads", "1"], "--threads must be 2 or more (it is 1"),
    (["--threads", "2", "--rounds", "0"], "--rounds must be 1 or more"),
    (["--threads", "2", "--case", "texture224"], "case 'texture224' is not PRESET@SIZE"),
    (["--threads", "2", "--case", "texture@224x4"], "one chain only"),
    (["--threads", "2", "--case", "nope@64"], "case 'nope@64': unknown preset 'nope'"),
    (["--threads", "2", "--case", "texture@8"], "too small for layer 1"),
])
def test_refuses_what_it_cannot_profile_in_one_line(usage_error, argv, message):
    assert message in usage_error(pass_profile.main, argv, "python -m bench.pass_profile")


def test_profiles_every_meeting_in_the_pass_order_and_restores_the_caller(two_threads):
    cpu_split.set_policy("off")  # not GCN_CPU_SPLIT's value: given back as it was, not read again
    try:
        r = pass_profile.profile("texture-fast", 32, 2, rounds=2)
        assert cpu_split.get_policy() == "off"
    finally:
        cpu_split.set_policy(None)
    assert [row["phase"] for row in r["rows"]] == [
        "layer 1 forward", "layer 2 forward", "layer 2 input gradient", "layer 1 input gradient"]
    assert [row["convolution"] for row in r["rows"]] == [
        "3 -> 32, 7 x 7 stride 2", "32 -> 32, 5 x 5", "32 -> 32, 5 x 5", "3 -> 32, 7 x 7 stride 2"]
    for row in r["rows"]:
        assert len(row["shares_alone"]) == 2 and min(row["shares_alone"]) > 0 and row["concurrent"] > 0
    assert r["pass"] >= r["meetings"] > 0  # every pass holds its meetings
    assert min(r["pass_alone"], r["sampling_pass"], r["control"], r["control_alone"], r["update"], r["noise"]) > 0
    assert torch.get_num_threads() == 2
    assert not cpu_split._pool_lock.locked()
    text = pass_profile.table(r)
    assert text.count("\n| layer ") == 4 and "| control: 768 x 768 sgemm, one a thread |" in text


def test_the_command_prints_a_table(capsys, two_threads):
    assert pass_profile.main(["--case", " texture-fast@32 ", "--threads", "2", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "2 threads, texture-fast@32 float32" in out and "| layer 2 input gradient | 32 -> 32, 5 x 5 |" in out
    assert "The pass (" in out and "the noise draw" in out and "; the step, " in out


def test_a_net_it_does_not_cut_is_a_usage_error_and_other_failures_are_not(monkeypatch, capsys, two_threads):
    monkeypatch.setattr(pass_profile.channel_pass, "applies", lambda net, amp=False: False)
    with pytest.raises(SystemExit) as exit_:
        pass_profile.main(["--case", "texture-fast@32", "--threads", "2", "--rounds", "1"])
    assert exit_.value.code == 2 and "does not serve the texture-fast preset's net" in capsys.readouterr().err
    monkeypatch.undo()

    def broken(*args):
        raise ValueError("a bug inside the pass")

    monkeypatch.setattr(pass_profile.channel_pass, "score_and_grad", broken)
    with pytest.raises(ValueError, match="a bug inside the pass"):  # a traceback, not a usage line
        pass_profile.main(["--case", "texture-fast@32", "--threads", "2", "--rounds", "1"])
    assert torch.get_num_threads() == 2 and not cpu_split._pool_lock.locked()
