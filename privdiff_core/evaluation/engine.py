"""One method through every attack and judge (the measurements of `privdiff evaluate`).

Threat model (PriCheXy-Net's linkage attack): a released image is anonymized; the attacker holds
original images of known patients and tries to tell whether a released image shows one of them.
So test pairs are (anonymized image i, original image j) of held-out patients, i != j.

- naive attacker: the verifier trained on real pairs, applied as is;
- adaptive attacker: the same kind of verifier *retrained* on (anonymized, original) pairs of the
  training patients, i.e. on exactly the test-time pair distribution (training on anonymized-
  anonymized pairs would measure linkage between two releases, a different question, and would
  leave the attacker mismatched to the linkage test). By default it starts from the real-trained
  verifier (`evaluate.adaptive.init: real`), which an attacker would have, and keeps the
  checkpoint with the best AUC on anonymized validation pairs (patients disjoint from test);
- strongest: per run, whichever of the two validates better, scored on test;
- age-group and sex: the real-trained classifier on anonymized images, and one retrained on
  anonymized training images; chance = majority-class rate of the test set;
- diagnosis: the real-trained classifier on anonymized images (per-finding AUC and mean);
- quality: SSIM per image, Fréchet distance on the diagnosis network's features;
- linkage (`linkage`): re-ID AUC with negatives matched on sex, age group and site; retrieval
  precision@1 among the real test films; memorization (best match among the training films above
  a threshold with `memorization_fpr` false alarms on real validation films).

Each method anonymizes each image once (fixed seeds); the R runs re-draw pairs and retrain the
attackers, which is where the run-to-run spread comes from.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from privdiff_core.attributes import AGE_GROUPS, FINDINGS, SEXES

from .attackers import (
    AttackerSettings,
    demographics_report,
    diagnosis_report,
    embeddings,
    train_demographics,
    train_verifier_attacker,
    verifier_scores,
)
from .judges import Judges, RunPlan, load_or_train_judges, plan_runs
from .linkage import MEMORIZATION_FPR, memorization_rate, memorization_threshold, retrieval_at_1
from .methods import Method
from .metrics import auc_with_ci, mean_std
from .protocol import Cohort, EvalSplits, derive_seed, subsample_patients
from .quality import frechet_distance, ssim_per_image

ADAPTIVE_INITS = ("real", "scratch")


@dataclass
class EvaluationSettings:
    """Everything the measurements depend on (the `evaluate` config section, resolved)."""

    seed: int
    runs: int
    bootstrap: int
    ci_level: float
    val_pairs: int
    test_pairs: int
    adaptive_images: int | None
    verifier: AttackerSettings
    classifier: AttackerSettings
    adaptive_init: str
    adaptive_verifier_steps: int
    adaptive_classifier_steps: int
    tsne_points: int
    tsne_patients: int
    grid_samples: int
    memorization_fpr: float = MEMORIZATION_FPR
    device: str = "cpu"
    progress: bool = True

    @classmethod
    def from_config(cls, cfg, device: str = "cpu", progress: bool = True) -> EvaluationSettings:
        e = cfg.evaluate
        init = str(e.adaptive.init)
        if init not in ADAPTIVE_INITS:
            raise ValueError(f"evaluate.adaptive.init must be one of {ADAPTIVE_INITS}, got {init!r}")
        return cls(
            seed=cfg.seed,
            runs=int(e.runs),
            bootstrap=int(e.bootstrap),
            ci_level=float(e.ci_level),
            val_pairs=int(e.pairs.val),
            test_pairs=int(e.pairs.test),
            adaptive_images=None if e.max_images.adaptive is None else int(e.max_images.adaptive),
            verifier=AttackerSettings.from_config(e.verifier),
            classifier=AttackerSettings.from_config(e.classifier),
            adaptive_init=init,
            adaptive_verifier_steps=int(e.adaptive.verifier_steps),
            adaptive_classifier_steps=int(e.adaptive.classifier_steps),
            tsne_points=int(e.tsne.points),
            tsne_patients=int(e.tsne.patients),
            grid_samples=int(e.figures.grid_samples),
            memorization_fpr=float(e.get("memorization_fpr", MEMORIZATION_FPR)),
            device=device,
            progress=progress,
        )

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class EvalContext:
    """The data, the runs and the real-trained judges shared by every method."""

    splits: EvalSplits
    adaptive_train: Cohort  # the training patients whose anonymized images train the adaptive attackers
    plans: list[RunPlan]
    judges: list[Judges]
    settings: EvaluationSettings
    identity_index: np.ndarray  # test images of a few patients (t-SNE coloured by identity)
    attribute_index: np.ndarray  # a random test subset (t-SNE coloured by sex and age)
    judges_from_cache: list[bool]
    memorization_thresholds: list[dict]  # per run: the real verifier's thresholds at the FPR (linkage)


def build_context(splits: EvalSplits, settings: EvaluationSettings, cache_dir: Path | None) -> EvalContext:
    """Plan the runs and train (or load) the real-image judges of each."""
    plans = plan_runs(splits, settings.runs, settings.seed, settings.val_pairs, settings.test_pairs)
    judges, cached = [], []
    for plan in plans:
        j, c = load_or_train_judges(
            splits,
            plan,
            settings.verifier,
            settings.classifier,
            cache_dir,
            settings.device,
            settings.progress,
        )
        judges.append(j)
        cached.append(c)
    adaptive_train = subsample_patients(
        splits.train, settings.adaptive_images, derive_seed(settings.seed, "adaptive_train")
    )
    rng = np.random.default_rng(derive_seed(settings.seed, "tsne"))
    test = splits.test
    counts: dict[str, list[int]] = {}
    for i, pid in enumerate(test.patient_ids):
        counts.setdefault(pid, []).append(i)
    patients = sorted(counts, key=lambda p: (-len(counts[p]), rng.random()))[: settings.tsne_patients]
    identity_index = np.array(sorted(i for p in patients for i in counts[p]), dtype=np.int64)
    n_attr = min(settings.tsne_points, len(test))
    attribute_index = np.sort(rng.choice(len(test), n_attr, replace=False))
    thresholds = [
        memorization_threshold(
            j.verifier, splits.val.images, splits.train.images, settings.memorization_fpr, settings.device
        )
        for j in judges
    ]
    return EvalContext(
        splits, adaptive_train, plans, judges, settings, identity_index, attribute_index, cached, thresholds
    )


def _pair_auc(ctx: EvalContext, cohort: Cohort, pairs: np.ndarray, scores: np.ndarray, seed: int) -> dict:
    """AUC of verification scores with a CI from resampling the cohort's patients (see auc_with_ci)."""
    codes = {p: k for k, p in enumerate(sorted(cohort.patients))}
    patient = np.array([codes[p] for p in cohort.patient_ids])
    groups = (patient[pairs[:, 0]], patient[pairs[:, 1]])
    return auc_with_ci(pairs[:, 2], scores, ctx.settings.bootstrap, ctx.settings.ci_level, seed, groups)


def _hard_auc(ctx: EvalContext, verifier, first: torch.Tensor, plan: RunPlan, seed: int) -> dict | None:
    """Re-ID AUC of `verifier` on the run's hard pairs (first[i] vs the real test film j), or None
    when the test set has no matched negatives at all."""
    pairs = plan.hard_test_pairs
    if len(pairs) == 0 or pairs[:, 2].min() == pairs[:, 2].max():
        return None
    test = ctx.splits.test
    scores = verifier_scores(verifier, first, test.images, pairs, ctx.settings.device)
    return _pair_auc(ctx, test, pairs, scores, seed)


def _linkage(
    ctx: EvalContext, plan: RunPlan, judge: Judges, first: torch.Tensor, name: str, adaptive=None
) -> dict:
    """Hard-negative AUC, retrieval precision@1 and memorization of films `first` (aligned with
    the test cohort): for the real-trained verifier, and for `adaptive` when given."""
    test, dev, seed = ctx.splits.test, ctx.settings.device, derive_seed(plan.seed, "boot_hard", name)
    out = {
        "reid_hard_naive": _hard_auc(ctx, judge.verifier, first, plan, seed),
        "retrieval_naive": retrieval_at_1(judge.verifier, first, test.images, test.patient_ids, dev),
        "memorization": memorization_rate(
            judge.verifier, first, ctx.splits.train.images, ctx.memorization_thresholds[plan.run], dev
        ),
    }
    if adaptive is not None:
        out["reid_hard_adaptive"] = _hard_auc(ctx, adaptive, first, plan, seed)
        out["retrieval_adaptive"] = retrieval_at_1(adaptive, first, test.images, test.patient_ids, dev)
    return out


def evaluate_real(ctx: EvalContext) -> dict:
    """The 'real data, unanonymized' column: every judge on real test images."""
    test, dev = ctx.splits.test, ctx.settings.device
    runs = []
    for plan, judge in zip(ctx.plans, ctx.judges, strict=True):
        scores = verifier_scores(judge.verifier, test.images, test.images, plan.test_pairs, dev)
        runs.append(
            {
                "run": plan.run,
                "reid": _pair_auc(ctx, test, plan.test_pairs, scores, derive_seed(plan.seed, "boot", "real")),
                "diagnosis": diagnosis_report(
                    judge.diagnosis, test.images, test.labels, test.label_mask, dev
                ),
                "demographics": demographics_report(
                    judge.demographics, test.images, test.age_group, test.sex, dev
                ),
                "judge_training": judge.logs,
                **_linkage(ctx, plan, judge, test.images, "real"),
            }
        )
    return {"runs": runs, "summary": _summarize(runs, adaptive=False)}


def _summarize(runs: list[dict], adaptive: bool) -> dict:
    def pick(*path):
        out = []
        for r in runs:
            v = r
            for p in path:
                v = None if v is None else v.get(p)
            out.append(v)
        return out

    demo = "demographics_naive" if adaptive else "demographics"
    summary = {
        "reid_naive_auc" if adaptive else "reid_auc": mean_std(
            pick("reid_naive" if adaptive else "reid", "auc")
        ),
        "diagnosis_mean_auc": mean_std(pick("diagnosis", "mean_auc")),
        "age_accuracy": mean_std(pick(demo, "age", "accuracy")),
        "sex_accuracy": mean_std(pick(demo, "sex", "accuracy")),
        "age_chance": mean_std(pick(demo, "age", "chance")),
        "sex_chance": mean_std(pick(demo, "sex", "chance")),
        "per_finding_auc": {
            name: mean_std([r["diagnosis"]["per_finding"].get(name) for r in runs]) for name in FINDINGS
        },
        "skipped_findings": runs[0]["diagnosis"]["skipped"] if runs else {},
        "reid_hard_naive_auc": mean_std(pick("reid_hard_naive", "auc")),
        "retrieval_naive_p1": mean_std(pick("retrieval_naive", "precision_at_1")),
        "retrieval_chance": mean_std(pick("retrieval_naive", "chance")),
        "memorization_rate": mean_std(pick("memorization", "rate")),
    }
    if adaptive:
        summary["reid_adaptive_auc"] = mean_std(pick("reid_adaptive", "auc"))
        summary["reid_strongest_auc"] = mean_std(pick("reid_strongest", "auc"))
        summary["age_accuracy_adaptive"] = mean_std(pick("demographics_adaptive", "age", "accuracy"))
        summary["sex_accuracy_adaptive"] = mean_std(pick("demographics_adaptive", "sex", "accuracy"))
        summary["reid_hard_adaptive_auc"] = mean_std(pick("reid_hard_adaptive", "auc"))
        summary["retrieval_adaptive_p1"] = mean_std(pick("retrieval_adaptive", "precision_at_1"))
    return summary


def _anonymize(method: Method, cohort: Cohort, split: str, ctx: EvalContext) -> torch.Tensor:
    out = method.anonymize(cohort, derive_seed(ctx.settings.seed, method.name, split), ctx.settings.progress)
    if out.shape != cohort.images.shape:
        raise ValueError(f"{method.name} returned {tuple(out.shape)} for {tuple(cohort.images.shape)} images")
    if not torch.isfinite(out).all():
        raise ValueError(f"{method.name} returned non-finite pixels")
    return out.float().clamp(-1.0, 1.0)


def evaluate_method(method: Method, ctx: EvalContext, workdir: Path | None = None) -> tuple[dict, dict]:
    """All measurements of one method; returns (result for the report, arrays for the figures)."""
    s, dev = ctx.settings, ctx.settings.device
    splits, train = ctx.splits, ctx.adaptive_train
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    method.prepare(splits, dev, s.progress, workdir)
    timing["prepare_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    anon_test = _anonymize(method, splits.test, "test", ctx)
    anon_val = _anonymize(method, splits.val, "val", ctx)
    anon_train = _anonymize(method, train, "train", ctx)
    n_anonymized = len(anon_test) + len(anon_val) + len(anon_train)
    timing["anonymize_s"] = time.perf_counter() - t0
    timing["anonymized_images"] = n_anonymized

    t0 = time.perf_counter()
    test, val = splits.test, splits.val
    runs = []
    adaptive_models: dict[str, torch.nn.Module] = {}
    for plan, judge in zip(ctx.plans, ctx.judges, strict=True):
        naive_scores = verifier_scores(judge.verifier, anon_test, test.images, plan.test_pairs, dev)
        naive_val = roc_auc_score(
            plan.val_pairs[:, 2], verifier_scores(judge.verifier, anon_val, val.images, plan.val_pairs, dev)
        )
        v_settings = replace(
            s.verifier,
            steps=s.adaptive_verifier_steps,
            seed=derive_seed(plan.seed, method.name, "adaptive_verifier"),
        )
        adaptive, log = train_verifier_attacker(
            anon_train,
            train.images,
            train.patient_ids,
            v_settings,
            val=(anon_val, val.images, plan.val_pairs),
            init=judge.verifier if s.adaptive_init == "real" else None,
            device=dev,
            desc=f"run {plan.run}: adaptive verifier ({method.name})",
            progress=s.progress,
        )
        adaptive_scores = verifier_scores(adaptive, anon_test, test.images, plan.test_pairs, dev)
        boot = derive_seed(plan.seed, "boot", method.name)
        naive = _pair_auc(ctx, test, plan.test_pairs, naive_scores, boot)
        retrained = _pair_auc(ctx, test, plan.test_pairs, adaptive_scores, boot)
        adaptive_val = log.best_val if log.best_val is not None else -1.0
        strongest = (
            {**retrained, "attacker": "adaptive"}
            if adaptive_val >= naive_val
            else {**naive, "attacker": "naive"}
        )

        c_settings = replace(
            s.classifier,
            steps=s.adaptive_classifier_steps,
            seed=derive_seed(plan.seed, method.name, "adaptive_demographics"),
        )
        demo_adaptive, demo_log = train_demographics(
            anon_train,
            train.age_group,
            train.sex,
            c_settings,
            val=(anon_val, val.age_group, val.sex),
            init=judge.demographics if s.adaptive_init == "real" else None,
            device=dev,
            desc=f"run {plan.run}: adaptive age+sex ({method.name})",
            progress=s.progress,
        )
        runs.append(
            {
                "run": plan.run,
                "reid_naive": {**naive, "val_auc": float(naive_val)},
                "reid_adaptive": {**retrained, "training": log.as_dict()},
                "reid_strongest": strongest,
                "diagnosis": diagnosis_report(judge.diagnosis, anon_test, test.labels, test.label_mask, dev),
                "demographics_naive": demographics_report(
                    judge.demographics, anon_test, test.age_group, test.sex, dev
                ),
                "demographics_adaptive": {
                    **demographics_report(demo_adaptive, anon_test, test.age_group, test.sex, dev),
                    "training": demo_log.as_dict(),
                },
                **_linkage(ctx, plan, judge, anon_test, method.name, adaptive),
            }
        )
        if plan.run == 0:
            adaptive_models = {"verifier": adaptive, "demographics": demo_adaptive}
    timing["attacks_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    quality = image_quality(ctx, anon_test)
    timing["quality_s"] = time.perf_counter() - t0

    artifacts = figure_arrays(ctx, anon_test, adaptive_models)
    result = {
        "method": method.describe(),
        "runs": runs,
        "summary": _summarize(runs, adaptive=True),
        "quality": quality,
        "timing": timing,
        "adaptive_train": {"images": len(train), "patients": len(train.patients)},
    }
    return result, artifacts


def image_quality(ctx: EvalContext, anon_test: torch.Tensor) -> dict:
    """SSIM vs the original, and FD on the diagnosis network's features, with a real-vs-real floor.

    The floor is the same distance between two disjoint samples of *real* images of the same
    size (training vs test patients): values near it mean "as close as real data is to itself".
    """
    test, dev = ctx.splits.test, ctx.settings.device
    net = ctx.judges[0].diagnosis
    ssim = ssim_per_image(test.images, anon_test)
    real_feat = embeddings(net, test.images, dev)
    anon_feat = embeddings(net, anon_test, dev)
    reference = ctx.adaptive_train.images[: len(test)]
    ref_feat = embeddings(net, reference, dev)
    backbone = ctx.settings.classifier.backbone
    return {
        "ssim_mean": float(ssim.mean()),
        "ssim_std": float(ssim.std()),
        "fd_name": f"FD-{backbone}",
        "fd": frechet_distance(real_feat, anon_feat),
        "fd_real_reference": frechet_distance(ref_feat, real_feat),
        "fd_samples": int(len(test)),
    }


def figure_arrays(ctx: EvalContext, anon_test: torch.Tensor, adaptive: dict) -> dict:
    """Arrays for Fig. 4 (samples) and Fig. 5 (embeddings before/after), saved per method."""
    test, dev, judge = ctx.splits.test, ctx.settings.device, ctx.judges[0]
    k = min(ctx.settings.grid_samples, len(test))
    ids, attrs = ctx.identity_index, ctx.attribute_index
    patient_codes = {p: i for i, p in enumerate(sorted(set(test.patient_ids[i] for i in ids)))}
    arrays = {
        "sample_original": test.images[:k, 0].numpy(),
        "sample_anonymized": anon_test[:k, 0].numpy(),
        "identity_before": embeddings(judge.verifier, test.images[ids], dev),
        "identity_patient": np.array([patient_codes[test.patient_ids[i]] for i in ids]),
        "attribute_before": embeddings(judge.demographics, test.images[attrs], dev),
        "attribute_sex": test.sex[attrs].numpy(),
        "attribute_age": test.age_group[attrs].numpy(),
    }
    if adaptive:
        arrays["identity_after"] = embeddings(adaptive["verifier"], anon_test[ids], dev)
        arrays["attribute_after"] = embeddings(adaptive["demographics"], anon_test[attrs], dev)
    return arrays


def chance_levels() -> dict:
    """What 'no information' looks like for each attack, for the report's plain-language summary."""
    return {
        "reid_auc": 0.5,
        "age_groups": list(AGE_GROUPS),
        "sexes": list(SEXES),
        "diagnosis_auc": 0.5,
    }
