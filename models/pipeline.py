"""Pipelines: the few calls that the command line and the workers make.

Each composes the pieces (images -> model space, ``GenerativeModel``, ``Learner``,
``LangevinSampler``, checkpoints) the way a diffusers pipeline composes a model and a scheduler,
so that the `gcn` command line and the service run exactly the same code.

Several categories: ``make_learner`` and ``train`` take ``{category_name: [sources, ...], ...}``
instead of a list of sources (one net with one output per category, learned from all of them;
the preset's ``categories`` is set from the number of names), and ``synthesize`` /
``reconstruct_image`` take ``category=`` (an index or a name).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional, Union

import torch
from PIL import Image

from . import checkpoint
from .langevin import StepCallback, init_chains
from .learner import Learner, Progress
from .model import GenerativeModel
from .precision import amp_if_faster, prepare_device, switch, use_amp
from .presets import Preset
from .reconstruction import reconstruct
from .transforms import channel_mean, load_pixels, make_grid, to_model_space, to_pil_images

ImageSource = str | Path | Image.Image
# a list of images (one category), or {category name: images} (one category per name, in order)
Sources = Union[Iterable[ImageSource], Mapping[str, Union[ImageSource, Iterable[ImageSource]]]]
INITS = ("zeros", "noise", "persistent")


def pick_device(name: Optional[str] = None) -> torch.device:
    """``name`` when given ('cpu', 'cuda', 'cuda:1'), else CUDA when present, else the CPU."""
    if name:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("CUDA was asked for but no CUDA device is available")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def observed_images(sources: Iterable[ImageSource], preset: Preset) -> tuple[torch.Tensor, torch.Tensor]:
    """Observed images in model space [N, 3, S, S] and the mean that was subtracted."""
    pixels = load_pixels(sources, preset.image_size, preset.resize)
    mean = channel_mean(preset.mean, pixels)
    return to_model_space(pixels, mean), mean


def split_sources(sources: Sources) -> tuple[list[ImageSource], Optional[list[int]], Optional[list[str]]]:
    """(every source, the category index of each, the category names); the last two are None for
    a plain list of sources. ValueError for a category without images."""
    if not isinstance(sources, Mapping):
        return list(sources), None, None
    if not sources:
        raise ValueError("no image categories were given")
    flat: list[ImageSource] = []
    labels: list[int] = []
    names = [str(name) for name in sources]
    for index, (name, items) in enumerate(sources.items()):
        items = [items] if isinstance(items, (str, Path, Image.Image)) else list(items)
        if not items:
            raise ValueError(f"category {name!r} has no images")
        flat += items
        labels += [index] * len(items)
    return flat, labels, names


def _with_categories(preset: Preset, k: int) -> Preset:
    """The preset with ``categories`` = k, the number of named categories of images."""
    if preset.categories == k:
        return preset
    if preset.categories == 1:
        return preset.replace(categories=k)  # PresetError (naming the field) for a layer-by-layer preset
    raise ValueError(f"the preset has categories={preset.categories} but {k} categories of images were given")


def make_learner(
    sources: Sources,
    preset: Preset,
    *,
    device: Optional[torch.device] = None,
    resume_from: Optional[str | Path] = None,
) -> Learner:
    """A learner for these images; from ``resume_from``'s state when that checkpoint has one.

    ``sources``: a list of images, or ``{category_name: [images, ...]}`` for a model of several
    categories (the preset's ``categories`` is set to the number of names; a preset that says
    another number of categories, or a layer-by-layer one, is refused).

    On resume the checkpoint's preset is kept, except ``iterations``, which is taken from
    ``preset`` so that a run can be extended; the category names must be the checkpoint's.
    """
    device = device or pick_device()
    prepare_device(device)
    flat, labels, names = split_sources(sources)
    if names is not None:
        preset = _with_categories(preset, len(names))
    if resume_from is not None and Path(resume_from).exists():
        model, state = checkpoint.load(resume_from, device)
        if state is not None:
            if model.categories > 1 and names is None:
                raise ValueError(f"{resume_from} has {model.categories} categories: give the images by category")
            if names is not None and len(names) > 1 and names != model.category_names:
                raise ValueError(f"{resume_from} was learned with categories {', '.join(model.category_names)}, "
                                 f"not {', '.join(names)}")
            model.preset = model.preset.replace(iterations=preset.iterations)
            pixels = load_pixels(flat, model.preset.image_size, model.preset.resize)
            learner = Learner(model, to_model_space(pixels, model.mean), labels=_labels(labels),
                              **_precision(device), cuda_graph=_cuda_graph(device))
            learner.load_state(*state)
            return learner
    observed, mean = observed_images(flat, preset)
    model = GenerativeModel.create(preset, mean, names).to(device)
    return Learner(model, observed, labels=_labels(labels), **_precision(device), cuda_graph=_cuda_graph(device))


def _precision(device: torch.device) -> dict[str, bool]:
    """The sampler's (and learner's) ``amp`` and ``amp_if_faster`` on ``device``: GCN_AMP and the
    hardware (``models.precision``)."""
    return {"amp": use_amp(device.type), "amp_if_faster": amp_if_faster(device.type)}


def _labels(labels: Optional[list[int]]) -> Optional[torch.Tensor]:
    return None if labels is None else torch.tensor(labels, dtype=torch.long)


def _cuda_graph(device: torch.device) -> bool:
    """Replay the Langevin step as a CUDA graph: opt-in (``GCN_CUDA_GRAPH=1``), CUDA only."""
    return device.type == "cuda" and switch("GCN_CUDA_GRAPH", "0") == "on"


def train(
    sources: Sources,
    preset: Preset,
    out: str | Path,
    *,
    device: Optional[torch.device] = None,
    checkpoint_every: int = 50,
    resume: bool = False,
    on_progress: Optional[Callable[[Learner, Progress], None]] = None,
) -> GenerativeModel:
    """Learn a model from ``sources`` (a list of images, or ``{category_name: [images, ...]}``
    for several categories: see ``make_learner``) and keep ``out`` (a safetensors checkpoint) up
    to date every ``checkpoint_every`` iterations and at the end. With ``resume``, an existing ``out`` written
    during learning is continued (its preset kept, ``iterations`` from ``preset``); without, it
    is replaced. A NaN/inf raises ``NumericalError`` before
    anything is written, so ``out`` keeps the last good state; ``Cancelled`` from ``on_progress``
    stops learning, and ``out`` holds the last periodic checkpoint (resume continues from it)."""
    learner = make_learner(sources, preset, device=device, resume_from=out if resume else None)

    def each(learner: Learner, progress: Progress) -> None:
        if progress.iteration % checkpoint_every == 0:
            checkpoint.save(out, learner.model, learner)
        if on_progress is not None:
            on_progress(learner, progress)

    learner.run(each)
    checkpoint.save(out, learner.model, learner)
    return learner.model


def default_init(model: GenerativeModel, chains: Optional[torch.Tensor], size: Optional[int] = None) -> str:
    """How to start sampling when the caller does not say.

    A model learned with persistent chains is a model *of those chains*: its synthesis continues
    them, as the release's figures show (``persistent``). Otherwise, or when the chains are missing
    or of another size, chains start at zeros, the mean image, as in the release. Short-run and
    recovery models start from a draw of the reference distribution (a recovery model learned
    to fill in images, not to synthesize: its samples from noise are rough).
    """
    size = size or model.preset.image_size
    if model.preset.learner in ("short_run", "recovery"):
        return "noise"
    if model.preset.learner == "ml" and chains is not None and chains.shape[-1] == size:
        return "persistent"
    return "zeros"


def synthesize(
    model: GenerativeModel,
    n: int,
    *,
    size: Optional[int] = None,
    steps: Optional[int] = None,
    seed: int = 0,
    init: Optional[str] = None,
    chains: Optional[torch.Tensor] = None,
    callback: Optional[StepCallback] = None,
    callback_every: int = 10,
    category: int | str = 0,
) -> torch.Tensor:
    """``n`` new images in model space by Langevin dynamics under the learned model.

    ``category`` (an index or a name of ``model.category_names``) picks which of the model's
    categories to sample; ValueError for an unknown one. Persistent chains are that category's.

    ``init``: zeros (the release's start, the mean image), noise (a draw from the reference
    distribution) or persistent (continue the learner's persistent chains, cycled to ``n``);
    None picks ``default_init``. Note that from exact zeros every position of a texture sees the
    same input, so only the Langevin noise breaks the symmetry: a draw from N(0, sigma^2 Id) is
    a better start for short-run models.
    Textures can be synthesized at any ``size``; object models only at their image size.
    """
    p = model.preset
    k = model.category_index(category)
    size = size or p.image_size
    steps = p.sample_steps if steps is None else steps
    device = model.device
    model.net.check_size((size, size))
    init = init or default_init(model, chains, size)
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; use one of {', '.join(INITS)}")
    generator = torch.Generator(device).manual_seed(seed)
    if init == "persistent":
        if chains is None:
            raise ValueError("init='persistent' needs a checkpoint written during learning (it has no chains)")
        if chains.shape[-1] != size or chains.shape[-2] != size:
            raise ValueError(f"init='persistent' continues chains of size {chains.shape[-1]}; ask for that size")
        chains = category_chains(model, chains, k)
        start = init_chains("data", n, (size, size), data=chains.to(device), device=device)
    else:
        start = init_chains(init, n, (size, size), sigma=p.sigma, generator=generator, device=device)
    prepare_device(device)
    sampler = model.sampler(n_steps=steps, **_precision(device), cuda_graph=_cuda_graph(device))
    if model.categories == 1:
        return sampler.sample(model.net, start, generator=generator, callback=callback, callback_every=callback_every)
    return sampler.sample(model.net, start, generator=generator, callback=callback, callback_every=callback_every,
                          labels=k)


def category_chains(model: GenerativeModel, chains: torch.Tensor, category: int | str) -> torch.Tensor:
    """The persistent chains of one category: a learner keeps ``n_chains`` per category, category
    by category (all of them for a single-category model)."""
    k = model.category_index(category)
    if model.categories == 1:
        return chains
    if len(chains) % model.categories:
        raise ValueError(f"{len(chains)} chains cannot be split among {model.categories} categories")
    return chains.reshape(model.categories, -1, *chains.shape[1:])[k]


def sample_images(model: GenerativeModel, x: torch.Tensor) -> tuple[list[Image.Image], Image.Image]:
    """Model-space samples -> PNG-ready images and their grid (exact inverse of the pixel convention)."""
    images = to_pil_images(x, model.mean)
    return images, make_grid(images)


def reconstruct_image(
    model: GenerativeModel, source: ImageSource, category: int | str = 0
) -> tuple[Image.Image, Image.Image]:
    """The auto-encoder view: the fitted input and sigma^2 df_k/dI (k = ``category``), both as images."""
    p = model.preset
    k = model.category_index(category)
    prepare_device(model.device)
    pixels = load_pixels([source], p.image_size, p.resize).to(model.device)
    x = to_model_space(pixels, model.mean)
    if model.categories == 1:
        recon = reconstruct(model.net, x, p.sigma)
    else:
        model.net.check_size(x.shape[-2:])
        recon = p.sigma**2 * model.net.score_and_grad(x, labels=k)[1]
    original, = to_pil_images(x, model.mean)
    rebuilt, = to_pil_images(recon, model.mean)
    return original, rebuilt


def preview(learner: Learner) -> Image.Image:
    """A grid of the latest synthesized images of a learning run."""
    x = learner.synthesis if learner.synthesis is not None else learner.chains
    if x is None:
        x = torch.zeros(1, 3, *learner.observed.shape[-2:])
    return make_grid(to_pil_images(x, learner.model.mean))
