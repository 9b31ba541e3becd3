"""Datasets: upload training images (validated and normalised here), read them back."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Path, UploadFile
from fastapi.responses import FileResponse

from service.artifacts import keys, png_bytes
from service.auth import Principal
from service.db import Dataset
from service.ingest import UploadError, decode_image
from service.jobs import new_id

from ..deps import ServicesDep
from ..files import open_file
from ..idempotency import Idempotent, IdempotencyKey, file_digest
from ..problems import NotFound, Problem, missing, responses
from ..schemas import DatasetOut
from ..security import PrincipalDep

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

PNG = {"content": {"image/png": {}}, "description": "A PNG image."}
AUTH = responses(401)


def read_bytes(upload: UploadFile, *, field: str, label: str, max_bytes: int) -> bytes:
    """The bytes of one upload, refusing an oversize file (413) without reading all of it."""
    if upload.size is not None and upload.size > max_bytes:
        raise UploadError(413, field, f"{label} is {upload.size} bytes; the limit is {max_bytes} bytes per file")
    return upload.file.read(max_bytes + 1)


def read_upload(upload: UploadFile, *, field: str, label: str, max_bytes: int, max_pixels: int):
    """Bytes of one upload decoded to RGB."""
    data = read_bytes(upload, field=field, label=label, max_bytes=max_bytes)
    return decode_image(data, field=field, label=label, max_bytes=max_bytes, max_pixels=max_pixels)


def upload_problem(e: UploadError) -> Problem:
    types = {413: "/problems/too-large", 415: "/problems/unsupported-image", 422: "/problems/bad-image"}
    return Problem(e.status, e.message, type=types[e.status],
                   errors=[{"field": e.field, "location": "body", "message": e.message, "type": "image"}])


def check_quota(services, incoming: int) -> None:
    """507 when the data folder is at its quota (GCN_MAX_DATA_BYTES), before anything is written."""
    quota = services.settings.max_data_bytes
    if quota and services.usage.used() + incoming > quota:
        raise Problem(507, f"the server's storage quota ({quota} bytes) is used up; try again after old results "
                           "expire or are deleted", type="/problems/storage-full", headers={"Retry-After": "3600"})


def visible_dataset(services, principal: Principal, dataset_id: str) -> Dataset:
    d = services.store.dataset(dataset_id)
    if d is None:
        raise missing(services.store, principal, "dataset", dataset_id)
    if not principal.owns(d.api_key_id):
        raise NotFound("dataset", dataset_id)
    return d


@router.post("", status_code=201, response_model=DatasetOut,
             responses=responses(401, 409, 413, 415, 422, 507), summary="Upload training images")
def create_dataset(
    images: Annotated[list[UploadFile], File(min_length=1, description="One or more PNG, JPEG or WebP files (decided by content).")],
    kind: Annotated[Literal["texture", "object"], Form(description="texture: one texture; object: a few aligned pictures.")],
    services: ServicesDep,
    principal: PrincipalDep,
    idempotency_key: IdempotencyKey = None,
):
    settings = services.settings
    if len(images) > settings.max_dataset_images:
        raise Problem(422, f"images: at most {settings.max_dataset_images} files per dataset", type="/problems/validation",
                      errors=[{"field": "images", "location": "body", "type": "too_long",
                               "message": f"at most {settings.max_dataset_images} files"}])
    try:
        raw = [read_bytes(u, field="images", label=f"images[{k}]", max_bytes=settings.max_upload_bytes)
               for k, u in enumerate(images)]
    except UploadError as e:
        raise upload_problem(e) from None
    content = {"kind": kind, "images": [file_digest(b) for b in raw]}
    with Idempotent(services.db, principal, idempotency_key, "POST /v1/datasets", content,
                    settings.idempotency_ttl) as idem:
        if idem.replay is not None:
            return idem.replay
        check_quota(services, 0)
        decoded = []
        for k, data in enumerate(raw):
            try:
                decoded.append(decode_image(data, field="images", label=f"images[{k}]",
                                            max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels))
            except UploadError as e:
                raise upload_problem(e) from None
        encoded = [png_bytes(im) for im in decoded]
        check_quota(services, sum(len(b) for b in encoded))
        dataset = Dataset(id=new_id(), kind=kind, image_count=len(decoded), sizes=[list(im.size) for im in decoded],
                          api_key_id=principal.key_id)
        for k, data in enumerate(encoded):
            services.artifacts.put(keys.dataset_image(dataset.id, k), data)
        services.usage.add(sum(len(b) for b in encoded))
        services.store.add(dataset)
        return idem.respond(201, DatasetOut.of(dataset))


@router.get("/{dataset_id}", response_model=DatasetOut, responses=responses(401, 404, 410))
def get_dataset(dataset_id: str, services: ServicesDep, principal: PrincipalDep) -> DatasetOut:
    return DatasetOut.of(visible_dataset(services, principal, dataset_id))


@router.get("/{dataset_id}/images/{k}.png", response_class=FileResponse,
            responses={200: PNG, **responses(401, 404, 410)})
def get_dataset_image(dataset_id: str, k: Annotated[int, Path(ge=0, le=10_000)], services: ServicesDep,
                      principal: PrincipalDep):
    d = visible_dataset(services, principal, dataset_id)
    if k >= d.image_count:
        raise Problem(404, f"dataset {dataset_id} has {d.image_count} images (0..{d.image_count - 1})",
                      type="/problems/not-found")
    # removed between the row read and now (cleanup: rows first, then files): 410 for the owner
    return open_file(services.artifacts.path(keys.dataset_image(d.id, k)), "image/png",
                     lambda: missing(services.store, principal, "dataset", dataset_id))
