"""Time to quality: learning seconds until samples reach a patch SWD within 1.5x of the real floor.

The exemplar is the tests' 64 x 64 crop of scikit-image's brick texture. Each recipe learns with
``models.pipeline.make_learner`` (the optimised code, same machine, same run, one after the
other); the clock counts learning only (``Learner.step``), never the metric. Every
``CHECK_EVERY`` iterations (a fixed schedule, so a rerun checks the same iterations) the current
samples are scored:

- recipes with persistent chains (the authors'): the chains, as the release's figures show them;
- short-run recipes: the latest synthesis, i.e. fresh chains from noise under the current model.

The real floor is ``models.metrics.evaluate``'s: patch SWD between the two halves of the exemplar
(with the same pyramid depth as the samples' score). A recipe has reached the threshold when two
consecutive checks are at or under 1.5x the floor (one check alone can be a lucky fluctuation of
a single chain); its time is the learning time at the second. Then the full ``evaluate`` runs
(copy guard, diversity, spectrum, Gram) and the recipe stops; a recipe that has not got there
within ``cap_s`` seconds is reported as "not reached in N s", honestly.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from models import get_preset
from models.metrics import evaluate, patch_swd
from models.pipeline import make_learner
from models.transforms import load_pixels, to_pixels

from . import common

FACTOR = 1.5
CHECK_EVERY = 10  # iterations between scores


def recipes() -> dict[str, dict[str, Any]]:
    """name -> preset and what it is. ``authors``: the release's texture figure at 64 px.
    ``project``: the project's best recipe for this measure (the fastest of the candidates tried,
    see docs/benchmarks.md): the same net, optimiser and chain, learned end to end instead of
    layer by layer. ``project-fast``: the shipped CPU preset ``texture-fast`` (short-run chains
    from noise), whose fresh samples are what it is judged on."""
    authors = get_preset("texture").replace(image_size=64)
    return {
        "authors": {
            "preset": authors,
            "what": "release figure 1 (`texture` preset at 64 px): frame_3 net, layer by layer 3 x 700, "
                    "1 persistent chain from zeros, T = 10, the release's SGD (Gamma 5e-4, halved per stage)",
        },
        "project": {
            "preset": authors.replace(schedule="end_to_end", iterations=2100),
            "what": "`texture` preset at 64 px learned end to end (all 3 layers from the start), otherwise the "
                    "same: 1 persistent chain, T = 10, the release's SGD at Gamma 5e-4",
        },
        "project-fast": {
            "preset": get_preset("texture-fast"),
            "what": "`texture-fast` preset: 2-layer net (32@7/2, 32@5), end to end, 4 short-run chains from noise, "
                    "T = 40, Adam 2e-3; scored on its fresh samples",
        },
    }


def samples_of(learner) -> torch.Tensor:
    x = learner.chains if learner.preset.learner == "ml" else learner.synthesis
    return to_pixels(x, learner.model.mean).clamp(0, 255).cpu()


class Run:
    """One recipe learning, one iteration at a time, with its own clock and score curve."""

    def __init__(self, name: str, recipe: dict[str, Any], device: torch.device, cap_s: float,
                 exemplar: torch.Tensor, floor: dict[str, Any], n_levels: int, check_every: int = CHECK_EVERY):
        self.name, self.recipe, self.device, self.cap_s = name, recipe, device, cap_s
        self.exemplar, self.n_levels, self.check_every = exemplar, n_levels, check_every
        self.learner = make_learner([common.brick_crop(64)], recipe["preset"], device=device)
        self.threshold = FACTOR * floor["patch_swd"]
        self.learn_s, self.curve, self.under, self.reached = 0.0, [], 0, None

    @property
    def active(self) -> bool:
        return self.reached is None and self.learn_s < self.cap_s and not self.learner.done

    def step(self) -> None:
        t = time.perf_counter()
        self.learner.step()
        common.sync(self.device)
        self.learn_s += time.perf_counter() - t
        if self.learner.iteration % self.check_every == 0 or self.learner.done:
            swd = patch_swd(samples_of(self.learner), self.exemplar, n_levels=self.n_levels, seed=0)["mean"]
            self.curve.append({"iteration": self.learner.iteration, "learn_s": round(self.learn_s, 3),
                               "patch_swd": swd, "load_avg_1m": round(common.load()[0], 2)})
            self.under = self.under + 1 if swd <= self.threshold else 0
            if self.under >= 2:
                self.reached = self.curve[-1]
                common.log(f"quality: {self.name}: reached in {self.learn_s:.1f} s ({self.learner.iteration} iterations)")

    def result(self) -> dict[str, Any]:
        learner, reached = self.learner, self.reached
        if reached is None:
            common.log(f"quality: {self.name}: not reached in {self.learn_s:.0f} s ({learner.iteration} iterations)")
        final = evaluate(samples_of(learner), self.exemplar, num_threads=1)
        return {
            "what": self.recipe["what"],
            "preset": self.recipe["preset"].to_dict(),
            "reached": reached is not None,
            "seconds": reached["learn_s"] if reached else None,
            "iterations": reached["iteration"] if reached else learner.iteration,
            "seconds_per_iteration": self.learn_s / max(1, learner.iteration),
            "stopped_at_s": round(self.learn_s, 3),
            "schedule_finished": learner.done,
            "cap_s": self.cap_s,
            "check_every": self.check_every,
            "threshold": self.threshold,
            "final": {k: final[k] for k in ("patch_swd", "copy_max_ncc", "copy_mean_ncc", "diversity", "spectrum",
                                             "gram")},
            "curve": self.curve,
            "history": [{"stage": h["stage"]} for h in learner.model.history],
        }


def race(recipes_: dict[str, dict[str, Any]], device: torch.device, cap_s: float, exemplar: torch.Tensor,
         floor: dict[str, Any], n_levels: int) -> dict[str, dict[str, Any]]:
    """All recipes learn round-robin, one iteration each in turn, each on its own clock: a change
    in the machine's load (other work on shared cores) hits every recipe alike."""
    runs = [Run(name, r, device, cap_s, exemplar, floor, n_levels) for name, r in recipes_.items()]
    common.log(f"quality: threshold patch SWD {runs[0].threshold:.4f} (floor {floor['patch_swd']:.4f}), "
               f"cap {cap_s:.0f} s of learning per recipe; " + ", ".join(recipes_))
    while any(r.active for r in runs):
        for r in runs:
            if r.active:
                r.step()
    return {r.name: r.result() for r in runs}


def paired_costs(runs: dict[str, dict[str, Any]], device: torch.device, rounds: int) -> dict[str, Any]:
    """Seconds per iteration of every (recipe, stage) a recipe went through before it reached the
    threshold, timed round-robin in one short phase. The race's own clocks are exact but each
    recipe's steps happen at different moments (a recipe that reaches the threshold early stops
    early), so on a shared machine a burst of load can land on one recipe only; iteration counts
    times these paired costs give a load-robust learning time."""
    fns, counts = {}, {}
    for name, r in runs.items():
        if not r["reached"]:
            continue
        preset = recipes()[name]["preset"]
        stages: dict[int, int] = {}
        for row in r["history"][: r["iterations"]]:
            stages[row["stage"]] = stages.get(row["stage"], 0) + 1
        for stage, count in stages.items():
            learner = make_learner([common.brick_crop(64)], preset, device=device)
            if preset.schedule == "layer_by_layer":
                learner.iteration = (stage - 1) * preset.iterations
            learner.step()  # warm-up, and the stage's depth and chains
            fns[f"{name}/stage {stage}"] = learner.step
            counts[f"{name}/stage {stage}"] = (name, count)
    if not fns:
        return {}
    t = common.interleaved(fns, device, rounds, warmup=1)
    out: dict[str, Any] = {"per_iteration_s": {k: v.median for k, v in t.items()},
                           "load_avg_1m": {k: v.loads for k, v in t.items()}, "seconds": {}}
    for key, (name, count) in counts.items():
        out["seconds"][name] = out["seconds"].get(name, 0.0) + count * t[key].median
    return out


def run(device: torch.device, quick: bool, cap_s: float | None = None) -> dict[str, Any]:
    cap = cap_s if cap_s is not None else (20.0 if quick else 300.0)
    exemplar = load_pixels([common.brick_crop(64)], 64)
    reference = evaluate(exemplar, exemplar, num_threads=1)  # only its floor is used
    floor = reference["floor"]
    n_levels = len(floor["patch_swd_levels"])
    out: dict[str, Any] = {"factor": FACTOR, "exemplar": "skimage.data.brick()[100:164, 100:164], gray -> RGB",
                           "floor": floor, "threads": torch.get_num_threads(), "recipes": {},
                           "precision": common.amp_label(device)}
    out["recipes"] = race(recipes(), device, cap, exemplar, floor, n_levels)
    common.log("quality: paired per-iteration costs")
    out["paired"] = paired_costs(out["recipes"], device, 5 if quick else 15)
    for r in out["recipes"].values():
        r.pop("history", None)
    a, p = out["recipes"]["authors"], out["recipes"]["project"]
    paired = out["paired"].get("seconds", {})
    for name, r in out["recipes"].items():
        r["seconds_paired"] = paired.get(name)
    if a["reached"] and p["reached"]:
        out["speedup"] = paired["authors"] / paired["project"]  # the load-robust figure
        out["speedup_race"] = a["seconds"] / p["seconds"]
    elif p["reached"]:
        out["speedup_at_least"] = a["stopped_at_s"] / p["seconds"]
    out["load_avg_after"] = common.load()
    return out
