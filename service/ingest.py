"""Uploaded images: decided by content, decoded once, stored as normalised RGB PNGs.

The request's file name and declared content type are ignored. The format is decided by the
file's first bytes (PNG, JPEG or WebP signatures; anything else is 415 before any decoder sees
it), and Pillow is then allowed only that one decoder. Decoding is bounded before it starts:
bytes (413), and the pixel count that the header announces (422, checked before a single pixel
is decoded, so a decompression bomb costs a header read). Truncated or damaged files are 422.
``models.images.open_image`` applies EXIF orientation and converts grayscale, 16-bit, palette,
CMYK and alpha images to RGB, so the worker later reads plain 8-bit RGB PNGs only.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Optional

from PIL import Image, UnidentifiedImageError

from models.images import ImageError, open_image, open_mask

ACCEPTED = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
MIN_SIDE = 8


def sniff(data: bytes) -> Optional[str]:
    """The accepted format these bytes start with (PNG, JPEG or WEBP), or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def describe(data: bytes) -> str:
    """A name for what a refused file looks like, for the error message."""
    signatures = [
        (b"GIF87a", "a GIF image"), (b"GIF89a", "a GIF image"), (b"BM", "a BMP image"),
        (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"), (b"PK\x03\x04", "a ZIP archive"),
        (b"%PDF", "a PDF document"), (b"\x00\x00\x01\x00", "an ICO image"), (b"8BPS", "a Photoshop file"),
        (b"\x1f\x8b", "a gzip file"), (b"\xff\x0a", "a JPEG XL image"), (b"\x00\x00\x00\x0cJXL", "a JPEG XL image"),
    ]
    for magic, name in signatures:
        if data.startswith(magic):
            return name
    if len(data) >= 12 and data[4:8] == b"ftyp":
        return "an ISO media file (HEIC/AVIF/MP4)"
    head = data[:512].lstrip().lower()
    if head.startswith((b"<svg", b"<?xml")) or b"<svg" in head:
        return "an SVG/XML document"
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head:
        return "an HTML document"
    return "not an image in a format we accept"


@dataclass
class UploadError(Exception):
    """Why one uploaded file was refused; ``status`` is the HTTP status it maps to."""

    status: int
    field: str
    message: str

    def __str__(self) -> str:
        return self.message


def decode_image(data: bytes, *, field: str, label: str, max_bytes: int, max_pixels: int,
                 as_mask: bool = False) -> Image.Image:
    """One upload -> an RGB image, or ``UploadError`` (413 too large, 415 not PNG/JPEG/WebP by
    content, 422 empty, damaged, truncated, too small or too many pixels). ``as_mask``: a
    greyscale image instead, transparent pixels black (an inpainting mask: white = missing)."""
    if len(data) > max_bytes:
        raise UploadError(413, field, f"{label} is {len(data)} bytes; the limit is {max_bytes} bytes per file")
    if not data:
        raise UploadError(422, field, f"{label} is empty")
    fmt = sniff(data)
    if fmt is None:
        raise UploadError(415, field, f"{label} is {describe(data)}; send PNG, JPEG or WebP")
    try:
        with warnings.catch_warnings():
            # Our own pixel limit is checked below; Pillow's global one only as a backstop.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=[fmt])
    except Image.DecompressionBombError:
        raise UploadError(422, field, f"{label} has too many pixels (limit {max_pixels})") from None
    except UnidentifiedImageError:
        raise UploadError(415, field, f"{label} starts like a {fmt} file but is not one; send PNG, JPEG or WebP") from None
    except Exception as e:  # a known format whose header is damaged (bad IHDR, SOF, chunk sizes, ...)
        raise UploadError(422, field, f"{label} is a damaged {fmt} file ({e.__class__.__name__})") from None
    # MPO: a JPEG with more pictures after the first (phone cameras); the first is a plain JPEG.
    if img.format not in ACCEPTED and not (fmt == "JPEG" and img.format == "MPO"):
        raise UploadError(415, field, f"{label} is {img.format or 'an unknown format'}; send PNG, JPEG or WebP")
    w, h = img.size
    if w <= 0 or h <= 0:
        raise UploadError(422, field, f"{label} declares {w} x {h} pixels")
    if w * h > max_pixels:
        raise UploadError(422, field, f"{label} has {w} x {h} pixels; the limit is {max_pixels} pixels")
    if min(w, h) < MIN_SIDE:
        raise UploadError(422, field, f"{label} is {w} x {h}; each side must be at least {MIN_SIDE} pixels")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
            return open_mask(img) if as_mask else open_image(img)
    except Exception as e:  # truncated data, bad Huffman tables, zlib errors, oversized text chunks, ...
        kind = "truncated" if "truncated" in str(e).lower() else "damaged"
        raise UploadError(422, field, f"{label} is a {kind} {fmt} file ({e.__class__.__name__})") from None
    finally:
        img.close()
