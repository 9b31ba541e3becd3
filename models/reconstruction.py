"""The auto-encoder inside the generative ConvNet.

f is piecewise linear: on the cell of inputs that share one binary activation pattern delta,
f(I) = a(delta) + <I, B(delta)>, and p restricted to that cell is N(sigma^2 B(delta), sigma^2 Id).
Encoding is the bottom-up pass that decides delta; decoding is the top-down pass through the same
filters masked by delta, B(delta) = df/dI; the reconstruction is the mean of the Gaussian piece.
"""

from __future__ import annotations

import torch

from .net import EnergyNet


def reconstruct(net: EnergyNet, x: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """recon(I) = sigma^2 * df/dI (model space in, model space out)."""
    net.check_size(x.shape[-2:])
    _, g = net.score_and_grad(x)
    return sigma**2 * g


@torch.no_grad()
def activation_patterns(net: EnergyNet, x: torch.Tensor) -> list[torch.Tensor]:
    """The binary activation pattern delta of every active layer (True where the ReLU is on)."""
    return [m > 0 for m in net.feature_maps(x)]
