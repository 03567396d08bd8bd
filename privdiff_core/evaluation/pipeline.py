"""From a config and a data folder to a finished report: load the splits, train (or load) the
judges, evaluate each method (or reuse its finished result), draw the figures, write the report.

Layout of the output folder:
  report.json, report.md, *.png       the report
  judges/run_<r>/                     real-trained attackers and judges (reused across methods/runs)
  methods/<name>/result.json          one finished method (a re-run skips it when its key matches)
  methods/<name>/arrays.npz           its samples and embeddings for the figures
  work/                               trained baselines (deformation)
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from privdiff_core.errors import PrivdiffError

from . import figures
from .engine import EvalContext, EvaluationSettings, build_context, evaluate_method, evaluate_real
from .limits import limits
from .methods import Method
from .protocol import SPLITS, Cohort, EvalSplits, derive_seed, subsample_patients
from .quality import refuse_inception_fid
from .report import now, package_versions, write_report
from .results import CohortSize, MethodResult, RealResult, Report, from_dict


class EvaluationError(PrivdiffError):
    """The evaluation cannot run as asked (no data, nothing to evaluate)."""


def require_sections(cfg, *names: str) -> None:
    """Fail early, with the fix, when a custom config lacks the evaluation's sections."""
    missing = [n for n in names if n not in cfg]
    if missing:
        raise EvaluationError(
            f"the config has no {', '.join(missing)} section(s); copy them from configs/demo.yaml "
            "(or use --config tiny|demo|paper)"
        )


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise EvaluationError(f"device={name} was asked for but no CUDA GPU is available; use device=cpu")
    return name


def load_split_tensors(cfg, data_root: str | Path, progress: bool = True) -> dict:
    """`CXRTensors` of the data's own patient-level train / val / test splits (Contract 2)."""
    from privdiff_core.data import open_dataset

    root = Path(data_root)
    if not root.exists():
        raise EvaluationError(
            f"data folder {root} does not exist (make one with `privdiff synth --out {root}`)"
        )
    # One pass over the DICOM headers for all three splits (they live in the same files).
    everything = open_dataset(root, int(cfg.image_size), progress=progress)
    counts = everything.split_counts()
    missing = [split for split in SPLITS if counts[split] == 0]
    if missing:
        listed = ", ".join(f"{split} {count}" for split, count in counts.items())
        raise EvaluationError(
            f"{root} has no {' or '.join(missing)} images ({listed}); the evaluation needs train, val "
            "and test patients"
        )
    return {split: everything.split(split).load_tensors(progress=progress) for split in SPLITS}


def splits_from_tensors(cfg, tensors: dict) -> EvalSplits:
    """In-memory cohorts, each capped at `evaluate.max_images.<split>` (whole patients kept together)."""
    cohorts, whole = {}, {}
    for split in SPLITS:
        cap = cfg.evaluate.max_images[split]
        whole[split] = Cohort.from_tensors(tensors[split])
        cohorts[split] = subsample_patients(
            whole[split], None if cap is None else int(cap), derive_seed(cfg.seed, "cap", split)
        )
    capped = len(cohorts["val"]) < len(whole["val"])
    return EvalSplits(**cohorts, calibration=whole["val"] if capped else None)


def load_splits(cfg, data_root: str | Path, progress: bool = True) -> EvalSplits:
    """The data's own split, capped per `evaluate.max_images`, checked patient-disjoint."""
    return splits_from_tensors(cfg, load_split_tensors(cfg, data_root, progress))


def _method_key(method: Method, ctx: EvalContext, settings: EvaluationSettings) -> str:
    material = json.dumps(
        {
            "method": method.describe()["settings"],
            "name": method.name,
            "data": ctx.splits.fingerprint(),
            # Progress bars change no result: keyed as on (the default), so a rerun with --no-progress
            # reuses the methods finished with bars (and caches written before this rule stay valid).
            "settings": {**settings.as_dict(), "progress": True},
            "plans": [p.seed for p in ctx.plans],
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def _write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(
        json.dumps(value, indent=2, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v))
    )
    tmp.replace(path)


def _write_npz(path: Path, arrays: dict) -> None:
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


def run_evaluation(
    cfg,
    splits: EvalSplits,
    methods: list[Method],
    out_dir: str | Path,
    command: str,
    data_root: str = "",
    progress: bool = True,
    notes: list[str] | None = None,
) -> Report:
    """Evaluate every method against the same judges and write the report; returns it."""
    require_sections(cfg, "evaluate", "baselines")
    refuse_inception_fid(cfg.evaluate.get("inception_weights"))
    if not methods:
        raise EvaluationError("nothing to evaluate: give --model and/or --methods")
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise EvaluationError(f"method names must be unique, got {names}")
    out = Path(out_dir)
    start = time.perf_counter()
    device = resolve_device(str(cfg.get("device", "cpu")))
    settings = EvaluationSettings.from_config(cfg, device=device, progress=progress)
    t0 = time.perf_counter()
    ctx = build_context(splits, settings, out / "judges")
    real = evaluate_real(ctx)
    judges_s = time.perf_counter() - t0

    results: dict[str, MethodResult] = {}
    arrays: dict[str, dict] = {}
    for method in methods:
        folder = out / "methods" / method.name
        key = _method_key(method, ctx, settings)
        cached = folder / "result.json"
        finished = _cached_result(cached, key) if (folder / "arrays.npz").is_file() else None
        if finished is not None:
            print(f"privdiff: {method.name}: finished earlier, reusing {cached}")
            results[method.name] = finished
            with np.load(folder / "arrays.npz") as npz:
                arrays[method.name] = {k: npz[k] for k in npz.files}
            continue
        t_method = time.perf_counter()
        result, method_arrays = evaluate_method(method, ctx, out / "work")
        result.timing.total_s = time.perf_counter() - t_method
        folder.mkdir(parents=True, exist_ok=True)
        _write_npz(folder / "arrays.npz", method_arrays)
        _write_json(cached, {"key": key, "result": asdict(result)})  # last: marks the method finished
        results[method.name], arrays[method.name] = result, method_arrays

    figure_files, silhouettes = draw_figures(out, real, results, arrays, settings.seed)
    report = Report(
        created=now(),
        command=command,
        data={
            "root": str(data_root),
            "image_size": splits.test.image_size,
            "fingerprint": splits.fingerprint(),
            "splits": splits.summary(),
        },
        settings=settings,
        seeds={"base": settings.seed, "runs": [p.seed for p in ctx.plans]},
        anonymizer_conditions=str(cfg.evaluate.anonymizer_conditions),
        adaptive_train=CohortSize(images=len(ctx.adaptive_train), patients=len(ctx.adaptive_train.patients)),
        judges_from_cache=ctx.judges_from_cache,
        real=real,
        methods=results,
        limits=limits(real, results),
        figures=figure_files,
        tsne_silhouettes=silhouettes,
        notes=_standard_notes(cfg) + list(notes or []),
        config=OmegaConf.to_container(cfg, resolve=True),
        versions=package_versions(),
        timing={"judges_s": judges_s, "total_s": time.perf_counter() - start},
    )
    write_report(out, report)
    return report


def _cached_result(path: Path, key: str) -> MethodResult | None:
    """A method's finished result when its key matches; None (evaluate again) when it is missing,
    unreadable, for other settings, or written by a version whose result fields differ."""
    try:
        stored = json.loads(path.read_text())
        if stored.get("key") != key:
            return None
        return from_dict(MethodResult, stored["result"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def draw_figures(
    out: Path, real: RealResult, results: dict[str, MethodResult], arrays: dict, seed: int
) -> tuple[dict, dict]:
    real_s = real.summary
    points = [
        {
            "label": "Real data (unanonymized)",
            "kind": "real",
            "reid": real_s.reid_auc.mean,
            "reid_std": real_s.reid_auc.std,
            "diag": real_s.diagnosis_mean_auc.mean,
            "diag_std": real_s.diagnosis_mean_auc.std,
        }
    ]
    for result in results.values():
        s = result.summary
        points.append(
            {
                "label": result.method.label,
                "kind": result.method.kind,
                "reid": s.reid_adaptive_auc.mean,
                "reid_std": s.reid_adaptive_auc.std,
                "reid_naive": s.reid_naive_auc.mean,
                "diag": s.diagnosis_mean_auc.mean if s.diagnosis_mean_auc.mean is not None else 0.5,
                "diag_std": s.diagnosis_mean_auc.std,
                "curve": result.method.curve,
                "strength": result.method.settings.get("strength"),
            }
        )
    files = {
        "Privacy vs utility (paper Fig. 3)": figures.privacy_utility_scatter(
            points, out / "privacy_utility.png"
        ).name,
        "Frontier: every method against the oracle's floor and real diagnosis": figures.frontier(
            points, out / "frontier.png"
        ).name,
    }
    first = next(iter(arrays.values()))
    # The oracle right under the inputs: what an ideal anonymizer makes of the same films.
    order = sorted(arrays, key=lambda name: results[name].method.kind != "oracle")
    rows = [(results[name].method.label, arrays[name]["sample_anonymized"]) for name in order]
    files["Inputs, the oracle and every method on the same test films (paper Fig. 4)"] = figures.sample_grid(
        first["sample_original"], rows, out / "samples.png"
    ).name
    silhouettes = {}
    for name, a in arrays.items():
        label = results[name].method.label
        path, sil = figures.tsne_figure(a, label, out / f"tsne_{name}.png", seed)
        files[f"t-SNE of attacker embeddings, {label} (paper Fig. 5)"] = path.name
        silhouettes[name] = sil
    return files, silhouettes


def _standard_notes(cfg) -> list[str]:
    dp = cfg.baselines.dp_pix
    return [
        "Re-identification is a linkage attack: pairs of (anonymized image of patient A, original image "
        "of patient A or B), always two different images. The retrained attacker learns on exactly such "
        "pairs from the training patients; the naive one is the verifier trained on real pairs.",
        "A negative pair shows two different patients, possibly from different sites: whatever differs "
        "between hospitals (scanner look) or people (sex, age) raises the verification AUC too, so an AUC "
        "above 0.5 after anonymization is an upper bound on biometric leakage, not proof of it.",
        "Every attacker and judge is trained on training patients and tested on other (test) patients; "
        "checkpoints are chosen on a third set of (validation) patients.",
        "Each image is anonymized once with a fixed seed; the independent runs redraw the test pairs and "
        "retrain every attacker.",
        "The deformation baseline trains its own verifier and diagnosis classifier (PriCheXy-Net's "
        "adversaries), never the judges used here, so it cannot overfit to the judges.",
        "FD-<backbone> uses the Fréchet formula of FID on our diagnosis network's features; true FID "
        "(Inception-v3) is not available in this installation and is not claimed.",
        f"DP-Pix settings: b={dp.b}, m={dp.m}, eps={dp.eps}; noise scale 255*m/(b^2*eps) on 8-bit values.",
    ]
