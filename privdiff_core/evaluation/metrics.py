"""Metrics of the report, all from scikit-learn: ROC AUC (with a bootstrap CI), per-finding AUC,
accuracy beside the chance level a constant guess would reach.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

from privdiff_core.attributes import FINDINGS


def auc_with_ci(
    y_true: np.ndarray,
    scores: np.ndarray,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    groups: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict:
    """ROC AUC and a percentile bootstrap confidence interval.

    Without `groups` the pairs are resampled as if independent. Verification pairs are not: the
    same test images (and patients) recur in many pairs, so resampling pairs would understate the
    uncertainty. With `groups` = (patient of image i, patient of image j) as integer codes, the
    *patients* are resampled instead (a cluster bootstrap): each draw gives every patient a
    multiplicity m, and a pair counts m_i * m_j times (m_i when both images are one patient's).
    Draws left with one class are redrawn.

    Every draw is a weighting of the same pairs, so the draws are scored together
    (`weighted_aucs`) rather than by one roc_auc_score call each: the same intervals, and the main
    job's light evaluation (18 intervals of 500 draws over 1000 pairs) no longer spends ~35 s in them
    (0.04 s an interval against ~2).
    """
    y_true = np.asarray(y_true).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    if len(np.unique(y_true)) < 2:
        raise ValueError("ROC AUC needs both classes among the test pairs")
    auc = float(roc_auc_score(y_true, scores))
    rng = np.random.default_rng(seed)
    n = len(y_true)
    if groups is not None:
        gi, gj = (np.asarray(g, dtype=np.int64) for g in groups)
        n_groups = int(max(gi.max(), gj.max())) + 1
        same = gi == gj
    boot: list[np.ndarray] = []
    kept = 0
    while kept < n_boot:
        # A chunk of draws at a time bounds the memory (draws x pairs); the generator yields the same
        # stream as one draw per call, so the CI does not depend on the chunk size.
        size = min(max(1, _BOOT_CELLS // n), n_boot - kept)
        if groups is None:
            idx = rng.integers(0, n, (size, n))
            weight = np.stack([np.bincount(row, minlength=n) for row in idx]).astype(np.float64)
        else:
            m = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=size).astype(np.float64)
            weight = np.where(same, m[:, gi], m[:, gi] * m[:, gj])
        positive = (weight * (y_true == 1)).sum(axis=1)
        negative = (weight * (y_true == 0)).sum(axis=1)
        both = (positive > 0) & (negative > 0)
        drawn = weighted_aucs(y_true, scores, weight[both])
        boot.append(drawn[: n_boot - kept])
        kept += len(boot[-1])
    alpha = (1.0 - level) / 2
    low, high = np.quantile(np.concatenate(boot), [alpha, 1 - alpha]) if boot else (auc, auc)
    return {
        "auc": auc,
        "ci_low": float(low),
        "ci_high": float(high),
        "ci_level": level,
        "n": int(n),
        "bootstrap": "patients" if groups is not None else "pairs",
    }


_BOOT_CELLS = 4_000_000  # draws x pairs scored at once: ~32 MB per float64 array


def weighted_aucs(y_true: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of one set of `scores` under each row of `weights` (draws x samples) at once.

    The weighted Mann-Whitney statistic: the weight of (positive, negative) pairs the scores
    order correctly, ties counted half, over the weight of all such pairs; this is the area
    under the ROC curve that roc_auc_score(..., sample_weight=row) integrates (the tests check
    both agree). Every row needs positive and negative weight.
    """
    order = np.argsort(scores, kind="stable")
    ranked = scores[order]
    positive = np.asarray(y_true)[order] == 1
    weight = np.asarray(weights, dtype=np.float64)[:, order]
    positive_weight = np.where(positive, weight, 0.0)
    negative_weight = weight - positive_weight
    # Negative weight of the first k ranked samples in column k (column 0: none).
    cumulative = np.concatenate([np.zeros((len(weight), 1)), np.cumsum(negative_weight, axis=1)], axis=1)
    # Runs of tied scores, ranked[start:end]: the negatives below a sample's run score against it
    # fully, those inside its run half.
    new_run = np.r_[True, ranked[1:] != ranked[:-1]]
    starts = np.flatnonzero(new_run)
    ends = np.r_[starts[1:], len(ranked)]
    run = np.cumsum(new_run) - 1
    below = cumulative[:, starts[run]]
    tied = cumulative[:, ends[run]] - below
    correct = (positive_weight * (below + 0.5 * tied)).sum(axis=1)
    return correct / (positive_weight.sum(axis=1) * negative_weight.sum(axis=1))


def per_finding_auc(
    labels: np.ndarray, label_mask: np.ndarray, probs: np.ndarray, names: Sequence[str] = FINDINGS
) -> dict:
    """AUC per finding over the images whose label is known, and their mean.

    A finding whose known test labels are all one class has no AUC: it is listed in `skipped`
    with the reason and left out of the mean, never filled in.
    """
    labels = np.asarray(labels)
    mask = np.asarray(label_mask, dtype=bool)
    probs = np.asarray(probs, dtype=np.float64)
    per: dict[str, float | None] = {}
    skipped: dict[str, str] = {}
    for k, name in enumerate(names):
        known = mask[:, k]
        y = labels[known, k].astype(int)
        if known.sum() == 0:
            per[name], skipped[name] = None, "no known labels in the test set"
        elif y.min() == y.max():
            per[name], skipped[name] = (
                None,
                f"only {'positive' if y[0] else 'negative'} cases in the test set",
            )
        else:
            per[name] = float(roc_auc_score(y, probs[known, k]))
    valid = [v for v in per.values() if v is not None]
    return {
        "mean_auc": float(np.mean(valid)) if valid else None,
        "per_finding": per,
        "skipped": skipped,
        "n_findings": len(valid),
    }


def balanced_accuracy(targets: np.ndarray, predictions: np.ndarray) -> float:
    """The mean of the per-class recalls over the classes in `targets` (scikit-learn's)."""
    with warnings.catch_warnings():
        # An answered class that no target has adds nothing: scikit-learn leaves it out, as we
        # want, and warns each time (a constant answer of such a class would warn every run).
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return float(balanced_accuracy_score(targets, predictions))


def accuracy_vs_chance(
    targets: np.ndarray, predictions: np.ndarray, num_classes: int, train_targets: np.ndarray
) -> dict:
    """Accuracy over known targets (-1 = unknown is ignored) and the chance level.

    Chance is what an attacker that reads nothing scores: always answering the most frequent class
    of the films it was trained on (`train_targets`), `chance_class`, scored on these targets
    (scikit-learn's `DummyClassifier(strategy="most_frequent")`). The test set's own majority
    rate is not: no attacker knows it, and it can lie far above (the demo's light evaluation draws
    160 test films of which 50% are age group 1; the training films' commonest group is 2, 30% of
    those 160 films).

    Balanced accuracy (the mean of the per-class recalls over the classes present) is immune to
    both that and an attacker's bias: any answer that does not depend on the true class, a constant
    or a guess, scores 1 / (classes present), `balanced_chance`, on any test set. An attacker that
    happens to favour the class a small test sample over-represents scores above `chance` there
    without reading anything; balanced accuracy says whether it reads the attribute.
    """
    targets = np.asarray(targets)
    predictions = np.asarray(predictions)
    train_targets = np.asarray(train_targets)
    known, train_known = targets >= 0, train_targets[train_targets >= 0]
    if known.sum() == 0 or len(train_known) == 0:
        return {
            "accuracy": None,
            "chance": None,
            "n": int(known.sum()),
            "chance_class": None,
            "balanced_accuracy": None,
            "balanced_chance": None,
        }
    t, p = targets[known], predictions[known]
    commonest = int(np.bincount(train_known, minlength=num_classes).argmax())
    return {
        "accuracy": float(accuracy_score(t, p)),
        "chance": float((t == commonest).mean()),
        "n": int(known.sum()),
        "chance_class": commonest,
        "balanced_accuracy": balanced_accuracy(t, p),
        "balanced_chance": 1.0 / len(np.unique(t)),
    }


def mean_std(values: Sequence[float | None]) -> dict:
    """Mean and (population) standard deviation over independent runs, as the paper reports them."""
    vals = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if len(vals) == 0:
        return {"mean": None, "std": None, "runs": 0, "values": []}
    return {
        "mean": float(vals.mean()),
        "std": float(vals.std()),
        "runs": int(len(vals)),
        "values": vals.tolist(),
    }
