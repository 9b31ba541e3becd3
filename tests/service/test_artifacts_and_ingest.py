"""Artifacts are addressed by ids only; uploads are judged by their bytes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.artifacts import LocalArtifactStore, keys
from service.ingest import UploadError, decode_image

ID = "0123456789abcdef0123456789abcdef"


def test_keys_accept_ids_only(tmp_path):
    assert keys.dataset_image(ID, 3) == f"datasets/{ID}/images/0003.png"
    for bad in ("../../etc", "ABC", "", ID + "/x"):
        with pytest.raises(ValueError):
            keys.job_grid(bad)
    store = LocalArtifactStore(tmp_path)
    with pytest.raises(ValueError):
        store.path("../outside")


def test_local_store_round_trip(tmp_path):
    store = LocalArtifactStore(tmp_path)
    store.put(keys.job_grid(ID), b"png")
    assert store.exists(keys.job_grid(ID)) and store.get(keys.job_grid(ID)) == b"png"
    store.copy(keys.job_grid(ID), keys.job_preview(ID))
    assert store.get(keys.job_preview(ID)) == b"png"
    assert not list(tmp_path.rglob("*.tmp"))
    store.delete(keys.job_grid(ID))
    assert not store.exists(keys.job_grid(ID))
    store.delete_tree(keys.job(ID))
    assert not (tmp_path / "jobs" / ID).exists()


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def decode(data: bytes, **kw):
    return decode_image(data, field="images", label="images[0]", max_bytes=kw.get("max_bytes", 10**7),
                        max_pixels=kw.get("max_pixels", 10**7))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_png_jpeg_webp_become_rgb(brick64, fmt):
    img = decode(encode(brick64.convert("L"), fmt))
    assert img.mode == "RGB" and img.size == (64, 64)


def test_rgba_and_palette_are_converted(brick64):
    rgba = brick64.convert("RGBA")
    assert decode(encode(rgba, "PNG")).mode == "RGB"
    assert decode(encode(brick64.convert("P"), "PNG")).mode == "RGB"


def test_exif_orientation_is_applied(brick64):
    wide = brick64.resize((64, 32))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    assert decode(encode(wide, "JPEG", exif=exif.tobytes())).size == (32, 64)


@pytest.mark.parametrize("data,status", [
    (b"GIF89a" + bytes(100), 415),
    (b"not an image at all", 415),
    (b"", 422),
])
def test_refusals(data, status):
    with pytest.raises(UploadError) as e:
        decode(data)
    assert e.value.status == status and e.value.field == "images"


def test_gif_is_refused_by_content(brick64):
    with pytest.raises(UploadError) as e:
        decode(encode(brick64, "GIF"))
    assert e.value.status == 415 and "GIF" in str(e.value)


def test_truncated_png_is_422(brick64):
    data = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)), "PNG")
    with pytest.raises(UploadError) as e:
        decode(data[: len(data) // 2])
    assert e.value.status == 422


def test_limits(brick64):
    data = encode(brick64, "PNG")
    with pytest.raises(UploadError) as e:
        decode(data, max_bytes=len(data) - 1)
    assert e.value.status == 413
    with pytest.raises(UploadError) as e:
        decode(data, max_pixels=64 * 63)
    assert e.value.status == 422
    with pytest.raises(UploadError) as e:
        decode(encode(brick64.resize((4, 64)), "PNG"))
    assert e.value.status == 422 and "at least" in str(e.value)
