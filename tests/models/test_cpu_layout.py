"""models.cpu_layout: the activations' memory format of the CPU pass, and whether a pass over
several chains runs them one at a time, are measured per batch shape; every choice computes the
same score and gradient, and the promises (channels-last and whole batches under autocast, on
GPUs, with ``GCN_CPU_CONV=onednn``, for tiny nets) hold without a timing."""

from __future__ import annotations

import pytest
import torch

from models import EnergyNet, cpu_conv, cpu_layout, get_preset
from models import net as net_module

LAYERS = [[8, 7, 2, 3], [8, 5, 1, 2], [6, 3, 1, 1]]


@pytest.fixture(autouse=True)
def fresh():
    policy = cpu_conv._policy
    cpu_layout.forget_timings()
    yield
    cpu_conv.set_policy(policy)
    cpu_layout.forget_timings()


def fake_timings(monkeypatch, timing: str, threshold: str, answer: str):
    """Replace ``cpu_layout``'s ``timing`` by a record of its calls answering ``faster[answer]``,
    with no pass too small to time (``threshold`` 0)."""
    calls, faster = [], {answer: True}

    def fake(*runs):
        calls.append(runs)
        return faster[answer]

    monkeypatch.setattr(cpu_layout, timing, fake)
    monkeypatch.setattr(cpu_layout, threshold, 0)
    return calls, faster


@pytest.fixture
def timings(monkeypatch):
    """Every format timing made, answering as ``faster["nchw"]`` says."""
    return fake_timings(monkeypatch, "_nchw_is_faster", "MIN_FLOPS", "nchw")


@pytest.fixture
def formats(monkeypatch):
    """The memory format of each conv layer's input in the passes run."""
    seen = []
    real = net_module.conv_forward

    def spy(x, conv, *args):
        seen.append("nchw" if x.is_contiguous() else "channels_last")
        return real(x, conv, *args)

    monkeypatch.setattr(net_module, "conv_forward", spy)
    return seen


def net_with(categories: int = 1, kind: str = "texture") -> EnergyNet:
    preset = get_preset("texture-fast").replace(image_size=24, layers=LAYERS, categories=categories, kind=kind,
                                                init_std=0.05)
    net = EnergyNet(preset, torch.Generator().manual_seed(0))
    with torch.no_grad():
        for conv in net.convs:
            conv.bias.uniform_(-0.3, 0.3, generator=torch.Generator().manual_seed(1))
    return net


def batch(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, 24, 24, generator=torch.Generator().manual_seed(2)) * 30


@pytest.mark.parametrize("policy", ["onednn", "nnpack"])
@pytest.mark.parametrize("kind, categories", [("texture", 1), ("texture", 3), ("object", 3)])
def test_both_formats_give_the_same_score_and_gradient(policy, kind, categories):
    if policy == "nnpack" and not cpu_conv.nnpack_available():
        pytest.skip("this PyTorch build or CPU has no NNPACK")
    cpu_conv.set_policy(policy)
    net, x = net_with(categories, kind), batch()
    labels = torch.tensor([2, 0, 1])
    with torch.no_grad():
        if categories == 1:
            a, b = (net._score_and_input_grad(x, fmt) for fmt in (torch.channels_last, torch.contiguous_format))
        else:
            a, b = (net._score_and_input_grad_categories(x, labels, fmt)
                    for fmt in (torch.channels_last, torch.contiguous_format))
    for got, expected in zip(b, a):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5 * expected.abs().max().item())
    assert not torch.equal(a[1], torch.zeros_like(a[1]))


def test_the_measured_format_is_used_and_kept_per_shape_and_thread_count(timings, formats):
    calls, faster = timings
    net, x = net_with(), batch()
    expected = net.score_and_grad(x)
    assert len(calls) == 1 and formats[-3:] == ["nchw"] * 3  # NCHW measured faster: used
    torch.testing.assert_close(net.score_and_grad(x)[1], expected[1])
    assert len(calls) == 1  # kept
    faster["nchw"] = False
    net.score_and_grad(batch(2))  # another batch shape: timed, channels-last kept
    assert len(calls) == 2 and formats[-3:] == ["channels_last"] * 3
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)
    try:
        net.score_and_grad(x)  # another thread count: timed again
    finally:
        torch.set_num_threads(threads)
    assert len(calls) == 3
    cpu_layout.forget_timings()
    net.score_and_grad(x)
    assert len(calls) == 4


def test_channels_last_without_a_timing_where_it_is_promised(timings, formats, monkeypatch):
    calls, _ = timings
    net, x = net_with(), batch()
    net.score_and_grad(x, amp=True)  # bf16 autocast: oneDNN's bf16 convolutions want NHWC
    cpu_conv.set_policy("onednn")  # bitwise reproducible: no timing decides anything
    net.score_and_grad(x)
    cpu_conv.set_policy("auto")
    net.double().score_and_grad(x.double())  # float64
    net.float()
    assert calls == [] and set(formats) == {"channels_last"}
    monkeypatch.setattr(cpu_layout, "MIN_FLOPS", 50e6)  # the module's threshold (the fixture set 0)
    assert net.pass_flops(x.shape) < cpu_layout.MIN_FLOPS
    net.score_and_grad(x)  # too small to matter
    assert calls == [] and set(formats) == {"channels_last"}


# ---- chain by chain -------------------------------------------------------------------------
@pytest.fixture
def each_timings(monkeypatch):
    """Every chain-by-chain timing made, answering as ``faster["each"]`` says."""
    return fake_timings(monkeypatch, "_each_is_faster", "EACH_MIN_FLOPS", "each")


@pytest.fixture
def passes(monkeypatch):
    """The batch size of every pass run (``_score_and_input_grad`` and its categories twin)."""
    sizes = []
    for name in ("_score_and_input_grad", "_score_and_input_grad_categories"):
        real = getattr(EnergyNet, name)

        def spy(self, x, *args, _real=real):
            sizes.append(x.shape[0])
            return _real(self, x, *args)

        monkeypatch.setattr(EnergyNet, name, spy)
    return sizes


@pytest.mark.parametrize("kind, categories, labels", [
    ("texture", 1, None), ("texture", 3, torch.tensor([2, 0, 1])), ("object", 3, torch.tensor([1, 1, 2])),
    ("texture", 3, 2)])
def test_chain_by_chain_gives_each_chain_its_own_pass(each_timings, passes, kind, categories, labels):
    calls, faster = each_timings
    net, x = net_with(categories, kind), batch()
    faster["each"] = False
    batched = net.score_and_grad(x, labels=labels)
    assert len(calls) == 1 and passes[-1] == 3  # timed; the batch kept
    cpu_layout.forget_timings()
    faster["each"] = True
    passes.clear()
    got = net.score_and_grad(x, labels=labels)
    assert len(calls) == 2 and passes[-3:] == [1, 1, 1]  # timed again, then one chain at a time
    for a, b in zip(got, batched):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5 * b.abs().max().item())
    for i in range(3):  # each chain's numbers are those of its own pass
        one = net.score_and_grad(x[i : i + 1], labels=labels[i : i + 1] if isinstance(labels, torch.Tensor) else labels)
        assert torch.equal(got[0][i : i + 1], one[0]) and torch.equal(got[1][i : i + 1], one[1])
    net.score_and_grad(x, labels=labels)
    assert len(calls) == 2  # kept for the shape


EACH_MIN_FLOPS = cpu_layout.EACH_MIN_FLOPS  # the module's own, before a fixture sets 0


def test_never_chain_by_chain_without_a_timing_where_it_is_promised(each_timings, passes, monkeypatch):
    calls, _ = each_timings
    net, x = net_with(), batch()
    net.score_and_grad(x[:1])  # one chain
    net.score_and_grad(x, amp=True)  # bf16 autocast
    cpu_conv.set_policy("onednn")  # bitwise reproducible
    net.score_and_grad(x)
    cpu_conv.set_policy("auto")
    net.double().score_and_grad(x.double())  # float64
    net.float()
    monkeypatch.setattr(cpu_layout, "EACH_MIN_FLOPS", EACH_MIN_FLOPS)
    assert net.pass_flops(x.shape) < cpu_layout.EACH_MIN_FLOPS
    net.score_and_grad(x)  # too small to matter
    assert calls == [] and 1 not in passes[1:]


@pytest.fixture
def clock(monkeypatch):
    """A fake ``time.perf_counter`` for cpu_layout's timings, advanced by every pass run by
    ``cost[0](batch size, memory format)`` seconds."""
    now, cost = [0.0], [lambda n, fmt: 1.0]
    for name in ("_score_and_input_grad", "_score_and_input_grad_categories"):
        real = getattr(EnergyNet, name)

        def timed(self, x, *args, _real=real):
            fmt = args[-1] if args else torch.channels_last
            now[0] += cost[0](x.shape[0], fmt)
            return _real(self, x, *args)

        monkeypatch.setattr(EnergyNet, name, timed)
    monkeypatch.setattr(cpu_layout, "time", type("FakeTime", (), {"perf_counter": staticmethod(lambda: now[0])}))
    monkeypatch.setattr(cpu_layout, "MIN_FLOPS", 0)
    monkeypatch.setattr(cpu_layout, "EACH_MIN_FLOPS", 0)
    return cost


@pytest.mark.parametrize("per_chain, expected", [(lambda n: n * n, True), (lambda n: 1.0 + 0.1 * n, False)])
def test_the_timings_keep_what_their_clock_finds_faster(clock, passes, per_chain, expected):
    """The real decisions, end to end, on a clock the passes drive: chain by chain wins where a
    pass costs more than linearly in its chains (3 chains: 3 x 1 against 9), the batch where a
    pass has a fixed cost (3 x 1.1 against 1.3); NCHW wins where it is the cheaper format."""
    clock[0] = lambda n, fmt: per_chain(n) * (0.5 if fmt == torch.contiguous_format else 1.0)
    net, x = net_with(), batch()
    net.score_and_grad(x)
    key = next(iter(cpu_layout._chain_by_chain))
    assert key[0] == (3, 3, 24, 24) and cpu_layout._chain_by_chain[key] is expected
    assert set(cpu_layout._choices.values()) == {torch.contiguous_format}  # the batch's and each chain's
    passes.clear()
    net.score_and_grad(x)
    assert passes == ([1, 1, 1] if expected else [3])
