"""POST /v1/models/{id}/inpaintings: the contract without a worker (the job is queued, its
inputs stored); tests/integration runs it through a real worker."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.artifacts import keys

from test_api import problem


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def mask_png() -> bytes:
    arr = np.zeros((64, 64, 4), np.uint8)
    arr[16:48, 16:48] = 255  # an opaque white square on a transparent background
    return _png(arr, "RGBA")


def test_an_inpainting_with_a_mask_is_queued_with_its_inputs_stored(client, services, make_model, brick_png,
                                                                     mask_png):
    model = make_model()
    r = client.post(f"/v1/models/{model.id}/inpaintings",
                    files={"image": ("b.png", brick_png, "image/png"), "mask": ("m.png", mask_png, "image/png")},
                    data={"noise": "false", "steps": "7", "init": "blur", "seed": "4"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["kind"] == "inpaint" and job["progress"]["total"] == 7
    assert job["params"] == {"drop": None, "noise": False, "steps": 7, "init": "blur", "size": None, "seed": 4,
                             "category": "default", "width": 64, "height": 64, "mask": "uploaded"}
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    stored = Image.open(services.artifacts.path(keys.job_mask(job["id"])))
    arr = np.asarray(stored)
    assert stored.mode == "L" and arr[32, 32] == 255 and arr[0, 0] == 0  # transparent became black: kept
    assert services.artifacts.exists(keys.job_input(job["id"]))
    problem(client.get(f"/v1/jobs/{job['id']}/images/1.png"), 409)


def test_an_inpainting_with_a_random_drop_needs_no_mask(client, make_model, brick_png):
    model = make_model()
    r = client.post(f"/v1/models/{model.id}/inpaintings", files={"image": ("b.png", brick_png, "image/png")},
                    data={"drop": "0.5"})
    assert r.status_code == 202, r.text
    assert r.json()["params"]["drop"] == 0.5 and r.json()["params"]["mask"] == "random"
    assert r.json()["progress"]["total"] == 40  # the model's sample_steps


@pytest.mark.parametrize("data,with_mask,field", [
    ({}, False, "mask"),  # neither a mask nor a fraction
    ({"drop": "0.5"}, True, "drop"),  # both
    ({"drop": "0"}, False, "drop"), ({"drop": "1"}, False, "drop"), ({"drop": "half"}, False, "drop"),
    ({"drop": "0.5", "steps": "-1"}, False, "steps"), ({"drop": "0.5", "init": "zeros"}, False, "init"),
    ({"drop": "0.5", "size": "4"}, False, "size"), ({"drop": "0.5", "seed": "-2"}, False, "seed"),
    ({"drop": "0.5", "noise": "maybe"}, False, "noise"),
    ({"drop": "0.5", "webhook_url": "ftp://example.com/x"}, False, "webhook_url"),
])
def test_bad_inpainting_requests_are_422_naming_the_field(client, make_model, brick_png, mask_png, data,
                                                          with_mask, field):
    files = {"image": ("b.png", brick_png, "image/png")}
    if with_mask:
        files["mask"] = ("m.png", mask_png, "image/png")
    problem(client.post(f"/v1/models/{make_model().id}/inpaintings", files=files, data=data), 422, field)


@pytest.mark.parametrize("fill", [0, 255])
def test_a_mask_that_hides_nothing_or_everything_is_422(client, make_model, brick_png, fill):
    mask = _png(np.full((64, 64), fill, np.uint8))
    body = problem(client.post(f"/v1/models/{make_model().id}/inpaintings",
                               files={"image": ("b.png", brick_png, "image/png"), "mask": ("m.png", mask, "image/png")}),
                   422, "mask")
    assert ("no pixel to fill" if fill == 0 else "every pixel") in body["detail"]


def test_a_category_in_other_digits_is_a_422_not_a_crash(client, make_model, brick_png):
    problem(client.post(f"/v1/models/{make_model().id}/inpaintings", files={"image": ("b.png", brick_png, "image/png")},
                        data={"drop": "0.5", "category": "\u00b2"}), 422, "category")


def test_inpainting_uploads_are_checked_like_any_image(client, make_model, brick_png):
    model = make_model()
    problem(client.post(f"/v1/models/{model.id}/inpaintings", files={"image": ("x.txt", b"hello", "text/plain")},
                        data={"drop": "0.5"}), 415, "image")
    problem(client.post(f"/v1/models/{model.id}/inpaintings",
                        files={"image": ("b.png", brick_png, "image/png"), "mask": ("m.gif", b"GIF89a...", "image/gif")}),
            415, "mask")
    problem(client.post(f"/v1/models/{model.id}/inpaintings", data={"drop": "0.5"}), 422, "image")


def test_object_models_inpaint_at_their_size_and_unknown_models_are_404(client, make_model, brick_png):
    obj = make_model(kind="object", image_size=48)
    files = {"image": ("b.png", brick_png, "image/png")}
    problem(client.post(f"/v1/models/{obj.id}/inpaintings", files=files, data={"drop": "0.5", "size": "64"}),
            422, "size")
    assert client.post(f"/v1/models/{obj.id}/inpaintings", files=files, data={"drop": "0.5"}).status_code == 202
    problem(client.post("/v1/models/" + "0" * 32 + "/inpaintings", files=files, data={"drop": "0.5"}), 404)


def test_a_model_of_several_categories_inpaints_with_the_category_asked_for(client, services, make_model, brick_png):
    model = make_model()
    with services.db.session() as session:  # as a learning job from two datasets leaves the row
        row = session.get(type(model), model.id)
        row.categories = [{"name": "brick", "dataset_id": model.dataset_id},
                          {"name": "grass", "dataset_id": model.dataset_id}]
        session.commit()
    files = {"image": ("b.png", brick_png, "image/png")}
    url = f"/v1/models/{model.id}/inpaintings"
    assert client.post(url, files=files, data={"drop": "0.5"}).json()["params"]["category"] == "brick"
    assert client.post(url, files=files, data={"drop": "0.5", "category": "grass"}).json()["params"]["category"] == "grass"
    assert client.post(url, files=files, data={"drop": "0.5", "category": "1"}).json()["params"]["category"] == "grass"
    body = problem(client.post(url, files=files, data={"drop": "0.5", "category": "sand"}), 422, "category")
    assert "brick" in body["detail"] and "grass" in body["detail"]
    problem(client.post(url, files=files, data={"drop": "0.5", "category": "2"}), 422, "category")
