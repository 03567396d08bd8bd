"""How fast `privdiff synth` writes federations, at the demo scale and at the paper's image size.

    python benchmarks/synth_speed.py                       # demo scale + a 256x256 sample, ~2-4 min
    python benchmarks/synth_speed.py --paper-patients 850  # the whole 3 x 850 x 4 = 10,200 images at 256

Measures, in one run: the demo federation (3 sites x 200 patients x 4 images, 64x64) with one and
with two worker processes, and 256x256 films (the paper's size) on a sample of patients, from which
the time for 10,200 images (3 sites x 850 patients x 4) is extrapolated unless --paper-patients asks
for the real thing. Reports wall and CPU seconds, images per second and bytes on disk; prints a
table and writes JSON (default benchmarks/results/synth_speed.json). Times on a shared machine
drift: compare rows of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from privdiff_core.synth import SynthParams, generate_federation

PAPER_IMAGES = 3 * 850 * 4


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(name: str, params: SynthParams, workers: int, root: Path) -> dict:
    out = root / name
    wall, cpu, child = time.perf_counter(), time.process_time(), children_cpu()
    summary = generate_federation(out, params, progress=False, workers=workers)
    wall = time.perf_counter() - wall
    cpu = time.process_time() - cpu + children_cpu() - child
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    shutil.rmtree(out)
    images = summary["images"]
    return {
        "case": name,
        "sites": params.sites,
        "patients_per_site": params.patients,
        "images_per_patient": params.images_per_patient,
        "size": params.size,
        "workers": workers,
        "images": images,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "images_per_s": round(images / wall, 1),
        "cpu_ms_per_image": round(1000 * cpu / images, 2),
        "mb_on_disk": round(size / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/synth_speed.json"))
    parser.add_argument(
        "--sample-patients", type=int, default=25, help="patients per site for the 256 sample"
    )
    parser.add_argument("--paper-patients", type=int, default=0, help="generate 3 x N x 4 at 256 for real")
    parser.add_argument("--workers", type=int, default=2, help="processes for the parallel rows (default 2)")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="synth_speed_") as tmp:
        root = Path(tmp)
        demo = SynthParams(sites=3, patients=200, images_per_patient=4, size=64)
        rows.append(measure("demo 64px, 1 process", demo, 1, root))
        rows.append(measure(f"demo 64px, {args.workers} processes", demo, args.workers, root))
        sample = SynthParams(sites=3, patients=args.sample_patients, images_per_patient=4, size=256)
        rows.append(measure(f"256px sample, {args.workers} processes", sample, args.workers, root))
        if args.paper_patients:
            paper = SynthParams(sites=3, patients=args.paper_patients, images_per_patient=4, size=256)
            rows.append(measure(f"paper 256px, {args.workers} processes", paper, args.workers, root))
    per_image = rows[2]["wall_s"] / rows[2]["images"]
    extrapolated = {
        "images": PAPER_IMAGES,
        "wall_min": round(per_image * PAPER_IMAGES / 60, 1),
        "gb_on_disk": round(rows[2]["mb_on_disk"] / rows[2]["images"] * PAPER_IMAGES / 1024, 2),
        "from": rows[2]["case"],
    }
    report = {
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "rows": rows,
        "paper_scale_extrapolated": extrapolated,
        "parallel_speedup_64px": round(rows[0]["wall_s"] / rows[1]["wall_s"], 2),
    }
    header = (
        f"{'case':<28} {'images':>7} {'wall s':>8} {'cpu s':>8} {'img/s':>7} {'cpu ms/img':>11} {'MB':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['case']:<28} {r['images']:>7} {r['wall_s']:>8.1f} {r['cpu_s']:>8.1f} "
            f"{r['images_per_s']:>7.1f} {r['cpu_ms_per_image']:>11.2f} {r['mb_on_disk']:>7.1f}"
        )
    print(
        f"\nparallel speed-up at 64px: x{report['parallel_speedup_64px']}; paper scale "
        f"({PAPER_IMAGES} images at 256px) extrapolated from the sample: {extrapolated['wall_min']} min, "
        f"{extrapolated['gb_on_disk']} GB (load average {report['load_average_1min']} on "
        f"{report['cpu_count']} CPUs)"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
