"""The oracle film: the asked findings on a new patient of the site, reproducible from its key."""

import numpy as np
import pytest

from privdiff_core.synth.federation import site_patients
from privdiff_core.synth.oracle import oracle_sample
from privdiff_core.synth.sites import site_profile


def test_an_oracle_film_shows_exactly_the_asked_findings(tiny_params):
    site = site_profile(1, tiny_params.seed)
    sample = oracle_sample(site, ["Effusion", "Cardiomegaly"], tiny_params, key=7)
    assert sorted(sample.study.findings) == ["Cardiomegaly", "Effusion"]
    assert sample.labels.sum() == 2
    assert sample.image.shape == (tiny_params.size, tiny_params.size)
    assert sample.image.min() >= 0.0 and sample.image.max() <= 1.0
    assert sample.patient.site is site


def test_the_same_key_draws_the_same_film_and_another_key_another_person(tiny_params):
    site = site_profile(0, tiny_params.seed)
    first = oracle_sample(site, ["Nodule"], tiny_params, key=3)
    again = oracle_sample(site, ["Nodule"], tiny_params, key=3)
    other = oracle_sample(site, ["Nodule"], tiny_params, key=4)
    np.testing.assert_array_equal(first.image, again.image)
    assert np.abs(first.image - other.image).mean() > 0.02
    assert first.sop_instance_uid == again.sop_instance_uid != other.sop_instance_uid


def test_oracle_patients_are_new_people_drawn_from_the_site(tiny_params):
    """Not one of the federation's patients, and sex and age drawn afresh (both sexes, many ages)."""
    site = site_profile(0, tiny_params.seed)
    samples = [oracle_sample(site, [], tiny_params, key=k) for k in range(24)]
    federation_indices = {p.index for p in site_patients(tiny_params, site)}
    assert not {s.patient.index for s in samples} & federation_indices
    assert {s.patient.sex for s in samples} == {0, 1}
    assert len({s.study.age_group for s in samples}) >= 2


def test_unknown_findings_and_negative_keys_are_refused(tiny_params):
    site = site_profile(0, tiny_params.seed)
    with pytest.raises(ValueError, match="unknown finding"):
        oracle_sample(site, ["Broken_Heart"], tiny_params, key=0)
    with pytest.raises(ValueError, match="key must be >= 0"):
        oracle_sample(site, [], tiny_params, key=-1)
