"""How much memory a job will need, estimated when it is submitted, so that a request which
would exhaust a worker is refused (422) instead of queued.

The estimate counts what dominates for these nets: every conv layer's output and its ReLU for the
whole batch, kept for the backward pass (Langevin needs the gradient with respect to the images),
and the gradients themselves: about 4 bytes x 3 x (input + 2 x every layer's output) per image.
It is an order of magnitude, meant to catch requests that are absurd for the machine
(``GCN_MAX_JOB_MEMORY_MB``), not to pack a GPU.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

BYTES_PER_FLOAT = 4
BACKWARD_FACTOR = 3


class TooBig(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _layer(spec: Any) -> tuple[int, int, int, int]:
    if isinstance(spec, dict):
        return (int(spec["out_channels"]), int(spec["kernel"]), int(spec.get("stride", 1)), int(spec.get("padding", 0)))
    if hasattr(spec, "out_channels"):
        return (spec.out_channels, spec.kernel, spec.stride, spec.padding)
    values = [int(v) for v in spec] + [1, 0][len(spec) - 2:]
    return (values[0], values[1], values[2], values[3])


def feature_sizes(layers: Iterable[Any], size: int) -> list[tuple[int, int]]:
    """(channels, side) after each conv layer for a ``size`` x ``size`` input."""
    out, side = [], size
    for spec in layers:
        channels, kernel, stride, padding = _layer(spec)
        side = (side + 2 * padding - kernel) // stride + 1
        out.append((channels, side))
    return out


def estimate_bytes(layers: Iterable[Any], size: int, batch: int) -> int:
    per_image = 3 * size * size + sum(2 * c * s * s for c, s in feature_sizes(layers, size) if s > 0)
    return batch * per_image * BYTES_PER_FLOAT * BACKWARD_FACTOR


def top_multiplier(config: dict[str, Any]) -> int:
    """How many times its listed channels a preset's top conv layer has: a texture model of K
    categories has K channel groups on top (an object model's K outputs are FC units instead)."""
    k = int(config.get("categories") or 1)
    return 1 if config.get("kind") == "object" else k


def check(layers: Iterable[Any], size: int, batch: int, limit_mb: int, *, size_field: str,
          batch_field: str, layers_field: Optional[str] = None, top: int = 1) -> int:
    """The estimate in bytes, or ``TooBig`` naming the field to change. ``top``: the top layer's
    channels are ``top`` times those listed (``top_multiplier``)."""
    layers = [_layer(spec) for spec in layers]
    if top > 1 and layers:
        c, k, st, pad = layers[-1]
        layers[-1] = (c * top, k, st, pad)
    for k, (_c, side) in enumerate(feature_sizes(layers, size)):
        if side < 1:
            raise TooBig(layers_field or size_field,
                         f"a {size} x {size} image is too small for conv layer {k + 1} of this net "
                         f"(its output would be empty); use larger images or smaller kernels/strides")
    need = estimate_bytes(layers, size, batch)
    if need > limit_mb * 1024 * 1024:
        raise TooBig(batch_field if batch > 1 else size_field,
                     f"this job would need about {need / 2**20:.0f} MiB of tensor memory (batch {batch}, "
                     f"{size} x {size}); the limit is {limit_mb} MiB: ask for fewer or smaller images")
    return need
