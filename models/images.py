"""Images as files and Pillow images, before any tensor: decoding (with ``ImageError`` saying
why one cannot be used), the resize rule, and inpainting masks.

No torch here, on purpose: the API process checks uploads with these functions and never loads
torch (its start-up and memory stay small); ``models.transforms`` and ``models.inpaint`` build
tensors on top of them.

Resize rules (``Preset.resize``):
- ``crop`` (default): scale so the shorter side equals ``size`` (bicubic), then centre-crop a
  ``size`` x ``size`` square, so textures keep their aspect ratio.
- ``stretch``: resize straight to ``size`` x ``size`` as the release's ``imresize`` did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


class ImageError(ValueError):
    """An input image that cannot be used; the message names it and says why."""


def read_image(source: str | Path | Image.Image) -> Image.Image:
    """One image as Pillow decoded it (any mode), or ``ImageError`` saying why it cannot be read."""
    if isinstance(source, Image.Image):
        return source
    try:
        img = Image.open(source)
        img.load()
        return img
    except FileNotFoundError:
        raise ImageError(f"{source}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{source}: not a readable image ({e.__class__.__name__})") from None


def open_image(source: str | Path | Image.Image) -> Image.Image:
    """Decode one image as RGB, honouring EXIF orientation; grayscale, palette, alpha and 16-bit
    images are converted (alpha is composited on white)."""
    img = ImageOps.exif_transpose(read_image(source))
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA"):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    return img.convert("RGB")


def open_mask(source: str | Path | Image.Image) -> Image.Image:
    """Decode a mask image as greyscale ("L"), transparent pixels composited on black (an
    inpainting mask paints the missing pixels white; what is left transparent is kept)."""
    img = read_image(source)
    if img.mode in ("RGBA", "LA", "P", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    return open_image(img).convert("L")


def fit(img: Image.Image, size: int, mode: str = "crop") -> Image.Image:
    """Bring one image to ``size`` x ``size`` by the documented rule (see module docstring)."""
    if mode == "stretch":
        return img.resize((size, size), Image.Resampling.BICUBIC)
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def known_pixels(source: Any, size: int, resize: str = "crop") -> np.ndarray:
    """A [1, 1, size, size] boolean array, True where a pixel is known, from a mask image: white
    (>= 128 in grey) marks pixels to fill in, as in most inpainting tools (transparent pixels
    count as black: kept); the mask is fitted to the image the same way the image is."""
    img = fit(open_mask(source), size, resize)
    grey = np.asarray(img, dtype=np.uint8).reshape(1, 1, img.height, img.width)
    return grey < 128


def check_mask(known: Any) -> None:
    """``ValueError`` unless the mask (a boolean array or tensor, True = known) leaves something
    to fill in and something to recover from."""
    missing = int((~known).sum())
    if missing == 0:
        raise ValueError("the mask leaves no pixel to fill in (paint the missing pixels white)")
    if int(known.sum()) == 0:
        raise ValueError("the mask hides every pixel: nothing is known to recover from")
