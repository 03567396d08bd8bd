"""`privdiff train`: train PrivDiff-Net centrally on one site or a pooled federation folder."""

from __future__ import annotations

import argparse

from privdiff_core.cli import add_config_arguments

HELP = "train PrivDiff-Net (VAE + attribute encoder, then the SAS/SPG denoiser); resumes a stopped run"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "example: privdiff train --config demo data=data/synthetic out=runs/demo\n"
        "         privdiff train --config demo data=data/synthetic out=runs/vanilla sas.enabled=false "
        "spg.enabled=false\n\n"
        "data= is a site folder, a federation folder of sites (pooled), ChestX-ray14 or CheXpert; the\n"
        "train split trains, the val split gives a val loss. out= receives config.yaml, checkpoints/,\n"
        "metrics.json and the final anonymizer/ (use it with `privdiff anonymize --model OUT`).\n"
        "Run the same command again to continue an interrupted run from its last checkpoint."
    )
    add_config_arguments(parser, default="demo")
    parser.add_argument(
        "--stop-after",
        type=int,
        default=None,
        metavar="N",
        help="stop (checkpointed) after N training steps in this invocation; rerun to continue",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from privdiff_core.config import ConfigError, load_config
    from privdiff_core.training.run import train_run

    cfg = load_config(args.config, args.overrides)
    if not cfg.get("data"):
        raise ConfigError("say which data to train on: data=DIR (a site or federation folder)")
    if not cfg.get("out"):
        raise ConfigError("say where the run goes: out=RUN_DIR")
    if not Path(cfg.data).exists():
        raise ConfigError(f"data={cfg.data}: no such folder")
    result = train_run(
        cfg, Path(cfg.data), Path(cfg.out), stop_after=args.stop_after, progress=not args.no_progress
    )
    if not result.finished:
        print(
            f"stopped after {result.steps_done} step(s); "
            f"run the same command again to continue from {cfg.out}"
        )
        return 0
    losses = ", ".join(_stage_summary(name, s) for name, s in result.metrics["stages"].items())
    print(f"trained in {result.metrics['seconds']:.0f} s on {result.metrics['examples']} images: {losses}")
    print(f"anonymizer: {result.anonymizer}  (privdiff anonymize --model {cfg.out} --in ... --out ...)")
    return 0


def _stage_summary(name: str, stage: dict) -> str:
    """One stage's line part: its last loss (and val loss), or where a reused stage came from."""
    if "reused" in stage:  # train.autoencoder.reuse: this run trained none of its steps
        return f"{name} reused from {stage['reused']}"
    val = f" (val {stage['val_loss']:.4f})" if "val_loss" in stage else ""
    return f"{name} loss {stage['loss_last']:.4f}{val}"
