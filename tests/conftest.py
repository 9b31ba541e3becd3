"""Shared fixtures: real images from scikit-image, cut the way the tests need them."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


def _rgb(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(np.stack([gray] * 3, axis=-1))


@pytest.fixture(scope="session")
def brick64() -> Image.Image:
    """A 64 x 64 crop of scikit-image's brick texture, as RGB."""
    from skimage import data

    return _rgb(data.brick()[100:164, 100:164])


@pytest.fixture(scope="session")
def brick_image() -> Image.Image:
    from skimage import data

    return _rgb(data.brick())


@pytest.fixture(scope="session")
def faces() -> list[Image.Image]:
    """Aligned faces (lfw_subset), 25 x 25 grayscale in [0, 1], as RGB."""
    from skimage import data

    return [_rgb((f * 255).round().astype(np.uint8)) for f in data.lfw_subset()[:8]]
