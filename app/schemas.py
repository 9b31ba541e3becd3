"""Request and response bodies (pydantic v2): the OpenAPI document is built from these.

Numeric request parameters carry their bounds here, so an out-of-range value is a 422 naming
the field before any work is queued. Responses carry ``links`` so clients follow URLs rather
than build them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, WithJsonSchema, field_validator

from service.db import Dataset, TrainedModel
# The job document is built in the service layer, so that a worker can POST the very same document
# to a webhook; the API answers with it as it is.
from service.jobdoc import JobOut, JobProgress, WebhookAttempt, WebhookDeliveryOut, WebhookOut  # noqa: F401
from service.webhooks import EVENTS, MAX_URL, BadWebhook, check_url

from .problems import invalid

MAX_SAMPLES = 64
MAX_SIZE = 1024
MAX_STEPS = 10_000
MAX_ITERATIONS = 100_000
MAX_CHAINS = 256
MAX_LAYERS = 6
MAX_CHANNELS = 512
MAX_CATEGORIES = 16
MAX_CATEGORY_NAME = 40
CATEGORY_NAME = r"^[A-Za-z0-9_-]+$"


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


# ---- webhooks ------------------------------------------------------------------------------
class WebhookIn(BaseModel):
    """Where to POST the job document (signed: X-GCN-Signature) when the job ends, and while it
    runs if ``progress`` is asked for. Loopback and private addresses are refused unless the
    server allows them (GCN_WEBHOOK_ALLOW_PRIVATE)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=MAX_URL, pattern=r"^(?i:https?)://", description="An http:// or https:// URL.")
    events: list[Literal["completed", "progress"]] = Field(
        default_factory=lambda: ["completed"], min_length=1, max_length=2,
        description="completed: once, when the job succeeds, fails or is canceled (retried until delivered); "
                    "progress: while it runs, at most one per GCN_WEBHOOK_PROGRESS_INTERVAL s (best effort).")
    _fields: dict[str, str] = PrivateAttr(default_factory=lambda: {"url": "webhook.url", "events": "webhook.events"})

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        try:
            return check_url(value)
        except BadWebhook as e:
            raise ValueError(str(e)) from None

    def field(self, part: str) -> str:
        """The request field that carried ``part`` (url or events), for error messages."""
        return self._fields.get(part, f"webhook.{part}")

    @classmethod
    def from_form(cls, url: Optional[str], events: Optional[str]) -> Optional["WebhookIn"]:
        """From the multipart fields ``webhook_url`` and ``webhook_events`` (comma-separated);
        None when neither was sent; 422 naming the field otherwise."""
        if not url and not events:
            return None
        if not url:
            raise invalid("webhook_url", "required when webhook_events is given")
        names = [e.strip() for e in (events or "").split(",") if e.strip()] or ["completed"]
        for e in names:
            if e not in EVENTS:
                raise invalid("webhook_events", f"{e!r} is not an event; use {' and/or '.join(EVENTS)}")
        try:
            check_url(url)
        except BadWebhook as e:
            raise invalid("webhook_url", str(e)) from None
        hook = cls.model_construct(url=url, events=names)
        hook._fields = {"url": "webhook_url", "events": "webhook_events"}
        return hook


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
    learner: Optional[Literal["ml", "cd", "short_run", "recovery"]] = None
    recovery_drop: Optional[float] = Field(None, gt=0, lt=1, description=(
        "Learner recovery: the fraction of pixels dropped from each chain's start."))
    optimizer: Optional[Literal["release", "adam"]] = None
    resize: Optional[Literal["crop", "stretch"]] = None
    mean: Optional[Literal["imagenet", "data", "zero"]] = None
    layers: Optional[list[ConvLayer]] = Field(None, min_length=1, max_length=MAX_LAYERS)

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class CategoryIn(BaseModel):
    """One category of a model of several: a name and the dataset that shows it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_CATEGORY_NAME, pattern=CATEGORY_NAME,
                      description="Letters, digits, '_' and '-'; unique within the model. Samples name it.")
    dataset_id: str = Field(max_length=64, description="The dataset of this category's images.")


class ModelCreate(BaseModel):
    """Give ``dataset_id`` (a model of one category) or ``categories`` (one net with an output per
    category, each learned from its dataset against the Gaussian base category), not both."""

    model_config = ConfigDict(extra="forbid")

    dataset_id: Optional[str] = Field(None, max_length=64, description="The dataset to learn from (one category).")
    categories: Optional[list[CategoryIn]] = Field(
        None, min_length=2, max_length=MAX_CATEGORIES,
        description="Several categories, each from its own dataset (instead of dataset_id); their order is the "
                    "order of the model's outputs (category index 0, 1, ...). Needs a preset with schedule "
                    "end_to_end (texture-fast, object-fast, cd).")
    preset: str = Field("texture-fast", max_length=64, description="A preset name (GET /v1/presets).")
    overrides: PresetOverrides = Field(default_factory=PresetOverrides)
    webhook: Optional[WebhookIn] = Field(None, description="POST the job document here when the job ends.")


class CurvePoint(BaseModel):
    model_config = ConfigDict(extra="allow")

    iteration: int
    gap: float = Field(description="mean f(observed) - mean f(synthesized); learning drives it to zero.")


class CategoryOut(BaseModel):
    name: str
    dataset_id: str


class ModelOut(BaseModel):
    id: str
    status: Literal["ready"] = "ready"
    dataset_id: str = Field(description="The dataset it was learned from (with several categories: the first's).")
    categories: list[CategoryOut] = Field(
        description="Its categories in the order of the net's outputs (a sample's category is a name or an index "
                    "into this list); a model learned from one dataset has one, named default.")
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
            id=m.id, dataset_id=m.dataset_id, categories=[CategoryOut(**c) for c in m.category_list()],
            job_id=m.job_id, preset=m.preset, kind=m.kind, learner=m.learner,
            image_size=m.image_size, iterations=m.iterations, config=m.config, created_at=m.created_at,
            learning_curve=[CurvePoint(**p) for p in m.curve],
            links={"self": f"/v1/models/{m.id}", "weights": f"/v1/models/{m.id}/weights",
                   "samples": f"/v1/models/{m.id}/samples", "reconstructions": f"/v1/models/{m.id}/reconstructions",
                   "inpaintings": f"/v1/models/{m.id}/inpaintings",
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
    # Any + the schema by hand (rather than a union) so that a bad value is one error naming ``category``
    category: Annotated[Any, WithJsonSchema({"anyOf": [
        {"type": "integer", "minimum": 0, "maximum": MAX_CATEGORIES - 1},
        {"type": "string", "minLength": 1, "maxLength": MAX_CATEGORY_NAME},
        {"type": "null"}]})] = Field(
        None, description="Which of the model's categories to sample: a name (string) or an index (integer) into "
                          "the model's categories (default: the first). The job's result names it.")
    webhook: Optional[WebhookIn] = Field(None, description="POST the job document here when the job ends.")

    @field_validator("category")
    @classmethod
    def _category(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError("a category is a name (a string) or an index (an integer)")
        if isinstance(value, int) and not 0 <= value < MAX_CATEGORIES:
            raise ValueError(f"a category index is between 0 and {MAX_CATEGORIES - 1}")
        if isinstance(value, str) and not 1 <= len(value) <= MAX_CATEGORY_NAME:
            raise ValueError(f"a category name has 1 to {MAX_CATEGORY_NAME} characters")
        return value


# ---- jobs ----------------------------------------------------------------------------------
class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: Optional[str] = Field(None, description="Pass as ?cursor= for the next page; null on the last.")


class PresetOut(BaseModel):
    name: str
    description: str
    kind: str
    image_size: int
    config: dict[str, Any]
