"""The federated plan end to end in Flower's simulation engine (Ray), on the tiny PrivDiff-Net.

One SecAgg+ run of 3 sites (2 autoencoder rounds, 1 denoiser round) is shared by several tests:
round 1 starts with a clipping range far too small for the updates (the round must be discarded
and rerun with a range that holds them, never averaged with clipped values), site 2 drops out of
round 3 after SecAgg+ key sharing, and site 1 holds the wrong federation key when the
anonymizer is distributed. Every site records what it received and computed, so each round's
SecAgg+ aggregate is compared with plain FedAvg of the sites' real updates.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from federation_checks import (
    as_vector,
    check_secagg_round,
    fedavg_of,
    float32_rounding,
    run_plan,
    site_records,
    stage_vector,
)
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, Key
from recording_task import DropOutMod, make_federation, tiny_config

from privdiff.common.distribution import current_model
from privdiff.server.checkpoint import CHECKPOINT_FILE
from privdiff_core.signing import (
    folder_hashes,
    generate_signing_key,
    load_private_key,
    sign_model,
    verify_model,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def secagg_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("secagg")
    fed = make_federation(root, 3)
    # site 1 holds another federation's key: it must refuse the anonymizer and keep its model
    generate_signing_key(root / "other.pem", root / "other.pub")
    shutil.copy(root / "other.pub", fed.homes[1] / "federation-public.pem")
    previous = root / "previous-model"
    previous.mkdir()
    (previous / "weights.bin").write_bytes(b"an older anonymizer")
    sign_model(previous, load_private_key(root / "other.pem"), {"created": "2026-01-01T00:00:00Z"})
    from privdiff.common.distribution import install_anonymizer, pack_folder

    assert install_anonymizer(
        pack_folder(previous),
        "old-model",
        fed.homes[1] / "model-store",
        fed.homes[1] / "federation-public.pem",
    ).installed
    cfg = tiny_config(
        root / "records", secagg={"initial_clipping_range": 2.0**-9}, rounds={"autoencoder": 2, "denoiser": 1}
    )
    lines: list[str] = []
    snapshots = run_plan(cfg, fed, root / "run", mods=[DropOutMod(partition=2, round_=3)], lines=lines)
    return {
        "root": root,
        "fed": fed,
        "snapshots": snapshots,
        "lines": lines,
        "history": torch.load(snapshots[-1], weights_only=True)["history"],
    }


def test_secagg_rounds_complete_and_match_plain_fedavg(secagg_run):
    history = secagg_run["history"]
    assert [(h["round"], h["stage"]) for h in history] == [
        (1, "autoencoder"),
        (2, "autoencoder"),
        (3, "denoiser"),
    ]
    assert len(secagg_run["snapshots"]) == 3
    check_secagg_round(secagg_run, 1, "autoencoder", sites=3)
    check_secagg_round(secagg_run, 2, "autoencoder", sites=3)
    # the virtual sites train at the simulation's own priority, not at Ray's default nice 15
    records = site_records(secagg_run["root"] / "records", "autoencoder")
    assert {r["niceness"] for r in records} == {os.getpriority(os.PRIO_PROCESS, 0)}
    # ... and keep in step (training/pacing.py), through a folder the run removes when it ends
    assert all(r["paced"] for r in records)
    assert not (secagg_run["root"] / "run" / "site-pace").exists()
    # each round trains its share of the stage's learning-rate schedule: 2 rounds, then 1
    assert {tuple(r["schedule_span"]) for r in records} == {(0.0, 0.5), (0.5, 1.0)}
    denoiser = site_records(secagg_run["root"] / "records", "denoiser")
    assert {tuple(r["schedule_span"]) for r in denoiser} == {(0.0, 1.0)}


def test_too_small_range_discards_the_round_and_reruns_it_with_a_wider_one(secagg_run):
    first, second, _ = secagg_run["history"]
    [discarded] = first["discarded"]
    assert discarded["clipping_range"] == 2.0**-9 and discarded["clipped-values"] > 0
    assert any("discarded, running it again" in line for line in secagg_run["lines"])
    records = site_records(secagg_run["root"] / "records", "autoencoder")
    largest = max(np.abs(as_vector(r["after"]) - as_vector(r["before"])).max() for r in records)
    assert largest > discarded["clipping_range"]  # the updates really were larger than the range
    # the accepted round used a range that holds every update: nothing clipped, nothing lost
    assert first["clipped-values"] == 0 and first["clipping_range"] >= largest
    assert second["clipped-values"] == 0 and not second["discarded"]


def test_site_dropping_out_mid_round_does_not_stop_the_round(secagg_run):
    third = secagg_run["history"][2]
    assert third["stage"] == "denoiser"
    assert third["sites"] == 2 and third["dropped"] == 1
    records = site_records(secagg_run["root"] / "records", "denoiser")
    assert sorted(r["site"] for r in records) == ["site_00", "site_01"]
    # the denoiser round trained on the federation's autoencoder, not on a site's own
    autoencoder = stage_vector(secagg_run["snapshots"][1], "autoencoder")
    for record in records:
        np.testing.assert_array_equal(as_vector(record["frozen"]), autoencoder)
    check_secagg_round(secagg_run, 3, "denoiser", sites=2)


def test_signed_anonymizer_reaches_sites_and_a_wrong_key_site_keeps_its_model(secagg_run):
    root, fed = secagg_run["root"], secagg_run["fed"]
    folder = root / "run" / "anonymizer"
    payload = verify_model(folder, _public(fed.public_key))
    assert payload["metadata"]["secagg"] is True
    assert payload["metadata"]["sites"] == 3
    assert payload["metadata"]["rounds"] == {"autoencoder": 2, "denoiser": 1}
    for home in (fed.homes[0], fed.homes[2]):
        installed = current_model(home / "model-store")
        assert installed is not None and installed.parent.name == "anonymizers"
        verify_model(installed, _public(home / "federation-public.pem"))
        assert folder_hashes(installed) == folder_hashes(folder)
    kept = current_model(fed.homes[1] / "model-store")
    assert kept is not None and kept.name == "old-model"
    assert any("kept its previous model" in line for line in secagg_run["lines"])


def _public(path: Path):
    from privdiff_core.signing import load_public_key

    return load_public_key(path)


def test_plain_fedavg_switch_and_resume_after_a_server_crash(tmp_path, monkeypatch):
    """SecAgg+ off: the aggregate is exactly FedAvg. The server dies in the middle of round 2;
    restarted on the same folder it resumes at round 2 from the round-1 checkpoint."""
    import privdiff.server.workflow as workflow

    fed = make_federation(tmp_path / "fed", 3)
    cfg = tiny_config(tmp_path / "records", secagg={"enabled": False})
    out = tmp_path / "run"
    real_fit = workflow.default_fit_workflow

    def crashing_fit(grid, context):
        if int(context.state.config_records[MAIN_CONFIGS_RECORD][Key.CURRENT_ROUND]) == 2:
            raise RuntimeError("server machine lost power")
        real_fit(grid, context)

    monkeypatch.setattr(workflow, "default_fit_workflow", crashing_fit)
    with pytest.raises(RuntimeError, match="lost power"):
        run_plan(cfg, fed, out)
    saved = torch.load(out / CHECKPOINT_FILE, weights_only=True)
    assert saved["rounds_done"] == {"autoencoder": 1, "denoiser": 0} and not saved["completed"]
    assert not (out / "anonymizer").exists()
    shutil.copy(out / CHECKPOINT_FILE, tmp_path / "round-1.pt")
    records = site_records(tmp_path / "records", "autoencoder")
    expected, base = fedavg_of(records, 0.0)
    np.testing.assert_allclose(
        stage_vector(tmp_path / "round-1.pt", "autoencoder") - base,
        expected,
        rtol=0,
        atol=float32_rounding(base) + 1e-6 * np.abs(expected).max(),
    )

    monkeypatch.setattr(workflow, "default_fit_workflow", real_fit)
    lines: list[str] = []
    run_plan(cfg, fed, out, lines=lines)
    assert any("resuming" in line and "1 of 2 rounds done" in line for line in lines)
    assert [line.split("]")[0] for line in lines if line.startswith("[")] == ["[denoiser 1/1"]
    assert len(site_records(tmp_path / "records", "autoencoder")) == 3  # round 1 was not trained again
    history = torch.load(out / CHECKPOINT_FILE, weights_only=True)["history"]
    assert [h["round"] for h in history] == [1, 2]
    denoiser = site_records(tmp_path / "records", "denoiser")
    for record in denoiser:  # round 2 built on the checkpointed round-1 autoencoder
        np.testing.assert_array_equal(
            as_vector(record["frozen"]), stage_vector(tmp_path / "round-1.pt", "autoencoder")
        )
    expected, base = fedavg_of(denoiser, 0.0)
    np.testing.assert_allclose(
        stage_vector(out / CHECKPOINT_FILE, "denoiser") - base,
        expected,
        rtol=0,
        atol=float32_rounding(base) + 1e-6 * np.abs(expected).max(),
    )
    verify_model(out / "anonymizer", _public(fed.public_key))
    assert verify_model(out / "anonymizer", _public(fed.public_key))["metadata"]["secagg"] is False


def test_central_dp_with_flowers_own_secagg_vector_path(tmp_path):
    """federation.dp on, and Flower's stock SecAgg+ (implementation: flower): each site's update is
    clipped to the L2 norm, the aggregate is their FedAvg plus Gaussian noise of the configured
    size, and the SecAgg+ range follows the norm (nothing is clipped twice)."""
    fed = make_federation(tmp_path / "fed", 3)
    norm, multiplier = 0.05, 0.5
    cfg = tiny_config(
        tmp_path / "records",
        rounds={"autoencoder": 1, "denoiser": 0},
        secagg={"implementation": "flower"},
        dp={"enabled": True, "noise_multiplier": multiplier, "clipping_norm": norm},
    )
    snapshots = run_plan(cfg, fed, tmp_path / "run")
    [entry] = torch.load(snapshots[-1], weights_only=True)["history"]
    assert entry["clipping_range"] == 2.0 ** np.ceil(np.log2(norm)) and entry["clipped-values"] == 0
    records = site_records(tmp_path / "records", "autoencoder")
    bases = [as_vector(r["before"]) for r in records]
    updates = [as_vector(r["after"]) - base for r, base in zip(records, bases, strict=True)]
    assert min(np.linalg.norm(u) for u in updates) > norm  # the clipping had work to do
    clipped = [u * min(1.0, norm / np.linalg.norm(u)) for u in updates]
    fedavg = sum(clipped) / len(clipped)  # under DP every site weighs the same (its sensitivity)
    noise = stage_vector(snapshots[-1], "autoencoder") - bases[0] - fedavg
    sigma = multiplier * norm / 3  # Flower's compute_stdv: noise_multiplier * clipping_norm / sampled sites
    assert abs(noise.mean()) < 4 * sigma / np.sqrt(noise.size)
    assert 0.8 * sigma < noise.std() < 1.2 * sigma  # ~250 values: the estimate is within ~5% (1 sd)
    payload = verify_model(tmp_path / "run" / "anonymizer", _public(fed.public_key))
    expected = {
        "enabled": True,
        "noise_multiplier": multiplier,
        "clipping_norm": norm,
        "target_delta": 1e-5,
        "max_epsilon": None,
    }
    assert payload["metadata"]["dp"] == expected
    # epsilon of one Gaussian release at this multiplier, from Flower's RDP accountant
    privacy = payload["metadata"]["privacy"]
    assert privacy["releases"] == 1 and privacy["delta"] == 1e-5 and privacy["budget_spent"] is False
    assert privacy["epsilon"] == pytest.approx(entry["epsilon"]) and 10 < privacy["epsilon"] < 100
    audit = json.loads((tmp_path / "run" / "privacy.json").read_text())
    assert audit["rounds"] == [{"round": 1, "stage": "autoencoder", "epsilon": entry["epsilon"]}]


def test_dp_training_stops_when_the_next_round_would_exceed_the_budget(tmp_path):
    """noise_multiplier 1: one round costs epsilon 4.7, two 7.1 (delta 1e-5, RDP). With
    max_epsilon 6 the second round never runs; the model of round 1 is signed, saying so.
    privdiff's own SecAgg+ vector path carries the DP round."""
    fed = make_federation(tmp_path / "fed", 3)
    cfg = tiny_config(
        tmp_path / "records",
        rounds={"autoencoder": 2, "denoiser": 0},
        dp={"enabled": True, "noise_multiplier": 1.0, "clipping_norm": 0.05, "max_epsilon": 6.0},
    )
    lines: list[str] = []
    run_plan(cfg, fed, tmp_path / "run", lines=lines)
    saved = torch.load(tmp_path / "run" / CHECKPOINT_FILE, weights_only=True)
    assert saved["rounds_done"] == {"autoencoder": 1, "denoiser": 0} and saved["privacy"]["budget_spent"]
    assert any("privacy budget: round 2 could take epsilon past" in line for line in lines)
    privacy = verify_model(tmp_path / "run" / "anonymizer", _public(fed.public_key))["metadata"]["privacy"]
    assert privacy["budget_spent"] is True and privacy["releases"] == 1
    assert 4 < privacy["epsilon"] <= 6.0 and privacy["max_epsilon"] == 6.0
