"""Stride-1 convolutions on the CPU by NNPACK's FFT kernels where they measure faster than
oneDNN's direct ones.

Why: a 5 x 5 convolution by FFT needs several times fewer multiplications than the direct one,
and NNPACK (built into PyTorch's CPU wheels) has hand-written AVX2 / NEON FFT kernels. On a
2-core AVX2 EPYC, one thread, the ``texture`` preset's 100 -> 64 channel 5 x 5 layer at 72 x 72
took 9.4 ms against oneDNN's 24-27 ms, and the score-and-gradient pass at 224 px went from 77-80
to 38-43 ms (docs/benchmarks.md). Whether it wins depends on the shape, the thread count and the
CPU (oneDNN has AVX-512 kernels, NNPACK does not), so it is measured rather than guessed, as
cuDNN's benchmark mode does on a GPU.

Policy (``GCN_CPU_CONV``, or ``set_policy``):

- ``auto`` (default): the first time a shape is seen (at this thread count), both are timed
  on it and NNPACK is kept only if clearly faster (``MARGIN``); convolutions too small to matter
  (``MIN_FLOPS``) always use oneDNN, so tiny test nets never depend on a timing.
- ``onednn``: never NNPACK, and channels-last activations (``models.cpu_layout`` times nothing).
  Results are then bitwise the same from run to run on one machine, whatever the timings (the
  two differ at float rounding: ~1e-6 of the largest output); on several threads, with
  ``GCN_CPU_SPLIT=off`` too (``models.cpu_split``).
- ``nnpack``: NNPACK wherever it applies (tests use it to exercise that path on small nets).

NNPACK applies to float32 CPU tensors outside autocast, with kernels of 4 to 16 pixels (3 x 3
would go to its Winograd kernels: ten times the rounding error and no faster here) and padding
smaller than the kernel. If NNPACK is missing or fails, oneDNN does the work.

NNPACK runs on the calling thread alone: PyTorch makes NNPACK's thread pool at its first
convolution, with torch's thread count then, and ``nnpack_available`` makes that happen with one
thread. With a pool of several threads, its workers spun on the cores that oneDNN's threads
needed next: a 64 px step (1 chain, 2 threads) took 4.2 ms against 2.1 ms with oneDNN alone,
although NNPACK had timed faster on its own. On several threads, NNPACK is then kept only where
one thread of it beats all of oneDNN's (on 2 AVX2 cores: the 224 px layers, not the 64 px ones).
"""

from __future__ import annotations

import functools
import statistics
import time

import torch
from torch.nn import functional as F

from . import env_policy

POLICIES = ("auto", "onednn", "nnpack")
MIN_KERNEL, MAX_KERNEL = 4, 16
MIN_FLOPS = 20e6  # below this a convolution costs well under a millisecond: not worth a timing
MARGIN = 0.85  # NNPACK must take under 85 % of oneDNN's time: near-ties stay with oneDNN
TIMING_ROUNDS = 5

_policy: str | None = None  # None: GCN_CPU_CONV, read at the first convolution
_choices: dict[tuple, bool] = {}


def set_policy(policy: str | None) -> None:
    """``auto``, ``onednn`` or ``nnpack`` (see the module docstring); None: ``GCN_CPU_CONV``
    again (default ``auto``). Timings made under ``auto`` are kept across changes of policy
    (``forget_timings`` drops them)."""
    global _policy
    if policy is not None and policy not in POLICIES:
        raise ValueError(f"the CPU convolution policy must be one of {', '.join(POLICIES)}, not {policy!r}")
    _policy = policy


def forget_timings() -> None:
    """Drop every choice made under ``auto``: the next convolution of each shape is timed again."""
    _choices.clear()


def get_policy() -> str:
    global _policy
    if _policy is None:
        _policy = env_policy.from_env("GCN_CPU_CONV", POLICIES)
    return _policy


@functools.cache
def nnpack_available() -> bool:
    """Whether this PyTorch has NNPACK and this CPU runs it. The first call initialises NNPACK
    (which must happen before its first convolution) and makes its thread pool with one thread."""
    try:
        if not torch._nnpack_available():
            return False
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            torch._nnpack_spatial_convolution(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), None, [0, 0], [1, 1])
        finally:
            torch.set_num_threads(threads)
        return True
    except Exception:  # an exotic build without the operator, or NNPACK refusing this CPU
        return False


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: tuple[int, int]) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, 1, padding)``, by NNPACK where the policy says so (its output
    is then NCHW-contiguous; oneDNN's follows the input's memory format)."""
    if use_nnpack(x, weight.shape, padding):
        return nnpack_conv2d(x, weight, bias, padding)
    return F.conv2d(x, weight, bias, 1, padding)


def nnpack_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  padding: tuple[int, int]) -> torch.Tensor:
    """The same by NNPACK, for a caller that has asked ``use_nnpack`` already; if NNPACK fails,
    oneDNN does it, and this shape stays with oneDNN from then on."""
    try:
        return _nnpack(x, weight, bias, padding)
    except RuntimeError:
        _choices[_key(x, weight.shape, padding)] = False
        return F.conv2d(x, weight, bias, 1, padding)


def use_nnpack(x: torch.Tensor, weight_shape: torch.Size, padding: tuple[int, int]) -> bool:
    """Whether a stride-1 convolution of ``x`` with filters of ``weight_shape`` should run on NNPACK."""
    policy = get_policy()
    if policy == "onednn":
        return False
    key = _key(x, weight_shape, padding)
    choice = _choices.get(key)
    if policy == "auto" and choice is False:
        return False  # decided: the common case, several times a pass, so checked first (no _applies)
    if not _applies(x, weight_shape, padding):
        return False
    if policy == "nnpack":
        return True
    if choice is None:
        choice = _flops(x.shape, weight_shape, padding) >= MIN_FLOPS and _nnpack_is_faster(x, weight_shape, padding)
        _choices[key] = choice
    return choice


def use_nnpack_strided(x: torch.Tensor, weight_shape: torch.Size, stride: int, padding: tuple[int, int]) -> bool:
    """Whether a convolution of ``x`` with stride ``stride`` (in both directions) should run as
    NNPACK's stride-1 convolution of ``space_to_depth(x, stride, padding)`` with the
    space-to-depth filters (``models.net.space_to_depth_weight``; ceil(k / s) pixels a side).
    Under ``auto`` that is timed, the pad and unshuffle included, against oneDNN's strided
    convolution of ``x`` itself: the two ways a caller would really run it."""
    policy = get_policy()
    if policy == "onednn" or stride < 2:
        return False
    key = ("space-to-depth", stride) + _key(x, weight_shape, padding)
    if policy == "auto" and _choices.get(key) is False:
        return False  # decided (as in use_nnpack)
    co, ci, kh, kw = weight_shape
    s2d_weight = torch.Size((co, ci * stride * stride, -(-kh // stride), -(-kw // stride)))
    if not _applies(x, s2d_weight, (0, 0)):
        return False
    if policy == "nnpack":
        return True
    choice = _choices.get(key)
    if choice is None:
        flops = _flops(space_to_depth_shape(x.shape, stride, padding), s2d_weight, (0, 0))
        direct = torch.zeros(weight_shape, dtype=x.dtype)
        choice = flops >= MIN_FLOPS and _nnpack_is_faster(
            x, s2d_weight, (0, 0),
            lambda probe, _: F.conv2d(probe, direct, None, stride, padding),
            lambda probe, w: _nnpack(space_to_depth(probe, stride, padding), w, None, (0, 0)))
        _choices[key] = choice
    return choice


def space_to_depth(x: torch.Tensor, stride: int, padding: tuple[int, int]) -> torch.Tensor:
    """``x`` zero-padded (by ``padding``, then up to a multiple of ``stride``) and pixel-unshuffled:
    [N, C s s, Hp / s, Wp / s], channel c s s + i s + j holding pixels (s a + i, s b + j). The
    unshuffle by hand, a view and one copy: half of ``F.pixel_unshuffle``'s time on a 2-core
    Xeon (173 against 373 us for a 224 px image)."""
    n, c, hp, wp = space_to_depth_shape(x.shape, stride, padding)
    s, (ph, pw) = stride, padding
    h, w = x.shape[-2:]
    padded = F.pad(x, (pw, wp * s - w - pw, ph, hp * s - h - ph)).contiguous()
    return padded.view(n, c // (s * s), hp, s, wp, s).permute(0, 1, 3, 5, 2, 4).reshape(n, c, hp, wp)


def space_to_depth_shape(shape: torch.Size, stride: int, padding: tuple[int, int]) -> tuple[int, int, int, int]:
    n, c, h, w = shape
    return n, c * stride * stride, -(-(h + 2 * padding[0]) // stride), -(-(w + 2 * padding[1]) // stride)


def _applies(x: torch.Tensor, weight_shape: torch.Size, padding: tuple[int, int]) -> bool:
    kh, kw = weight_shape[-2:]
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() == 4
        and not torch.is_autocast_enabled("cpu")
        and not (torch.is_grad_enabled() and x.requires_grad)  # NNPACK's op has no backward
        and MIN_KERNEL <= kh <= MAX_KERNEL
        and MIN_KERNEL <= kw <= MAX_KERNEL
        and 0 <= padding[0] < kh
        and 0 <= padding[1] < kw
        and nnpack_available()
    )


def _nnpack(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: tuple[int, int]) -> torch.Tensor:
    return torch._nnpack_spatial_convolution(x, weight, bias, list(padding), [1, 1])


def _key(x: torch.Tensor, weight_shape: torch.Size, padding: tuple[int, int]) -> tuple:
    channels_last = memory_format_of(x) == torch.channels_last
    return tuple(x.shape), channels_last, tuple(weight_shape), tuple(padding), torch.get_num_threads()


def memory_format_of(t: torch.Tensor) -> torch.memory_format:
    """channels-last for a 4-d tensor laid out so (and not also plainly contiguous), else contiguous."""
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _flops(shape: torch.Size, weight_shape: torch.Size, padding: tuple[int, int]) -> float:
    n, _, h, w = shape
    co, ci, kh, kw = weight_shape
    return 2.0 * n * co * ci * kh * kw * (h + 2 * padding[0] - kh + 1) * (w + 2 * padding[1] - kw + 1)


def _nnpack_is_faster(x: torch.Tensor, weight_shape: torch.Size, padding: tuple[int, int],
                      by_onednn=None, by_nnpack=None) -> bool:
    """Time both on zero tensors of these shapes and layout (their speed does not depend on the
    values), alternating so that a change of machine load hits both alike; medians of a few rounds.
    ``by_onednn(probe, weight)`` and ``by_nnpack(probe, weight)`` (a zero ``x``, zero filters of
    ``weight_shape``) stand in for the stride-1 convolution of ``x`` by each, where given."""
    with torch.no_grad():
        probe = torch.zeros_like(x)
        weight = torch.zeros(weight_shape, dtype=x.dtype)
        by_onednn = by_onednn or (lambda p, w: F.conv2d(p, w, None, 1, padding))
        by_nnpack = by_nnpack or (lambda p, w: _nnpack(p, w, None, padding))
        runs = {False: lambda: by_onednn(probe, weight), True: lambda: by_nnpack(probe, weight)}
        times: dict[bool, list[float]] = {False: [], True: []}
        try:
            for run in runs.values():  # warm-up: workspaces, oneDNN primitive caches
                run()
            for _ in range(TIMING_ROUNDS):
                for nnpack, run in runs.items():
                    start = time.perf_counter()
                    run()
                    times[nnpack].append(time.perf_counter() - start)
        except RuntimeError:
            return False
    return statistics.median(times[True]) < MARGIN * statistics.median(times[False])
