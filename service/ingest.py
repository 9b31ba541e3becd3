"""Uploaded images: decided by content, decoded once, stored as normalised RGB PNGs.

The request's file name and declared content type are ignored: Pillow identifies the format
from the bytes, only PNG, JPEG and WebP are accepted (415 otherwise), and
``models.transforms.open_image`` applies EXIF orientation and converts any mode to RGB, so the
worker later reads plain PNGs only. Decoding is bounded (bytes -> 413, pixels -> 422).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from models.transforms import ImageError, open_image

ACCEPTED = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
MIN_SIDE = 8


@dataclass
class UploadError(Exception):
    """Why one uploaded file was refused; ``status`` is the HTTP status it maps to."""

    status: int
    field: str
    message: str

    def __str__(self) -> str:
        return self.message


def decode_image(data: bytes, *, field: str, label: str, max_bytes: int, max_pixels: int) -> Image.Image:
    """One upload -> an RGB image, or ``UploadError`` (413 too large, 415 not an accepted
    format, 422 an accepted format that does not decode or is too small / too many pixels)."""
    if len(data) > max_bytes:
        raise UploadError(413, field, f"{label} is {len(data)} bytes; the limit is {max_bytes} bytes per file")
    if not data:
        raise UploadError(422, field, f"{label} is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise UploadError(422, field, f"{label} has too many pixels (limit {max_pixels})") from None
    except (UnidentifiedImageError, OSError):
        raise UploadError(415, field, f"{label} is not a PNG, JPEG or WebP image") from None
    if img.format not in ACCEPTED:
        raise UploadError(415, field, f"{label} is {img.format or 'an unknown format'}; send PNG, JPEG or WebP")
    w, h = img.size
    if w * h > max_pixels:
        raise UploadError(422, field, f"{label} has {w} x {h} pixels; the limit is {max_pixels} pixels")
    if min(w, h) < MIN_SIDE:
        raise UploadError(422, field, f"{label} is {w} x {h}; each side must be at least {MIN_SIDE} pixels")
    try:
        img.load()
        return open_image(img)
    except (OSError, SyntaxError, ValueError, ImageError) as e:
        raise UploadError(422, field, f"{label} is a damaged {img.format} file ({e.__class__.__name__})") from None
