"""Models: start learning (a job), list and inspect learned models, download weights, and ask a
model for samples or reconstructions (more jobs)."""

from __future__ import annotations

from typing import Annotated, Optional

from fastapi import APIRouter, File, Query, Response, UploadFile
from fastapi.responses import FileResponse

from service.artifacts import keys, png_bytes
from service.db import TrainedModel
from service.ingest import UploadError
from service.jobs import BadCursor, JobKind, new_id
from service.presets import PresetProblem, resolve
from service.submit import BrokerUnavailable, submit

from ..deps import Artifacts, Queue, SettingsDep, Store
from ..problems import NotFound, NotReady, Problem, invalid, responses
from ..schemas import JobOut, ModelCreate, ModelOut, ModelPage, SampleCreate
from .datasets import read_upload, upload_problem

router = APIRouter(prefix="/v1/models", tags=["models"])

ACCEPTED = {"description": "Accepted: the job is queued; follow Location.", "headers": {
    "Location": {"description": "The job's URL.", "schema": {"type": "string"}}}}


def accepted(job, response: Response) -> JobOut:
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobOut.of(job)


def unavailable(e: BrokerUnavailable) -> Problem:
    return Problem(503, f"the job queue is unavailable; job {e.job_id} was marked failed",
                   type="/problems/queue-unavailable", job_id=e.job_id)


def ready_model(store, model_id: str) -> TrainedModel:
    """The model, or 404 (never existed) / 409 (its learning job has not succeeded)."""
    m = store.model(model_id)
    if m is not None:
        return m
    job = store.learn_job_for_model(model_id)
    if job is not None:
        raise NotReady(job.id, job.status, f"model {model_id} is not ready: its learning job {job.id} is {job.status}")
    raise NotFound("model", model_id)


@router.post("", status_code=202, response_model=JobOut, responses={202: ACCEPTED, **responses(422, 503)},
             summary="Learn a model from a dataset (starts a job)")
def create_model(body: ModelCreate, response: Response, store: Store, queue: Queue) -> JobOut:
    if store.dataset(body.dataset_id) is None:
        raise invalid("dataset_id", f"no dataset with id {body.dataset_id!r}")
    overrides = body.overrides.as_dict()
    try:
        preset = resolve(body.preset, overrides)
    except PresetProblem as e:
        raise invalid(e.field, str(e)) from None
    model_id = new_id()
    params = {"preset": body.preset, "overrides": overrides, "iterations": preset.total_iterations}
    try:
        job = submit(store, queue, JobKind.learn, params, dataset_id=body.dataset_id, model_id=model_id,
                     total=preset.total_iterations)
    except BrokerUnavailable as e:
        raise unavailable(e) from None
    return accepted(job, response)


@router.get("", response_model=ModelPage, responses=responses(422))
def list_models(store: Store, limit: Annotated[int, Query(ge=1, le=100)] = 20,
                cursor: Annotated[Optional[str], Query()] = None) -> ModelPage:
    try:
        rows, next_cursor = store.models(limit=limit, cursor=cursor)
    except BadCursor as e:
        raise Problem(422, f"cursor: {e}", type="/problems/validation",
                      errors=[{"field": "cursor", "location": "query", "message": str(e), "type": "value_error"}]) from None
    return ModelPage(items=[ModelOut.of(m) for m in rows], next_cursor=next_cursor)


@router.get("/{model_id}", response_model=ModelOut, responses=responses(404, 409))
def get_model(model_id: str, store: Store) -> ModelOut:
    return ModelOut.of(ready_model(store, model_id))


@router.delete("/{model_id}", status_code=204, responses=responses(404, 409))
def delete_model(model_id: str, store: Store, artifacts: Artifacts) -> Response:
    m = ready_model(store, model_id)
    store.delete_model(m.id)
    artifacts.delete_tree(keys.model(m.id))
    return Response(status_code=204)


@router.get("/{model_id}/weights", response_class=FileResponse, responses={
    200: {"content": {"application/octet-stream": {}}, "description": "The safetensors checkpoint."},
    **responses(404, 409)})
def get_weights(model_id: str, store: Store, artifacts: Artifacts):
    m = ready_model(store, model_id)
    return FileResponse(artifacts.path(keys.model_weights(m.id)), media_type="application/octet-stream",
                        filename=f"{m.id}.safetensors")


@router.post("/{model_id}/samples", status_code=202, response_model=JobOut,
             responses={202: ACCEPTED, **responses(404, 409, 422, 503)}, summary="Synthesize new images (starts a job)")
def create_samples(model_id: str, body: SampleCreate, response: Response, store: Store, queue: Queue) -> JobOut:
    m = ready_model(store, model_id)
    size = body.size or m.image_size
    if m.kind == "object" and size != m.image_size:
        raise invalid("size", f"this object model synthesizes {m.image_size} x {m.image_size} images only")
    if body.init == "persistent":
        if m.learner != "ml" or m.chain_size is None:
            raise invalid("init", "persistent chains exist only for models learned by maximum likelihood (learner ml)")
        if size != m.chain_size:
            raise invalid("size", f"init=persistent continues chains of size {m.chain_size}; ask for that size")
    params = body.model_dump()
    try:
        steps = body.steps if body.steps is not None else int(m.config.get("sample_steps", 0))
        job = submit(store, queue, JobKind.sample, params, model_id=m.id, total=steps)
    except BrokerUnavailable as e:
        raise unavailable(e) from None
    return accepted(job, response)


@router.post("/{model_id}/reconstructions", status_code=202, response_model=JobOut,
             responses={202: ACCEPTED, **responses(404, 409, 413, 415, 422, 503)},
             summary="Encode and decode an image with the model (starts a job)")
def create_reconstruction(
    model_id: str,
    image: Annotated[UploadFile, File(description="A PNG, JPEG or WebP image.")],
    response: Response, settings: SettingsDep, store: Store, queue: Queue, artifacts: Artifacts,
) -> JobOut:
    m = ready_model(store, model_id)
    try:
        decoded = read_upload(image, field="image", label="image", max_bytes=settings.max_upload_bytes,
                              max_pixels=settings.max_image_pixels)
    except UploadError as e:
        raise upload_problem(e) from None
    job_id = new_id()
    artifacts.put(keys.job_input(job_id), png_bytes(decoded))
    try:
        job = submit(store, queue, JobKind.reconstruct, {"width": decoded.width, "height": decoded.height},
                     model_id=m.id, job_id=job_id, total=1)
    except BrokerUnavailable as e:
        raise unavailable(e) from None
    return accepted(job, response)
