"""Checkpoints: one safetensors file with the weights, the learner's state and a JSON config.

Layout of ``MODEL.safetensors``:
- tensors ``net.<name>``: the energy net's parameters;
- tensors ``learner.<name>``: persistent chains, optimiser buffers and the random generator's
  state, present when the file was written during learning (so that learning can resume);
- metadata ``gcn.config``: JSON with the preset, sigma, the mean, the image size, the active depth,
  the category names (``category_names``, one per output of the net; files written before
  categories existed have none and load as one category named ``default``), the learning history
  and the learner's counters.

Loading never unpickles anything (safetensors holds raw tensors; the config is JSON), and every
problem with a file comes back as ``CheckpointError`` with a one-line reason.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .model import GenerativeModel
from .net import EnergyNet
from .presets import Preset, PresetError

FORMAT = "gcn-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit; the message says why."""


def save(path: str | Path, model: GenerativeModel, learner: Any = None) -> Path:
    """Write atomically (temporary file + rename), so a crash never leaves a half-written model."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"net.{k}": v.detach().cpu().contiguous() for k, v in model.net.state_dict().items()}
    config: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "preset": model.preset.to_dict(),
        "sigma": model.preset.sigma,
        "mean": [float(v) for v in model.mean],
        "image_size": model.preset.image_size,
        "depth": model.net.depth,
        "category_names": list(model.category_names),
        "history": model.history,
    }
    if learner is not None:
        tensors.update({f"learner.{k}": v.detach().cpu().contiguous() for k, v in learner.state_tensors().items()})
        config["learner"] = learner.state_info()
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"gcn.config": json.dumps(config)})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_config(path: str | Path) -> dict[str, Any]:
    """The JSON config of a checkpoint, without loading tensors."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a safetensors checkpoint ({e})") from None
    try:
        config = json.loads(meta["gcn.config"])
    except (KeyError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: a safetensors file, but not a gcn checkpoint (no config)") from None
    if config.get("format") != FORMAT or config.get("version") != VERSION:
        raise CheckpointError(f"{path}: unsupported checkpoint format {config.get('format')} v{config.get('version')}")
    return config


def load(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[GenerativeModel, Optional[tuple[dict[str, Any], dict[str, torch.Tensor]]]]:
    """The model, and the learner state (info, tensors) when the file has one."""
    config = read_config(path)
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable tensors ({e})") from None
    try:
        preset = Preset.from_dict(config["preset"])
    except (PresetError, TypeError, KeyError) as e:
        raise CheckpointError(f"{path}: bad preset in config ({e})") from None
    net = EnergyNet(preset)
    weights = {k[4:]: v for k, v in tensors.items() if k.startswith("net.")}
    try:
        net.load_state_dict(weights, strict=True)
        net.set_depth(int(config["depth"]))
    except (RuntimeError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit the preset ({first})") from None
    try:
        model = GenerativeModel(
            preset=preset,
            net=net,
            mean=torch.tensor(config["mean"], dtype=torch.float32),
            history=list(config.get("history", [])),
            category_names=config.get("category_names"),
        ).to(device)
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{path}: bad config ({e})") from None
    learner_state = None
    if "learner" in config:
        learner_tensors = {k[len("learner."):]: v for k, v in tensors.items() if k.startswith("learner.")}
        learner_state = (config["learner"], learner_tensors)
    return model, learner_state
