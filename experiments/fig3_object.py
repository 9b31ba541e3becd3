"""Figure 3 of the release: a few aligned object images, layer by layer, f = FC unit over the top map.

    python experiments/fig3_object.py --scale cpu       # minutes on 1 CPU thread
    python experiments/fig3_object.py --scale paper     # the release's settings (GPU)

paper: the ``object`` preset exactly (frame_3 net + one FC unit per stage, no ReLU on it; 224 px;
persistent chains from zeros, 1 chain; T = 30, delta = 0.3, sigma = 1; 3 stages x 600 iterations;
Gamma 4e-3 every stage; the release's SGD rule). The release used a few egret photographs; here
the first 8 aligned faces of ``skimage.data.lfw_subset()`` (25 x 25 gray, upscaled by the preset's
fit rule, bicubic), and faces 9-16, never trained on, as a real reference for the metrics.

cpu: the same recipe with only ``CPU`` below changed: the image side (the faces are 25 px, so 64 px
loses nothing of the data).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from models import get_preset  # noqa: E402

FIGURE = "fig3_object"
CPU = {"image_size": 64}


def main(argv=None) -> None:
    args = common.parser(__doc__.splitlines()[0], ("faces",), "faces").parse_args(argv)
    device, out = common.resolve(args, FIGURE)
    preset, shrunk = common.shrink(get_preset("object"), CPU if args.scale == "cpu" else {}, args.overrides)
    images = common.faces(common.N_FACES)
    heldout = common.faces(common.N_HELDOUT_FACES, start=common.N_FACES)
    notes = [
        "the release's data (egret photographs) is not available; aligned faces of skimage.data.lfw_subset()",
        f"training images: lfw_subset faces 1-{common.N_FACES} (25 px gray -> RGB, bicubic to {preset.image_size} px)",
        "metrics.reference: held-out real faces vs the training faces, the floor that matters for objects "
        "(the library's floor splits one face into left / right halves)",
        "fresh samples continue the persistent chain (models.pipeline.default_init); samples_noise / "
        "samples_zeros start afresh",
    ]
    common.run(preset, images, out, figure=FIGURE, data_name=args.data, scale=args.scale, shrunk=shrunk,
               notes=notes, device=device, n_samples=args.samples, reference=heldout,
               reference_name=f"held-out lfw_subset faces {common.N_FACES + 1}-{common.N_FACES + common.N_HELDOUT_FACES}")


if __name__ == "__main__":
    main()
