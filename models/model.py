"""A generative ConvNet as users hold it: the energy net, its preset and its pixel convention.

``GenerativeModel`` is what learning produces, what checkpoints store and what sampling and
reconstruction take. It bundles the things that must travel together: the net's weights, the
preset that built it (sigma, step size, sizes), the mean subtracted from pixels and the names of
its categories (one per output of the net; ``["default"]`` for a single-category model).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Optional

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
    # one name per category (per output of the net); None: default_category_names(K)
    category_names: Optional[list[str]] = None

    def __post_init__(self) -> None:
        k = self.preset.categories
        names = default_category_names(k) if self.category_names is None else [str(n) for n in self.category_names]
        if len(names) != k:
            raise ValueError(f"{len(names)} category names for a model of {k} categories")
        if any(not n.strip() for n in names) or len(set(names)) != len(names):
            raise ValueError(f"category names must be distinct and non-empty, got {names}")
        self.category_names = names

    @classmethod
    def create(
        cls, preset: Preset, mean: torch.Tensor, category_names: Optional[list[str]] = None
    ) -> "GenerativeModel":
        """A fresh model, initialised as the release does, reproducibly from ``preset.seed``."""
        generator = torch.Generator().manual_seed(preset.seed)
        return cls(preset=preset, net=EnergyNet(preset, generator), mean=mean.float().cpu(),
                   category_names=category_names)

    @property
    def categories(self) -> int:
        return self.preset.categories

    def category_index(self, category: int | str) -> int:
        """The index of a category given by index or by name; ValueError for an unknown one."""
        names = self.category_names
        if isinstance(category, str):
            if category in names:
                return names.index(category)
            raise ValueError(f"unknown category {category!r}; this model has: {', '.join(names)}")
        try:
            index = None if isinstance(category, bool) else operator.index(category)
        except TypeError:
            index = None
        if index is None:
            raise ValueError(f"a category is an index or a name, got {category!r}")
        if not 0 <= index < len(names):
            raise ValueError(f"category index {index} out of range: this model has {len(names)} "
                             f"categor{'y' if len(names) == 1 else 'ies'} (0..{len(names) - 1}: {', '.join(names)})")
        return index

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


def default_category_names(k: int) -> list[str]:
    """``["default"]`` for one category, ``["category_0", ...]`` for several."""
    return ["default"] if k == 1 else [f"category_{i}" for i in range(k)]
