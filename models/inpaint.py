"""Recovery (inpainting): Langevin dynamics on the missing pixels only, the known ones clamped.

Given an image I with a set M of missing pixels, the model's conditional p(I_M | I_known) is
sampled (``noise=True``) or climbed (``noise=False``: noise-free gradient steps, as in the
recovery experiments of the generative ConvNet papers) by the same update as synthesis,

    I_M <- I_M - (delta^2 / 2) (I_M / sigma^2 - df/dI_M) + delta Z_M,    I_known fixed,

so nothing here is new mathematics: it is ``LangevinSampler.sample`` with a mask. What this
module adds is what a user needs around it: masks (drawn, or a random fraction of pixels),
the starting values of the missing pixels, the error on the missing pixels when the original is
known, and two baselines computed from the observed pixels alone, so that every recovery is
reported next to what a model-free fill would have given:

- ``mean``: every missing pixel gets the mean colour of the observed pixels;
- ``blur``: a normalised Gaussian blur of the observed pixels (blur of the observed pixels
  divided by blur of the mask), the standard model-free interpolation.

Errors are root mean square and mean absolute differences in pixel units ([0, 255]), over the
missing pixels and all three channels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from PIL import Image
from torch.nn import functional as F

from .langevin import StepCallback
from .model import GenerativeModel
from .precision import amp_if_faster, prepare_device, use_amp
from .presets import Preset, inpaint_steps
from .images import check_mask, known_pixels
from .transforms import load_pixels, to_model_space, to_pil_images

INITS = ("noise", "mean", "blur")
BLUR_SIGMA = 0.7  # pixels: the baseline's Gaussian, the best of 0.5 / 0.7 / 1 / 1.5 px on held-out brick and grass


def random_known_mask(size: tuple[int, int], drop: float, seed: int = 0) -> torch.Tensor:
    """A [1, 1, H, W] boolean mask, True where a pixel is known; each pixel is dropped
    independently with probability ``drop`` (reproducibly from ``seed``)."""
    if not 0.0 < drop < 1.0:
        raise ValueError(f"drop must be a fraction strictly between 0 and 1 (got {drop})")
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(1, 1, *size, generator=generator) >= drop


def mask_from_image(source: Any, size: int, resize: str = "crop") -> torch.Tensor:
    """``models.images.known_pixels`` as a [1, 1, size, size] boolean tensor (True = known)."""
    return torch.from_numpy(known_pixels(source, size, resize))


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, int(round(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="reflect" if min(x.shape[-2:]) > r else "replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def fill_mean(x: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Missing pixels set to the mean colour of the observed ones (per image and channel)."""
    known = known.expand(x.shape[0], 1, *x.shape[-2:]).to(x.dtype)
    mean = (x * known).sum(dim=(2, 3), keepdim=True) / known.sum(dim=(2, 3), keepdim=True).clamp_min(1)
    return torch.where(known.bool(), x, mean.expand_as(x))


def fill_blur(x: torch.Tensor, known: torch.Tensor, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """Missing pixels from a normalised Gaussian blur of the observed ones; where no observed
    pixel is near (a large hole), the mean fill."""
    m = known.expand(x.shape[0], 1, *x.shape[-2:]).to(x.dtype)
    num = _gaussian_blur(x * m, sigma)
    den = _gaussian_blur(m, sigma)
    blurred = num / den.clamp_min(1e-6)
    return torch.where(m.bool(), x, torch.where(den > 1e-3, blurred, fill_mean(x, known)))


def masked_errors(y: torch.Tensor, truth: torch.Tensor, known: torch.Tensor) -> dict[str, float]:
    """RMSE and MAE over the missing pixels (pixel units; model space has the same units)."""
    missing = (~known).expand_as(truth)
    d = (y.to(truth.dtype) - truth)[missing]
    return {"rmse": float(d.pow(2).mean().sqrt()), "mae": float(d.abs().mean())}


def default_init(model: GenerativeModel) -> str:
    """Short-run models start their chains from a draw of the reference distribution, and that
    is where they learned to go from; the others (recovery models learned exactly this) start
    from the model-free blur fill."""
    return "noise" if model.preset.learner == "short_run" else "blur"


def recover(
    model: GenerativeModel,
    x: torch.Tensor,
    known: torch.Tensor,
    *,
    steps: Optional[int] = None,
    noise: bool = True,
    init: Optional[str] = None,
    seed: int = 0,
    category: int | str = 0,
    callback: Optional[StepCallback] = None,
    callback_every: int = 10,
    amp: Optional[bool] = None,
) -> torch.Tensor:
    """The missing pixels of ``x`` (model space, [N, 3, H, W]) recovered by Langevin dynamics
    with the pixels where ``known`` ([1 or N, 1, H, W], bool) is True clamped to ``x``.

    ``amp``: bfloat16 autocast for the net (the chains stay float32); None: ``GCN_AMP``, as
    sampling and learning (``models.precision``; under ``auto`` on a CPU, float32 where it times
    faster). On brick the recovery error was the same
    either way (docs/inpainting.md).

    ``init``: where the missing pixels start: noise (a draw of N(0, sigma^2)), mean (the observed
    mean colour) or blur (the normalised-blur fill); None picks ``default_init``. ``category``
    (an index or a name): which output of a model of several categories drives the dynamics."""
    p = model.preset
    steps = inpaint_steps(model.preset) if steps is None else steps
    init = init or default_init(model)
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; use one of {', '.join(INITS)}")
    if steps < 0:
        raise ValueError("steps must be 0 or more")
    device = model.device
    prepare_device(device)
    model.net.check_size(x.shape[-2:])
    x = x.to(device=device, dtype=torch.float32)
    known = known.to(device=device, dtype=torch.bool)
    check_mask(known)
    generator = torch.Generator(device).manual_seed(seed)
    if init == "noise":
        start = torch.where(known, x, p.sigma * torch.randn(x.shape, generator=generator, device=device))
    elif init == "mean":
        start = fill_mean(x, known)
    else:
        start = fill_blur(x, known)
    index = model.category_index(category)
    timed = amp is None and amp_if_faster(device.type)  # as sampling: float32 where it times faster
    amp = use_amp(device.type) if amp is None else amp
    sampler = model.sampler(n_steps=steps, noise=noise, amp=amp, amp_if_faster=timed)
    return sampler.sample(model.net, start, generator=generator, mask=known, known=x, callback=callback,
                          callback_every=callback_every, labels=index if model.categories > 1 else None)


@dataclass
class Inpainting:
    """A recovery and how it compares: ``observed`` shows the missing pixels black."""

    original: Image.Image
    observed: Image.Image
    recovered: Image.Image
    missing_fraction: float
    errors: dict[str, Any] = field(default_factory=dict)

    def images(self) -> list[Image.Image]:
        return [self.observed, self.recovered, self.original]


ORDER = ["observed", "recovered", "original"]


def inpaint_image(
    model: GenerativeModel,
    source: Any,
    *,
    mask: Any = None,
    drop: Optional[float] = None,
    size: Optional[int] = None,
    seed: int = 0,
    **recovery: Any,
) -> Inpainting:
    """Recover an image's missing pixels: those a ``mask`` image paints white, or a random
    fraction ``drop`` of them (drawn from ``seed``). The image is fitted to ``size`` (textures:
    any size; objects: their own), the model's pixel convention applied, the missing pixels
    recovered by ``recover`` (``recovery``: its steps, noise, init, category, callback and
    callback_every),
    and the recovery compared with the original on the missing pixels, beside the mean and blur
    fills."""
    if (mask is None) == (drop is None):
        raise ValueError("give either a mask image or a fraction of pixels to drop")
    p = model.preset
    size = size or p.image_size
    model.net.check_size((size, size))
    pixels = load_pixels([source], size, p.resize)
    x = to_model_space(pixels, model.mean).to(model.device)
    known = random_known_mask((size, size), drop, seed) if drop is not None else mask_from_image(mask, size, p.resize)
    check_mask(known)
    known = known.to(model.device)
    y = recover(model, x, known, seed=seed, **recovery)
    blank = to_model_space(torch.zeros_like(pixels), model.mean).to(model.device)
    observed_x = torch.where(known, x, blank)
    original, observed, recovered = to_pil_images(torch.cat([x, observed_x, y]).cpu(), model.mean)
    errors = {
        **masked_errors(y, x, known),
        "baselines": {
            "mean": masked_errors(fill_mean(x, known), x, known),
            "blur": masked_errors(fill_blur(x, known), x, known),
        },
    }
    return Inpainting(original=original, observed=observed, recovered=recovered,
                      missing_fraction=float((~known).float().mean()), errors=errors)
