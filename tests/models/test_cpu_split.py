"""models.cpu_split: a batch of Langevin chains split across CPU threads gives each chain the
steps it gets in one pass, decides from the loop's own steps, and never costs a job or another
thread its thread count."""

from __future__ import annotations

import subprocess
import sys
import threading

import pydantic
import pytest
import torch

from models import EnergyNet, LangevinSampler, cpu_split, get_preset
from service.settings import Settings

LAYERS = [[8, 5, 2, 2], [8, 3, 1, 1]]


pytestmark = pytest.mark.usefixtures("two_threads")  # tests/models/conftest.py


@pytest.fixture
def shares(monkeypatch):
    """(thread name, chains, torch threads) of every share computed."""
    calls = []
    real = cpu_split._share

    def spy(net, x, labels, amp, out):
        calls.append((threading.current_thread().name, x.shape[0], torch.get_num_threads()))
        return real(net, x, labels, amp, out)

    monkeypatch.setattr(cpu_split, "_share", spy)
    return calls


def net_with(categories: int = 1, kind: str = "texture") -> EnergyNet:
    preset = get_preset("texture-fast").replace(image_size=16, layers=LAYERS, categories=categories, init_std=0.05,
                                                kind=kind)
    net = EnergyNet(preset, torch.Generator().manual_seed(0))
    with torch.no_grad():
        for conv in net.convs:
            conv.bias.uniform_(-0.3, 0.3, generator=torch.Generator().manual_seed(1))
    return net


def sample(net, x, policy, **kwargs):
    cpu_split.set_policy(policy)
    return LangevinSampler(step_size=0.3, n_steps=kwargs.pop("steps", 6)).sample(
        net, x, generator=torch.Generator().manual_seed(5), **kwargs)


def chains(n: int = 5) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 20


def assert_same_chains(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5 * b.abs().max().item())


def test_split_steps_give_every_chain_the_steps_of_one_pass(shares):
    net, x = net_with(), chains(5)
    one = sample(net, x, "off")
    assert shares == []
    split = sample(net, x, "on")
    assert_same_chains(split, one)
    # 6 steps, each in two shares (2 and 3 chains): one on the caller, one on a worker thread
    assert sorted({(name == "MainThread", n) for name, n, _ in shares}) == [(False, 3), (True, 2)]
    assert len(shares) == 12 and {t for *_, t in shares} == {1}  # one torch thread per share
    assert torch.get_num_threads() == 2  # the caller's again


@pytest.mark.parametrize("kind", ["texture", "object"])  # sum top, FC top
def test_split_steps_with_a_label_per_chain_and_with_known_pixels(kind, shares):
    net, x = net_with(categories=3, kind=kind), chains(4)
    labels = torch.tensor([2, 0, 1, 2])
    assert_same_chains(sample(net, x, "on", labels=labels), sample(net, x, "off", labels=labels))
    mask = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
    mask[..., :8] = True  # the left half known (inpainting, recovery)
    known = chains(1) * 0.5
    with_mask = sample(net, x, "on", mask=mask, known=known, labels=1)
    assert_same_chains(with_mask, sample(net, x, "off", mask=mask, known=known, labels=1))
    assert torch.equal(with_mask[..., :8], known.expand(4, -1, -1, -1)[..., :8])
    assert any(name != "MainThread" for name, *_ in shares)


def test_one_thread_is_one_pass_and_one_chain_is_not_cut_by_chains(shares):
    net = net_with()
    sample(net, chains(1), "on")  # cut by channels instead (tests/models/test_channel_pass.py)
    assert cpu_split.splittable(net, chains(1)) and cpu_split.decision(net, chains(1)) is True
    torch.set_num_threads(1)
    sample(net, chains(4), "on")
    assert shares == [] and not cpu_split.splittable(net, chains(4))


def test_auto_never_times_a_net_too_small_to_matter(shares):
    net, x = net_with(), chains(4)
    assert net.pass_flops(x.shape) < cpu_split.MIN_FLOPS
    sample(net, x, "auto", steps=40)
    assert shares == [] and cpu_split.decision(net, x) is False


@pytest.mark.parametrize("margin, expected", [(1e9, True), (0.0, False)])
def test_auto_decides_from_the_loops_own_steps(monkeypatch, shares, margin, expected):
    """Runs of 5 steps alternate, one pass first; the first run of each kind warms up; after
    each switch (a new run or a new loop) 2 steps go untimed; with 6 timed steps of each kind
    the faster is kept. A loop that ends mid-run leaves the run's progress to the next."""
    monkeypatch.setattr(cpu_split, "MIN_FLOPS", 0)
    monkeypatch.setattr(cpu_split, "MARGIN", margin)  # 1e9: the split always wins; 0: never
    net, x = net_with(), chains(4)
    sample(net, x, "auto", steps=12)  # warm-ups (steps 1-5 one pass, 6-10 split), then 2 steps
    assert cpu_split.decision(net, x) is None and len(shares) == 5 * 2  # 2 shares a step
    # the run of one pass goes on (steps 1-3, step 3 timed), then split 4-8 (6-8 timed), one
    # 9-13 (11-13), split 14-18 (16-18), one 19-23: 7 and 6 timed steps, decided; the choice 24-30
    got = sample(net, x, "auto", steps=30)
    assert cpu_split.decision(net, x) is expected
    assert len(shares) == 5 * 2 + 10 * 2 + (7 * 2 if expected else 0)
    assert_same_chains(got, sample(net, x, "off", steps=30))
    before = len(shares)
    sample(net, x, "auto", steps=7)  # decided: no more trial
    assert len(shares) - before == (7 * 2 if expected else 0)
    torch.set_num_threads(3)  # another thread count: decided afresh
    assert cpu_split.decision(net, x) is None


@pytest.mark.parametrize("margin, expected", [(1e9, True), (0.0, False)])
def test_auto_decides_across_loops_shorter_than_a_run(monkeypatch, shares, margin, expected):
    """Loops of 4 steps (a benchmark's repeats, a short sampling job) still reach a decision:
    the runs carry on across loops, and each loop times its steps from the third after a switch
    of the caller's thread count (its start, or a new run within it)."""
    monkeypatch.setattr(cpu_split, "MIN_FLOPS", 0)
    monkeypatch.setattr(cpu_split, "MARGIN", margin)
    net, x = net_with(), chains(4)
    loops = 0
    while cpu_split.decision(net, x) is None and loops < 30:
        sample(net, x, "auto", steps=4)
        loops += 1
    assert cpu_split.decision(net, x) is expected
    assert loops <= 15  # 13: 10 warm-up steps, then 12 timed steps over loops 4-13


def test_loops_too_short_to_time_a_step_leave_the_trial_alone(monkeypatch, shares):
    """A loop of 1 or 2 steps (``LangevinSampler.step``, a learner with T = 1) would time
    nothing: it runs one pass and leaves the trial to a longer loop."""
    monkeypatch.setattr(cpu_split, "MIN_FLOPS", 0)
    monkeypatch.setattr(cpu_split, "MARGIN", 1e9)  # the split would win, were a step ever timed
    net, x = net_with(), chains(4)
    for _ in range(20):
        sample(net, x, "auto", steps=2)
        LangevinSampler(step_size=0.3).step(net, x, generator=torch.Generator().manual_seed(5))
    assert shares == [] and cpu_split.decision(net, x) is None
    sample(net, x, "auto", steps=30)  # a loop long enough decides
    assert cpu_split.decision(net, x) is True


def test_a_trial_that_times_nothing_ends_with_one_pass(monkeypatch, shares):
    """A caller that does not say how many steps its loops take, each loop one step: after the
    runs in which a long loop would have timed 6 steps of each kind, one pass is kept."""
    monkeypatch.setattr(cpu_split, "MIN_FLOPS", 0)
    monkeypatch.setattr(cpu_split, "MARGIN", 1e9)
    cpu_split.set_policy("auto")
    net, x = net_with(), chains(4)
    runs = 2 * (cpu_split.TIMING_ROUNDS + 1)
    for _ in range(cpu_split.TIMING_RUN * runs - 1):
        with cpu_split.sharing(net, x) as grad:
            grad(x)  # each loop's only step follows a switch: never timed
    assert cpu_split.decision(net, x) is None and len(shares) > 0  # the split runs were run
    with cpu_split.sharing(net, x) as grad:
        grad(x)
    assert cpu_split.decision(net, x) is False


@pytest.fixture
def passes(monkeypatch):
    """(thread name, chains, bfloat16 autocast) of every pass computed, whole or a share."""
    calls = []
    real = cpu_split._one_pass

    def spy(net, x, labels=None, *, amp):
        calls.append((threading.current_thread().name, x.shape[0], amp))
        return real(net, x, labels, amp=amp)

    monkeypatch.setattr(cpu_split, "_one_pass", spy)
    return calls


def ways_of(calls, chains=4):
    """The way each step ran, from the passes it made: (autocast, split)."""
    ways, i = [], 0
    while i < len(calls):
        _, n, amp = calls[i]
        ways.append(cpu_split.Way(amp, n < chains))
        i += 1 if n == chains else 2
    return ways


@pytest.mark.parametrize("amp_margin, split_margin, expected", [
    (1e-9, 1e-9, cpu_split.Way(False, False)),  # float32 and one pass always win
    (1e9, 1e-9, cpu_split.Way(True, False)),  # bfloat16 always wins
    (1e-9, 1e9, cpu_split.Way(False, True)),
    (1e9, 1e9, cpu_split.Way(True, True)),
])
def test_with_amp_if_faster_the_trial_times_float32_beside_autocast(monkeypatch, passes, amp_margin, split_margin,
                                                                     expected):
    """Asked for bfloat16 autocast with ``amp_if_faster``, the loop's first steps go round four
    ways in runs of 5 (autocast one pass, autocast split, float32 one pass, float32 split), the
    first run of each a warm-up, and the fastest with the margins is kept; its steps are then
    that way's."""
    monkeypatch.setattr(cpu_split, "MIN_FLOPS", 0)
    monkeypatch.setattr(cpu_split, "MARGIN", split_margin)
    monkeypatch.setattr(cpu_split, "AMP_MARGIN", amp_margin)
    cpu_split.set_policy("auto")
    net, x = net_with(), chains(4)
    sampler = LangevinSampler(step_size=0.3, n_steps=60, amp=True, amp_if_faster=True)
    sampler.sample(net, x, generator=torch.Generator().manual_seed(5))
    W = cpu_split.Way
    order = [W(True, False), W(True, True), W(False, False), W(False, True)]
    # 4 warm-up runs, then 2 timed runs of each way (3 timed steps a run): decided after 60 steps
    assert ways_of(passes) == [way for run in range(12) for way in [order[run % 4]] * 5]
    assert cpu_split.settled(net, x, True, amp_if_faster=True) == expected
    assert cpu_split.decision(net, x, True, amp_if_faster=True) is expected.split
    passes.clear()
    got = sampler.sample(net, x, generator=torch.Generator().manual_seed(5), n_steps=3)
    assert ways_of(passes) == [expected] * 3
    cpu_split.set_policy("on" if expected.split else "off")  # the same way, untimed
    plain = LangevinSampler(step_size=0.3, n_steps=3, amp=expected.amp).sample(
        net, x, generator=torch.Generator().manual_seed(5))
    assert_same_chains(got, plain)
    cpu_split.set_policy("auto")
    # asked for autocast alone (no amp_if_faster), or for float32: another decision, never float32 for autocast
    assert cpu_split.settled(net, x, True) is None and cpu_split.settled(net, x, False) is None


def test_amp_if_faster_with_the_split_off_times_the_precision_alone(monkeypatch, passes):
    monkeypatch.setattr(cpu_split, "MIN_FLOPS", 0)
    monkeypatch.setattr(cpu_split, "AMP_MARGIN", 0.0)  # float32 wins
    cpu_split.set_policy("off")
    net, x = net_with(), chains(4)
    LangevinSampler(step_size=0.3, n_steps=30, amp=True, amp_if_faster=True).sample(net, x)
    W = cpu_split.Way
    assert ways_of(passes) == [way for run in range(6) for way in [[W(True, False), W(False, False)][run % 2]] * 5]
    assert {name for name, *_ in passes} == {"MainThread"} and not cpu_split._pool_lock.locked()
    assert cpu_split.settled(net, x, True, amp_if_faster=True) == W(False, False)


def test_amp_if_faster_leaves_short_loops_tiny_nets_and_the_on_policy_as_asked(monkeypatch, passes):
    net, x = net_with(), chains(4)
    cpu_split.set_policy("auto")
    sampler = LangevinSampler(step_size=0.3, n_steps=40, amp=True, amp_if_faster=True)
    sampler.sample(net, x)  # under MIN_FLOPS: never timed
    assert {amp for *_, amp in passes} == {True} and cpu_split.settled(net, x, True, amp_if_faster=True) == (True, False)
    monkeypatch.setattr(cpu_split, "MIN_FLOPS", 0)
    cpu_split.forget_timings()
    passes.clear()
    sampler.step(net, x)  # one step: as asked, the trial left to a longer loop
    assert passes == [("MainThread", 4, True)] and cpu_split.settled(net, x, True, amp_if_faster=True) is None
    cpu_split.set_policy("on")
    passes.clear()
    sampler.sample(net, x, n_steps=3)
    assert ways_of(passes) == [cpu_split.Way(True, True)] * 3


def test_a_busy_pool_means_one_pass_not_a_wait(shares):
    net, x = net_with(), chains(4)
    with cpu_split._pool_lock:  # another caller is splitting
        got = sample(net, x, "on")
    assert shares == [] and torch.get_num_threads() == 2
    assert_same_chains(got, sample(net, x, "off"))


def test_a_failing_share_fails_the_call_and_leaves_the_pool_usable(monkeypatch):
    net, x = net_with(), chains(4)
    real = cpu_split._share

    def fails_on_a_worker(*args):
        if threading.current_thread().name != "MainThread":
            raise RuntimeError("out of memory in a share")
        return real(*args)

    monkeypatch.setattr(cpu_split, "_share", fails_on_a_worker)
    with pytest.raises(RuntimeError, match="out of memory in a share"):
        sample(net, x, "on")
    assert torch.get_num_threads() == 2 and not cpu_split._pool_lock.locked()
    monkeypatch.setattr(cpu_split, "_share", real)
    assert_same_chains(sample(net, x, "on"), sample(net, x, "off"))


def test_share_runner_runs_each_call_on_a_thread_of_its_own_and_gives_the_count_back():
    seen = []

    def call(i):
        return lambda: seen.append((i, threading.get_ident(), torch.get_num_threads()))

    with cpu_split.share_runner(2) as run:
        assert cpu_split._pool_lock.locked() and torch.get_num_threads() == 1
        run([call(0), call(1)])
        run([call(2)])
        with pytest.raises(ValueError, match="3 calls for 2 threads"):
            run([call(3), call(4), call(5)])
    assert torch.get_num_threads() == 2 and not cpu_split._pool_lock.locked()
    main = threading.get_ident()
    assert sorted(i for i, _, _ in seen) == [0, 1, 2]
    threads = {i: ident for i, ident, _ in seen}
    assert threads[0] == threads[2] == main and threads[1] != main  # the first call on the caller
    assert {count for _, _, count in seen} == {1}  # one torch thread each, as in a split pass
    with pytest.raises(ValueError, match="shares must be 1 or more"):
        with cpu_split.share_runner(0):
            pass
    with pytest.raises(RuntimeError, match="a share failed"):
        with cpu_split.share_runner(2):
            raise RuntimeError("a share failed")
    assert torch.get_num_threads() == 2 and not cpu_split._pool_lock.locked()


def test_the_policy_comes_from_gcn_cpu_split_and_a_bad_one_is_refused(monkeypatch):
    cpu_split.set_policy(None)
    monkeypatch.setenv("GCN_CPU_SPLIT", " Off ")
    assert cpu_split.get_policy() == "off"
    cpu_split.set_policy(None)
    monkeypatch.setenv("GCN_CPU_SPLIT", "always")
    with pytest.raises(ValueError, match="GCN_CPU_SPLIT must be one of auto, off, on, not 'always'"):
        cpu_split.get_policy()
    with pytest.raises(ValueError, match="must be one of auto, off, on, not 'fast'"):
        cpu_split.set_policy("fast")
    with pytest.raises(pydantic.ValidationError, match="cpu_split"):
        Settings(cpu_split="always")
    assert Settings(cpu_split="off").to_env()["GCN_CPU_SPLIT"] == "off"


THREADS_AND_FORK = r"""
import multiprocessing, threading, torch
from models import EnergyNet, LangevinSampler, cpu_split, get_preset
torch.set_num_threads(2)
preset = get_preset("texture-fast").replace(image_size=16, layers=[[8, 5, 2, 2], [8, 3, 1, 1]])
net = EnergyNet(preset, torch.Generator().manual_seed(0))
x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 20

def run(policy):
    cpu_split.set_policy(policy)
    return LangevinSampler(n_steps=4).sample(net, x, generator=torch.Generator().manual_seed(5))

expected = run("off")
run("on")  # starts the pool: its thread sets its own count to one
seen = []
t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
t.start(); t.join()
print("fresh thread", seen[0], "caller", torch.get_num_threads())

def child(queue):
    queue.put((run("on") - expected).abs().max().item())

ctx = multiprocessing.get_context("fork")
queue = ctx.Queue()
p = ctx.Process(target=child, args=(queue,))
p.start()
print("child diff", queue.get(timeout=60))
p.join(10)
print("child exit", p.exitcode)
"""


def test_workers_leave_new_threads_their_count_and_a_forked_child_gets_its_own_pool():
    """torch hands a new thread the last count set by any thread; the workers set theirs to one.
    A forked child (a prefork worker) has none of the parent's threads: it starts its own."""
    out = subprocess.run([sys.executable, "-c", THREADS_AND_FORK], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "fresh thread 2 caller 2"
    assert lines[1].startswith("child diff ") and float(lines[1].split()[-1]) < 1e-3
    assert lines[2] == "child exit 0"
