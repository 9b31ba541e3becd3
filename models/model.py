"""A generative ConvNet as users hold it: the energy net, its preset and its pixel convention.

``GenerativeModel`` is what learning produces, what checkpoints store and what sampling and
reconstruction take. It bundles the things that must travel together: the net's weights, the
preset that built it (sigma, step size, sizes) and the mean subtracted from pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .langevin import LangevinSampler
from .net import EnergyNet
from .presets import Preset


@dataclass
class GenerativeModel:
    preset: Preset
    net: EnergyNet
    mean: torch.Tensor  # [3], subtracted from [0, 255] pixels
    history: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def create(cls, preset: Preset, mean: torch.Tensor) -> "GenerativeModel":
        """A fresh model, initialised as the release does, reproducibly from ``preset.seed``."""
        generator = torch.Generator().manual_seed(preset.seed)
        return cls(preset=preset, net=EnergyNet(preset, generator), mean=mean.float().cpu())

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: torch.device | str) -> "GenerativeModel":
        self.net.to(device)
        return self

    def sampler(self, n_steps: int | None = None, **changes: Any) -> LangevinSampler:
        """The Langevin sampler with this model's sigma and step size."""
        p = self.preset
        steps = p.langevin_steps if n_steps is None else n_steps
        return LangevinSampler(step_size=p.step_size, sigma=p.sigma, n_steps=steps, **changes)
