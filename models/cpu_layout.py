"""The memory format of the activations in the CPU's float32 score-and-gradient pass, measured.

Why: oneDNN's direct convolutions (and cuDNN's, and oneDNN's bfloat16 ones) run these nets
10-15 % faster channels-last, so that is the default; but NNPACK's FFT convolutions
(``models.cpu_conv``) take and give NCHW, and with channels-last activations around them every
such layer paid for copies and for elementwise work on mismatched layouts. On 2 AVX2 cores the
``texture-fast`` pass at 64 px was 5-15 % faster in NCHW (1 or 2 threads, 2 or 4 chains); the
``texture`` pass at 224 px was 1-6 % slower. So, as ``models.cpu_conv`` does for each layer, the
first pass of a batch shape (for a net's layer shapes, thread count and convolution policy) is
timed in both formats and NCHW kept only if clearly faster (``MARGIN``).

Only float32 CPU passes choose: under autocast, on a GPU, for passes too small to matter
(``MIN_FLOPS``) and with ``GCN_CPU_CONV=onednn`` (whose promise is bitwise the same results run
to run) the activations stay channels-last. Both formats give the same numbers to float rounding.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

from . import cpu_conv

MIN_FLOPS = 50e6  # one pass's convolutions: below this a pass costs well under a millisecond
MARGIN = 0.95  # NCHW must take under 95 % of channels-last's time
TIMING_ROUNDS = 3

_choices: dict[tuple, torch.memory_format] = {}


def forget_timings() -> None:
    """Drop every choice: the next pass of each shape is timed again."""
    _choices.clear()


def choose(net, x: torch.Tensor, low: torch.dtype | None, run: Callable[[torch.memory_format], object],
           labels_kind: str = "none") -> torch.memory_format:
    """The format for this pass of ``net`` over ``x`` (``low``: the autocast dtype, None
    outside autocast; ``labels_kind``: ``models.net.labels_kind``). ``run(format)`` runs the pass in a format; it is called (and timed) only
    the first time a batch shape is seen."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or low is not None or cpu_conv.get_policy() == "onednn":
        return torch.channels_last
    key = (tuple(x.shape), net.cost_key(), labels_kind, torch.get_num_threads(), cpu_conv.get_policy())
    choice = _choices.get(key)
    if choice is None:
        choice = torch.channels_last
        if net.pass_flops(x.shape) >= MIN_FLOPS and _nchw_is_faster(run):
            choice = torch.contiguous_format
        _choices[key] = choice
    return choice


def _nchw_is_faster(run: Callable[[torch.memory_format], object]) -> bool:
    """Both formats on the pass itself, alternating, medians of a few rounds after a warm-up
    (which also makes ``models.cpu_conv``'s choices for the layers in each format)."""
    formats = (torch.channels_last, torch.contiguous_format)
    times: dict[torch.memory_format, list[float]] = {f: [] for f in formats}
    for fmt in formats:
        run(fmt)
    for _ in range(TIMING_ROUNDS):
        for fmt in formats:
            start = time.perf_counter()
            run(fmt)
            times[fmt].append(time.perf_counter() - start)
    return statistics.median(times[torch.contiguous_format]) < MARGIN * statistics.median(times[torch.channels_last])
