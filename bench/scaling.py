"""Scaling: seconds per Langevin step and peak memory against image size and chain count.

Each point runs in a fresh subprocess (``python -m bench.scaling --one ...``) so that its peak
memory is its own: on the CPU the growth of the resident set's high-water mark over the resident
set just before sampling (``VmHWM - VmRSS`` from /proc/self/status); on CUDA
``torch.cuda.max_memory_allocated`` over what was allocated before, first step included, so with
``cudnn.benchmark`` on (as a job runs) the workspace of cuDNN's algorithm search counts too, as it
does in a job's first step. Both implementations, ``models`` and the reference loop.

- size sweep: the ``texture`` preset (frame_3, full depth), 1 chain, 64 to 1024 px;
- chain sweep: the ``texture-fast`` preset at 64 px, 1 to 256 chains (CPU: to 64).

A point's seconds per step is the median over ``LOOPS`` timed loops of several steps each,
divided by their steps: a job samples in one loop of many steps, and a loop's set-up (on the CPU,
``models.cpu_split`` handing the cores to its workers; OpenMP threads spinning on after the last
loop) is paid once per loop, not per step. Timed one step a loop, a split 64 px batch of 64
chains on the AMX Xeon read 0.015 s a step against 0.011 s in loops of 20.

On the CPU, ``models`` first runs loops of 4 steps until ``models.cpu_split`` has decided
whether to split this shape (as a worker's first job of a shape does), so that its timed steps
are the way the pipeline samples that shape from then on; one-step loops alone never enter the
trial and would time one pass. The peak memory covers that trial too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

import torch

from . import common

LOOPS = 3  # timed loops per point


def one(impl: str, preset_name: str, size: int, chains: int, steps: int, device: str, threads: int) -> dict[str, Any]:
    """One point, in this (fresh) process: ``LOOPS`` timed loops of ``steps`` steps each."""
    from models import GenerativeModel, get_preset
    from models import precision
    from models.langevin import LangevinSampler

    from .reference import ReferenceNet, langevin as reference_langevin

    allocator = common.settle_allocator()  # as the parent's cases run: GCN_BENCH_MALLOC is inherited
    torch.set_num_threads(threads)
    dev = torch.device(device)
    precision.prepare_device(dev)  # as the parent process and a job: on CUDA, cudnn.benchmark (timed in the untimed warm-up)
    preset = get_preset(preset_name).replace(image_size=size, n_chains=chains)
    model = GenerativeModel.create(preset, torch.zeros(3)).to(dev)
    net = model.net
    x0 = torch.randn(chains, 3, size, size, device=dev) * 20
    amp = precision.use_amp(dev.type)  # as the pipeline samples on this device
    if impl == "reference":
        ref = ReferenceNet(net)

        def run(n: int) -> None:
            reference_langevin(ref, x0, n, preset.step_size, preset.sigma)
    else:
        sampler = LangevinSampler(step_size=preset.step_size, sigma=preset.sigma, amp=amp)

        def run(n: int) -> None:
            sampler.sample(net, x0, n_steps=n)

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    rss_before = common.proc_status_kib("VmRSS")
    run(1)  # warm-up, and the memory peak
    way = settle_split(sampler, net, x0) if impl == "models" and dev.type == "cpu" else None
    times = []  # seconds per step of each timed loop
    for _ in range(LOOPS):
        common.sync(dev)
        t = time.perf_counter()
        run(steps)
        common.sync(dev)
        times.append((time.perf_counter() - t) / steps)
    if dev.type == "cuda":
        peak_mib = (torch.cuda.max_memory_allocated(dev) - base) / 2**20
    else:
        peak_mib = (common.proc_status_kib("VmHWM") - rss_before) / 1024
    flops = common.langevin_step_flops(preset.layers, (size, size)) * chains
    s = statistics.median(times)
    return {"impl": impl, "preset": preset_name, "size": size, "chains": chains, "step_s": s, "step_s_all": times,
            "loop_steps": steps,
            "image_steps_per_s": chains / s, "gflops": flops / s / 1e9, "peak_mib": peak_mib,
            "load_avg_1m": round(common.load()[0], 2), "allocator": allocator, **({"cpu_split": way} if way is not None else {})}


def settle_split(sampler, net, x0: torch.Tensor, budget_s: float = 120.0) -> dict[str, Any]:
    """Loops of 4 steps until ``models.cpu_split`` has chosen one pass or the split for this
    batch (13 loops when both ways are timed), at most ``budget_s``; returns that choice
    (``split``: None if still undecided) and the loops it took (0 where nothing was timed: False
    where nothing can split, e.g. on one thread or under GCN_CPU_SPLIT=off; True under =on)."""
    from models import cpu_split

    from .langevin import until_settled

    amp = sampler.amp
    if not cpu_split.splittable(net, x0, amp):
        return {"split": False, "loops": 0}
    loops, _ = until_settled(lambda: sampler.sample(net, x0, n_steps=4),
                             lambda: cpu_split.settled(net, x0, amp), 40, budget_s)
    way = cpu_split.settled(net, x0, amp)
    return {"split": None if way is None else way.split, "loops": loops}


def grid(device: torch.device, quick: bool) -> list[tuple[str, int, int]]:
    if quick:
        sizes, chain_counts = (64, 512), (16,)
    else:
        sizes, chain_counts = (64, 128, 256, 512, 1024), (1, 4, 16, 64) + ((256,) if device.type == "cuda" else ())
    return [("texture", s, 1) for s in sizes] + [("texture-fast", 64, c) for c in chain_counts]


def run(device: torch.device, quick: bool, threads: int) -> dict[str, Any]:
    points = []
    for preset, size, chains in grid(device, quick):
        for impl in ("models", "reference"):
            steps = 2 if size >= 512 or quick else 4  # per timed loop
            cmd = [sys.executable, "-m", "bench.scaling", "--one", impl, preset, str(size), str(chains), str(steps),
                   str(device), str(threads)]
            common.log(f"scaling: {impl} {preset} {size} px x {chains}")
            r = subprocess.run(cmd, cwd=common.ROOT, capture_output=True, text=True, timeout=900)
            if r.returncode != 0:
                points.append({"impl": impl, "preset": preset, "size": size, "chains": chains,
                               "error": r.stderr[-1500:]})
                continue
            points.append(json.loads(r.stdout.strip().splitlines()[-1]))
    return {"threads": threads, "points": points, "load_avg_after": common.load(),
            "models_precision": common.amp_label(device, timed=False)}  # no amp_if_faster: fp32 not timed against bf16


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", nargs=7, metavar=("IMPL", "PRESET", "SIZE", "CHAINS", "STEPS", "DEVICE", "THREADS"))
    a = ap.parse_args()
    impl, preset, size, chains, steps, device, threads = a.one
    print(json.dumps(one(impl, preset, int(size), int(chains), int(steps), device, int(threads))))


if __name__ == "__main__":
    main()
