"""End-to-end release throughput vs anonymizer-only throughput on the same images.

    python benchmarks/release_throughput.py --config demo --images 48 --batch-size 8 --threads 1
    python benchmarks/release_throughput.py --model runs/demo/anonymizer --images 64

Inputs are real-world encoded: copies of the RSNA fixture (1024x1024 JPEG Baseline CR, half of
them MONOCHROME1), each with its own UIDs. Three variants, in one run, alternating:

- `anonymizer`: `Anonymizer.anonymize` alone on pre-decoded (B, 1, S, S) tensors, same batch size
  and per-image seeds as the release: the model's own throughput, the ceiling;
- `release`: `privdiff-client release`'s pipeline (read, decode, de-identify, anonymize, residual-
  risk check, encode, fsync, audit) on the files, model loading excluded;
- `release, no risk check`: the same without the verifier (what the check costs).

The release's goal is >= 90% of `anonymizer` (reading/writing overlap the model). Without
`--model`, an untrained model of `--config` is built: throughput does not depend on the weights.
Times on a shared machine drift, so each variant runs `--repeats` times and the best is kept;
compare the ratios. Prints a table and writes JSON (`--json`).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from privdiff.client.release_pipeline import ReleaseSettings, run_release  # noqa: E402
from privdiff_core.anonymizer import Anonymizer, seed_for  # noqa: E402
from privdiff_core.data import dicom_pixels, read_dicom_dataset  # noqa: E402
from privdiff_core.data.grey import square_resize, to_signed  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "real"


def make_inputs(folder: Path, count: int) -> list[Path]:
    """`count` JPEG Baseline CR files with distinct UIDs (pixel data left encoded as it came)."""
    sources = [FIXTURES / "rsna_cr_jpeg_baseline.dcm", FIXTURES / "rsna_cr_jpeg_baseline_monochrome1.dcm"]
    paths = []
    for index in range(count):
        ds = pydicom.dcmread(sources[index % 2])
        root = f"1.2.826.0.1.3680043.8.498.77.{index}"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = f"{root}.1", f"{root}.2", f"{root}.3"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = folder / f"patient{index:03d}" / "image.dcm"
        path.parent.mkdir(parents=True)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def model_folder(args: argparse.Namespace, workdir: Path) -> Path:
    if args.model:
        return Path(args.model)
    from privdiff_core.config import load_config
    from privdiff_core.training import build_models, save_anonymizer

    cfg = load_config(args.config, [f"anonymize.batch_size={args.batch_size}"])
    return save_anonymizer(build_models(cfg), cfg, workdir / "anonymizer")


def decoded_images(paths: list[Path], size: int) -> tuple[torch.Tensor, list[str]]:
    """The files decoded as the release decodes them, (N, 1, size, size) in [-1, 1], and the
    per-image seed keys the release uses (each file's patient folder)."""
    images = torch.from_numpy(
        np.stack([to_signed(square_resize(dicom_pixels(read_dicom_dataset(p)), size)) for p in paths])
    ).unsqueeze(1)
    return images, [p.parent.name for p in paths]


def anonymizer_only(anonymizer: Anonymizer, images: torch.Tensor, keys: list[str], batch: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(images), batch):
        part = images[start : start + batch]
        anonymizer.anonymize(
            part, seed=[seed_for(0, k) for k in keys[start : start + batch]], batch_size=batch
        )
    return len(images) / (time.perf_counter() - started)


def release_once(model: Path, inputs: Path, workdir: Path, args: argparse.Namespace, risk: bool) -> float:
    out = Path(tempfile.mkdtemp(dir=workdir, prefix="out-"))
    settings = ReleaseSettings(
        model=model,
        source=inputs,
        out=out,
        allow_unsigned=True,
        site_secret=workdir / "secret",
        quarantine_threshold=1.0,
        residual_check=risk,
        own_verifier=True,  # the same network cost as a site verifier of the model's size
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        progress=False,
    )
    summary = run_release(settings, lambda message: None)
    released = summary.counts["released"]
    if released != args.images:
        raise RuntimeError(f"released {released} of {args.images} images: {summary.reasons}")
    shutil.rmtree(out)
    return released / summary.seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="anonymizer folder (default: an untrained model of --config)")
    parser.add_argument("--config", default="demo", help="config of the untrained model (default demo)")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="release reader threads")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/release_throughput.json"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="privdiff-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "secret").write_bytes(b"benchmark site secret, not real!")
        inputs = workdir / "in"
        paths = make_inputs(inputs, args.images)
        model = model_folder(args, workdir)
        anonymizer = Anonymizer.load(model, device=args.device)
        size = anonymizer.image_size
        images, keys = decoded_images(paths, size)
        anonymizer_only(anonymizer, images[: args.batch_size], keys, args.batch_size)  # warm-up
        results: dict[str, list[float]] = {"anonymizer": [], "release": [], "release, no risk check": []}
        for _ in range(args.repeats):
            results["anonymizer"].append(anonymizer_only(anonymizer, images, keys, args.batch_size))
            results["release"].append(release_once(model, inputs, workdir, args, risk=True))
            results["release, no risk check"].append(release_once(model, inputs, workdir, args, risk=False))

    best = {name: max(values) for name, values in results.items()}
    ceiling = best["anonymizer"]
    rows = [
        {
            "variant": name,
            "images_per_s": round(value, 3),
            "ratio": round(value / ceiling, 3),
            "runs": results[name],
        }
        for name, value in best.items()
    ]
    print(f"{'variant':<26}{'images/s':>10}{'vs anonymizer':>15}")
    for row in rows:
        print(f"{row['variant']:<26}{row['images_per_s']:>10.2f}{row['ratio']:>14.0%}")
    record = {
        "benchmark": "release_throughput",
        "model": args.model or f"untrained {args.config}",
        "image_size": size,
        "images": args.images,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "results": rows,
        "goal": "release >= 0.9 x anonymizer",
    }
    args.json.write_text(json.dumps(record, indent=2))
    print(f"-> {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
