"""The science half of the `gcn` command line: train, sample, reconstruct, inpaint, presets, eval, info.

Runs with no server at all. Every failure is one line on stderr and a non-zero exit (1 for a
run that failed, 2 for a bad command line); nothing here prints a traceback to a user.
"""

from __future__ import annotations

import glob
import json
import re
import sys
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(
    name="gcn",
    help="Learn a generative ConvNet (Xie et al., ICML 2016) from images and synthesize new ones.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"gcn: error: {message}", err=True)
    raise typer.Exit(code)


def _known_errors() -> tuple[type[BaseException], ...]:
    from . import CheckpointError, ImageError, NumericalError, PresetError

    return (CheckpointError, ImageError, NumericalError, PresetError, ValueError, OSError)


def _device(name: Optional[str]):
    from .pipeline import pick_device

    return pick_device(name)


@app.command()
def presets(as_json: bool = typer.Option(False, "--json", help="Print the full presets as JSON.")) -> None:
    """List the presets and their settings (any field can be changed with --set key=value)."""
    from .presets import get_preset, preset_names

    if as_json:
        typer.echo(json.dumps({n: get_preset(n).to_dict() for n in preset_names()}, indent=2))
        return
    w = max(len(n) for n in preset_names())
    head = f"{'name':<{w}} {'kind':<9} {'size':>4} {'layers':<22} {'schedule':<14} {'iters':>5} {'T':>3} {'delta':>5} {'lr':>7} {'opt':<7} {'learner':<9} chains"
    typer.echo(head)
    for n in preset_names():
        p = get_preset(n)
        layers = "-".join(f"{c.out_channels}@{c.kernel}/{c.stride}" for c in p.layers)
        typer.echo(
            f"{n:<{w}} {p.kind:<9} {p.image_size:>4} {layers:<22} {p.schedule:<14} {p.iterations:>5} "
            f"{p.langevin_steps:>3} {p.step_size:>5} {p.lr:>7.1e} {p.optimizer:<7} {p.learner:<9} {p.n_chains}"
        )
        typer.echo(f"{'':<{w}} {p.description}")


@app.command()
def train(
    images: Optional[List[Path]] = typer.Argument(None, help="Training images (one texture, or a few aligned objects)."),
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint to write (safetensors)."),
    categories: List[str] = typer.Option(
        [], "--category", "-c", metavar="NAME=PATH[,PATH...]",
        help="Instead of IMAGES: a category and its images (paths or globs, comma-separated); repeat it for a "
             "model of several categories, one net with an output per category (preset with schedule end_to_end)."),
    preset: str = typer.Option("texture-fast", "--preset", "-p", help="Preset name (see `gcn presets`)."),
    iterations: Optional[int] = typer.Option(None, "--iterations", "-n", help="Iterations (per stage when layer by layer)."),
    overrides: List[str] = typer.Option([], "--set", help="Override a preset field: key=value (repeatable)."),
    previews: Optional[Path] = typer.Option(None, help="Folder for preview PNGs (default: OUT.previews/)."),
    checkpoint_every: int = typer.Option(50, min=1, help="Write the checkpoint every N iterations."),
    resume: bool = typer.Option(False, "--resume", help="Continue learning from OUT's saved state."),
    force: bool = typer.Option(False, "--force", help="Overwrite OUT when it exists."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda or cuda:N (default: CUDA when present)."),
) -> None:
    """Learn a model from IMAGES (or from several categories of images, --category) and write it
    to OUT, with previews of the synthesis as it learns."""
    from tqdm import tqdm

    from .presets import get_preset
    from .transforms import make_grid, to_pil_images

    if bool(images) == bool(categories):
        fail("give the training images, or --category NAME=PATH[,PATH...] (repeatable), not both", 2)
    sources = [str(i) for i in images] if images else parse_categories(categories)
    try:
        p = get_preset(preset).with_overrides(overrides)
        if iterations is not None:
            p = p.replace(iterations=iterations)
        if out.exists() and not (resume or force):
            fail(f"{out} exists: pass --resume to continue learning or --force to overwrite", 2)
        if resume and not out.exists():
            fail(f"--resume: {out} does not exist", 2)
        if force and out.exists() and not resume:
            out.unlink()
        preview_dir = previews or out.with_name(out.name + ".previews")
        from .pipeline import train as run_training

        bars: list = []  # created at the first iteration, so that an early error prints one line only

        def on_progress(learner, progress) -> None:
            if not bars:
                bars.append(tqdm(total=progress.total, initial=progress.iteration - 1, unit="it", dynamic_ncols=True))
            bar = bars[0]
            bar.n = progress.iteration
            bar.set_postfix(stage=f"{progress.stage}/{progress.n_stages}", gap=f"{progress.gap:.3g}", refresh=False)
            bar.refresh()
            if progress.iteration % learner.preset.preview_every == 0 or progress.iteration == progress.total:
                grid = make_grid(to_pil_images(learner.synthesis, learner.model.mean))
                preview_dir.mkdir(parents=True, exist_ok=True)
                grid.save(preview_dir / f"preview_{progress.iteration:06d}.png")

        model = run_training(
            sources, p, out, device=_device(device),
            checkpoint_every=checkpoint_every, resume=resume, on_progress=on_progress,
        )
        for bar in bars:
            bar.close()
        last = model.history[-1] if model.history else {}
        named = f", categories {', '.join(model.category_names)}" if model.categories > 1 else ""
        typer.echo(f"wrote {out} ({len(model.history)} iterations, last gap {last.get('gap', float('nan')):.4g}"
                   f"{named}); previews in {preview_dir}")
    except typer.Exit:
        raise
    except _known_errors() as e:
        fail(str(e))


CATEGORY_NAME = re.compile(r"[A-Za-z0-9_-]{1,40}")


def parse_categories(specs: List[str]) -> dict[str, list[str]]:
    """``--category NAME=PATH[,PATH...]`` options -> {name: [paths]} in the order given; a path
    with ``*``, ``?`` or ``[`` is a glob (sorted). Exit 2 with one line for a malformed one."""
    out: dict[str, list[str]] = {}
    for spec in specs:
        name, sep, paths = spec.partition("=")
        name = name.strip()
        if not sep or not paths.strip():
            fail(f"--category {spec!r}: expected NAME=PATH[,PATH...]", 2)
        if not CATEGORY_NAME.fullmatch(name):
            fail(f"--category {spec!r}: a name is 1 to 40 letters, digits, '_' or '-'", 2)
        if name in out:
            fail(f"--category {name!r} is given twice; category names must be unique", 2)
        files: list[str] = []
        for pattern in (p.strip() for p in paths.split(",")):
            if not pattern:
                continue
            if glob.has_magic(pattern):
                matched = sorted(glob.glob(pattern))
                if not matched:
                    fail(f"--category {name}: {pattern} matches no file", 2)
                files += matched
            else:
                files.append(pattern)
        out[name] = files
    return out


def category_arg(model, value: Optional[str]):
    """``--category`` of sample/reconstruct/eval: a name of the model's, else an index."""
    if value is None:
        return 0
    if value in model.category_names or not value.strip().lstrip("-").isdigit():
        return value
    return int(value)


@app.command()
def sample(
    model_path: Path = typer.Argument(..., metavar="MODEL", help="Checkpoint written by `gcn train`."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the PNGs."),
    n: int = typer.Option(4, "--n", min=1, max=1024, help="Number of images."),
    size: Optional[int] = typer.Option(None, min=8, max=4096, help="Side in pixels (textures: any size)."),
    steps: Optional[int] = typer.Option(None, min=0, max=100000, help="Langevin steps (default: the preset's)."),
    seed: int = typer.Option(0, help="Random seed: the same seed gives the same images."),
    init: Optional[str] = typer.Option(None, help="zeros, noise or persistent (default: the model's own)."),
    category: Optional[str] = typer.Option(None, "--category", "-c", metavar="NAME|INDEX",
                                           help="Which category to sample (see `gcn info`; default: the first)."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda or cuda:N."),
) -> None:
    """Synthesize N images by Langevin dynamics; writes sample_000.png ... and grid.png."""
    from tqdm import tqdm

    from . import checkpoint
    from .pipeline import default_init, sample_images, synthesize

    try:
        model, state = checkpoint.load(model_path, _device(device))
        k = model.category_index(category_arg(model, category))
        chains = state[1].get("chains") if state else None
        how = init or default_init(model, chains)
        bars: list = []

        def on_step(t, total, _x) -> None:
            if not bars:
                bars.append(tqdm(total=total, unit="step", dynamic_ncols=True))
            bars[0].n = t
            bars[0].refresh()

        x = synthesize(model, n, size=size, steps=steps, seed=seed, init=how, chains=chains, callback=on_step,
                       category=k)
        for bar in bars:
            bar.close()
        images, grid = sample_images(model, x)
        out.mkdir(parents=True, exist_ok=True)
        for i, im in enumerate(images):
            im.save(out / f"sample_{i:03d}.png")
        grid.save(out / "grid.png")
        named = f" of category {model.category_names[k]}" if model.categories > 1 else ""
        typer.echo(f"wrote {len(images)} images{named} and grid.png to {out}")
    except _known_errors() as e:
        fail(str(e))


@app.command()
def reconstruct(
    model_path: Path = typer.Argument(..., metavar="MODEL"),
    image: Path = typer.Argument(..., help="Image to encode and decode."),
    out: Path = typer.Option(..., "--out", "-o", help="PNG for the reconstruction sigma^2 df/dI."),
    side_by_side: bool = typer.Option(False, help="Write the (fitted) input and the reconstruction side by side."),
    category: Optional[str] = typer.Option(None, "--category", "-c", metavar="NAME|INDEX",
                                           help="Whose df_k/dI (default: the first category)."),
    device: Optional[str] = typer.Option(None),
) -> None:
    """The auto-encoder view: reconstruct IMAGE as sigma^2 * df/dI under the model."""
    from . import checkpoint
    from .pipeline import reconstruct_image
    from .transforms import make_grid

    try:
        model, _ = checkpoint.load(model_path, _device(device))
        original, rebuilt = reconstruct_image(model, str(image), category=category_arg(model, category))
        out.parent.mkdir(parents=True, exist_ok=True)
        (make_grid([original, rebuilt], columns=2) if side_by_side else rebuilt).save(out)
        typer.echo(f"wrote {out}")
    except _known_errors() as e:
        fail(str(e))


@app.command()
def inpaint(
    model_path: Path = typer.Argument(..., metavar="MODEL"),
    image: Path = typer.Argument(..., help="The image to recover (its original, when known, gives the error)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for observed.png, recovered.png, original.png, grid.png."),
    mask: Optional[Path] = typer.Option(None, help="Mask image: white = missing pixels to fill in."),
    drop: Optional[float] = typer.Option(None, help="Instead of a mask: drop this fraction of pixels at random."),
    size: Optional[int] = typer.Option(None, min=8, max=4096, help="Side in pixels (textures: any size)."),
    steps: Optional[int] = typer.Option(None, min=0, max=100000, help="Langevin steps (default: the preset's)."),
    noise: bool = typer.Option(True, "--noise/--no-noise", help="Langevin with noise, or noise-free gradient steps."),
    init: Optional[str] = typer.Option(None, help="Start of the missing pixels: noise, mean or blur."),
    seed: int = typer.Option(0, help="Seed of the random mask and of the Langevin noise."),
    category: Optional[str] = typer.Option(None, "--category", "-c", metavar="NAME|INDEX",
                                           help="Which category's model recovers (default: the first)."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda or cuda:N."),
) -> None:
    """Recover missing pixels by Langevin dynamics on them alone, the known pixels clamped;
    prints the error on the missing pixels beside the mean and blur fills (JSON)."""
    from . import checkpoint
    from .inpaint import inpaint_image
    from .transforms import make_grid

    if (mask is None) == (drop is None):
        fail("give either --mask MASK.png or --drop FRACTION", 2)
    try:
        model, _ = checkpoint.load(model_path, _device(device))
        result = inpaint_image(model, str(image), mask=str(mask) if mask else None, drop=drop, size=size,
                               steps=steps, noise=noise, init=init, seed=seed,
                               category=model.category_index(category_arg(model, category)))
        out.mkdir(parents=True, exist_ok=True)
        result.observed.save(out / "observed.png")
        result.recovered.save(out / "recovered.png")
        result.original.save(out / "original.png")
        make_grid(result.images(), columns=3).save(out / "grid.png")
    except _known_errors() as e:
        fail(str(e))
    typer.echo(json.dumps({"missing_fraction": result.missing_fraction, **result.errors}, indent=2))


@app.command()
def info(model_path: Path = typer.Argument(..., metavar="MODEL")) -> None:
    """Print a checkpoint's config (preset, mean, depth, category names, learner counters) as JSON."""
    from . import checkpoint
    from .model import default_category_names

    try:
        config = checkpoint.read_config(model_path)
    except _known_errors() as e:
        fail(str(e))
    if "category_names" not in config:  # written before categories existed
        config["category_names"] = default_category_names(int((config.get("preset") or {}).get("categories", 1)))
    history = config.pop("history", [])
    config["history"] = {"iterations": len(history), "last": history[-1] if history else None}
    typer.echo(json.dumps(config, indent=2))


@app.command("eval")
def evaluate_model(
    model_path: Path = typer.Argument(..., metavar="MODEL"),
    images: List[Path] = typer.Argument(..., help="The observed images to compare against."),
    n: int = typer.Option(4, "--n", min=1, max=256),
    steps: Optional[int] = typer.Option(None, min=0),
    seed: int = typer.Option(0),
    init: Optional[str] = typer.Option(None),
    as_json: Optional[Path] = typer.Option(None, "--json", help="Also write the metrics to this JSON file."),
    category: Optional[str] = typer.Option(None, "--category", "-c", metavar="NAME|INDEX",
                                           help="Which category's samples (default: the first)."),
    device: Optional[str] = typer.Option(None),
) -> None:
    """Quality metrics of the model's samples against its data, with each metric's real floor."""
    from . import checkpoint
    from .metrics import evaluate
    from .pipeline import default_init, synthesize
    from .transforms import load_pixels, to_pixels

    try:
        model, state = checkpoint.load(model_path, _device(device))
        chains = state[1].get("chains") if state else None
        how = init or default_init(model, chains)
        k = model.category_index(category_arg(model, category))
        x = synthesize(model, n, steps=steps, seed=seed, init=how, chains=chains, category=k)
        data = load_pixels([str(i) for i in images], model.preset.image_size, model.preset.resize)
        metrics = evaluate(to_pixels(x, model.mean).clamp(0, 255).cpu(), data, seed=seed)
        metrics["init"] = how
        metrics["category"] = model.category_names[k]
    except _known_errors() as e:
        fail(str(e))
    text = json.dumps(metrics, indent=2)
    if as_json:
        as_json.write_text(text)
    typer.echo(text)


def set_threads_from_env() -> None:
    """``GCN_TORCH_THREADS=N`` caps torch's CPU threads (useful beside other work on few cores)."""
    import os

    threads = os.environ.get("GCN_TORCH_THREADS")
    if threads:
        import torch

        torch.set_num_threads(max(1, int(threads)))


def main() -> None:
    """Console entry point; also turns a stray KeyboardInterrupt into a one-line message."""
    set_threads_from_env()
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("gcn: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
