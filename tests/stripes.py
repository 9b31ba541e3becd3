"""Two tiny synthetic categories for tests of models of several categories: horizontal and
vertical stripes, and the statistic that tells them apart."""

from __future__ import annotations

import numpy as np
from PIL import Image


def stripes(horizontal: bool, phase: int, size: int = 32, period: int = 6) -> Image.Image:
    a = np.full((size, size), 60, np.uint8)
    on = (np.arange(size) + phase) % period < period // 2
    if horizontal:
        a[on, :] = 200
    else:
        a[:, on] = 200
    return Image.fromarray(np.stack([a] * 3, axis=-1))


HORIZONTAL = [stripes(True, p) for p in range(3)]
VERTICAL = [stripes(False, p) for p in range(2)]

# overrides that learn the two apart in a second or two on one CPU thread (anisotropy of the
# samples about +-0.85 after 150 iterations; +-0.6 after 100)
LEARN = {"image_size": 32, "layers": [{"out_channels": 12, "kernel": 5, "stride": 2, "padding": 2},
                                      {"out_channels": 8, "kernel": 3, "stride": 1, "padding": 1}],
         "iterations": 150, "lr": 0.005, "langevin_steps": 20, "sample_steps": 20, "n_chains": 2}


def anisotropy(images) -> float:
    """(E_dy - E_dx) / (E_dy + E_dx) over PIL images or [..., H, W] arrays: +1 for horizontal
    stripes, -1 for vertical ones, about 0 for isotropic noise."""
    arrays = [np.asarray(im, dtype=np.float64) for im in images]
    a = np.stack([x if x.ndim == 2 else x.mean(axis=-1) for x in arrays])
    dy = np.square(np.diff(a, axis=-2)).mean()
    dx = np.square(np.diff(a, axis=-1)).mean()
    return float((dy - dx) / (dy + dx))
