"""The generative ConvNet (Xie, Lu, Zhu, Wu, ICML 2016) in pure PyTorch.

Nothing here imports the service (app/, worker/): this package is a library and the science
behind the `gcn` command line.

The names below are imported when first used (PEP 562), so that ``import models.presets`` or
``models.images`` does not load torch: the API process uses those (and ``models.precision``, for
the ``GCN_AMP`` setting) and stays torch-free.
(So no exported name may also be a submodule's: importing the submodule would replace it.)
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Cancelled": "langevin",
    "CheckpointError": "checkpoint",
    "ConvSpec": "presets",
    "EnergyNet": "net",
    "GenerativeModel": "model",
    "ImageError": "images",
    "LangevinSampler": "langevin",
    "Learner": "learner",
    "NumericalError": "learner",
    "Preset": "presets",
    "PresetError": "presets",
    "Progress": "learner",
    "activation_patterns": "reconstruction",
    "get_preset": "presets",
    "init_chains": "langevin",
    "preset_names": "presets",
    "reconstruct": "reconstruction",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # once: later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
