"""Full-image mode: what each ``--consistency`` method does to colour drift, NIQE and time.

Every bundled photo, resized to ``--side`` px on its long side, is zoomed ``--scale`` times
with ``zoom --full`` once per method, the tiles smaller than the level so that tiles blend.
For each level it reports:

- **local drift**: ΔE*ab between the level and the input, both averaged over blocks of
  ``--blocks`` input px (the level is area-averaged to the input's grid first), the mean
  over the image: colour that moved away from the input at that scale;
- **NIQE** of the level's centre ``--crop`` px (what a viewer shows at full zoom);
- **seconds** of the level (tiles, blending and, for ``anchor``, its pass over the level);
- for ``anchor``, the **share of the level's seconds** its pass over the level took.

    PYTHONPATH=src python bench/full_consistency.py [--backbone realesrgan] [--out DIR] [--json out.json]

The runs go to ``--out`` (default: a temporary folder), where a rerun resumes them.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "assets" / "photos"
METHODS = ("none", "wavelet", "backprojection", "anchor")


def local_drift(level: torch.Tensor, image: torch.Tensor, block: int) -> float:
    """Mean ΔE*ab between ``level`` and ``image`` (x0), both averaged over ``block`` input px."""
    from chainzoom.metrics.color import srgb_to_lab

    factor = level.shape[-1] // image.shape[-1]
    pooled = torch.nn.functional.avg_pool2d(level[None], factor * block)[0]
    reference = torch.nn.functional.avg_pool2d(image[None], block)[0]
    lab = [srgb_to_lab(x.permute(1, 2, 0).double().numpy()) for x in (pooled, reference)]
    return float(np.sqrt(((lab[0] - lab[1]) ** 2).sum(-1)).mean())


def centre(level: torch.Tensor, crop: int) -> np.ndarray:
    height, width = level.shape[-2:]
    top, left = max(0, (height - crop) // 2), max(0, (width - crop) // 2)
    return level[:, top : top + crop, left : left + crop].permute(1, 2, 0).numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="realesrgan")
    parser.add_argument("--side", type=int, default=128)
    parser.add_argument("--scale", type=int, default=16)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--blocks", default="4,16", help="comma-separated block sides, input px")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    from chainzoom.api import ChainZoom
    from chainzoom.backbones import create_backbone
    from chainzoom.io.images import from_pil, load_image
    from chainzoom.metrics.niqe import niqe
    from chainzoom.runtime import Runtime

    runtime = Runtime(device="cpu", tile=args.tile, tile_overlap=args.overlap)
    zoomer = ChainZoom(create_backbone(args.backbone, runtime), runtime=runtime)
    methods = args.methods.split(",")
    blocks = [int(b) for b in args.blocks.split(",")]
    rows: dict[str, list[dict]] = {method: [] for method in methods}
    with tempfile.TemporaryDirectory() as temporary:
        scratch = args.out or Path(temporary)
        scratch.mkdir(parents=True, exist_ok=True)
        for photo_path in sorted(PHOTOS.iterdir()):
            photo = Image.open(photo_path).convert("RGB")
            width, height = photo.size
            size = (
                (args.side, round(args.side * height / width))
                if width >= height
                else (round(args.side * width / height), args.side)
            )
            image_path = scratch / f"{photo_path.stem}.png"
            photo.resize(size, Image.Resampling.LANCZOS).save(image_path)
            x0 = from_pil(Image.open(image_path)).rgb
            for method in methods:
                out = scratch / photo_path.stem / method
                manifest = zoomer.zoom_full(image_path, out, args.scale, format="png", consistency=method)
                for record in manifest["levels"][1:]:
                    level = load_image(out / record["file"]).rgb
                    rows[method].append(
                        {
                            "photo": photo_path.stem,
                            "magnification": record["magnification"],
                            **{f"drift@{b}": local_drift(level, x0, b) for b in blocks},
                            "niqe": niqe(centre(level, args.crop)),
                            "seconds": record["seconds"],
                            "anchor_share": record.get("anchor_seconds", math.nan) / record["seconds"],
                        }
                    )
                print(photo_path.stem, method, rows[method][-1], file=sys.stderr, flush=True)
    magnifications = sorted({row["magnification"] for row in rows[methods[0]]})
    for key in (*(f"drift@{b}" for b in blocks), "niqe", "seconds", "anchor_share"):
        print(f"\n| {key} | " + " | ".join(f"x{m}" for m in magnifications) + " |")
        print("|---|" + "---|" * len(magnifications))
        for method in methods:
            cells = []
            for m in magnifications:
                values = [row[key] for row in rows[method] if row["magnification"] == m and not math.isnan(row[key])]
                cells.append(
                    f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else "–"
                )
            print(f"| {method} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
