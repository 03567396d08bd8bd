"""How much of the anatomy an anonymizer keeps: SSIM of outputs against inputs, per strength.

For a trained anonymizer (a `privdiff train` run or anonymizer folder) and a data folder: the
SSIM of the VAE alone (encode, decode: the ceiling any strength can reach) and of the anonymized
test images at each strength, with the mean absolute change, so the `anonymize.strength`
default can be chosen to keep anatomy (SSIM roughly 0.5-0.8) while still changing the image.
Prints a table and writes JSON.

    python benchmarks/anonymize_quality.py --model runs/demo --data data/synthetic \\
        --strengths 0.3 0.4 0.6 --out benchmarks/results/anonymize_quality.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from privdiff_core.anonymizer import Anonymizer
from privdiff_core.data import open_dataset
from privdiff_core.evaluation.quality import ssim_per_image


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True, help="run or anonymizer folder")
    parser.add_argument("--data", type=Path, required=True, help="data folder (its test split is used)")
    parser.add_argument("--images", type=int, default=96, help="test images used (first N)")
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.3, 0.4, 0.6])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/anonymize_quality.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    anonymizer = Anonymizer.load(args.model, device="cpu")
    data = open_dataset(args.data, anonymizer.image_size, split="test", progress=False)
    images = data.load_tensors(progress=False).images[: args.images]
    recon = anonymizer.models.reconstruct(images, batch_size=32)
    rows = [{"setting": "vae only", "ssim": float(ssim_per_image(images, recon).mean())}]
    rows[0]["mean_abs_change"] = float((recon - images).abs().mean())
    for strength in args.strengths:
        start = time.perf_counter()
        out = anonymizer.anonymize(images, seed=0, strength=strength)
        seconds = time.perf_counter() - start
        ssim = ssim_per_image(images, out)
        rows.append(
            {
                "setting": f"strength {strength}",
                "strength": strength,
                "ssim": float(ssim.mean()),
                "ssim_min": float(ssim.min()),
                "mean_abs_change": float((out - images).abs().mean()),
                "images_per_s": len(images) / seconds,
            }
        )
    print(f"{'setting':14} {'SSIM':>6} {'min':>6} {'mean |change|':>14}")
    for r in rows:
        print(
            f"{r['setting']:14} {r['ssim']:>6.3f} {r.get('ssim_min', float('nan')):>6.3f} "
            f"{r['mean_abs_change']:>14.3f}"
        )
    report = {
        "model": str(args.model),
        "data": str(args.data),
        "images": len(images),
        "anonymize_config": dict(anonymizer.cfg.anonymize),
        "spg": dict(anonymizer.cfg.spg),
        "load_average": os.getloadavg(),
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
