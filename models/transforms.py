"""Pixel convention of the release, and its exact inverse for writing PNGs.

Model space: RGB float32 in [0, 255] minus a per-channel mean (the ImageNet channel mean of the
release's VGG file by default, or the observed images' mean). The Gaussian reference
distribution N(0, sigma^2 Id) is centred on that mean, so a chain started at zeros starts at the
mean image.

Decoding and the resize rule (``crop`` or ``stretch``) are ``models.images``, which needs no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from .images import ImageError, fit, open_image

IMAGENET_MEAN = (123.68, 116.78, 103.94)


def pil_to_pixels(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float32 tensor [3, H, W] in [0, 255]."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def load_pixels(sources: Iterable[str | Path | Image.Image], size: int, mode: str = "crop") -> torch.Tensor:
    """Decode, convert and fit images -> [N, 3, size, size] in [0, 255]."""
    tensors = [pil_to_pixels(fit(open_image(s), size, mode)) for s in sources]
    if not tensors:
        raise ImageError("no images given")
    return torch.stack(tensors)


def channel_mean(kind: str, pixels: torch.Tensor | None = None) -> torch.Tensor:
    """The mean subtracted in model space, as a [3] tensor."""
    if kind == "imagenet":
        return torch.tensor(IMAGENET_MEAN, dtype=torch.float32)
    if kind == "zero":
        return torch.zeros(3)
    if kind == "data":
        if pixels is None:
            raise ValueError("mean='data' needs the observed images")
        return pixels.float().mean(dim=(0, 2, 3))
    raise ValueError(f"unknown mean {kind!r}")


def to_model_space(pixels: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    return pixels.float() - mean.to(pixels.device).view(1, 3, 1, 1)


def to_pixels(x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """Exact inverse of ``to_model_space`` (no clipping yet)."""
    return x.float() + mean.to(x.device).view(1, 3, 1, 1)


def to_uint8(x: torch.Tensor, mean: torch.Tensor, stretch: bool = False) -> np.ndarray:
    """Model-space images [N, 3, H, W] -> uint8 [N, H, W, 3].

    By default the inverse is exact up to rounding and clipping to [0, 255]; ``stretch`` maps
    each image's own min..max to 0..255 (only when asked, since it hides the model's contrast).
    """
    p = to_pixels(x.detach().cpu(), mean.cpu())
    if stretch:
        lo = p.amin(dim=(1, 2, 3), keepdim=True)
        hi = p.amax(dim=(1, 2, 3), keepdim=True)
        p = (p - lo) / (hi - lo).clamp_min(1e-8) * 255.0
    return p.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def to_pil_images(x: torch.Tensor, mean: torch.Tensor, stretch: bool = False) -> list[Image.Image]:
    return [Image.fromarray(a) for a in to_uint8(x, mean, stretch)]


def make_grid(images: Sequence[Image.Image], columns: int | None = None, pad: int = 2) -> Image.Image:
    """Tile images (all the same size) in a near-square grid on a white background."""
    if not images:
        raise ValueError("no images to tile")
    n = len(images)
    cols = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    w, h = images[0].size
    grid = Image.new("RGB", (cols * w + (cols + 1) * pad, rows * h + (rows + 1) * pad), "white")
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        grid.paste(im, (pad + c * (w + pad), pad + r * (h + pad)))
    return grid
