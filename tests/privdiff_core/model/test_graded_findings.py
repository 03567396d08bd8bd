"""Estimated findings as graded evidence (`anonymize.finding_softness`): the generative mode draws a
plainer finding where its estimator is surer, so the diagnosis judge can rank the outputs as it
ranks real films (yes/no calls keep only which side of the threshold an estimate fell on)."""

import pytest
import torch
from omegaconf import OmegaConf

from privdiff_core.attributes import NUM_FINDINGS
from privdiff_core.config import load_config
from privdiff_core.model.conditioning import Conditions, state_from_labels
from privdiff_core.training import build_models

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def estimated_state(probabilities: torch.Tensor, conditions: Conditions | None = None):
    """A state whose findings the attribute encoder estimated as `probabilities` (B, 14)."""
    batch = probabilities.shape[0]
    estimates = {
        "age": torch.full((batch, 4), 0.25),
        "sex": torch.full((batch, 2), 0.5),
        "diagnosis": probabilities,
    }
    return state_from_labels(torch.zeros(batch, 8), conditions or Conditions(), estimates)


def sweep() -> torch.Tensor:
    """Per finding, probabilities from 0.01 to 0.99 (films along the rows)."""
    return torch.linspace(0.01, 0.99, 25)[:, None].expand(-1, NUM_FINDINGS).clone()


def test_graded_calls_are_half_at_the_threshold_and_rise_with_the_estimate():
    thresholds = torch.linspace(0.05, 0.6, NUM_FINDINGS).expand(25, -1)
    probabilities = sweep()
    everything = torch.ones(25, NUM_FINDINGS, dtype=torch.bool)
    graded = estimated_state(probabilities).with_called_diagnosis(thresholds, everything, 1.0).diagnosis
    at_threshold = estimated_state(thresholds.clone()).with_called_diagnosis(thresholds, everything, 1.0)
    torch.testing.assert_close(at_threshold.diagnosis, torch.full_like(thresholds, 0.5))
    assert (graded.diff(dim=0) > 0).all()  # a surer estimate, a plainer finding
    assert ((graded > 0) & (graded < 1)).all()
    # which side of 0.5 is the yes/no call
    yes_no = estimated_state(probabilities).with_called_diagnosis(thresholds, everything, 0.0).diagnosis
    assert set(yes_no.unique().tolist()) == {0.0, 1.0}
    torch.testing.assert_close(yes_no, (graded > 0.5).float())
    # a small softness approaches the yes/no call, away from the threshold
    sharp = estimated_state(probabilities).with_called_diagnosis(thresholds, everything, 0.01).diagnosis
    away = (probabilities - thresholds).abs() > 0.02
    torch.testing.assert_close(sharp[away], yes_no[away], atol=1e-3, rtol=0)


def test_told_findings_reach_the_denoiser_as_told():
    """A site that has the report tells some findings: those stay as told (a told 0.7 too); only the
    estimated ones are called."""
    probabilities = torch.full((2, NUM_FINDINGS), 0.9)
    labels = torch.zeros(2, NUM_FINDINGS)
    labels[0, 0], labels[1, 1] = 1.0, 0.7
    mask = torch.zeros(2, NUM_FINDINGS, dtype=torch.bool)
    mask[:, :3] = True
    told = Conditions(labels=labels, label_mask=mask)
    thresholds = torch.full((2, NUM_FINDINGS), 0.3)
    for softness in (0.0, 1.0):
        state = estimated_state(probabilities, told)
        called = state.with_called_diagnosis(thresholds, ~told.told_findings(2), softness).diagnosis
        torch.testing.assert_close(called[:, :3], labels[:, :3])
        assert (called[:, 3:] > 0.5).all()  # estimated 0.9 against a threshold of 0.3: present


def test_the_model_calls_findings_as_its_config_says():
    images = torch.rand(3, 1, 32, 32) * 2 - 1

    def calls(*overrides: str) -> torch.Tensor:
        torch.manual_seed(0)
        models = build_models(load_config("tiny", ["device=cpu", *overrides]))
        with torch.no_grad():
            probabilities = models.encoder.estimate(images)["diagnosis"]
        models.finding_thresholds.copy_(probabilities[0].expand(2, -1))  # film 0 sits at the thresholds
        with torch.no_grad():
            return models.condition_state(images, Conditions(), estimate=True).diagnosis

    yes_no, graded = calls(), calls("anonymize.finding_softness=1.0")
    assert set(yes_no.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(graded[0], torch.full((NUM_FINDINGS,), 0.5))
    assert ((graded[1:] > 0) & (graded[1:] < 1)).all()
    torch.testing.assert_close(yes_no[1:], (graded[1:] > 0.5).float())


def test_a_model_saved_before_the_option_calls_yes_or_no_and_a_negative_softness_is_refused():
    cfg = load_config("tiny", ["device=cpu"])
    older = OmegaConf.to_container(cfg)
    del older["anonymize"]["finding_softness"]
    assert build_models(OmegaConf.create(older)).finding_softness == 0.0
    with pytest.raises(ValueError, match="finding_softness"):
        build_models(load_config("tiny", ["device=cpu", "anonymize.finding_softness=-0.5"]))
