"""The validation gate before signing (server/validation.py, client/validation.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from federation_checks import run_plan
from recording_task import make_federation, tiny_config

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
        ValidationSettings(max_loss_ratio=1.1),
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
    result = verdict(scores, STAGES, ValidationSettings(max_loss_ratio=1.5), quorum)
    assert not result.passed and any(reason in r for r in result.reasons), result.reasons


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


@pytest.mark.slow
def test_an_honest_candidate_passes_and_the_verdict_is_signed_with_it(tmp_path):
    fed = make_federation(tmp_path / "fed", 3)
    cfg = tiny_config(
        tmp_path / "records", rounds={"autoencoder": 1, "denoiser": 1}, secagg={"enabled": False}
    )
    lines: list[str] = []
    run_plan(cfg, fed, tmp_path / "run", lines=lines)
    payload = verify_model(tmp_path / "run" / "anonymizer", load_public_key(fed.public_key))
    gate = payload["metadata"]["validation"]
    assert (
        gate["passed"] is True and gate["sites"] == 3 and set(gate["stages"]) == {"autoencoder", "denoiser"}
    )
    assert gate["stages"]["autoencoder"]["ratio"] < 1.0  # one round of training already helps
    assert any(line.startswith("validation gate passed at 3 sites") for line in lines)
