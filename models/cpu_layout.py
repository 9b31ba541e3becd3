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

The same goes for the batch itself (``one_at_a_time``): NNPACK serves one image faster than a
batch at 224 px on a 2-core Xeon (one thread, 4 chains of ``texture``: 113 ms a pass in one
batch, 92 ms one chain at a time, 131 ms in two batches of 2) but not at 64 px (``texture-fast``,
4.3 against 6.6 ms). So a float32 pass over several chains large enough to matter
(``EACH_MIN_FLOPS``) is timed once per shape both ways, and runs chain by chain only if that is
clearly faster (``EACH_MARGIN``); each chain's numbers are then those of its own pass.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

from . import cpu_conv

MIN_FLOPS = 50e6  # one pass's convolutions: below this a pass costs well under a millisecond
MARGIN = 0.95  # NCHW must take under 95 % of channels-last's time
EACH_MIN_FLOPS = 1e9  # a batch's pass: below this (a few ms) not worth timing chain by chain
EACH_MARGIN = 0.9  # chain by chain must take under 90 % of the batch's time
TIMING_ROUNDS = 3

_choices: dict[tuple, torch.memory_format] = {}
_chain_by_chain: dict[tuple, bool] = {}


def forget_timings() -> None:
    """Drop every choice: the next pass of each shape is timed again."""
    _choices.clear()
    _chain_by_chain.clear()


def choose(net, x: torch.Tensor, low: torch.dtype | None, run: Callable[[torch.memory_format], object],
           labels_kind: str = "none") -> torch.memory_format:
    """The format for this pass of ``net`` over ``x`` (``low``: the autocast dtype, None outside
    autocast; ``labels_kind``: ``models.net.labels_kind``). ``run(format)`` runs the pass in a
    format; it is called (and timed) only the first time a batch shape is seen."""
    if not _measured(x, low):
        return torch.channels_last
    key = _key(net, x, labels_kind)
    choice = _choices.get(key)
    if choice is None:
        choice = torch.channels_last
        if net.pass_flops(x.shape) >= MIN_FLOPS and _nchw_is_faster(run):
            choice = torch.contiguous_format
        _choices[key] = choice
    return choice


def one_at_a_time(net, x: torch.Tensor, low: torch.dtype | None, whole: Callable[[], object],
                  each: Callable[[], object], labels_kind: str = "none") -> bool:
    """Whether this pass of ``net`` over the chains ``x`` should run them one at a time (module
    docstring); ``whole()`` and ``each()`` run it both ways, timed only the first time a batch
    shape is seen (for a net's layer shapes, kind of labels, thread count and convolution
    policy), by whichever call comes first, a single step's included: on the 2-core Xeon the
    first pass of ``texture`` at 224 px with 4 chains took 4.2 s against 3.0 s without this
    timing (the formats' and convolutions' own timings are the rest), once a process. Never for
    one chain, under autocast, in float64, on a GPU or with ``GCN_CPU_CONV=onednn``."""
    if x.shape[0] < 2 or not _measured(x, low):
        return False
    key = _key(net, x, labels_kind)
    choice = _chain_by_chain.get(key)
    if choice is None:
        choice = net.pass_flops(x.shape) >= EACH_MIN_FLOPS and _each_is_faster(whole, each)
        _chain_by_chain[key] = choice
    return choice


def _measured(x: torch.Tensor, low: torch.dtype | None) -> bool:
    """Whether a pass over ``x`` chooses by timing: float32 on the CPU, outside autocast, not under
    ``GCN_CPU_CONV=onednn`` (module docstring)."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and low is None and cpu_conv.get_policy() != "onednn"


def _key(net, x: torch.Tensor, labels_kind: str) -> tuple:
    """What a pass's time depends on: the batch shape, the net's layers, the kind of labels, the
    thread count and the convolution policy."""
    return tuple(x.shape), net.cost_key(), labels_kind, torch.get_num_threads(), cpu_conv.get_policy()


def _nchw_is_faster(run: Callable[[torch.memory_format], object]) -> bool:
    """Both formats on the pass itself (which also makes ``models.cpu_conv``'s choices for the
    layers in each format)."""
    return _faster(lambda: run(torch.contiguous_format), lambda: run(torch.channels_last), MARGIN)


def _each_is_faster(whole: Callable[[], object], each: Callable[[], object]) -> bool:
    return _faster(each, whole, EACH_MARGIN)


def _faster(a: Callable[[], object], b: Callable[[], object], margin: float) -> bool:
    """Whether ``a`` takes under ``margin`` of ``b``'s time: alternating, medians of a few rounds
    after a warm-up of each."""
    times: dict[bool, list[float]] = {True: [], False: []}
    a(), b()
    for _ in range(TIMING_ROUNDS):
        for is_a, run in ((True, a), (False, b)):
            start = time.perf_counter()
            run()
            times[is_a].append(time.perf_counter() - start)
    return statistics.median(times[True]) < margin * statistics.median(times[False])
