import numpy as np
import pytest
import torch
from eval_toydata import toy_cohort

from privdiff_core.evaluation.judges import plan_runs
from privdiff_core.evaluation.protocol import (
    EvalSplits,
    ProtocolError,
    derive_seed,
    split_by_patient,
    subsample_patients,
)


def test_split_by_patient_never_puts_a_patient_in_two_splits():
    ids = [f"p{k // 3}" for k in range(300)]
    parts = split_by_patient(ids, (0.7, 0.1, 0.2), seed=3)
    patients = {name: {ids[i] for i in idx} for name, idx in parts.items()}
    assert not patients["train"] & patients["val"]
    assert not patients["train"] & patients["test"]
    assert not patients["val"] & patients["test"]
    assert sorted(np.concatenate(list(parts.values()))) == list(range(300))
    assert len(patients["train"]) == 70 and len(patients["val"]) == 10 and len(patients["test"]) == 20


def test_overlapping_splits_are_refused():
    train = toy_cohort(6, 2, seed=0, prefix="a")
    test = toy_cohort(6, 2, seed=1, prefix="a")  # same ids a0..a5: the same people
    with pytest.raises(ProtocolError, match="both 'train' and 'test'"):
        EvalSplits(train=train, val=toy_cohort(3, 2, prefix="v"), test=test)


def test_a_split_without_repeat_patients_is_refused():
    with pytest.raises(ProtocolError, match="test split"):
        EvalSplits(
            train=toy_cohort(4, 2, prefix="a"),
            val=toy_cohort(3, 2, prefix="v"),
            test=toy_cohort(5, 1, prefix="t"),
        )


def test_subsample_keeps_whole_patients_and_respects_the_cap():
    cohort = toy_cohort(30, 3, prefix="s")
    small = subsample_patients(cohort, 20, seed=0)
    assert len(small) <= 20
    counts = {p: small.patient_ids.count(p) for p in small.patients}
    assert set(counts.values()) == {3}
    assert subsample_patients(cohort, None, 0) is cohort


def test_run_plans_give_balanced_pairs_from_the_right_split(splits):
    plans = plan_runs(splits, runs=2, base_seed=0, val_pairs=100, test_pairs=201)
    for plan in plans:
        pairs = plan.test_pairs
        assert pairs[:, 2].sum() == 101  # half positive, rounded up
        ids = splits.test.patient_ids
        for i, j, same in pairs:
            assert i != j
            assert (ids[i] == ids[j]) == bool(same)
        assert pairs[:, :2].max() < len(splits.test)
    assert not np.array_equal(plans[0].test_pairs, plans[1].test_pairs)  # runs redraw pairs


def test_derived_seeds_are_stable_and_distinct():
    assert derive_seed(0, "run", 1) == derive_seed(0, "run", 1)
    assert derive_seed(0, "run", 1) != derive_seed(0, "run", 2)
    assert 0 <= derive_seed("x") < 2**31


def test_cohort_rejects_misaligned_fields():
    c = toy_cohort(2, 2)
    with pytest.raises(ProtocolError, match="patient ids"):
        type(c)(c.images, c.patient_ids[:-1], c.age_group, c.sex, c.labels, c.label_mask)
    with pytest.raises(ProtocolError, match="shape"):
        c.with_images(torch.zeros(1, 1, 8, 8))


def test_a_capped_val_split_keeps_all_its_films_for_the_memorization_threshold():
    """max_images.val caps the films every method anonymizes; the memorization threshold is a
    quantile of real unseen films (0.5% each side at fpr 0.01), so it is set on all of them."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from privdiff_core.evaluation.pipeline import splits_from_tensors

    def as_tensors(cohort):
        return SimpleNamespace(
            images=cohort.images,
            patient_ids=list(cohort.patient_ids),
            age_group=cohort.age_group,
            sex=cohort.sex,
            labels=cohort.labels,
            label_mask=cohort.label_mask,
        )

    whole = {
        "train": toy_cohort(8, 2, prefix="a"),
        "val": toy_cohort(30, 3, prefix="v"),
        "test": toy_cohort(6, 2, prefix="t"),
    }
    tensors = {name: as_tensors(c) for name, c in whole.items()}
    capped = OmegaConf.create(
        {"seed": 0, "evaluate": {"max_images": {"train": None, "val": 12, "test": None}}}
    )
    splits = splits_from_tensors(capped, tensors)
    assert len(splits.val) <= 12 and splits.memorization_reference is splits.calibration
    assert splits.calibration.patient_ids == whole["val"].patient_ids
    uncapped = OmegaConf.merge(capped, {"evaluate": {"max_images": {"val": None}}})
    all_val = splits_from_tensors(uncapped, tensors)
    assert all_val.calibration is None and all_val.memorization_reference is all_val.val
    with pytest.raises(ProtocolError, match="both 'train' and 'calibration'"):
        EvalSplits(**{**whole, "calibration": toy_cohort(3, 2, prefix="a")})
