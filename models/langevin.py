"""Langevin dynamics for the generative ConvNet, as an object separate from the model.

    I <- I - (delta^2 / 2) * (I / sigma^2 - df/dI) + delta * Z,    Z ~ N(0, Id)

No Metropolis correction and no clipping, as in the release. Since reconstruct(I) =
sigma^2 df/dI, the drift is -(delta^2 / (2 sigma^2)) (I - reconstruct(I)): the chain is pulled
towards the auto-encoder's reconstruction of itself.

Like a diffusers scheduler, the sampler knows nothing about learning: it takes any ``EnergyNet``,
a batch of chains, an optional mask of known pixels (clamped, for recovery / inpainting), a torch
generator for reproducibility and a callback called every ``callback_every`` steps (for progress
and cooperative cancellation: the callback raises ``Cancelled``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .net import EnergyNet


class Cancelled(Exception):
    """Raised by a progress callback to stop sampling or learning cleanly."""


StepCallback = Callable[[int, int, torch.Tensor], None]


@dataclass
class LangevinSampler:
    step_size: float = 0.3  # delta
    sigma: float = 1.0
    n_steps: int = 10
    noise: bool = True  # False: noise-free gradient steps (recovery)
    amp: bool = False  # bfloat16 autocast for the net on CUDA; chains stay float32

    def drift(self, net: EnergyNet, x: torch.Tensor) -> torch.Tensor:
        """-(delta^2 / 2) (x / sigma^2 - df/dx)."""
        _, g = net.score_and_grad(x, amp=self.amp)
        return -0.5 * self.step_size**2 * (x / self.sigma**2 - g)

    def step(
        self,
        net: EnergyNet,
        x: torch.Tensor,
        generator: Optional[torch.Generator] = None,
        mask: Optional[torch.Tensor] = None,
        known: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """One Langevin update of every chain; pixels where ``mask`` is True stay at ``known``."""
        x = x + self.drift(net, x)
        if self.noise:
            x = x + self.step_size * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        if mask is not None:
            x = torch.where(mask, known, x)
        return x

    @torch.no_grad()
    def sample(
        self,
        net: EnergyNet,
        x: torch.Tensor,
        *,
        n_steps: Optional[int] = None,
        generator: Optional[torch.Generator] = None,
        mask: Optional[torch.Tensor] = None,
        known: Optional[torch.Tensor] = None,
        callback: Optional[StepCallback] = None,
        callback_every: int = 10,
    ) -> torch.Tensor:
        """Run ``n_steps`` (default ``self.n_steps``) updates from chains ``x`` (float32, N x 3 x H x W)."""
        steps = self.n_steps if n_steps is None else n_steps
        net.check_size(x.shape[-2:])
        x = x.detach().float()
        if mask is not None:
            mask = mask.to(device=x.device, dtype=torch.bool).expand_as(x)
            known = known.to(device=x.device, dtype=x.dtype).expand_as(x)
            x = torch.where(mask, known, x)
        for t in range(1, steps + 1):
            x = self.step(net, x, generator, mask, known)
            if callback is not None and (t % callback_every == 0 or t == steps):
                callback(t, steps, x)
        return x


def init_chains(
    how: str,
    n: int,
    size: tuple[int, int],
    *,
    sigma: float = 1.0,
    data: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Starting points in model space: ``zeros`` (the mean image, as in the release), ``noise``
    (a draw from the reference N(0, sigma^2 Id)) or ``data`` (the observed images, cycled)."""
    h, w = size
    if how == "zeros":
        return torch.zeros(n, 3, h, w, device=device)
    if how == "noise":
        return sigma * torch.randn(n, 3, h, w, generator=generator, device=device)
    if how == "data":
        if data is None or len(data) == 0:
            raise ValueError("init='data' needs observed images")
        if tuple(data.shape[-2:]) != (h, w):
            raise ValueError(f"init='data' needs size {data.shape[-1]}, the observed images' size")
        index = torch.arange(n) % len(data)
        return data[index.to(data.device)].to(device).clone()
    raise ValueError(f"unknown chain init {how!r}; use zeros, noise or data")
