"""Peak memory of one training step of each stage, per film of the batch, on the CPU.

    python benchmarks/training_memory.py --config paper --batches 1,2 \
        --json benchmarks/results/training_memory_paper.json

For each batch B of --batches, the autoencoder stage steps with train.batch_size=B,
encoder.pairs_per_step=B and encoder.attribute_batch=2B (the paper's ratios: 32 / 32 / 64), the
denoiser stage with train.batch_size=B and encoder.findings_batch=4B; each step is measured as the
rise of the process's peak resident set over the state before it (weights, Adam state, the batch
in memory: `measure.reset_peak_rss`), after one unmeasured step that allocates Adam's state. The
slope between the batches is the memory one more film costs; a GPU's activation memory follows
the same count of kept tensors (the CPU runs float32 where a GPU autocasts the UNet and the
encoders to bf16, so the GPU needs less). Extra key=value overrides follow the options, e.g.
vae.gradient_checkpointing=false.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from measure import load_average, peak_rss, reset_peak_rss, write_report
from model_speed import fake_data

from privdiff_core.config import load_config
from privdiff_core.training import StageTrainer, build_models


def step_peak_mb(config: str, overrides: list[str], stage: str, batch: int) -> float:
    sizes = {
        "autoencoder": [
            f"train.batch_size={batch}",
            f"encoder.pairs_per_step={batch}",
            f"encoder.attribute_batch={2 * batch}",
        ],
        "denoiser": [f"train.batch_size={batch}", f"encoder.findings_batch={4 * batch}"],
    }[stage]
    cfg = load_config(config, ["device=cpu", *sizes, *overrides])
    data = fake_data(max(8 * batch, 12), cfg.image_size)
    torch.manual_seed(0)
    trainer = StageTrainer(build_models(cfg), stage, data, cfg, seed=0, device="cpu")
    trainer.step()  # Adam's state allocated, not measured
    base = reset_peak_rss()
    trainer.step()
    return (peak_rss() - base) / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="paper")
    parser.add_argument("--batches", default="1,2", help="two or more batch sizes, comma-separated")
    parser.add_argument("--stages", default="autoencoder,denoiser")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("overrides", nargs="*", help="config key=value overrides")
    args = parser.parse_args(argv)
    batches = sorted({int(b) for b in args.batches.split(",")})
    if len(batches) < 2:
        parser.error("--batches needs two sizes at least (the slope is per film)")
    torch.set_num_threads(1)
    report: dict[str, Any] = {
        "benchmark": "training_memory",
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "config": args.config,
        "overrides": args.overrides,
        "load_average": load_average(),
        "stages": {},
    }
    rows = [
        "| stage | " + " | ".join(f"batch {b} (MB)" for b in batches) + " | per film (MB) |",
        "|---|" + "---|" * (len(batches) + 1),
    ]
    for stage in args.stages.split(","):
        peaks = {b: step_peak_mb(args.config, args.overrides, stage, b) for b in batches}
        per_film = (peaks[batches[-1]] - peaks[batches[0]]) / (batches[-1] - batches[0])
        report["stages"][stage] = {"peak_mb": peaks, "per_film_mb": per_film}
        rows.append(f"| {stage} | " + " | ".join(f"{peaks[b]:.0f}" for b in batches) + f" | {per_film:.0f} |")
        print(rows[-1], flush=True)
    write_report(args.json, report, "\n".join([f"`{report['command']}`", "", *rows]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
