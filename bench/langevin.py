"""Langevin throughput and learning iterations: ``models/`` against the reference loop.

For each case (the ``texture`` preset at 224 px, the small ``texture-fast`` preset at 64 px, and
on a GPU the texture preset with many chains), at each thread count asked for:

- agreement: the same chains, weights and seed through both implementations, reported as the
  largest difference relative to the chains' largest value (float32 rounding, or bf16's, is
  ~1e-7 to ~1e-4 after 10 steps; anything larger is a bug to read in the table);
- Langevin throughput in image-steps per second, both implementations timed round-robin, and
  the ratio (median over rounds of reference time / models time);
- GFLOP/s achieved (FLOPs from the layer shapes: forward + input gradient of every active layer)
  against the machine's measured matmul peak at the same thread count, probed before and after
  the cases (each probe's better moment, ``common.best_peaks``);
- seconds per learning iteration (``models.learner.Learner.step`` against
  ``bench.reference.ReferenceLearner.step``), at the net's full depth.
"""

from __future__ import annotations

import copy
import time
import traceback
from typing import Any, Callable

import torch

from models import GenerativeModel, cpu_conv, cpu_split, get_preset, precision
from models.langevin import LangevinSampler
from models.learner import Learner

from . import common
from .reference import ReferenceLearner, ReferenceNet, langevin as reference_langevin


def cases(device: torch.device, quick: bool) -> list[dict[str, Any]]:
    out = [
        {"name": "texture@224", "preset": "texture", "size": 224, "chains": 1, "steps": 4 if quick else 8},
        {"name": "texture-fast@64", "preset": "texture-fast", "size": 64, "chains": 4, "steps": 20 if quick else 40},
    ]
    if device.type == "cpu":  # four samples at once, as the service's default request: chains to split
        # 4 steps a loop even when quick: models.cpu_split times no step in the first 2 of a loop
        out.insert(1, {"name": "texture@224 x4 chains", "preset": "texture", "size": 224, "chains": 4, "steps": 4})
    if device.type == "cuda":  # many chains in one batch: what a GPU is for
        out.append({"name": "texture@224 x64 chains", "preset": "texture", "size": 224, "chains": 64,
                    "steps": 10 if quick else 20})
        out.append({"name": "texture-fast@64 x256 chains", "preset": "texture-fast", "size": 64, "chains": 256,
                    "steps": 20 if quick else 40})
    return out


def variants(device: torch.device) -> dict[str, dict[str, Any]]:
    """The configurations of ``models`` that are timed. The first is the one the pipeline uses
    (``models.precision``: bf16 autocast on CUDA and on CPUs with AMX; on CPUs with AVX512-BF16
    and no AMX bf16 autocast with fp32 timed beside it, the faster kept; fp32 on other CPUs;
    unless GCN_AMP says otherwise); the others are reported beside it."""
    if device.type == "cuda":
        bf16 = {"models (bf16 autocast)": {"amp": True},
                "models (bf16 + CUDA graph)": {"amp": True, "cuda_graph": True}}
        fp32 = {"models (fp32)": {"amp": False}}
        return {**bf16, **fp32} if precision.use_amp("cuda") else {**fp32, **bf16}
    fp32 = {"models (fp32)": {"amp": False},
            "models (fp32, one pass)": {"amp": False, "cpu_split": "off"},
            "models (fp32, oneDNN only)": {"amp": False, "cpu_conv": "onednn", "cpu_split": "off"}}
    if precision.amp_if_faster("cpu"):  # the pipeline asks for bf16 and times fp32 beside it
        return {"models (bf16 or fp32, timed)": {"amp": True, "amp_if_faster": True},
                "models (bf16 autocast)": {"amp": True}, **fp32}
    if precision.use_amp("cpu"):
        return {"models (bf16 autocast)": {"amp": True}, **fp32}
    bf16 = "models (bf16 autocast)" if precision.native_bf16() else "models (bf16 autocast, opt-in)"
    return {**fp32, bf16: {"amp": True}}


def _sampler(p, steps: int, flags: dict[str, Any]):
    """A ``sample(net, x0, generator)`` for one variant; ``cpu_conv`` and ``cpu_split`` in
    ``flags`` are the ``models.cpu_conv`` and ``models.cpu_split`` policies it runs under
    (otherwise ``GCN_CPU_CONV`` and ``GCN_CPU_SPLIT``, as in the pipeline)."""
    flags = dict(flags)
    conv_policy, split_policy = flags.pop("cpu_conv", None), flags.pop("cpu_split", None)
    sampler = LangevinSampler(step_size=p.step_size, sigma=p.sigma, n_steps=steps, **flags)

    def sample(net, x0, generator):
        cpu_conv.set_policy(conv_policy)
        cpu_split.set_policy(split_policy)
        try:
            return sampler.sample(net, x0, generator=generator)
        finally:
            cpu_conv.set_policy(None)
            cpu_split.set_policy(None)
    return sample


def _model(preset_name: str, size: int, chains: int, device: torch.device) -> GenerativeModel:
    preset = get_preset(preset_name).replace(image_size=size, n_chains=chains)
    model = GenerativeModel.create(preset, torch.zeros(3)).to(device)
    with torch.no_grad():  # biases off zero so that the ReLU patterns are those of a learned net
        g = torch.Generator().manual_seed(1)
        for conv in model.net.convs:
            conv.bias.copy_(torch.empty(conv.bias.shape).uniform_(-0.2, 0.2, generator=g))
    return model


def agreement(model: GenerativeModel, ref: ReferenceNet, x0: torch.Tensor, steps: int, **flags) -> float:
    """Largest |difference| between the two implementations after ``steps`` steps, relative to
    the chains' largest |value|; in strict float32 (``common.strict_float32``: on a GPU cuDNN
    would otherwise run both in TF32, whose rounding, ~1e-3, would hide what this checks)."""
    p = model.preset
    with common.strict_float32():
        a = reference_langevin(ref, x0, steps, p.step_size, p.sigma, torch.Generator(x0.device).manual_seed(7))
        b = _sampler(p, steps, flags)(model.net, x0, torch.Generator(x0.device).manual_seed(7))
    return float((a - b).abs().max() / a.abs().max())


def settle_split(fns: dict[str, Callable[[], Any]], net, x0: torch.Tensor, budget_s: float) -> dict[str, Any]:
    """Run each variant that leaves ``models.cpu_split`` to its policy (``GCN_CPU_SPLIT``, auto by
    default) until that has decided, so that the agreement checks and the timed rounds see what a
    worker runs once its first steps of a shape are behind it (the trial's steps, about 50 in
    loops of 4 and half of them split, would otherwise fall into the timed loops). Gives up on a
    variant after 100 loops or ``budget_s`` (bf16 emulated on CPUs without bfloat16 hardware is
    slow). Returns, per variant, the policy, the loops it took, whether it splits (None:
    undecided) and, where it times fp32 beside bf16 (``timed``), whether it kept bf16 (``amp``)."""
    settled: dict[str, Any] = {}
    if x0.device.type != "cpu":
        return settled  # nothing to split
    for name, flags in variants(x0.device).items():
        amp, timed = flags.get("amp", False), flags.get("amp_if_faster", False)
        if name not in fns or flags.get("cpu_split") is not None:
            continue  # left out (it failed), or its split is pinned
        if cpu_split.get_policy() != "off" and not timed and not cpu_split.splittable(net, x0, amp):
            continue  # nothing to split or time (GCN_CPU_SPLIT=off is reported as such)

        def way():
            return cpu_split.settled(net, x0, amp, amp_if_faster=timed)

        loops, _ = until_settled(fns[name], way, 100, budget_s)
        settled[name] = {"policy": cpu_split.get_policy(), "loops": loops, "timed": timed,
                         "split": None if way() is None else way().split,
                         "amp": None if way() is None else way().amp}
    return settled


def until_settled(run: Callable[[], Any], way: Callable[[], Any], max_runs: int, budget_s: float) -> tuple[int, float]:
    """Call ``run`` until ``way()`` (a ``models.cpu_split.settled`` answer) is not None, at most
    ``max_runs`` times or ``budget_s`` seconds; returns the calls and the seconds they took."""
    runs, started = 0, time.monotonic()
    while way() is None and runs < max_runs and time.monotonic() - started < budget_s:
        run()
        runs += 1
    return runs, time.monotonic() - started


def runs_bf16(name: str, flags: dict[str, Any], settled: dict[str, Any]) -> bool:
    """Whether a variant's timed loops run the net in bf16 (a timed variant: what it kept)."""
    if not flags.get("amp"):
        return False
    if flags.get("amp_if_faster") and name in settled:
        return settled[name]["amp"] is not False
    return True


def run_case(case: dict[str, Any], device: torch.device, repeats: int, peaks: dict[str, Any],
             budget_s: float) -> dict[str, Any]:
    model = _model(case["preset"], case["size"], case["chains"], device)
    p, net = model.preset, model.net
    ref = ReferenceNet(net)
    size, n, steps = case["size"], case["chains"], case["steps"]
    x0 = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(3)).to(device) * 20
    flops_step = common.langevin_step_flops(p.layers, (size, size)) * n
    out: dict[str, Any] = {**case, "depth": net.depth, "gflop_per_step": flops_step / 1e9, "variants": {}}

    def make_sampler(flags):
        # one generator per variant, reseeded per call: a CUDA graph is kept per generator, and a
        # fresh one each call would make every timed call capture a new graph
        s, gen = _sampler(p, steps, flags), torch.Generator(device)
        return lambda: s(net, x0, gen.manual_seed(5))

    fns = {"reference": lambda: reference_langevin(ref, x0, steps, p.step_size, p.sigma,
                                                   torch.Generator(device).manual_seed(5))}
    flags_of = variants(device)
    for name, flags in flags_of.items():
        fns[name] = make_sampler(flags)
    if device.type == "cuda":
        # two calls of each variant first: the CUDA-graph path leans on torch's graph API, which has
        # changed between releases, and one variant failing should not cost the case; the second
        # call replays the graph the first captured, after the generator is reseeded, as every
        # timed call does
        for name in list(flags_of):
            try:
                fns[name]()
                fns[name]()
            except Exception as exc:
                out.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"[:500]
                common.log(f"langevin: {case['name']} {name} failed, left out: {exc}")
                del fns[name], flags_of[name]
    out["cpu_split"] = settle_split(fns, net, x0, budget_s)
    checks = {name: agreement(model, ref, x0, min(steps, 10), **flags) for name, flags in flags_of.items()}
    out["agreement_rel_max"] = checks
    t = common.interleaved(fns, device, repeats, warmup=1, budget_s=budget_s)
    for name, timing in t.items():
        row = {
            "image_steps_per_s": n * steps / timing.median,
            "image_steps_per_s_best": n * steps / timing.best,
            "gflops_median": flops_step * steps / timing.median / 1e9,
            "gflops_best": flops_step * steps / timing.best / 1e9,
            "timing": timing.as_dict(),
        }
        # bf16 variants against the bf16 peak where it was measured (GPUs, CPUs with bf16 hardware)
        bf16 = name != "reference" and runs_bf16(name, flags_of[name], out["cpu_split"])
        row["peak_dtype"] = "bf16" if bf16 and peaks.get("bf16") else "fp32"
        against_peak(row, peaks)
        if name != "reference":
            row["speedup_vs_reference"] = common.paired_ratio(t["reference"], timing)
        out["variants"][name] = row
    return out


def against_peak(row: dict[str, Any], peaks: dict[str, Any]) -> None:
    """A variant's share of the peak of its precision (``row["peak_dtype"]``), median and best."""
    pk = peaks["bf16"] if row["peak_dtype"] == "bf16" else peaks
    row["peak_fraction_best"] = row["gflops_best"] / pk["peak_gflops"]
    row["peak_fraction_median"] = row["gflops_median"] / pk["peak_gflops"]
    row["sgemm_fraction_best"] = row["gflops_best"] / pk["sgemm_gflops"]


def measure_peaks(device: torch.device, quick: bool, when: str) -> dict[str, Any]:
    """``common.matmul_peak`` at the current thread count, and its bf16 one on GPUs and on CPUs
    with bf16 hardware (whatever ``GCN_AMP`` says): a bf16 row is scored against the bf16 peak."""
    n_threads = torch.get_num_threads()
    common.log(f"langevin: {n_threads} thread(s): matmul peak {when}")
    peak = common.matmul_peak(device, repeats=5 if quick else 9)
    if device.type == "cuda" or precision.native_bf16():
        common.log(f"langevin: {n_threads} thread(s): bf16 matmul peak {when}")
        peak["bf16"] = common.matmul_peak(device, repeats=5 if quick else 9, dtype=torch.bfloat16)
    return peak


def run_learning(case: dict[str, Any], device: torch.device, repeats: int, budget_s: float) -> dict[str, Any]:
    """Seconds per learning iteration at the net's full depth (the last stage of a layer-by-layer
    schedule), observed images = one noise image (the timing does not depend on the pixels)."""
    model = _model(case["preset"], case["size"], case["chains"], device)
    p = model.preset
    observed = torch.randn(1, 3, case["size"], case["size"], generator=torch.Generator().manual_seed(4)).to(device) * 40
    amp = precision.use_amp(device.type)  # what the pipeline's learner does here
    timed = precision.amp_if_faster(device.type)
    learners = {"models": Learner(copy.deepcopy(model), observed, amp=amp, amp_if_faster=timed)}
    if amp and device.type == "cpu":  # beside it, fp32 (the default on CPUs without bf16 hardware)
        learners["models (fp32)"] = Learner(copy.deepcopy(model), observed, amp=False)
    for learner in learners.values():
        if p.schedule == "layer_by_layer":
            learner.iteration = p.iterations * (p.n_stages - 1)  # the last stage: all layers active
    for learner in learners.values():  # as settle_split: the timed rounds see what a worker runs
        settle_learner(learner, budget_s)
    ref = ReferenceLearner(model.net, p, observed)
    t = common.interleaved({"reference": ref.step, **{k: v.step for k, v in learners.items()}}, device, repeats,
                           warmup=1, budget_s=budget_s)
    learner = learners["models"]
    extra = {}
    if "models (fp32)" in t:
        extra = {"models_fp32_s": t["models (fp32)"].median,
                 "speedup_fp32": common.paired_ratio(t["reference"], t["models (fp32)"])}
    return {
        "precision": ("bf16, or fp32 sampling where timed faster" if timed else "bf16 autocast") if amp else "fp32",
        **extra,
        "name": case["name"],
        "langevin_steps": p.langevin_steps,
        "chains": p.n_chains,
        "learner": p.learner,
        "optimizer": p.optimizer,
        "depth": learner.model.net.depth,
        "reference_s": t["reference"].median,
        "models_s": t["models"].median,
        "speedup": common.paired_ratio(t["reference"], t["models"]),
        "gflop_per_iteration": common.learning_iteration_flops(
            p.layers, (case["size"],) * 2, learner.model.net.depth, p.n_chains, 1, p.langevin_steps) / 1e9,
        "timing": {k: v.as_dict() for k, v in t.items()},
    }


def settle_learner(learner: Learner, budget_s: float) -> int:
    """Run learning iterations until ``models.cpu_split`` has decided how the learner's chains
    are sampled (at most 30 iterations or ``budget_s``); returns how many ran. For the
    benchmark's learners: persistent (ml) or short-run chains of one category, whose batch is
    ``n_chains`` chains without labels (others are left as they are)."""
    sampler = learner.sampler
    if learner.preset.learner not in ("ml", "short_run") or learner.preset.categories != 1:
        return 0
    if learner.device.type != "cpu":
        return 0
    chains = torch.zeros(learner.n_chains, *learner.observed.shape[1:], device=learner.device)  # ml, short-run
    return until_settled(learner.step, lambda: cpu_split.settled(learner.model.net, chains, sampler.amp,
                                                                 amp_if_faster=sampler.amp_if_faster), 30, budget_s)[0]


def graph_check(device: torch.device) -> dict[str, Any]:
    """CUDA only: the graphed sampler against the eager one (same flags otherwise), on a fresh
    call, on a cached graph, and after the weights changed in place (as a learner does)."""
    model = _model("texture", 224, 4, device)
    net = model.net
    x0 = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(3)).to(device) * 20
    out: dict[str, Any] = {"graph_vs_eager_rel_max": {}}
    eager = LangevinSampler(n_steps=12, amp=True)
    graphed = LangevinSampler(n_steps=12, amp=True, cuda_graph=True)
    ge, gg = torch.Generator(device).manual_seed(1), torch.Generator(device).manual_seed(1)
    for label in ("first call", "cached graph", "after a weight update"):
        if label == "after a weight update":
            same_noise = torch.Generator(device)
            same_noise.set_state(ge.get_state())
            stale = eager.sample(net, x0, generator=same_noise)  # what a graph of the old weights would give
            with torch.no_grad():
                for p in net.parameters():
                    p.mul_(3)  # a change the samples show (x1.01 moved them only ~4e-5)
        a = eager.sample(net, x0, generator=ge)
        b = graphed.sample(net, x0, generator=gg)
        out["graph_vs_eager_rel_max"][label] = float((a - b).abs().max() / a.abs().max())
    # what a graph still replaying the old weights would differ by: the scale the above must beat
    out["stale_graph_rel_max"] = float((a - stale).abs().max() / a.abs().max())
    return out


def run(device: torch.device, threads: list[int], quick: bool) -> dict[str, Any]:
    repeats = 5 if quick else 15
    results: dict[str, Any] = {"by_threads": []}
    for n_threads in threads if device.type == "cpu" else [torch.get_num_threads()]:
        torch.set_num_threads(n_threads)
        peak = measure_peaks(device, quick, "before the cases")
        entry: dict[str, Any] = {"threads": n_threads, "peak": peak, "cases": [], "learning": []}
        for case in cases(device, quick):
            common.log(f"langevin: {n_threads} thread(s): {case['name']} sampling")
            entry["cases"].append(run_case(case, device, repeats, peak, 25 if quick else 120))
            if "chains" in case and case["chains"] == get_preset(case["preset"]).n_chains:
                common.log(f"langevin: {n_threads} thread(s): {case['name']} learning iterations")
                entry["learning"].append(run_learning(case, device, 3 if quick else 7, 20 if quick else 90))
        # the peak again, and each case scored against the better of the two moments (``common.best_peaks``)
        entry["peak"] = common.best_peaks(peak, measure_peaks(device, quick, "after the cases"))
        for case_result in entry["cases"]:
            for row in case_result["variants"].values():
                against_peak(row, entry["peak"])
        if device.type == "cuda":
            common.log("langevin: CUDA graph against eager")
            try:
                entry.update(graph_check(device))
            except Exception as exc:  # the timed figures above stay
                entry["graph_check_error"] = traceback.format_exc()[-2000:]
                common.log(f"langevin: CUDA graph check failed: {exc}")
        entry["load_avg_after"] = common.load()
        results["by_threads"].append(entry)
        results.setdefault("errors", []).extend(
            [f"{n_threads} thread(s), {c['name']}, {name}: {e}" for c in entry["cases"]
             for name, e in c.get("errors", {}).items()]
            + ([f"CUDA graph check: {entry['graph_check_error'].strip().splitlines()[-1]}"]
               if "graph_check_error" in entry else []))
    if not results.get("errors"):
        results.pop("errors", None)
    return results
