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
  anonymized training images, each of whose heads answers the training films' commonest class
  instead where that is right more often on anonymized validation films
  (`attackers.commonest_where_better`); chance = what always answering the commonest class of
  the attacker's training films scores on the test films;
- diagnosis: the real-trained classifier on anonymized images (per-finding AUC and mean);
- quality: SSIM per image, Fréchet distance on the diagnosis network's features;
- linkage (`linkage`): re-ID AUC with negatives matched on sex, age group and site; retrieval
  precision@1 among the real test films; memorization (best match among the training films above
  a threshold with `memorization_fpr` false alarms on real validation films, all of the split's
  even where `max_images.val` caps the films the methods anonymize).

Each method anonymizes each image once (fixed seeds); the R runs re-draw pairs and retrain the
attackers, which is where the run-to-run spread comes from. With `evaluate.anonymize_per_run`
each run also anonymizes again with its own seeds, so the spread includes the outputs' own
randomness (run 0 keeps the single-run seeds; quality and figures are run 0's).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from privdiff_core.attributes import AGE_GROUPS, SEXES

from .attackers import (
    AttackerSettings,
    FitLog,
    commonest_where_better,
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
from .metrics import auc_with_ci
from .protocol import Cohort, EvalSplits, derive_seed, subsample_patients
from .quality import detail_share, frechet_distance, ssim_per_image
from .results import (
    Accuracy,
    AdaptiveDemographics,
    AdaptiveReid,
    AucCI,
    CohortSize,
    Demographics,
    Diagnosis,
    Memorization,
    MethodInfo,
    MethodResult,
    MethodRun,
    MethodTiming,
    NaiveReid,
    Quality,
    RealResult,
    RealRun,
    Retrieval,
    StrongestReid,
    TrainingLog,
    summarize_method,
    summarize_real,
)

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
    anonymize_per_run: bool = False
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
            anonymize_per_run=bool(e.get("anonymize_per_run", False)),
            device=device,
            progress=progress,
        )

    def as_dict(self) -> dict:
        settings = asdict(self)
        if not self.anonymize_per_run:  # absent when off: results cached before it existed stay valid
            del settings["anonymize_per_run"]
        return settings


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
            j.verifier,
            splits.memorization_reference.images,
            splits.train.images,
            settings.memorization_fpr,
            settings.device,
        )
        for j in judges
    ]
    return EvalContext(
        splits, adaptive_train, plans, judges, settings, identity_index, attribute_index, cached, thresholds
    )


def _pair_auc(ctx: EvalContext, cohort: Cohort, pairs: np.ndarray, scores: np.ndarray, seed: int) -> AucCI:
    """AUC of verification scores with a CI from resampling the cohort's patients (see auc_with_ci)."""
    codes = {p: k for k, p in enumerate(sorted(cohort.patients))}
    patient = np.array([codes[p] for p in cohort.patient_ids])
    groups = (patient[pairs[:, 0]], patient[pairs[:, 1]])
    return AucCI(
        **auc_with_ci(pairs[:, 2], scores, ctx.settings.bootstrap, ctx.settings.ci_level, seed, groups)
    )


def _hard_auc(ctx: EvalContext, verifier, first: torch.Tensor, plan: RunPlan, seed: int) -> AucCI | None:
    """Re-ID AUC of `verifier` on the run's hard pairs (first[i] vs the real test film j), or None
    when the test set has no matched negatives at all."""
    pairs = plan.hard_test_pairs
    if len(pairs) == 0 or pairs[:, 2].min() == pairs[:, 2].max():
        return None
    test = ctx.splits.test
    scores = verifier_scores(verifier, first, test.images, pairs, ctx.settings.device)
    return _pair_auc(ctx, test, pairs, scores, seed)


def _retrieval(ctx: EvalContext, verifier, first: torch.Tensor) -> Retrieval:
    test = ctx.splits.test
    return Retrieval(**retrieval_at_1(verifier, first, test.images, test.patient_ids, ctx.settings.device))


def _memorization(ctx: EvalContext, plan: RunPlan, verifier, first: torch.Tensor) -> Memorization:
    threshold = ctx.memorization_thresholds[plan.run]
    return Memorization(
        **memorization_rate(verifier, first, ctx.splits.train.images, threshold, ctx.settings.device)
    )


def _diagnosis(model, images: torch.Tensor, cohort: Cohort, device: str) -> Diagnosis:
    return Diagnosis(**diagnosis_report(model, images, cohort.labels, cohort.label_mask, device))


def _demographics(
    model,
    images: torch.Tensor,
    cohort: Cohort,
    trained_on: Cohort,
    device: str,
    fixed_answers: dict[str, int] | None = None,
) -> Demographics:
    """The attacker `model` (trained on the films of `trained_on`) on `images` of `cohort`."""
    report = demographics_report(
        model,
        images,
        cohort.age_group,
        cohort.sex,
        trained_on.age_group,
        trained_on.sex,
        device,
        fixed_answers,
    )
    return Demographics(age=Accuracy(**report["age"]), sex=Accuracy(**report["sex"]))


def _training(log: FitLog) -> TrainingLog:
    return TrainingLog(**log.as_dict())


def evaluate_real(ctx: EvalContext) -> RealResult:
    """The 'real data, unanonymized' column: every judge on real test images."""
    test, dev = ctx.splits.test, ctx.settings.device
    runs = []
    for plan, judge in zip(ctx.plans, ctx.judges, strict=True):
        scores = verifier_scores(judge.verifier, test.images, test.images, plan.test_pairs, dev)
        runs.append(
            RealRun(
                run=plan.run,
                reid=_pair_auc(ctx, test, plan.test_pairs, scores, derive_seed(plan.seed, "boot", "real")),
                diagnosis=_diagnosis(judge.diagnosis, test.images, test, dev),
                demographics=_demographics(judge.demographics, test.images, test, ctx.splits.train, dev),
                judge_training={name: TrainingLog(**log) for name, log in judge.logs.items()},
                reid_hard_naive=_hard_auc(
                    ctx, judge.verifier, test.images, plan, derive_seed(plan.seed, "boot_hard", "real")
                ),
                retrieval_naive=_retrieval(ctx, judge.verifier, test.images),
                memorization=_memorization(ctx, plan, judge.verifier, test.images),
            )
        )
    return RealResult(runs=runs, summary=summarize_real(runs))


def _anonymize(method: Method, cohort: Cohort, split: str, ctx: EvalContext, run: int = 0) -> torch.Tensor:
    """The method's outputs for a cohort; run 0's seeds are those of a single-run evaluation."""
    keys = (ctx.settings.seed, method.name, split) + ((run,) if run else ())
    out = method.anonymize(cohort, derive_seed(*keys), ctx.settings.progress)
    if out.shape != cohort.images.shape:
        raise ValueError(f"{method.name} returned {tuple(out.shape)} for {tuple(cohort.images.shape)} images")
    if not torch.isfinite(out).all():
        raise ValueError(f"{method.name} returned non-finite pixels")
    return out.float().clamp(-1.0, 1.0)


def evaluate_method(
    method: Method, ctx: EvalContext, workdir: Path | None = None
) -> tuple[MethodResult, dict]:
    """All measurements of one method; returns (result for the report, arrays for the figures)."""
    s, dev = ctx.settings, ctx.settings.device
    splits, train = ctx.splits, ctx.adaptive_train
    t0 = time.perf_counter()
    method.prepare(splits, dev, s.progress, workdir)
    prepare_s = time.perf_counter() - t0

    def anonymize_all(run: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(test, val, adaptive-train) outputs of a run, their time and count added to `timing`."""
        t = time.perf_counter()
        outputs = tuple(
            _anonymize(method, cohort, split, ctx, run)
            for cohort, split in ((splits.test, "test"), (splits.val, "val"), (train, "train"))
        )
        timing.anonymize_s += time.perf_counter() - t
        timing.anonymized_images += sum(len(o) for o in outputs)
        return outputs

    timing = MethodTiming(prepare_s=prepare_s, anonymize_s=0.0, anonymized_images=0)
    first = anonymize_all(0)

    test, val = splits.test, splits.val
    runs = []
    adaptive_models: dict[str, torch.nn.Module] = {}
    for plan, judge in zip(ctx.plans, ctx.judges, strict=True):
        anon_test, anon_val, anon_train = (
            anonymize_all(plan.run) if s.anonymize_per_run and plan.run > 0 else first
        )
        t0 = time.perf_counter()
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
            StrongestReid(**asdict(retrained), attacker="adaptive")
            if adaptive_val >= naive_val
            else StrongestReid(**asdict(naive), attacker="naive")
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
        fixed_answers = commonest_where_better(
            demo_adaptive, train.age_group, train.sex, (anon_val, val.age_group, val.sex), dev
        )
        hard_seed = derive_seed(plan.seed, "boot_hard", method.name)
        runs.append(
            MethodRun(
                run=plan.run,
                reid_naive=NaiveReid(**asdict(naive), val_auc=float(naive_val)),
                reid_adaptive=AdaptiveReid(**asdict(retrained), training=_training(log)),
                reid_strongest=strongest,
                diagnosis=_diagnosis(judge.diagnosis, anon_test, test, dev),
                demographics_naive=_demographics(judge.demographics, anon_test, test, splits.train, dev),
                demographics_adaptive=AdaptiveDemographics(
                    **vars(_demographics(demo_adaptive, anon_test, test, train, dev, fixed_answers)),
                    training=_training(demo_log),
                    fixed_answers=fixed_answers,
                ),
                reid_hard_naive=_hard_auc(ctx, judge.verifier, anon_test, plan, hard_seed),
                retrieval_naive=_retrieval(ctx, judge.verifier, anon_test),
                memorization=_memorization(ctx, plan, judge.verifier, anon_test),
                reid_hard_adaptive=_hard_auc(ctx, adaptive, anon_test, plan, hard_seed),
                retrieval_adaptive=_retrieval(ctx, adaptive, anon_test),
            )
        )
        if plan.run == 0:
            adaptive_models = {"verifier": adaptive, "demographics": demo_adaptive}
        timing.attacks_s += time.perf_counter() - t0
    anon_test = first[0]  # run 0's outputs: the image quality and the figures

    t0 = time.perf_counter()
    quality = image_quality(ctx, anon_test)
    timing.quality_s = time.perf_counter() - t0

    artifacts = figure_arrays(ctx, anon_test, adaptive_models)
    result = MethodResult(
        method=MethodInfo(**method.describe()),
        runs=runs,
        summary=summarize_method(runs),
        quality=quality,
        timing=timing,
        adaptive_train=CohortSize(images=len(train), patients=len(train.patients)),
    )
    return result, artifacts


def image_quality(ctx: EvalContext, anon_test: torch.Tensor) -> Quality:
    """SSIM vs the original, FD on the diagnosis network's features, with a real-vs-real floor,
    and the outputs' fine detail as a share of the real test films'.

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
    return Quality(
        ssim_mean=float(ssim.mean()),
        ssim_std=float(ssim.std()),
        fd_name=f"FD-{backbone}",
        fd=frechet_distance(real_feat, anon_feat),
        fd_real_reference=frechet_distance(ref_feat, real_feat),
        fd_samples=int(len(test)),
        detail=detail_share(test.images, anon_test),
    )


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
