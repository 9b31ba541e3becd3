"""Whether the net runs under bfloat16 autocast: the ``GCN_AMP`` setting, and what the CPU can
multiply natively. Needs no torch (the API process validates the setting without it).

Why a hardware test: bfloat16 autocast is a large win only where the CPU has bfloat16 matrix
instructions. In float32 the ``texture`` preset at 224 px sampled 1.7-2.6x as fast as the
reference loop on a 2-core Xeon with AMX, and under autocast 3.9-7x; on an AVX512-BF16 EPYC
autocast was 1.5-1.75x faster than float32 at first, but once float32 ran NNPACK's FFT
convolutions and the channel cut it was ahead at 224 px (hence ``amp_if_faster``, timed there,
not with AMX, where bfloat16 stays 1.6-3.6x ahead); on an
AVX2-only EPYC, where bfloat16 is emulated, autocast was 15-17x *slower* (docs/benchmarks.md). PyTorch 2.13 has no public query for these
instruction sets, so they are read from the kernel's list of CPU flags (Linux); elsewhere none
is assumed. The flags say what the CPU offers: a process that caps oneDNN's instruction set
(``ONEDNN_MAX_CPU_ISA``) below it should set ``GCN_AMP=off`` too.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

AMX_FLAG = "amx_bf16"  # AMX tiles multiplying bfloat16
BF16_FLAGS = (AMX_FLAG, "avx512_bf16")  # AMX tiles; AVX-512 bfloat16 dot products
SWITCH_VALUES = {"auto": "auto", "1": "on", "on": "on", "true": "on", "yes": "on",
                 "0": "off", "off": "off", "false": "off", "no": "off"}  # every GCN_ on/off setting


def switch(name: str, default: str) -> str | None:
    """``auto``, ``on`` or ``off`` for the environment variable ``name`` (``default`` where it is
    unset) by ``SWITCH_VALUES``; None for a word that table does not know."""
    return SWITCH_VALUES.get(os.environ.get(name, default).strip().lower())


def amp_setting(value: str | None = None) -> str:
    """``auto``, ``on`` or ``off`` from a ``GCN_AMP`` value (``value``, else the environment;
    1/0, true/false and yes/no are accepted too); ValueError for anything else."""
    raw = os.environ.get("GCN_AMP", "auto") if value is None else value
    setting = SWITCH_VALUES.get(raw.strip().lower() or "auto")
    if setting is None:
        raise ValueError(f"GCN_AMP must be auto, on or off, not {raw!r}")
    return setting


def use_amp(device_type: str, setting: str | None = None) -> bool:
    """Whether to autocast the net to bfloat16 on a ``device_type`` ('cpu', 'cuda') device; the
    chains, their gradients and updates stay float32 either way.

    ``auto`` (default): on CUDA, and on CPUs that multiply bfloat16 in hardware (AMX or
    AVX512-BF16), where the time-to-quality race reached its threshold in the same number of
    iterations as in float32 (on such CPUs sampling loops also time float32 and keep it unless
    autocast is clearly faster: ``amp_if_faster``); float32 elsewhere. ``on`` forces it, ``off``
    gives float32 everywhere (the paper's arithmetic; with ``GCN_CPU_CONV=onednn`` and
    ``GCN_CPU_SPLIT=off``, bitwise reproducible)."""
    setting = amp_setting(setting)
    if setting != "auto":
        return setting == "on"
    return device_type == "cuda" or (device_type == "cpu" and native_bf16())


def prepare_device(device) -> None:
    """Settings a job's arithmetic on ``device`` (a ``torch.device``) depends on, made before it
    runs (learning, sampling, reconstruction, inpainting). CUDA only: cuDNN times its convolution
    algorithms once per shape and keeps the fastest (``GCN_CUDNN_BENCHMARK=0`` turns this off
    for bitwise run-to-run reproducibility); under ``GCN_AMP=off`` cuDNN's TF32 convolutions (on
    by default in PyTorch, a 10-bit mantissa) are turned off, so that "float32 everywhere" holds
    on a GPU too. The CPU's counterpart, NNPACK against oneDNN, is ``models.cpu_conv``."""
    if device.type != "cuda":
        return
    import torch  # here, not at the top: this module needs no torch otherwise

    torch.backends.cudnn.benchmark = switch("GCN_CUDNN_BENCHMARK", "1") != "off"
    if amp_setting() == "off":
        torch.backends.cudnn.allow_tf32 = False


def amp_if_faster(device_type: str, setting: str | None = None) -> bool:
    """Whether ``use_amp``'s autocast is to be timed against float32 and kept only where clearly
    faster (``models.cpu_split``): under ``auto`` on a CPU with AVX512-BF16 and no AMX. Why: on
    one AVX512-BF16 EPYC host the float32 pass (NNPACK's FFT convolutions, the channel cut)
    overtook bfloat16 for the ``texture`` preset at 224 px (on another, bfloat16 stayed ahead:
    it depends on the host), while at 64 px it stays behind on both. With AMX tiles
    bfloat16 was 1.6-3.6x ahead of float32 in every case measured (64 to 512 px, 1 to 16 chains,
    1 and 2 threads; ``python -m bench.precision_ab``, docs/benchmarks.md), so timing float32
    there would only cost its first sights (~7.5 s on a worker's first job of four 224 px chains) to keep bfloat16
    anyway. ``on`` and ``off`` are kept as set, and CUDA keeps autocast."""
    return (device_type == "cpu" and amp_setting(setting) == "auto" and use_amp(device_type, setting)
            and AMX_FLAG not in cpu_flags())


@functools.cache
def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The flags the kernel lists for the first CPU (the cores of one machine share their
    instruction sets); empty where there is no such file (macOS, Windows)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86; ARM calls them Features
            return frozenset(value.split())
    return frozenset()


def native_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AMX-BF16 or AVX512-BF16)."""
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in BF16_FLAGS)
