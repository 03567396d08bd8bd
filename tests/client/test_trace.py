"""`privdiff-client trace`: a release's outputs mapped back to their input files, on site only:
with the release's site secret and input folder, and never written into the release folder."""

from __future__ import annotations

import json

import pytest
from phi_dicom import copy_real

from privdiff.client.cli import main


@pytest.fixture(scope="module")
def released(tiny_model, tmp_path_factory):
    """A real release: one CR released, one CR quarantined (another run, threshold 0), one refused."""
    root = tmp_path_factory.mktemp("trace")
    source, out, secret = root / "in", root / "out", root / "secret"
    secret.write_bytes(b"trace test site secret 0123456789")
    copy_real("rsna_cr_jpeg_baseline.dcm", source / "Doe^Jane" / "chest")
    copy_real("ct_not_a_radiograph.dcm", source / "Doe^Jane")
    argv = ["release", "--model", str(tiny_model.folder), "--public-key", str(tiny_model.public_key)]
    argv += ["--own-verifier"]
    argv += ["--in", str(source), "--out", str(out), "--site-secret", str(secret), "--no-progress"]
    assert main([*argv, "--device", "cpu", "--quarantine-threshold", "1.0"]) == 1  # the CT is refused
    copy_real("rsna_cr_jpeg_baseline_monochrome1.dcm", source / "Roe^John")
    assert main([*argv, "--device", "cpu", "--quarantine-threshold", "0"]) == 1  # ... and this one held back
    return source, out, secret


def test_every_output_leads_back_to_its_input(released, capsys):
    source, out, secret = released
    capsys.readouterr()
    assert (
        main(["trace", "--out", str(out), "--in", str(source), "--site-secret", str(secret), "--json"]) == 0
    )
    rows = {row["input"]: row for row in json.loads(capsys.readouterr().out)["outputs"]}
    assert set(rows) == {
        "Doe^Jane/chest/rsna_cr_jpeg_baseline.dcm",
        "Doe^Jane/ct_not_a_radiograph.dcm",
        "Roe^John/rsna_cr_jpeg_baseline_monochrome1.dcm",
    }
    released_row = rows["Doe^Jane/chest/rsna_cr_jpeg_baseline.dcm"]
    quarantined = rows["Roe^John/rsna_cr_jpeg_baseline_monochrome1.dcm"]
    assert released_row["status"] == "released" and (out / released_row["output"]).is_file()
    assert quarantined["status"] == "quarantined" and quarantined["output"].startswith("quarantine/")
    assert rows["Doe^Jane/ct_not_a_radiograph.dcm"]["output"] == ""
    # one quarantined file, by its path: what a site asks when it reviews the quarantine
    assert main(["trace", "--out", str(out), "--in", str(source), "--site-secret", str(secret),
                 str(out / quarantined["output"])]) == 0  # fmt: skip
    (line,) = capsys.readouterr().out.splitlines()
    assert line.endswith("<-  Roe^John/rsna_cr_jpeg_baseline_monochrome1.dcm  [quarantined: residual_risk]")


def test_the_map_is_never_written_into_the_release(released):
    _, out, _ = released
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".dcm", ".json"):
            assert b"Doe^Jane" not in path.read_bytes() and b"Roe^John" not in path.read_bytes(), path


def test_without_the_release_secret_nothing_maps(released, tmp_path, capsys):
    source, out, _ = released
    other = tmp_path / "other-secret"
    other.write_bytes(b"some other site secret 0123456789")
    assert main(["trace", "--out", str(out), "--in", str(source), "--site-secret", str(other)]) == 2
    assert "another input folder or site secret?" in capsys.readouterr().err
    assert main(["trace", "--out", str(source), "--in", str(source), "--site-secret", str(other)]) == 2
    assert "not the output folder of a release" in capsys.readouterr().err
