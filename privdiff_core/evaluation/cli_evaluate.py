"""`privdiff evaluate`: how much identity, age and sex an anonymizer leaves, how much diagnosis it keeps."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import TYPE_CHECKING

from privdiff_core.cli import add_config_arguments

if TYPE_CHECKING:
    from privdiff_core.evaluation.results import Report

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
  hard negatives      re-ID AUC when the other patient has the same sex, age group and site
  retrieval           precision@1: is the best-scoring real test film the same patient's?
  memorization        share of anonymized test films the real-trained verifier links to a training
                      patient above a threshold with 1% false alarms on validation films

--model takes a folder written by `privdiff train` (or its anonymizer/ sub-folder), optionally
named NAME=PATH; repeat it to compare models. --strengths 0.3,0.6 evaluates each model in img2img
mode at those strengths (how far the latent is noised): its privacy/utility curve. --modes
img2img,generative evaluates each model in those anonymize modes (models that have them).
--methods adds built-in methods: dp_pix and deformation (the paper's baselines), identity and
noise (sanity references), oracle (synthetic data only: each film's findings re-rendered on a
new patient of its site; its re-ID AUC is the privacy floor, its diagnosis AUC the utility
ceiling), vae (each --model's autoencoder alone: encode, decode); default: the config's
evaluate.baselines; 'none' for no baseline.
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
    parser.add_argument(
        "--modes",
        default=None,
        metavar="LIST",
        help="comma-separated anonymize modes: img2img, generative: every --model is evaluated in each, as "
        "NAME_<mode> (default: the model's own mode)",
    )
    parser.add_argument(
        "--conditions",
        default=None,
        metavar="LIST",
        help="comma-separated: what every --model is told about each film: sensitive (age, sex; the "
        "findings estimated from the film), all (+ the findings, as from the reports: --findings of "
        "the release), none; those other than the config's evaluate.anonymizer_conditions are named "
        "NAME_estimated, NAME_reports, NAME_blind (default: the config's)",
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


def parse_modes(spec: str | None) -> list[str | None]:
    """--modes 'img2img,generative' -> ['img2img', 'generative']; not given -> [None] (the model's own)."""
    from .methods import ANONYMIZE_MODES, MethodError

    if spec is None:
        return [None]
    values = [v.strip() for v in spec.split(",") if v.strip()]
    unknown = [v for v in values if v not in ANONYMIZE_MODES]
    if not values or unknown:
        raise MethodError(f"--modes: each mode must be one of {', '.join(ANONYMIZE_MODES)}, got {spec!r}")
    if len(set(values)) != len(values):
        raise MethodError(f"--modes: a mode is named twice in {spec!r}")
    return list(values)


def parse_conditions(spec: str | None) -> list[str]:
    """--conditions 'sensitive,all' -> ['sensitive', 'all']; not given -> [] (the config's)."""
    from .methods import CONDITION_MODES, MethodError

    if spec is None:
        return []
    values = [v.strip() for v in spec.split(",") if v.strip()]
    if not values or any(v not in CONDITION_MODES for v in values) or len(set(values)) != len(values):
        raise MethodError(
            f"--conditions: each of {', '.join(CONDITION_MODES)} at most once, comma-separated; got {spec!r}"
        )
    return values


def model_methods(
    cfg,
    models: list[tuple[str, str]],
    strengths: list[float | None],
    modes: list[str | None] = (None,),
    conditions: list[str] = (),
) -> list:
    """One AnonymizerMethod per model, conditions, mode and strength: NAME, NAME_<mode>,
    NAME[_<mode>]_s<percent>, with _<conditions suffix> after NAME where the conditions are not
    the config's evaluate.anonymizer_conditions."""
    from .methods import CONDITION_LABELS, CONDITION_SUFFIXES, AnonymizerMethod

    default, batch = cfg.evaluate.anonymizer_conditions, cfg.evaluate.batch_size
    methods = []
    for name, path in models:
        for told in conditions or [default]:
            base = name if told == default else f"{name}_{CONDITION_SUFFIXES[told]}"
            for mode in modes:
                # A strength is an img2img setting: the generative mode is evaluated once, and a
                # strength given without a mode runs img2img whatever the model's default mode.
                for strength in [None] if mode == "generative" else strengths:
                    method_name = base if mode is None else f"{base}_{mode}"
                    if strength is not None:
                        method_name += f"_s{round(strength * 100)}"
                    run_mode = "img2img" if mode is None and strength is not None else mode
                    method = AnonymizerMethod(
                        method_name, name, path, told, batch, strength, mode=run_mode, model_name=base
                    )
                    # The label needs the model's manifest, which the method has just read.
                    method.label = model_label(name, method.architecture)
                    if told != default:
                        method.label += f", {CONDITION_LABELS[told]}"
                    if mode is not None:
                        method.label += f", {mode}"
                    if strength is not None:
                        method.label += f", strength {strength:g}"
                    methods.append(method)
    return methods


def reference_methods(names: list[str], cfg, models: list[tuple[str, str]]) -> tuple[list, list[str]]:
    """The built-in methods named, and one-line notes for those skipped (the oracle on real data).

    `oracle` needs a `privdiff synth` federation as cfg.data; `vae` is one method per model
    (`vae`, or NAME_vae when several models are compared).
    """
    from .methods import MethodError, VAEMethod, builtin_method
    from .oracle import oracle_for_data

    methods, notes = [], []
    for name in names:
        if name == "oracle":
            oracle, note = oracle_for_data(cfg.data)
            if oracle is None:
                print(f"privdiff: {note}")
                notes.append(note)
            else:
                methods.append(oracle)
        elif name == "vae":
            if not models:
                raise MethodError("the vae method reconstructs through a model's autoencoder: give --model")
            for model_name, path in models:
                method_name = "vae" if len(models) == 1 else f"{model_name}_vae"
                label = "VAE reconstruction only" + ("" if model_name == "privdiff" else f" ({model_name})")
                methods.append(VAEMethod(method_name, label, path, cfg.evaluate.batch_size))
        else:
            methods.append(builtin_method(name, cfg))
    return methods, notes


def run(args: argparse.Namespace) -> int:
    from privdiff_core.config import ConfigError, load_config

    from .pipeline import load_splits, require_sections, run_evaluation

    cfg = load_config(args.config, args.overrides)
    if not cfg.get("data"):
        raise ConfigError("say which data to evaluate on: data=DIR (with train, val and test patients)")
    if not cfg.get("out"):
        raise ConfigError("say where the report goes: out=REPORT_DIR")
    require_sections(cfg, "evaluate", "baselines")
    strengths, modes = parse_strengths(args.strengths), parse_modes(args.modes)
    conditions = parse_conditions(args.conditions)
    for flag, given in (
        ("--strengths", args.strengths),
        ("--modes", args.modes),
        ("--conditions", args.conditions),
    ):
        if given is not None and not args.model:
            raise ConfigError(f"{flag} applies to the --model anonymizers; give at least one --model")
    models = parse_models(args.model)
    methods = model_methods(cfg, models, strengths, modes, conditions)
    extra, notes = reference_methods(parse_methods(args.methods, cfg.evaluate.get("baselines")), cfg, models)
    # The oracle first: the samples grid shows it right under the inputs.
    methods = [m for m in extra if m.kind == "oracle"] + methods + [m for m in extra if m.kind != "oracle"]
    splits = load_splits(cfg, cfg.data, progress=not args.no_progress)
    command = (
        "privdiff " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "privdiff evaluate"
    )
    report = run_evaluation(
        cfg, splits, methods, cfg.out, command, cfg.data, progress=not args.no_progress, notes=notes
    )
    print_summary(report, cfg.out)
    return 0


def print_summary(report: Report, out_dir) -> None:
    real = report.real.summary
    print(f"re-identification AUC on real images: {real.reid_auc.mean:.3f}  (0.5 = chance)")
    print(f"diagnosis mean AUC on real images:    {real.diagnosis_mean_auc.mean:.3f}")
    for name, res in report.methods.items():
        s = res.summary
        diag = s.diagnosis_mean_auc.mean
        hard, memorized = s.reid_hard_adaptive_auc.mean, s.memorization_rate.mean
        print(
            f"{name:>12}: re-ID AUC retrained {s.reid_adaptive_auc.mean:.3f}, naive "
            f"{s.reid_naive_auc.mean:.3f}, hard negatives {'–' if hard is None else f'{hard:.3f}'}; "
            f"diagnosis AUC {'–' if diag is None else f'{diag:.3f}'}; "
            f"SSIM {res.quality.ssim_mean:.3f}; "
            f"memorized {'–' if memorized is None else f'{100 * memorized:.1f}%'}"
        )
    limits = report.limits
    if limits.oracle:
        print(
            f"limits: privacy floor (oracle re-ID AUC) {limits.privacy_floor:.3f}, utility ceiling "
            f"(oracle diagnosis AUC) {limits.utility_ceiling:.3f}"
        )
    print(f"report: {out_dir}/report.md ({report.timing['total_s']:.0f} s)")
