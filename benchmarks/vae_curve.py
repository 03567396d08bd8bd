"""How fast the autoencoder learns: reconstruction SSIM of test films against training steps.

Trains the config's VAE alone (its loss, `train.autoencoder.lr`, `train.batch_size`) on the pooled
train split of a federation folder and measures the SSIM of encode -> decode (the posterior mean)
on the first test films at each checkpoint. With 3 sites the mean of their updates moves about
as far as one site's, so R federated rounds x S local steps compare with R x S steps here: this
curve says how many the federated autoencoder needs (`federation.local_steps.autoencoder`).

    OMP_NUM_THREADS=1 python benchmarks/vae_curve.py --data runs/demo/federation \\
        --checkpoints 200 400 600 --json benchmarks/results/vae_curve_demo.json vae.ssim_weight=0
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from measure import load_average, write_report

from privdiff_core.config import load_config
from privdiff_core.data import open_dataset
from privdiff_core.evaluation.quality import ssim_per_image
from privdiff_core.model.vae import vae_loss
from privdiff_core.training import build_models, lr_factor, stage_batch_size


def reconstruction_ssim(vae: torch.nn.Module, test: torch.Tensor) -> float:
    """Mean SSIM of the test films against encode -> decode (the posterior mean); `vae` comes
    back in the mode it was in."""
    training = vae.training
    vae.eval()
    with torch.no_grad():
        recon = vae.decode(vae.encode(test).latent_dist.mode()).sample.clamp(-1, 1)
    vae.train(training)
    return float(ssim_per_image(test, recon).mean())


def checkpoint_row(
    vae: torch.nn.Module, test: torch.Tensor, seed: int, where: str, started: float, **fields
) -> dict:
    """One checkpoint of a curve: `fields`, the test-film SSIM and the seconds since `started`,
    printed as it comes (this script's and federated_autoencoder.py's)."""
    row = {**fields, "ssim": reconstruction_ssim(vae, test), "seconds": time.perf_counter() - started}
    print(f"seed {seed} {where}: SSIM {row['ssim']:.3f} ({row['seconds']:.0f} s)", flush=True)
    return row


def add_common_arguments(parser: argparse.ArgumentParser, seeds: list[int]) -> None:
    """--data, --config, --images, --seeds and the config overrides (this script's and
    federated_autoencoder.py's)."""
    parser.add_argument("--data", type=Path, required=True, help="federation folder (privdiff synth)")
    parser.add_argument("--config", default="demo")
    parser.add_argument("--images", type=int, default=160, help="test films measured (first N)")
    parser.add_argument("--seeds", type=int, nargs="+", default=seeds, help="one training per seed")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")


def curve(cfg, train: torch.Tensor, test: torch.Tensor, checkpoints: list[int], seed: int) -> list[dict]:
    """Test-film SSIM (and seconds) at each checkpoint of one VAE trained from seed `seed`."""
    torch.manual_seed(seed)
    vae = build_models(cfg).vae.train()
    base_lr = float(cfg.train.autoencoder.lr)
    optimizer = torch.optim.Adam(vae.parameters(), lr=base_lr)
    generator = torch.Generator().manual_seed(seed)
    batch = stage_batch_size(cfg, "autoencoder")
    rows, started = [], time.perf_counter()
    for step in range(1, checkpoints[-1] + 1):
        # train.autoencoder.lr_schedule over the whole curve (the last checkpoint ends it)
        for group in optimizer.param_groups:
            group["lr"] = base_lr * lr_factor(cfg, "autoencoder", (step - 1) / checkpoints[-1])
        index = torch.randint(0, len(train), (batch,), generator=generator)
        loss, _ = vae_loss(vae, train[index], cfg.vae, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step in checkpoints:
            rows.append(checkpoint_row(vae, test, seed, f"step {step:5d}", started, steps=step))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_arguments(parser, seeds=[0, 1, 2])
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[200, 400, 600, 800])
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/vae_curve_demo.json"))
    args = parser.parse_args()
    cfg = load_config(args.config, args.overrides)
    size = int(cfg.image_size)
    train = open_dataset(args.data, size, split="train", progress=False).load_tensors(progress=False).images
    test = open_dataset(args.data, size, split="test", progress=False).load_tensors(progress=False).images
    test = test[: args.images]
    checkpoints = sorted(set(args.checkpoints))
    runs = [curve(cfg, train, test, checkpoints, seed) for seed in args.seeds]
    rows = []
    for index, steps in enumerate(checkpoints):
        values = np.array([run[index]["ssim"] for run in runs])
        seconds = np.array([run[index]["seconds"] for run in runs])
        rows.append(
            {
                "steps": steps,
                "ssim": float(values.mean()),
                "ssim_std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                "ssim_per_seed": values.tolist(),
                "seconds": float(seconds.mean()),
            }
        )
    report = {
        "command": "python benchmarks/vae_curve.py "
        + " ".join(
            [f"--data {args.data}", f"--config {args.config}", "--checkpoints", *map(str, checkpoints)]
            + [f"--images {args.images}", "--seeds", *map(str, args.seeds), *args.overrides]
        ),
        "config": args.config,
        "overrides": args.overrides,
        "batch_size": stage_batch_size(cfg, "autoencoder"),
        "lr": float(cfg.train.autoencoder.lr),
        "lr_schedule": str(cfg.train.autoencoder.lr_schedule),
        "ssim_weight": float(cfg.vae.ssim_weight),
        "train_films": len(train),
        "test_films": len(test),
        "torch_threads": torch.get_num_threads(),
        "load_average": load_average(),
        "curve": rows,
    }
    write_report(args.json, report)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
