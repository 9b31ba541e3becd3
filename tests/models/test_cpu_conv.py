"""models.cpu_conv: stride-1 CPU convolutions by NNPACK where they measure faster, computing the
same function as oneDNN's, chosen once per shape, and never at the cost of a failed job."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch
from torch.nn import functional as F

from models import EnergyNet, LangevinSampler, cpu_conv, get_preset

needs_nnpack = pytest.mark.skipif(not cpu_conv.nnpack_available(), reason="this PyTorch build or CPU has no NNPACK")


@pytest.fixture(autouse=True)
def restore_policy():
    old = cpu_conv._policy  # None: from GCN_CPU_CONV
    cpu_conv.forget_timings()
    yield
    cpu_conv.set_policy(old)
    cpu_conv.forget_timings()


@pytest.fixture
def nnpack_calls(monkeypatch):
    """The filter shapes and paddings that NNPACK was called with."""
    calls = []
    real = torch._nnpack_spatial_convolution

    def spy(x, weight, bias, padding, stride):
        calls.append((tuple(weight.shape), tuple(padding)))
        return real(x, weight, bias, padding, stride)

    monkeypatch.setattr(torch, "_nnpack_spatial_convolution", spy)
    return calls


def net_with(layers, categories: int = 1, size: int = 24) -> EnergyNet:
    preset = get_preset("texture-fast").replace(image_size=size, layers=layers, init_std=0.05, categories=categories)
    net = EnergyNet(preset, torch.Generator().manual_seed(0))
    with torch.no_grad():  # biases off zero, so that the ReLU patterns are not trivial
        for conv in net.convs:
            conv.bias.uniform_(-0.3, 0.3, generator=torch.Generator().manual_seed(1))
    return net


def expected_in_float64(net: EnergyNet, x: torch.Tensor, labels=None):
    f, g = net.double().score_and_grad_autograd(x.double(), labels=labels)
    net.float()
    return f, g


def assert_close_to(got, expected):
    """float32 against float64: within 1e-5 of the largest value (the FFT adds ~1e-6)."""
    for a, b in zip(got, expected):
        scale = b.abs().max().item()
        torch.testing.assert_close(a.double(), b, rtol=0, atol=1e-5 * scale)


# a strided first layer (its forward and input gradient in space-to-depth form: 4 x 4 filters,
# 12 <-> 8 channels), a 5 x 5 stride-1 layer, and a 3 x 3 one (never NNPACK's)
LAYERS = [[8, 7, 2, 3], [8, 5, 1, 2], [6, 3, 1, 1]]


@needs_nnpack
def test_nnpack_policy_gives_the_float64_score_and_gradient_and_uses_nnpack_where_it_applies(nnpack_calls):
    net = net_with(LAYERS)
    x = torch.randn(3, 3, 24, 24, generator=torch.Generator().manual_seed(2)) * 30
    expected = expected_in_float64(net, x)

    cpu_conv.set_policy("nnpack")
    assert_close_to(net.score_and_grad(x), expected)
    assert sorted(nnpack_calls) == sorted([
        ((8, 12, 4, 4), (0, 0)),  # layer 1 forward in space-to-depth form (net.space_to_depth_on_nnpack)
        ((8, 8, 5, 5), (2, 2)),  # layer 2 forward
        ((8, 8, 5, 5), (2, 2)),  # layer 2 input gradient: flipped, transposed filters, padding 5 - 1 - 2
        ((12, 8, 4, 4), (3, 3)),  # layer 1 input gradient in space-to-depth form
    ])

    nnpack_calls.clear()
    cpu_conv.set_policy("onednn")
    assert_close_to(net.score_and_grad(x), expected)
    assert nnpack_calls == []


@needs_nnpack
def test_nnpack_policy_with_categories_uses_the_selected_filters(nnpack_calls):
    net = net_with([[8, 7, 2, 3], [6, 5, 1, 2]], categories=2)
    x = torch.randn(4, 3, 24, 24, generator=torch.Generator().manual_seed(3)) * 30
    cpu_conv.set_policy("nnpack")
    for labels in (1, torch.tensor([0, 1, 1, 0])):
        expected = expected_in_float64(net, x, labels)
        assert_close_to(net.score_and_grad(x, labels=labels), expected)
    assert ((6, 8, 5, 5), (2, 2)) in nnpack_calls  # one category's 6 filters of the 12
    # a sampler run under NNPACK stays with the oneDNN one to float rounding
    sampler = LangevinSampler(n_steps=3)
    a = sampler.sample(net, x, generator=torch.Generator().manual_seed(5), labels=1)
    cpu_conv.set_policy("onednn")
    b = sampler.sample(net, x, generator=torch.Generator().manual_seed(5), labels=1)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-4 * b.abs().max().item())
    assert not torch.equal(a, x)


def test_auto_times_each_shape_once_and_never_times_small_convolutions(monkeypatch, nnpack_calls):
    monkeypatch.setattr(cpu_conv, "nnpack_available", lambda: True)
    timings = []

    def faster(x, weight_shape, padding):
        timings.append(tuple(weight_shape))
        return verdict

    monkeypatch.setattr(cpu_conv, "_nnpack_is_faster", faster)
    cpu_conv.set_policy("auto")
    small = torch.zeros(1, 4, 8, 8), torch.zeros(4, 4, 5, 5)
    big = torch.zeros(2, 32, 32, 32), torch.zeros(32, 32, 5, 5)
    flops = [cpu_conv._flops(x.shape, w.shape, (2, 2)) for x, w in (small, big)]
    assert flops[0] < cpu_conv.MIN_FLOPS <= flops[1]

    verdict = False
    for _ in range(3):
        assert not cpu_conv.use_nnpack(small[0], small[1].shape, (2, 2))
        assert not cpu_conv.use_nnpack(big[0], big[1].shape, (2, 2))
    assert timings == [(32, 32, 5, 5)]  # once, and the small one never

    verdict = True
    assert not cpu_conv.use_nnpack(big[0], big[1].shape, (2, 2))  # remembered
    cpu_conv.set_policy("onednn")
    assert not cpu_conv.use_nnpack(big[0], big[1].shape, (2, 2))
    cpu_conv.set_policy("auto")  # back to auto: what was measured still holds
    assert not cpu_conv.use_nnpack(big[0], big[1].shape, (2, 2)) and len(timings) == 1
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)  # a choice holds for one thread count
    try:
        assert cpu_conv.use_nnpack(big[0], big[1].shape, (2, 2)) and len(timings) == 2
    finally:
        torch.set_num_threads(threads)
    cpu_conv.forget_timings()
    assert cpu_conv.use_nnpack(big[0], big[1].shape, (2, 2))
    assert timings == [(32, 32, 5, 5)] * 3

    # where NNPACK does not apply, nothing is timed, whatever the policy
    cpu_conv.set_policy("nnpack")
    big_x, big_w = big
    for x, w, padding in [
        (big_x, torch.zeros(32, 32, 3, 3), (1, 1)),  # 3 x 3: NNPACK's Winograd kernels
        (big_x, big_w, (5, 5)),  # padding as large as the kernel
        (big_x.double(), big_w.double(), (2, 2)),
        (big_x.requires_grad_(True), big_w, (2, 2)),  # autograd would need NNPACK's missing backward
    ]:
        assert not cpu_conv.use_nnpack(x, w.shape, padding)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not cpu_conv.use_nnpack(big[0].detach(), big_w.shape, (2, 2))
    assert len(timings) == 3 and nnpack_calls == []


@needs_nnpack
def test_the_space_to_depth_filters_follow_in_place_updates(nnpack_calls):
    """The strided layer's space-to-depth filters are cached between passes (``net._encoder_weight``)
    and made again after an optimiser's in-place update."""
    net = net_with(LAYERS)
    x = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(6)) * 30
    cpu_conv.set_policy("nnpack")
    net.score_and_grad(x)
    with torch.no_grad():
        net.convs[0].weight.mul_(-0.5)  # in place, as an optimiser step
    expected = expected_in_float64(copy.deepcopy(net), x)  # a copy: ``net`` keeps its tensors
    assert ((8, 12, 4, 4), (0, 0)) in nnpack_calls
    assert_close_to(net.score_and_grad(x), expected)


@needs_nnpack
def test_a_strided_layer_is_timed_in_space_to_depth_form_against_onednns_strided_kernel(monkeypatch):
    """``use_nnpack_strided`` times NNPACK on the padded, unshuffled input (the copy included)
    against oneDNN's strided convolution of the input itself, once per shape; the form computes
    the strided convolution."""
    x = torch.randn(1, 3, 50, 50, generator=torch.Generator().manual_seed(4))
    w = torch.randn(16, 3, 12, 12, generator=torch.Generator().manual_seed(5))
    xs = cpu_conv.space_to_depth(x, 3, (2, 2))
    torch.testing.assert_close(xs, F.pixel_unshuffle(F.pad(x, (2, 2, 2, 2)), 3), rtol=0, atol=0)
    ws = torch.zeros(16, 27, 4, 4)
    ws.view(16, 3, 3, 3, 4, 4).copy_(w.view(16, 3, 4, 3, 4, 3).permute(0, 1, 3, 5, 2, 4))  # [o, c, i, j, a, b]
    direct = F.conv2d(x, w, None, 3, 2)
    torch.testing.assert_close(F.conv2d(xs, ws)[..., :direct.shape[-2], :direct.shape[-1]], direct, rtol=0,
                               atol=1e-5 * direct.abs().max().item())

    runs = []

    def faster(x, weight_shape, padding, by_onednn, by_nnpack):
        runs.append((tuple(weight_shape), padding))
        probe, weight = torch.zeros_like(x), torch.zeros(weight_shape)
        assert by_onednn(probe, weight).shape == direct.shape  # oneDNN's strided kernel on x itself
        assert by_nnpack(probe, weight).shape[-2:] == (15, 15)  # NNPACK, 4 x 4 over the 18 x 18 unshuffled input
        return True

    monkeypatch.setattr(cpu_conv, "_nnpack_is_faster", faster)
    monkeypatch.setattr(cpu_conv, "MIN_FLOPS", 0)
    cpu_conv.set_policy("auto")
    assert cpu_conv.use_nnpack_strided(x, w.shape, 3, (2, 2)) and cpu_conv.use_nnpack_strided(x, w.shape, 3, (2, 2))
    assert runs == [((16, 27, 4, 4), (0, 0))]  # timed once; filters of 4 x 4 after the unshuffle...
    assert not cpu_conv.use_nnpack_strided(x, torch.Size((16, 3, 6, 6)), 3, (2, 2))  # ...2 x 2: not NNPACK's
    cpu_conv.set_policy("onednn")
    assert not cpu_conv.use_nnpack_strided(x, w.shape, 3, (2, 2))


def test_a_failing_nnpack_falls_back_to_onednn_and_is_not_asked_again(monkeypatch):
    monkeypatch.setattr(cpu_conv, "nnpack_available", lambda: True)
    calls = []

    def broken(*args):
        calls.append(args)
        raise RuntimeError("NNPACK SpatialConvolution_updateOutput failed")

    monkeypatch.setattr(torch, "_nnpack_spatial_convolution", broken)
    cpu_conv.set_policy("auto")
    monkeypatch.setattr(cpu_conv, "_nnpack_is_faster", lambda *a: True)
    x = torch.randn(2, 32, 32, 32, generator=torch.Generator().manual_seed(4))
    w, b = torch.randn(16, 32, 5, 5) * 0.05, torch.randn(16)
    for _ in range(2):
        torch.testing.assert_close(cpu_conv.conv2d(x, w, b, (2, 2)), F.conv2d(x, w, b, 1, (2, 2)), rtol=0, atol=0)
    assert len(calls) == 1


def test_the_policy_comes_from_gcn_cpu_conv_and_a_bad_one_is_refused(monkeypatch, nnpack_calls):
    cpu_conv.set_policy(None)
    monkeypatch.delenv("GCN_CPU_CONV", raising=False)
    assert cpu_conv.get_policy() == "auto"
    cpu_conv.set_policy(None)
    monkeypatch.setenv("GCN_CPU_CONV", "onednn")
    x, w = torch.zeros(2, 32, 32, 32), torch.zeros(32, 32, 5, 5)
    cpu_conv.conv2d(x, w, None, (2, 2))
    assert cpu_conv.get_policy() == "onednn" and nnpack_calls == []
    cpu_conv.set_policy(None)
    monkeypatch.setenv("GCN_CPU_CONV", "fastest")
    for _ in range(2):  # not remembered: asked again, refused again
        with pytest.raises(ValueError, match="GCN_CPU_CONV must be one of auto, onednn, nnpack, not 'fastest'"):
            cpu_conv.conv2d(x, w, None, (2, 2))
    with pytest.raises(ValueError, match="must be one of auto, onednn, nnpack, not 'fast'"):
        cpu_conv.set_policy("fast")




THREADS = r"""
import os, torch
from models import cpu_conv
torch.set_num_threads(2)
x, w = torch.randn(2, 8, 24, 24), torch.randn(8, 8, 5, 5)
expected = torch.nn.functional.conv2d(x, w, None, 1, (2, 2))  # OpenMP's threads exist from here on
before = len(os.listdir("/proc/self/task"))
cpu_conv.set_policy("nnpack")
y = cpu_conv.conv2d(x, w, None, (2, 2))  # NNPACK's first convolution in this process: it makes its pool
assert torch.allclose(y, expected, rtol=0, atol=1e-4 * expected.abs().max().item())
print(before, len(os.listdir("/proc/self/task")))
"""


@needs_nnpack
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc (Linux)")
def test_nnpack_runs_on_the_calling_thread_with_no_pool_threads_of_its_own():
    """A pool of several threads (PyTorch's default: its thread count at NNPACK's first call) spun
    on the cores that oneDNN's threads needed next."""
    out = subprocess.run([sys.executable, "-c", THREADS], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    before, after = map(int, out.stdout.split())
    assert after == before
