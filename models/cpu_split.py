"""The Langevin chains of one batch split across CPU cores, each share on a thread of its own.

Why: on a few cores, the small convolutions of a 64 px net do not keep two oneDNN threads busy
(the ``texture-fast`` step at 64 px, 4 chains, ran 1.01x the reference loop on 2 AVX2 cores,
against 1.31x on one), and NNPACK's FFT kernels pay on one thread only (``models.cpu_conv``).
The chains of a Langevin step are independent: the score's gradient of each depends on that
chain alone. So a batch of N chains on T threads is cut into min(N, T) shares; the caller
computes the first and a worker thread each other, every one with a single intra-op thread
(where ``models.cpu_conv`` may then pick NNPACK). Each chain gets the numbers it gets in one
pass, to float rounding (a share's convolutions may run another algorithm than the batch's).
A single chain (the ``texture`` preset's) is shared otherwise: each convolution of its pass is
cut by channels into T shares (``models.channel_pass``; float32, single-category nets). On a
2-core Xeon that took the 224 px ``texture`` step from 21-22 ms in one pass to 17 ms.

While a loop splits, the caller's own torch thread count is one (restored on leaving
``sharing``): its elementwise work between the passes is small, and a team of OpenMP threads of
its own would spin on the cores the workers need (a 64 px split pass then took as long as both
shares one after the other).

Policy (``GCN_CPU_SPLIT``, or ``set_policy``):

- ``auto`` (default): for each batch shape (with a net's layer shapes, the thread count, the
  precision and the kind of labels) the loop's own first steps alternate between one pass and
  the split, timed (``_Trial``; loops shorter than a run carry its progress over), and the split
  is kept only if clearly faster (``MARGIN``). Steps too small to matter (``MIN_FLOPS``) never
  split, so tiny test nets never depend on a timing.
- ``off``: one pass on all threads (with ``GCN_CPU_CONV=onednn``, and a precision that is not
  timed, ``GCN_AMP=on`` or ``off``, bitwise reproducible).
- ``on``: split wherever there are two threads and two chains, or one that
  ``models.channel_pass`` serves (tests use it).

The same trial can settle the precision (``amp_if_faster``, the pipeline's choice under
``GCN_AMP=auto`` on CPUs with AVX512-BF16 and no AMX, ``models.precision``): bfloat16 autocast is
asked for, but float32 passes (one pass, and split where that is possible) are timed beside it,
and autocast is kept only if clearly faster (``AMP_MARGIN``; each precision's split or one
pass is settled first, with ``MARGIN``, then the two compared). Why: with NNPACK's FFT
convolutions and the channel cut, float32 overtook bfloat16 on one AVX512-BF16 EPYC host for the
``texture`` preset at 224 px (1 thread: 44.6 against 33.0 image-steps/s; on another host
bfloat16 stayed ahead, so it is timed, not assumed), while on the AMX Xeon
bfloat16 stays 1.6-3.6x ahead (not timed there); float32 is also the paper's arithmetic, so a
near tie goes to it.
Under ``off`` only the precision is timed; under ``on`` nothing is. A trial holds the pool's
lock, so two callers never time (or write) the same trial at once: the second runs as asked.

Only the CPU splits, and only when the caller has two or more torch threads. The workers belong
to one process-wide pool; a second caller that finds it busy runs one pass rather than wait. A
worker sets its own intra-op thread count to one; torch hands a thread created later the last
count set by any thread, which is the caller's, set again on leaving ``sharing``. After a fork
the child starts a pool of its own (the parent's threads do not exist there).
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import statistics
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Iterator, NamedTuple, Optional, Sequence

import torch

from . import channel_pass, cpu_conv, env_policy
from .net import labels_kind

POLICIES = ("auto", "off", "on")
MIN_FLOPS = 100e6  # one step's convolutions (``EnergyNet.pass_flops``, whole batch)
MARGIN = 0.9  # the split must take under 90 % of one pass's time
AMP_MARGIN = 0.9  # with amp_if_faster: bfloat16 must take under 90 % of float32's time
TIMING_RUN = 5  # steps in a row of one kind while undecided (they may span several loops)
TIMING_SKIP = 2  # steps after each switch not timed (a new run or loop; OpenMP threads spinning)
TIMING_ROUNDS = 2  # timed runs' worth of steps of each kind (``TIMING_RUN - TIMING_SKIP`` each)
TIMING_MAX_RUNS = 20  # per way: loops that time too few steps decide for the first after this many runs

_policy: Optional[str] = None  # None: GCN_CPU_SPLIT, read at the first step
_choices: dict[tuple, "Way"] = {}
_timings: dict[tuple, dict] = {}  # under auto, until decided: ``_Trial``'s progress


class Way(NamedTuple):
    """How a loop's steps run: under bfloat16 autocast or not, split across the threads or not."""
    amp: bool
    split: bool


def set_policy(policy: Optional[str]) -> None:
    """``auto``, ``off`` or ``on`` (module docstring); None: ``GCN_CPU_SPLIT`` again. Timings
    made under ``auto`` are kept across changes of policy (``forget_timings`` drops them)."""
    global _policy
    if policy is not None and policy not in POLICIES:
        raise ValueError(f"the CPU split policy must be one of {', '.join(POLICIES)}, not {policy!r}")
    _policy = policy


def get_policy() -> str:
    global _policy
    if _policy is None:
        _policy = env_policy.from_env("GCN_CPU_SPLIT", POLICIES)
    return _policy


def forget_timings() -> None:
    """Drop every timed choice (and unfinished trial): each batch is timed again."""
    _choices.clear()
    _timings.clear()


@contextlib.contextmanager
def sharing(net, x: torch.Tensor, amp: bool = False, labels=None, steps: Optional[int] = None,
            amp_if_faster: bool = False) -> Iterator[Callable[..., torch.Tensor]]:
    """For a loop of steps over chains shaped like ``x``: yields ``grad(x, labels)``, which
    returns df/dx of every chain (``net.score_and_grad_view``'s gradient, possibly a strided
    view), by one pass or by shares of the batch (of one chain's convolutions) on the worker
    threads; while it splits, the caller runs on one torch thread (module docstring). ``steps``:
    how many the loop will take, where known; a loop too short to time a step (``TIMING_SKIP``
    or fewer) runs the first way (as asked, one pass) and leaves an undecided trial to a longer
    one. ``amp_if_faster`` (with ``amp``, on the CPU): float32 is timed too (module docstring)."""
    ways, key = _plan(net, x, amp, labels, amp_if_faster)
    choice = _choices.get(key) if key is not None else ways[-1]
    if choice is None and steps is not None and steps <= TIMING_SKIP:
        choice = ways[0]
    candidates = [choice] if choice is not None else ways
    splits = [way for way in candidates if way.split]
    if choice is not None and not choice.split:
        yield one_pass_grad(net, choice.amp)
        return
    if not _pool_lock.acquire(blocking=False):  # another caller is splitting or timing: as asked
        yield one_pass_grad(net, candidates[0].amp)
        return
    threads = torch.get_num_threads()
    try:
        workers = _get_pool(max(_shares(net, x, way.amp)[0] for way in splits) - 1) if splits else []
        grads = {way: _split_grad(workers, net, x, way.amp) if way.split else one_pass_grad(net, way.amp)
                 for way in candidates}
        if choice is None:  # undecided: the loop's first steps are the timing
            yield _Trial(key, grads, threads)
        else:
            torch.set_num_threads(1)
            yield grads[choice]
    finally:
        torch.set_num_threads(threads)
        _pool_lock.release()


@contextlib.contextmanager
def share_runner(shares: int) -> Iterator[Callable[[Sequence[Callable[[], None]]], None]]:
    """``run(calls)`` for up to ``shares`` argument-free callables at once: the first on the
    calling thread (on one torch thread meanwhile), each other on a worker of the pool that
    split passes use, returning when all are done; what ``models.channel_pass`` is given to run
    its shares. For timing shares apart from a pass (bench/pass_profile.py); waits while
    another caller holds the pool (so never call it inside ``sharing`` on the same thread: the
    pool's lock is not re-entrant)."""
    if shares < 1:
        raise ValueError(f"shares must be 1 or more, not {shares}")
    threads = torch.get_num_threads()
    with _pool_lock:
        workers = _get_pool(shares - 1) if shares > 1 else []
        torch.set_num_threads(1)
        try:
            yield functools.partial(_run, workers[: shares - 1])
        finally:
            torch.set_num_threads(threads)


def one_pass_grad(net, amp: bool = False) -> Callable[..., torch.Tensor]:
    """``grad(x, labels)`` by one pass of the whole batch (what ``sharing`` yields when it
    does not split)."""
    return functools.partial(_one_pass, net, amp=amp)


def splittable(net, x: torch.Tensor, amp: bool = False, labels=None) -> bool:
    """Whether ``sharing`` may split this batch at all in precision ``amp`` (under ``auto``, once
    timed): on the CPU, two threads or more, and two chains or one that ``models.channel_pass``
    serves (float32 only: with ``amp_if_faster`` one bfloat16 chain may still split in float32)."""
    return get_policy() != "off" and _shares(net, x, amp)[0] >= 2


def settled(net, x: torch.Tensor, amp: bool = False, labels=None, amp_if_faster: bool = False) -> Optional[Way]:
    """The ``Way`` ``sharing`` runs this batch's loops: decided, or None while a trial has not
    ended yet (under ``auto``, or under ``off`` with ``amp_if_faster``)."""
    ways, key = _plan(net, x, amp, labels, amp_if_faster)
    return ways[-1] if key is None else _choices.get(key)


def decision(net, x: torch.Tensor, amp: bool = False, labels=None, amp_if_faster: bool = False) -> Optional[bool]:
    """Whether ``sharing`` splits this batch: True or False, or None while a trial has not ended
    yet (``settled``)."""
    way = settled(net, x, amp, labels, amp_if_faster)
    return None if way is None else way.split


# ---- the decision ----------------------------------------------------------------------------
def _shares(net, x: torch.Tensor, amp: bool) -> tuple[int, bool]:
    """(shares, by_channels): how many shares a split would make on this CPU (1: none
    possible), and whether they cut each convolution's channels (one float32 chain that
    ``models.channel_pass`` serves) rather than the batch."""
    if x.device.type != "cpu" or x.dim() != 4:
        return 1, False
    threads = torch.get_num_threads()
    by_channels = x.shape[0] == 1 and x.dtype == torch.float32 and channel_pass.applies(net, amp)
    return (threads if by_channels else min(threads, x.shape[0])), by_channels


def _plan(net, x: torch.Tensor, amp: bool, labels, amp_if_faster: bool) -> tuple[list[Way], Optional[tuple]]:
    """(ways, key): the ways a loop over ``x`` may run, the one asked for first (``amp``, one
    pass), and under a timing policy the key of its decision in ``_choices`` (None: no choice
    to make; ``sharing`` runs the last way, one pass as asked or, under ``on``, the split)."""
    policy = get_policy()
    asked = [Way(amp, False)]
    if x.device.type != "cpu" or x.dim() != 4:
        return asked, None
    if policy == "on":
        return (asked + [Way(amp, True)]) if _shares(net, x, amp)[0] >= 2 else asked, None
    precisions = [amp, False] if amp and amp_if_faster and x.dtype == torch.float32 else [amp]
    ways = [Way(p, split) for p in precisions for split in (False, True)
            if not split or (policy == "auto" and _shares(net, x, p)[0] >= 2)]
    if len(ways) < 2:
        return ways, None
    key = (tuple(x.shape), net.cost_key(), tuple(ways), torch.get_num_threads(), labels_kind(labels))
    if key not in _choices and net.pass_flops(x.shape) < MIN_FLOPS:
        _choices[key] = ways[0]
    return ways, key


def _split_grad(workers: list["_Worker"], net, x: torch.Tensor, amp: bool) -> Callable[..., torch.Tensor]:
    """``grad(x, labels)`` by shares on the calling thread and ``workers`` (by chains, or one
    chain's convolutions by channels); call holding ``_pool_lock``."""
    shares, by_channels = _shares(net, x, amp)
    workers = workers[: shares - 1]
    if by_channels:
        return functools.partial(_channel_pass, workers, net)
    return functools.partial(_split_pass, workers, net, amp=amp)


class _Trial:
    """``grad`` for a batch not yet decided under ``auto``: the loop's own steps go round the
    ways, in runs of ``TIMING_RUN`` (one pass, as asked, first; the split on the caller with
    one thread). The first run of each way is a warm-up (new worker threads, and
    ``models.cpu_conv`` and ``models.cpu_layout`` timing new shapes on first sight). After each
    switch of way (a new run, or a new loop) the first ``TIMING_SKIP`` steps are not timed: the
    caller's OpenMP threads spin on for some milliseconds after its last parallel work. Once each
    way has ``TIMING_ROUNDS * (TIMING_RUN - TIMING_SKIP)`` timed steps the fastest (with the
    margins) is kept, for this loop and every later one. So the timing costs no extra passes
    and measures the steps as the loop really runs them. A run's progress is kept across loops,
    so loops shorter than a run (a benchmark's four steps) still get through the trial. Loops
    known to be too short to time a step never enter it (``sharing``'s ``steps``); loops that
    time too few steps end it with the first way (``_decide``)."""

    def __init__(self, key: tuple, grads: dict[Way, Callable], threads: int):
        self.key, self.grads, self.ways, self.threads = key, grads, list(grads), threads
        self.way: Optional[Way] = None  # what the caller is set for now
        self.settled = 0  # steps since the way last changed

    def __call__(self, x: torch.Tensor, labels=None) -> torch.Tensor:
        choice = _choices.get(self.key)
        if choice is not None:
            return self._run(choice, x, labels)
        state = _timings.setdefault(self.key, {"run": 0, "step": 0, **{way: [] for way in self.ways}})
        way = self.ways[state["run"] % len(self.ways)]
        start = time.perf_counter()
        out = self._run(way, x, labels)
        elapsed = time.perf_counter() - start
        if state["run"] >= len(self.ways) and self.settled >= TIMING_SKIP:
            state[way].append(elapsed)
        self.settled += 1
        state["step"] += 1
        if state["step"] == TIMING_RUN:
            state["run"], state["step"] = state["run"] + 1, 0
            _decide(self.key, state, self.ways)
        return out

    def _run(self, way: Way, x: torch.Tensor, labels) -> torch.Tensor:
        if way != self.way:
            torch.set_num_threads(1 if way.split else self.threads)
            self.way, self.settled = way, 0
        return self.grads[way](x, labels)


def _decide(key: tuple, state: dict, ways: list[Way]) -> None:
    """At the end of a trial's run, with enough timed steps of every way: in each precision the
    split if its median is under ``MARGIN`` of one pass's, then bfloat16's pick over float32's
    (where both were timed) only if under ``AMP_MARGIN`` of its median: the split and bfloat16
    must each be clearly faster. The first way (as asked, one pass) if the loops time too few
    steps (none of some way after the runs a long loop would have timed, or not enough in
    ``TIMING_MAX_RUNS`` runs per way)."""
    wanted = max(1, TIMING_ROUNDS * (TIMING_RUN - TIMING_SKIP))
    timed = min(len(state[way]) for way in ways)
    if timed >= wanted:
        median = {way: statistics.median(state[way]) for way in ways}
        picks = []  # per precision, in the order asked
        for amp in dict.fromkeys(way.amp for way in ways):
            one, split = Way(amp, False), Way(amp, True)
            picks.append(split if split in median and median[split] < MARGIN * median[one] else one)
        pick = picks[0]
        if len(picks) == 2 and not median[picks[0]] < AMP_MARGIN * median[picks[1]]:
            pick = picks[1]  # bfloat16 asked for, not clearly faster: float32
        _choices[key] = pick
    elif state["run"] >= TIMING_MAX_RUNS * len(ways) or (timed == 0 and state["run"] >= len(ways) * (TIMING_ROUNDS + 1)):
        _choices[key] = ways[0]
    else:
        return
    del _timings[key]


# ---- the passes -----------------------------------------------------------------------------
def _one_pass(net, x: torch.Tensor, labels=None, *, amp: bool) -> torch.Tensor:
    if labels is None:
        return net.score_and_grad_view(x, amp=amp)[1]
    return net.score_and_grad_view(x, amp=amp, labels=labels)[1]


def _split_pass(workers: list["_Worker"], net, x: torch.Tensor, labels=None, *, amp: bool) -> torch.Tensor:
    """The gradient of each share of the chains, the first on the calling thread and each other
    on a worker thread of its own, written into one buffer of x's shape (call holding
    ``_pool_lock``, on one torch thread)."""
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    n, k = x.shape[0], len(workers) + 1
    bounds = [n * i // k for i in range(k + 1)]
    shares = [(a, b, labels[a:b] if isinstance(labels, torch.Tensor) else labels)
              for a, b in zip(bounds, bounds[1:])]
    _run(workers, [functools.partial(_share, net, x[a:b], share_labels, amp, out[a:b])
                   for a, b, share_labels in shares])
    return out


def _channel_pass(workers: list["_Worker"], net, x: torch.Tensor, labels=None) -> torch.Tensor:
    """The gradient of one chain, each convolution of its pass cut across the calling thread and
    the workers (``models.channel_pass``; a single-category net, which checks ``labels`` as the
    one pass does, then ignores them)."""
    if labels is not None:
        net.check_labels(labels, x.shape[0], x.device)
    return channel_pass.score_and_grad(net, x, len(workers) + 1, functools.partial(_run, workers))[1]


def _run(workers: list["_Worker"], calls) -> None:
    """Run ``calls``: the first on the calling thread, each other on a worker of its own; return
    when all are done, raising the first failure (after waiting for every one)."""
    if len(calls) > len(workers) + 1:
        raise ValueError(f"{len(calls)} calls for {len(workers) + 1} threads")
    futures = [worker.submit(call) for worker, call in zip(workers, calls[1:])]
    try:
        if calls:
            calls[0]()
    finally:
        errors = [f.exception() for f in futures]  # waits for every share, even after a failure
    for error in errors:
        if error is not None:
            raise error


def _share(net, x: torch.Tensor, labels, amp: bool, out: torch.Tensor) -> None:
    out.copy_(_one_pass(net, x, labels, amp=amp))


# ---- the worker threads ---------------------------------------------------------------------
class _Worker:
    """A daemon thread with one intra-op torch thread, running the calls submitted to it."""

    def __init__(self, ready: threading.Barrier):
        self._tasks: "queue.SimpleQueue[Optional[tuple]]" = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, args=(ready,), name="gcn-cpu-split", daemon=True)
        self.thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        self._tasks.put((future, fn, args))
        return future

    def _run(self, ready: threading.Barrier) -> None:
        torch.get_num_threads()  # torch's per-thread set-up first, or it would undo the next line
        torch.set_num_threads(1)
        ready.wait()
        while (task := self._tasks.get()) is not None:
            future, fn, args = task
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as error:  # handed to the caller, which raises it
                    future.set_exception(error)


_pool: list[_Worker] = []
_pool_lock = threading.Lock()  # held by the caller using the pool


def _get_pool(size: int) -> list[_Worker]:
    """The process's workers, at least ``size`` of them (more are started when needed)."""
    if len(_pool) < size:
        cpu_conv.nnpack_available()  # NNPACK's one-thread pool, made here rather than on a worker
        missing = size - len(_pool)
        ready = threading.Barrier(missing + 1)
        _pool.extend(_Worker(ready) for _ in range(missing))
        ready.wait()  # each has set its count: the caller's, set again on leaving ``sharing``, is the last
    return _pool


def _after_fork_in_child() -> None:
    global _pool_lock
    _pool.clear()  # the parent's threads do not exist here
    _pool_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
