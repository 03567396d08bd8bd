"""The oracle keeps the findings and breaks identity; it is skipped, with a note, on real data."""

import json

import numpy as np
import pytest
import torch
from eval_toydata import synth_splits

from privdiff_core.attributes import FINDINGS
from privdiff_core.config import load_config
from privdiff_core.evaluation.attackers import AttackerSettings, diagnosis_report, train_diagnosis
from privdiff_core.evaluation.engine import EvaluationSettings, build_context, evaluate_method, evaluate_real
from privdiff_core.evaluation.methods import IdentityMethod
from privdiff_core.evaluation.oracle import OracleMethod, oracle_for_data
from privdiff_core.evaluation.protocol import Cohort
from privdiff_core.synth import GENERATOR_VERSION, SynthParams

DATA = SynthParams(sites=2, patients=160, images_per_patient=3, size=32, seed=0)
# A verifier strong enough to link real films against hard negatives (the test's precondition).
STRONGER = ["evaluate.verifier.steps=300", "evaluate.pairs.test=1000"]
CARDIO = FINDINGS.index("Cardiomegaly")


@pytest.fixture(scope="module")
def data():
    return synth_splits(DATA.sites, DATA.patients, DATA.images_per_patient, DATA.size, DATA.seed)


@pytest.fixture(scope="module")
def oracle():
    return OracleMethod(DATA)


def balanced_cohort(n: int, seed: int) -> Cohort:
    """n films to re-render, half with cardiomegaly, from both sites; only that label is known."""
    labels = torch.zeros(n, len(FINDINGS))
    labels[torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: n // 2], CARDIO] = 1.0
    mask = torch.zeros(n, len(FINDINGS), dtype=torch.bool)
    mask[:, CARDIO] = True
    return Cohort(
        images=torch.zeros(n, 1, DATA.size, DATA.size),
        patient_ids=tuple(f"site_{k % 2:02d}/src{k}" for k in range(n)),
        age_group=torch.zeros(n, dtype=torch.long),
        sex=torch.zeros(n, dtype=torch.long),
        labels=labels,
        label_mask=mask,
    )


def test_oracle_films_keep_the_findings(data, oracle):
    """A cardiomegaly judge trained on real films only reads it on oracle films as on real ones.

    160 oracle films, 80 positive: an AUC above 0.75 is over five standard errors from the 0.5
    a film without the finding would score, so it cannot pass by luck."""
    mask = torch.zeros(len(FINDINGS), dtype=torch.bool)
    mask[CARDIO] = True
    settings = AttackerSettings(widths=(16, 32, 64), embed_dim=64, steps=400, lr=2e-3, augment=True, seed=1)
    real_eval = Cohort(
        torch.cat([data.val.images, data.test.images]),
        data.val.patient_ids + data.test.patient_ids,
        torch.cat([data.val.age_group, data.test.age_group]),
        torch.cat([data.val.sex, data.test.sex]),
        torch.cat([data.val.labels, data.test.labels]),
        torch.cat([data.val.label_mask, data.test.label_mask]) & mask,
    )
    judge, _ = train_diagnosis(data.train.images, data.train.labels, data.train.label_mask & mask, settings)
    real_auc = diagnosis_report(judge, real_eval.images, real_eval.labels, real_eval.label_mask)["mean_auc"]
    cohort = balanced_cohort(160, seed=0)
    films = oracle.anonymize(cohort, seed=11, progress=False)
    oracle_auc = diagnosis_report(judge, films, cohort.labels, cohort.label_mask)["mean_auc"]
    assert real_auc > 0.8, real_auc  # the judge sees the finding at all
    assert oracle_auc > 0.75 and oracle_auc > real_auc - 0.15, (oracle_auc, real_auc)


@pytest.fixture(scope="module")
def context(data):
    settings = EvaluationSettings.from_config(load_config("tiny", STRONGER), progress=False)
    ctx = build_context(data, settings, None)
    return ctx, evaluate_real(ctx)


@pytest.mark.slow
def test_oracle_films_break_identity(context, oracle):
    """Against negatives of the same sex, age group and site, the source patient's real films are
    linked to the oracle's film at chance, by the real-trained and by the retrained attacker,
    where the unanonymized films are clearly linked."""
    ctx, real = context
    result, _ = evaluate_method(oracle, ctx)
    run, real_run = result.runs[0], real.runs[0]
    real_hard = real_run.reid_hard_naive.auc
    assert real_hard > 0.65, real_run.reid_hard_naive  # real films are linkable on hard pairs
    for hard in (run.reid_hard_naive, run.reid_hard_adaptive):
        assert hard.ci_low < 0.5 < hard.ci_high, hard
        assert hard.auc < min(0.6, real_hard - 0.1), (hard, real_hard)
    assert result.summary.sex_accuracy.mean < real.summary.sex_accuracy.mean
    assert result.summary.memorization_rate.mean <= real.summary.memorization_rate.mean + 0.05


@pytest.mark.slow
def test_a_copy_of_training_films_is_flagged_as_memorized(context):
    """The memorization check catches the failure it exists for: films that are training films."""
    ctx, real = context
    train = ctx.splits.train

    class CopyTraining(IdentityMethod):
        def anonymize(self, cohort, seed, progress=True):
            return train.images[torch.arange(len(cohort)) % len(train)].clone()

    result, _ = evaluate_method(CopyTraining(), ctx)
    assert result.summary.memorization_rate.mean > 0.9
    assert real.summary.memorization_rate.mean < 0.2


def test_the_oracle_is_built_from_a_synthetic_federation_and_skipped_elsewhere(tmp_path):
    (tmp_path / "federation.json").write_text(
        json.dumps({"generator_version": GENERATOR_VERSION, "arguments": {"sites": 3, "seed": 5, "size": 48}})
    )
    method, note = oracle_for_data(tmp_path)
    assert note == "" and method.params == SynthParams(sites=3, seed=5, size=48)
    assert sorted(method.sites) == ["site_00", "site_01", "site_02"]
    for folder in (tmp_path / "real", tmp_path):
        folder.mkdir(exist_ok=True)
        if folder == tmp_path:
            (folder / "federation.json").write_text(json.dumps({"generator_version": "0.1", "arguments": {}}))
        method, note = oracle_for_data(folder)
        assert method is None and note.startswith("oracle skipped:") and "\n" not in note


def test_films_of_an_unknown_site_are_refused(oracle):
    cohort = balanced_cohort(2, seed=0)
    cohort = Cohort(cohort.images, ("elsewhere/1", "elsewhere/2"), *list(vars(cohort).values())[2:])
    with pytest.raises(ValueError, match="not from a site of this federation"):
        oracle.anonymize(cohort, seed=0, progress=False)


def test_the_oracle_draws_a_new_person_per_film_reproducibly(oracle):
    cohort = balanced_cohort(6, seed=1)
    first, again = (
        oracle.anonymize(cohort, seed=3, progress=False),
        oracle.anonymize(cohort, seed=3, progress=False),
    )
    torch.testing.assert_close(first, again)
    assert first.min() >= -1 and first.max() <= 1
    distances = [float((first[a] - first[b]).abs().mean()) for a in range(6) for b in range(a + 1, 6)]
    assert np.min(distances) > 0.02  # no two films show the same person
