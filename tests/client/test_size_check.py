"""client/size_check.py: a release that turns big films into small ones says so."""

from __future__ import annotations

from phi_dicom import copy_real

from privdiff.client.cli import main
from privdiff.client.size_check import model_image_size, shrink_warning, typical_input_size


def test_a_real_cr_through_the_tiny_model_is_flagged(tiny_model, tmp_path):
    copy_real("rsna_cr_jpeg_baseline.dcm", tmp_path / "in")
    (tmp_path / "in" / "notes.txt").write_text("not DICOM")  # skipped, not counted
    assert model_image_size(tiny_model.folder) == 32
    side = typical_input_size(tmp_path / "in")
    assert side is not None and side >= 4 * 32
    warning = shrink_warning(tiny_model.folder, tmp_path / "in")
    assert warning.startswith(f"the outputs are 32x32 px, the inputs about {side} px")


def test_films_near_the_models_size_are_not_flagged(tiny_model, synthetic_federation):
    # the synthetic sites' films are made at the tiny config's 32 px
    assert shrink_warning(tiny_model.folder, synthetic_federation / "site_00" / "images") is None


def test_the_release_prints_the_warning_and_logs_its_summary(tiny_model, tmp_path, capfd):
    copy_real("rsna_cr_jpeg_baseline.dcm", tmp_path / "in")
    (tmp_path / "secret").write_bytes(b"size check test site secret 0123")
    argv = ["release", "--model", str(tiny_model.folder), "--public-key", str(tiny_model.public_key)]
    argv += ["--own-verifier"]
    argv += [
        "--in",
        str(tmp_path / "in"),
        "--out",
        str(tmp_path / "out"),
        "--site-secret",
        str(tmp_path / "secret"),
    ]
    argv += ["--log", str(tmp_path / "site.log"), "--log-file", str(tmp_path / "ops.log")]
    assert main([*argv, "--no-progress", "--device", "cpu", "--quarantine-threshold", "1.0"]) == 0
    assert "privdiff-client release: WARNING: the outputs are 32x32 px" in capfd.readouterr().err
    # --log-file: the operations team's copy, plain and timestamped
    ops = (tmp_path / "ops.log").read_text()
    assert " WARNING privdiff.release: the outputs are 32x32 px" in ops and "\x1b" not in ops
    # --log: the summary joins the site's log as one event, counts only
    (line,) = (tmp_path / "site.log").read_text().splitlines()
    assert "privdiff: release into out: released 1, quarantined 0, refused 0, failed 0" in line
    assert "rsna" not in line and str(tmp_path) not in line
