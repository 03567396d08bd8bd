"""A malicious site in a SecAgg+ federation (Flower's simulation engine, tiny PrivDiff-Net).

Four sites, one of them (partition 3) an attacker from round 1 on; three honest sites alone are
the reference. Every attack makes the round's unmasked sum impossible: the round is rejected,
rerun without one site at a time, the attacker is excluded, and every accepted round is FedAvg
of the three honest sites' updates within SecAgg+'s quantization (round 1, which both runs start
from the same model, equals the honest run's round 1; later rounds start from models that differ
by that rounding, as two honest runs do, and local training amplifies it). An honest run rejects
nothing; with too few sites to leave one out, the run stops at the last good checkpoint and
signs nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from federation_checks import check_secagg_round, run_plan, stage_vector
from malicious_sites import ATTACKS, MaliciousSite
from omegaconf import OmegaConf
from recording_task import make_federation, tiny_config

from privdiff.common.errors import FederationError
from privdiff.common.updates import quantization_step
from privdiff.server.checkpoint import CHECKPOINT_FILE
from privdiff.server.workflow import QUANTIZATION_RANGE
from privdiff_core.signing import load_public_key, verify_model

pytestmark = pytest.mark.slow

ROUNDS = {"autoencoder": 2, "denoiser": 1}
ATTACKER = 3


def _config(records: Path, sites: int, min_sites: int):
    cfg = tiny_config(records, rounds=ROUNDS)
    return OmegaConf.merge(cfg, {"federation": {"sites": sites, "min_sites": min_sites}})


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    return make_federation(tmp_path_factory.mktemp("malicious"), 4)


@pytest.fixture(scope="module")
def honest_run(federation):
    """The three honest sites alone: what the federation should produce."""
    root = federation.root / "honest"
    lines: list[str] = []
    snapshots = run_plan(_config(root / "records", 3, 3), federation, root / "run", lines=lines, sites=3)
    return root / "run", lines, snapshots


def test_an_honest_run_rejects_nothing(honest_run, federation):
    out, lines, _ = honest_run
    history = torch.load(out / CHECKPOINT_FILE, weights_only=True)["history"]
    assert [h["rejected"] for h in history] == [[], [], []]
    assert not any("REJECTED" in line or "EXCLUDED" in line for line in lines)
    assert torch.load(out / CHECKPOINT_FILE, weights_only=True)["excluded"] == []
    verify_model(out / "anonymizer", load_public_key(federation.public_key))


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_malicious_site_is_rejected_excluded_and_leaves_no_trace(honest_run, federation, attack):
    root = federation.root / attack
    cfg = _config(root / "records", 4, 3)
    lines: list[str] = []
    attacker_mod = MaliciousSite(ATTACKER, attack, root / "records")
    snapshots = run_plan(cfg, federation, root / "run", mods=[attacker_mod], lines=lines)
    saved = torch.load(root / "run" / CHECKPOINT_FILE, weights_only=True)
    attacker = int((root / "records" / "attacker-node").read_text())
    assert saved["excluded"] == [attacker]
    first, *later = saved["history"]
    assert first["rejected"][0]["without"] is None
    assert "impossible SecAgg+ sum" in first["rejected"][0]["reason"]
    assert all(r["without"] != attacker for r in first["rejected"])  # every attempt with it failed
    assert first["sites"] == 3 and all(h["rejected"] == [] and h["sites"] == 3 for h in later)
    assert any(f"site {attacker} is EXCLUDED" in line for line in lines)
    payload = verify_model(root / "run" / "anonymizer", load_public_key(federation.public_key))
    assert payload["metadata"]["sites"] == 4
    # every accepted round: FedAvg of the honest sites' updates, nothing of the attacker's
    run = {"root": root, "snapshots": snapshots, "history": saved["history"]}
    without = (federation.site_dirs[ATTACKER].name,)
    for round_, stage in enumerate(["autoencoder", "autoencoder", "denoiser"], start=1):
        check_secagg_round(run, round_, stage, sites=3, without=without)
    # round 1 starts where the honest run's does and ends where it does, within the rounding
    honest_round_1 = stage_vector(honest_run[2][0], "autoencoder")
    attacked_round_1 = stage_vector(snapshots[0], "autoencoder")
    step = quantization_step(first["clipping_range"], QUANTIZATION_RANGE)
    np.testing.assert_allclose(attacked_round_1, honest_round_1, rtol=0, atol=2 * 3 * step + 1e-6)


def test_with_no_site_to_spare_the_run_rolls_back_and_signs_nothing(federation):
    """Three sites, min_sites 3: leaving one out is not allowed, so the attacked round 2 ends the
    run at the round-1 checkpoint."""
    root = federation.root / "rollback"
    cfg = _config(root / "records", 3, 3)
    attacker = MaliciousSite(2, "shift", root / "records", from_round=2)
    with pytest.raises(FederationError, match="rolled back to the last good checkpoint"):
        run_plan(cfg, federation, root / "run", mods=[attacker], sites=3)
    saved = torch.load(root / "run" / CHECKPOINT_FILE, weights_only=True)
    assert saved["rounds_done"] == {"autoencoder": 1, "denoiser": 0}
    assert not (root / "run" / "anonymizer").exists()
