"""Offline quality metrics for synthesised textures that need no downloaded weights.

FID and perceptual losses need pretrained Inception / VGG weights, which cannot be fetched here.
Everything below is computed from the pixels alone (pure PyTorch + numpy), deterministic given
``seed``:

- :func:`patch_swd` -- multi-scale patch sliced Wasserstein distance (Laplacian pyramid, 7 x 7
  patches, random projections), written from the description in Karras et al. 2018 ("Progressive
  Growing of GANs", appendix D). Local patch statistics at several scales.
- :func:`gram_distance` -- Gram matrices of fixed-seed *random* conv filter banks (never the
  model's own filters, which the model is trained to match), averaged over seeds.
- :func:`spectrum_distance` -- radially averaged log power spectrum (second-order statistics,
  scale content).
- :func:`copy_guard` -- best normalised cross-correlation of sample patches against every exemplar
  patch. A small exemplar is easily memorised, which flatters every distribution metric above, so
  report this beside every quality figure.
- :func:`diversity` -- mean pairwise RMS distance between chains.
- :func:`real_floor` -- the same metrics between two disjoint crops of the exemplar: the value a
  perfect sampler of "more of the same texture" could hope for.

Image convention: float tensors ``[N, 3, H, W]`` with RGB values in ``[0, 255]`` (not
mean-subtracted). The two sets compared may differ in N and in image size.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

__all__ = [
    "patch_swd",
    "gram_distance",
    "spectrum_distance",
    "copy_guard",
    "diversity",
    "split_exemplar",
    "real_floor",
    "evaluate",
]

# Smallest pyramid level, as in the published description (16 x 16 for 7 x 7 patches).
_MIN_LEVEL_SIZE = 16


# ----------------------------------------------------------------------------- helpers


def _as_images(x: Any, name: str) -> torch.Tensor:
    """Validate and convert to a contiguous float32 CPU tensor [N, C, H, W]."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a tensor, got {type(x).__name__}")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise ValueError(f"{name}: expected shape [N, C, H, W], got {tuple(x.shape)}")
    if x.shape[0] < 1 or x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"{name}: empty image set {tuple(x.shape)}")
    return x.detach().to(device="cpu", dtype=torch.float32).contiguous()


def _generator(seed: int, *salt: int) -> torch.Generator:
    """A private CPU generator seeded from ``seed`` and a salt (the global RNG is never touched)."""
    s = int(seed) & 0xFFFFFFFF
    for v in salt:
        s = (s * 1_000_003 + int(v) + 7919) % (2**62)
    return torch.Generator().manual_seed(s)


def _binomial_kernel(channels: int) -> torch.Tensor:
    k1 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
    return torch.outer(k1, k1).expand(channels, 1, 5, 5).contiguous()


def _blur(x: torch.Tensor) -> torch.Tensor:
    """Separable-equivalent 5 x 5 binomial (Gaussian) blur, depthwise, border reflected."""
    c = x.shape[1]
    mode = "reflect" if min(x.shape[-2:]) > 2 else "replicate"
    x = F.pad(x, (2, 2, 2, 2), mode=mode)
    return F.conv2d(x, _binomial_kernel(c).to(x.dtype), groups=c)


def _downsample(x: torch.Tensor) -> torch.Tensor:
    return _blur(x)[:, :, ::2, ::2]


def _upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Zero-insertion upsampling by 2 followed by the binomial blur (gain 4), cropped to ``size``."""
    n, c, h, w = x.shape
    y = x.new_zeros(n, c, 2 * h, 2 * w)
    y[:, :, ::2, ::2] = x
    y = _blur(y) * 4.0
    return y[:, :, : size[0], : size[1]]


def _auto_levels(min_side: int) -> int:
    """Levels so that the coarsest one is still at least 16 px (1 for images under 32 px)."""
    if min_side < 2 * _MIN_LEVEL_SIZE:
        return 1
    return int(math.floor(math.log2(min_side / _MIN_LEVEL_SIZE))) + 1


def _max_levels(min_side: int, patch: int) -> int:
    """Most levels for which the coarsest level still holds at least one patch."""
    n, side = 1, min_side
    while (side + 1) // 2 >= patch:
        side = (side + 1) // 2
        n += 1
    return n


def _laplacian_pyramid(x: torch.Tensor, n_levels: int) -> list[torch.Tensor]:
    """Band-pass levels finest first; the last entry is the low-pass residual (Gaussian level)."""
    levels = []
    g = x
    for _ in range(n_levels - 1):
        g_next = _downsample(g)
        levels.append(g - _upsample(g_next, g.shape[-2:]))
        g = g_next
    levels.append(g)
    return levels


def _sample_patches(x: torch.Tensor, patch: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` random patch x patch descriptors [n, C, patch, patch], positions drawn uniformly
    (with replacement) over every image and every valid position."""
    nimg, c, h, w = x.shape
    idx = torch.randint(0, nimg, (n,), generator=gen)
    ys = torch.randint(0, h - patch + 1, (n,), generator=gen)
    xs = torch.randint(0, w - patch + 1, (n,), generator=gen)
    d = torch.arange(patch)
    xl = x.permute(0, 2, 3, 1)  # [N, H, W, C]
    p = xl[idx[:, None, None], ys[:, None, None] + d[None, :, None], xs[:, None, None] + d[None, None, :]]
    return p.permute(0, 3, 1, 2).contiguous()  # [n, C, patch, patch]


def _normalise_descriptors(p: torch.Tensor) -> torch.Tensor:
    """Zero mean / unit std per colour channel over all patches (and pixels) of one set, one level."""
    mean = p.mean(dim=(0, 2, 3), keepdim=True)
    std = p.std(dim=(0, 2, 3), keepdim=True)
    return (p - mean) / std.clamp_min(1e-8)


def _sliced_wasserstein(da: torch.Tensor, db: torch.Tensor, n_projections: int, gen: torch.Generator) -> float:
    """SW1 between two equal-size point clouds: mean |sorted(a.v) - sorted(b.v)| over unit v."""
    dim = da.shape[1]
    dirs = torch.randn(dim, n_projections, generator=gen, dtype=torch.float32)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    # numpy's sort is several times faster than torch's on CPU for this shape.
    pa = np.sort((dirs.T @ da.T).numpy(), axis=1)
    pb = np.sort((dirs.T @ db.T).numpy(), axis=1)
    return float(np.abs(pa - pb).mean(dtype=np.float64))


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 3:
        w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(1, 3, 1, 1)
        return (x * w).sum(dim=1)
    return x.mean(dim=1)


# ----------------------------------------------------------------------------- metrics


def patch_swd(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    patch: int = 7,
    n_levels: int | None = None,
    n_patches: int = 4096,
    n_projections: int = 512,
    seed: int = 0,
) -> dict:
    """Multi-scale patch sliced Wasserstein distance between image sets ``a`` and ``b``.

    Why: it compares the *distribution* of local neighbourhoods at several scales, which is what a
    texture is, without any learned features; Karras et al. (2018) showed it tracks visual quality
    at each scale separately (fine levels: edges / noise, coarse levels: layout / colour blobs).

    What, following the published description (implemented independently):
    1. Laplacian pyramid of each set: 5 x 5 binomial blur + decimation by 2; band-pass level
       ``G_k - up(G_{k+1})``, the last level is the low-pass residual. ``n_levels=None`` picks the
       number of levels from the smallest image side of both sets so the coarsest level is at least
       16 px (64 px -> 3 levels, 32 px -> 2). It is capped so the coarsest level still holds a patch.
    2. At each level draw ``n_patches`` random ``patch`` x ``patch`` patches per set (uniform over
       images and positions, with replacement, seeded; the same random stream for both sets, so
       ``patch_swd(x, x) == 0`` exactly).
    3. Normalise each colour channel of a set's descriptors to zero mean / unit std over that set's
       patches of that level (as in the description; so global brightness / contrast offsets are
       deliberately ignored -- :func:`gram_distance` and :func:`spectrum_distance` see those).
    4. SWD = mean over ``n_projections`` random unit directions of the mean absolute difference
       between the sorted projections of the two sets (equal counts). Not multiplied by 1e3.

    Returns ``{"levels": [per-level SWD, finest first], "mean": mean over levels}``. Sets may
    differ in N and image size.
    """
    a = _as_images(a, "a")
    b = _as_images(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"channel mismatch: {a.shape[1]} vs {b.shape[1]}")
    min_side = min(a.shape[2], a.shape[3], b.shape[2], b.shape[3])
    patch = max(1, min(int(patch), min_side))
    if n_levels is None:
        n_levels = _auto_levels(min_side)
    n_levels = max(1, min(int(n_levels), _max_levels(min_side, patch)))

    pyr_a = _laplacian_pyramid(a, n_levels)
    pyr_b = _laplacian_pyramid(b, n_levels)
    levels = []
    for lvl, (la, lb) in enumerate(zip(pyr_a, pyr_b)):
        da = _normalise_descriptors(_sample_patches(la, patch, n_patches, _generator(seed, lvl, 1)))
        db = _normalise_descriptors(_sample_patches(lb, patch, n_patches, _generator(seed, lvl, 1)))
        da = da.reshape(n_patches, -1)
        db = db.reshape(n_patches, -1)
        levels.append(_sliced_wasserstein(da, db, n_projections, _generator(seed, lvl, 2)))
    return {"levels": levels, "mean": float(np.mean(levels))}


def _random_bank(in_ch: int, n_filters: int, kernel: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Two conv layers of He-scaled normal weights (no bias)."""
    w1 = torch.randn(n_filters, in_ch, kernel, kernel, generator=gen) * math.sqrt(2.0 / (in_ch * kernel * kernel))
    w2 = torch.randn(n_filters, n_filters, kernel, kernel, generator=gen) * math.sqrt(
        2.0 / (n_filters * kernel * kernel)
    )
    return [w1, w2]


def _bank_grams(x: torch.Tensor, bank: list[torch.Tensor]) -> list[torch.Tensor]:
    """Channel Gram matrix of each layer's ReLU responses, averaged over the set's images."""
    grams = []
    h = x
    for w in bank:
        if min(h.shape[-2:]) < w.shape[-1]:
            break
        h = F.relu(F.conv2d(h, w, stride=2))
        f = h.flatten(2)  # [N, C, L]
        g = torch.bmm(f, f.transpose(1, 2)) / f.shape[-1]
        grams.append(g.mean(dim=0).double())
    return grams


def gram_distance(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    n_filters: int = 64,
    kernel: int = 5,
    n_seeds: int = 3,
    seed: int = 0,
) -> float:
    """Relative Gram-matrix distance ``||G_a - G_b||_F / ||G_b||_F`` under random conv features.

    Why: Gram matrices of filter responses are the classic texture statistic (Gatys et al.), and
    random (untrained) filters already capture a lot of it -- without the bias of using the
    model's own filters, which learning drives to match exactly.

    What: inputs scaled to ``x / 255 - 0.5``; for each of ``n_seeds`` fixed-seed banks, two layers
    (``kernel`` x ``kernel`` conv, stride 2, He-normal weights, ReLU) of ``n_filters`` channels;
    per layer the channel Gram matrix of the responses (mean over positions, then over the set's
    images); the relative Frobenius distance (``b`` is the reference) is averaged over the layers
    and the seeds. Layers whose input is smaller than the kernel are skipped.
    """
    a = _as_images(a, "a") / 255.0 - 0.5
    b = _as_images(b, "b") / 255.0 - 0.5
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"channel mismatch: {a.shape[1]} vs {b.shape[1]}")
    dists = []
    for s in range(n_seeds):
        bank = _random_bank(a.shape[1], n_filters, kernel, _generator(seed, 100 + s))
        ga = _bank_grams(a, bank)
        gb = _bank_grams(b, bank)
        for x, y in zip(ga, gb):
            dists.append(float(torch.linalg.norm(x - y) / torch.linalg.norm(y).clamp_min(1e-12)))
    if not dists:
        raise ValueError(f"images too small for kernel {kernel}")
    return float(np.mean(dists))


def _radial_log_spectra(x: torch.Tensor, n_bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image radially averaged log10 power spectrum over ``n_bins`` equal bins of normalised
    frequency (0, 0.5] cycles/pixel. Returns (spectra [N, n_bins], bin-not-empty mask)."""
    g = _gray(x).double()
    n, h, w = g.shape
    g = g - g.mean(dim=(1, 2), keepdim=True)
    win = torch.outer(torch.hann_window(h, periodic=False, dtype=torch.float64),
                      torch.hann_window(w, periodic=False, dtype=torch.float64))
    if h < 3 or w < 3:
        win = torch.ones(h, w, dtype=torch.float64)
    power = torch.fft.fft2(g * win).abs().square() / win.square().sum()
    fy = torch.fft.fftfreq(h, dtype=torch.float64)
    fx = torch.fft.fftfreq(w, dtype=torch.float64)
    r = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    bins = torch.ceil(r / 0.5 * n_bins).long() - 1  # r in (i*d, (i+1)*d] -> bin i
    valid = (r > 0) & (bins < n_bins)
    bins = bins[valid]
    counts = torch.bincount(bins, minlength=n_bins).double()
    pv = power[:, valid]  # [N, n_valid]
    sums = torch.zeros(n, n_bins, dtype=torch.float64).index_add_(1, bins, pv)
    mean_power = sums / counts.clamp_min(1)
    return torch.log10(mean_power + 1e-3), counts > 0


def spectrum_distance(a: torch.Tensor, b: torch.Tensor, *, n_bins: int | None = None) -> float:
    """RMS difference of radially averaged log10 power spectra (grayscale), in decades.

    Why: the power spectrum summarises second-order statistics and the scale content of a texture
    (too smooth, too noisy, wrong period) independently of where structures sit.

    What: per image, luminance minus its mean, Hann-windowed (so the image border does not leak
    a cross into the spectrum), periodogram normalised by the window energy (so sizes compare);
    power averaged over annuli of normalised frequency (cycles per pixel, bins of equal width on
    (0, 0.5]; ``n_bins`` defaults to half the smallest image side of both sets), log10 (+1e-3),
    averaged over the set; RMS of the difference over the bins both sets populate.
    """
    a = _as_images(a, "a")
    b = _as_images(b, "b")
    if n_bins is None:
        n_bins = max(1, min(a.shape[2], a.shape[3], b.shape[2], b.shape[3]) // 2)
    sa, ma = _radial_log_spectra(a, n_bins)
    sb, mb = _radial_log_spectra(b, n_bins)
    mask = ma & mb
    diff = sa.mean(dim=0)[mask] - sb.mean(dim=0)[mask]
    return float(torch.sqrt(diff.square().mean()))


def copy_guard(
    samples: torch.Tensor,
    exemplar: torch.Tensor,
    *,
    patch: int = 24,
    stride: int = 8,
    max_patches: int = 512,
    seed: int = 0,
) -> dict:
    """Detects memorisation: best normalised cross-correlation of each sample patch with *any*
    exemplar patch.

    Why: a small exemplar is easily memorised (persistent chains can reproduce pieces of a 64 px
    crop almost exactly), which makes every distribution metric look perfect. NCC near 1 for
    24 px patches means copying; natural re-synthesis of a texture stays clearly lower.

    What: sample patches of ``patch`` x ``patch`` (all channels together) on a grid of step
    ``stride`` (seeded subsample down to ``max_patches`` if there are more), each made zero-mean
    and unit-norm; correlated against the exemplar at *every* position of every exemplar image via
    FFT cross-correlation, divided by the exemplar window's norm (local sums from integral images).
    Flat windows / flat patches count as NCC 0. ``patch`` is clipped to the smallest image side.

    Returns ``{"max_ncc": max over sample patches, "mean_ncc": mean over sample patches of the
    best match}``.
    """
    s = _as_images(samples, "samples").double()
    e = _as_images(exemplar, "exemplar").double()  # window sums in float64, FFTs in float32
    if s.shape[1] != e.shape[1]:
        raise ValueError(f"channel mismatch: {s.shape[1]} vs {e.shape[1]}")
    c = s.shape[1]
    p = max(2, min(int(patch), s.shape[2], s.shape[3], e.shape[2], e.shape[3]))
    stride = max(1, int(stride))

    sp = F.unfold(s, kernel_size=p, stride=stride)  # [N, C*p*p, L]
    sp = sp.permute(0, 2, 1).reshape(-1, c * p * p)
    if sp.shape[0] > max_patches:
        keep = torch.randperm(sp.shape[0], generator=_generator(seed, 300))[:max_patches]
        sp = sp[keep.sort().values]
    sp = sp - sp.mean(dim=1, keepdim=True)
    snorm = sp.norm(dim=1, keepdim=True)
    flat_s = snorm.squeeze(1) < 1e-6
    sp = (sp / snorm.clamp_min(1e-6)).reshape(-1, c, p, p)

    k, _, he, we = e.shape
    e = e - e.mean(dim=(1, 2, 3), keepdim=True)  # a per-image constant does not change NCC
    oh, ow = he - p + 1, we - p + 1
    # Window norms of the exemplar over p x p x C via integral images.
    n_el = c * p * p
    def _box(v: torch.Tensor) -> torch.Tensor:
        ii = F.pad(v.sum(dim=1).cumsum(1).cumsum(2), (1, 0, 1, 0))
        return ii[:, p:, p:] - ii[:, :-p, p:] - ii[:, p:, :-p] + ii[:, :-p, :-p]
    wsum, wsq = _box(e), _box(e * e)
    wnorm = torch.sqrt((wsq - wsum * wsum / n_el).clamp_min(0.0))  # [K, oh, ow]
    flat_e = wnorm < 0.1 * math.sqrt(n_el)  # window std under 0.1 grey level: treated as flat
    inv = torch.where(flat_e, torch.zeros_like(wnorm), 1.0 / wnorm.clamp_min(1e-12))

    ef = torch.fft.rfft2(e.float(), s=(he, we))  # [K, C, he, wf]
    inv = inv.float()
    sp = sp.float()
    best = []
    chunk = max(1, int(2**21 // max(1, c * he * (we // 2 + 1) * max(1, k))))
    for i in range(0, sp.shape[0], chunk):
        sf = torch.fft.rfft2(sp[i : i + chunk], s=(he, we)).conj()  # [m, C, he, wf]
        prod = (ef.unsqueeze(0) * sf.unsqueeze(1)).sum(dim=2)  # [m, K, he, wf]
        corr = torch.fft.irfft2(prod, s=(he, we))[:, :, :oh, :ow]  # [m, K, oh, ow]
        ncc = corr * inv.unsqueeze(0)
        best.append(ncc.flatten(1).max(dim=1).values)
    best_t = torch.cat(best).double().clamp(-1.0, 1.0)
    best_t = torch.where(flat_s, torch.zeros_like(best_t), best_t)
    return {"max_ncc": float(best_t.max()), "mean_ncc": float(best_t.mean())}


def diversity(samples: torch.Tensor) -> float:
    """Mean pairwise RMS pixel distance between chains (in [0, 255] units); 0.0 for fewer than 2.

    Why: chains collapsing onto the same image (or a memorised exemplar) score well on
    distribution metrics of a single image but produce no variety.
    """
    x = _as_images(samples, "samples").double()
    if x.shape[0] < 2:
        return 0.0
    flat = x.flatten(1)
    return float((torch.pdist(flat) / math.sqrt(flat.shape[1])).mean())


def split_exemplar(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint crops of one real texture ``[1, 3, H, W]`` (``[3, H, W]`` accepted): left and
    right halves, or top and bottom halves when the image is taller than wide. Odd sides drop the
    middle row/column so both crops have the same size."""
    x = img if img.dim() == 4 else img.unsqueeze(0)
    x = x[:1]
    _, _, h, w = x.shape
    if w >= h:
        half = w // 2
        return x[..., :half], x[..., w - half :]
    half = h // 2
    return x[..., :half, :], x[..., h - half :, :]


def real_floor(
    exemplar: torch.Tensor,
    *,
    seed: int = 0,
    n_levels: int | None = None,
    n_bins: int | None = None,
    **kw: Any,
) -> dict:
    """Metric values between two disjoint crops of the same real texture (first exemplar image).

    Why: absolute values of these metrics mean little; a sampler is "as good as more of the real
    texture" when it reaches this floor. Extra keyword arguments go to :func:`patch_swd`
    (``patch``, ``n_patches``, ``n_projections``).
    """
    c1, c2 = split_exemplar(_as_images(exemplar, "exemplar"))
    swd = patch_swd(c1, c2, n_levels=n_levels, seed=seed, **kw)
    cg = copy_guard(c1, c2, seed=seed)
    return {
        "patch_swd": swd["mean"],
        "patch_swd_levels": swd["levels"],
        "gram": gram_distance(c1, c2, seed=seed),
        "spectrum": spectrum_distance(c1, c2, n_bins=n_bins),
        "copy_max_ncc": cg["max_ncc"],
        "copy_mean_ncc": cg["mean_ncc"],
    }


def evaluate(
    samples: torch.Tensor, exemplar: torch.Tensor, *, seed: int = 0, num_threads: int | None = None
) -> dict:
    """All metrics of ``samples`` [N, 3, H, W] against ``exemplar`` [K, 3, H', W'], plus the real
    floor from the first exemplar image. Every value is a plain Python float (JSON-ready).

    The number of pyramid levels and spectrum bins is chosen from the floor crops (half the
    exemplar) and used for both the main figures and the floor, so the two are comparable.

    ``num_threads``: if given, torch's intra-op thread count is set to it for the call and restored
    afterwards. The tensors here are small; when another process keeps a core busy, 2 threads
    were measured ~10x slower than 1 (OpenMP oversubscription), so ``num_threads=1`` is the safe
    choice next to a running learner.
    """
    if num_threads is not None:
        old = torch.get_num_threads()
        torch.set_num_threads(max(1, int(num_threads)))
        try:
            return evaluate(samples, exemplar, seed=seed)
        finally:
            torch.set_num_threads(old)
    s = _as_images(samples, "samples")
    e = _as_images(exemplar, "exemplar")
    c1, _ = split_exemplar(e[:1])
    crop_min = min(c1.shape[2], c1.shape[3])
    n_levels = _auto_levels(min(crop_min, s.shape[2], s.shape[3]))
    n_bins = max(1, min(crop_min, s.shape[2], s.shape[3]) // 2)

    swd = patch_swd(s, e, n_levels=n_levels, seed=seed)
    cg = copy_guard(s, e, seed=seed)
    floor = real_floor(e[:1], seed=seed, n_levels=n_levels, n_bins=n_bins)
    return {
        "patch_swd": float(swd["mean"]),
        "patch_swd_levels": [float(v) for v in swd["levels"]],
        "gram": float(gram_distance(s, e, seed=seed)),
        "spectrum": float(spectrum_distance(s, e, n_bins=n_bins)),
        "copy_max_ncc": float(cg["max_ncc"]),
        "copy_mean_ncc": float(cg["mean_ncc"]),
        "diversity": float(diversity(s)),
        "floor": {k: (float(v) if not isinstance(v, list) else [float(t) for t in v]) for k, v in floor.items()},
    }
