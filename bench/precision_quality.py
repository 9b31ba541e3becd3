"""Does bfloat16 autocast learn as well as float32? The same recipes, seeds and schedules in both.

    python -m bench.precision_quality [--seeds 6] [--first-seed 0] [--recipes texture-fast,project]
                                      [--precisions fp32,bf16] [--threads 2]
    python -m bench.precision_quality --seeds 6 --recipes texture   # the 224 px preset: 41 min with AMX

``GCN_AMP=auto`` runs the net under bfloat16 autocast on CPUs with bfloat16 hardware
(``models.precision``), so what it costs in quality is measured here, beside what it saves in
time: for each seed, each recipe learns its whole schedule once in each precision asked for
(``--precisions``: ``fp32``; ``bf16``, autocast as the pipeline runs it; ``bf16-sampling``,
autocast in sampling only, the learner's parameter gradient in float32), with the same preset,
seed and exemplar (a brick crop of the preset's size: the tests' 64 px crop for the first two),
and the samples are scored by ``models.metrics.evaluate`` against the exemplar, as in
bench/quality.py:

- ``texture-fast`` (the shipped CPU preset: short-run chains from noise): 8 fresh samples from
  noise under the learned model, with the learner's own step count;
- ``project`` (bench/quality.py's persistent-chain recipe, 200 iterations): its chain;
- ``texture`` (not run unless asked for: the authors' figure 1 recipe as shipped, 224 px, layer by
  layer 3 x 700 iterations, one persistent chain): its chain. About 7 minutes a seed for both
  precisions on 2 cores of a Xeon with AMX (float32 three quarters of it).

Prints a markdown table (means and each seed's figure) and writes
``bench/out/precision-quality-<machine>-<recipes>-seeds<first>-<last>.json`` (or that name under
``GCN_BENCH_OUT``). Seven minutes for 6 seeds of the first two on 2 cores of a Xeon with AMX; on
a CPU without bfloat16 hardware bfloat16 is emulated, 15x slower. Seed-to-seed spread is as large
as any difference seen, so use 6 seeds or more.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import torch

from models import get_preset
from models.metrics import evaluate
from models.pipeline import make_learner, synthesize
from models.transforms import load_pixels, to_pixels

from . import common


def recipes() -> dict[str, Any]:
    return {
        "texture-fast": get_preset("texture-fast"),
        "project": get_preset("texture").replace(image_size=64, schedule="end_to_end", iterations=200),
        "texture": get_preset("texture"),
    }


DEFAULT_RECIPES = ("texture-fast", "project")  # minutes; ``texture`` at 224 px: 7 minutes a seed


def exemplar_of(preset) -> torch.Tensor:
    """The brick crop a recipe learns from, as the pixels its samples are scored against."""
    return load_pixels([common.brick_crop(preset.image_size)], preset.image_size)


# name -> (autocast in sampling, autocast in the learner's parameter gradient)
PRECISIONS = {"fp32": (False, False), "bf16": (True, True), "bf16-sampling": (True, False)}


def one(name: str, preset, precision: str, seed: int, exemplar: torch.Tensor) -> dict[str, Any]:
    sampling, gradient = PRECISIONS[precision]
    os.environ["GCN_AMP"] = "on" if sampling else "off"  # what make_learner and synthesize follow
    size = preset.image_size
    learner = make_learner([common.brick_crop(size)], preset.replace(seed=seed), device=torch.device("cpu"))
    assert learner.amp is sampling and learner.sampler.amp is sampling
    learner.amp = gradient  # the learner's flag for its parameter gradient (the sampler keeps its own)
    start = time.perf_counter()
    learner.run()
    seconds = time.perf_counter() - start
    if preset.learner == "ml":
        x = learner.chains
    else:
        x = synthesize(learner.model, 8, seed=seed)
    scores = evaluate(to_pixels(x, learner.model.mean).clamp(0, 255), exemplar, num_threads=1)
    return {"recipe": name, "precision": precision, "seed": seed, "learn_s": seconds,
            "iterations": learner.iteration, "size": size,
            **{k: scores[k] for k in ("patch_swd", "copy_max_ncc", "diversity")},
            "floor_patch_swd": scores["floor"]["patch_swd"]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.precision_quality", description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=6, help="how many seeds (at least 1)")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--recipes", default=",".join(DEFAULT_RECIPES),
                    help="comma-separated, from: " + ", ".join(recipes()) + " (default: %(default)s)")
    ap.add_argument("--precisions", default="fp32,bf16",
                    help="comma-separated, from: " + ", ".join(PRECISIONS) + " (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.recipes.split(",") if n.strip()]
    unknown = [n for n in names if n not in recipes()]
    if unknown or not names:
        ap.error(f"unknown recipe(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(recipes())}")
    precisions = [n.strip() for n in args.precisions.split(",") if n.strip()]
    unknown = [n for n in precisions if n not in PRECISIONS]
    if unknown or not precisions:
        ap.error(f"unknown precision(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(PRECISIONS)}")
    if args.seeds < 1 or args.threads < 1:
        ap.error("--seeds and --threads must be at least 1")
    chosen = {n: recipes()[n] for n in names}
    torch.set_num_threads(args.threads)
    os.environ.pop("GCN_AMP", None)  # each run sets it; the machine's name must not carry an override
    device = torch.device("cpu")
    tag = common.machine_tag(device)
    out = (common.OUT /
           f"precision-quality-{tag}-{'+'.join(chosen)}-seeds{args.first_seed}-{args.first_seed + args.seeds - 1}.json")
    exemplars = {name: exemplar_of(preset) for name, preset in chosen.items()}
    runs: list[dict[str, Any]] = []
    try:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for name, preset in chosen.items():
                for precision in precisions:  # alternating, so that a change of load hits each alike
                    r = one(name, preset, precision, seed, exemplars[name])
                    common.log(f"precision: {name} {r['precision']} seed {seed}: patch SWD {r['patch_swd']:.4f}, "
                               f"diversity {r['diversity']:.1f}, {r['learn_s']:.1f} s")
                    runs.append(r)
                    # after every run: an interrupted comparison keeps what it measured
                    common.write_json(out, {"machine": common.machine(device), "threads": args.threads, "runs": runs})
    finally:
        os.environ.pop("GCN_AMP", None)
    print(f"\nbrick crops; {args.threads} thread(s); {args.seeds} seeds; {common.machine(device)['cpu']} ({tag})\n")
    print("| recipe | px | real floor | precision | patch SWD: mean (each seed) | x floor | diversity: mean "
          "| copy max NCC: mean | learning s: mean |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in chosen:
        for precision in precisions:
            rs = [r for r in runs if r["recipe"] == name and r["precision"] == precision]
            swd = [r["patch_swd"] for r in rs]
            floor = rs[0]["floor_patch_swd"]  # each recipe's own: the floor depends on the crop's size
            print(f"| {name} | {rs[0]['size']} | {floor:.4f} | {precision} "
                  f"| {statistics.mean(swd):.4f} ({', '.join(f'{v:.4f}' for v in swd)}) "
                  f"| {statistics.mean(swd) / floor:.2f} | {statistics.mean(r['diversity'] for r in rs):.1f} "
                  f"| {statistics.mean(r['copy_max_ncc'] for r in rs):.3f} "
                  f"| {statistics.mean(r['learn_s'] for r in rs):.1f} |")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
