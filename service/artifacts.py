"""The artifact store: dataset images, weights, result PNGs and previews, by key.

Keys are built here from ids only (``keys.*``), never from user-supplied file names, so a
request cannot reach outside the store. Tasks and routes use the small ``ArtifactStore``
interface; ``LocalArtifactStore`` keeps everything in one folder (a volume shared by api and
workers in compose). An S3-compatible store can implement the same methods later (``path``
would stage a local copy) without touching tasks or routes.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Protocol

from PIL import Image

_ID = re.compile(r"^[0-9a-f]{32}$")


def _id(value: str) -> str:
    if not _ID.match(value):
        raise ValueError(f"not an id: {value!r}")
    return value


class keys:
    """Where each artifact lives, relative to the store's root."""

    @staticmethod
    def dataset_image(dataset_id: str, k: int) -> str:
        return f"datasets/{_id(dataset_id)}/images/{int(k):04d}.png"

    @staticmethod
    def dataset(dataset_id: str) -> str:
        return f"datasets/{_id(dataset_id)}"

    @staticmethod
    def model_weights(model_id: str) -> str:
        return f"models/{_id(model_id)}/model.safetensors"

    @staticmethod
    def model(model_id: str) -> str:
        return f"models/{_id(model_id)}"

    @staticmethod
    def job(job_id: str) -> str:
        return f"jobs/{_id(job_id)}"

    @staticmethod
    def job_checkpoint(job_id: str) -> str:
        return f"jobs/{_id(job_id)}/checkpoint.safetensors"

    @staticmethod
    def job_image(job_id: str, k: int) -> str:
        return f"jobs/{_id(job_id)}/images/{int(k):04d}.png"

    @staticmethod
    def job_grid(job_id: str) -> str:
        return f"jobs/{_id(job_id)}/grid.png"

    @staticmethod
    def job_preview(job_id: str) -> str:
        return f"jobs/{_id(job_id)}/preview.png"

    @staticmethod
    def job_input(job_id: str) -> str:
        return f"jobs/{_id(job_id)}/input.png"

    @staticmethod
    def job_mask(job_id: str) -> str:
        return f"jobs/{_id(job_id)}/mask.png"


class ArtifactStore(Protocol):
    def put(self, key: str, data: bytes) -> None: ...
    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def path(self, key: str) -> Path: ...
    def copy(self, src: str, dst: str) -> None: ...
    def delete(self, key: str) -> None: ...
    def delete_tree(self, prefix: str) -> None: ...


class LocalArtifactStore:
    """Artifacts as files under ``root``; every write is atomic (temporary file + rename)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """The file for ``key`` (which may not exist yet); callers may write it directly."""
        p = (self.root / key).resolve()
        if self.root not in p.parents:
            raise ValueError(f"key outside the store: {key!r}")
        return p

    def put(self, key: str, data: bytes) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def get(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def copy(self, src: str, dst: str) -> None:
        target = self.path(dst)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".copy.tmp")
        shutil.copyfile(self.path(src), tmp)
        os.replace(tmp, target)

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def delete_tree(self, prefix: str) -> None:
        shutil.rmtree(self.path(prefix), ignore_errors=True)


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
