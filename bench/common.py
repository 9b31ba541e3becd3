"""Shared pieces of the benchmarks: the machine, timing under load, FLOP counts, the matmul peak.

Every figure is a median (or a best) over repeats, and carries the load average (``os.getloadavg``)
seen while it was measured: the benchmarks are meant to be rerun on a quiet machine with the same
one command, and a figure taken next to other CPU-heavy work says so.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models import precision  # noqa: E402  (importable once ROOT is on the path)

OUT = Path(os.environ.get("GCN_BENCH_OUT") or ROOT / "bench" / "out")  # where the JSON and markdown go


def proc_status_kib(field: str) -> int:
    """A KiB field of Linux's /proc/self/status (``VmRSS``, ``VmHWM``: the resident set and its
    high-water mark, which a process started by fork and exec does not inherit, unlike
    ``ru_maxrss``); 0 where there is none."""
    status = Path("/proc/self/status")
    if not status.exists():
        return 0
    for line in status.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


# ----------------------------------------------------------------------------- machine


def cpu_fields(cpuinfo: str = "/proc/cpuinfo") -> dict[str, str]:
    """The first CPU's identifying lines of /proc/cpuinfo (vendor, name, family / model /
    stepping); empty where there is no such file."""
    fields: dict[str, str] = {}
    try:
        for line in Path(cpuinfo).read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("vendor_id", "model name", "cpu family", "model", "stepping"):
                fields.setdefault(key.strip(), value.strip())
            elif not line.strip() and fields:
                break
    except OSError:
        pass
    return fields


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's name and, on x86 Linux, its family / model / stepping numbers: VMs often show a
    bare "AMD EPYC", and hosts of one such name have differed 2x in convolution speed here."""
    fields = cpu_fields(cpuinfo)
    if "model name" not in fields:
        return platform.processor() or platform.machine()
    ids = [f"{k} {fields[k]}" for k in ("cpu family", "model", "stepping") if k in fields]
    return fields["model name"] + (f" ({', '.join(ids)})" if ids else "")


CPU_VENDORS = {"GenuineIntel": "intel", "AuthenticAMD": "amd"}


def cpu_vendor(cpuinfo: str = "/proc/cpuinfo") -> str:
    """'intel', 'amd', another vendor's id in lower case, or '' where the kernel names none."""
    vendor = cpu_fields(cpuinfo).get("vendor_id", "")
    return CPU_VENDORS.get(vendor, "".join(c for c in vendor.lower() if c.isalnum()))


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# glibc malloc's thresholds for the whole benchmark (``settle_allocator``): 32 MiB is the
# ceiling glibc's own dynamic mmap threshold climbs to, and a trim threshold twice that, as glibc
# keeps it
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 64 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)


def settle_allocator() -> str:
    """Fix glibc malloc's mmap and trim thresholds (``MMAP_THRESHOLD``, ``TRIM_THRESHOLD``) for
    this process, unless ``GCN_BENCH_MALLOC=default``; returns what the allocator runs with, for
    the report.

    Why: glibc starts a process with low, self-adjusting thresholds. The reference loop, which
    allocates fresh tensors every step, paid 313-364 minor page faults a step in a fresh process
    (``texture-fast`` at 64 px, 4 chains, 1 or 2 threads; ``models`` 0) and ran 8-19 % slower
    than in a process whose earlier, larger allocations had raised the thresholds, as the
    Langevin section's 224 px cases did for its 64 px case. So a case's reference speed hung on
    what ran before it, and a scaling point (a fresh process each) timed a slower reference than
    the Langevin section. Settled at the values a long-running process climbs to, every case
    times the reference as a warm process runs it, whatever ran before: the conservative side."""
    if platform.libc_ver()[0] != "glibc":
        return "the C library's own (not glibc)"
    if os.environ.get("GCN_BENCH_MALLOC", "settled") == "default":
        return "glibc's own (GCN_BENCH_MALLOC=default)"
    import ctypes

    libc = ctypes.CDLL(None)
    if not (libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        return "glibc's own (mallopt refused)"
    return f"glibc, mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim threshold {TRIM_THRESHOLD >> 20} MiB"


def load() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded."""
    return [round(v, 2) for v in os.getloadavg()]


def machine(device: torch.device, allocator: str | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "load_avg": load(),
        "device": str(device),
        "hostname": platform.node(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    if allocator is not None:
        info["allocator"] = allocator
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                    cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
                    tf32_conv=bool(torch.backends.cudnn.allow_tf32),
                    tf32_matmul=bool(torch.backends.cuda.matmul.allow_tf32))
    return info


def machine_tag(device: torch.device, cpuinfo: str = "/proc/cpuinfo") -> str:
    """A short name for this machine's results, so that one machine's run never replaces another
    kind's: cpu-<cores>c-<vector ISA>[-amx|-bf16]-<vendor> (machines of one kind differ in each:
    AVX-512 against AVX2 moves the figures 3x; bfloat16 hardware, AMX tiles or AVX512-BF16, makes
    bf16 autocast the default and moves its figures 3x more; an Intel Xeon whose VM hides AMX
    shows the same flags as an AMD EPYC with AVX512-BF16 and runs other kernels), or the GPU's
    name; with ``-amp-on`` / ``-amp-off`` when GCN_AMP overrides the default, so that such a run
    never replaces the default's results."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device).replace("NVIDIA ", "")
        tag = "cuda-" + "".join(c if c.isalnum() else "-" for c in name).strip("-").lower()
    else:
        flags = precision.cpu_flags(cpuinfo)
        bf16 = "-amx" if precision.AMX_FLAG in flags else ("-bf16" if precision.native_bf16(flags) else "")
        vendor = cpu_vendor(cpuinfo)
        tag = (f"cpu-{usable_cores()}c-{torch.backends.cpu.get_cpu_capability().lower()}{bf16}"
               + (f"-{vendor}" if vendor else ""))
    setting = precision.amp_setting()
    return tag if setting == "auto" else f"{tag}-amp-{setting}"


def amp_label(device: torch.device, timed: bool = True) -> str:
    """How the pipeline runs the net in this process: 'bf16 autocast' or 'fp32' (and, ``timed``,
    whether its sampling loops time fp32 beside bf16), and whether that is this device's default
    or GCN_AMP's override (for the reports)."""
    what = "bf16 autocast" if precision.use_amp(device.type) else "fp32"
    if timed and precision.amp_if_faster(device.type):
        what += ", fp32 where a sampling loop times it faster"
    setting = precision.amp_setting()
    return f"{what} (the pipeline's default here)" if setting == "auto" else f"{what} (GCN_AMP={setting})"


# ----------------------------------------------------------------------------- timing


@contextmanager
def strict_float32():
    """cuDNN's TF32 convolutions off inside (a no-op on the CPU), restored after."""
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = before


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Seconds of repeats of one measured call, with the load average at each."""

    seconds: list[float] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def best(self) -> float:
        return min(self.seconds)

    def as_dict(self) -> dict[str, Any]:
        return {"median_s": self.median, "best_s": self.best, "repeats": len(self.seconds),
                "seconds": [round(s, 6) for s in self.seconds], "load_avg_1m": self.loads}


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def interleaved(fns: dict[str, Callable[[], Any]], device: torch.device, repeats: int, warmup: int = 1,
                budget_s: Optional[float] = None) -> dict[str, Timing]:
    """Time every function ``repeats`` times, round-robin (A B C A B C ...) so that a change in
    the machine's load hits all of them alike; stop early (after at least 3 rounds) when
    ``budget_s`` is spent."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    out = {k: Timing() for k in fns}
    started = time.monotonic()
    for r in range(repeats):
        for name, fn in fns.items():
            out[name].seconds.append(timed(fn, device))
            out[name].loads.append(round(os.getloadavg()[0], 2))
        if budget_s is not None and r >= 2 and time.monotonic() - started > budget_s:
            break
    return out


def paired_ratio(slow: Timing, fast: Timing) -> float:
    """Median over rounds of slow/fast measured in the same round (robust to load drifting)."""
    return statistics.median(s / f for s, f in zip(slow.seconds, fast.seconds))


# ----------------------------------------------------------------------------- FLOPs


def conv_flops(layers, size: tuple[int, int], depth: Optional[int] = None) -> list[int]:
    """Multiply-adds x 2 of each conv layer's forward pass for one image of ``size``."""
    from models.net import conv_out_size

    h, w = size
    c = 3
    out = []
    for spec in list(layers)[: depth or len(layers)]:
        h, w = conv_out_size(h, spec), conv_out_size(w, spec)
        out.append(2 * spec.out_channels * c * spec.kernel * spec.kernel * h * w)
        c = spec.out_channels
    return out


def langevin_step_flops(layers, size: tuple[int, int], depth: Optional[int] = None) -> int:
    """One Langevin step of one chain: the forward pass plus the input gradient of every layer
    (the same multiply-adds again); ReLU, the top sum and the update are not counted."""
    return 2 * sum(conv_flops(layers, size, depth))


def learning_iteration_flops(layers, size: tuple[int, int], depth: int, n_chains: int, n_obs: int,
                             langevin_steps: int) -> int:
    """T Langevin steps on n_chains, plus the weight gradient over observed + synthesized images:
    forward, weight gradient of every layer, input gradient of every layer but the first."""
    per = conv_flops(layers, size, depth)
    grad = 2 * sum(per) + sum(per[1:])
    return langevin_steps * n_chains * langevin_step_flops(layers, size, depth) + (n_chains + n_obs) * grad


def matmul_peak(device: torch.device, repeats: int = 5, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """The machine's measured dense throughput in ``dtype`` (float32, or bfloat16 on GPUs and on
    CPUs with bfloat16 hardware), at the current thread count.

    Probes, the best of which is the peak: square ``torch.mm`` (BLAS: MKL on x86 CPUs, cuBLAS on
    GPUs) and large 3 x 3 convolutions (oneDNN / cuDNN implicit GEMM; on AMD CPUs MKL's sgemm does
    not use the full AVX-512 width and oneDNN's kernels measure up to 2x faster, so the sgemm
    figure alone would flatter every convolution measured against it). Best of ``repeats`` each:
    a peak is what the machine can do, so load only ever lowers it.
    """
    results: dict[str, Any] = {"probes": {}}
    sizes = (1024, 2048) if device.type == "cpu" else (4096, 8192)
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        c = torch.empty(n, n, device=device, dtype=dtype)
        reps = max(1, int((4e9 if device.type == "cpu" else 2e12) // (2 * n**3)))

        def mm():
            for _ in range(reps):
                torch.mm(a, b, out=c)

        t = interleaved({"mm": mm}, device, repeats)["mm"]
        flops = 2 * n**3 * reps
        results["probes"][f"mm{n}"] = {"gflops_best": flops / t.best / 1e9, "gflops_median": flops / t.median / 1e9,
                                       "load_avg_1m": t.loads}
    # implicit-GEMM convolutions whose output is small next to their work (a fresh output buffer
    # page-faults on the CPU, which would understate the peak)
    shapes = ([(4, 256, 64), (1, 256, 64), (1, 512, 32)] if device.type == "cpu" else
              [(32, 512, 128), (64, 256, 128)])
    for n, ch, side in shapes:
        x = torch.randn(n, ch, side, side, device=device, dtype=dtype)
        w = torch.randn(ch, ch, 3, 3, device=device, dtype=dtype)
        with torch.no_grad():
            t = interleaved({"conv": lambda: torch.nn.functional.conv2d(x, w, padding=1)}, device, repeats)["conv"]
        flops = 2 * n * ch * ch * 9 * side * side
        results["probes"][f"conv3x3 {n}x{ch}@{side}"] = {
            "gflops_best": flops / t.best / 1e9, "gflops_median": flops / t.median / 1e9, "load_avg_1m": t.loads}
    results["threads"] = torch.get_num_threads()
    return _peak_of(results)


def _peak_of(results: dict[str, Any]) -> dict[str, Any]:
    """Fill in the peak (the best probe) and the sgemm figure from ``results["probes"]``."""
    best = max(results["probes"].items(), key=lambda kv: kv[1]["gflops_best"])
    results["peak_gflops"] = best[1]["gflops_best"]
    results["peak_probe"] = best[0]
    results["sgemm_gflops"] = max(v["gflops_best"] for k, v in results["probes"].items() if k.startswith("mm"))
    return results


def best_peaks(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """One peak from two ``matmul_peak`` measurements (and their ``bf16`` ones) taken at two
    moments: each probe's better figure. Why: on a shared VM the cores' speed drifts over
    minutes (an AMX Xeon's 2-thread probe gave 311 GFLOP/s in one run and 223 in the next), so a
    probe taken in a slow phase would flatter every case measured against it; the best of two
    moments is the stricter peak (load only ever lowers a peak). Keeps each moment's peak, for
    the report."""
    merged: dict[str, Any] = {"probes": {}, "threads": before.get("threads"),
                              "peak_gflops_before_after": [before["peak_gflops"], after["peak_gflops"]]}
    for name in dict.fromkeys([*before["probes"], *after["probes"]]):
        runs = [r["probes"][name] for r in (before, after) if name in r["probes"]]
        merged["probes"][name] = max(runs, key=lambda probe: probe["gflops_best"])
    _peak_of(merged)
    if before.get("bf16") and after.get("bf16"):
        merged["bf16"] = best_peaks(before["bf16"], after["bf16"])
    elif before.get("bf16") or after.get("bf16"):
        merged["bf16"] = before.get("bf16") or after.get("bf16")
    return merged


# ----------------------------------------------------------------------------- data


def brick_crop(size: int = 64):
    """A ``size`` px crop of scikit-image's brick texture as an RGB PIL image (the tests' crop)."""
    import numpy as np
    from PIL import Image
    from skimage import data

    g = data.brick()[100 : 100 + size, 100 : 100 + size]
    return Image.fromarray(np.stack([g] * 3, axis=-1))


# ----------------------------------------------------------------------------- output


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, (torch.device, torch.dtype, Path)):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {msg}", flush=True)
