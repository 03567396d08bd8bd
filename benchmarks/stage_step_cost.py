"""What a config change costs per training step: one stage's `StageTrainer.step` timed for config
variants, alternating between them so that drifting machine load hits all alike.

Each `--variant NAME=OVERRIDE[,OVERRIDE...]` is the config with those overrides; every variant
trains on the same films of a federation folder's site (its train split), from the same initial
weights. Reports the median seconds per step (and the process CPU seconds, which other processes'
load barely moves) with the 1-minute load average before and after. What a main job pays: x local
steps x rounds, times the sites sharing each core.

    OMP_NUM_THREADS=1 python benchmarks/stage_step_cost.py --data runs/demo/federation/site_00 \\
        --stage denoiser --variant before=encoder.findings_steps=1,encoder.findings_batch=96 \\
        --variant after= --json benchmarks/results/stage_step_cost.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from measure import load_average, write_report

from privdiff_core.config import load_config
from privdiff_core.data import open_dataset
from privdiff_core.training import StageTrainer, build_models


def _variant(text: str) -> tuple[str, list[str]]:
    name, sep, overrides = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=OVERRIDE[,OVERRIDE...] (may be empty)")
    return name, [o for o in overrides.split(",") if o]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="one site folder (its train split is used)")
    parser.add_argument("--config", default="demo")
    parser.add_argument("--stage", choices=("autoencoder", "denoiser"), default="denoiser")
    parser.add_argument("--variant", type=_variant, action="append", required=True, help="NAME=OVERRIDES")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per variant (after 3 warm-up)")
    parser.add_argument("--json", required=True)
    args = parser.parse_args(argv)
    base = load_config(args.config, ["device=cpu"])
    data = open_dataset(args.data, int(base.image_size), "train", progress=False).load_tensors(progress=False)
    trainers = {}
    for name, overrides in args.variant:
        cfg = load_config(args.config, ["device=cpu", *overrides])
        trainers[name] = StageTrainer(build_models(cfg), args.stage, data, cfg, seed=0, device="cpu")
    for trainer in trainers.values():
        for _ in range(3):
            trainer.step()
    wall: dict[str, list[float]] = {name: [] for name in trainers}
    cpu: dict[str, list[float]] = {name: [] for name in trainers}
    load_before = load_average()
    for _ in range(args.steps):
        for name, trainer in trainers.items():
            started, started_cpu = time.perf_counter(), time.process_time()
            trainer.step()
            wall[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - started_cpu)
    out = {
        "command": " ".join(["python", "benchmarks/stage_step_cost.py", *argv]),
        "threads": torch.get_num_threads(),
        "stage": args.stage,
        "load_before": load_before,
        "load_after": load_average(),
        "variants": [
            {
                "name": name,
                "overrides": overrides,
                "seconds_per_step": statistics.median(wall[name]),
                "cpu_seconds_per_step": statistics.median(cpu[name]),
                "steps": args.steps,
            }
            for name, overrides in args.variant
        ],
    }
    lines = [
        f"{args.stage} stage, one step, {out['threads']} torch thread(s), median of {args.steps} "
        f"(load {load_before} -> {out['load_after']}).",
        "",
        "| variant | overrides | s per step | CPU s per step |",
        "|---|---|---|---|",
    ]
    for v in out["variants"]:
        lines.append(
            f"| {v['name']} | {' '.join(v['overrides']) or '(config)'} | {v['seconds_per_step']:.3f} "
            f"| {v['cpu_seconds_per_step']:.3f} |"
        )
    write_report(Path(args.json), out, "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
