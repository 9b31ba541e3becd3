"""The reference: the generative ConvNet's Langevin sampler and learning iteration written the way a
first implementation would be. Plain PyTorch, float32, all chains in one batch, a fresh forward
pass and ``torch.autograd.grad`` for every Langevin step, observed and synthesized images through
the net in separate passes, no tricks. The benchmarks time ``models/`` against this.

Same algorithm and the same random stream as ``models`` (one ``randn`` of the chains' shape per
step, after the drift), so ``bench.langevin`` can check that both agree before timing them.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from models.net import EnergyNet
from models.presets import Preset


class ReferenceNet(nn.Module):
    """f(I; w): conv + ReLU for every layer, then the sum of the top map (or one FC unit)."""

    def __init__(self, net: EnergyNet):
        super().__init__()
        self.convs = nn.ModuleList()
        for conv in net.convs[: net.depth]:
            c = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding)
            c.load_state_dict(conv.state_dict())
            self.convs.append(c)
        self.top = net.top
        if self.top == "fc":
            self.head = nn.Parameter(net.heads[net.depth - 1].detach().clone())
            self.head_bias = nn.Parameter(net.head_biases[net.depth - 1].detach().clone())
        self.to(next(net.parameters()).device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.relu(conv(x))
        if self.top == "sum":
            return x.sum(dim=(1, 2, 3))
        return (x * self.head).sum(dim=(1, 2, 3)) + self.head_bias


def langevin(net: nn.Module, x: torch.Tensor, n_steps: int, step_size: float, sigma: float,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """x <- x - (delta^2 / 2)(x / sigma^2 - df/dx) + delta Z, one step at a time."""
    for _ in range(n_steps):
        x = x.detach().requires_grad_(True)
        f = net(x).sum()
        (grad,) = torch.autograd.grad(f, x)
        x = x - step_size**2 / 2 * (x / sigma**2 - grad)
        x = x + step_size * torch.randn(x.shape, generator=generator, device=x.device)
    return x.detach()


class ReferenceLearner:
    """One maximum-likelihood iteration at a time: T Langevin steps from the chains' start, then
    dL/dw = mean f(observed)' - mean f(synthesized)' and the preset's update rule (the release's
    SGD: per-layer area normalisation, clipping, weight decay, 2x bias rate; or Adam). End to end,
    at the net's current depth."""

    def __init__(self, net: EnergyNet, preset: Preset, observed: torch.Tensor):
        self.net = ReferenceNet(net)
        self.preset = preset
        self.observed = observed
        self.generator = torch.Generator(observed.device).manual_seed(preset.seed + 1)
        self.chains = torch.zeros(preset.n_chains, 3, *observed.shape[-2:], device=observed.device)
        self.adam: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.steps = 0

    def area(self, name: str) -> int:
        if not name.startswith("convs."):
            return 1
        h, w = self.observed.shape[-2:]
        for conv in self.net.convs[: int(name.split(".")[1]) + 1]:
            h = (h + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1
            w = (w + 2 * conv.padding[1] - conv.kernel_size[1]) // conv.stride[1] + 1
        return h * w

    def step(self) -> torch.Tensor:
        p = self.preset
        if p.learner == "short_run":
            start = p.sigma * torch.randn(self.chains.shape, generator=self.generator, device=self.chains.device)
        elif p.learner == "cd":
            start = self.observed[torch.arange(p.n_chains) % len(self.observed)]
        else:
            start = self.chains
        synthesis = langevin(self.net, start, p.langevin_steps, p.step_size, p.sigma, self.generator)
        self.chains = synthesis

        params = list(self.net.named_parameters())
        loss = self.net(self.observed).mean() - self.net(synthesis).mean()
        grads = torch.autograd.grad(loss, [w for _, w in params])
        self.steps += 1
        with torch.no_grad():
            for (name, w), g in zip(params, grads):
                if p.area_norm:
                    g = g / self.area(name)
                peak = g.abs().max() if p.clip_mode == "abs" else g.max()
                if peak > p.clip:
                    g = g * (p.clip / peak)
                bias = name.endswith("bias")
                lr = p.lr * (p.bias_lr_mult if bias else 1.0)
                if not bias:
                    g = g - p.weight_decay * w
                if p.optimizer == "adam":
                    b1, b2 = p.adam_betas
                    m, v = self.adam.get(name, (torch.zeros_like(w), torch.zeros_like(w)))
                    m = b1 * m + (1 - b1) * g
                    v = b2 * v + (1 - b2) * g * g
                    self.adam[name] = (m, v)
                    m_hat, v_hat = m / (1 - b1**self.steps), v / (1 - b2**self.steps)
                    w += lr * m_hat / (v_hat.sqrt() + 1e-8)
                else:  # momentum 0: maximum likelihood in the release
                    w += lr * g
        return synthesis
