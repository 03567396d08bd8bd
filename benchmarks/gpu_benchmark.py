"""GPU benchmark in one command: anonymize throughput, training speed, memory, a 3-site round.

    bash benchmarks/gpu.sh                                  # fresh clone on a GPU machine: install + run
    python benchmarks/gpu_benchmark.py --out benchmarks/results/gpu_benchmark.json
    python benchmarks/gpu_benchmark.py --dry-run --out /tmp/gpu-dry-run.json   # CPU, tiny shapes (CI)

On CUDA, with the paper config (256 px, 172M-parameter UNet; bf16 autocast, SAS in float32,
diffusers' SDPA processor for self-attention):
1. anonymize throughput (images/s) and peak GPU memory, img2img and generative (or its cost
   proxy, see measure.anonymize_modes), batch 1, 8, 32, 64;
2. training steps/s of both stages (autoencoder: VAE + attribute encoder; denoiser: SAS/SPG
   UNet) at the config's batch size, and their peak GPU memory;
3. one federated run of 3 virtual sites training on the GPU (SecAgg+ privdiff, 1 local step,
   round 1 untimed) through benchmarks/federation_rounds.py, when Flower's simulation extra (ray)
   is installed; otherwise that section says why it was skipped.
The sections stop starting new points once --budget-s seconds have passed (default 420: the whole
run, install included, stays under 8 minutes on an H200). Writes one JSON.

Without a CUDA GPU it stops at once with a one-line message (exit status 2), unless --dry-run:
then every section runs on the CPU with the tiny config, batches 1 and 2, 2 training steps and 2
rounds, to prove the script still works (tests/benchmarks runs it).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from measure import anonymize_modes, import_checkout, peak_rss, reset_peak_rss, write_report

ROOT = Path(__file__).resolve().parents[1]
NO_GPU_EXIT = 2
MISSING_DEPS_EXIT = 3


class Budget:
    """Seconds left of the run; a section asks before each point."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.started = seconds, time.perf_counter()

    def spent(self) -> float:
        return time.perf_counter() - self.started

    def left(self) -> bool:
        return self.spent() < self.seconds


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        reset_peak_rss()


def peak_mb(device: torch.device) -> float:
    """Peak GPU memory allocated by torch since reset_peak (CPU: the process's peak RSS)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e6
    return peak_rss() / 1e6


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def environment(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info |= {
            "gpu": props.name,
            "gpu_memory_gb": props.total_memory / 1e9,
            "capability": f"{props.major}.{props.minor}",
            "cuda": torch.version.cuda,
            "bf16_supported": torch.cuda.is_bf16_supported(),
            "sdpa_backends": {
                "flash": torch.backends.cuda.flash_sdp_enabled(),
                "mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
                "math": torch.backends.cuda.math_sdp_enabled(),
            },
        }
    return info


def attention_processors(models) -> dict[str, int]:
    """How many attention layers run each processor class (SDPA self-attention, SAS cross)."""
    counts: dict[str, int] = {}
    for processor in models.unet.attn_processors.values():
        name = type(processor).__name__
        counts[name] = counts.get(name, 0) + 1
    return counts


def bench_anonymize(cfg, device: torch.device, batches: list[int], repeats: int, budget: Budget) -> dict:
    from model_speed import fake_data

    from privdiff_core.anonymizer import Anonymizer
    from privdiff_core.training import build_models

    models = build_models(cfg).to(device)
    anonymizer = Anonymizer.from_models(models, cfg)
    size, ddim_steps = cfg.image_size, cfg.anonymize.ddim_steps
    images = fake_data(max(batches), size).images.to(device)
    steps = {"img2img": int(ddim_steps * cfg.anonymize.strength), "generative": ddim_steps}
    modes = anonymize_modes(ddim_steps)
    anonymizer.anonymize(images[:1], seed=0, strength=1.0, ddim_steps=2)  # kernels and allocator warm
    points, skipped = [], []
    for mode, spec in modes.items():
        for batch in batches:
            if not budget.left():
                skipped.append({"mode": mode, "batch": batch, "reason": "budget spent"})
                continue

            def run(b: int = batch, kw: dict = spec["kwargs"]) -> torch.Tensor:
                return anonymizer.anonymize(images[:b], seed=1, batch_size=b, **kw)

            run()  # this batch shape once untimed (cuDNN/SDPA pick their kernels per shape)
            reset_peak(device)
            times = timed(run, device, repeats)
            points.append(
                {
                    "mode": mode,
                    "batch": batch,
                    "denoising_steps": steps[mode],
                    "seconds": statistics.median(times),
                    "images_per_s": batch / statistics.median(times),
                    "peak_memory_mb": peak_mb(device),
                }
            )
            print(f"  anonymize {mode} batch {batch}: {points[-1]['images_per_s']:.2f} img/s", flush=True)
    return {
        "image_size": size,
        "unet_params_m": sum(p.numel() for p in models.unet.parameters()) / 1e6,
        "vae_params_m": sum(p.numel() for p in models.vae.parameters()) / 1e6,
        "attention_processors": attention_processors(models),
        "autocast": "bf16 (SAS in float32)" if device.type == "cuda" else "none (CPU float32)",
        "modes": {mode: spec["label"] for mode, spec in modes.items()},
        "points": points,
        "skipped": skipped,
    }


def bench_training(cfg, device: torch.device, steps: int, budget: Budget) -> dict:
    from model_speed import fake_data

    from privdiff_core.training import StageTrainer, build_models

    batch = cfg.train.batch_size
    data = fake_data(max(4 * batch, 16), cfg.image_size)
    results = {}
    for stage in ("autoencoder", "denoiser"):
        if not budget.left():
            results[stage] = {"skipped": "budget spent"}
            continue
        models = build_models(cfg)
        trainer = StageTrainer(models, stage, data, cfg, seed=0, device=device)
        trainer.step()  # warm-up: optimizer state allocated, kernels chosen
        reset_peak(device)
        times = timed(trainer.step, device, steps)
        results[stage] = {
            "batch": batch,
            "steps_timed": steps,
            "step_s_median": statistics.median(times),
            "steps_per_s": 1.0 / statistics.median(times),
            "images_per_s": batch / statistics.median(times),
            "peak_memory_mb": peak_mb(device),
        }
        print(f"  train {stage}: {results[stage]['steps_per_s']:.2f} steps/s", flush=True)
        del trainer, models
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return results


def bench_simulation(config: str, device: torch.device, rounds: int, budget: Budget) -> dict:
    """A 3-site SecAgg+ run with the sites on `device` (a third of the GPU each)."""
    try:
        import flwr  # noqa: F401
        import ray  # noqa: F401
    except ImportError as err:
        return {"skipped": f"Flower's simulation extra is not installed ({err}); gpu.sh installs it"}
    if not budget.left():
        return {"skipped": "budget spent"}
    from federation_rounds import run_variant

    gpus = 1 / 3 if device.type == "cuda" else 0.0
    with tempfile.TemporaryDirectory(prefix="gpu-benchmark-sim-") as tmp:
        result = run_variant(config, "secagg", rounds, Path(tmp), 3, 0.0, str(device), gpus)
    return {**result, "gpus_per_site": gpus}


def require_cuda(dry_run: bool) -> torch.device:
    """CUDA, or the CPU under --dry-run; otherwise exit at once with one clear line."""
    if dry_run:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        build = torch.version.cuda or "none (a CPU-only build)"
        print(
            f"gpu_benchmark: no CUDA GPU visible (torch {torch.__version__}, CUDA build {build}); "
            "run it on a GPU machine, or pass --dry-run for the CPU check",
            file=sys.stderr,
        )
        raise SystemExit(NO_GPU_EXIT)
    return torch.device("cuda")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="CPU, tiny config, small shapes (no GPU needed)"
    )
    parser.add_argument("--config", default=None, help="config to measure (default: paper; dry run: tiny)")
    parser.add_argument(
        "--batches", default=None, help="anonymize batch sizes (default 1,8,32,64; dry run 1,2)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per anonymize point (median)")
    parser.add_argument("--train-steps", type=int, default=10, help="timed training steps per stage")
    parser.add_argument("--rounds", type=int, default=3, help="simulation rounds; the first is not timed")
    parser.add_argument("--sections", default="anonymize,training,simulation", help="comma-separated")
    parser.add_argument("--budget-s", type=float, default=420.0, help="no new point starts after this")
    parser.add_argument(
        "--out", type=Path, default=None, help="JSON (default benchmarks/results/gpu_benchmark.json)"
    )
    args = parser.parse_args(argv)
    device = require_cuda(args.dry_run)  # before any heavy import: no GPU, no waiting
    sections = args.sections.split(",")
    if unknown := set(sections) - {"anonymize", "training", "simulation"}:
        parser.error(f"unknown section {', '.join(sorted(unknown))}")
    try:
        batches = [int(b) for b in (args.batches or ("1,2" if args.dry_run else "1,8,32,64")).split(",")]
    except ValueError:
        parser.error("--batches takes comma-separated integers, e.g. 1,8,32")
    config = args.config or ("tiny" if args.dry_run else "paper")
    out = args.out or ROOT / "benchmarks" / "results" / (
        "gpu_benchmark_dry_run.json" if args.dry_run else "gpu_benchmark.json"
    )
    repeats, train_steps = (1, 2) if args.dry_run else (args.repeats, args.train_steps)
    rounds = 2 if args.dry_run else args.rounds
    if args.dry_run:
        torch.set_num_threads(1)

    import_checkout(ROOT)  # privdiff itself need not be installed (gpu.sh installs its dependencies)
    try:  # privdiff's own imports need its dependencies (diffusers, omegaconf, pydicom, ...)
        from privdiff_core.config import load_config
        from privdiff_core.training import build_models  # noqa: F401
    except ImportError as err:
        print(
            f"gpu_benchmark: privdiff's dependencies are missing ({err}); bash benchmarks/gpu.sh "
            "installs them",
            file=sys.stderr,
        )
        return MISSING_DEPS_EXIT
    cfg = load_config(config, [f"device={device.type}"])
    budget = Budget(args.budget_s)
    payload: dict[str, Any] = {
        "benchmark": "gpu_benchmark",
        "dry_run": args.dry_run,
        "config": config,
        "environment": environment(device),
        "budget_s": args.budget_s,
    }
    if "anonymize" in sections:
        print("== anonymize", flush=True)
        payload["anonymize"] = bench_anonymize(cfg, device, batches, repeats, budget)
        write_report(out, payload)
    if "training" in sections:
        print("== training", flush=True)
        payload["training"] = bench_training(cfg, device, train_steps, budget)
        write_report(out, payload)
    if "simulation" in sections:
        print("== simulation (3 sites)", flush=True)
        payload["simulation"] = bench_simulation(config, device, rounds, budget)
    payload["seconds"] = budget.spent()
    write_report(out, payload)
    print(f"wrote {out} ({payload['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
