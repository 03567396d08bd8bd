"""`privdiff ablate`: train the paper's ablation variants (Table 2) with one budget and evaluate them,
with the baselines, against the same judges, in one resumable command."""

from __future__ import annotations

import argparse
import shlex
import sys

from privdiff_core.cli import add_config_arguments

HELP = "train vanilla / SAS / SPG / SAS+SPG with the same budget and evaluate them with the baselines"

EPILOG = """\
example:
  privdiff ablate --config demo data=data/synthetic out=runs/ablation

Each variant in the config's ablate.variants (name -> overrides of the training config, e.g.
vanilla: sas.enabled=false spg.enabled=false) is trained with `privdiff train`'s code and the
same budget into OUT/models/<name>/, then evaluated like `privdiff evaluate` together with the
baselines in ablate.baselines. The real-image judges are trained once (OUT/judges/) and reused
for every method. Run the same command again after an interruption: finished trainings and
finished evaluations are skipped, an unfinished training continues from its checkpoint.
OUT/report.md holds Table 2 (the ablation) beside Tables 1 and 3.
"""

VARIANT_ARCHITECTURES = {  # the default variants -> (SAS on, SPG on), for their report labels
    "vanilla": (False, False),
    "sas": (True, False),
    "spg": (False, True),
    "privdiff": (True, True),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    add_config_arguments(parser, default="demo")
    parser.add_argument(
        "--only",
        default=None,
        metavar="LIST",
        help="comma-separated subset of the variants and baselines to run (default: all of them)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def train_variant(cfg, out_dir, tensors: dict, progress: bool):
    """Train one variant (or finish / reuse an earlier training) and return its anonymizer folder."""
    from pathlib import Path

    from privdiff_core.model.folder import MANIFEST_FILE
    from privdiff_core.training.run import train_run

    out_dir = Path(out_dir)
    if (out_dir / "anonymizer" / MANIFEST_FILE).is_file():
        print(f"privdiff ablate: {out_dir.name}: trained earlier, reusing {out_dir / 'anonymizer'}")
        return out_dir / "anonymizer"
    result = train_run(
        cfg, Path(cfg.data), out_dir, progress=progress, train_data=tensors["train"], val_data=tensors["val"]
    )
    if not result.finished or result.anonymizer is None:
        from .pipeline import EvaluationError

        raise EvaluationError(f"training of {out_dir.name} did not finish; run the command again to continue")
    return result.anonymizer


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from privdiff_core.config import ConfigError, load_config

    from .cli_evaluate import print_summary, reference_methods
    from .methods import ARCHITECTURE_LABELS, AnonymizerMethod
    from .pipeline import load_split_tensors, require_sections, run_evaluation, splits_from_tensors

    cfg = load_config(args.config, args.overrides)
    if not cfg.get("data"):
        raise ConfigError("say which data to use: data=DIR (with train, val and test patients)")
    if not cfg.get("out"):
        raise ConfigError("say where the ablation goes: out=DIR")
    require_sections(cfg, "evaluate", "baselines", "ablate")
    out = Path(cfg.out)
    variants = {str(k): [str(o) for o in v] for k, v in cfg.ablate.variants.items()}
    baselines = [str(b) for b in cfg.ablate.baselines]
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        unknown = sorted(set(wanted) - set(variants) - set(baselines))
        if unknown:
            raise ConfigError(
                f"--only: unknown {', '.join(unknown)}; known: {', '.join([*variants, *baselines])}"
            )
        variants = {k: v for k, v in variants.items() if k in wanted}
        baselines = [b for b in baselines if b in wanted]
    tensors = load_split_tensors(
        cfg, cfg.data, progress=not args.no_progress
    )  # decoded once, shared by every training and the evaluation
    train_times: dict[str, float] = {}
    methods = []
    # One autoencoder stage for all variants: that of a variant trained earlier if there is one.
    shared_autoencoder = next(
        (
            p
            for name in variants
            if (p := out / "models" / name / "anonymizer").joinpath("manifest.json").is_file()
        ),
        None,
    )
    if not cfg.ablate.share_autoencoder:
        shared_autoencoder = None
    for name, overrides in variants.items():
        t0 = time.perf_counter()
        # Variant overrides come last, so they win over anything else on the command line.
        variant_cfg = load_config(args.config, [*args.overrides, *overrides, f"out={out / 'models' / name}"])
        if shared_autoencoder is not None:
            variant_cfg.train.autoencoder.reuse = str(shared_autoencoder)
        folder = train_variant(variant_cfg, out / "models" / name, tensors, not args.no_progress)
        if cfg.ablate.share_autoencoder and shared_autoencoder is None:
            shared_autoencoder = folder
        train_times[name] = time.perf_counter() - t0
        conditions, batch = cfg.evaluate.anonymizer_conditions, cfg.evaluate.batch_size
        label = ARCHITECTURE_LABELS[VARIANT_ARCHITECTURES[name]] if name in VARIANT_ARCHITECTURES else name
        methods.append(AnonymizerMethod(name, label, folder, conditions, batch))
    extra, extra_notes = reference_methods(baselines, cfg, [])
    methods += extra
    splits = splits_from_tensors(cfg, tensors)
    command = (
        "privdiff " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "privdiff ablate"
    )
    shared = (
        "the first variant's autoencoder stage (VAE + attribute encoder) is shared by all; "
        if (cfg.ablate.share_autoencoder)
        else ""
    )
    notes = [
        "Ablation variants trained with the same config and budget ("
        + shared
        + "every denoiser gets the same steps), differing only in: "
        + "; ".join(f"{k}: {' '.join(v)}" for k, v in variants.items())
        + ". Training wall time this invocation: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in train_times.items())
        + " (0 s = trained earlier)."
    ] + extra_notes
    report = run_evaluation(cfg, splits, methods, out, command, cfg.data, not args.no_progress, notes)
    print_summary(report, out)
    return 0
