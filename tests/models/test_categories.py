"""Several categories: one net with K outputs learned from K datasets, each category against the
Gaussian base category (the paper's multi-class derivation); sampling asks for a category."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from models import EnergyNet, GenerativeModel, LangevinSampler, Learner, PresetError, checkpoint, cpu_split, get_preset
from models.pipeline import make_learner, synthesize, train
from stripes import stripes  # tests/stripes.py

CPU = torch.device("cpu")
SMALL = dict(image_size=24, layers=[[6, 5, 2, 2], [4, 3, 1, 1]], init_std=0.05)


def small_net(kind: str, categories: int, dtype=torch.float64, seed: int = 0) -> EnergyNet:
    preset = get_preset("texture-fast").replace(kind=kind, categories=categories, seed=seed, **SMALL)
    net = EnergyNet(preset, torch.Generator().manual_seed(seed)).to(dtype)
    with torch.no_grad():  # biases off zero so that the ReLU cells are non-trivial
        g = torch.Generator().manual_seed(seed + 7)
        for conv in net.convs:
            conv.bias.copy_(torch.empty(conv.bias.shape).uniform_(-0.5, 0.5, generator=g))
    return net


def anisotropy(x: torch.Tensor) -> float:
    """(E_dy - E_dx) / (E_dy + E_dx) over a batch: +1 for horizontal stripes, -1 for vertical
    ones, about 0 for isotropic noise."""
    dy = (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean()
    dx = (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean()
    return float((dy - dx) / (dy + dx))


STRIPES = {"horizontal": [stripes(True, p) for p in range(3)], "vertical": [stripes(False, p) for p in range(2)]}
TINY = dict(image_size=32, layers=[[8, 5, 2, 2], [8, 3, 1, 1]], langevin_steps=3, n_chains=2)


# ---- (1) one category: exactly the code path of before ------------------------------------------
@pytest.mark.parametrize("kind", ["texture", "object"])
def test_one_category_ignores_zero_labels_and_keeps_its_shapes(kind):
    preset = get_preset("texture-fast" if kind == "texture" else "object-fast")
    net = EnergyNet(preset, torch.Generator().manual_seed(0))
    assert net.categories == 1
    # the single-category parameters keep their shapes (old checkpoints load)
    assert net.convs[-1].weight.shape[0] == preset.layers[-1].out_channels
    if kind == "object":
        assert net.heads[-1].shape == (preset.layers[-1].out_channels, 12, 12) and net.head_biases[-1].shape == ()
    with torch.no_grad():
        for conv in net.convs:
            conv.bias.uniform_(-0.2, 0.2, generator=torch.Generator().manual_seed(1))
    s = preset.image_size
    x = torch.randn(3, 3, s, s, generator=torch.Generator().manual_seed(2)) * 30
    zeros = torch.zeros(3, dtype=torch.long)
    for fn in (net.score_and_grad, net.score_and_grad_view, net.score_and_grad_autograd):
        (f0, g0), (f1, g1) = fn(x), fn(x, labels=zeros)
        assert torch.equal(f0, f1) and torch.equal(g0, g1)
    assert torch.equal(net(x), net(x, zeros))
    torch.testing.assert_close(net.category_scores(x)[:, 0], net(x))  # another summation order
    sampler = LangevinSampler(n_steps=4)
    cpu_split.set_policy("off")  # bitwise: no trial between the two (where torch has 2 threads)
    try:
        a = sampler.sample(net, x, generator=torch.Generator().manual_seed(5))
        b = sampler.sample(net, x, generator=torch.Generator().manual_seed(5), labels=zeros)
    finally:
        cpu_split.set_policy(None)
    assert torch.equal(a, b) and not torch.equal(a, x)
    with pytest.raises(ValueError, match="categories in"):
        net(x, torch.ones(3, dtype=torch.long))


def test_one_category_learner_with_zero_labels_learns_the_same(brick64, monkeypatch):
    monkeypatch.setenv("GCN_AMP", "off")  # make_learner's default on bf16 CPUs; Learner's is float32
    preset = get_preset("texture-fast").replace(iterations=3, **TINY)
    a = make_learner([brick64], preset, device=CPU)
    b = Learner(GenerativeModel.create(preset, a.model.mean), a.observed, labels=torch.zeros(1, dtype=torch.long))
    a.run()
    b.run()
    for (name, p), q in zip(a.model.net.named_parameters(), b.model.net.parameters()):
        assert torch.equal(p, q), name
    assert a.model.history == b.model.history and "gaps" not in a.model.history[-1]
    assert a.model.category_names == ["default"]


# ---- (2) the top-down pass per category ---------------------------------------------------------
@pytest.mark.parametrize("kind", ["texture", "object"])
def test_top_down_gradient_equals_autograd_for_every_category(kind):
    net = small_net(kind, 3)
    c = 4  # out_channels of the top layer
    if kind == "texture":
        assert net.convs[-1].weight.shape[0] == 3 * c
    else:
        assert net.heads[-1].shape[0] == 3 and net.head_biases[-1].shape == (3,)
    x = torch.randn(6, 3, 24, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 30
    labels = torch.tensor([0, 1, 2, 2, 1, 0])

    f, g = net.score_and_grad(x, labels=labels)
    f_ref, g_ref = net.score_and_grad_autograd(x, labels=labels)
    torch.testing.assert_close(f, f_ref, rtol=1e-10, atol=1e-8)
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)
    scores = net.category_scores(x)
    assert scores.shape == (6, 3)
    torch.testing.assert_close(f, scores[torch.arange(6), labels], rtol=1e-10, atol=1e-8)
    torch.testing.assert_close(net(x, labels), f, rtol=1e-10, atol=1e-8)
    # the categories really differ (the test above would pass for K copies of one output)
    assert (scores[:, 0] - scores[:, 1]).abs().min() > 1e-3
    other = net.score_and_grad(x, labels=(labels + 1) % 3)[1]
    assert (other - g).abs().max() > 1e-3 * g.abs().max()
    # labels=None is category 0
    f0, g0 = net.score_and_grad(x)
    torch.testing.assert_close(f0, scores[:, 0], rtol=1e-10, atol=1e-8)
    torch.testing.assert_close(g0, net.score_and_grad(x, labels=torch.zeros(6, dtype=torch.long))[1])
    # one category for every image (an int: only that category's top is computed) is the same
    for k in range(3):
        f_int, g_int = net.score_and_grad(x, labels=k)
        f_all, g_all = net.score_and_grad_autograd(x, labels=torch.full((6,), k))
        torch.testing.assert_close(f_int, f_all, rtol=1e-10, atol=1e-8)
        torch.testing.assert_close(g_int, g_all, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(net(x, k), scores[:, k], rtol=1e-10, atol=1e-8)
    # and so is the sampler (float32 chains), whichever form the labels take; noise-free, with a
    # wide q, so that the moves are the gradient steps alone
    net, x = net.float(), x.float()
    sampler = LangevinSampler(step_size=3.0, sigma=1e4, n_steps=3, noise=False)
    a = sampler.sample(net, x, labels=torch.full((6,), 2)) - x
    b = sampler.sample(net, x, labels=2) - x
    c = sampler.sample(net, x, labels=torch.tensor([2, 2, 2, 2, 2, 0])) - x
    scale = float(a.abs().max())
    assert scale > 1e-3
    torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3 * scale)
    torch.testing.assert_close(a[:5], c[:5], rtol=1e-3, atol=1e-3 * scale)
    assert (a[5] - c[5]).abs().max() > 0.1 * scale


@pytest.mark.parametrize("kind", ["texture", "object"])
def test_each_score_depends_only_on_its_own_group_or_head(kind):
    net = small_net(kind, 3)
    x = torch.randn(4, 3, 24, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 30
    before = net.category_scores(x).detach()
    grads = [net.score_and_grad(x, labels=torch.full((4,), k))[1] for k in range(3)]
    with torch.no_grad():  # change only what belongs to category 1
        if kind == "texture":
            top = net.convs[-1]
            top.weight[4:8].add_(torch.randn(top.weight[4:8].shape, dtype=torch.float64) * 0.05)
            top.bias[4:8].add_(0.3)
        else:
            net.heads[-1][1].mul_(-2.0)
            net.head_biases[-1][1].add_(5.0)
    after = net.category_scores(x).detach()
    for k in (0, 2):
        torch.testing.assert_close(after[:, k], before[:, k], rtol=1e-12, atol=1e-9)
        torch.testing.assert_close(net.score_and_grad(x, labels=torch.full((4,), k))[1], grads[k])
    assert (after[:, 1] - before[:, 1]).abs().min() > 1e-3
    assert (net.score_and_grad(x, labels=torch.full((4,), 1))[1] - grads[1]).abs().max() > 1e-6


def test_labels_are_checked():
    net = small_net("texture", 2, dtype=torch.float32)
    x = torch.zeros(2, 3, 24, 24)
    with pytest.raises(ValueError, match="categories in"):
        net.score_and_grad(x, labels=torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="one category per image"):
        net(x, torch.tensor([0]))
    with pytest.raises(ValueError, match="categories in"):
        LangevinSampler(n_steps=1).sample(net, x, labels=torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match="categories in"):
        LangevinSampler(n_steps=1).sample(net, x, labels=2)
    with pytest.raises(ValueError, match="full depth"):
        net.set_depth(1)


# ---- (3) learning two categories ----------------------------------------------------------------
@pytest.mark.parametrize("kind,iterations,margin", [("texture", 200, 0.5), ("object", 600, 0.25)])
def test_samples_of_each_category_look_like_that_category(kind, iterations, margin):
    """Horizontal against vertical stripes (3 and 2 images: counts may differ). Samples from noise
    of category k have the orientation of dataset k: anisotropy +1 / -1 for the data, about 0 for
    the Gaussian start; the learned samples reach about +-0.86 (texture) and +-0.5 (object)."""
    preset = get_preset("texture-fast").replace(
        kind=kind, image_size=32, layers=[[12, 5, 2, 2], [8, 3, 1, 1]], iterations=iterations, lr=0.005,
        langevin_steps=20, sample_steps=20, n_chains=2,
    )
    learner = make_learner(STRIPES, preset, device=CPU)
    assert learner.preset.categories == 2 and learner.model.category_names == ["horizontal", "vertical"]
    assert anisotropy(learner.observed[learner.labels == 0]) == pytest.approx(1.0)
    assert anisotropy(learner.observed[learner.labels == 1]) == pytest.approx(-1.0)
    start = synthesize(learner.model, 6, seed=3, steps=0)
    assert abs(anisotropy(start)) < 0.1

    learner.run()
    assert len(learner.model.history[-1]["gaps"]) == 2
    h = anisotropy(synthesize(learner.model, 6, seed=3, category="horizontal"))
    v = anisotropy(synthesize(learner.model, 6, seed=3, category=1))
    assert h > margin and v < -margin, (h, v)


@pytest.mark.parametrize("how", ["ml", "cd", "short_run"])
def test_every_learner_runs_with_labelled_data_and_the_objective_is_per_category(how, monkeypatch):
    monkeypatch.setenv("GCN_AMP", "off")  # checked against float64 to 1e-4: not under bfloat16 autocast
    preset = get_preset("texture-fast").replace(learner=how, iterations=2, **TINY)
    learner = make_learner(STRIPES, preset, device=CPU)
    learner.run()
    assert learner.iteration == 2 and len(learner.model.history) == 2
    labels = learner.chain_labels
    if how == "cd":
        assert torch.equal(labels, torch.tensor([0, 0, 0, 1, 1])) and len(learner.synthesis) == 5
    else:
        assert torch.equal(labels, torch.tensor([0, 0, 1, 1])) and len(learner.synthesis) == 4
    if how == "ml":
        assert torch.equal(learner.chains, learner.synthesis)

    # the objective: sum over k of (mean f_k over data of k - mean f_k over chains of k), each mean
    # over its own category's count (3 and 2 images here), computed in float64 as the reference
    syn = learner.synthesis
    params = [p for _, p in learner.model.net.active_parameters()]
    f_obs, f_syn, gaps, grads = learner._likelihood_gradient_categories(syn, labels, params)
    net = copy.deepcopy(learner.model.net).double()
    obs, obs_labels, syn = learner.observed.double(), learner.labels, syn.double()
    expected_gaps, objective = [], 0.0
    for k in range(2):
        mine_obs, mine_syn = obs_labels == k, labels == k
        gap = net(obs[mine_obs], obs_labels[mine_obs]).mean() - net(syn[mine_syn], labels[mine_syn]).mean()
        expected_gaps.append(gap.item())
        objective = objective + gap
    expected_grads = torch.autograd.grad(objective, [p for _, p in net.active_parameters()])
    assert gaps == pytest.approx(expected_gaps, rel=1e-4, abs=1e-2)
    assert f_obs - f_syn == pytest.approx(sum(expected_gaps) / 2, rel=1e-4, abs=1e-2)
    for g, e in zip(grads, expected_grads):
        # float32 against float64: a gradient summed over every position of every image, whose
        # terms nearly cancel (contrastive divergence's chains are one step from the data), keeps
        # about 1e-3 of its largest value (measured 8e-4 with one thread, where oneDNN sums in
        # order); weighting the categories wrongly is off by far more
        torch.testing.assert_close(g.double(), e, rtol=1e-3, atol=2e-3 * float(e.abs().max()))


def test_learner_needs_labels_for_every_category():
    preset = get_preset("texture-fast").replace(categories=2, **TINY)
    model = GenerativeModel.create(preset, torch.zeros(3))
    x = torch.zeros(3, 3, 32, 32)
    with pytest.raises(ValueError, match="labels"):
        Learner(model, x)
    with pytest.raises(ValueError, match="no observed image for category category_1"):
        Learner(model, x, labels=torch.zeros(3, dtype=torch.long))


# ---- (4) checkpoints ------------------------------------------------------------------------------
def test_checkpoint_round_trip_and_exact_resume_with_two_categories(tmp_path):
    preset = get_preset("texture-fast").replace(learner="ml", optimizer="adam", iterations=6, **TINY)
    straight = train(STRIPES, preset, tmp_path / "straight.safetensors", device=CPU)

    half = tmp_path / "half.safetensors"
    train(STRIPES, preset.replace(iterations=4), half, device=CPU)
    assert checkpoint.read_config(half)["category_names"] == ["horizontal", "vertical"]
    resumed = train(STRIPES, preset, half, device=CPU, resume=True)
    for (name, a), b in zip(straight.net.state_dict().items(), resumed.net.state_dict().values()):
        assert torch.equal(a, b), name
    assert resumed.history == straight.history and len(resumed.history[-1]["gaps"]) == 2

    model, (info, tensors) = checkpoint.load(half)
    assert model.category_names == ["horizontal", "vertical"] and model.preset.categories == 2
    assert model.net.convs[-1].weight.shape[0] == 16
    for a, b in zip(model.net.parameters(), straight.net.parameters()):
        assert torch.equal(a, b)
    chains = tensors["chains"]
    assert chains.shape[0] == 4  # n_chains per category
    # persistent sampling continues that category's chains
    for k, name in enumerate(["horizontal", "vertical"]):
        x = synthesize(model, 2, steps=0, init="persistent", chains=chains, category=name)
        assert torch.equal(x, chains[2 * k : 2 * k + 2])
    a = synthesize(model, 2, steps=3, seed=1, init="noise", category=1)
    b = synthesize(straight, 2, steps=3, seed=1, init="noise", category="vertical")
    c = synthesize(model, 2, steps=3, seed=1, init="noise", category=0)
    assert torch.equal(a, b) and not torch.equal(a, c)

    with pytest.raises(ValueError, match="learned with categories"):
        make_learner({"vertical": STRIPES["vertical"], "horizontal": STRIPES["horizontal"]}, preset,
                     device=CPU, resume_from=half)
    with pytest.raises(ValueError, match="give the images by category"):
        make_learner(STRIPES["vertical"], preset, device=CPU, resume_from=half)


def test_old_checkpoints_without_category_names_still_load(tmp_path, brick64):
    learner = make_learner([brick64], get_preset("texture-fast").replace(iterations=1, **TINY), device=CPU)
    learner.run()
    path = checkpoint.save(tmp_path / "m.safetensors", learner.model, learner)
    with safe_open(str(path), framework="pt") as f:
        config = json.loads(f.metadata()["gcn.config"])
    assert config["category_names"] == ["default"] and config["version"] == 1
    del config["category_names"]
    del config["preset"]["categories"]
    old = tmp_path / "old.safetensors"
    save_file(load_file(str(path)), str(old), metadata={"gcn.config": json.dumps(config)})
    model, state = checkpoint.load(old)
    assert model.category_names == ["default"] and model.preset.categories == 1 and state is not None
    assert torch.equal(synthesize(model, 1, steps=2, category="default"), synthesize(learner.model, 1, steps=2))


# ---- (5) bad categories ---------------------------------------------------------------------------
def test_unknown_categories_and_bad_presets_fail_clearly():
    model = GenerativeModel.create(get_preset("texture-fast").replace(categories=2, **TINY), torch.zeros(3),
                                   ["brick", "grass"])
    for bad, message in [("sand", "unknown category 'sand'; this model has: brick, grass"),
                         (2, "category index 2 out of range"), (-1, "category index -1 out of range"),
                         (1.5, "a category is an index or a name")]:
        with pytest.raises(ValueError, match=message) as e:
            synthesize(model, 1, steps=1, category=bad)
        assert "\n" not in str(e.value)
    single = GenerativeModel.create(get_preset("texture-fast").replace(**TINY), torch.zeros(3))
    with pytest.raises(ValueError, match="out of range"):
        synthesize(single, 1, steps=1, category=1)
    with pytest.raises(ValueError, match="unknown category"):
        synthesize(single, 1, steps=1, category="brick")
    with pytest.raises(ValueError, match="category names"):
        GenerativeModel.create(model.preset, torch.zeros(3), ["a"])
    with pytest.raises(ValueError, match="distinct"):
        GenerativeModel.create(model.preset, torch.zeros(3), ["a", "a"])

    with pytest.raises(PresetError, match="categories"):
        get_preset("texture").replace(categories=2)  # layer by layer
    with pytest.raises(PresetError, match="categories"):
        make_learner(STRIPES, get_preset("object"), device=CPU)
    for k in (0, 65):
        with pytest.raises(PresetError, match="categories must be between 1 and 64"):
            get_preset("texture-fast").replace(categories=k)
    with pytest.raises(ValueError, match="categories=3 but 2 categories"):
        make_learner(STRIPES, get_preset("texture-fast").replace(categories=3, **TINY), device=CPU)
    with pytest.raises(ValueError, match="has no images"):
        make_learner({"a": STRIPES["vertical"], "b": []}, get_preset("texture-fast").replace(**TINY), device=CPU)
