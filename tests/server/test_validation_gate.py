"""The validation gate before signing (server/validation.py, client/validation.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from federation_checks import run_plan
from recording_task import InputReturningTask, make_federation, tiny_config

from privdiff.common.errors import FederationError
from privdiff.common.protocol import SiteScores
from privdiff.server.settings import ValidationSettings
from privdiff.server.validation import REJECTED_DIR, VERDICT_FILE, verdict
from privdiff_core.signing import load_public_key, verify_model

STAGES = ["autoencoder", "denoiser"]


def _scores(node: int, examples: int, candidate: tuple[float, float], accepted: tuple[float, float]):
    return SiteScores(
        node, examples, dict(zip(STAGES, candidate, strict=True)), dict(zip(STAGES, accepted, strict=True))
    )


def test_scores_travel_as_a_flat_record():
    scores = _scores(7, 12, (0.5, 0.9), (0.8, 1.0))
    assert SiteScores.from_record(7, scores.to_record(), STAGES) == scores


def test_a_candidate_better_than_the_accepted_model_passes_with_weighted_means():
    result = verdict(
        [_scores(1, 30, (0.4, 1.0), (0.8, 1.0)), _scores(2, 10, (0.8, 1.2), (0.8, 1.0))],
        STAGES,
        ValidationSettings(max_loss_ratio=1.1, images=0),
        quorum=2,
    )
    assert result.passed and result.reasons == []
    assert result.stages["autoencoder"]["candidate_loss"] == pytest.approx((30 * 0.4 + 10 * 0.8) / 40)
    assert result.stages["denoiser"]["ratio"] == pytest.approx(1.05)


@pytest.mark.parametrize(
    ("scores", "quorum", "reason"),
    [
        ([_scores(1, 10, (0.4, 3.0), (0.8, 1.0))], 1, "denoiser: val loss 3 vs 1"),
        ([_scores(1, 10, (math.nan, 1.0), (0.8, 1.0))], 1, "autoencoder: val loss nan"),
        ([_scores(1, 10, (math.inf, 1.0), (0.8, 1.0))], 1, "autoencoder: val loss inf"),
        ([_scores(1, 10, (0.4, 1.0), (0.8, 1.0))], 2, "1 sites scored the candidate, the quorum is 2"),
    ],
)
def test_a_worse_broken_or_unscored_candidate_fails(scores, quorum, reason):
    result = verdict(scores, STAGES, ValidationSettings(max_loss_ratio=1.5, images=0), quorum)
    assert not result.passed and any(reason in r for r in result.reasons), result.reasons


def _checked(node: int, films: int, candidate: dict, accepted: dict | None = None) -> SiteScores:
    return SiteScores(node, 10, {"autoencoder": 1.0}, {"autoencoder": 1.0}, films, candidate, accepted or {})


PRIVACY = ValidationSettings(max_loss_ratio=1.5, images=8, max_reid_auc=0.75, min_diagnosis_agreement=0.6)


def test_privacy_numbers_travel_and_unmeasured_ones_stay_absent():
    scores = _checked(3, 8, {"reid_auc": 0.55, "diagnosis_agreement": 0.9})
    back = SiteScores.from_record(3, scores.to_record(), ["autoencoder"])
    assert back == scores and back.accepted_privacy == {}


def test_a_first_model_is_held_to_the_absolute_limits_weighted_by_films():
    passing = [
        _checked(1, 6, {"reid_auc": 0.5, "diagnosis_agreement": 0.9}),
        _checked(2, 2, {"reid_auc": 0.9, "diagnosis_agreement": 0.7}),
    ]
    result = verdict(passing, ["autoencoder"], PRIVACY, quorum=2)
    assert result.passed, result.reasons
    assert result.privacy["candidate"]["reid_auc"] == pytest.approx((6 * 0.5 + 2 * 0.9) / 8)
    assert result.privacy["mode"].startswith("absolute") and result.privacy["images"] == 8
    leaky = [_checked(1, 8, {"reid_auc": 0.97, "diagnosis_agreement": 1.0})]
    result = verdict(leaky, ["autoencoder"], PRIVACY, quorum=1)
    assert (
        not result.passed and "re-ID AUC of output vs input 0.97 > 0.75 (max_reid_auc)" in result.reasons[0]
    )
    blurred = [_checked(1, 8, {"reid_auc": 0.5, "diagnosis_agreement": 0.4})]
    result = verdict(blurred, ["autoencoder"], PRIVACY, quorum=1)
    assert not result.passed and "diagnosis agreement of output vs input 0.4 < 0.6" in result.reasons[0]


def test_a_site_cannot_outweigh_the_others_by_claiming_more_films():
    liar = _checked(1, 10_000, {"reid_auc": 0.5, "diagnosis_agreement": 1.0})
    honest = [_checked(n, 8, {"reid_auc": 0.9, "diagnosis_agreement": 0.9}) for n in (2, 3)]
    result = verdict([liar, *honest], ["autoencoder"], PRIVACY, quorum=3)
    assert result.privacy["candidate"]["reid_auc"] == pytest.approx((0.5 + 0.9 + 0.9) / 3)
    assert not result.passed and result.privacy["images"] == 24


def test_a_later_model_is_held_to_the_installed_one():
    better_than_limit_but_worse_than_installed = [
        _checked(
            1,
            8,
            {"reid_auc": 0.7, "diagnosis_agreement": 0.9},
            {"reid_auc": 0.55, "diagnosis_agreement": 0.9},
        )
    ]
    result = verdict(better_than_limit_but_worse_than_installed, ["autoencoder"], PRIVACY, quorum=1)
    assert not result.passed and "the installed model's 0.55 + max_reid_auc_increase" in result.reasons[0]
    assert result.privacy["accepted"]["reid_auc"] == 0.55
    same = [
        _checked(
            1,
            8,
            {"reid_auc": 0.57, "diagnosis_agreement": 0.85},
            {"reid_auc": 0.55, "diagnosis_agreement": 0.9},
        )
    ]
    assert verdict(same, ["autoencoder"], PRIVACY, quorum=1).passed


def test_a_gate_that_asked_for_the_privacy_check_refuses_when_no_site_measured_it():
    result = verdict([_checked(1, 0, {})], ["autoencoder"], PRIVACY, quorum=1)
    assert not result.passed and "no site measured the candidate's re-ID AUC" in result.reasons[0]
    assert verdict([_checked(1, 0, {})], ["autoencoder"], ValidationSettings(images=0), quorum=1).passed


@pytest.mark.slow
def test_the_gate_refuses_to_sign_a_broken_candidate_and_keeps_it_unsigned(tmp_path, monkeypatch):
    """A candidate wrecked after aggregation (each averaged update x1000, as a poisoned or buggy
    aggregate would be): the sites' val losses refuse it; nothing is signed or installed."""
    import privdiff.server.workflow as workflow

    real_apply = workflow.FederatedPlan._apply

    def wrecking_apply(self, models, stage, update):  # noqa: ANN001, ANN202
        real_apply(self, models, stage, np.asarray(update, dtype=np.float64) * 1000.0)

    monkeypatch.setattr(workflow.FederatedPlan, "_apply", wrecking_apply)
    fed = make_federation(tmp_path / "fed", 3)
    cfg = tiny_config(
        tmp_path / "records", rounds={"autoencoder": 1, "denoiser": 0}, secagg={"enabled": False}
    )
    lines: list[str] = []
    with pytest.raises(FederationError, match="validation gate: the candidate was NOT signed"):
        run_plan(cfg, fed, tmp_path / "run", lines=lines)
    kept = tmp_path / "run" / REJECTED_DIR
    saved = json.loads((kept / VERDICT_FILE).read_text())
    assert saved["passed"] is False and saved["sites"] == 3
    assert saved["stages"]["autoencoder"]["ratio"] > 1.5 or not math.isfinite(
        saved["stages"]["autoencoder"]["ratio"]
    )
    assert (kept / "manifest.json").is_file() and not (kept / "signature.json").exists()
    assert not (tmp_path / "run" / "anonymizer").exists()
    assert not any(
        (home / "model-store").exists() and any((home / "model-store").iterdir()) for home in fed.homes
    )


def _gate_federation(tmp_path):  # noqa: ANN001, ANN202
    """Three tiny sites, one round per stage, no SecAgg+ (the gate is the subject); the sites may
    take minutes to answer on a loaded 2-core machine."""
    fed = make_federation(tmp_path / "fed", 3)
    cfg = tiny_config(
        tmp_path / "records",
        rounds={"autoencoder": 1, "denoiser": 1},
        secagg={"enabled": False, "timeout_s": 600},
    )
    return fed, cfg


@pytest.mark.slow
def test_the_gate_refuses_an_anonymizer_that_returns_its_input(tmp_path):
    """Losses alone would pass it (training is honest); the sites' own verifiers see that every
    output still points at its input (re-ID AUC ~1) and the server refuses to sign."""
    fed, cfg = _gate_federation(tmp_path)
    lines: list[str] = []
    with pytest.raises(FederationError, match="re-ID AUC of output vs input") as refused:
        run_plan(cfg, fed, tmp_path / "run", task=InputReturningTask(), lines=lines)
    assert "max_reid_auc" in str(refused.value), lines
    saved = json.loads((tmp_path / "run" / REJECTED_DIR / VERDICT_FILE).read_text())
    privacy = saved["privacy"]
    assert privacy["candidate"]["reid_auc"] > 0.9 and privacy["candidate"]["diagnosis_agreement"] == 1.0
    assert privacy["accepted"] is None and privacy["sites"] == 3  # no model installed yet: absolute limits
    assert all(v["ratio"] < 1.5 for v in saved["stages"].values())  # the losses alone passed
    assert not (tmp_path / "run" / "anonymizer").exists()
    assert not (tmp_path / "run" / REJECTED_DIR / "signature.json").exists()
    for home in fed.homes:  # each site trained its own judges and kept them (safetensors)
        assert (home / "verifier" / "verifier.safetensors").is_file()
        assert (home / "verifier" / "diagnosis.safetensors").is_file()


@pytest.mark.slow
def test_an_honest_candidate_passes_and_the_verdict_is_signed_with_it(tmp_path):
    fed, cfg = _gate_federation(tmp_path)
    lines: list[str] = []
    run_plan(cfg, fed, tmp_path / "run", lines=lines)
    payload = verify_model(tmp_path / "run" / "anonymizer", load_public_key(fed.public_key))
    gate = payload["metadata"]["validation"]
    assert (
        gate["passed"] is True and gate["sites"] == 3 and set(gate["stages"]) == {"autoencoder", "denoiser"}
    )
    assert gate["stages"]["autoencoder"]["ratio"] < 1.0  # one round of training already helps
    privacy = gate["privacy"]
    assert privacy["candidate"]["reid_auc"] <= 0.75 and privacy["accepted"] is None
    assert privacy["images"] == 3 * 4  # 2 val + 2 test films at each site (val alone has 1 patient)
    assert any(line.startswith("validation gate passed at 3 sites") and "re-ID AUC" in line for line in lines)

    # The next run's candidate is judged against the model the sites now have installed.
    run_plan(cfg, fed, tmp_path / "run2", lines=lines)
    again = verify_model(tmp_path / "run2" / "anonymizer", load_public_key(fed.public_key))
    second = again["metadata"]["validation"]["privacy"]
    assert second["mode"] == "relative to the installed model"
    assert second["accepted"]["reid_auc"] == pytest.approx(privacy["candidate"]["reid_auc"])
