"""Time to quality for recipes whose samples are fresh chains from noise (they cannot copy).

    python -m bench.shortrun_quality [--cap 150] [--threads 1]

The time-to-quality race (bench/quality.py) is won by persistent-chain recipes, whose single chain
reaches the threshold by becoming a copy of the exemplar (diversity 0). This race asks the other
question: how soon do short-run recipes, judged on fresh chains from noise under the current
model, reach the same threshold (patch SWD within 1.5x of the real floor, two checks in a row)?
Same exemplar, floor, checks and clock as bench/quality.py (it reuses its ``race``); candidates
are variations of the shipped ``texture-fast`` preset. Prints a markdown table and writes
``bench/out/shortrun-quality-<machine>.json`` (or under ``GCN_BENCH_OUT``).
"""

from __future__ import annotations

import argparse

import torch

from models import get_preset
from models.metrics import evaluate
from models.transforms import load_pixels

from . import common
from .quality import race

FAST = get_preset("texture-fast")


def candidates() -> dict[str, dict]:
    long = dict(iterations=2000)  # the schedule must not end before the cap
    return {
        "texture-fast": {"preset": FAST.replace(**long), "what": "the shipped preset: 32@7/2, 32@5, 4 chains, T = 40"},
        "8 chains": {"preset": FAST.replace(n_chains=8, **long), "what": "texture-fast with 8 chains"},
        "wider": {"preset": FAST.replace(layers=[[64, 7, 2, 3], [64, 5, 1, 2]], **long),
                  "what": "texture-fast, 64 channels per layer"},
        "3 layers": {"preset": FAST.replace(layers=[[32, 7, 2, 3], [64, 5, 1, 2], [64, 3, 1, 1]], **long),
                     "what": "texture-fast with a third layer: 32@7/2, 64@5, 64@3"},
        "T = 60": {"preset": FAST.replace(langevin_steps=60, sample_steps=60, **long),
                   "what": "texture-fast with 60 Langevin steps per iteration"},
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.shortrun_quality", description=__doc__.splitlines()[0])
    ap.add_argument("--cap", type=float, default=150.0, help="seconds of learning each candidate may take")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    exemplar = load_pixels([common.brick_crop(64)], 64)
    floor = evaluate(exemplar, exemplar, num_threads=1)["floor"]
    results = race(candidates(), device, args.cap, exemplar, floor, len(floor["patch_swd_levels"]))
    for r in results.values():
        r.pop("history", None)
    out = common.OUT / f"shortrun-quality-{common.machine_tag(device)}.json"
    common.write_json(out, {"machine": common.machine(device), "threads": args.threads, "cap_s": args.cap,
                            "floor": floor, "recipes": results})
    print(f"\nthreshold {results['texture-fast']['threshold']:.4f}; {args.threads} thread(s); "
          f"load average after {common.load()[0]:.2f}\n")
    print("| candidate | reached | learning s | iterations | patch SWD at stop | copy max NCC | diversity |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        f = r["final"]
        secs = f"{r['seconds']:.1f}" if r["reached"] else f"not in {r['stopped_at_s']:.0f}"
        print(f"| {name} | {'yes' if r['reached'] else 'no'} | {secs} | {r['iterations']} | {f['patch_swd']:.4f} | "
              f"{f['copy_max_ncc']:.3f} | {f['diversity']:.1f} |")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
