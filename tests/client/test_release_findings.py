"""`privdiff-client release --findings`: the site's report findings reach the anonymizer film by
film (by SOP Instance UID or by path), films the table does not list are estimated, the summary
counts both, and a bad table stops the release before any input is read."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pydicom

from privdiff.client.cli import main
from privdiff_core.anonymizer import Anonymizer
from privdiff_core.attributes import FINDINGS


def _argv(tiny_model, source: Path, out: Path, secret: Path) -> list[str]:
    argv = ["release", "--model", str(tiny_model.folder), "--public-key", str(tiny_model.public_key)]
    argv += ["--in", str(source), "--out", str(out), "--site-secret", str(secret), "--own-verifier"]
    return argv + ["--quarantine-threshold", "1.0", "--no-text-check", "--no-progress", "--device", "cpu"]


def test_the_release_draws_the_films_report_findings(tiny_model, synthetic_federation, tmp_path, monkeypatch):
    site = Path(shutil.copytree(synthetic_federation / "site_01", tmp_path / "site"))
    with (site / "labels.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    films = [row for row in rows if (site / row["file"]).is_file()][:6]
    assert any(float(row[name]) for row in films for name in FINDINGS)  # some findings to pass on
    source = tmp_path / "in"
    for row in films:
        (source / row["file"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(site / row["file"], source / row["file"])
    # Two films by UID (file column empty), two by path (UID column empty), two not listed.
    table = tmp_path / "findings.csv"
    with table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["sop_instance_uid", "file", *FINDINGS])
        writer.writeheader()
        for k, row in enumerate(films[:4]):
            keyed = (
                {"sop_instance_uid": row["sop_instance_uid"], "file": ""} if k < 2 else {"file": row["file"]}
            )
            writer.writerow({name: row[name] for name in FINDINGS} | {"sop_instance_uid": ""} | keyed)
    told: list[tuple[tuple[float, ...], tuple[bool, ...]]] = []
    original = Anonymizer.anonymize

    def recording(self, images, conditions=None, seed=0, **settings):
        assert conditions is not None and conditions.labels.shape == (len(images), len(FINDINGS))
        told.extend(
            (tuple(labels.tolist()), tuple(mask.tolist()))
            for labels, mask in zip(conditions.labels, conditions.label_mask, strict=True)
        )
        return original(self, images, conditions, seed, **settings)

    monkeypatch.setattr(Anonymizer, "anonymize", recording)
    (tmp_path / "secret").write_bytes(b"findings test site secret 012345")
    out = tmp_path / "out"
    assert main([*_argv(tiny_model, source, out, tmp_path / "secret"), "--findings", str(table)]) == 0
    expected = [(tuple(float(row[name]) for name in FINDINGS), (True,) * len(FINDINGS)) for row in films[:4]]
    unknown = ((0.0,) * len(FINDINGS), (False,) * len(FINDINGS))
    assert sorted(told) == sorted([*expected, unknown, unknown])
    summary = json.loads((out / "release_summary.json").read_text())
    assert summary["findings"] == {"from_table": 4, "estimated": 2}
    assert summary["counts"]["released"] == 6
    released = list((out / "released").rglob("*.dcm"))
    uids = {row["sop_instance_uid"] for row in films}
    assert len(released) == 6 and not uids & {pydicom.dcmread(p).SOPInstanceUID for p in released}


def test_a_bad_findings_table_stops_the_release_before_any_input_is_read(tiny_model, tmp_path, capfd):
    source = tmp_path / "in"
    source.mkdir()
    (source / "film.dcm").write_bytes(b"not read")
    table = tmp_path / "findings.csv"
    table.write_text("file,Finding Labels\nfilm.dcm,Cardiomegaly|Flu\n")
    (tmp_path / "secret").write_bytes(b"findings test site secret 012345")
    out = tmp_path / "out"
    assert main([*_argv(tiny_model, source, out, tmp_path / "secret"), "--findings", str(table)]) == 2
    err = capfd.readouterr().err
    assert "--findings" in err and "line 2" in err and "Flu" in err and "Traceback" not in err
    assert not (out / "released").exists()
