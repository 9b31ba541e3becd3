"""The sampler and the score net against the paper's formulas."""

from __future__ import annotations

import pytest
import torch

from models import Cancelled, ConvSpec, EnergyNet, LangevinSampler, activation_patterns, get_preset, reconstruct


def small_net(kind: str = "texture", size: int = 24, seed: int = 0, dtype=torch.float64) -> EnergyNet:
    preset = get_preset("texture-fast").replace(
        kind=kind, image_size=size, layers=[[6, 5, 2, 2], [4, 3, 1, 1]], init_std=0.05, seed=seed
    )
    net = EnergyNet(preset, torch.Generator().manual_seed(seed)).to(dtype)
    with torch.no_grad():  # biases away from zero so that activation cells are non-trivial
        for conv in net.convs:
            conv.bias.uniform_(-0.5, 0.5, generator=torch.Generator().manual_seed(seed + 7))
    return net


def test_langevin_step_equals_the_formula():
    net = small_net()
    sampler = LangevinSampler(step_size=0.3, sigma=1.7)
    x = torch.randn(3, 3, 24, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 20

    got = sampler.step(net, x, torch.Generator().manual_seed(9))

    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(9), dtype=x.dtype)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(net(xg).sum(), xg)
    delta, sigma = 0.3, 1.7
    expected = x - delta**2 / 2 * (x / sigma**2 - grad) + delta * z
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-10)


def test_drift_is_the_reconstruction_error():
    net = small_net()
    sampler = LangevinSampler(step_size=0.4, sigma=2.0)
    x = torch.randn(2, 3, 24, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 30
    drift = sampler.drift(net, x)
    expected = -(0.4**2 / (2 * 2.0**2)) * (x - reconstruct(net, x, sigma=2.0))
    torch.testing.assert_close(drift, expected, rtol=1e-12, atol=1e-10)
    assert drift.abs().max() > 0.1  # not a trivially zero drift


@pytest.mark.parametrize("kind", ["texture", "object"])
def test_f_is_piecewise_linear_inside_an_activation_cell(kind):
    net = small_net(kind)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 3, 24, 24, dtype=torch.float64, generator=g) * 50
    e = torch.randn(x.shape, dtype=torch.float64, generator=g) * 1e-4

    pattern = activation_patterns(net, x)
    assert all(torch.equal(a, b) for a, b in zip(pattern, activation_patterns(net, x + e))), "left the cell"
    assert any(p.any() and not p.all() for p in pattern), "the cell should be a non-trivial one"

    f0, grad0 = net.score_and_grad(x)
    f1, grad1 = net.score_and_grad(x + e)
    # f(I + e) - f(I) = <e, df/dI>, and df/dI = B(delta) is the same everywhere in the cell
    torch.testing.assert_close(f1 - f0, (e * grad0).sum().reshape(1), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(grad0, grad1, rtol=1e-6, atol=1e-9)
    # and a large step that changes the pattern changes the gradient
    big = x + torch.randn(x.shape, dtype=torch.float64, generator=g) * 100
    assert not torch.allclose(net.score_and_grad(big)[1], grad0)


def test_reconstruction_is_sigma_squared_times_the_gradient():
    net = small_net()
    x = torch.randn(1, 3, 24, 24, dtype=torch.float64) * 10
    _, grad = net.score_and_grad(x)
    torch.testing.assert_close(reconstruct(net, x, sigma=3.0), 9.0 * grad)


def test_sampler_is_reproducible_with_a_seed_and_clamps_known_pixels():
    net = small_net(dtype=torch.float32)
    sampler = LangevinSampler(step_size=0.3, sigma=1.0, n_steps=15)
    x0 = torch.zeros(2, 3, 24, 24)
    known = torch.full_like(x0, 42.0)
    mask = torch.zeros(1, 1, 24, 24, dtype=torch.bool)
    mask[..., :12] = True

    a = sampler.sample(net, x0, generator=torch.Generator().manual_seed(5), mask=mask, known=known)
    b = sampler.sample(net, x0, generator=torch.Generator().manual_seed(5), mask=mask, known=known)
    c = sampler.sample(net, x0, generator=torch.Generator().manual_seed(6), mask=mask, known=known)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.all(a[..., :12] == 42.0)
    assert a[..., 12:].std() > 0.1  # the unknown pixels moved


def test_callback_sees_progress_and_can_cancel():
    net = small_net(dtype=torch.float32)
    seen = []

    def callback(step, total, x):
        seen.append((step, total))
        if step >= 20:
            raise Cancelled()

    with pytest.raises(Cancelled):
        LangevinSampler(n_steps=100).sample(net, torch.zeros(1, 3, 24, 24), callback=callback, callback_every=10)
    assert seen == [(10, 100), (20, 100)]


def test_object_models_have_a_fixed_size_and_textures_do_not():
    obj = small_net("object", dtype=torch.float32)
    with pytest.raises(ValueError, match="24 x 24"):
        LangevinSampler(n_steps=1).sample(obj, torch.zeros(1, 3, 32, 32))
    tex = small_net("texture", dtype=torch.float32)
    assert LangevinSampler(n_steps=1).sample(tex, torch.zeros(1, 3, 40, 56)).shape == (1, 3, 40, 56)


def test_depth_selects_the_top_layer_and_the_release_architecture_sizes():
    preset = get_preset("texture")
    net = EnergyNet(preset)
    assert [c.out_channels for c in net.convs] == [100, 64, 30]
    from models.net import map_sizes

    assert map_sizes(preset.layers, 224) == [72, 72, 74]  # as in the paper notes
    net.set_depth(1)
    assert [n for n, _ in net.active_parameters()] == ["convs.0.weight", "convs.0.bias"]
    obj = EnergyNet(get_preset("object"))
    obj.set_depth(2)
    names = [n for n, _ in obj.active_parameters()]
    assert names[-2:] == ["heads.1", "head_biases.1"] and len(names) == 6
    assert ConvSpec(100, 15, 3, 2) == preset.layers[0]


@pytest.mark.parametrize("categories", [1, 2])
def test_bf16_pass_casts_parameters_once_and_sees_their_updates(monkeypatch, categories):
    """Under CPU autocast the explicit pass uses bfloat16 copies of the parameters cast once per
    update (not at every call): the same numbers as autocast's own casts, bit for bit, before
    and after an in-place update of the weights (as the optimiser makes)."""
    import models.net as net_module

    preset = get_preset("texture-fast").replace(image_size=24, layers=[[6, 5, 2, 2], [4, 3, 1, 1]], init_std=0.05,
                                                 categories=categories)
    net = EnergyNet(preset, torch.Generator().manual_seed(0))
    x = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(1)) * 20
    labels = None if categories == 1 else torch.tensor([0, 1])

    def both():
        cached = net.score_and_grad(x, amp=True, labels=labels)
        with monkeypatch.context() as m:
            m.setattr(net_module, "_cpu_autocast_dtype", lambda x: None)  # autocast casts at every call
            fresh = net.score_and_grad(x, amp=True, labels=labels)
        return cached, fresh

    (f1, g1), (f2, g2) = both()
    assert torch.equal(f1, f2) and torch.equal(g1, g2) and g1.dtype == torch.float32
    assert all(net_module._CASTS.get(conv) for conv in net.convs)  # the cached path ran
    with torch.no_grad():
        for conv in net.convs:
            conv.weight.mul_(1.5)
            conv.bias.add_(0.1)
    (f3, g3), (f4, g4) = both()
    assert torch.equal(f3, f4) and torch.equal(g3, g4) and not torch.equal(g3, g1)
    for conv in net.convs:  # parameters replaced by new ones (a new tensor may reuse a freed address)
        conv.weight = torch.nn.Parameter(conv.weight.detach() * 0.5)
    (f5, g5), (f6, g6) = both()
    assert torch.equal(f5, f6) and torch.equal(g5, g6) and not torch.equal(g5, g3)
    import pickle

    assert pickle.loads(pickle.dumps(net)) is not None  # the caches are not attributes of the net
    double = net.double()  # autocast leaves float64 alone; so does the explicit pass
    xd = x.double()
    cached = double.score_and_grad(xd, amp=True, labels=labels)
    with monkeypatch.context() as m:
        m.setattr(net_module, "_cpu_autocast_dtype", lambda x: None)
        fresh = double.score_and_grad(xd, amp=True, labels=labels)
    assert torch.equal(cached[1], fresh[1]) and cached[1].dtype == torch.float64


class _NoWeakReference:
    """Stands in for torch.Generator on releases (e.g. torch 2.11) that take no weak references."""

    __slots__ = ()


def test_cuda_graph_cache_entry_keeps_its_generator_and_stays_bounded():
    # The CUDA-graph cache is plain bookkeeping, testable on the CPU: an entry per (net, weights'
    # storage, chain shape, generator), found again on the next call, at most 4 kept.
    from models.langevin import _GRAPH_CACHE

    net, sampler = small_net(dtype=torch.float32), LangevinSampler(cuda_graph=True)
    x, gen = torch.zeros(2, 3, 24, 24), _NoWeakReference()
    entry = sampler._graph_entry(net, x, gen)
    assert entry["generator"] is gen and entry["graph"] is None
    assert sampler._graph_entry(net, x, gen) is entry  # the next call finds it
    assert sampler._graph_entry(net, torch.zeros(1, 3, 24, 24), gen) is not entry  # another shape
    other = torch.Generator()
    assert sampler._graph_entry(net, x, other) is not entry  # another generator's draws
    with torch.no_grad():
        net.convs[0].weight.data = net.convs[0].weight.data.clone()  # weights in new storage
    assert sampler._graph_entry(net, x, gen) is not entry
    for _ in range(2 * _GRAPH_CACHE):
        sampler._graph_entry(net, x, torch.Generator())
    assert len(sampler._graphs) == _GRAPH_CACHE
