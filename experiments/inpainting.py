"""Recovery of randomly dropped pixels on held-out texture crops: the model against model-free fills.

    python experiments/inpainting.py                  # brick, both recipes, ~3 min on 2 CPU cores
    python experiments/inpainting.py --data grass --drop 0.5 0.7

Training data: the top-left 256 x 256 region of the 512 px scikit-image texture, cut into sixteen
64 px tiles (native resolution, gray -> RGB). Test data: four 64 px crops from the bottom half of
the image, which learning never saw. For each crop and each of ``--masks`` random masks that drop
a fraction of the pixels, the missing pixels are recovered by Langevin dynamics on them alone (the
known ones clamped) and compared with the original: RMSE in pixel units over the missing pixels.

Two models are learned, both from the same tiles:
- ``texture-fast``: the synthesis recipe (short-run chains from noise). Recovery uses its own
  start and step count (missing pixels from noise, 40 steps).
- ``texture-recovery``: short-run chains that start from the training tiles with the same
  fraction of pixels dropped and filled by the blur, run 10 steps with the known pixels clamped;
  recovery does exactly that.

Baselines from the observed pixels alone: the mean colour, and a normalised Gaussian blur at
several widths (the best width is reported per row, so the baseline is not a straw man).
Writes ``results.json`` and ``examples.png`` to ``--out`` (default experiments/out/inpainting-<data>).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from models import get_preset  # noqa: E402
from models.inpaint import fill_blur, fill_mean, masked_errors, random_known_mask, recover  # noqa: E402
from models.pipeline import train  # noqa: E402
from models.transforms import load_pixels, make_grid, to_model_space, to_pil_images  # noqa: E402

BLUR_SIGMAS = (0.5, 0.7, 1.0, 1.5)
TEST_CROPS = ((320, 32), (320, 288), (416, 160), (448, 448))


def tiles(name: str, size: int = 64, region: int = 256):
    src = common.texture_source(name)
    return [src.crop((x, y, x + size, y + size)) for y in range(0, region, size) for x in range(0, region, size)]


def test_crops(name: str, size: int = 64):
    src = common.texture_source(name)
    return [src.crop((x, y, x + size, y + size)) for y, x in TEST_CROPS]


def evaluate_model(model, crops, drop: float, masks: int) -> dict:
    rows = {"model": [], "mean": [], **{f"blur{s}": [] for s in BLUR_SIGMAS}}
    example = None
    for c, crop in enumerate(crops):
        x = to_model_space(load_pixels([crop], 64), model.mean)
        for m in range(masks):
            known = random_known_mask((64, 64), drop, seed=1000 * c + m)
            y = recover(model, x, known, seed=m)
            rows["model"].append(masked_errors(y, x, known)["rmse"])
            rows["mean"].append(masked_errors(fill_mean(x, known), x, known)["rmse"])
            for s in BLUR_SIGMAS:
                rows[f"blur{s}"].append(masked_errors(fill_blur(x, known, s), x, known)["rmse"])
            if example is None:
                shown = torch.where(known, x, to_model_space(torch.zeros_like(x), model.mean))
                example = to_pil_images(torch.cat([shown, fill_blur(x, known), y, x]), model.mean)
    means = {k: sum(v) / len(v) for k, v in rows.items()}
    best_blur = min(BLUR_SIGMAS, key=lambda s: means[f"blur{s}"])
    return {"rmse": means, "best_blur_sigma": best_blur, "n": len(rows["model"]), "example": example}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=common.TEXTURES, default="brick")
    ap.add_argument("--drop", type=float, nargs="+", default=[0.5])
    ap.add_argument("--masks", type=int, default=3, help="random masks per test crop")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    threads = common.set_threads(args.threads)
    out = Path(args.out or Path(__file__).resolve().parent / "out" / f"inpainting-{args.data}")
    out.mkdir(parents=True, exist_ok=True)
    train_tiles, crops = tiles(args.data), test_crops(args.data)
    results = {"data": args.data, "machine": common.machine(torch.device("cpu")), "threads": threads,
               "code": common.code_version(), "train": "16 tiles of 64 px from the top-left 256 px region",
               "test_crops": [list(c) for c in TEST_CROPS], "runs": []}
    grids = []
    for drop in args.drop:
        for name in ("texture-fast", "texture-recovery"):
            preset = get_preset(name)
            if name == "texture-recovery":
                preset = preset.replace(recovery_drop=drop)
            started = time.monotonic()
            model = train(train_tiles, preset, out / f"{name}-drop{drop}.safetensors")
            seconds = time.monotonic() - started
            r = evaluate_model(model, crops, drop, args.masks)
            grids.append(common.labelled(make_grid(r.pop("example"), columns=4),
                                         f"{name}, drop {drop}: observed | blur | model | original"))
            row = {"preset": name, "drop": drop, "learn_seconds": round(seconds, 1), **r}
            results["runs"].append(row)
            blur = row["rmse"][f"blur{row['best_blur_sigma']}"]
            print(f"{args.data} drop {drop} {name:>16}: model {row['rmse']['model']:6.2f}  best blur "
                  f"{blur:6.2f} (sigma {row['best_blur_sigma']})  mean {row['rmse']['mean']:6.2f}  "
                  f"[{row['n']} recoveries, learned in {seconds:.0f} s]", flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    make_grid(grids, columns=1).save(out / "examples.png")
    print(f"wrote {out / 'results.json'} and {out / 'examples.png'}")


if __name__ == "__main__":
    main()
