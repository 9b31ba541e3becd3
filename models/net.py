"""The bottom-up ConvNet score f(I; w) of the generative ConvNet.

p(I; w) = exp(f(I; w)) q(I) / Z(w) with q = N(0, sigma^2 Id). Every conv layer is followed by
ReLU (the top one too). The top is either the sum of the top ReLU map over every position and
channel (texture / codebook models), or one fully connected unit over the whole top map with no
ReLU (object models). With ReLU, f is piecewise linear in I.

Layer-by-layer learning trains layers 1..k with layer k as the top; ``depth`` says how many conv
layers are active now. Object models keep one FC unit per depth (a fresh one for each stage, as in
the release), so the set of parameters never changes shape and checkpoints stay simple.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .presets import ConvSpec, Preset


def conv_out_size(size: int, spec: ConvSpec) -> int:
    return (size + 2 * spec.padding - spec.kernel) // spec.stride + 1


def map_sizes(layers: tuple[ConvSpec, ...], size: int) -> list[int]:
    """Side of each layer's output map for a square input of ``size`` pixels."""
    sizes = []
    for spec in layers:
        size = conv_out_size(size, spec)
        if size < 1:
            raise ValueError(f"an input of this size is too small for layer {len(sizes) + 1} ({spec})")
        sizes.append(size)
    return sizes


class EnergyNet(nn.Module):
    """f(I; w): conv + ReLU layers and a sum or FC top; ``forward`` returns one score per image."""

    def __init__(self, preset: Preset, generator: torch.Generator | None = None):
        super().__init__()
        self.top = preset.top
        self.layers_spec = preset.layers
        self.image_size = preset.image_size
        channels = 3
        self.convs = nn.ModuleList()
        for spec in preset.layers:
            self.convs.append(nn.Conv2d(channels, spec.out_channels, spec.kernel, spec.stride, spec.padding))
            channels = spec.out_channels
        self.heads = nn.ParameterList()
        self.head_biases = nn.ParameterList()
        if self.top == "fc":
            for spec, side in zip(preset.layers, map_sizes(preset.layers, preset.image_size)):
                self.heads.append(nn.Parameter(torch.empty(spec.out_channels, side, side)))
                self.head_biases.append(nn.Parameter(torch.zeros(())))
        self.depth = len(self.convs)
        self.reset_parameters(preset.init_std, generator)

    @torch.no_grad()
    def reset_parameters(self, std: float, generator: torch.Generator | None = None) -> None:
        """The release's initialisation: weights N(0, std^2), biases 0."""
        for conv in self.convs:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * std)
            conv.bias.zero_()
        for w, b in zip(self.heads, self.head_biases):
            w.copy_(torch.randn(w.shape, generator=generator) * std)
            b.zero_()

    def set_depth(self, depth: int) -> None:
        if not 1 <= depth <= len(self.convs):
            raise ValueError(f"depth must be between 1 and {len(self.convs)}")
        self.depth = depth

    def check_size(self, size: tuple[int, int]) -> None:
        """Object models have a fixed input size (the FC unit covers the whole map)."""
        if self.top == "fc" and tuple(size) != (self.image_size, self.image_size):
            raise ValueError(
                f"this object model works on {self.image_size} x {self.image_size} images only, got "
                f"{size[0]} x {size[1]}"
            )

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The ReLU map of every active layer."""
        maps = []
        for conv in self.convs[: self.depth]:
            x = F.relu(conv(x))
            maps.append(x)
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top = self.feature_maps(x)[-1]
        if self.top == "sum":
            return top.sum(dim=(1, 2, 3))
        w, b = self.heads[self.depth - 1], self.head_biases[self.depth - 1]
        return (top * w.to(top.dtype)).sum(dim=(1, 2, 3)) + b

    def active_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Parameters that learning at the current depth updates, by name."""
        names = {f"convs.{i}." for i in range(self.depth)}
        keep = []
        for name, p in self.named_parameters():
            if any(name.startswith(n) for n in names):
                keep.append((name, p))
            elif name in (f"heads.{self.depth - 1}", f"head_biases.{self.depth - 1}"):
                keep.append((name, p))
        return keep

    def output_area(self, name: str, size: tuple[int, int]) -> int:
        """H * W of the output map of the layer owning parameter ``name`` (1 for the FC unit)."""
        if not name.startswith("convs."):
            return 1
        index = int(name.split(".")[1])
        h, w = size
        for spec in self.layers_spec[: index + 1]:
            h, w = conv_out_size(h, spec), conv_out_size(w, spec)
        return h * w

    def score_and_grad(self, x: torch.Tensor, amp: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """f(x) per image and df/dx (float32, same shape as x), without touching parameter grads.

        ``amp`` runs the network under bfloat16 autocast on CUDA; the returned gradient is cast
        back to float32 so that chain state stays in float32.
        """
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
                f = self(x)
            (g,) = torch.autograd.grad(f.sum(), x)
        return f.detach().to(x.dtype), g  # the gradient has the chains' dtype (float32 under autocast too)
