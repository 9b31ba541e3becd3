"""models.channel_pass: one chain's score and gradient with every convolution cut by channels
across threads gives what the one pass gives (exactly in float64, to float rounding in float32
with NNPACK's kernels on the slices), whatever the layers, tops, depths and number of shares."""

from __future__ import annotations

import threading

import pytest
import torch

from models import EnergyNet, LangevinSampler, channel_pass, cpu_conv, cpu_split, get_preset


def serial(calls):
    for call in calls:
        call()


def net_with(layers, size=16, kind="texture", depth=None, dtype=torch.float64, categories=1) -> EnergyNet:
    preset = get_preset("texture-fast").replace(image_size=size, layers=layers, kind=kind, init_std=0.05,
                                                categories=categories)
    net = EnergyNet(preset, torch.Generator().manual_seed(0))
    with torch.no_grad():
        for conv in net.convs:
            conv.bias.uniform_(-0.3, 0.3, generator=torch.Generator().manual_seed(1))
        for bias in net.head_biases:  # the FC top's (zero as initialised)
            bias.fill_(0.7)
    net = net.to(dtype)  # drawn in float32 first: the same parameters in either dtype
    if depth is not None:
        net.set_depth(depth)
    return net


def image(size=16, dtype=torch.float64) -> torch.Tensor:
    return (torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(2)) * 20).to(dtype)


NETS = {
    "sum top, strided bottom": dict(layers=[[8, 5, 2, 2], [6, 3, 1, 1]]),
    "FC top": dict(layers=[[7, 4, 2, 1], [5, 3, 1, 1]], kind="object"),
    "stride-1 bottom, strided middle": dict(layers=[[6, 3, 1, 1], [9, 4, 2, 1], [4, 3, 1, 0]]),
    "the texture preset's shape (15 x 15 stride 3)": dict(layers=[[10, 15, 3, 2], [8, 5, 1, 2], [5, 3, 1, 2]], size=40),
    "layer by layer, depth 2 of 3": dict(layers=[[6, 5, 2, 2], [7, 3, 1, 1], [4, 3, 1, 1]], depth=2),
    "a single filter on top": dict(layers=[[5, 5, 2, 2], [1, 3, 1, 1]]),
}


@pytest.mark.parametrize("shares", [2, 3, 7])
@pytest.mark.parametrize("name", list(NETS))
def test_the_shared_pass_is_the_one_pass_in_float64(name, shares):
    spec = NETS[name]
    net = net_with(**spec)
    x = image(spec.get("size", 16))
    before = x.clone()
    f, g = channel_pass.score_and_grad(net, x, shares, serial)
    f0, g0 = net.score_and_grad_autograd(x)
    torch.testing.assert_close(f, f0, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(g, g0, rtol=1e-10, atol=1e-10 * g0.abs().max().item())
    assert g.shape == x.shape and g.dtype == x.dtype and torch.equal(x, before)


def test_each_share_computes_its_own_slice_of_every_convolution(monkeypatch):
    """Three shares over the layers of 8, 6 and 5 channels: every convolution is cut three ways,
    the bottom layer's input gradient by its 8 gradient channels (the image's 3 are too few)."""
    net = net_with([[8, 5, 2, 2], [6, 3, 1, 1], [5, 3, 1, 1]])
    seen = []
    real = cpu_conv.conv2d

    def spy(x, weight, bias, padding):
        seen.append((tuple(x.shape[1:2]), tuple(weight.shape[:2])))
        return real(x, weight, bias, padding)

    monkeypatch.setattr(cpu_conv, "conv2d", spy)
    channel_pass.score_and_grad(net, image(), 3, serial)
    # (input channels, filters' shape) of each slice. Forward: the strided bottom layer runs
    # direct (its space-to-depth form is for NNPACK, which takes float32 only); layer 2's 6
    # filters cut 2+2+2, layer 3's 5 cut 1+2+2. Input gradients: of layer 3, 6 channels 2+2+2;
    # of layer 2, 8 channels 2+3+3; of the bottom, the gradient's 8 channels 2+3+3, each slice
    # against all 3 * 2 * 2 space-to-depth image channels.
    assert seen == [((8,), (2, 8))] * 3 + [((6,), (1, 6))] + [((6,), (2, 6))] * 2 \
        + [((5,), (2, 5))] * 3 + [((6,), (2, 6))] + [((6,), (3, 6))] * 2 \
        + [((2,), (12, 2))] + [((3,), (12, 3))] * 2


@pytest.mark.skipif(not cpu_conv.nnpack_available(), reason="this PyTorch build or CPU has no NNPACK")
def test_float32_on_nnpack_slices_and_the_space_to_depth_forward(monkeypatch):
    """With NNPACK serving every slice it can (kernels of 4 to 16 pixels), the strided bottom
    layer's forward runs in space-to-depth form on it too; the result is the float64 one pass's
    to float32 rounding."""
    net64 = net_with([[10, 15, 3, 2], [8, 5, 1, 2], [5, 3, 1, 2]], size=40)
    net = net_with([[10, 15, 3, 2], [8, 5, 1, 2], [5, 3, 1, 2]], size=40, dtype=torch.float32)
    shapes = []
    real = cpu_conv.nnpack_conv2d

    def spy(x, weight, bias, padding):
        shapes.append(tuple(weight.shape))
        return real(x, weight, bias, padding)

    monkeypatch.setattr(cpu_conv, "nnpack_conv2d", spy)
    cpu_conv.set_policy("nnpack")
    try:
        f, g = channel_pass.score_and_grad(net, image(40, torch.float32), 2, serial)
    finally:
        cpu_conv.set_policy(None)
    f0, g0 = net64.score_and_grad_autograd(image(40))
    assert (5, 27, 5, 5) in shapes  # half the bottom layer's 10 filters over the 27 unshuffled channels
    assert (4, 10, 5, 5) in shapes  # half the 5 x 5 layer's 8 filters, on NNPACK
    torch.testing.assert_close(f.double(), f0, rtol=1e-5, atol=0)
    assert ((g.double() - g0).abs().max() / g0.abs().max()).item() < 1e-4


def test_it_serves_float32_single_category_nets():
    net = net_with([[8, 5, 2, 2], [6, 3, 1, 1]], dtype=torch.float32)
    assert channel_pass.applies(net)
    assert not channel_pass.applies(net, amp=True)
    assert not channel_pass.applies(net_with([[8, 5, 2, 2], [6, 3, 1, 1]], categories=3))


def test_bounds_are_even_and_never_empty():
    assert channel_pass.bounds(5, 2) == [(0, 2), (2, 5)]
    assert channel_pass.bounds(6, 3) == [(0, 2), (2, 4), (4, 6)]
    assert channel_pass.bounds(2, 4) == [(0, 1), (1, 2)]
    assert channel_pass.bounds(1, 2) == [(0, 1)]


# ---- through models.cpu_split: one chain on two threads (``two_threads``: tests/models/conftest.py)
@pytest.fixture
def passes(monkeypatch):
    """The thread names of every convolution slice the channel pass runs, by pass."""
    calls = []
    real = channel_pass.score_and_grad

    def spy(net, x, shares, run):
        names = []

        def recording(batch):
            run([lambda call=call: (names.append(threading.current_thread().name), call()) for call in batch])

        calls.append(names)
        return real(net, x, shares, recording)

    monkeypatch.setattr(channel_pass, "score_and_grad", spy)
    return calls


def sample(net, x, policy, **kwargs):
    cpu_split.set_policy(policy)
    return LangevinSampler(step_size=0.3, n_steps=kwargs.pop("steps", 4)).sample(
        net, x, generator=torch.Generator().manual_seed(5), **kwargs)


def test_one_chain_on_two_threads_is_cut_by_channels(two_threads, passes):
    net, x = net_with([[8, 5, 2, 2], [6, 3, 1, 1]], dtype=torch.float32), image(dtype=torch.float32)
    one = sample(net, x, "off")
    assert passes == []
    split = sample(net, x, "on")
    torch.testing.assert_close(split, one, rtol=0, atol=1e-5 * one.abs().max().item())
    assert len(passes) == 4  # one a step, each convolution on the caller and the worker
    assert all(set(names) == {"MainThread", "gcn-cpu-split"} for names in passes)
    assert torch.get_num_threads() == 2


def test_what_the_channel_pass_does_not_serve_runs_one_pass(two_threads, passes):
    net, x = net_with([[8, 5, 2, 2], [6, 3, 1, 1]], dtype=torch.float32), image(dtype=torch.float32)
    cpu_split.set_policy("on")
    LangevinSampler(n_steps=3, amp=True).sample(net, x)  # bfloat16
    three = net_with([[8, 5, 2, 2], [6, 3, 1, 1]], dtype=torch.float32, categories=3)
    sample(three, x, "on", labels=torch.tensor([2]))  # several categories
    torch.set_num_threads(1)
    sample(net, x, "on")  # one thread
    assert passes == []
    assert not cpu_split.splittable(net, x)


@pytest.mark.parametrize("margin, expected", [(1e9, True), (0.0, False)])
def test_auto_times_one_chain_like_a_batch(monkeypatch, two_threads, passes, margin, expected):
    monkeypatch.setattr(cpu_split, "MIN_FLOPS", 0)
    monkeypatch.setattr(cpu_split, "MARGIN", margin)
    net, x = net_with([[8, 5, 2, 2], [6, 3, 1, 1]], dtype=torch.float32), image(dtype=torch.float32)
    assert cpu_split.splittable(net, x) and cpu_split.decision(net, x) is None
    sample(net, x, "auto", steps=40)
    assert cpu_split.decision(net, x) is expected and len(passes) > 0


def test_a_failing_slice_fails_the_step_and_leaves_the_pool_usable(monkeypatch, two_threads):
    net, x = net_with([[8, 5, 2, 2], [6, 3, 1, 1]], dtype=torch.float32), image(dtype=torch.float32)
    real = cpu_conv.conv2d

    def fails_on_a_worker(*args):
        if threading.current_thread().name != "MainThread":
            raise RuntimeError("out of memory in a slice")
        return real(*args)

    monkeypatch.setattr(cpu_conv, "conv2d", fails_on_a_worker)
    with pytest.raises(RuntimeError, match="out of memory in a slice"):
        sample(net, x, "on")
    assert torch.get_num_threads() == 2 and not cpu_split._pool_lock.locked()
    monkeypatch.setattr(cpu_conv, "conv2d", real)
    one = sample(net, x, "off")
    torch.testing.assert_close(sample(net, x, "on"), one, rtol=0, atol=1e-5 * one.abs().max().item())


def test_labels_are_checked_and_direct_calls_it_does_not_serve_are_refused(two_threads):
    net, x = net_with([[8, 5, 2, 2], [6, 3, 1, 1]], dtype=torch.float32), image(dtype=torch.float32)
    cpu_split.set_policy("on")
    with pytest.raises(ValueError, match="categories in"):
        LangevinSampler(n_steps=3).step(net, x, labels=torch.tensor([4]))
    with pytest.raises(ValueError, match="single-category"):
        channel_pass.score_and_grad(net_with([[8, 5, 2, 2], [6, 3, 1, 1]], categories=3), image(), 2, serial)


def test_a_callers_autocast_is_switched_off_on_every_share():
    net = net_with([[8, 5, 2, 2], [6, 3, 1, 1]], dtype=torch.float32)
    x = image(dtype=torch.float32)
    expected = channel_pass.score_and_grad(net, x, 2, serial)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = channel_pass.score_and_grad(net, x, 2, serial)
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
