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


def profile(preset: str, size: int, threads: int, rounds: int) -> dict:
    """Medians over ``rounds`` (after ``WARMUP`` more) of every figure ``table`` shows, the two
    ways alternating in order round by round so that neither always follows the other."""
    model = _model(preset, size, 1, torch.device("cpu"))
    net, p = model.net, model.preset
    if not channel_pass.applies(net):
        raise ValueError(f"models.channel_pass does not serve the {preset} preset's net")
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(3)) * 20
    cpu_conv.nnpack_available()  # NNPACK's one-thread pool, made before any share runs
    a, b = (torch.randn(CONTROL_SIZE, CONTROL_SIZE) for _ in range(2))
    controls = [lambda o=torch.empty(CONTROL_SIZE, CONTROL_SIZE): torch.mm(a, b, out=o) for _ in range(threads)]
    sampler = LangevinSampler(step_size=p.step_size, sigma=p.sigma)
    noise, work, generator = torch.empty_like(x), torch.empty_like(x), torch.Generator().manual_seed(5)
    ways = {True: {"meetings": [], "pass": [], "control": []},
            False: {"meetings": [], "shares": [], "pass": [], "control": []}}
    step = {"update": [], "noise": [], "sampling": []}
    outer = torch.get_num_threads()
    torch.set_num_threads(threads)  # models.cpu_split makes one share a thread
    cpu_split.set_policy("on")  # the sampling loop's gradient: split, untimed by models.cpu_split
    try:
        for r in range(rounds + WARMUP):
            with cpu_split.share_runner(threads) as run:  # the calling thread on one torch thread, as in sampling
                meetings, control = Meetings(run), Meetings(run)
                for concurrent in (True, False) if r % 2 == 0 else (False, True):
                    meetings.reset(concurrent)
                    control.reset(concurrent)
                    start = time.perf_counter()
                    _, g = channel_pass.score_and_grad(net, x, threads, meetings)
                    elapsed = time.perf_counter() - start
                    control(controls)
                    if r >= WARMUP:
                        way = ways[concurrent]
                        way["meetings"].append(meetings.seconds)
                        way["pass"].append(elapsed)
                        way["control"].append(control.seconds[0] if concurrent else max(control.shares[0]))
                        if not concurrent:
                            way["shares"].append(meetings.shares)
                start = time.perf_counter()  # the rest of LangevinSampler._step_, as it runs there
                torch.div(x, sampler.sigma**2, out=work).sub_(g).mul_(-0.5 * sampler.step_size**2)
                middle = time.perf_counter()
                torch.randn(x.shape, generator=generator, out=noise)
                end = time.perf_counter()
            with cpu_split.sharing(net, x, steps=1) as grad:
                start_sampling = time.perf_counter()
                grad(x)
                sampling = time.perf_counter() - start_sampling
            if r >= WARMUP:
                step["update"].append(middle - start)
                step["noise"].append(end - middle)
                step["sampling"].append(sampling)
    finally:
        cpu_split.set_policy(None)
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
            "sampling_pass": median(step["sampling"]),
            "control": median(together["control"]), "control_alone": median(apart["control"]),
            "update": median(step["update"]), "noise": median(step["noise"])}


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
    slowest = sum(max(row["shares_alone"]) for row in r["rows"])
    lines += [
        "",
        f"The meetings: {r['meetings'] * ms:.2f} ms concurrently, against {slowest * ms:.2f} ms for their slowest "
        f"shares alone.",
        f"The pass ({r['gflop']:.2f} GFLOP in direct-convolution terms): {r['pass'] * ms:.2f} ms with the shares "
        f"concurrent ({r['gflop'] / r['pass']:.0f} GFLOP/s), of which {outside * ms:.2f} ms outside the meetings "
        f"(the calling thread alone); {r['pass_alone'] * ms:.2f} ms one share after another; "
        f"{r['sampling_pass'] * ms:.2f} ms as a sampling loop runs it (`models.cpu_split`, its own workers).",
        f"A Langevin step adds, on the calling thread alone: the update {r['update'] * ms:.2f} ms, "
        f"the noise draw {r['noise'] * ms:.2f} ms.",
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
    except ValueError as e:
        ap.error(str(e))
    machine = common.machine(torch.device("cpu"))
    print(f"{machine.get('cpu', 'CPU')}, {args.threads} threads, {case} float32, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {common.load()}; "
          f"medians of {args.rounds} passes each way\n")
    print(table(r))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
