import numpy as np
from sklearn.metrics import roc_auc_score

from privdiff_core.attributes import FINDINGS
from privdiff_core.evaluation.metrics import accuracy_vs_chance, auc_with_ci, mean_std, per_finding_auc


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


def test_accuracy_ignores_unknown_and_chance_is_the_majority_rate():
    targets = np.array([0, 0, 0, 1, -1, -1])
    preds = np.array([0, 1, 0, 1, 1, 1])
    out = accuracy_vs_chance(targets, preds, 2)
    assert out["accuracy"] == 0.75 and out["chance"] == 0.75 and out["n"] == 4


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
