"""The federated autoencoder stage, emulated in one process: how well it reconstructs test films.

A main job spends 20 minutes to say what its autoencoder reconstructs; this runs only that
stage, as the federation does it, in a few: each site of a federation folder trains the
autoencoder stage on its own train split (`local_train`, its Adam state kept between rounds as
the client keeps it), the updates are averaged by the sites' examples (FedAvg; float buffers
averaged) and the global weights take `federation.server_lr.autoencoder` x that average with
the server's own function (`apply_server_update`). Not emulated: SecAgg+'s quantization (max
|SecAgg+ - FedAvg| ~5e-5 after six rounds, FIELD-NOTES) and the sites' seeds (drawn here from
the round and site).
The result: test-film SSIM of encode -> decode (posterior mean) after each round, per seed.

    OMP_NUM_THREADS=1 python benchmarks/federated_autoencoder.py --data runs/demo/federation \\
        --seeds 0 1 --json benchmarks/results/federated_autoencoder_demo.json vae.ssim_weight=0.5
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from measure import load_average, write_report
from vae_curve import add_common_arguments, checkpoint_row

from privdiff.common.updates import StateLayout, apply_server_update, flatten_state
from privdiff_core.config import load_config
from privdiff_core.data import open_dataset
from privdiff_core.training import (
    build_models,
    load_stage_state,
    local_train,
    stage_batch_size,
    stage_state,
)

STAGE = "autoencoder"


def site_folders(federation: Path) -> list[Path]:
    sites = sorted(p for p in federation.iterdir() if p.is_dir() and p.name.startswith("site_"))
    if not sites:
        raise SystemExit(f"no site_* folders in {federation}: pass a `privdiff synth` federation folder")
    return sites


def federated_run(cfg, sites: list, test: torch.Tensor, seed: int) -> list[dict]:
    """Test SSIM after each round of one emulated federation (global weights from `cfg.seed`,
    the sites' batches from `seed`)."""
    rounds = int(cfg.federation.rounds.autoencoder)
    steps = int(cfg.federation.local_steps.autoencoder)
    server_lr = float(cfg.federation.server_lr.autoencoder)
    models = build_models(cfg)
    weights = {name for name, _ in models.named_parameters()}
    optimizer_states: list[dict] = [{} for _ in sites]
    rows, started = [], time.perf_counter()
    for round_index in range(rounds):
        start = {k: v.clone() for k, v in stage_state(models, STAGE).items()}
        layout = StateLayout.of(start)
        start_vector = flatten_state(start, layout)
        updates, examples, losses = [], [], []
        for site_index, data in enumerate(sites):
            load_stage_state(models, STAGE, {k: v.clone() for k, v in start.items()})
            metrics = local_train(
                models,
                STAGE,
                data,
                cfg,
                steps,
                seed=(seed * 1000 + round_index) * 100 + site_index,
                progress=False,
                optimizer_state=optimizer_states[site_index],
                schedule_span=(round_index / rounds, (round_index + 1) / rounds),
            )
            # as the client sends it: local - global, one float32 vector
            updates.append(flatten_state(stage_state(models, STAGE), layout) - start_vector)
            examples.append(float(metrics["examples"]))
            losses.append(float(metrics["loss"]))
        share = np.array(examples) / sum(examples)
        averaged = sum(float(w) * u.astype(np.float64) for w, u in zip(share, updates, strict=True))
        new_global = apply_server_update(start, averaged, weights, server_lr)
        load_stage_state(models, STAGE, new_global)
        rows.append(
            checkpoint_row(
                models.vae,
                test,
                seed,
                f"round {round_index + 1}/{rounds}",
                started,
                round=round_index + 1,
                steps=(round_index + 1) * steps,
                loss=float(np.mean(losses)),
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_arguments(parser, seeds=[0, 1])
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    cfg = load_config(args.config, args.overrides)
    size = int(cfg.image_size)
    folders = site_folders(args.data)
    sites = [
        open_dataset(f, size, split="train", progress=False).load_tensors(progress=False) for f in folders
    ]
    test = open_dataset(args.data, size, split="test", progress=False).load_tensors(progress=False).images
    test = test[: args.images]
    runs = [federated_run(cfg, sites, test, seed) for seed in args.seeds]
    final = np.array([run[-1]["ssim"] for run in runs])
    report = {
        "command": "python benchmarks/federated_autoencoder.py "
        + " ".join(
            [f"--data {args.data}", f"--config {args.config}", f"--images {args.images}"]
            + ["--seeds", *map(str, args.seeds), *args.overrides]
        ),
        "config": args.config,
        "overrides": args.overrides,
        "rounds": int(cfg.federation.rounds.autoencoder),
        "local_steps": int(cfg.federation.local_steps.autoencoder),
        "server_lr": float(cfg.federation.server_lr.autoencoder),
        "ssim_weight": float(cfg.vae.ssim_weight),
        "encoder_every": int(cfg.train.autoencoder.encoder_every),
        "batch_size": stage_batch_size(cfg, STAGE),
        "sites": len(sites),
        "test_films": len(test),
        "torch_threads": torch.get_num_threads(),
        "load_average": load_average(),
        "ssim": float(final.mean()),
        "ssim_std": float(final.std(ddof=1)) if len(final) > 1 else 0.0,
        "ssim_per_seed": final.tolist(),
        "seconds": float(np.mean([run[-1]["seconds"] for run in runs])),
        "runs": runs,
    }
    write_report(args.json, report)
    print(f"wrote {args.json}: SSIM {report['ssim']:.3f} +- {report['ssim_std']:.3f}")


if __name__ == "__main__":
    main()
