"""Shared fixtures: real images from scikit-image, cut the way the tests need them."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image


def pytest_configure(config) -> None:
    """Under pytest-xdist, one compute thread per test process and per server it starts.

    Two test processes on two cores, each running torch with a thread per core, oversubscribe the
    CPU: OpenMP threads spin waiting for each other, and a learning test that takes 141 s alone
    took 565 s beside another one. With one thread each, the two processes share the cores
    instead. Set in the environment, so that the servers and workers the tests start inherit it
    (torch takes its default thread count from OMP_NUM_THREADS); a value given there is kept."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


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
