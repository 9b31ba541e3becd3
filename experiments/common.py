"""Shared pieces of the figure scripts: data, machine description, one run from preset to PNGs + JSON.

Every figure script builds a ``Preset`` (the release's settings, or the same recipe shrunk for a
CPU), picks its images with the loaders below and calls :func:`run`, which

1. learns with ``models.pipeline.train`` (a fresh run: an old checkpoint in the folder is removed),
   saving a preview grid of the synthesized images every ``preview_every`` iterations and the
   learning curve (f(observed), f(synthesized), gap per iteration);
2. synthesizes ``n_samples`` images with ``models.pipeline.synthesize`` at the model's default init
   (``models.pipeline.default_init``: persistent chains continue, short-run models start from noise,
   CD models from zeros);
3. writes ``exemplar.png``, ``chains.png`` (the learner's chains at the last iteration),
   ``samples.png``, ``reconstruction.png`` (each observed image beside sigma^2 df/dI),
   ``panel.png`` (the four side by side, for the docs), ``learning_curve.csv`` / ``.png`` and
   ``metrics.json`` (``models.metrics.evaluate`` of the samples and of the chains against the
   data, each with its real floor and copy guard, the preset, what was shrunk, wall times and
   the machine).

Threads: torch uses ``GCN_TORCH_THREADS`` threads (default 1 here, so that one core of a small
shared machine stays free) unless ``--threads`` is given.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python experiments/figX.py` from anywhere
    sys.path.insert(0, str(ROOT))

from bench.common import cpu_model  # noqa: E402  (one description of the CPU for figures and benchmarks)
from models import checkpoint, precision  # noqa: E402
from models.metrics import evaluate  # noqa: E402
from models.pipeline import pick_device, reconstruct_image, sample_images, synthesize, train  # noqa: E402
from models.presets import Preset  # noqa: E402
from models.transforms import load_pixels, make_grid, to_pil_images, to_pixels  # noqa: E402

# The release resized every training image to 224 x 224.
PAPER_SIZE = 224
TEXTURES = ("brick", "grass")
N_FACES = 8  # "a few aligned object images": the training set of the object / CD figures
N_HELDOUT_FACES = 8  # other faces of lfw_subset, never trained on: a real reference for objects


# ----------------------------------------------------------------------------- threads, machine


def set_threads(threads: Optional[int]) -> int:
    """``threads`` if given, else ``GCN_TORCH_THREADS``, else 1."""
    n = threads or int(os.environ.get("GCN_TORCH_THREADS", "1") or 1)
    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


def machine(device: torch.device) -> dict[str, Any]:
    """What ran this: platform, CPU model (/proc/cpuinfo), cores, torch, threads, device."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "bf16_autocast": precision.use_amp(device.type),  # GCN_AMP and the hardware (models.precision)
        # True: sampling loops time float32 beside autocast and keep the faster (models.cpu_split)
        "bf16_or_fp32_timed": precision.amp_if_faster(device.type),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        info["gpu"] = None
    return info


def code_version() -> dict[str, Any]:
    """The git commit of the checkout that ran, and whether models/ or experiments/ differed from it
    (a run is reproducible from the commit only when they did not)."""
    import subprocess

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                                  timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "commit": git("rev-parse", "HEAD") or None,
        "uncommitted_changes": git("status", "--porcelain", "--", "models", "experiments").splitlines(),
    }


# ----------------------------------------------------------------------------- data


def _rgb(gray_uint8: np.ndarray) -> Image.Image:
    return Image.fromarray(np.stack([gray_uint8] * 3, axis=-1))


def texture_source(name: str) -> Image.Image:
    """scikit-image's 512 x 512 grayscale ``brick`` or ``grass`` as RGB."""
    from skimage import data

    if name not in TEXTURES:
        raise ValueError(f"unknown texture {name!r}; use one of {', '.join(TEXTURES)}")
    return _rgb(getattr(data, name)())


def texture_image(name: str, image_size: int, paper_size: int = PAPER_SIZE) -> Image.Image:
    """The texture as the run sees it, at the release's pixel scale.

    The release fitted the whole image to 224 px (512 -> 224 here, a factor 0.4375). A smaller run
    keeps that scale rather than shrinking the whole picture further: it takes the centre crop of
    side ``512 * image_size / 224`` so that the preset's fit rule brings it to ``image_size`` at the
    same pixels-per-brick as the 224 px run (the 15 px first-layer filters see the same structures).
    At ``image_size == 224`` this is the whole image.
    """
    img = texture_source(name)
    side = min(img.size[0], round(img.size[0] * image_size / paper_size))
    left = (img.size[0] - side) // 2
    top = (img.size[1] - side) // 2
    return img.crop((left, top, left + side, top + side))


def texture_crop(name: str, size: int = 64, at: tuple[int, int] = (100, 100)) -> Image.Image:
    """A native-resolution ``size`` x ``size`` crop (the fast recipes' exemplar; the tests use
    brick[100:164, 100:164])."""
    img = texture_source(name)
    y, x = at
    return img.crop((x, y, x + size, y + size))


def faces(n: int = N_FACES, start: int = 0) -> list[Image.Image]:
    """Aligned faces of ``skimage.data.lfw_subset()`` (its first 100 images are faces, 25 x 25
    float gray in [0, 1]) as RGB uint8; the preset's fit rule upscales them (bicubic)."""
    from skimage import data

    stack = data.lfw_subset()[:100]
    if start + n > len(stack):
        raise ValueError("lfw_subset has 100 faces")
    return [_rgb((f * 255).round().astype(np.uint8)) for f in stack[start : start + n]]


# ----------------------------------------------------------------------------- pictures


def _font(size: int = 12) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def labelled(img: Image.Image, text: str, height: int = 16) -> Image.Image:
    """``img`` with a caption strip above it."""
    out = Image.new("RGB", (max(img.width, 8 * len(text)), img.height + height), "white")
    ImageDraw.Draw(out).text((2, 1), text, fill="black", font=_font(12))
    out.paste(img, (0, height))
    return out


def hstack(images: Sequence[Image.Image], pad: int = 8) -> Image.Image:
    w = sum(i.width for i in images) + pad * (len(images) - 1)
    h = max(i.height for i in images)
    out = Image.new("RGB", (w, h), "white")
    x = 0
    for i in images:
        out.paste(i, (x, 0))
        x += i.width + pad
    return out


def curve_png(history: list[dict[str, Any]], path: Path, width: int = 480, height: int = 200) -> None:
    """A small plot of f(observed) and f(synthesized) per iteration (no matplotlib here)."""
    if not history:
        return
    def symlog(v: float) -> float:
        return float(np.sign(v) * np.log10(1.0 + abs(v)))

    obs = np.array([symlog(h["f_obs"]) for h in history], dtype=np.float64)
    syn = np.array([symlog(h["f_syn"]) for h in history], dtype=np.float64)
    lo, hi = float(min(obs.min(), syn.min())), float(max(obs.max(), syn.max()))
    hi = hi if hi > lo else lo + 1.0
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    m = 24
    def xy(i: int, v: float) -> tuple[float, float]:
        return (m + (width - 2 * m) * i / max(1, len(history) - 1), height - m - (height - 2 * m) * (v - lo) / (hi - lo))
    stage = history[0].get("stage", 1)
    for i, h in enumerate(history):
        if h.get("stage", 1) != stage:
            stage = h["stage"]
            x, _ = xy(i, lo)
            d.line([(x, m), (x, height - m)], fill=(200, 200, 200))
    for series, colour in ((obs, (0, 90, 200)), (syn, (220, 60, 0))):
        d.line([xy(i, float(v)) for i, v in enumerate(series)], fill=colour, width=1)
    f = _font(11)
    d.text((m, 2), f"sign(f) log10(1+|f|): observed blue, synthesized red; {len(history)} it; [{lo:.2f}, {hi:.2f}]", fill="black", font=f)
    img.save(path)


def filters_png(model, path: Path, columns: int = 10, zoom: int = 2) -> Image.Image:
    """The first layer's filters (the "codebook" of local patterns), each stretched to its own
    min..max, tiled."""
    w = model.net.convs[0].weight.detach().float().cpu()  # [K, 3, k, k]
    lo = w.amin(dim=(1, 2, 3), keepdim=True)
    hi = w.amax(dim=(1, 2, 3), keepdim=True)
    w = ((w - lo) / (hi - lo).clamp_min(1e-12) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    tiles = [Image.fromarray(a).resize((a.shape[1] * zoom, a.shape[0] * zoom), Image.Resampling.NEAREST) for a in w]
    grid = make_grid(tiles, columns=min(columns, len(tiles)), pad=1)
    grid.save(path)
    return grid


def reconstruction_metrics(model, images: Sequence[Image.Image]) -> dict[str, float]:
    """How well the auto-encoder sigma^2 df/dI reproduces ``images`` (pixel units): RMS error, the
    images' own RMS about their mean (the error of predicting a flat image), and the normalised
    cross-correlation of reconstruction and image (1 = the same picture up to contrast)."""
    from models.reconstruction import reconstruct
    from models.transforms import to_model_space

    p = model.preset
    x = to_model_space(load_pixels(list(images), p.image_size, p.resize), model.mean).to(model.device)
    r = reconstruct(model.net, x, p.sigma).detach().float().cpu()
    x = x.cpu()
    xc = x - x.mean(dim=(1, 2, 3), keepdim=True)
    rc = r - r.mean(dim=(1, 2, 3), keepdim=True)
    ncc = (xc * rc).sum(dim=(1, 2, 3)) / (xc.flatten(1).norm(dim=1) * rc.flatten(1).norm(dim=1)).clamp_min(1e-12)
    return {
        "rmse": float((r - x).square().mean().sqrt()),
        "data_rms_about_mean": float(xc.square().mean().sqrt()),
        "ncc": float(ncc.mean()),
        "n": len(images),
    }


# ----------------------------------------------------------------------------- one run


def _pixels(model, x: torch.Tensor) -> torch.Tensor:
    """Model space -> [0, 255] pixels as the PNGs show them (clipped)."""
    return to_pixels(x.detach().cpu(), model.mean).clamp(0, 255)


def run(
    preset: Preset,
    images: Sequence[Image.Image],
    out: str | Path,
    *,
    figure: str,
    data_name: str,
    scale: str,
    shrunk: dict[str, Any] | None = None,
    notes: Sequence[str] = (),
    device: Optional[torch.device] = None,
    n_samples: int = 4,
    sample_size: Optional[int] = None,
    preview_every: Optional[int] = None,
    reference: Optional[Sequence[Image.Image]] = None,
    reference_name: str = "",
    n_reconstructions: int = 4,
    extra_inits: Sequence[str] = ("noise", "zeros"),
    show_filters: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Learn ``preset`` on ``images``, synthesize, write the pictures and ``metrics.json`` in ``out``.

    ``reference``: other real images of the same kind (held-out faces) evaluated against the data
    like the samples, as a second "real floor" for object models (the library's floor splits the
    first image in halves, which suits textures, not objects).
    ``extra_inits``: besides the default init, also synthesize from these starts (skipping the
    default one) and evaluate them, so a model whose default continues its persistent chains is
    also shown starting afresh; the first one goes into the panel.
    ``show_filters``: put the first layer's filters into the panel too (always in filters.png).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = device or pick_device("cpu")
    ckpt = out / "model.safetensors"
    if ckpt.exists():
        ckpt.unlink()  # pipeline.train resumes from an existing checkpoint: always start fresh here
    previews = out / "previews"
    previews.mkdir(exist_ok=True)
    for old in previews.glob("*.png"):
        old.unlink()
    code = code_version()  # at the start: the code this process imported
    every = preview_every or max(1, preset.total_iterations // 30)
    held: dict[str, Any] = {}
    t0 = time.monotonic()
    last_log = [t0]

    def on_progress(learner, progress) -> None:
        held["learner"] = learner
        if progress.iteration % every == 0 or progress.iteration == progress.total or progress.iteration == 1:
            grid = make_grid(to_pil_images(learner.synthesis, learner.model.mean))
            grid.save(previews / f"iter_{progress.iteration:05d}.png")
        now = time.monotonic()
        if now - last_log[0] > 30 or progress.iteration == progress.total:
            last_log[0] = now
            log(
                f"[{figure} {data_name} {scale}] it {progress.iteration}/{progress.total} stage "
                f"{progress.stage}/{progress.n_stages} f_obs {progress.f_obs:.4g} f_syn {progress.f_syn:.4g} "
                f"elapsed {progress.elapsed:.0f}s eta {progress.eta or 0:.0f}s"
            )

    model = train(list(images), preset, ckpt, device=device, checkpoint_every=max(50, every), resume=False,
                  on_progress=on_progress)
    t_train = time.monotonic() - t0
    learner = held.get("learner")

    # pictures of what learning saw
    data = load_pixels(list(images), preset.image_size, preset.resize)  # [N, 3, S, S] in [0, 255]
    exemplar = make_grid([Image.fromarray(a) for a in data.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()])
    exemplar.save(out / "exemplar.png")
    chains_x = learner.synthesis if learner is not None and learner.synthesis is not None else None
    if chains_x is not None:
        make_grid(to_pil_images(chains_x, model.mean)).save(out / "chains.png")

    # fresh synthesis at the model's default init
    t1 = time.monotonic()
    persistent = learner.chains if learner is not None else None
    from models.pipeline import default_init

    init = default_init(model, persistent, sample_size)
    x = synthesize(model, n_samples, size=sample_size, seed=0, init=init, chains=persistent)
    t_sample = time.monotonic() - t1
    _, samples_grid = sample_images(model, x)
    samples_grid.save(out / "samples.png")
    t_extra = time.monotonic()
    extras: dict[str, torch.Tensor] = {}
    extra_grids: dict[str, Image.Image] = {}
    for how in extra_inits:
        if how == init or (how == "persistent" and persistent is None):
            continue
        extras[how] = synthesize(model, n_samples, size=sample_size, seed=0, init=how, chains=persistent)
        extra_grids[how] = sample_images(model, extras[how])[1]
        extra_grids[how].save(out / f"samples_{how}.png")
    t_extra = time.monotonic() - t_extra
    filters = filters_png(model, out / "filters.png")

    # the auto-encoder: each observed image beside sigma^2 df/dI
    pairs = []
    for img in list(images)[:n_reconstructions]:
        original, rebuilt = reconstruct_image(model, img)
        pairs += [original, rebuilt]
    recon = make_grid(pairs, columns=2)
    recon.save(out / "reconstruction.png")

    panel = hstack(
        [
            labelled(exemplar, "exemplar"),
            *([labelled(Image.open(out / "chains.png"), "learned chains")] if chains_x is not None else []),
            labelled(samples_grid, f"fresh samples ({init})"),
            *([labelled(next(iter(extra_grids.values())), f"from {next(iter(extra_grids))} (extra)")] if extra_grids else []),
            labelled(recon, "data | reconstruction"),
            *([labelled(filters, "layer-1 filters")] if show_filters else []),
        ]
    )
    panel.save(out / "panel.png")

    # learning curve
    history = model.history
    with open(out / "learning_curve.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["iteration", "stage", "f_obs", "f_syn", "gap"])
        w.writeheader()
        for h in history:
            w.writerow({k: h.get(k) for k in w.fieldnames})
    curve_png(history, out / "learning_curve.png")

    # metrics
    t2 = time.monotonic()
    metrics: dict[str, Any] = {
        "samples": evaluate(_pixels(model, x), data, seed=0, num_threads=torch.get_num_threads()),
    }
    metrics["samples"]["init"] = init
    metrics["samples"]["n"] = int(len(x))
    metrics["samples"]["size"] = int(x.shape[-1])
    for how, xe in extras.items():
        metrics[f"samples_{how}"] = evaluate(_pixels(model, xe), data, seed=0, num_threads=torch.get_num_threads())
        metrics[f"samples_{how}"]["init"] = how
    if chains_x is not None:
        metrics["chains"] = evaluate(_pixels(model, chains_x), data, seed=0, num_threads=torch.get_num_threads())
    metrics["reconstruction"] = {"data": reconstruction_metrics(model, images)}
    if reference:
        metrics["reconstruction"]["reference"] = reconstruction_metrics(model, reference)
    if reference:
        ref = load_pixels(list(reference), preset.image_size, preset.resize)
        metrics["reference"] = evaluate(ref, data, seed=0, num_threads=torch.get_num_threads())
        metrics["reference"]["what"] = reference_name
    t_eval = time.monotonic() - t2

    last = history[-1] if history else {}
    result = {
        "figure": figure,
        "data": data_name,
        "scale": scale,
        "n_images": len(images),
        "image_size": preset.image_size,
        "preset": preset.to_dict(),
        "shrunk": shrunk or {},
        "notes": list(notes),
        "final": {"f_obs": last.get("f_obs"), "f_syn": last.get("f_syn"), "gap": last.get("gap"),
                  "iterations": len(history)},
        "metrics": metrics,
        "wall_time_s": {"train": round(t_train, 1), "sample": round(t_sample, 1),
                        "sample_extra_inits": round(t_extra, 1), "eval": round(t_eval, 1),
                        "total": round(time.monotonic() - t0, 1)},
        "machine": machine(device),
        "code": code,
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    s = metrics["samples"]
    log(
        f"[{figure} {data_name} {scale}] done in {result['wall_time_s']['total']:.0f}s: samples swd {s['patch_swd']:.3f} "
        f"(floor {s['floor']['patch_swd']:.3f}) gram {s['gram']:.3f} ({s['floor']['gram']:.3f}) spectrum "
        f"{s['spectrum']:.3f} ({s['floor']['spectrum']:.3f}) copy {s['copy_max_ncc']:.3f} "
        f"({s['floor']['copy_max_ncc']:.3f}) diversity {s['diversity']:.1f} -> {out}"
    )
    for how in extras:
        e = metrics[f"samples_{how}"]
        log(f"    from {how}: swd {e['patch_swd']:.3f} gram {e['gram']:.3f} spectrum {e['spectrum']:.3f} "
            f"copy {e['copy_max_ncc']:.3f} diversity {e['diversity']:.1f}")
    return result


# ----------------------------------------------------------------------------- command line


def parser(description: str, data_choices: Sequence[str], default_data: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--scale", choices=("paper", "cpu"), default="cpu",
                   help="paper: the release's settings exactly (meant for a GPU); cpu: the same recipe shrunk")
    p.add_argument("--data", choices=tuple(data_choices), default=default_data)
    p.add_argument("--out", default=None, help="output folder (default experiments/out/<fig>/<data>-<scale>/)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda for --scale paper when present, else cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default GCN_TORCH_THREADS or 1)")
    p.add_argument("--samples", type=int, default=4, help="fresh samples to synthesize")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any preset field after the scale is applied (repeatable)")
    return p


def resolve(args: argparse.Namespace, figure: str) -> tuple[torch.device, Path]:
    set_threads(args.threads)
    if args.device:
        device = pick_device(args.device)
    else:
        device = pick_device("cuda" if args.scale == "paper" and torch.cuda.is_available() else "cpu")
    out = Path(args.out) if args.out else ROOT / "experiments" / "out" / figure / f"{args.data}-{args.scale}"
    return device, out


def shrink(preset: Preset, changes: dict[str, Any], overrides: Sequence[str]) -> tuple[Preset, dict[str, Any]]:
    """Apply the CPU-scale changes and command-line overrides; return the preset and a record of
    every field that differs from the release's (``{field: {"paper": ..., "run": ...}}``)."""
    p = preset.replace(**changes) if changes else preset
    if overrides:
        p = p.with_overrides(list(overrides))
    before, after = preset.to_dict(), p.to_dict()
    diff = {k: {"paper": before[k], "run": after[k]} for k in after if after[k] != before[k]}
    return p, diff
