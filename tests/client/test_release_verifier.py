"""The release's judge is independent by default: the site's own verifier (`privdiff-client
train-verifier`), found in the site folder; the model's own verifier only when asked for. And the
audit trail says what privacy budget the signed model states."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest
from phi_dicom import copy_real

from privdiff.client.cli import main
from privdiff.client.site_verifier import load_site_judges
from privdiff_core.signing import SIGNATURE_FILE, load_private_key, sign_model


def _release_argv(model, key, source, out, secret) -> list[str]:
    argv = ["release", "--model", str(model), "--public-key", str(key), "--in", str(source)]
    return argv + ["--out", str(out), "--site-secret", str(secret), "--no-progress", "--device", "cpu"]


def test_train_verifier_saves_both_judges_in_the_site_folder(
    synthetic_federation, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("PRIVDIFF_HOME", str(tmp_path / "home"))
    argv = ["train-verifier", "--data", str(synthetic_federation / "site_01"), "--config", "tiny"]
    argv += ["evaluate.verifier.steps=5", "evaluate.classifier.steps=5", "--no-progress"]
    assert main(argv) == 0
    folder = tmp_path / "home" / "verifier"
    assert f"saved in {folder}" in capsys.readouterr().err  # logged (privdiff_core/logs.py)
    assert {p.name for p in folder.iterdir()} >= {
        "verifier.json",
        "verifier.safetensors",
        "diagnosis.json",
        "diagnosis.safetensors",
    }
    judges = load_site_judges(folder)
    assert judges.image_size == 32 and judges.diagnosis is not None
    assert not list(tmp_path.glob("home/.verifier*"))  # no temporary folder left behind


def test_train_verifier_on_a_folder_without_films_says_so_in_one_line(tmp_path, capfd):
    (tmp_path / "empty").mkdir()
    assert main(["train-verifier", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "v")]) == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "v").exists()


def test_without_an_independent_verifier_the_release_refuses_to_start(
    tiny_model, tmp_path, monkeypatch, capfd
):
    monkeypatch.setenv("PRIVDIFF_HOME", str(tmp_path / "home"))  # a site folder without a verifier
    copy_real("rsna_cr_jpeg_baseline.dcm", tmp_path / "in")
    (tmp_path / "secret").write_bytes(b"verifier test site secret 012345")
    argv = _release_argv(
        tiny_model.folder, tiny_model.public_key, tmp_path / "in", tmp_path / "out", tmp_path / "secret"
    )
    assert main(argv) == 2
    err = capfd.readouterr().err
    assert (
        "no independent verifier" in err
        and "privdiff-client train-verifier" in err
        and "--own-verifier" in err
    )
    assert "Traceback" not in err
    assert not (tmp_path / "out" / "released").exists()


@pytest.fixture
def dp_model(tiny_model, tmp_path):
    """The tiny model signed as a federated DP run signs it (server/privacy.py's summary)."""
    folder = tmp_path / "dp-model"
    shutil.copytree(tiny_model.folder, folder)
    (folder / SIGNATURE_FILE).unlink()
    privacy = {"epsilon": 7.0812, "delta": 1e-05, "max_epsilon": None, "releases": 2, "budget_spent": False}
    key = load_private_key(tiny_model.public_key.with_name("federation.key"))
    sign_model(folder, key, {"dp": {"enabled": True, "noise_multiplier": 1.0}, "privacy": privacy})
    return folder


def test_the_site_verifier_judges_by_default_and_the_audit_states_epsilon(
    tiny_model, dp_model, synthetic_federation, tmp_path, monkeypatch
):
    monkeypatch.setenv("PRIVDIFF_HOME", str(tmp_path / "home"))
    trained = ["train-verifier", "--data", str(synthetic_federation / "site_01"), "--config", "tiny"]
    assert main([*trained, "evaluate.verifier.steps=5", "evaluate.classifier.steps=5", "--no-progress"]) == 0
    copy_real("rsna_cr_jpeg_baseline.dcm", tmp_path / "in")
    (tmp_path / "secret").write_bytes(b"verifier test site secret 012345")
    out = tmp_path / "out"
    argv = _release_argv(dp_model, tiny_model.public_key, tmp_path / "in", out, tmp_path / "secret")
    assert main([*argv, "--quarantine-threshold", "1.0", "--no-text-check"]) == 0
    db = sqlite3.connect(out / "audit.sqlite")
    try:
        (judge, budget), *_ = db.execute("SELECT residual_check, model_privacy FROM runs").fetchall()
    finally:
        db.close()
    assert judge == f"site verifier ({tmp_path / 'home' / 'verifier'})"
    assert budget == "DP epsilon 7.081 at delta 1e-05"
    summary = json.loads((out / "release_summary.json").read_text())
    assert summary["model_privacy"] == budget and summary["residual_check"]["verifier"] == judge


def test_own_verifier_is_used_only_when_asked_for_and_says_so(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("PRIVDIFF_HOME", str(tmp_path / "home"))
    copy_real("rsna_cr_jpeg_baseline.dcm", tmp_path / "in")
    (tmp_path / "secret").write_bytes(b"verifier test site secret 012345")
    out = tmp_path / "out"
    argv = _release_argv(tiny_model.folder, tiny_model.public_key, tmp_path / "in", out, tmp_path / "secret")
    assert main([*argv, "--own-verifier", "--quarantine-threshold", "1.0", "--no-text-check"]) == 0
    summary = json.loads((out / "release_summary.json").read_text())
    assert summary["residual_check"]["verifier"] == "anonymizer's own verifier (--own-verifier)"
    assert summary["model_privacy"] == "not stated by the signed metadata"


def test_the_gate_trains_quick_judges_when_the_config_says_so():
    """federation.validation.judge_steps: a site without judges trains them at the gate with that
    many steps (demo: 400; with the evaluate sections' 2500 + 2000, three simulated sites on two
    cores missed the gate's 900 s wait); train-verifier keeps the full budget."""
    from privdiff.client.site_verifier import judge_settings
    from privdiff_core.config import load_config

    cfg = load_config("demo")
    full_verifier, full_classifier = judge_settings(cfg)
    assert (full_verifier.steps, full_classifier.steps) == (
        cfg.evaluate.verifier.steps,
        cfg.evaluate.classifier.steps,
    )
    quick_verifier, quick_classifier = judge_settings(cfg, cfg.federation.validation.judge_steps)
    assert quick_verifier.steps == quick_classifier.steps == 400
    assert (
        quick_verifier.backbone == full_verifier.backbone
        and quick_classifier.widths == full_classifier.widths
    )
    # the evaluation's verifier network, not nets.py's default (3.5x the time per step at the gate)
    assert quick_verifier.widths == full_verifier.widths == tuple(cfg.evaluate.verifier.widths)


def test_site_judges_report_progress_over_both_judges(synthetic_federation, tmp_path):
    """A simulated site paces its gate judges (training/pacing.py) as one run of steps: the
    verifier's, then the classifier's, ending at their sum; without labels, the verifier's alone."""
    from privdiff.client.site_verifier import judge_settings, train_site_judges
    from privdiff_core.config import load_config

    verifier, classifier = judge_settings(load_config("tiny"), 4)
    reported: list[tuple[int, int]] = []
    site = synthetic_federation / "site_01"
    train_site_judges(
        site, tmp_path / "judges", 32, verifier, classifier, on_progress=lambda *p: reported.append(p)
    )
    assert [done for done, _ in reported] == [
        0,
        1,
        2,
        3,
        4,
        4,
        5,
        6,
        7,
        8,
    ]  # the verifier ends where the classifier starts
    assert {total for _, total in reported} == {8}

    unlabelled = tmp_path / "unlabelled"
    shutil.copytree(site, unlabelled)
    table = (unlabelled / "labels.csv").read_text().splitlines()
    width = len(table[0].split(","))
    keep = 3  # sop_instance_uid, file, split; every finding unknown
    rows = [",".join(line.split(",")[:keep] + [""] * (width - keep)) for line in table[1:]]
    (unlabelled / "labels.csv").write_text("\n".join([table[0], *rows]) + "\n")
    reported.clear()
    judges = train_site_judges(
        unlabelled, tmp_path / "judges-2", 32, verifier, classifier, on_progress=lambda *p: reported.append(p)
    )
    assert judges.diagnosis is None
    assert reported == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
