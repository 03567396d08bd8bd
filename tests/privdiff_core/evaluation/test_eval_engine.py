"""The protocol's promises on realistic data (the synthetic federation's phantoms, in memory)."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from eval_toydata import synth_splits, toy_cohort

from privdiff_core.config import load_config
from privdiff_core.evaluation import engine
from privdiff_core.evaluation.attackers import (
    AttackerSettings,
    FitLog,
    commonest_where_better,
    demographics_report,
    diagnosis_report,
    finding_pos_weight,
    jitter,
    train_demographics,
    train_diagnosis,
)
from privdiff_core.evaluation.engine import EvaluationSettings, build_context, evaluate_method, evaluate_real
from privdiff_core.evaluation.methods import IdentityMethod, NoiseMethod
from privdiff_core.evaluation.protocol import derive_seed


@pytest.fixture(scope="module")
def synth_context():
    cfg = load_config("tiny")
    settings = EvaluationSettings.from_config(cfg, progress=False)
    ctx = build_context(synth_splits(sites=2, patients=60, images_per_patient=3, size=32), settings, None)
    return ctx, evaluate_real(ctx)


@pytest.fixture(scope="module")
def identity_result(synth_context):
    return evaluate_method(IdentityMethod(), synth_context[0])[0]


@pytest.fixture(scope="module")
def noise_result(synth_context):
    return evaluate_method(NoiseMethod(), synth_context[0])[0]


def test_real_images_are_re_identifiable(synth_context):
    """Without this the other tests would prove nothing: the phantoms carry biometrics."""
    _, real = synth_context
    run = real.runs[0].reid
    assert run.ci_low > 0.6, run


def test_retrained_attacker_learns_on_anonymized_linkage_pairs(synth_context, monkeypatch):
    """Spy on the adaptive attackers: first images = the method's output for the training
    patients, second images = their originals, validation on anonymized val images, warm start
    from the real-trained verifier."""
    ctx, _ = synth_context
    seen = {}

    def spy_verifier(first, second, patient_ids, settings, val=None, init=None, **kw):
        seen["verifier"] = (first, second, patient_ids, val, init)
        return init, FitLog(best_val=0.5)

    def spy_demographics(images, age_group, sex, settings, val=None, init=None, **kw):
        seen["demographics"] = (images, val)
        return init, FitLog(best_val=0.5)

    monkeypatch.setattr(engine, "train_verifier_attacker", spy_verifier)
    monkeypatch.setattr(engine, "train_demographics", spy_demographics)
    method = NoiseMethod()
    evaluate_method(method, ctx)

    train, val = ctx.adaptive_train, ctx.splits.val
    expected_train = method.anonymize(train, derive_seed(ctx.settings.seed, "noise", "train"))
    expected_val = method.anonymize(val, derive_seed(ctx.settings.seed, "noise", "val"))
    first, second, ids, (v_first, v_second, _), init = seen["verifier"]
    assert torch.equal(first, expected_train) and not torch.equal(first, train.images)
    assert torch.equal(second, train.images)
    assert ids == train.patient_ids
    assert torch.equal(v_first, expected_val) and torch.equal(v_second, val.images)
    assert init is ctx.judges[0].verifier
    images, (v_images, _, _) = seen["demographics"]
    assert torch.equal(images, expected_train) and torch.equal(v_images, expected_val)


def test_identity_anonymizer_leaves_re_identification_at_the_real_level(synth_context, identity_result):
    _, real = synth_context
    real_auc = real.runs[0].reid.auc
    run = identity_result.runs[0]
    assert run.reid_naive.auc == pytest.approx(real_auc, abs=1e-9)  # the very same scores
    assert run.reid_adaptive.auc > real_auc - 0.05
    assert identity_result.quality.ssim_mean == pytest.approx(1.0)
    assert identity_result.quality.fd == pytest.approx(0.0, abs=1e-6)
    assert identity_result.quality.detail == pytest.approx(1.0)


def test_pure_noise_leaves_nothing_to_re_identify(noise_result):
    run = noise_result.runs[0]
    for r in (run.reid_adaptive, run.reid_naive):
        assert abs(r.auc - 0.5) < 0.1, r
        assert r.ci_low < 0.5 < r.ci_high or abs(r.auc - 0.5) < 0.05, r
    for adaptive in (run.demographics_adaptive.age, run.demographics_adaptive.sex):
        assert adaptive.accuracy <= adaptive.chance + 0.1, adaptive
    assert noise_result.quality.ssim_mean < 0.1
    assert noise_result.quality.detail > 1.5  # pixel noise is all high frequency


def test_pure_noise_leaves_no_diagnosis():
    """On toy images whose findings a small classifier reads easily, noise drops the AUC to ~0.5."""
    train, test = toy_cohort(40, 3, seed=5, prefix="a"), toy_cohort(60, 3, seed=6, prefix="b")
    settings = AttackerSettings(widths=(16, 32, 64), embed_dim=32, steps=150, lr=2e-3, seed=0)
    model, _ = train_diagnosis(train.images, train.labels, train.label_mask, settings, progress=False)
    real = diagnosis_report(model, test.images, test.labels, test.label_mask)
    noise = NoiseMethod().anonymize(test, seed=1)
    anonymized = diagnosis_report(model, noise, test.labels, test.label_mask)
    assert real["mean_auc"] > 0.9
    assert abs(anonymized["mean_auc"] - 0.5) < 0.12
    assert set(anonymized["skipped"]) == {
        n for n in anonymized["per_finding"] if n not in ("Cardiomegaly", "Effusion")
    }


def _with_unseen_age(cohort, seed: int):
    """The cohort with each patient's age group redrawn (55% in group 2), unrelated to the image."""
    rng = np.random.default_rng(seed)
    drawn = {p: int(rng.choice(4, p=[0.15, 0.15, 0.55, 0.15])) for p in dict.fromkeys(cohort.patient_ids)}
    return replace(cohort, age_group=torch.tensor([drawn[p] for p in cohort.patient_ids]))


@pytest.mark.parametrize("age_visible", [False, True])
def test_an_attacker_that_cannot_read_an_attribute_answers_its_commonest_class(age_visible):
    """Age drawn per patient, not shown on the film: the trained age head answers by the training
    patients it learnt and scores below always answering the commonest group; the attacker chooses
    the constant on validation films and scores chance on test. The visible sex (and age, when the
    film shows it) keep their trained heads."""
    train, val, test = (toy_cohort(n, 4, seed=s, prefix=f"{n}.") for n, s in ((40, 7), (30, 8), (40, 9)))
    if not age_visible:
        train, val, test = (_with_unseen_age(c, seed) for seed, c in enumerate((train, val, test)))
    # One checkpoint, the last, as the demo's retrained attacker has (100 steps, validated every 100):
    # no early step that has learnt only the prior to fall back on.
    settings = AttackerSettings(widths=(16, 32, 64), embed_dim=32, steps=300, lr=2e-3, eval_every=300)
    model, _ = train_demographics(
        train.images,
        train.age_group,
        train.sex,
        settings,
        val=(val.images, val.age_group, val.sex),
        progress=False,
    )
    fixed = commonest_where_better(model, train.age_group, train.sex, (val.images, val.age_group, val.sex))
    trained_on = (train.age_group, train.sex)
    trained = demographics_report(model, test.images, test.age_group, test.sex, *trained_on)
    chosen = demographics_report(
        model, test.images, test.age_group, test.sex, *trained_on, fixed_answers=fixed
    )
    assert trained["sex"]["accuracy"] > 0.9 and "sex" not in fixed
    if age_visible:
        assert fixed == {} and trained["age"]["accuracy"] > trained["age"]["chance"] + 0.2
        return
    assert fixed == {"age": 2} and trained["age"]["chance_class"] == 2
    assert trained["age"]["accuracy"] < trained["age"]["chance"] - 0.05, trained["age"]
    assert chosen["age"]["accuracy"] == trained["age"]["chance"]
    assert chosen["age"]["chance"] == pytest.approx((test.age_group == 2).float().mean().item())
    assert chosen["age"]["balanced_accuracy"] == pytest.approx(chosen["age"]["balanced_chance"])  # a constant
    assert chosen["sex"] == trained["sex"]


def test_rare_findings_weigh_more_in_the_diagnosis_loss():
    """Positives are up-weighted by sqrt(negatives / positives), capped; unknown labels are not counted."""
    labels = torch.zeros(100, 14)
    labels[:4, 0] = 1  # 4 positives, 96 negatives
    labels[:50, 1] = 1  # balanced
    labels[:, 2] = 1  # no negatives
    labels[:1, 3] = 1  # 1 in 100: would be sqrt(99) ~ 9.95
    labels[:1, 5] = 1
    mask = torch.ones(100, 14, dtype=torch.bool)
    mask[50:, 5] = False  # 1 positive, 49 known negatives
    weight = finding_pos_weight(labels, mask, cap=8.0)
    assert weight[0] == pytest.approx((96 / 4) ** 0.5)
    assert weight[1] == pytest.approx(1.0) and weight[2] == pytest.approx(1.0)
    assert weight[3] == pytest.approx(8.0)  # capped
    assert weight[4] == pytest.approx(1.0)  # no positive at all: nothing to up-weight
    assert weight[5] == pytest.approx(49**0.5)


def test_training_jitter_shifts_and_re_exposes_but_keeps_the_picture():
    coarse = torch.rand(16, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.8
    images = torch.nn.functional.interpolate(coarse, size=32, mode="bilinear")  # smooth films
    out = jitter(images, np.random.default_rng(0), max_shift=3)
    assert out.shape == images.shape and out.min() >= -1 and out.max() <= 1
    assert not torch.equal(out, images)
    # Every film stays (nearly) itself: far closer to its original than to another film.
    own = (out - images).abs().mean(dim=(1, 2, 3))
    other = (out - images.roll(1, 0)).abs().mean(dim=(1, 2, 3))
    assert (own < other).all()
    again = jitter(images, np.random.default_rng(0), max_shift=3)
    assert torch.equal(out, again)  # seeded


def test_runs_are_summarised_as_mean_and_std(identity_result):
    s = identity_result.summary.reid_adaptive_auc
    assert s.runs == 1 and s.values == [identity_result.runs[0].reid_adaptive.auc]
    assert np.isfinite(identity_result.summary.diagnosis_mean_auc.mean)


def test_the_memorization_threshold_is_set_on_the_whole_val_split(monkeypatch):
    """With max_images.val capping what the methods anonymize, the threshold still comes from
    every real val film (EvalSplits.calibration)."""
    from dataclasses import replace
    from types import SimpleNamespace

    splits = synth_splits(sites=2, patients=60, images_per_patient=3, size=32)
    capped = replace(splits, val=splits.val.subset(range(6)), calibration=splits.val)
    seen = []
    monkeypatch.setattr(
        engine, "load_or_train_judges", lambda *a, **k: (SimpleNamespace(verifier=None), False)
    )
    monkeypatch.setattr(
        engine,
        "memorization_threshold",
        lambda verifier, reference, train, fpr, device: seen.append(len(reference)),
    )
    settings = EvaluationSettings.from_config(load_config("tiny"), progress=False)
    engine.build_context(capped, settings, None)
    assert seen == [len(splits.val)] * settings.runs and len(splits.val) > 6


class SeedRecordingNoise(NoiseMethod):
    def __init__(self, seeds: list[int]) -> None:
        super().__init__()
        self.seeds = seeds

    def anonymize(self, cohort, seed: int, progress: bool = True) -> torch.Tensor:
        self.seeds.append(seed)
        return super().anonymize(cohort, seed, progress)


def test_anonymize_per_run_draws_new_outputs_for_each_run_and_keeps_run_0s(synth_context):
    """evaluate.anonymize_per_run: run r > 0 anonymizes with its own seeds (the spread then
    includes the outputs' randomness); run 0 keeps a single-run evaluation's seeds; off, every
    run scores the same outputs."""
    from dataclasses import replace

    ctx, _ = synth_context
    two_runs = replace(
        ctx,
        plans=[ctx.plans[0], replace(ctx.plans[0], run=1)],
        judges=ctx.judges * 2,
        memorization_thresholds=ctx.memorization_thresholds * 2,
    )
    for per_run, draws in ((False, 1), (True, 2)):
        ctx_runs = replace(two_runs, settings=replace(ctx.settings, anonymize_per_run=per_run))
        seeds: list[int] = []
        method = SeedRecordingNoise(seeds)
        result, _ = evaluate_method(method, ctx_runs)
        assert len(seeds) == 3 * draws and len(set(seeds)) == 3 * draws
        assert seeds[:3] == [
            derive_seed(ctx.settings.seed, "noise", split) for split in ("test", "val", "train")
        ]
        assert result.timing.anonymized_images == draws * (
            len(ctx.splits.test) + len(ctx.splits.val) + len(ctx.adaptive_train)
        )
        naive = [run.reid_naive.auc for run in result.runs]  # the same judge and pairs in both runs
        assert (naive[0] == naive[1]) is (not per_run)
    assert "anonymize_per_run" not in ctx.settings.as_dict()  # off: cache keys as before it existed
