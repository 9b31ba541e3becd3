"""The project's own fast recipes, as an extra row beside the release's figures.

    python experiments/fast_recipes.py --data brick    # texture-fast on a 64 px brick crop, ~1 min
    python experiments/fast_recipes.py --data grass    # texture-fast on a 64 px grass crop
    python experiments/fast_recipes.py --data faces    # object-fast on 8 aligned faces at 48 px

Not the authors' settings: short-run chains that restart from noise N(0, sigma^2) every iteration
(40 Langevin steps), Adam 2e-3, a two-layer net, the data's own channel mean (see README / the
presets). Textures: a native-resolution 64 x 64 crop at (100, 100) of the 512 px texture (the crop
the tests use), so no resampling. Faces: lfw_subset faces 1-8 for training, 9-16 as a held-out
reference. Fresh samples start from noise, exactly as learning saw them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from models import get_preset  # noqa: E402

FIGURE = "fast"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=(*common.TEXTURES, "faces"), default="brick")
    ap.add_argument("--out", default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    args.scale = "fast"
    device, out = common.resolve(args, FIGURE)
    if args.data == "faces":
        name = "object-fast"
        preset, changed = common.shrink(get_preset(name), {}, args.overrides)
        images = common.faces(common.N_FACES)
        reference = common.faces(common.N_HELDOUT_FACES, start=common.N_FACES)
        notes = [f"training images: lfw_subset faces 1-{common.N_FACES} (25 px -> {preset.image_size} px)",
                 "metrics.reference: held-out real faces vs the training faces"]
        ref_name = f"held-out lfw_subset faces {common.N_FACES + 1}-{common.N_FACES + common.N_HELDOUT_FACES}"
    else:
        name = "texture-fast"
        preset, changed = common.shrink(get_preset(name), {}, args.overrides)
        images = [common.texture_crop(args.data, preset.image_size)]
        reference, ref_name = None, ""
        notes = [f"exemplar: skimage.data.{args.data}()[100:{100 + preset.image_size}, 100:{100 + preset.image_size}], "
                 "native resolution, gray -> RGB"]
    common.run(preset, images, out, figure=f"{FIGURE} ({name})", data_name=args.data, scale="fast", shrunk=changed,
               notes=[f"project recipe {name}, not the authors' settings", *notes], device=device,
               n_samples=args.samples, reference=reference, reference_name=ref_name, extra_inits=())


if __name__ == "__main__":
    main()
