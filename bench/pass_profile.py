"""Where one chain's float32 pass spends its time when each convolution is cut across threads.

    python -m bench.pass_profile [--case texture@224] [--threads 2] [--rounds 20]

``models.channel_pass`` serves a single float32 chain on several threads by cutting each
convolution of the score-and-gradient pass into shares, one a thread; the threads meet once a
convolution (a layer's forward, a layer's input gradient). This times every meeting two ways,
in alternate passes: the shares run concurrently, as sampling runs them, and one after another
on the calling thread, each share timed alone. A meeting that takes longer than its slowest
share alone is slowed by what its shares share (memory bandwidth, caches) or by the threads'
hand-over. The same two ways time a control whose shares should not slow each other: a matrix
multiply of about a layer's size on each thread. It also times what a Langevin step adds to
the pass on the calling thread, alone: the update and the noise draw. Prints a markdown table;
nothing is written.

Why: on a 2-core AMX Xeon the float32 ``texture`` step at 224 px sits near issue 6's 90 %
of the matrix-multiply peak at 2 threads (docs/benchmarks.md), and this says which part of the
step keeps it there. The shares run on the threads sampling runs them on
(``models.cpu_split.share_runner``), and the gradient as a sampling loop gets it from
``models.cpu_split`` is timed beside them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable, Sequence

import torch

from models import channel_pass, cpu_conv, cpu_split
from models.langevin import LangevinSampler

from . import common
from .langevin import _model
from .split_ab import check_threads_and_rounds, parse_case

CONTROL_SIZE = 768  # a 768 x 768 sgemm: 0.9 GFLOP, about a share of the texture preset's 5 x 5 layer
WARMUP = 2  # rounds not counted


class Meetings:
    """The ``run`` that ``channel_pass.score_and_grad`` calls once a convolution, timing each call:
    while ``concurrent``, by ``run`` (``models.cpu_split.share_runner``: the first share on the
    calling thread, each other on a worker), else one share after another on the calling thread."""

    def __init__(self, run: Callable[[Sequence[Callable[[], None]]], None]):
        self.run, self.concurrent = run, True
        self.seconds: list[float] = []  # one a meeting, in the pass's order
        self.shares: list[list[float]] = []  # each share's own seconds (one after another only)

    def reset(self, concurrent: bool) -> None:
        self.concurrent, self.seconds, self.shares = concurrent, [], []

    def __call__(self, calls: Sequence[Callable[[], None]]) -> None:
        start = time.perf_counter()
        if self.concurrent:
            self.run(calls)
        else:
            own = []
            for call in calls:
                begin = time.perf_counter()
                call()
                own.append(time.perf_counter() - begin)
            self.shares.append(own)
        self.seconds.append(time.perf_counter() - start)


def phases(net) -> list[tuple[str, str]]:
    """(meeting, convolution) of each meeting of a pass, in ``channel_pass``'s order: the
    layers' forward convolutions bottom-up, then their input gradients top-down."""
    convs = net.active_convs()
    shape = [f"{c.in_channels} -> {c.out_channels}, {c.kernel_size[0]} x {c.kernel_size[1]}"
             + (f" stride {c.stride[0]}" if c.stride[0] > 1 else "") for c in convs]
    forward = [(f"layer {i + 1} forward", shape[i]) for i in range(len(convs))]
    backward = [(f"layer {i + 1} input gradient", shape[i]) for i in reversed(range(len(convs)))]
    return forward + backward


class NotServed(Exception):
    """The case's net is not one ``models.channel_pass`` cuts (a usage error of the command)."""


def profile(preset: str, size: int, threads: int, rounds: int) -> dict:
    """Medians over ``rounds`` (after ``WARMUP`` more) of every figure ``table`` shows. The pass's
    two ways alternate in order round by round so that neither always follows the other; each
    round then times the rest of a Langevin step and the gradient through ``models.cpu_split``;
    the control's rounds come after all of them (its matrices would leave a pass cold caches)."""
    model = _model(preset, size, 1, torch.device("cpu"))
    net, p = model.net, model.preset
    if not channel_pass.applies(net):
        raise NotServed(f"models.channel_pass does not serve the {preset} preset's net")
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(3)) * 20
    cpu_conv.nnpack_available()  # NNPACK's one-thread pool, made before any share runs
    sampler = LangevinSampler(step_size=p.step_size, sigma=p.sigma)
    chains, noise, work = torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)
    generator = torch.Generator().manual_seed(5)
    ways = {True: {"meetings": [], "pass": []}, False: {"meetings": [], "shares": [], "pass": []}}
    step = {"update": [], "noise": [], "sampling": []}
    outer, policy = torch.get_num_threads(), cpu_split.get_policy()
    torch.set_num_threads(threads)  # models.cpu_split makes one share a thread
    cpu_split.set_policy("on")  # the gradient through models.cpu_split: split, no trial
    try:
        for r in range(rounds + WARMUP):
            with cpu_split.share_runner(threads) as run:  # the calling thread on one torch thread, as in sampling
                meetings = Meetings(run)
                for concurrent in (True, False) if r % 2 == 0 else (False, True):
                    meetings.reset(concurrent)
                    start = time.perf_counter()
                    _, g = channel_pass.score_and_grad(net, x, threads, meetings)
                    elapsed = time.perf_counter() - start
                    if r >= WARMUP:
                        ways[concurrent]["meetings"].append(meetings.seconds)
                        ways[concurrent]["pass"].append(elapsed)
                        if not concurrent:
                            ways[False]["shares"].append(meetings.shares)
                update, draw = rest_of_step(sampler, chains, x, g, noise, work, generator)
            with cpu_split.sharing(net, x, steps=3) as grad:  # as a loop's steps get it, the first untimed
                grad(x)
                sampling = []
                for _ in range(2):
                    start = time.perf_counter()
                    grad(x)
                    sampling.append(time.perf_counter() - start)
            if r >= WARMUP:
                step["update"].append(update)
                step["noise"].append(draw)
                step["sampling"].extend(sampling)
        control = control_rounds(threads, rounds)
    finally:
        cpu_split.set_policy(policy)
        torch.set_num_threads(outer)
    median = statistics.median
    together, apart = ways[True], ways[False]
    if len(together["meetings"][0]) != len(phases(net)):  # channel_pass changed its order: relabel
        raise RuntimeError(f"{len(together['meetings'][0])} meetings a pass, {len(phases(net))} labels")
    rows = []
    for i, (phase, conv) in enumerate(phases(net)):
        shares = [median(s[i][j] for s in apart["shares"]) for j in range(len(apart["shares"][0][i]))]
        rows.append({"phase": phase, "convolution": conv, "shares_alone": shares,
                     "concurrent": median(m[i] for m in together["meetings"])})
    return {"preset": preset, "size": size, "threads": threads, "gflop": net.pass_flops(x.shape) / 1e9,
            "rows": rows, "pass": median(together["pass"]), "pass_alone": median(apart["pass"]),
            "meetings": median(sum(m) for m in together["meetings"]),
            "sampling_pass": median(step["sampling"]), **control,
            "update": median(step["update"]), "noise": median(step["noise"])}


def rest_of_step(sampler: LangevinSampler, chains, x, g, noise, work, generator) -> tuple[float, float]:
    """Seconds of what ``LangevinSampler._step_`` does after the gradient, as it does it, on a
    copy of ``x`` (made untimed): (the update's arithmetic, the noise draw)."""
    chains.copy_(x)
    start = time.perf_counter()
    drift = torch.div(chains, sampler.sigma**2, out=work).sub_(g).mul_(-0.5 * sampler.step_size**2)
    chains.add_(drift)
    drawing = time.perf_counter()
    torch.randn(chains.shape, generator=generator, out=noise)
    drawn = time.perf_counter()
    chains.add_(noise.mul_(sampler.step_size))
    return (drawing - start) + (time.perf_counter() - drawn), drawn - drawing


def control_rounds(threads: int, rounds: int) -> dict:
    """The control, a ``CONTROL_SIZE``-square sgemm a thread, timed both ways as the meetings are:
    {"control": concurrently, "control_alone": the slowest alone} (medians)."""
    a, b = (torch.randn(CONTROL_SIZE, CONTROL_SIZE) for _ in range(2))
    calls = [lambda o=torch.empty(CONTROL_SIZE, CONTROL_SIZE): torch.mm(a, b, out=o) for _ in range(threads)]
    seconds: dict[bool, list[float]] = {True: [], False: []}
    with cpu_split.share_runner(threads) as run:
        meeting = Meetings(run)
        for r in range(rounds + WARMUP):
            for concurrent in (True, False) if r % 2 == 0 else (False, True):
                meeting.reset(concurrent)
                meeting(calls)
                if r >= WARMUP:
                    seconds[concurrent].append(meeting.seconds[0] if concurrent else max(meeting.shares[0]))
    return {"control": statistics.median(seconds[True]), "control_alone": statistics.median(seconds[False])}


def table(r: dict) -> str:
    ms = 1e3
    lines = ["| meeting | convolution | each share alone, ms | concurrently, ms | concurrently / slowest share alone |",
             "|---|---|---|---|---|"]
    for row in r["rows"]:
        alone = " / ".join(f"{s * ms:.2f}" for s in row["shares_alone"])
        lines.append(f"| {row['phase']} | {row['convolution']} | {alone} | {row['concurrent'] * ms:.2f} | "
                     f"{row['concurrent'] / max(row['shares_alone']):.2f} |")
    lines.append(f"| control: {CONTROL_SIZE} x {CONTROL_SIZE} sgemm, one a thread | - | "
                 f"{r['control_alone'] * ms:.2f} (slowest) | {r['control'] * ms:.2f} | "
                 f"{r['control'] / r['control_alone']:.2f} |")
    outside = r["pass"] - r["meetings"]
    step = r["pass"] + r["update"] + r["noise"]
    slowest = sum(max(row["shares_alone"]) for row in r["rows"])
    lines += [
        "",
        f"The meetings: {r['meetings'] * ms:.2f} ms concurrently, against {slowest * ms:.2f} ms for their slowest "
        f"shares alone.",
        f"The pass ({r['gflop']:.2f} GFLOP in direct-convolution terms): {r['pass'] * ms:.2f} ms with the shares "
        f"concurrent ({r['gflop'] / r['pass']:.0f} GFLOP/s), of which {outside * ms:.2f} ms outside the meetings "
        f"(the calling thread alone); {r['pass_alone'] * ms:.2f} ms one share after another; "
        f"{r['sampling_pass'] * ms:.2f} ms through `models.cpu_split.sharing` (its workers), as a sampling "
        f"loop's steps after the first get it.",
        f"A Langevin step adds, on the calling thread alone: the update {r['update'] * ms:.2f} ms, "
        f"the noise draw {r['noise'] * ms:.2f} ms; the step, {step * ms:.2f} ms "
        f"({r['gflop'] / step:.0f} GFLOP/s).",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.pass_profile", description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", default="texture@224", help="PRESET@SIZE, one chain (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=common.usable_cores(),
                    help="shares, one thread each (default: the usable cores, here %(default)s)")
    ap.add_argument("--rounds", type=int, default=20, help="timed passes of each way")
    args = ap.parse_args(argv)
    check_threads_and_rounds(ap, args, "one thread has no shares")
    case = args.case.strip()
    if "@" not in case:
        ap.error(f"case {case!r} is not PRESET@SIZE (e.g. texture@224)")
    spec = case if "x" in case.partition("@")[2] else f"{case}x1"
    try:
        preset, size, chains = parse_case(spec)
    except argparse.ArgumentTypeError as e:
        ap.error(str(e).replace(repr(spec), repr(case)))
    if chains != 1:
        ap.error(f"case {case!r}: one chain only (models.channel_pass cuts a single chain's convolutions)")
    torch.set_num_threads(args.threads)
    common.settle_allocator()  # as the bench runs: glibc's thresholds where they stop climbing
    try:
        r = profile(preset, size, args.threads, args.rounds)
    except NotServed as e:
        ap.error(str(e))
    print(f"{common.cpu_model()}, {args.threads} threads, {case} float32, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {common.load()}; "
          f"medians of {args.rounds} passes each way\n")
    print(table(r))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
