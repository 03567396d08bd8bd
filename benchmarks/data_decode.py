"""Decode throughput of privdiff_core.data: DICOM and PNG, at 64 and 256 pixels, and load_tensors.

    python benchmarks/data_decode.py [--n 400] [--json benchmarks/results/data_decode.json]
                                     [--data DIR]   # also time open_dataset + load_tensors on DIR

Writes its own inputs to a temporary folder: N small CR DICOMs in the site layout (Contract 1;
12-bit MONOCHROME2, uncompressed and RLE), N PNGs, plus the repository's real files (the RSNA
1024x1024 JPEG Baseline DICOM, the NIH 512x512 PNG). Prints images/s per case and writes JSON.
Absolute numbers drift on a shared machine; compare rows of one run.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid
from torch.utils.data import DataLoader

from privdiff_core.attributes import FINDINGS
from privdiff_core.data import open_dataset, read_image

REAL = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "real"


def write_cr(path: Path, pixels: np.ndarray, patient: str, compress: str | None = None) -> str:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.Modality, ds.PatientID, ds.PatientAge, ds.PatientSex = "CR", patient, "054Y", "F"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.set_pixel_data(pixels, "MONOCHROME2", 12)
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    if compress:
        ds.compress(compress, generate_instance_uid=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return ds.SOPInstanceUID


def make_site(root: Path, n: int, side: int, rng: np.random.Generator, compress: str | None = None) -> Path:
    rows = []
    for k in range(n):
        pixels = rng.integers(0, 4096, size=(side, side), dtype=np.uint16)
        patient = f"P{k // 4:04d}"
        relative = f"images/{patient}/{k}.dcm"
        uid = write_cr(root / relative, pixels, patient, compress)
        rows.append([uid, relative, "train"] + ["0"] * len(FINDINGS))
    with (root / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sop_instance_uid", "file", "split", *FINDINGS])
        writer.writerows(rows)
    return root


def rate(work: Callable[[], int], repeats: int = 1) -> float:
    """Images per second of `work` (which returns how many images it decoded); best of repeats."""
    best = float("inf")
    count = 0
    for _ in range(repeats):
        start = time.perf_counter()
        count = work()
        best = min(best, time.perf_counter() - start)
    return count / best


def read_all(paths: list[Path], size: int) -> Callable[[], int]:
    def work() -> int:
        for path in paths:
            read_image(path, size)
        return len(paths)

    return work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="images per generated case (default 400)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/data_decode.json"))
    parser.add_argument(
        "--data", type=Path, help="a data folder (e.g. `privdiff synth` output) to open and load"
    )
    parser.add_argument("--size", type=int, default=64, help="image size for --data (default 64)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    results: list[dict] = []

    def record(case: str, size: int, images_per_s: float) -> None:
        results.append({"case": case, "size": size, "images_per_s": round(images_per_s, 1)})
        print(f"{case:<48} {size:>4}px {images_per_s:>9.1f} img/s", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        site64 = make_site(tmp / "site64", args.n, 64, rng)
        site256 = make_site(tmp / "site256", args.n, 256, rng)
        rle256 = make_site(tmp / "rle256", args.n, 256, rng, compress=RLELossless)
        png_dir = tmp / "png"
        png_dir.mkdir()
        for side in (64, 256):
            for k in range(args.n):
                Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8)).save(
                    png_dir / f"{side}_{k}.png"
                )
        dicoms = {name: sorted(root.rglob("*.dcm")) for name, root in [("64", site64), ("256", site256)]}
        rle = sorted(rle256.rglob("*.dcm"))
        pngs = {side: sorted(png_dir.glob(f"{side}_*.png")) for side in (64, 256)}
        real_count = max(10, args.n // 20)

        print(f"{'case':<48} {'size':>6} {'throughput':>15}")
        for size in (64, 256):
            record("DICOM CR 64x64 12-bit, uncompressed", size, rate(read_all(dicoms["64"], size)))
            record("DICOM CR 256x256 12-bit, uncompressed", size, rate(read_all(dicoms["256"], size)))
            record("DICOM CR 256x256 12-bit, RLE", size, rate(read_all(rle, size)))
            real_jpeg = [REAL / "rsna_cr_jpeg_baseline.dcm"] * real_count
            record("DICOM CR 1024x1024 JPEG Baseline (real)", size, rate(read_all(real_jpeg, size)))
            record("PNG 64x64 8-bit", size, rate(read_all(pngs[64], size)))
            record("PNG 256x256 8-bit", size, rate(read_all(pngs[256], size)))
            real_png = [REAL / "nih_00000001_000.png"] * real_count
            record("PNG 512x512 8-bit (real NIH)", size, rate(read_all(real_png, size)))

        start = time.perf_counter()
        dataset = open_dataset(site64, 64, progress=False)
        record(
            "open_dataset: site header scan (64x64 DICOMs)", 64, len(dataset) / (time.perf_counter() - start)
        )
        record(
            "load_tensors: loop (64x64 DICOMs)", 64, rate(lambda: len(dataset.load_tensors(progress=False)))
        )
        for workers in (1, 2):
            loader = DataLoader(dataset, batch_size=64, num_workers=workers)
            record(
                f"DataLoader, {workers} worker(s) (64x64 DICOMs)",
                64,
                rate(lambda loader=loader: sum(len(batch["image"]) for batch in loader)),
            )

    whole = {}
    if args.data is not None:
        start = time.perf_counter()
        dataset = open_dataset(args.data, args.size, progress=False)
        opened = time.perf_counter()
        dataset.load_tensors(progress=False)
        loaded = time.perf_counter()
        whole = {
            "data": str(args.data),
            "images": len(dataset),
            "size": args.size,
            "open_s": round(opened - start, 2),
            "load_tensors_s": round(loaded - opened, 2),
        }
        print(
            f"{args.data}: {len(dataset)} images; open_dataset {whole['open_s']} s, "
            f"load_tensors at {args.size}px {whole['load_tensors_s']} s"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"n": args.n, "results": results, "data_folder": whole}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
