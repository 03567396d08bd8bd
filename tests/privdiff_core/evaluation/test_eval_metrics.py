import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from privdiff_core.attributes import FINDINGS
from privdiff_core.evaluation import metrics
from privdiff_core.evaluation.metrics import (
    accuracy_vs_chance,
    auc_with_ci,
    mean_std,
    per_finding_auc,
    weighted_aucs,
)


def test_auc_is_sklearns_and_lies_inside_its_bootstrap_interval():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 200)
    scores = y + rng.normal(0, 1.0, size=400)
    out = auc_with_ci(y, scores, n_boot=300, seed=1)
    assert out["auc"] == roc_auc_score(y, scores)
    assert out["ci_low"] < out["auc"] < out["ci_high"]
    assert 0.02 < out["ci_high"] - out["ci_low"] < 0.2


def test_uninformative_scores_have_an_interval_around_one_half():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 500)
    out = auc_with_ci(y, rng.random(1000), n_boot=300)
    assert out["ci_low"] < 0.5 < out["ci_high"]


def test_per_finding_auc_skips_one_class_findings_and_ignores_masked_labels():
    rng = np.random.default_rng(0)
    n = 200
    labels = np.zeros((n, len(FINDINGS)))
    mask = np.zeros((n, len(FINDINGS)), dtype=bool)
    labels[:, 0] = rng.random(n) < 0.5
    mask[:, 0] = True
    mask[:, 1] = True  # Cardiomegaly: all known labels negative -> no AUC
    probs = rng.random((n, len(FINDINGS)))
    probs[:, 0] = labels[:, 0] * 0.5 + 0.5 * probs[:, 0]
    out = per_finding_auc(labels, mask, probs)
    assert out["per_finding"]["Atelectasis"] == roc_auc_score(labels[:, 0], probs[:, 0])
    assert out["per_finding"]["Cardiomegaly"] is None
    assert "only negative" in out["skipped"]["Cardiomegaly"]
    assert "no known labels" in out["skipped"]["Hernia"]
    assert out["mean_auc"] == out["per_finding"]["Atelectasis"]
    # Labels hidden by the mask do not count: changing them changes nothing.
    garbage = labels.copy()
    garbage[:, 2:] = 1 - garbage[:, 2:]
    assert per_finding_auc(garbage, mask, probs) == out


def test_accuracy_ignores_unknown_and_chance_answers_the_training_films_commonest_class():
    targets = np.array([0, 0, 0, 1, -1, -1])
    preds = np.array([0, 1, 0, 1, 1, 1])
    out = accuracy_vs_chance(targets, preds, 2, train_targets=np.array([0, 0, 1, -1, -1, -1]))
    assert out["accuracy"] == 0.75 and out["chance"] == 0.75 and out["n"] == 4
    assert out["chance_class"] == 0
    # The training films' commonest class (3; unknown -1 not counted), not the test set's (1):
    # what an attacker that reads nothing would answer.
    test = np.array([1, 1, 1, 3, 0, -1])
    out = accuracy_vs_chance(test, np.ones(6, dtype=int), 4, train_targets=np.array([3, 3, 1, -1, -1, -1]))
    assert out["chance_class"] == 3 and out["chance"] == 0.2 and out["accuracy"] == 0.6
    assert accuracy_vs_chance(test, test, 4, train_targets=np.array([-1]))["chance"] is None
    # Balanced: the mean recall of the classes present (1: 3/3, 3: 0/1, 0: 0/1); any answer blind to
    # the class scores 1 / 3 of them, the constant 1 included, however many 1s the test set holds.
    assert out["balanced_accuracy"] == pytest.approx(1 / 3) and out["balanced_chance"] == pytest.approx(1 / 3)
    assert accuracy_vs_chance(test, test, 4, train_targets=np.array([3]))["balanced_accuracy"] == 1.0


def test_mean_std_over_runs():
    assert mean_std([0.5, 0.7]) == {"mean": 0.6, "std": 0.09999999999999998, "runs": 2, "values": [0.5, 0.7]}
    assert mean_std([None])["mean"] is None


def test_patient_bootstrap_is_wider_when_pairs_reuse_few_patients():
    """400 pairs drawn from 10 patients carry far less evidence than 400 independent pairs."""
    rng = np.random.default_rng(0)
    gi, gj = rng.integers(0, 10, 400), rng.integers(0, 10, 400)
    y = (gi == gj).astype(int)
    y[:40] = 1
    gj[:40] = gi[:40]
    patient_effect = rng.normal(0, 1, 10)
    scores = y + patient_effect[gi] + 0.5 * rng.normal(size=400)
    by_pairs = auc_with_ci(y, scores, n_boot=200)
    by_patients = auc_with_ci(y, scores, n_boot=200, groups=(gi, gj))
    assert by_patients["auc"] == by_pairs["auc"]
    assert by_patients["bootstrap"] == "patients"
    width = lambda r: r["ci_high"] - r["ci_low"]  # noqa: E731
    assert width(by_patients) > 1.5 * width(by_pairs)


def test_weighted_aucs_are_roc_auc_score_with_sample_weight_ties_included():
    """Coarse scores (many ties), integer and fractional weights, zero weights: each row's AUC is
    what scikit-learn integrates for that weighting."""
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 300)
    scores = np.round(y * 0.4 + rng.normal(0, 1, 300), 1)
    weights = np.vstack([rng.poisson(1.0, (20, 300)), rng.random((5, 300))]).astype(float)
    weights[:, :3] = 0.0
    expected = [roc_auc_score(y, scores, sample_weight=w) for w in weights]
    np.testing.assert_allclose(weighted_aucs(y, scores, weights), expected, rtol=0, atol=1e-12)


def _auc_ci_one_draw_at_a_time(y, scores, n_boot, level, seed, groups=None):
    """The bootstrap as first written: one roc_auc_score call per draw."""
    rng = np.random.default_rng(seed)
    boot = []
    if groups is not None:
        gi, gj = groups
        n_groups = int(max(gi.max(), gj.max())) + 1
    while len(boot) < n_boot:
        if groups is None:
            idx = rng.integers(0, len(y), len(y))
            yy, ss, w = y[idx], scores[idx], None
        else:
            m = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups)).astype(float)
            weight = np.where(gi == gj, m[gi], m[gi] * m[gj])
            keep = weight > 0
            yy, ss, w = y[keep], scores[keep], weight[keep]
        if len(yy) == 0 or yy.min() == yy.max():
            continue
        boot.append(roc_auc_score(yy, ss, sample_weight=w))
    alpha = (1.0 - level) / 2
    return np.quantile(boot, [alpha, 1 - alpha])


@pytest.mark.parametrize("by_patients", [False, True])
@pytest.mark.parametrize("draws_at_once", [7, None])
def test_bootstrap_interval_is_the_one_draw_at_a_time_interval(by_patients, draws_at_once, monkeypatch):
    """Scoring the draws together changes no number: same draws (redraws of one-class draws
    included: 6 patients, few positive pairs), same interval, in one chunk or in chunks of 7."""
    if draws_at_once is not None:
        monkeypatch.setattr(metrics, "_BOOT_CELLS", 120 * draws_at_once)
    rng = np.random.default_rng(5)
    gi, gj = rng.integers(0, 6, 120), rng.integers(0, 6, 120)
    y = ((gi == gj) & (rng.random(120) < 0.3)).astype(int)
    scores = np.round(y + rng.normal(0, 1, 120), 1)
    groups = (gi, gj) if by_patients else None
    out = auc_with_ci(y, scores, n_boot=600, level=0.9, seed=7, groups=groups)
    low, high = _auc_ci_one_draw_at_a_time(y, scores, 600, 0.9, 7, groups)
    assert out["ci_low"] == pytest.approx(low, abs=1e-12)
    assert out["ci_high"] == pytest.approx(high, abs=1e-12)
