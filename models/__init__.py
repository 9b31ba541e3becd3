"""The generative ConvNet (Xie, Lu, Zhu, Wu, ICML 2016) in pure PyTorch.

Nothing here imports the service (app/, worker/): this package is a library and the science
behind the `gcn` command line.
"""

from . import checkpoint
from .checkpoint import CheckpointError
from .langevin import Cancelled, LangevinSampler, init_chains
from .learner import Learner, NumericalError, Progress
from .model import GenerativeModel
from .net import EnergyNet
from .presets import ConvSpec, Preset, PresetError, get_preset, preset_names
from .reconstruct import activation_patterns, reconstruct
from .transforms import ImageError

__all__ = [
    "Cancelled",
    "CheckpointError",
    "ConvSpec",
    "EnergyNet",
    "GenerativeModel",
    "ImageError",
    "LangevinSampler",
    "Learner",
    "NumericalError",
    "Preset",
    "PresetError",
    "Progress",
    "activation_patterns",
    "get_preset",
    "init_chains",
    "preset_names",
    "reconstruct",
]
