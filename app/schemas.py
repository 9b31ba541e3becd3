"""Request and response bodies (pydantic v2): the OpenAPI document is built from these.

Numeric request parameters carry their bounds here, so an out-of-range value is a 422 naming
the field before any work is queued. Responses carry ``links`` so clients follow URLs rather
than build them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from service.db import Dataset, Job, TrainedModel
from service.jobs import TERMINAL, JobKind, JobStatus

MAX_SAMPLES = 64
MAX_SIZE = 1024
MAX_STEPS = 10_000
MAX_ITERATIONS = 100_000
MAX_CHAINS = 256
MAX_LAYERS = 6
MAX_CHANNELS = 512


# ---- datasets ------------------------------------------------------------------------------
class ImageSize(BaseModel):
    width: int
    height: int


class DatasetOut(BaseModel):
    id: str
    kind: Literal["texture", "object"]
    image_count: int
    sizes: list[ImageSize] = Field(description="Width and height of each uploaded image, in upload order.")
    created_at: datetime
    links: dict[str, Any]

    @classmethod
    def of(cls, d: Dataset) -> "DatasetOut":
        return cls(
            id=d.id, kind=d.kind, image_count=d.image_count, created_at=d.created_at,
            sizes=[ImageSize(width=w, height=h) for w, h in d.sizes],
            links={"self": f"/v1/datasets/{d.id}",
                   "images": [f"/v1/datasets/{d.id}/images/{k}.png" for k in range(d.image_count)]},
        )


# ---- models --------------------------------------------------------------------------------
class ConvLayer(BaseModel):
    """One conv layer of the energy net (followed by ReLU)."""

    model_config = ConfigDict(extra="forbid")

    out_channels: int = Field(ge=1, le=MAX_CHANNELS)
    kernel: int = Field(ge=1, le=31)
    stride: int = Field(1, ge=1, le=8)
    padding: int = Field(0, ge=0, le=15)


class PresetOverrides(BaseModel):
    """Changes to the preset's fields (``GET /v1/presets`` shows every preset in full). Only these
    fields can be changed, each within bounds that keep a job's memory and time finite; the
    whole job's tensor memory is also estimated and bounded (``GCN_MAX_JOB_MEMORY_MB``)."""

    model_config = ConfigDict(extra="forbid")

    iterations: Optional[int] = Field(None, ge=1, le=MAX_ITERATIONS, description="Per stage when layer by layer.")
    image_size: Optional[int] = Field(None, ge=8, le=MAX_SIZE, description="Side of the learned images, in pixels.")
    langevin_steps: Optional[int] = Field(None, ge=0, le=1000, description="Langevin steps per learning iteration.")
    sample_steps: Optional[int] = Field(None, ge=0, le=MAX_STEPS, description="Default Langevin steps when sampling.")
    n_chains: Optional[int] = Field(None, ge=1, le=MAX_CHAINS, description="Synthesized images per iteration.")
    seed: Optional[int] = Field(None, ge=0, le=2**31 - 1)
    step_size: Optional[float] = Field(None, gt=0, le=100, description="Langevin step size (the paper's delta).")
    sigma: Optional[float] = Field(None, gt=0, le=10_000, description="Standard deviation of the reference distribution.")
    lr: Optional[float] = Field(None, gt=0, le=10, description="Learning rate (Gamma).")
    lr_stage_factor: Optional[float] = Field(None, gt=0, le=10)
    bias_lr_mult: Optional[float] = Field(None, gt=0, le=100)
    weight_decay: Optional[float] = Field(None, ge=0, le=1)
    momentum: Optional[float] = Field(None, ge=0, lt=1)
    clip: Optional[float] = Field(None, gt=0, le=1e6)
    clip_mode: Optional[Literal["abs", "max"]] = None
    init_std: Optional[float] = Field(None, gt=0, le=10)
    adam_betas: Optional[tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]]] = None
    area_norm: Optional[bool] = None
    preview_every: Optional[int] = Field(None, ge=1, le=MAX_ITERATIONS)
    kind: Optional[Literal["texture", "codebook", "object"]] = None
    schedule: Optional[Literal["layer_by_layer", "end_to_end"]] = None
    learner: Optional[Literal["ml", "cd", "short_run"]] = None
    optimizer: Optional[Literal["release", "adam"]] = None
    resize: Optional[Literal["crop", "stretch"]] = None
    mean: Optional[Literal["imagenet", "data", "zero"]] = None
    layers: Optional[list[ConvLayer]] = Field(None, min_length=1, max_length=MAX_LAYERS)

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class ModelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset_id: str = Field(max_length=64, description="The dataset to learn from.")
    preset: str = Field("texture-fast", max_length=64, description="A preset name (GET /v1/presets).")
    overrides: PresetOverrides = Field(default_factory=PresetOverrides)


class CurvePoint(BaseModel):
    model_config = ConfigDict(extra="allow")

    iteration: int
    gap: float = Field(description="mean f(observed) - mean f(synthesized); learning drives it to zero.")


class ModelOut(BaseModel):
    id: str
    status: Literal["ready"] = "ready"
    dataset_id: str
    job_id: str
    preset: str
    kind: str
    learner: str
    image_size: int
    iterations: int
    config: dict[str, Any] = Field(description="The complete preset the model was learned with.")
    learning_curve: list[CurvePoint]
    created_at: datetime
    links: dict[str, str]

    @classmethod
    def of(cls, m: TrainedModel) -> "ModelOut":
        return cls(
            id=m.id, dataset_id=m.dataset_id, job_id=m.job_id, preset=m.preset, kind=m.kind, learner=m.learner,
            image_size=m.image_size, iterations=m.iterations, config=m.config, created_at=m.created_at,
            learning_curve=[CurvePoint(**p) for p in m.curve],
            links={"self": f"/v1/models/{m.id}", "weights": f"/v1/models/{m.id}/weights",
                   "samples": f"/v1/models/{m.id}/samples", "reconstructions": f"/v1/models/{m.id}/reconstructions",
                   "job": f"/v1/jobs/{m.job_id}"},
        )


class ModelPage(BaseModel):
    items: list[ModelOut]
    next_cursor: Optional[str] = None


class SampleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(4, ge=1, le=MAX_SAMPLES, description="Number of images.")
    size: Optional[int] = Field(None, ge=8, le=MAX_SIZE, description="Side in pixels; textures: any, objects: their own.")
    steps: Optional[int] = Field(None, ge=0, le=MAX_STEPS, description="Langevin steps (default: the preset's).")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Same seed, same images.")
    init: Optional[Literal["zeros", "noise", "persistent"]] = Field(
        None, description="Where chains start (default: the model's own choice).")


# ---- jobs ----------------------------------------------------------------------------------
class JobProgress(BaseModel):
    step: int
    total: int
    fraction: float = Field(ge=0, le=1)


class JobOut(BaseModel):
    id: str
    kind: JobKind
    status: JobStatus
    progress: JobProgress
    eta_seconds: Optional[float] = Field(None, description="Estimated seconds left, as of updated_at.")
    metrics: dict[str, Any] = Field(description="Learning: gap (energy gap), f_obs, f_syn, stage, lr; sampling: init, size.")
    error: Optional[str] = None
    cancel_requested: bool
    params: dict[str, Any]
    result: dict[str, Any]
    attempts: int
    dataset_id: Optional[str] = None
    model_id: Optional[str] = None
    created_at: datetime
    updated_at: datetime
    started_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None
    links: dict[str, Any]

    @classmethod
    def of(cls, j: Job) -> "JobOut":
        base = f"/v1/jobs/{j.id}"
        links: dict[str, Any] = {"self": base, "events": f"{base}/events", "cancel": f"{base}/cancel"}
        if j.kind == JobKind.learn.value:
            if j.has_preview:
                links["preview"] = f"{base}/preview.png"
            if j.status == JobStatus.succeeded.value and j.model_id:
                links["model"] = f"/v1/models/{j.model_id}"
                links["weights"] = f"/v1/models/{j.model_id}/weights"
        elif j.status == JobStatus.succeeded.value:
            links["images"] = [f"{base}/images/{k}.png" for k in range(int(j.result.get("images", 0)))]
            links["grid"] = f"{base}/grid.png"
        if j.model_id and j.kind != JobKind.learn.value:
            links["model"] = f"/v1/models/{j.model_id}"
        if j.dataset_id:
            links["dataset"] = f"/v1/datasets/{j.dataset_id}"
        total = max(j.total, 0)
        fraction = 1.0 if j.status == JobStatus.succeeded.value else (min(j.step / total, 1.0) if total else 0.0)
        return cls(
            id=j.id, kind=JobKind(j.kind), status=JobStatus(j.status),
            progress=JobProgress(step=j.step, total=total, fraction=fraction),
            eta_seconds=None if j.status in TERMINAL else j.eta_seconds, metrics=j.metrics or {}, error=j.error,
            cancel_requested=j.cancel_requested, params=j.params or {}, result=j.result or {}, attempts=j.attempts,
            dataset_id=j.dataset_id, model_id=j.model_id, created_at=j.created_at, updated_at=j.updated_at,
            started_at=j.started_at, finished_at=j.finished_at, links=links,
        )


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: Optional[str] = Field(None, description="Pass as ?cursor= for the next page; null on the last.")


class PresetOut(BaseModel):
    name: str
    description: str
    kind: str
    image_size: int
    config: dict[str, Any]
