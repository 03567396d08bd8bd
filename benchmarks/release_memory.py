"""Peak memory of one release reader (one `--workers` process) on hostile and large inputs.

    python benchmarks/release_memory.py --json benchmarks/results/release_memory.json

Each case runs `privdiff.client.intake.Intake` -- what a reader process runs: stream-hash, read within the
pixel budget, check, decode, de-identify -- in a fresh process, and reports that process's peak
resident memory while it reads that input (VmHWM, reset after the imports), the resident memory
before it, and the increase (MiB). Cases, written to a temporary folder:

- `junk_1gib`: 1 GiB of random bytes named `.dcm` (was read whole, then copied again for its hash);
- `deflate_bomb`: a Deflated Explicit VR Little Endian CR of ~2 MiB whose data set inflates to
  2.2 GB (pydicom inflates a deflated data set at once, unbounded);
- `cr_4k`: a real-size 4096 x 4096 16-bit uncompressed CR, released (the legitimate worst case).

Every peak must stay under 1 GiB with the default pixel budget. `--probe FILE` is the child
mode (it also sets an address-space cap with `--cap-mib`, as the tests do, so an unbounded read
fails with MemoryError instead of swapping).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import zlib
from io import BytesIO
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROBE_SECRET = b"release memory probe secret 0123"
MIB = 2**20


def _cr_dataset(rows: int, columns: int):
    """A minimal valid chest CR header (no pixel data yet)."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    root = "1.2.826.0.1.3680043.8.498.4242"
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = f"{root}.3", f"{root}.1", f"{root}.2"
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "CR", "CHEST", "PA"
    ds.PatientName, ds.PatientID = "MEMORY^PROBE", "MEM0001"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    return ds


def _file_meta(ds, transfer_syntax: str):
    from pydicom.dataset import FileMetaDataset

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
    return meta


def make_junk(path: Path, size: int) -> Path:
    """`size` random bytes, written in 16 MiB chunks."""
    rng = np.random.default_rng(0)
    with open(path, "wb") as handle:
        for start in range(0, size, 16 * MIB):
            handle.write(rng.integers(0, 256, min(16 * MIB, size - start), dtype=np.uint8).tobytes())
    return path


def make_deflate_bomb(path: Path, inflated_pixel_bytes: int) -> Path:
    """A deflated CR whose Pixel Data inflates to `inflated_pixel_bytes` zeros, compressed while
    streaming (the bomb never exists inflated, here or on disk)."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    side = int((inflated_pixel_bytes // 2) ** 0.5)
    ds = _cr_dataset(side, side)
    header = DicomBytesIO()
    header.is_little_endian, header.is_implicit_VR = True, False  # what a deflated data set holds
    write_dataset(header, ds)
    pixel_length = side * side * 2
    element = b"\xe0\x7f\x10\x00OW\x00\x00" + pixel_length.to_bytes(4, "little")
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(16 * MIB)
    with open(path, "wb") as handle:
        handle.write(b"\x00" * 128 + b"DICM")
        meta = BytesIO()
        write_file_meta_info(meta, _file_meta(ds, DeflatedExplicitVRLittleEndian))
        handle.write(meta.getvalue())
        handle.write(deflater.compress(header.getvalue() + element))
        for start in range(0, pixel_length, len(zeros)):
            handle.write(deflater.compress(zeros[: min(len(zeros), pixel_length - start)]))
        handle.write(deflater.flush())
    return path


def make_large_cr(path: Path, side: int) -> Path:
    """An uncompressed side x side 12-bit CR with a chest-like gradient."""
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian

    ds = _cr_dataset(side, side)
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    ds.PixelData = (4095 * (0.5 + 0.4 * np.sin(6 * x) * np.cos(4 * y))).astype("<u2").tobytes()
    ds.file_meta = _file_meta(ds, ExplicitVRLittleEndian)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def _status_bytes(field: str) -> int:
    """A size field of /proc/self/status (VmSize, VmRSS, VmHWM), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _probe(path: Path, budget_mib: float, cap_mib: float | None, image_size: int) -> dict:
    """Child mode: one input through a reader's Intake, under an optional address-space cap."""
    from privdiff.client.deid import Deidentifier, UIDMapper
    from privdiff.client.intake import InputFile, Intake
    from privdiff.client.readers import silence_dicom_libraries

    silence_dicom_libraries()
    intake = Intake(
        image_size, PROBE_SECRET, Deidentifier(UIDMapper(PROBE_SECRET)), set(), int(budget_mib * MIB)
    )
    import_peak = _status_bytes("VmHWM")
    before = _status_bytes("VmRSS")
    # Reset the peak to the current RSS (Linux clear_refs 5): VmHWM then measures this input alone,
    # not the transient peak of importing torch.
    Path("/proc/self/clear_refs").write_text("5")
    if cap_mib is not None:
        cap = _status_bytes("VmSize") + int(cap_mib * MIB)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    outcome = intake(InputFile(path, "probe"))
    peak = _status_bytes("VmHWM")
    return {
        "status": getattr(outcome, "status", "prepared"),
        "reason": getattr(outcome, "reason", "ok"),
        "import_peak_rss_mib": round(import_peak / MIB, 1),
        "rss_before_mib": round(before / MIB, 1),
        "peak_rss_mib": round(peak / MIB, 1),
        "peak_increase_mib": round((peak - before) / MIB, 1),
    }


def run_probe(
    path: Path, *, budget_mib: float = 64, cap_mib: float | None = None, image_size: int = 256
) -> dict:
    """`_probe` in a fresh process (its peak RSS is that input's alone); its JSON result."""
    argv = [sys.executable, __file__, "--probe", str(path), "--budget-mib", str(budget_mib)]
    argv += ["--image-size", str(image_size)] + (["--cap-mib", str(cap_mib)] if cap_mib is not None else [])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"probe of {path.name} failed (rc {result.returncode}): {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--budget-mib", type=float, default=64, help="pixel budget (default 64, the release's)"
    )
    parser.add_argument("--image-size", type=int, default=256, help="anonymizer image size (default 256)")
    parser.add_argument("--probe", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cap-mib", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe is not None:
        print(json.dumps(_probe(args.probe, args.budget_mib, args.cap_mib, args.image_size)))
        return 0

    with tempfile.TemporaryDirectory(prefix="release_memory_") as tmp:
        folder = Path(tmp)
        cases = {
            "junk_1gib": make_junk(folder / "junk.dcm", 1024 * MIB),
            "deflate_bomb": make_deflate_bomb(folder / "bomb.dcm", int(2.2e9)),
            "cr_4k": make_large_cr(folder / "cr_4k.dcm", 4096),
        }
        results = {}
        for name, path in cases.items():
            results[name] = {
                "file_mib": round(path.stat().st_size / MIB, 2),
                **run_probe(path, budget_mib=args.budget_mib),
            }
    columns = ("file MiB", 9), ("outcome", 24), ("RSS before", 11), ("peak RSS", 9), ("increase", 9)
    print(f"{'case':14s} " + " ".join(f"{title:>{width}s}" for title, width in columns))
    for name, r in results.items():
        outcome = f"{r['status']} ({r['reason']})"
        memory = f"{r['rss_before_mib']:11.1f} {r['peak_rss_mib']:9.1f} {r['peak_increase_mib']:9.1f}"
        print(f"{name:14s} {r['file_mib']:9.2f} {outcome:>24s} {memory}")
    bounded = all(r["peak_rss_mib"] < 1024 for r in results.values())
    print(f"every peak < 1 GiB: {bounded}")
    if args.json:
        record = {
            "benchmark": "release_memory",
            "pixel_budget_mib": args.budget_mib,
            "image_size": args.image_size,
            "cases": results,
            "all_below_1_gib": bounded,
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "loadavg": os.getloadavg()},
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0 if bounded else 1


if __name__ == "__main__":
    raise SystemExit(main())
