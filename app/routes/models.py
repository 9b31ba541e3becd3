"""Models: start learning (a job), list and inspect learned models, download weights, and ask a
model for samples or reconstructions (more jobs)."""

from __future__ import annotations

from typing import Annotated, Optional

from fastapi import APIRouter, File, Form, Query, Response, UploadFile
from fastapi.responses import FileResponse

from service.artifacts import keys, png_bytes
from service.auth import Principal
from service.db import Dataset, TrainedModel
from service.ingest import UploadError, decode_image
from service.jobs import BadCursor, JobKind, JobStatus, new_id
from service.limits import TooBig, check as check_memory, top_multiplier
from service.presets import PresetProblem, resolve
from service.submit import BrokerUnavailable, TooManyJobs, submit
from service.webhooks import MAX_URL, BadWebhook, admit

from ..deps import ServicesDep
from ..files import open_file
from ..idempotency import Idempotent, IdempotencyKey, file_digest
from ..problems import NotFound, NotReady, Problem, gone, invalid, missing, responses
from ..schemas import JobOut, ModelCreate, ModelOut, ModelPage, SampleCreate, WebhookIn
from ..security import PrincipalDep
from .datasets import check_quota, read_bytes, upload_problem, visible_dataset

router = APIRouter(prefix="/v1/models", tags=["models"])

ACCEPTED = {"description": "Accepted: the job is queued; follow Location.", "headers": {
    "Location": {"description": "The job's URL.", "schema": {"type": "string"}}}}


def job_responses(*statuses: int) -> dict:
    """202 with Location, the error statuses, and 429 with Retry-After."""
    out = {202: ACCEPTED, **responses(*statuses, 429)}
    out[429] = {**out[429], "description": "This API key has as many jobs queued as allowed (GCN_MAX_QUEUED_JOBS).",
                "headers": {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}}}
    return out


def unavailable(e: BrokerUnavailable) -> Problem:
    return Problem(503, f"the job queue is unavailable; job {e.job_id} was marked failed",
                   type="/problems/queue-unavailable", job_id=e.job_id)


def too_many(e: TooManyJobs) -> Problem:
    return Problem(429, str(e), type="/problems/too-many-jobs", headers={"Retry-After": str(e.retry_after)})


def ready_model(services, principal: Principal, model_id: str) -> TrainedModel:
    """The model, or 404 (never existed, or another key's) / 409 (its learning job has not succeeded)
    / 410 (the caller's, expired)."""
    store = services.store
    m = store.model(model_id)
    if m is not None:
        if not principal.owns(m.api_key_id):
            raise NotFound("model", model_id)
        return m
    expired = gone(store, principal, "model", model_id)
    if expired is not None:  # whatever its learning job's row still says
        raise expired
    job = store.learn_job_for_model(model_id)
    # a learning job that succeeded made the model: no row now means it was deleted (404)
    if job is not None and principal.owns(job.api_key_id) and job.status != JobStatus.succeeded.value:
        raise NotReady(job.id, job.status, f"model {model_id} is not ready: its learning job {job.id} is {job.status}")
    raise NotFound("model", model_id)


# The webhook of a multipart request (JSON bodies carry a ``webhook`` object instead).
WebhookUrlForm = Annotated[Optional[str], Form(max_length=MAX_URL, description=(
    "POST the job document here when the job ends (http:// or https://)."))]
WebhookEventsForm = Annotated[Optional[str], Form(max_length=64, description=(
    "Comma-separated: completed (the default) and/or progress."))]


def form_webhook(url: Optional[str], events: Optional[str], content: dict) -> Optional[WebhookIn]:
    """The webhook of a multipart request (422 naming the form field when it is bad), added to
    ``content``, the request's idempotency fingerprint."""
    webhook = WebhookIn.from_form(url, events)
    if webhook is not None:
        content["webhook"] = {"url": webhook.url, "events": webhook.events}
    return webhook


def start(services, principal: Principal, kind: JobKind, params: dict, *, webhook: Optional[WebhookIn] = None, **kw):
    """Submit a job for this principal within its limits: 429 / 503 problems otherwise.
    ``webhook``: from the request body (or ``WebhookIn.from_form``); a 422 naming its field when
    the server refuses it (e.g. a private address)."""
    settings = services.settings
    hook = None
    if webhook is not None:
        try:
            hook = admit(webhook.url, webhook.events, allow_private=settings.webhook_allow_private)
        except BadWebhook as e:
            raise invalid(webhook.field(e.part), str(e)) from None
    limit = None
    if principal.key_id is not None:
        limit = principal.max_queued_jobs if principal.max_queued_jobs is not None else settings.max_queued_jobs
    try:
        return submit(services.store, services.queue, kind, params, api_key_id=principal.key_id,
                      max_queued=limit, webhook=hook, **kw)
    except TooManyJobs as e:
        raise too_many(e) from None
    except BrokerUnavailable as e:
        raise unavailable(e) from None


@router.post("", status_code=202, response_model=JobOut,
             responses=job_responses(401, 409, 422, 503),
             summary="Learn a model from a dataset, or from several (one per category) (starts a job)")
def create_model(body: ModelCreate, services: ServicesDep, principal: PrincipalDep,
                 idempotency_key: IdempotencyKey = None):
    content = body.model_dump(mode="json")
    if content.get("categories") is None:  # the fingerprint of a request from before categories existed
        content.pop("categories", None)
    with Idempotent(services.db, principal, idempotency_key, "POST /v1/models", content,
                    services.settings.idempotency_ttl) as idem:
        if idem.replay is not None:
            return idem.replay
        datasets = learning_datasets(services, principal, body)
        overrides = body.overrides.as_dict()
        try:
            preset = resolve(body.preset, overrides)
        except PresetProblem as e:
            raise invalid(e.field, str(e)) from None
        if body.categories is not None:
            preset = with_categories(body.preset, overrides, len(body.categories))
        try:
            check_memory(preset.layers, preset.image_size,
                         preset.categories * preset.n_chains + sum(d.image_count for d in datasets),
                         services.settings.max_job_memory_mb, size_field="overrides.image_size",
                         batch_field="overrides.n_chains", layers_field="overrides.layers",
                         top=top_multiplier(preset.to_dict()))
        except TooBig as e:
            raise invalid(e.field, str(e)) from None
        model_id = new_id()
        params = {"preset": body.preset, "overrides": overrides, "iterations": preset.total_iterations}
        if body.categories is not None:
            params["categories"] = [{"name": c.name, "dataset_id": c.dataset_id} for c in body.categories]
        job = start(services, principal, JobKind.learn, params, dataset_id=datasets[0].id, model_id=model_id,
                    total=preset.total_iterations, webhook=body.webhook)
        return idem.respond(202, JobOut.of(job), f"/v1/jobs/{job.id}")


def learning_datasets(services, principal: Principal, body: ModelCreate) -> list[Dataset]:
    """The dataset of each category (one without categories); 422 naming the field at fault."""
    if body.categories is None:
        if body.dataset_id is None:
            raise invalid("dataset_id", "required: the dataset to learn from (or categories: several datasets, "
                                        "one per category)")
        return [_dataset_field(services, principal, body.dataset_id, "dataset_id")]
    if body.dataset_id is not None:
        raise invalid("categories", "give either dataset_id (one category) or categories (several), not both")
    seen: dict[str, int] = {}
    out = []
    for k, c in enumerate(body.categories):
        if c.name in seen:
            raise invalid(f"categories.{k}.name", f"{c.name!r} is already the name of category {seen[c.name]}; "
                                                  f"category names must be unique")
        seen[c.name] = k
        out.append(_dataset_field(services, principal, c.dataset_id, f"categories.{k}.dataset_id"))
    return out


def _dataset_field(services, principal: Principal, dataset_id: str, field: str) -> Dataset:
    """The dataset a request body names, or 422 on that field (saying so when it expired)."""
    dataset = services.store.dataset(dataset_id)
    if dataset is not None and principal.owns(dataset.api_key_id):
        return dataset
    expired = gone(services.store, principal, "dataset", dataset_id) if dataset is None else None
    raise invalid(field, expired.detail if expired is not None else f"no dataset with id {dataset_id!r}")


def with_categories(name: str, overrides: dict, k: int):
    """The preset (already checked with ``overrides``) of a model of ``k`` categories; 422 when it
    cannot have several (a layer-by-layer schedule), naming ``categories`` and the field that chose
    the schedule."""
    try:
        return resolve(name, {**overrides, "categories": k})
    except PresetProblem as e:
        cause = "overrides.schedule" if "schedule" in overrides else "preset"
        message = f"{e}; choose a preset with schedule end_to_end (such as texture-fast or object-fast)"
        raise Problem(422, f"categories: {message}", type="/problems/validation", errors=[
            {"field": field, "location": "body", "message": message, "type": "value_error"}
            for field in ("categories", cause)]) from None


@router.get("", response_model=ModelPage, responses=responses(401, 422))
def list_models(services: ServicesDep, principal: PrincipalDep, limit: Annotated[int, Query(ge=1, le=100)] = 20,
                cursor: Annotated[Optional[str], Query(max_length=200)] = None) -> ModelPage:
    try:
        rows, next_cursor = services.store.models(limit=limit, cursor=cursor,
                                                  api_key_id=None if principal.sees_all else principal.key_id)
    except BadCursor as e:
        raise Problem(422, f"cursor: {e}", type="/problems/validation",
                      errors=[{"field": "cursor", "location": "query", "message": str(e), "type": "value_error"}]) from None
    return ModelPage(items=[ModelOut.of(m) for m in rows], next_cursor=next_cursor)


@router.get("/{model_id}", response_model=ModelOut, responses=responses(401, 404, 409, 410))
def get_model(model_id: str, services: ServicesDep, principal: PrincipalDep) -> ModelOut:
    return ModelOut.of(ready_model(services, principal, model_id))


@router.delete("/{model_id}", status_code=204, responses=responses(401, 404, 409, 410))
def delete_model(model_id: str, services: ServicesDep, principal: PrincipalDep) -> Response:
    m = ready_model(services, principal, model_id)
    services.store.delete_model(m.id)
    services.artifacts.delete_tree(keys.model(m.id))
    return Response(status_code=204)


@router.get("/{model_id}/weights", response_class=FileResponse, responses={
    200: {"content": {"application/octet-stream": {}}, "description": "The safetensors checkpoint."},
    **responses(401, 404, 409, 410)})
def get_weights(model_id: str, services: ServicesDep, principal: PrincipalDep):
    m = ready_model(services, principal, model_id)
    # removed between the row read and now (cleanup: rows first, then files): 410 for the owner
    return open_file(services.artifacts.path(keys.model_weights(m.id)), "application/octet-stream",
                     lambda: missing(services.store, principal, "model", model_id),
                     headers={"Content-Disposition": f'attachment; filename="{m.id}.safetensors"'})


@router.post("/{model_id}/samples", status_code=202, response_model=JobOut,
             responses=job_responses(401, 404, 409, 410, 422, 503),
             summary="Synthesize new images (starts a job)")
def create_samples(model_id: str, body: SampleCreate, services: ServicesDep, principal: PrincipalDep,
                   idempotency_key: IdempotencyKey = None):
    content = body.model_dump(mode="json")
    if content.get("category") is None:  # the fingerprint of a request from before categories existed
        content.pop("category", None)
    with Idempotent(services.db, principal, idempotency_key, f"POST /v1/models/{model_id}/samples",
                    content, services.settings.idempotency_ttl) as idem:
        if idem.replay is not None:
            return idem.replay
        m = ready_model(services, principal, model_id)
        size = body.size or m.image_size
        if m.kind == "object" and size != m.image_size:
            raise invalid("size", f"this object model synthesizes {m.image_size} x {m.image_size} images only")
        if body.init == "persistent":
            if m.learner != "ml" or m.chain_size is None:
                raise invalid("init", "persistent chains exist only for models learned by maximum likelihood (learner ml)")
            if size != m.chain_size:
                raise invalid("size", f"init=persistent continues chains of size {m.chain_size}; ask for that size")
        layers = (m.config or {}).get("layers")
        if layers:
            try:
                check_memory(layers, size, body.n, services.settings.max_job_memory_mb, size_field="size",
                             batch_field="n", top=top_multiplier(m.config or {}))
            except TooBig as e:
                raise invalid(e.field, str(e)) from None
        params = body.model_dump(exclude={"webhook"})
        params["category"] = sample_category(m, body.category)
        steps = body.steps if body.steps is not None else int((m.config or {}).get("sample_steps", 0))
        job = start(services, principal, JobKind.sample, params, model_id=m.id, total=steps, webhook=body.webhook)
        return idem.respond(202, JobOut.of(job), f"/v1/jobs/{job.id}")


def sample_category(m: TrainedModel, category, *, form: bool = False) -> str:
    """The name of the asked category of ``m`` (None: the first); 422 naming ``category`` with the
    model's categories otherwise. ``form``: the value is a form field's text, so ASCII digits that
    are not a name are an index (in JSON a string is always a name)."""
    names = [c["name"] for c in m.category_list()]
    listed = ", ".join(f"{n} ({k})" for k, n in enumerate(names))
    if category is None:
        return names[0]
    if form and isinstance(category, str) and category not in names and category.isascii() and category.isdigit():
        category = int(category)
    if isinstance(category, str):
        if category in names:
            return category
        raise invalid("category", f"unknown category {category!r}; this model's categories are: {listed}")
    if 0 <= category < len(names):
        return names[category]
    raise invalid("category", f"category index {category} is out of range; this model's categories are: {listed}")


@router.post("/{model_id}/reconstructions", status_code=202, response_model=JobOut,
             responses=job_responses(401, 404, 409, 410, 413, 415, 422, 503, 507),
             summary="Encode and decode an image with the model (starts a job)")
def create_reconstruction(
    model_id: str,
    image: Annotated[UploadFile, File(description="A PNG, JPEG or WebP image (decided by content).")],
    services: ServicesDep, principal: PrincipalDep, idempotency_key: IdempotencyKey = None,
    category: Annotated[Optional[str], Form(max_length=40, description=(
        "A model of several categories: the category (a name, or an index) whose f_k reconstructs the image, "
        "sigma^2 df_k/dI (default: the first)."))] = None,
    webhook_url: WebhookUrlForm = None,
    webhook_events: WebhookEventsForm = None,
):
    settings = services.settings
    try:
        data = read_bytes(image, field="image", label="image", max_bytes=settings.max_upload_bytes)
    except UploadError as e:
        raise upload_problem(e) from None
    content = {"image": file_digest(data)}
    if category is not None:  # absent: the fingerprint of a request from before this field existed
        content["category"] = category
    webhook = form_webhook(webhook_url, webhook_events, content)
    with Idempotent(services.db, principal, idempotency_key, f"POST /v1/models/{model_id}/reconstructions",
                    content, settings.idempotency_ttl) as idem:
        if idem.replay is not None:
            return idem.replay
        m = ready_model(services, principal, model_id)
        chosen = sample_category(m, category, form=True)
        check_quota(services, 0)
        try:
            decoded = decode_image(data, field="image", label="image", max_bytes=settings.max_upload_bytes,
                                   max_pixels=settings.max_image_pixels)
        except UploadError as e:
            raise upload_problem(e) from None
        encoded = png_bytes(decoded)
        check_quota(services, len(encoded))
        job_id = new_id()
        services.artifacts.put(keys.job_input(job_id), encoded)
        services.usage.add(len(encoded))
        try:
            job = start(services, principal, JobKind.reconstruct,
                        {"width": decoded.width, "height": decoded.height, "category": chosen},
                        model_id=m.id, job_id=job_id, total=1, webhook=webhook)
        except Problem:
            services.artifacts.delete_tree(keys.job(job_id))
            raise
        return idem.respond(202, JobOut.of(job), f"/v1/jobs/{job.id}")


__all__ = ["router", "visible_dataset"]
