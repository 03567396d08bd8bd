"""What bfloat16 does to the denoiser stage's learning on a CPU: the same steps from the same start
in float32, with the UNet's forward in bfloat16 (`train.denoiser.cpu_precision: bfloat16`, what
"auto" picks on a CPU that multiplies bfloat16) and with the whole step under bfloat16 autocast
(the findings network too: why the product keeps that network in float32).

The denoiser starts fresh on a trained anonymizer's autoencoder and attribute encoder (so the
latents are those the denoiser really learns), trains on one site's train split, and the losses
of the last `--window` steps are averaged per variant. Losses do not depend on machine load (one
thread, the same seeds); the seconds per step do.

    OMP_NUM_THREADS=1 python benchmarks/training_precision_losses.py --model runs/demo/anonymizer \\
        --data runs/demo/federation/site_00 --steps 150 \\
        --json benchmarks/results/training_precision_losses.json
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from measure import load_average, write_report

from privdiff_core.data import open_dataset
from privdiff_core.model.folder import load_models
from privdiff_core.training import StageTrainer, build_models, load_stage_state, stage_state

VARIANTS = ("float32", "bfloat16", "whole_step_bfloat16")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a trained anonymizer (its autoencoder is kept)")
    parser.add_argument("--data", required=True, help="one site folder (its train split is used)")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--window", type=int, default=40, help="last steps averaged")
    parser.add_argument("--json", required=True)
    args = parser.parse_args(argv)
    if not 0 < args.window <= args.steps:
        parser.error("--window must be in 1..--steps")
    trained, cfg, _ = load_models(args.model)
    torch.manual_seed(0)
    # the denoiser stage (UNet, conditioner, findings network) starts from the seeded initial weights
    load_stage_state(trained, "denoiser", stage_state(build_models(cfg), "denoiser"))
    data = open_dataset(args.data, int(cfg.image_size), "train", progress=False).load_tensors(progress=False)
    trainers = {}
    for name in VARIANTS:
        precision = "float32" if name == "float32" else "bfloat16"
        variant_cfg = copy.deepcopy(cfg)
        variant_cfg.train.denoiser.cpu_precision = precision
        models = copy.deepcopy(trained)
        trainers[name] = StageTrainer(models, "denoiser", data, variant_cfg, seed=0, device="cpu")

    def whole_step(name: str):
        if name == "whole_step_bfloat16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return nullcontext()

    parts: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    seconds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    load_before = load_average()
    for _ in range(args.steps):  # variants alternate: drifting load hits all alike
        for name, trainer in trainers.items():
            started = time.perf_counter()
            with whole_step(name):
                parts[name].append(trainer.step())
            seconds[name].append(time.perf_counter() - started)
    out = {
        "command": " ".join(["python", "benchmarks/training_precision_losses.py", *argv]),
        "threads": torch.get_num_threads(),
        "load_before": load_before,
        "load_after": load_average(),
        "variants": {
            name: {
                "mean_last": {
                    key: statistics.mean(float(p[key]) for p in parts[name][-args.window :])
                    for key in parts[name][-1]
                },
                "first": {key: float(value) for key, value in parts[name][0].items()},
                "seconds_per_step": statistics.median(seconds[name]),
            }
            for name in VARIANTS
        },
    }
    keys = list(parts["float32"][-1])
    lines = [
        f"Denoiser stage from the same start, {args.steps} steps, losses averaged over the last "
        f"{args.window}; {out['threads']} torch thread(s), median seconds per step (load "
        f"{load_before} -> {out['load_after']}).",
        "",
        "| variant | " + " | ".join(keys) + " | s per step |",
        "|---|" + "---|" * (len(keys) + 1),
    ]
    for name, v in out["variants"].items():
        lines.append(
            f"| {name} | "
            + " | ".join(f"{v['mean_last'][k]:.4f}" for k in keys)
            + f" | {v['seconds_per_step']:.3f} |"
        )
    write_report(Path(args.json), out, "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
