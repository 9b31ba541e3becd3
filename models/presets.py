"""Named presets: every setting of an experiment in one place, as data.

A preset records the authors' settings for one figure of the release (``texture`` = figure 1,
``codebook`` = figure 2, ``object`` = figure 3, ``cd`` = figure 4) or a small recipe that learns
something visible on a laptop CPU in a minute or two (``texture-fast``, ``object-fast``).
Any field can be overridden (``preset.replace(iterations=10)`` or ``key=value`` strings from the
command line), so a preset is the whole, reproducible description of a run.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any


class PresetError(ValueError):
    """A preset name or override that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class ConvSpec:
    """One conv layer of the energy net (always followed by ReLU)."""

    out_channels: int
    kernel: int
    stride: int = 1
    padding: int = 0


# The release's `frame_3` network, used by every experiment of the paper.
FRAME_3 = (
    ConvSpec(100, 15, 3, 2),
    ConvSpec(64, 5, 1, 2),
    ConvSpec(30, 3, 1, 2),
)


@dataclass(frozen=True)
class Preset:
    """Everything that defines a learning and sampling run.

    Units follow the release: pixels in [0, 255] minus a mean image, reference distribution
    N(0, sigma^2 Id), Langevin step size ``step_size`` (the paper's delta).
    """

    name: str
    description: str = ""
    kind: str = "texture"  # texture | codebook | object: decides the top of the net
    layers: tuple[ConvSpec, ...] = FRAME_3
    image_size: int = 224
    resize: str = "crop"  # crop: shorter side to image_size, centre crop; stretch: the release's imresize
    mean: str = "imagenet"  # imagenet: the release's channel mean; data: the observed images' channel mean
    sigma: float = 1.0
    step_size: float = 0.3
    langevin_steps: int = 10
    schedule: str = "layer_by_layer"  # layer_by_layer | end_to_end
    iterations: int = 700  # per stage for layer_by_layer, in all for end_to_end
    # ml: persistent chains (the release's maximum likelihood) | cd: chains restart at the data |
    # short_run: chains restart from a draw of the reference N(0, sigma^2 Id) every iteration, so
    # that sampling later (from noise, langevin_steps steps) is exactly what learning saw |
    # recovery: chains restart from observed images with a fraction recovery_drop of their pixels
    # dropped (filled by a blur of the others) and run with the known pixels clamped, so that
    # recovery later (models/inpaint.py: the same start, langevin_steps steps) is what learning saw
    learner: str = "ml"
    optimizer: str = "release"  # release: the release's SGD rule | adam
    lr: float = 5e-4  # Gamma
    lr_stage_factor: float = 0.5  # Gamma is multiplied by this at each new stage
    bias_lr_mult: float = 2.0
    weight_decay: float = 1e-4
    momentum: float = 0.0
    area_norm: bool = True  # divide each layer's gradient by its output map's H * W
    clip: float = 20.0
    clip_mode: str = "abs"  # abs: rescale when max|g| > clip; max: when the largest positive entry > clip
    adam_betas: tuple[float, float] = (0.5, 0.999)
    n_chains: int = 1
    sample_steps: int = 300  # default Langevin steps when sampling a learned model from zeros
    init_std: float = 0.01
    seed: int = 0
    preview_every: int = 50
    # K > 1: one net with K outputs, learned from K datasets (each category against the Gaussian
    # base category q); the lower layers are shared, the top is one channel group (sum top) or one
    # FC unit (fc top) per category. Needs schedule end_to_end.
    categories: int = 1
    recovery_drop: float = 0.5  # learner recovery: the fraction of pixels dropped from each chain's start

    # ---- derived -------------------------------------------------------------------------
    @property
    def top(self) -> str:
        """Texture and codebook models sum the top ReLU map; object models add one FC unit."""
        return "fc" if self.kind == "object" else "sum"

    @property
    def n_stages(self) -> int:
        return len(self.layers) if self.schedule == "layer_by_layer" else 1

    @property
    def total_iterations(self) -> int:
        return self.iterations * self.n_stages

    # ---- conversion ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["layers"] = [dataclasses.asdict(c) for c in self.layers]
        d["adam_betas"] = list(self.adam_betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preset":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise PresetError(f"unknown preset field(s): {', '.join(unknown)}")
        d = dict(d)
        if "layers" in d:
            d["layers"] = tuple(_conv_spec(x) for x in d["layers"])
        if "adam_betas" in d:
            d["adam_betas"] = tuple(float(b) for b in d["adam_betas"])
        return cls(**d).validated()

    def replace(self, **changes: Any) -> "Preset":
        """A copy with some fields changed, checked like any preset."""
        return Preset.from_dict({**self.to_dict(), **changes})

    def with_overrides(self, assignments: list[str]) -> "Preset":
        """Apply ``key=value`` strings (values parsed as JSON when they parse, else as text)."""
        changes: dict[str, Any] = {}
        for a in assignments:
            key, sep, raw = a.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or not key:
                raise PresetError(f"override {a!r} is not of the form key=value")
            try:
                value: Any = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
            changes[key] = value
        return self.replace(**changes)

    def validated(self) -> "Preset":
        """Raise PresetError naming the field when a setting cannot work."""
        checks = [
            (self.kind in ("texture", "codebook", "object"), "kind", "texture, codebook or object"),
            (self.schedule in ("layer_by_layer", "end_to_end"), "schedule", "layer_by_layer or end_to_end"),
            (self.learner in ("ml", "cd", "short_run", "recovery"), "learner", "ml, cd, short_run or recovery"),
            (0 < self.recovery_drop < 1, "recovery_drop", "strictly between 0 and 1"),
            (self.optimizer in ("release", "adam"), "optimizer", "release or adam"),
            (self.resize in ("crop", "stretch"), "resize", "crop or stretch"),
            (self.mean in ("imagenet", "data", "zero"), "mean", "imagenet, data or zero"),
            (self.clip_mode in ("abs", "max"), "clip_mode", "abs or max"),
            (8 <= self.image_size <= 4096, "image_size", "between 8 and 4096"),
            (self.sigma > 0, "sigma", "positive"),
            (self.step_size > 0, "step_size", "positive"),
            (self.langevin_steps >= 0, "langevin_steps", "0 or more"),
            (self.iterations >= 0, "iterations", "0 or more"),
            (self.lr > 0, "lr", "positive"),
            (self.lr_stage_factor > 0, "lr_stage_factor", "positive"),
            (self.clip > 0, "clip", "positive"),
            (0 <= self.momentum < 1, "momentum", "in [0, 1)"),
            (self.weight_decay >= 0, "weight_decay", "0 or more"),
            (1 <= self.n_chains <= 4096, "n_chains", "between 1 and 4096"),
            (self.sample_steps >= 0, "sample_steps", "0 or more"),
            (self.init_std > 0, "init_std", "positive"),
            (len(self.layers) >= 1, "layers", "at least one conv layer"),
            (self.preview_every >= 1, "preview_every", "1 or more"),
            (isinstance(self.categories, int) and 1 <= self.categories <= 64, "categories", "between 1 and 64"),
            (self.categories == 1 or self.schedule == "end_to_end", "categories",
             "1 with schedule layer_by_layer (several categories need schedule end_to_end)"),
        ]
        for ok, name, want in checks:
            if not ok:
                raise PresetError(f"{name} must be {want} (got {getattr(self, name)!r})")
        for i, c in enumerate(self.layers, 1):
            if min(c.out_channels, c.kernel, c.stride) < 1 or c.padding < 0:
                raise PresetError(f"layers[{i}] has a non-positive size: {c}")
        return self


def _conv_spec(x: Any) -> ConvSpec:
    if isinstance(x, ConvSpec):
        return x
    if isinstance(x, dict):
        return ConvSpec(**x)
    if isinstance(x, (list, tuple)) and 2 <= len(x) <= 4:
        return ConvSpec(*(int(v) for v in x))
    raise PresetError(f"a layer must be [out_channels, kernel, stride, padding], got {x!r}")


_PRESETS: dict[str, Preset] = {
    p.name: p.validated()
    for p in [
        Preset(
            name="texture",
            description="Figure 1 of the release: one texture, layer by layer, sum of layer-3 ReLU",
            kind="texture",
            langevin_steps=10,
            step_size=0.3,
            iterations=700,
            lr=5e-4,
            lr_stage_factor=0.5,
        ),
        Preset(
            name="codebook",
            description="Figure 2 of the release: one image, layer by layer, the frame layers' top",
            kind="codebook",
            langevin_steps=20,
            step_size=0.3,
            iterations=700,
            lr=1e-3,
            lr_stage_factor=1 / 2.5,
        ),
        Preset(
            name="object",
            description="Figure 3 of the release: a few aligned object images, layer by layer, + FC unit",
            kind="object",
            langevin_steps=30,
            step_size=0.3,
            iterations=600,
            lr=4e-3,
            lr_stage_factor=1.0,
        ),
        Preset(
            name="cd",
            description="Figure 4 of the release: contrastive divergence (T=1), end to end, object top",
            kind="object",
            learner="cd",
            schedule="end_to_end",
            langevin_steps=1,
            step_size=0.5,
            iterations=2000,
            lr=1e-4,
            momentum=0.9,
            clip=1.0,
            clip_mode="max",
        ),
        Preset(
            name="texture-fast",
            description="Small texture recipe for a laptop CPU: 64 px, two layers, Adam, 4 short-run chains from noise",
            kind="texture",
            layers=(ConvSpec(32, 7, 2, 3), ConvSpec(32, 5, 1, 2)),
            image_size=64,
            schedule="end_to_end",
            langevin_steps=40,
            sample_steps=40,
            learner="short_run",
            step_size=0.3,
            iterations=300,
            optimizer="adam",
            lr=0.002,
            n_chains=4,
            mean="data",
            preview_every=20,
        ),
        Preset(
            name="texture-recovery",
            description="Texture recipe for recovering missing pixels: short-run chains from the data with half "
                        "the pixels dropped, 10 clamped Langevin steps; recovers, does not synthesize from noise",
            kind="texture",
            layers=(ConvSpec(32, 7, 2, 3), ConvSpec(32, 5, 1, 2)),
            image_size=64,
            schedule="end_to_end",
            langevin_steps=10,
            sample_steps=10,
            learner="recovery",
            recovery_drop=0.5,
            step_size=0.3,
            iterations=1000,
            optimizer="adam",
            lr=0.002,
            n_chains=4,
            mean="data",
            preview_every=50,
        ),
        Preset(
            name="object-fast",
            description="Small object recipe for a laptop CPU: 48 px aligned images, two layers + FC, Adam, short-run chains",
            kind="object",
            layers=(ConvSpec(32, 7, 2, 3), ConvSpec(32, 5, 2, 2)),
            image_size=48,
            schedule="end_to_end",
            langevin_steps=40,
            sample_steps=40,
            learner="short_run",
            step_size=0.3,
            iterations=200,
            optimizer="adam",
            lr=0.002,
            n_chains=8,
            mean="data",
            preview_every=20,
        ),
    ]
}


def inpaint_steps(preset: Preset) -> int:
    """Langevin steps an inpainting takes by default: for a model learned for recovery (learner
    ``recovery``), the steps its recovery chains ran while it learned; for any other, as many as
    sampling takes."""
    return preset.langevin_steps if preset.learner == "recovery" else preset.sample_steps


def preset_names() -> list[str]:
    return list(_PRESETS)


def get_preset(name: str, overrides: dict[str, Any] | None = None) -> Preset:
    """The named preset, with ``overrides`` applied; PresetError for an unknown name or field."""
    try:
        p = _PRESETS[name]
    except KeyError:
        raise PresetError(f"unknown preset {name!r}; choose one of: {', '.join(_PRESETS)}") from None
    return p.replace(**overrides) if overrides else p
