"""Figure 1 of the release: one texture, layer by layer, f = sum of the top ReLU map.

    python experiments/fig1_texture.py --scale cpu --data brick      # minutes on 1 CPU thread
    python experiments/fig1_texture.py --scale paper --data grass    # the release's settings (GPU)

paper: the ``texture`` preset exactly (frame_3 net 100@15/3, 64@5, 30@3; 224 px; persistent chains
from zeros, 1 chain; T = 10, delta = 0.3, sigma = 1; 3 stages x 700 iterations; Gamma 5e-4 halved
each stage; the release's SGD rule). The whole 512 px texture is fitted to 224 px.

cpu: the same recipe with only ``CPU`` below changed (recorded in metrics.json under "shrunk"):
the image side and, so that the run keeps the release's pixel scale, a centre crop of
512 * 96 / 224 = 219 px of the texture fitted to 96 px (see common.texture_image).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from models import get_preset  # noqa: E402

FIGURE = "fig1_texture"
CPU = {"image_size": 96}


def main(argv=None) -> None:
    args = common.parser(__doc__.splitlines()[0], common.TEXTURES, "brick").parse_args(argv)
    device, out = common.resolve(args, FIGURE)
    preset, shrunk = common.shrink(get_preset("texture"), CPU if args.scale == "cpu" else {}, args.overrides)
    images = [common.texture_image(args.data, preset.image_size)]
    notes = [
        f"exemplar: centre {images[0].width} px crop of skimage.data.{args.data}() (512 px, gray -> RGB), "
        f"fitted to {preset.image_size} px: the release's pixel scale (512 -> 224)",
        "fresh samples continue the persistent chain (models.pipeline.default_init) for sample_steps "
        "Langevin steps, cycled to --samples chains",
    ]
    common.run(preset, images, out, figure=FIGURE, data_name=args.data, scale=args.scale, shrunk=shrunk,
               notes=notes, device=device, n_samples=args.samples)


if __name__ == "__main__":
    main()
