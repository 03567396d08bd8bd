"""`privdiff evaluate`: how much identity, age and sex an anonymizer leaves, how much diagnosis it keeps."""

from __future__ import annotations

import argparse
import shlex
import sys

from privdiff_core.cli import add_config_arguments

HELP = "measure re-identification, age/sex leakage, diagnosis utility and image quality; write a report"

EPILOG = """\
examples:
  privdiff evaluate --config demo --model runs/demo data=data/synthetic out=reports/demo
  privdiff evaluate --config demo --model runs/demo --methods dp_pix,deformation data=... out=...
  privdiff evaluate --config tiny --methods identity,noise data=... out=...   (sanity check)

What is measured (attackers and judges trained on real images of the training patients, tested
on other patients; details in report.md):
  re-identification   Siamese verifier on (anonymized image, original image) pairs: naive (trained
                      on real pairs) and retrained on anonymized pairs (adaptive); ROC AUC, 0.5 = chance
  age group, sex      classifiers trained on real and retrained on anonymized images; accuracy vs chance
  diagnosis           multi-label classifier trained on real, tested on anonymized: AUC per finding
  image quality       SSIM to the original; Fréchet distance on the diagnosis network's features

--model takes a folder written by `privdiff train` (or its anonymizer/ sub-folder), optionally
named NAME=PATH; repeat it to compare models. --strengths 0.3,0.6 evaluates each model at those
anonymize strengths (how far the latent is noised): its privacy/utility curve. --methods adds
built-in methods: dp_pix and deformation (the paper's baselines), identity and noise (sanity
references); default: the config's evaluate.baselines; 'none' for no baseline.
out= receives report.md, report.json and the figures; judges/ and methods/ inside it are reused
when the same command runs again (finished methods are skipped).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    add_config_arguments(parser, default="demo")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="[NAME=]PATH",
        help="anonymizer or training run folder to evaluate (repeatable; default name: privdiff)",
    )
    parser.add_argument(
        "--methods",
        default=None,
        metavar="LIST",
        help="comma-separated built-in methods: dp_pix, deformation, identity, noise; 'none' for none "
        "(default: the config's evaluate.baselines)",
    )
    parser.add_argument(
        "--strengths",
        default=None,
        metavar="LIST",
        help="comma-separated anonymize strengths in (0, 1]: every --model is evaluated at each, as "
        "NAME_s<percent> (a privacy/utility curve); default: the strength stored with the model",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def parse_models(specs: list[str]) -> list[tuple[str, str]]:
    """[NAME=]PATH items -> (name, path); the first unnamed one is 'privdiff'."""
    from .methods import BUILTIN_METHODS, MethodError

    out: list[tuple[str, str]] = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = (
                ("privdiff" if not any(n == "privdiff" for n, _ in out) else f"model{len(out)}"),
                spec,
            )
        if not name.isidentifier():
            raise MethodError(f"model name {name!r} must be a simple identifier (letters, digits, _)")
        if name in BUILTIN_METHODS:
            raise MethodError(f"model name {name!r} clashes with a built-in method; pick another")
        out.append((name, path))
    return out


def parse_methods(spec: str | None, default) -> list[str]:
    if spec is None:
        return [str(m) for m in (default or [])]
    if spec.strip().lower() in ("", "none"):
        return []
    return [m.strip() for m in spec.split(",") if m.strip()]


def model_label(name: str, architecture: tuple[bool, bool] = (True, True)) -> str:
    """'PrivDiff-Net (NAME)' for a SAS + SPG model; an ablated one is labelled by what it runs, so a
    vanilla model never appears as PrivDiff-Net in a report."""
    from .methods import ARCHITECTURE_LABELS

    base = "PrivDiff-Net" if all(architecture) else ARCHITECTURE_LABELS[architecture]
    return base if name == "privdiff" else f"{base} ({name})"


def parse_strengths(spec: str | None) -> list[float | None]:
    """--strengths '0.3,0.6' -> [0.3, 0.6]; not given -> [None] (the model's own strength)."""
    from .methods import MethodError

    if spec is None:
        return [None]
    try:
        values = [float(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        raise MethodError(f"--strengths: expected numbers like 0.3,0.6, got {spec!r}") from None
    if not values or any(not 0.0 < v <= 1.0 for v in values):
        raise MethodError(f"--strengths: every strength must lie in (0, 1], got {spec!r}")
    if len({round(v * 100) for v in values}) != len(values):
        raise MethodError(f"--strengths: strengths must differ by at least 0.01, got {spec!r}")
    return values


def model_methods(cfg, models: list[tuple[str, str]], strengths: list[float | None]) -> list:
    """One AnonymizerMethod per model and strength (NAME, or NAME_s<percent> for a given strength)."""
    from .methods import AnonymizerMethod

    conditions, batch = str(cfg.evaluate.anonymizer_conditions), int(cfg.evaluate.batch_size)
    methods = []
    for name, path in models:
        for strength in strengths:
            method_name = name if strength is None else f"{name}_s{round(strength * 100)}"
            method = AnonymizerMethod(method_name, name, path, conditions, batch, strength)
            # The label needs the model's manifest, which the method has just read.
            method.label = model_label(name, method.architecture)
            if strength is not None:
                method.label += f", strength {strength:g}"
            methods.append(method)
    return methods


def run(args: argparse.Namespace) -> int:
    from privdiff_core.config import ConfigError, load_config

    from .methods import builtin_method
    from .pipeline import load_splits, require_sections, run_evaluation

    cfg = load_config(args.config, args.overrides)
    if not cfg.get("data"):
        raise ConfigError("say which data to evaluate on: data=DIR (with train, val and test patients)")
    if not cfg.get("out"):
        raise ConfigError("say where the report goes: out=REPORT_DIR")
    require_sections(cfg, "evaluate", "baselines")
    strengths = parse_strengths(args.strengths)
    if args.strengths is not None and not args.model:
        raise ConfigError("--strengths applies to the --model anonymizers; give at least one --model")
    methods = model_methods(cfg, parse_models(args.model), strengths)
    methods += [
        builtin_method(name, cfg) for name in parse_methods(args.methods, cfg.evaluate.get("baselines"))
    ]
    splits = load_splits(cfg, cfg.data, progress=not args.no_progress)
    command = (
        "privdiff " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "privdiff evaluate"
    )
    report = run_evaluation(
        cfg, splits, methods, cfg.out, command, str(cfg.data), progress=not args.no_progress
    )
    print_summary(report, cfg.out)
    return 0


def print_summary(report: dict, out_dir) -> None:
    real = report["real"]["summary"]
    print(f"re-identification AUC on real images: {real['reid_auc']['mean']:.3f}  (0.5 = chance)")
    print(f"diagnosis mean AUC on real images:    {real['diagnosis_mean_auc']['mean']:.3f}")
    for name, res in report["methods"].items():
        s = res["summary"]
        diag = s["diagnosis_mean_auc"]["mean"]
        print(
            f"{name:>12}: re-ID AUC retrained {s['reid_adaptive_auc']['mean']:.3f}, naive "
            f"{s['reid_naive_auc']['mean']:.3f}; diagnosis AUC {'–' if diag is None else f'{diag:.3f}'}; "
            f"SSIM {res['quality']['ssim_mean']:.3f}"
        )
    print(f"report: {out_dir}/report.md ({report['timing']['total_s']:.0f} s)")
