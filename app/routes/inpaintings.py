"""Inpainting (recovery): POST an image and a mask, or a fraction of pixels to drop, and a job
recovers the missing pixels by Langevin dynamics on them alone, the known pixels clamped."""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from fastapi import APIRouter, File, Form, UploadFile

from models.images import check_mask, known_pixels
from models.presets import Preset, PresetError, get_preset, inpaint_steps
from service.artifacts import keys, png_bytes
from service.ingest import UploadError, decode_image
from service.jobs import JobKind, new_id
from service.limits import TooBig, check as check_memory, top_multiplier

from ..deps import ServicesDep
from ..idempotency import Idempotent, IdempotencyKey, file_digest
from ..problems import Problem, invalid
from ..schemas import MAX_SIZE, MAX_STEPS, JobOut
from ..security import PrincipalDep
from .datasets import check_quota, read_bytes, upload_problem
from .models import (WebhookEventsForm, WebhookUrlForm, form_webhook, job_responses, ready_model, sample_category,
                     start)

router = APIRouter(prefix="/v1/models", tags=["models"])


def preset_of(m) -> Preset:
    """The preset a model row was learned with: its config, or (a row with a partial config) the
    config over the preset it names."""
    config = dict(m.config or {})
    try:
        return Preset.from_dict(config)
    except (PresetError, TypeError):
        return get_preset(m.preset, {k: v for k, v in config.items() if k != "name"})


@router.post("/{model_id}/inpaintings", status_code=202, response_model=JobOut,
             responses=job_responses(401, 404, 409, 410, 413, 415, 422, 503, 507),
             summary="Recover missing pixels of an image (starts a job)")
def create_inpainting(
    model_id: str,
    image: Annotated[UploadFile, File(description=(
        "The image (PNG, JPEG or WebP). When it is the complete original, the result reports the error on the "
        "missing pixels."))],
    services: ServicesDep,
    principal: PrincipalDep,
    mask: Annotated[Optional[UploadFile], File(description=(
        "A mask image: white marks the pixels to fill in, black the known ones (transparent counts as black). "
        "Fitted to the image's size the same way."))] = None,
    drop: Annotated[Optional[float], Form(gt=0, lt=1, description=(
        "Instead of a mask: drop this fraction of the pixels at random (seeded by seed)."))] = None,
    noise: Annotated[bool, Form(description=(
        "Langevin with noise (true) or noise-free gradient steps (false) on the missing pixels."))] = True,
    steps: Annotated[Optional[int], Form(ge=0, le=MAX_STEPS, description="Langevin steps (default: the preset's)."
                                         )] = None,
    init: Annotated[Optional[Literal["noise", "mean", "blur"]], Form(description=(
        "Where the missing pixels start: a draw of the reference distribution, the observed mean colour or a "
        "blur of the observed pixels (default: the model's own choice)."))] = None,
    size: Annotated[Optional[int], Form(ge=8, le=MAX_SIZE, description=(
        "Side in pixels the image is fitted to (textures: any; objects: their own)."))] = None,
    seed: Annotated[int, Form(ge=0, le=2**31 - 1, description="Seed of the random mask and the noise.")] = 0,
    category: Annotated[Optional[str], Form(max_length=40, description=(
        "A model of several categories: the category (a name, or an index) whose model recovers the image "
        "(default: the first)."))] = None,
    webhook_url: WebhookUrlForm = None,
    webhook_events: WebhookEventsForm = None,
    idempotency_key: IdempotencyKey = None,
):
    settings = services.settings
    if (mask is None) == (drop is None):
        field = "mask" if mask is None else "drop"
        raise invalid(field, "give either a mask image or a fraction of pixels to drop (not both, not neither)")
    try:
        data = read_bytes(image, field="image", label="image", max_bytes=settings.max_upload_bytes)
        mask_data = None if mask is None else read_bytes(mask, field="mask", label="mask",
                                                         max_bytes=settings.max_upload_bytes)
    except UploadError as e:
        raise upload_problem(e) from None
    params = {"drop": drop, "noise": noise, "steps": steps, "init": init, "size": size, "seed": seed}
    content = {"image": file_digest(data), "mask": None if mask_data is None else file_digest(mask_data), **params}
    if category is not None:
        content["category"] = category
    webhook = form_webhook(webhook_url, webhook_events, content)
    with Idempotent(services.db, principal, idempotency_key, f"POST /v1/models/{model_id}/inpaintings",
                    content, settings.idempotency_ttl) as idem:
        if idem.replay is not None:
            return idem.replay
        m = ready_model(services, principal, model_id)
        params["category"] = sample_category(m, category, form=True)
        side = size or m.image_size
        if m.kind == "object" and side != m.image_size:
            raise invalid("size", f"this object model works on {m.image_size} x {m.image_size} images only")
        layers = (m.config or {}).get("layers")
        if layers:
            try:
                check_memory(layers, side, 1, settings.max_job_memory_mb, size_field="size", batch_field="size",
                             top=top_multiplier(m.config or {}))
            except TooBig as e:
                raise invalid(e.field, str(e)) from None
        check_quota(services, 0)
        try:
            decoded = decode_image(data, field="image", label="image", max_bytes=settings.max_upload_bytes,
                                   max_pixels=settings.max_image_pixels)
            decoded_mask = None if mask_data is None else decode_image(
                mask_data, field="mask", label="mask", max_bytes=settings.max_upload_bytes,
                max_pixels=settings.max_image_pixels, as_mask=True)
        except UploadError as e:
            raise upload_problem(e) from None
        preset = preset_of(m)
        if decoded_mask is not None:  # a mask that hides nothing, or everything, is refused now, not by the worker
            try:
                check_mask(known_pixels(decoded_mask, side, preset.resize))
            except ValueError as e:
                raise invalid("mask", str(e)) from None
        encoded = png_bytes(decoded)
        encoded_mask = None if decoded_mask is None else png_bytes(decoded_mask)
        stored = len(encoded) + (len(encoded_mask) if encoded_mask else 0)
        check_quota(services, stored)
        job_id = new_id()
        services.artifacts.put(keys.job_input(job_id), encoded)
        if encoded_mask is not None:
            services.artifacts.put(keys.job_mask(job_id), encoded_mask)
        services.usage.add(stored)
        steps_total = steps if steps is not None else inpaint_steps(preset)
        try:
            job = start(services, principal, JobKind.inpaint,
                        {**params, "width": decoded.width, "height": decoded.height,
                         "mask": "uploaded" if encoded_mask is not None else "random"},
                        model_id=m.id, job_id=job_id, total=steps_total, webhook=webhook)
        except Problem:
            services.artifacts.delete_tree(keys.job(job_id))
            raise
        return idem.respond(202, JobOut.of(job), f"/v1/jobs/{job.id}")
