"""Is float32 or bfloat16 autocast faster here, and does the timed default keep the faster? Whole loops.

    python -m bench.precision_ab [--threads 1,2] [--rounds 7] [--cases texture@224x1,texture-fast@64x4]

On a CPU with bfloat16 hardware, ``GCN_AMP=auto`` asks for autocast and lets ``models.cpu_split``
time float32 beside it on a loop's first steps (``amp_if_faster``): the fastest of bf16 or
fp32, one pass or split, is kept. For each case and thread count this first runs each of the
three samplers (bf16; fp32; timed, the pipeline's) until its trial has decided, timing the timed
one's trial (the first-sight cost a worker pays once per shape), then times whole sampling loops
of the three interleaved round by round in rotating order (the first two rounds dropped as
warm-up). Prints a markdown table of image-steps per second; nothing is written. About 2 minutes
on 2 cores of an AMD EPYC with the default cases. The timed sampler is the pipeline's default on
CPUs with AVX512-BF16 and no AMX only: with AMX ``auto`` keeps bfloat16 untimed, and without
bfloat16 hardware (emulated, many times slower) float32 untimed; there its columns say so.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from models import cpu_split, precision
from models.langevin import LangevinSampler

from . import common, report
from .langevin import _model, until_settled
from .split_ab import STEPS, parse_case

SAMPLERS = {"bf16": {"amp": True}, "fp32": {"amp": False}, "timed": {"amp": True, "amp_if_faster": True}}
DEFAULT_CASES = [("texture", 224, 1), ("texture", 224, 4), ("texture", 128, 1), ("texture-fast", 64, 4)]


def time_case(preset: str, size: int, chains: int, rounds: int) -> dict:
    """Image-steps per second of each sampler (median of ``rounds`` loops), what the timed one
    kept, and its trial's loops and seconds."""
    model = _model(preset, size, chains, torch.device("cpu"))
    net, p = model.net, model.preset
    steps = STEPS.get(preset, 10)
    x0 = torch.randn(chains, 3, size, size, generator=torch.Generator().manual_seed(3)) * 20
    samplers = {name: LangevinSampler(step_size=p.step_size, sigma=p.sigma, n_steps=steps, **flags)
                for name, flags in SAMPLERS.items()}

    def loop(name: str) -> float:
        start = time.perf_counter()
        samplers[name].sample(net, x0, generator=torch.Generator().manual_seed(5))
        return time.perf_counter() - start

    def way(name: str):
        s = samplers[name]
        return cpu_split.settled(net, x0, s.amp, amp_if_faster=s.amp_if_faster)

    trial = {name: until_settled(lambda: loop(name), lambda: way(name), 100, float("inf"))
             for name in ("timed", "bf16", "fp32")}  # the timed one first: its trial pays every first sight
    names = list(SAMPLERS)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds + 2):
        for name in names[r % 3:] + names[: r % 3]:  # none always follows another
            times[name].append(loop(name))
    rate = {name: chains * steps / statistics.median(t[2:]) for name, t in times.items()}
    kept = way("timed")
    return {"rate": rate, "kept": kept, "trial_loops": trial["timed"][0], "trial_s": trial["timed"][1],
            "steps": steps}


def parse_threads(text: str) -> list[int]:
    """``1,2`` -> [1, 2]; argparse's error for anything else."""
    try:
        threads = [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"threads {text!r} are not comma-separated counts (e.g. 1,2)") from None
    if any(t < 1 for t in threads):
        raise argparse.ArgumentTypeError(f"threads {text!r}: each count must be 1 or more")
    return threads


def kept_words(way) -> str:
    if way is None:
        return "undecided"
    return f"{'bf16' if way.amp else 'fp32'}, {report.SPLIT_WORDS[way.split]}"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.precision_ab", description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=parse_threads, default=[1, common.usable_cores()],
                    help="comma-separated torch thread counts (default: 1 and the usable cores)")
    ap.add_argument("--rounds", type=int, default=7, help="timed loops of each sampler")
    ap.add_argument("--cases", type=lambda s: [parse_case(c) for c in s.split(",")], default=DEFAULT_CASES,
                    help="comma-separated PRESET@SIZExCHAINS (default: texture@224x1,texture@224x4,texture@128x1,"
                         "texture-fast@64x4)")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be 1 or more")
    machine = common.machine(torch.device("cpu"))
    native = precision.native_bf16()
    print(f"{machine.get('cpu', 'CPU')}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average "
          f"{common.load()}; bfloat16 {'in hardware' if native else 'emulated (GCN_AMP=auto keeps float32 here)'}\n")
    timed = ("timed" if precision.amp_if_faster("cpu") else
             "timed (not the default here)" if native else "timed (opt-in here)")
    print(f"| case | threads | steps a loop | bf16 image-steps/s | fp32 image-steps/s | {timed} image-steps/s "
          f"| {timed} kept | its trial |")
    print("|---|---|---|---|---|---|---|---|")
    threads_before = torch.get_num_threads()
    try:
        for threads in args.threads:
            torch.set_num_threads(threads)
            for preset, size, chains in args.cases:
                cpu_split.forget_timings()
                r = time_case(preset, size, chains, args.rounds)
                rate = r["rate"]
                print(f"| {preset}@{size} x{chains} | {threads} | {r['steps']} | {rate['bf16']:.1f} | {rate['fp32']:.1f} "
                      f"| {rate['timed']:.1f} | {kept_words(r['kept'])} "
                      f"| {r['trial_loops']} loops, {r['trial_s']:.1f} s |", flush=True)
    finally:
        torch.set_num_threads(threads_before)
        cpu_split.forget_timings()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
