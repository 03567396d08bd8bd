"""The measurements as types: what `engine` produces and `report`, `limits` and `figures` read.

Every field is named once, here: a renamed or missing field is an AttributeError (or a TypeError
where a result is built), never a silent "–" in the report. Results go to JSON with
`dataclasses.asdict` (report.json, methods/<name>/result.json) and come back with `from_dict`
(a cached method result), which refuses unknown and missing fields.

Numbers are fractions (AUC 0.5 = chance); None where a measurement does not exist (no hard
negatives, a finding with one class only).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from privdiff_core.attributes import FINDINGS

from .metrics import mean_std

if TYPE_CHECKING:
    from .engine import EvaluationSettings

T = TypeVar("T")


# ------------------------------------------------------------------ one measurement


@dataclass
class MeanStd:
    """Mean and population std over independent runs (`metrics.mean_std`)."""

    mean: float | None
    std: float | None
    runs: int
    values: list[float]

    @classmethod
    def of(cls, values: Sequence[float | None]) -> MeanStd:
        return cls(**mean_std(values))


@dataclass
class AucCI:
    """ROC AUC with its bootstrap confidence interval (`metrics.auc_with_ci`)."""

    auc: float
    ci_low: float
    ci_high: float
    ci_level: float
    n: int
    bootstrap: str


@dataclass
class TrainingLog:
    """How an attacker's training went (`fitting.FitLog.as_dict`)."""

    best_step: int
    best_val: float | None
    steps_run: int
    final_loss: float | None


@dataclass
class NaiveReid(AucCI):
    """The real-trained verifier on anonymized linkage pairs, with its validation AUC."""

    val_auc: float


@dataclass
class AdaptiveReid(AucCI):
    """The verifier retrained on anonymized linkage pairs."""

    training: TrainingLog


@dataclass
class StrongestReid(AucCI):
    """Whichever attacker validated better ("naive" or "adaptive"), scored on test."""

    attacker: str


@dataclass
class Diagnosis:
    """Per-finding AUC of the diagnosis judge (`metrics.per_finding_auc`)."""

    mean_auc: float | None
    per_finding: dict[str, float | None]
    skipped: dict[str, str]
    n_findings: int


@dataclass
class Accuracy:
    """An attribute attacker's accuracy beside chance: always answering `chance_class`, the commonest
    class of the attacker's training films (`metrics.accuracy_vs_chance`)."""

    accuracy: float | None
    chance: float | None
    n: int
    chance_class: int | None
    balanced_accuracy: float | None  # mean recall over the classes present
    balanced_chance: float | None  # 1 / classes present: what any answer blind to the class scores


@dataclass
class Demographics:
    age: Accuracy
    sex: Accuracy


@dataclass
class AdaptiveDemographics(Demographics):
    training: TrainingLog
    # Heads that answered one class for every film, {head: class}: the commonest class of the
    # training films was right more often on validation films than the trained head
    # (`attackers.commonest_where_better`).
    fixed_answers: dict[str, int]


@dataclass
class Retrieval:
    """Precision@1 among the real test films (`linkage.retrieval_at_1`)."""

    precision_at_1: float | None
    chance: float | None
    queries: int


@dataclass
class Memorization:
    """Share of films matching a training film beyond the threshold (`linkage.memorization_rate`)."""

    rate: float
    threshold: dict[str, float]
    films: int
    max_score: float
    min_distance: float


# ------------------------------------------------------------------ one run


@dataclass
class RealRun:
    """Every judge on the real test images, one run."""

    run: int
    reid: AucCI
    diagnosis: Diagnosis
    demographics: Demographics
    judge_training: dict[str, TrainingLog]
    reid_hard_naive: AucCI | None
    retrieval_naive: Retrieval
    memorization: Memorization


@dataclass
class MethodRun:
    """Every attack and judge on one method's anonymized test images, one run."""

    run: int
    reid_naive: NaiveReid
    reid_adaptive: AdaptiveReid
    reid_strongest: StrongestReid
    diagnosis: Diagnosis
    demographics_naive: Demographics
    demographics_adaptive: AdaptiveDemographics
    reid_hard_naive: AucCI | None
    retrieval_naive: Retrieval
    memorization: Memorization
    reid_hard_adaptive: AucCI | None
    retrieval_adaptive: Retrieval


# ------------------------------------------------------------------ summaries over runs


@dataclass
class Summary:
    """What real data and every method share, each as mean ± std over the runs."""

    diagnosis_mean_auc: MeanStd
    age_accuracy: MeanStd
    sex_accuracy: MeanStd
    age_chance: MeanStd
    sex_chance: MeanStd
    age_balanced_accuracy: MeanStd
    sex_balanced_accuracy: MeanStd
    age_balanced_chance: MeanStd
    per_finding_auc: dict[str, MeanStd]
    skipped_findings: dict[str, str]
    reid_hard_naive_auc: MeanStd
    retrieval_naive_p1: MeanStd
    retrieval_chance: MeanStd
    memorization_rate: MeanStd


@dataclass
class RealSummary(Summary):
    reid_auc: MeanStd


@dataclass
class MethodSummary(Summary):
    reid_naive_auc: MeanStd
    reid_adaptive_auc: MeanStd
    reid_strongest_auc: MeanStd
    age_accuracy_adaptive: MeanStd
    sex_accuracy_adaptive: MeanStd
    age_balanced_accuracy_adaptive: MeanStd
    sex_balanced_accuracy_adaptive: MeanStd
    reid_hard_adaptive_auc: MeanStd
    retrieval_adaptive_p1: MeanStd

    def best_accuracy(self, attribute: str, balanced: bool = False) -> MeanStd:
        """The stronger of the real-trained and the retrained attacker of "age" or "sex"
        (balanced accuracy with `balanced`)."""
        naive, adaptive = {
            ("age", False): (self.age_accuracy, self.age_accuracy_adaptive),
            ("sex", False): (self.sex_accuracy, self.sex_accuracy_adaptive),
            ("age", True): (self.age_balanced_accuracy, self.age_balanced_accuracy_adaptive),
            ("sex", True): (self.sex_balanced_accuracy, self.sex_balanced_accuracy_adaptive),
        }[(attribute, balanced)]
        if adaptive.mean is not None and (naive.mean is None or adaptive.mean >= naive.mean):
            return adaptive
        return naive


def _auc(value: AucCI | None) -> float | None:
    return None if value is None else value.auc


def _shared_summary(runs: Sequence[RealRun | MethodRun], demographics: Callable[[Any], Demographics]) -> dict:
    """The `Summary` fields of some runs; `demographics` picks the attribute attacker to summarise."""

    def over(get: Callable[[Any], float | None]) -> MeanStd:
        return MeanStd.of([get(run) for run in runs])

    return {
        "diagnosis_mean_auc": over(lambda r: r.diagnosis.mean_auc),
        "age_accuracy": over(lambda r: demographics(r).age.accuracy),
        "sex_accuracy": over(lambda r: demographics(r).sex.accuracy),
        "age_chance": over(lambda r: demographics(r).age.chance),
        "sex_chance": over(lambda r: demographics(r).sex.chance),
        "age_balanced_accuracy": over(lambda r: demographics(r).age.balanced_accuracy),
        "sex_balanced_accuracy": over(lambda r: demographics(r).sex.balanced_accuracy),
        "age_balanced_chance": over(lambda r: demographics(r).age.balanced_chance),
        "per_finding_auc": {
            name: over(lambda r, name=name: r.diagnosis.per_finding.get(name)) for name in FINDINGS
        },
        "skipped_findings": dict(runs[0].diagnosis.skipped) if runs else {},
        "reid_hard_naive_auc": over(lambda r: _auc(r.reid_hard_naive)),
        "retrieval_naive_p1": over(lambda r: r.retrieval_naive.precision_at_1),
        "retrieval_chance": over(lambda r: r.retrieval_naive.chance),
        "memorization_rate": over(lambda r: r.memorization.rate),
    }


def summarize_real(runs: Sequence[RealRun]) -> RealSummary:
    return RealSummary(
        reid_auc=MeanStd.of([r.reid.auc for r in runs]),
        **_shared_summary(runs, lambda r: r.demographics),
    )


def summarize_method(runs: Sequence[MethodRun]) -> MethodSummary:
    def over(get: Callable[[MethodRun], float | None]) -> MeanStd:
        return MeanStd.of([get(run) for run in runs])

    return MethodSummary(
        reid_naive_auc=over(lambda r: r.reid_naive.auc),
        reid_adaptive_auc=over(lambda r: r.reid_adaptive.auc),
        reid_strongest_auc=over(lambda r: r.reid_strongest.auc),
        age_accuracy_adaptive=over(lambda r: r.demographics_adaptive.age.accuracy),
        sex_accuracy_adaptive=over(lambda r: r.demographics_adaptive.sex.accuracy),
        age_balanced_accuracy_adaptive=over(lambda r: r.demographics_adaptive.age.balanced_accuracy),
        sex_balanced_accuracy_adaptive=over(lambda r: r.demographics_adaptive.sex.balanced_accuracy),
        reid_hard_adaptive_auc=over(lambda r: _auc(r.reid_hard_adaptive)),
        retrieval_adaptive_p1=over(lambda r: r.retrieval_adaptive.precision_at_1),
        **_shared_summary(runs, lambda r: r.demographics_naive),
    )


# ------------------------------------------------------------------ one method, real data, the report


@dataclass
class PrivacyBudget:
    """The differential-privacy budget a model's training stated in its manifest's metadata (a
    federated DP run writes epsilon at delta; server/privacy.py)."""

    dp: bool | None  # True: trained with DP (epsilon below); False: without; None: not stated
    epsilon: float | None = None
    delta: float | None = None
    max_epsilon: float | None = None  # the configured budget, if any
    budget_spent: bool | None = None  # training stopped because the next round would exceed it


@dataclass
class MethodInfo:
    """`Method.describe()`: who the method is and how it was set up."""

    name: str
    label: str
    kind: str
    settings: dict[str, Any]
    training: dict[str, Any] | None = None  # methods trained for the evaluation (deformation)
    manifest: dict[str, Any] | None = None  # anonymizer models: versions, hashes, config
    curve: str | None = None  # anonymizer models: strengths of one model and mode form a curve
    privacy: PrivacyBudget | None = None  # anonymizer models: the DP budget of their training


@dataclass
class Quality:
    """SSIM against the originals, a Fréchet distance with its real-vs-real floor, and the fine
    detail the outputs keep (quality.detail_share; None in results from before it was measured)."""

    ssim_mean: float
    ssim_std: float
    fd_name: str
    fd: float
    fd_real_reference: float
    fd_samples: int
    detail: float | None = None


@dataclass
class MethodTiming:
    prepare_s: float
    anonymize_s: float
    anonymized_images: int
    attacks_s: float = 0.0
    quality_s: float = 0.0
    total_s: float = 0.0  # set by the pipeline, which also counts what the engine does not


@dataclass
class CohortSize:
    images: int
    patients: int


@dataclass
class RealResult:
    runs: list[RealRun]
    summary: RealSummary


@dataclass
class MethodResult:
    method: MethodInfo
    runs: list[MethodRun]
    summary: MethodSummary
    quality: Quality
    timing: MethodTiming
    adaptive_train: CohortSize


@dataclass
class MethodLimits:
    """One method's distance to the limits (fractions of AUC; positive = worse)."""

    reid_adaptive_auc: float | None
    reid_above_floor: float | None
    diagnosis_auc: float | None
    diagnosis_below_real: float | None
    diagnosis_below_ceiling: float | None


@dataclass
class Limits:
    """The oracle's privacy floor and utility ceiling, real data's diagnosis AUC (`limits.limits`)."""

    oracle: str | None
    privacy_floor: float | None
    utility_ceiling: float | None
    real_diagnosis: float | None
    methods: dict[str, MethodLimits]


@dataclass
class Report:
    """Everything report.json holds (written with `asdict`) and report.md renders."""

    created: str
    command: str
    data: dict[str, Any]  # root, image_size, fingerprint, splits: {split: {images, patients}}
    settings: EvaluationSettings
    seeds: dict[str, Any]
    anonymizer_conditions: str
    adaptive_train: CohortSize
    judges_from_cache: list[bool]
    real: RealResult
    methods: dict[str, MethodResult]
    limits: Limits
    config: dict[str, Any]
    versions: dict[str, str | None]
    timing: dict[str, float]  # judges_s, total_s
    figures: dict[str, str] = field(default_factory=dict)  # title -> file name
    tsne_silhouettes: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ back from JSON


def from_dict(cls: type[T], data: Any) -> T:
    """A dataclass (nested ones, lists, dicts, optionals included) from what `asdict` wrote.

    Raises TypeError naming the class and field when a field is missing or unknown, so an
    outdated cached result is recomputed instead of read wrong.
    """
    return _convert(cls, data, cls.__name__)


def _convert(kind: Any, value: Any, where: str) -> Any:
    if value is None:
        return None
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise TypeError(f"{where}: expected an object, got {type(value).__name__}")
        hints = typing.get_type_hints(kind)
        names = {f.name for f in dataclasses.fields(kind) if f.init}
        unknown = set(value) - names
        if unknown:
            raise TypeError(f"{where}: unknown field(s) {sorted(unknown)}")
        return kind(**{k: _convert(hints[k], v, f"{where}.{k}") for k, v in value.items()})
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, where) if len(inner) == 1 else value
    if origin is list:
        return [_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        return {k: _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    return value
