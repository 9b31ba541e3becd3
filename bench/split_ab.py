"""Is splitting the chains across the cores faster, and does ``auto`` pick what is? Whole loops.

    python -m bench.split_ab [--threads 2] [--rounds 8] [--cases texture@224x1,texture@224x4] [--memory]

``models.cpu_split`` decides from a loop's own steps whether a batch of chains runs as one pass
on all threads or as shares, one thread each (chains, or for a single float32 chain each
convolution's channels: ``models.channel_pass``). bench/langevin.py times it inside the whole
benchmark; this times it alone, for each case in float32 and under bfloat16 autocast: whole
sampling loops with ``GCN_CPU_SPLIT=off`` and ``on``, interleaved round by round in alternating
order (the first two rounds dropped as warm-up), then what ``auto`` decides after loops of the
same length; with ``--memory``, the peak resident memory of a fresh process sampling the case
under each policy. Prints a markdown table; nothing is written. About 40 s on 2 cores of an AMD EPYC
(bf16 is emulated, and slow, on CPUs without bfloat16 hardware: ``--no-bf16`` skips it).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import torch

from models import PresetError, cpu_split, get_preset
from models.langevin import LangevinSampler
from models.net import map_sizes

from . import common, report
from .langevin import _model

STEPS = {"texture": 6, "texture-fast": 40}  # steps a loop: about 0.5 s each on 2 cores


def parse_case(text: str) -> tuple[str, int, int]:
    """``texture@224x4`` -> ("texture", 224, 4); argparse's error for anything else."""
    text = text.strip()
    try:
        preset, rest = text.split("@")
        size, chains = (int(v) for v in rest.split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"case {text!r} is not PRESET@SIZExCHAINS (e.g. texture@224x4)") from None
    if chains < 1:
        raise argparse.ArgumentTypeError(f"case {text!r}: 1 chain or more")
    try:
        p = get_preset(preset).replace(image_size=size, n_chains=chains)  # the preset's own limits
        map_sizes(p.layers, size)  # and an image its layers can take
    except (PresetError, ValueError) as e:
        raise argparse.ArgumentTypeError(f"case {text!r}: {e}") from None
    return preset, size, chains


def check_threads_and_rounds(ap: argparse.ArgumentParser, args: argparse.Namespace, why: str) -> None:
    """argparse's usage error (exit 2) for ``--threads`` under 2 (``why``: what one thread lacks)
    or ``--rounds`` under 1."""
    if args.threads < 2:
        ap.error(f"--threads must be 2 or more (it is {args.threads}"
                 f"{', the usable cores here' if args.threads == common.usable_cores() else ''}): {why}")
    if args.rounds < 1:
        ap.error("--rounds must be 1 or more")


def sampling_loop(preset: str, size: int, chains: int, amp: bool):
    """(net, x0, steps, loop): a case's net and chains, and ``loop()``, one sampling loop of
    ``steps`` steps returning its seconds."""
    model = _model(preset, size, chains, torch.device("cpu"))
    net, p = model.net, model.preset
    steps = STEPS.get(preset, 10)
    x0 = torch.randn(chains, 3, size, size, generator=torch.Generator().manual_seed(3)) * 20
    sampler = LangevinSampler(step_size=p.step_size, sigma=p.sigma, n_steps=steps, amp=amp)

    def loop() -> float:
        start = time.perf_counter()
        sampler.sample(net, x0, generator=torch.Generator().manual_seed(5))
        return time.perf_counter() - start
    return net, x0, steps, loop


def time_case(preset: str, size: int, chains: int, amp: bool, rounds: int) -> dict:
    net, x0, steps, loop = sampling_loop(preset, size, chains, amp)

    seconds: dict[str, list[float]] = {"off": [], "on": []}
    try:
        for r in range(rounds + 2):
            for policy in ("off", "on") if r % 2 == 0 else ("on", "off"):  # neither always follows the other
                cpu_split.set_policy(policy)
                seconds[policy].append(loop())
        cpu_split.set_policy("auto")
        cpu_split.forget_timings()
        loops = 0
        while cpu_split.decision(net, x0, amp) is None and loops < 100:
            loop()
            loops += 1
        decided = cpu_split.decision(net, x0, amp)
    finally:
        cpu_split.set_policy(None)
        cpu_split.forget_timings()
    off, on = (statistics.median(seconds[k][2:]) for k in ("off", "on"))
    return {"case": f"{preset}@{size} x{chains}", "amp": amp, "steps": steps, "one_pass_ms": off / steps * 1e3,
            "split_ms": on / steps * 1e3, "ratio": on / off, "auto_split": decided, "auto_loops": loops}


def child_peak_rss(preset: str, size: int, chains: int, amp: bool, policy: str) -> int:
    """In a fresh process (``--child-rss``): two loops under ``policy``, then this process's peak
    resident memory in MiB: Linux's VmHWM (``ru_maxrss`` would not do: a child started by fork and
    exec inherits its parent's)."""
    loop = sampling_loop(preset, size, chains, amp)[3]
    cpu_split.set_policy(policy)
    for _ in range(2):
        loop()
    return common.proc_status_kib("VmHWM") // 1024


def peak_rss(preset: str, size: int, chains: int, amp: bool, policy: str, threads: int) -> int:
    """Peak resident memory (MiB) of a process that only samples this case under ``policy``:
    each policy in a process of its own, since a process's peak never comes down."""
    cmd = [sys.executable, "-m", "bench.split_ab", "--threads", str(threads), "--cases",
           f"{preset}@{size}x{chains}", "--child-rss", policy] + (["--child-amp"] if amp else [])
    done = subprocess.run(cmd, cwd=common.ROOT, capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1])


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.split_ab", description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=common.usable_cores(),
                    help="torch threads (default: the usable cores, here %(default)s)")
    ap.add_argument("--rounds", type=int, default=8, help="timed rounds of each policy")
    ap.add_argument("--cases", type=lambda s: [parse_case(c) for c in s.split(",")],
                    default=[("texture", 224, 1), ("texture", 224, 4), ("texture-fast", 64, 4)],
                    help="comma-separated PRESET@SIZExCHAINS (default: texture@224x1,texture@224x4,texture-fast@64x4)")
    ap.add_argument("--no-bf16", action="store_true", help="float32 only")
    ap.add_argument("--memory", action="store_true",
                    help="also the peak resident memory of a process running each policy (two processes a row)")
    ap.add_argument("--child-rss", choices=("off", "on"), help=argparse.SUPPRESS)
    ap.add_argument("--child-amp", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    check_threads_and_rounds(ap, args, "one thread never splits")
    if args.memory and not common.proc_status_kib("VmHWM"):
        ap.error("--memory reads Linux's /proc/self/status, which this machine does not have")
    torch.set_num_threads(args.threads)
    if args.child_rss:
        print(child_peak_rss(*args.cases[0], args.child_amp, args.child_rss))
        return 0
    machine = common.machine(torch.device("cpu"))
    print(f"{machine.get('cpu', 'CPU')}, {args.threads} threads, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"load average {common.load()}\n")
    memory = " peak RSS MiB: one pass / split |" if args.memory else ""
    print(f"| case | precision | steps a loop | one pass ms/step | split ms/step | split / one pass | auto keeps "
          f"| loops to decide |{memory}")
    print("|---|---|---|---|---|---|---|---|" + ("---|" if args.memory else ""))
    for preset, size, chains in args.cases:
        for amp in (False,) if args.no_bf16 else (False, True):
            if chains == 1 and amp:  # models.channel_pass serves float32 only
                print(f"| {preset}@{size} x1 | bf16 autocast | - | - | - | - | never splits | - |"
                      + (" - |" if args.memory else ""), flush=True)
                continue
            r = time_case(preset, size, chains, amp, args.rounds)
            keeps = report.SPLIT_WORDS[r["auto_split"]]
            rss = ""
            if args.memory:
                off, on = (peak_rss(preset, size, chains, amp, policy, args.threads) for policy in ("off", "on"))
                rss = f" {off} / {on} |"
            print(f"| {r['case']} | {'bf16 autocast' if amp else 'fp32'} | {r['steps']} | {r['one_pass_ms']:.1f} | "
                  f"{r['split_ms']:.1f} | {r['ratio']:.2f} | {keeps} | {r['auto_loops']} |{rss}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
