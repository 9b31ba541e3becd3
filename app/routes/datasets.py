"""Datasets: upload training images (validated and normalised here), read them back."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Path, UploadFile
from fastapi.responses import FileResponse

from service.artifacts import keys, png_bytes
from service.db import Dataset
from service.ingest import UploadError, decode_image
from service.jobs import new_id

from ..deps import Artifacts, SettingsDep, Store
from ..problems import NotFound, Problem, responses
from ..schemas import DatasetOut

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

PNG = {"content": {"image/png": {}}, "description": "A PNG image."}


def read_upload(upload: UploadFile, *, field: str, label: str, max_bytes: int, max_pixels: int):
    """Bytes of one upload (refusing oversize files before reading them) decoded to RGB."""
    if upload.size is not None and upload.size > max_bytes:
        raise UploadError(413, field, f"{label} is {upload.size} bytes; the limit is {max_bytes} bytes per file")
    data = upload.file.read(max_bytes + 1)
    return decode_image(data, field=field, label=label, max_bytes=max_bytes, max_pixels=max_pixels)


def upload_problem(e: UploadError) -> Problem:
    types = {413: "/problems/too-large", 415: "/problems/unsupported-image", 422: "/problems/bad-image"}
    return Problem(e.status, e.message, type=types[e.status],
                   errors=[{"field": e.field, "location": "body", "message": e.message, "type": "image"}])


@router.post("", status_code=201, response_model=DatasetOut, responses=responses(413, 415, 422),
             summary="Upload training images")
def create_dataset(
    images: Annotated[list[UploadFile], File(description="One or more PNG, JPEG or WebP files.")],
    kind: Annotated[Literal["texture", "object"], Form(description="texture: one texture; object: a few aligned pictures.")],
    settings: SettingsDep,
    store: Store,
    artifacts: Artifacts,
) -> DatasetOut:
    if len(images) > settings.max_dataset_images:
        raise Problem(422, f"images: at most {settings.max_dataset_images} files per dataset", type="/problems/validation",
                      errors=[{"field": "images", "location": "body", "type": "too_long",
                               "message": f"at most {settings.max_dataset_images} files"}])
    decoded = []
    for k, upload in enumerate(images):
        try:
            decoded.append(read_upload(upload, field="images", label=f"images[{k}]", max_bytes=settings.max_upload_bytes,
                                       max_pixels=settings.max_image_pixels))
        except UploadError as e:
            raise upload_problem(e) from None
    dataset = Dataset(id=new_id(), kind=kind, image_count=len(decoded), sizes=[list(im.size) for im in decoded])
    for k, im in enumerate(decoded):
        artifacts.put(keys.dataset_image(dataset.id, k), png_bytes(im))
    store.add(dataset)
    return DatasetOut.of(dataset)


@router.get("/{dataset_id}", response_model=DatasetOut, responses=responses(404))
def get_dataset(dataset_id: str, store: Store) -> DatasetOut:
    d = store.dataset(dataset_id)
    if d is None:
        raise NotFound("dataset", dataset_id)
    return DatasetOut.of(d)


@router.get("/{dataset_id}/images/{k}.png", response_class=FileResponse, responses={200: PNG, **responses(404)})
def get_dataset_image(dataset_id: str, k: Annotated[int, Path(ge=0)], store: Store, artifacts: Artifacts):
    d = store.dataset(dataset_id)
    if d is None:
        raise NotFound("dataset", dataset_id)
    if k >= d.image_count:
        raise Problem(404, f"dataset {dataset_id} has {d.image_count} images (0..{d.image_count - 1})",
                      type="/problems/not-found")
    return FileResponse(artifacts.path(keys.dataset_image(d.id, k)), media_type="image/png")
