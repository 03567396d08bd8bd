"""Anonymization and release vs image size on the CPU: throughput, peak memory, release beside model.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/image_size_sweep.py --threads 1 \\
        --out benchmarks/results/image_size_sweep.json

Models (untrained: throughput does not depend on the weights):
- demo-64, demo-128, demo-256: demo.yaml's network at 64, 128 and 256 px (`image_size=` only; the
  f4 VAE gives 16, 32 and 64 px latents), one model family, so the size effect alone shows;
- paper-256: paper.yaml, the project's 256 px config (172M-parameter UNet).

For each model, both anonymize modes (img2img at the config's strength; generative, or its cost
proxy where the Anonymizer has no generative mode: see measure.anonymize_modes) at batch 1, 8 and
32: images/s, images per CPU-second of this process (with one thread: what one idle core gives,
whatever else runs) and peak resident memory (model + activations). A point whose time,
extrapolated from batch 1, exceeds --point-budget seconds is not run: it is recorded as skipped
with that estimate, so the whole sweep stays bounded on a shared 2-core machine. Then the release
(`privdiff-client release`'s pipeline on real JPEG CR files) beside the bare anonymizer on the same
decoded images, img2img, at each model's largest measured batch up to 8.

Every point stores the load average before and after it: on a loaded machine, trust the ratios
and the per-CPU-second rates. Prints a table, writes JSON and a Markdown table beside it.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import tempfile
import time
from argparse import Namespace
from pathlib import Path
from typing import Any

import torch
from measure import anonymize_modes, load_average, peak_rss, reset_peak_rss, write_report
from model_speed import fake_data
from release_throughput import anonymizer_only, decoded_images, make_inputs, release_once

from privdiff_core.anonymizer import Anonymizer
from privdiff_core.config import load_config
from privdiff_core.training import build_models, save_anonymizer

MODELS = {  # label -> (config, overrides)
    "demo-64": ("demo", []),
    "demo-128": ("demo", ["image_size=128"]),
    "demo-256": ("demo", ["image_size=256"]),
    "paper-256": ("paper", []),
}
BATCHES = (1, 8, 32)
MB = 1e6


def measure_anonymize(
    anonymizer: Anonymizer, images: torch.Tensor, kwargs: dict[str, Any], batch: int
) -> dict[str, Any]:
    """One timed anonymize call of `batch` images: wall and process-CPU seconds, peak RSS."""
    load_before = load_average()
    resident = reset_peak_rss()
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    anonymizer.anonymize(images[:batch], seed=1, batch_size=batch, **kwargs)
    wall, cpu = time.perf_counter() - wall_start, time.process_time() - cpu_start
    return {
        "batch": batch,
        "seconds": wall,
        "images_per_s": batch / wall,
        "images_per_cpu_s": batch / cpu,
        "resident_before_mb": resident / MB,
        "peak_rss_mb": peak_rss() / MB,
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }


def sweep_model(label: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    name, overrides = MODELS[label]
    cfg = load_config(name, [*overrides, "device=cpu"])
    models = build_models(cfg)
    anonymizer = Anonymizer.from_models(models, cfg)
    size, ddim_steps = cfg.image_size, cfg.anonymize.ddim_steps
    images = fake_data(max(BATCHES), size).images
    modes = anonymize_modes(ddim_steps)
    steps = {"img2img": int(ddim_steps * cfg.anonymize.strength), "generative": ddim_steps}
    # One cheap call first (1 DDIM step): allocator and kernels warm before anything is timed.
    anonymizer.anonymize(images[:1], seed=0, strength=1.0, ddim_steps=1)
    points, skipped = [], []
    for mode, spec in modes.items():
        per_image = None
        for batch in BATCHES:
            estimate = None if per_image is None else per_image * batch
            if estimate is not None and estimate > args.point_budget:
                skipped.append(
                    {
                        "mode": mode,
                        "batch": batch,
                        "estimated_s": round(estimate, 1),
                        "reason": f"batch-1 time x {batch} > --point-budget {args.point_budget:g} s",
                    }
                )
                continue
            print(f"  {label} {mode} batch {batch}", flush=True)
            point = measure_anonymize(anonymizer, images, spec["kwargs"], batch)
            per_image = per_image or point["seconds"]
            points.append({"mode": mode, "denoising_steps": steps[mode], **point})
    release = measure_release(models, cfg, anonymizer, points, args, work / label)
    unet_params = sum(p.numel() for p in models.unet.parameters())
    del models, anonymizer
    gc.collect()
    return {
        "model": label,
        "config": name,
        "overrides": overrides,
        "image_size": size,
        "latent_size": size // 2 ** (len(cfg.vae.block_out_channels) - 1),
        "unet_params_m": unet_params / 1e6,
        "modes": {mode: spec["label"] for mode, spec in modes.items()},
        "points": points,
        "skipped": skipped,
        "release": release,
    }


def measure_release(
    models, cfg, anonymizer: Anonymizer, points: list[dict], args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    """Release vs bare anonymizer (img2img) on the same real files, at the largest measured
    img2img batch up to 8; as many images as fit the point budget (at least one batch)."""
    measured = [p for p in points if p["mode"] == "img2img" and p["batch"] <= 8]
    batch = max(p["batch"] for p in measured)
    seconds_per_image = min(p["seconds"] / p["batch"] for p in measured)
    count = batch * max(1, min(2, math.floor(args.point_budget / (2 * seconds_per_image * batch))))
    work.mkdir(parents=True)
    (work / "secret").write_bytes(b"benchmark site secret, not real!")
    paths = make_inputs(work / "in", count)
    folder = save_anonymizer(models, cfg, work / "anonymizer")
    images, keys = decoded_images(paths, cfg.image_size)
    settings = Namespace(images=count, batch_size=batch, workers=args.workers, device="cpu")
    load_before = load_average()
    print(f"  release: {count} files, batch {batch}", flush=True)
    cpu_start = time.process_time()
    bare = anonymizer_only(anonymizer, images, keys, batch)
    bare_cpu, cpu_start = time.process_time() - cpu_start, time.process_time()
    release = release_once(folder, work / "in", work, settings, risk=True)
    release_cpu = time.process_time() - cpu_start
    return {
        "images": count,
        "batch": batch,
        "anonymizer_images_per_s": bare,
        "release_images_per_s": release,
        "release_over_anonymizer": release / bare,
        # CPU-seconds of this process (all threads) per image: what load from others barely moves
        "anonymizer_cpu_s_per_image": bare_cpu / count,
        "release_cpu_s_per_image": release_cpu / count,
        "release_cpu_over_anonymizer_cpu": release_cpu / bare_cpu,
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }


def table(models: list[dict[str, Any]]) -> str:
    rows = [
        "Measured on a loaded machine (2 shared CPU cores, 1 torch thread; load averages per point in "
        "the JSON): compare ratios and img/CPU-s, not absolute img/s.",
        "",
        "| model | px | latent | mode | DDIM steps | batch | img/s | img/CPU-s | peak RSS (MB) | "
        "peak over resident (MB) | load 1m before/after |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in models:
        for p in m["points"]:
            rows.append(
                f"| {m['model']} | {m['image_size']} | {m['latent_size']} | {p['mode']} | "
                f"{p['denoising_steps']} | {p['batch']} | {p['images_per_s']:.3f} | "
                f"{p['images_per_cpu_s']:.3f} | {p['peak_rss_mb']:.0f} | "
                f"{p['peak_rss_mb'] - p['resident_before_mb']:.0f} | "
                f"{p['load_average_before'][0]:.2f}/{p['load_average_after'][0]:.2f} |"
            )
        for s in m["skipped"]:
            rows.append(
                f"| {m['model']} | {m['image_size']} | {m['latent_size']} | {s['mode']} | - | {s['batch']} | "
                f"skipped: ~{s['estimated_s']:.0f} s estimated | - | - | - | - |"
            )
    rows += [
        "",
        "| model | px | release batch | files | anonymizer img/s | release img/s | release / anonymizer | "
        "anonymizer CPU-s/img | release CPU-s/img | release / anonymizer CPU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in models:
        r = m["release"]
        rows.append(
            f"| {m['model']} | {m['image_size']} | {r['batch']} | {r['images']} | "
            f"{r['anonymizer_images_per_s']:.3f} | {r['release_images_per_s']:.3f} | "
            f"{r['release_over_anonymizer']:.2f} | {r['anonymizer_cpu_s_per_image']:.2f} | "
            f"{r['release_cpu_s_per_image']:.2f} | {r['release_cpu_over_anonymizer_cpu']:.2f} |"
        )
    generative = {label for m in models for label in [m["modes"]["generative"]]}
    rows += ["", *[f"generative: {label}" for label in sorted(generative)]]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated: {', '.join(MODELS)}")
    parser.add_argument(
        "--point-budget",
        type=float,
        default=90.0,
        help="seconds one point may take (estimated from batch 1); longer points are skipped",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--workers", type=int, default=2, help="release reader threads")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/image_size_sweep.json"))
    args = parser.parse_args()
    unknown = [m for m in args.models.split(",") if m not in MODELS]
    if unknown:
        parser.error(f"unknown model {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    torch.set_num_threads(args.threads)
    payload: dict[str, Any] = {
        "benchmark": "image_size_sweep",
        "machine": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "point_budget_s": args.point_budget,
        "load_average_before": load_average(),
        "models": [],
    }
    with tempfile.TemporaryDirectory(prefix="image-size-sweep-") as tmp:
        for label in args.models.split(","):
            print(f"== {label}", flush=True)
            payload["models"].append(sweep_model(label, args, Path(tmp)))
            payload["load_average_after"] = load_average()
            write_report(args.out, payload, table(payload["models"]))
    print(table(payload["models"]))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
