"""Finding thresholds per sex (issue 10: the generative mode draws the findings its estimator calls,
and an estimator that calls a finding more often in one sex makes the anonymized film tell the sex:
on the demo's main job a classifier read sex from the calls at 0.61 against a majority of 0.52)."""

import json

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_curve
from sklearn.model_selection import cross_val_score

from privdiff_core.attributes import NUM_FINDINGS, NUM_SEXES
from privdiff_core.config import load_config
from privdiff_core.model.conditioning import Conditions
from privdiff_core.model.privdiff_net import FINDING_CALLS, MIN_FILMS_PER_SEX, pooled_thresholds_as_rows
from privdiff_core.signing import sha256_file
from privdiff_core.training import build_models

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

FILMS = 400
MALE, FEMALE = 0, 1  # Conditions.sex


def build(calls: str = "prevalence"):
    torch.manual_seed(0)
    return build_models(load_config("tiny", ["device=cpu", f"encoder.finding_calls={calls}"]))


@pytest.fixture
def models():
    return build()


def sex_biased_estimates(seed: int = 0, prevalence: tuple[float, float] = (0.1, 0.3)):
    """Labels independent of sex (each finding's prevalence drawn from `prevalence`), and estimates
    that see the finding but also rise for women: on the first 5 findings by +0.25, as an estimator
    that reads sex-linked anatomy."""
    rng = np.random.default_rng(seed)
    sex = rng.integers(0, NUM_SEXES, FILMS)
    labels = (rng.random((FILMS, NUM_FINDINGS)) < rng.uniform(*prevalence, NUM_FINDINGS)).astype(np.float32)
    bias = np.zeros(NUM_FINDINGS)
    bias[:5] = 0.25
    estimates = 0.25 * labels + 0.15 * rng.standard_normal((FILMS, NUM_FINDINGS))
    estimates = 1 / (1 + np.exp(-(estimates + np.outer(sex == FEMALE, bias) - 0.5) * 6))
    return torch.from_numpy(labels), torch.from_numpy(sex), torch.from_numpy(estimates.astype(np.float32))


def measure(models, labels, sex, estimates, monkeypatch) -> np.ndarray:
    monkeypatch.setattr(models.encoder, "estimate", lambda images: {"diagnosis": estimates[: len(images)]})
    images = torch.zeros(len(labels), 1, 8, 8)  # the patched estimator does not look at them
    known = torch.ones_like(labels, dtype=torch.bool)
    return models.measure_finding_thresholds(images, labels, known, sex, batch_size=len(labels)).numpy()


def calls(estimates: torch.Tensor, sex: torch.Tensor, thresholds: np.ndarray) -> np.ndarray:
    return (estimates.numpy() >= thresholds[sex.numpy()]).astype(float)


def youden(called: np.ndarray, labels: torch.Tensor) -> float:
    truth = labels.numpy().astype(bool)
    per_finding = [
        called[truth[:, k], k].mean() - called[~truth[:, k], k].mean() for k in range(NUM_FINDINGS)
    ]
    return float(np.mean(per_finding))


def sex_accuracy(called: np.ndarray, sex: torch.Tensor) -> float:
    return float(cross_val_score(LogisticRegression(max_iter=1000), called, sex.numpy(), cv=5).mean())


def pooled_youden_calls(labels: torch.Tensor, estimates: torch.Tensor) -> np.ndarray:
    """The calls before the rows per sex: each finding at the Youden threshold of all films."""
    cuts = []
    for k in range(NUM_FINDINGS):
        fpr, tpr, cut = roc_curve(labels[:, k].numpy(), estimates[:, k].numpy())
        cuts.append(min(cut[int((tpr - fpr).argmax())], 1.0))
    return (estimates.numpy() >= np.array(cuts)).astype(float)


@pytest.mark.parametrize("rule", FINDING_CALLS)
def test_calls_are_as_frequent_in_both_sexes_and_no_longer_tell_the_sex(rule, monkeypatch):
    labels, sex, estimates = sex_biased_estimates()
    thresholds = measure(build(rule), labels, sex, estimates, monkeypatch)
    assert thresholds.shape == (NUM_SEXES, NUM_FINDINGS)
    before, after = pooled_youden_calls(labels, estimates), calls(estimates, sex, thresholds)
    women, men = sex.numpy() == FEMALE, sex.numpy() == MALE
    gap_before = np.abs(before[women].mean(0) - before[men].mean(0))[:5]
    gap_after = np.abs(after[women].mean(0) - after[men].mean(0))
    assert gap_before.min() > 0.15  # the biased findings: called far more often in women
    assert gap_after.max() < 0.03  # each finding called in the same share of both sexes
    # as often as the rule says: the pooled Youden call's share, or the finding's prevalence
    share = before.mean(0) if rule == "youden" else labels.numpy().mean(0)
    np.testing.assert_allclose(after.mean(0), share, atol=0.02)
    assert sex_accuracy(before, sex) > 0.7
    assert sex_accuracy(after, sex) < 0.6
    if rule == "youden":
        assert youden(after, labels) > youden(before, labels) - 0.03  # the calls stay as informative


def test_prevalence_calls_as_many_findings_per_film_as_the_films_have(monkeypatch):
    """Youden's threshold calls a faint finding in far more films than have it (the demo's main job:
    4.3 findings per film, truly 1.4), and the generative mode then draws films unlike any the
    denoiser learned; "prevalence" calls each in the share of films that have it."""
    labels, sex, estimates = sex_biased_estimates(prevalence=(0.04, 0.17))  # the demo's range
    truly = labels.numpy().sum(1).mean()
    by_youden = calls(estimates, sex, measure(build("youden"), labels, sex, estimates, monkeypatch))
    by_prevalence = calls(estimates, sex, measure(build("prevalence"), labels, sex, estimates, monkeypatch))
    assert by_youden.sum(1).mean() > 1.5 * truly
    assert abs(by_prevalence.sum(1).mean() - truly) < 0.1 * truly
    assert youden(by_prevalence, labels) > 0.2  # still calls what the estimator sees


def test_an_unknown_finding_calls_rule_is_refused():
    with pytest.raises(ValueError, match="encoder.finding_calls must be one of"):
        build("often")


def test_a_sex_with_too_few_films_and_films_of_unknown_sex_keep_the_pooled_threshold(models, monkeypatch):
    labels, sex, estimates = sex_biased_estimates(seed=1)
    sex = sex.clone()
    sex[:] = MALE
    sex[: MIN_FILMS_PER_SEX - 1] = FEMALE
    sex[MIN_FILMS_PER_SEX - 1 : MIN_FILMS_PER_SEX + 30] = -1  # unknown
    thresholds = measure(models, labels, sex, estimates, monkeypatch)
    pooled = measure(models, labels, torch.full_like(sex, -1), estimates, monkeypatch)
    np.testing.assert_array_equal(pooled[MALE], pooled[FEMALE])  # no sex known: one threshold each
    np.testing.assert_array_equal(thresholds[FEMALE], pooled[FEMALE])  # too few women
    assert not np.array_equal(thresholds[MALE], pooled[MALE])


def test_the_anonymizer_calls_findings_with_the_row_of_the_films_sex(models):
    """The same film told it is a man or a woman gets that sex's thresholds: findings whose
    estimate lies between the two rows are called for one and not for the other."""
    images = torch.rand(2, 1, models.image_size, models.image_size) * 2 - 1
    images[1] = images[0]
    with torch.no_grad():
        estimate = models.encoder.estimate(images[:1])["diagnosis"][0]
    models.finding_thresholds[MALE] = estimate + 0.01  # every finding just missed for a man
    models.finding_thresholds[FEMALE] = estimate - 0.01  # and just called for a woman
    told = Conditions(sex=torch.tensor([MALE, FEMALE]))
    with torch.no_grad():
        state = models.condition_state(images, told, estimate=True)
    assert state.diagnosis[0].sum() == 0 and state.diagnosis[1].sum() == NUM_FINDINGS
    # Untold, the estimated sex picks the row: both films are the same, so they get the same row.
    with torch.no_grad():
        untold = models.condition_state(images, Conditions(), estimate=True)
    assert torch.equal(untold.diagnosis[0], untold.diagnosis[1])


def test_models_saved_with_one_row_of_thresholds_load_it_for_both_sexes(models, tmp_path):
    from privdiff_core.model.folder import load_models
    from privdiff_core.training import save_anonymizer

    one_row = torch.linspace(0.1, 0.9, NUM_FINDINGS)
    rows = pooled_thresholds_as_rows(one_row)
    assert rows.shape == (NUM_SEXES, NUM_FINDINGS) and torch.equal(rows[0], rows[1])

    state = models.state_dict()
    state["finding_thresholds"] = one_row  # a checkpoint written before the rows per sex
    models.load_state_dict(state)
    torch.testing.assert_close(models.finding_thresholds, rows)

    cfg = load_config("tiny", ["device=cpu"])
    folder = save_anonymizer(models, cfg, tmp_path / "anonymizer", {})
    config = folder / "encoder" / "config.json"
    saved = json.loads(config.read_text())
    assert np.array(saved["finding_thresholds"]).shape == (NUM_SEXES, NUM_FINDINGS)
    saved["finding_thresholds"] = one_row.tolist()  # as an older privdiff wrote it
    config.write_text(json.dumps(saved))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["encoder/config.json"] = sha256_file(config)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    loaded, _, _ = load_models(folder)
    torch.testing.assert_close(loaded.finding_thresholds, rows)
