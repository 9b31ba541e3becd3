"""A corpus of malformed, hostile and awkward-but-valid upload files, generated (nothing is
checked in). Each entry says what the server must answer: 201 (accepted, by content whatever its
name) or the set of acceptable 4xx statuses.

The pixel limits assumed here are the test server's: GCN_MAX_IMAGE_PIXELS=4_000_000 and
GCN_MAX_UPLOAD_BYTES=2 MiB, so that bombs are small to build and still far over the limits.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image

MAX_PIXELS = 4_000_000
MAX_FILE = 2 * 1024 * 1024
PNG_SIG = b"\x89PNG\r\n\x1a\n"
OK = frozenset({201})
BAD = frozenset({415, 422})  # "not an accepted format" or "a damaged one": both are right for mangled bytes


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    filename: str
    content_type: str
    expect: frozenset[int]


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _ihdr(w: int, h: int, depth: int = 8, colour: int = 0) -> bytes:
    return _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0))


def _png(w: int, h: int, idat: bytes, *, depth: int = 8, colour: int = 0, extra: bytes = b"") -> bytes:
    return PNG_SIG + _ihdr(w, h, depth, colour) + extra + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _zeros_idat(w: int, h: int) -> bytes:
    """zlib of h rows of (filter byte 0 + w zero bytes): a grayscale image, compressed ~1000:1."""
    z = zlib.compressobj(9)
    row = b"\0" * (w + 1)
    out = [z.compress(row) for _ in range(h)]
    out.append(z.flush())
    return b"".join(out)


def _jpeg_with_sof(img: Image.Image, patch: Callable[[bytearray, int], None]) -> bytes:
    data = bytearray(_encode(img, "JPEG", quality=80))
    sof = data.index(b"\xff\xc0")
    patch(data, sof)
    return bytes(data)


def _set_dims(width: int, height: int):
    def patch(data: bytearray, sof: int) -> None:
        struct.pack_into(">HH", data, sof + 5, height, width)
    return patch


def _webp_vp8x(width: int, height: int, inner: bytes) -> bytes:
    """A WebP container with a VP8X header announcing a width x height canvas around ``inner``."""
    vp8x = bytes([0, 0, 0, 0]) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x + inner
    return b"RIFF" + struct.pack("<I", len(body)) + body


def corpus(base: Image.Image) -> list[Case]:
    """``base``: an ordinary RGB picture of at least 64 x 64."""
    rgb = base.convert("RGB").resize((64, 64))
    rng = np.random.default_rng(7)
    noisy = Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))
    png, jpeg, webp = _encode(rgb, "PNG"), _encode(rgb, "JPEG"), _encode(rgb, "WEBP")
    noisy_png, noisy_jpeg, noisy_webp = _encode(noisy, "PNG"), _encode(noisy, "JPEG"), _encode(noisy, "WEBP", quality=90)
    gray16 = Image.fromarray((np.asarray(rgb.convert("L"), dtype=np.uint16) * 257))
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    exif = Image.Exif()
    exif[0x0112] = 6
    zip_buf = io.BytesIO()
    with zipfile.ZipFile(zip_buf, "w") as z:
        z.writestr("payload.txt", "hello")
    apng = _encode(rgb, "PNG", save_all=True, append_images=[rgb.rotate(90)], duration=100)
    webp_inner = webp[12:]  # the VP8/VP8L chunk of a real 64 x 64 WebP

    C = Case
    cases = [
        # ---- valid, in every awkward shape: accepted by content, whatever the name or type ----
        C("png", png, "a.png", "image/png", OK),
        C("jpeg", jpeg, "a.jpg", "image/jpeg", OK),
        C("webp", webp, "a.webp", "image/webp", OK),
        C("png named .jpg", png, "a.jpg", "image/jpeg", OK),
        C("jpeg named .png", jpeg, "a.png", "image/png", OK),
        C("webp as octet-stream", webp, "blob", "application/octet-stream", OK),
        C("16-bit grayscale png", _encode(gray16, "PNG"), "g16.png", "image/png", OK),
        C("palette png with transparency", _encode(palette, "PNG", transparency=0), "p.png", "image/png", OK),
        C("rgba png", _encode(rgb.convert("RGBA"), "PNG"), "rgba.png", "image/png", OK),
        C("gray+alpha png", _encode(rgb.convert("LA"), "PNG"), "la.png", "image/png", OK),
        C("1-bit png", _encode(rgb.convert("1"), "PNG"), "bw.png", "image/png", OK),
        C("cmyk jpeg", _encode(rgb.convert("CMYK"), "JPEG"), "cmyk.jpg", "image/jpeg", OK),
        C("grayscale jpeg", _encode(rgb.convert("L"), "JPEG"), "g.jpg", "image/jpeg", OK),
        C("progressive jpeg", _encode(rgb, "JPEG", progressive=True), "prog.jpg", "image/jpeg", OK),
        C("jpeg with exif rotation", _encode(rgb.resize((64, 32)), "JPEG", exif=exif.tobytes()), "rot.jpg",
          "image/jpeg", OK),
        C("lossless webp with alpha", _encode(rgb.convert("RGBA"), "WEBP", lossless=True), "l.webp", "image/webp", OK),
        C("animated png (first frame)", apng, "anim.png", "image/png", OK),
        C("png + zip polyglot (the png part)", png + zip_buf.getvalue(), "poly.png", "image/png", OK),
        # ---- not PNG, JPEG or WebP by content: 415 whatever the name says ----
        C("zero bytes", b"", "empty.png", "image/png", frozenset({400, 422})),
        C("one byte", b"\x89", "one.png", "image/png", frozenset({415})),
        C("plain text", b"hello, world\n" * 10, "a.png", "image/png", frozenset({415})),
        C("html", b"<!doctype html><html><script>alert(1)</script></html>", "a.png", "image/png", frozenset({415})),
        C("svg", b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>',
          "a.svg", "image/svg+xml", frozenset({415})),
        C("gif", _encode(rgb, "GIF"), "a.png", "image/png", frozenset({415})),
        C("gif + script polyglot", _encode(rgb, "GIF") + b"/*<script>alert(1)</script>*/", "a.gif", "image/gif",
          frozenset({415})),
        C("bmp", _encode(rgb, "BMP"), "a.png", "image/png", frozenset({415})),
        C("tiff", _encode(rgb, "TIFF"), "a.tif", "image/tiff", frozenset({415})),
        C("ico", _encode(rgb, "ICO"), "a.ico", "image/x-icon", frozenset({415})),
        C("zip", zip_buf.getvalue(), "a.png", "image/png", frozenset({415})),
        C("pdf", b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", "a.pdf", "application/pdf", frozenset({415})),
        C("elf executable", b"\x7fELF\x02\x01\x01" + bytes(64), "a.png", "image/png", frozenset({415})),
        # ---- the right magic, the wrong rest: truncated or damaged ----
        C("png signature only", PNG_SIG, "sig.png", "image/png", BAD),
        C("jpeg SOI only", b"\xff\xd8\xff", "soi.jpg", "image/jpeg", BAD),
        C("riff webp header only", b"RIFF\x04\x00\x00\x00WEBP", "h.webp", "image/webp", BAD),
        C("truncated png", noisy_png[: len(noisy_png) // 2], "t.png", "image/png", BAD),
        C("truncated jpeg", noisy_jpeg[: len(noisy_jpeg) // 2], "t.jpg", "image/jpeg", BAD),
        C("truncated webp", noisy_webp[: len(noisy_webp) // 2], "t.webp", "image/webp", BAD),
        C("png with a bad IHDR crc", PNG_SIG + _ihdr(64, 64)[:-4] + b"\0\0\0\0" + png[33:], "crc.png", "image/png", BAD),
        C("png with garbage IDAT", _png(64, 64, b"\x78\x9c" + bytes(range(256)) * 4), "idat.png", "image/png", BAD),
        C("png with 0 x 0 IHDR", _png(0, 0, zlib.compress(b"")), "zero.png", "image/png", BAD),
        C("png with an invalid bit depth", _png(64, 64, _zeros_idat(64, 64), depth=7), "depth.png", "image/png", BAD),
        C("jpeg with a bad SOF (0 components)", _jpeg_with_sof(rgb, lambda d, s: d.__setitem__(s + 9, 0)),
          "sof.jpg", "image/jpeg", BAD),
        C("jpeg with a 0 x 0 SOF", _jpeg_with_sof(rgb, _set_dims(0, 0)), "sof0.jpg", "image/jpeg", BAD),
        C("too small (4 x 4)", _encode(rgb.resize((4, 4)), "PNG"), "tiny.png", "image/png", frozenset({422})),
        # ---- bombs and huge dimensions: refused from the header, before decoding ----
        C("png with a giant IHDR (100000 x 100000)", _png(100_000, 100_000, _zeros_idat(8, 8)), "giant.png",
          "image/png", frozenset({422})),
        C("png decompression bomb (3000 x 3000 of zeros)", _png(3000, 3000, _zeros_idat(3000, 3000)), "bomb.png",
          "image/png", frozenset({422})),
        C("png with a 2^31-1 wide IHDR", _png(2**31 - 1, 1, _zeros_idat(8, 1)), "wide.png", "image/png", BAD),
        C("png with a zTXt bomb", _png(64, 64, _zeros_idat(64, 64), extra=_chunk(
            b"zTXt", b"Comment\0\0" + zlib.compress(b"\0" * (64 * 1024 * 1024), 9))), "ztxt.png", "image/png", BAD),
        C("png with an iCCP bomb", _png(64, 64, _zeros_idat(64, 64), extra=_chunk(
            b"iCCP", b"icc\0\0" + zlib.compress(b"\0" * (64 * 1024 * 1024), 9))), "iccp.png", "image/png",
          frozenset({201, 415, 422})),  # Pillow reads the profile lazily and bounded; either way nothing blows up
        C("jpeg SOF announcing 65000 x 65000", _jpeg_with_sof(rgb, _set_dims(65000, 65000)), "huge.jpg",
          "image/jpeg", frozenset({422})),
        C("webp canvas announcing 16384 x 16384", _webp_vp8x(16384, 16384, webp_inner), "huge.webp", "image/webp",
          frozenset({422})),
        C("file over the per-file limit", b"\x89PNG\r\n\x1a\n" + bytes(MAX_FILE + 10), "big.png", "image/png",
          frozenset({413})),
    ]
    return cases
