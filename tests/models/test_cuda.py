"""The CUDA path of models/: the score's gradient on the GPU against the CPU's, the CUDA-graph
sampler against eager steps, and learning, synthesis and a checkpoint on the GPU.

These need a GPU and skip without one (CI has none). `bench/gpu_check.sh` runs them first on a
lent GPU machine, before the benchmarks, with that machine's own Python, where the project is not
installed: they need pytest, torch, numpy, Pillow, scikit-image and safetensors (models.pipeline
imports the checkpoint format), none of the service's packages (checked in a virtual environment
holding just those).
"""

from __future__ import annotations

import pytest
import torch

from models import GenerativeModel, LangevinSampler, checkpoint, get_preset
from models.pipeline import make_learner, synthesize

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (bench/gpu_check.sh runs these)")

CUDA = torch.device("cuda")


@pytest.fixture
def exact_float32():
    """cuDNN's TF32 off (on by default for convolutions): the float32 comparisons need float32."""
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = before


def _net(preset: str, size: int, chains: int) -> GenerativeModel:
    """A net of ``preset`` with biases off zero (the ReLU patterns of a learned net), on the CPU."""
    model = GenerativeModel.create(get_preset(preset).replace(image_size=size, n_chains=chains), torch.zeros(3))
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for conv in model.net.convs:
            conv.bias.copy_(torch.empty(conv.bias.shape).uniform_(-0.2, 0.2, generator=g))
    return model


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float().cpu() - b.float().cpu()).abs().max() / b.float().abs().max())


@pytest.mark.parametrize("preset, size", [("texture", 64), ("texture-fast", 64)])
def test_the_score_gradient_on_the_gpu_is_the_cpus(preset, size, exact_float32):
    model = _net(preset, size, 2)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2)) * 20
    score_cpu, grad_cpu = model.net.score_and_grad_view(x)
    gpu = model.to(CUDA)
    score_gpu, grad_gpu = gpu.net.score_and_grad_view(x.to(CUDA))
    assert grad_gpu.device.type == "cuda"
    assert _rel(grad_gpu, grad_cpu) < 1e-4 and _rel(score_gpu, score_cpu) < 1e-4
    # bfloat16 autocast, the pipeline's default on CUDA: within bfloat16's rounding of float32
    # (on the CPU, bf16 against fp32 here: 4-6 % in the relative norm; a wrong gradient is ~100 %)
    _, grad_amp = gpu.net.score_and_grad_view(x.to(CUDA), amp=True)
    assert grad_amp.dtype == torch.float32
    assert float((grad_amp.cpu() - grad_cpu).norm() / grad_cpu.norm()) < 0.15


def test_the_graphed_sampler_replays_the_eager_steps():
    """The graphed sampler against eager steps with the same generator: on a first call, on the
    cached graph, and after the weights changed in place (as a learner changes them)."""
    model = _net("texture-fast", 64, 4).to(CUDA)
    x0 = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(3)).to(CUDA) * 20
    eager = LangevinSampler(n_steps=12, amp=True)
    graphed = LangevinSampler(n_steps=12, amp=True, cuda_graph=True)
    ge, gg = torch.Generator(CUDA).manual_seed(1), torch.Generator(CUDA).manual_seed(1)
    for moment in ("first call", "cached graph", "after a weight update"):
        if moment == "after a weight update":
            # what a graph replaying the old weights would give: the old weights, the same noise
            same_noise = torch.Generator(CUDA)
            same_noise.set_state(ge.get_state())
            stale = eager.sample(model.net, x0, generator=same_noise)
            with torch.no_grad():
                for p in model.net.parameters():
                    p.mul_(3)  # a change the samples show (x1.01 moved them only ~4e-5)
        a = eager.sample(model.net, x0, generator=ge)
        b = graphed.sample(model.net, x0, generator=gg)
        assert torch.isfinite(b).all(), moment
        assert _rel(b, a) < 1e-3, moment
        assert (b - x0).abs().max() > 0, moment  # the chains moved
        if moment == "after a weight update":
            assert _rel(b, a) < 0.1 * _rel(stale, a), (_rel(b, a), _rel(stale, a))


@pytest.mark.parametrize("graph", ["0", "1"], ids=["eager", "GCN_CUDA_GRAPH=1"])
def test_learning_synthesis_and_a_checkpoint_on_the_gpu(brick64, tmp_path, monkeypatch, graph):
    monkeypatch.setenv("GCN_CUDA_GRAPH", graph)
    preset = get_preset("texture-fast").replace(iterations=6, image_size=32, n_chains=2, langevin_steps=5)
    learner = make_learner([brick64], preset, device=CUDA)
    before = [p.detach().clone() for p in learner.model.net.parameters()]
    learner.run()
    assert learner.model.device.type == "cuda" and len(learner.model.history) == 6
    assert any(not torch.equal(p, q) for p, q in zip(learner.model.net.parameters(), before))
    assert all(torch.isfinite(p).all() for p in learner.model.net.parameters())

    samples = synthesize(learner.model, 3, steps=5, seed=4)
    assert samples.shape == (3, 3, 32, 32) and samples.device.type == "cuda" and torch.isfinite(samples).all()
    again = synthesize(learner.model, 3, steps=5, seed=4)  # the same seed: the same images, to cuDNN's choices
    assert _rel(again, samples) < 1e-3

    out = tmp_path / "m.safetensors"
    checkpoint.save(out, learner.model, learner)
    on_cpu, _ = checkpoint.load(out, torch.device("cpu"))
    for p, q in zip(on_cpu.net.parameters(), learner.model.net.parameters()):
        assert torch.equal(p, q.cpu())
