"""The site's findings table (privdiff_core/anonymizer/findings_table.py) and `privdiff anonymize
--findings`: rows are found by SOP Instance UID or relative path, empty cells stay unknown, bad
tables are refused with file and line, and the generative anonymizer draws the listed findings."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from privdiff_core.anonymizer import Anonymizer, Conditions
from privdiff_core.anonymizer.findings_table import FindingsTable, read_findings_table
from privdiff_core.attributes import FINDINGS
from privdiff_core.cli import main
from privdiff_core.config import load_config
from privdiff_core.data.errors import DatasetError
from privdiff_core.synth import SynthParams, generate_arrays
from privdiff_core.training import build_models, local_train, save_anonymizer

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

HEADER = "sop_instance_uid,file," + ",".join(FINDINGS)


def row(uid: str, file: str, values: dict[str, str]) -> str:
    return ",".join([uid, file, *(values.get(name, "0") for name in FINDINGS)])


def write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_rows_are_found_by_uid_or_path_and_empty_cells_stay_unknown(tmp_path):
    table = read_findings_table(
        write(
            tmp_path / "labels.csv",
            HEADER,
            row("1.2.3", "images/p1/a.dcm", {"Cardiomegaly": "1", "Hernia": ""}),
            row("", "./images/p2/b.dcm", {"Effusion": "1.0"}),
        )
    )
    labels, known = table.lookup(sop_instance_uid="1.2.3")
    assert labels[FINDINGS.index("Cardiomegaly")] == 1.0 and sum(labels) == 1.0
    assert not known[FINDINGS.index("Hernia")] and sum(known) == len(FINDINGS) - 1
    assert table.lookup(file="images\\p2\\b.dcm") == table.lookup(
        sop_instance_uid="9.9", file="images/p2/b.dcm"
    )
    assert table.lookup(sop_instance_uid="1.2.3") == table.lookup(file="images/p1/a.dcm")
    assert table.lookup(sop_instance_uid="4.5.6", file="images/p3/c.dcm") is None
    conditions = FindingsTable.conditions([table.lookup(sop_instance_uid="1.2.3"), None])
    assert conditions.labels.shape == (2, len(FINDINGS)) and conditions.label_mask.dtype == torch.bool
    assert conditions.label_mask[0].sum() == len(FINDINGS) - 1 and not conditions.label_mask[1].any()


def test_chestxray14_finding_labels_are_read(tmp_path):
    table = read_findings_table(
        write(tmp_path / "t.csv", "file,Finding Labels", "a.png,Cardiomegaly|Effusion", "b.png,No Finding")
    )
    labels, known = table.lookup(file="a.png")
    assert all(known) and {FINDINGS[k] for k, v in enumerate(labels) if v} == {"Cardiomegaly", "Effusion"}
    assert sum(table.lookup(file="b.png")[0]) == 0.0 and all(table.lookup(file="b.png")[1])


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([HEADER], "no rows"),
        (["Finding Labels", "Effusion"], "sop_instance_uid or file column"),
        (["file,age", "a.png,40"], "no findings"),
        ([HEADER, row("1.2", "a.dcm", {"Mass": "yes"})], r"line 2: Mass must be 1, 0 or empty"),
        (["file,Finding Labels", "a.png,Effusion", "b.png,Flu"], r"line 3: unknown finding\(s\) Flu"),
        (
            [HEADER, row("1.2", "a.dcm", {}), row("1.2", "b.dcm", {})],
            r"line 3: sop_instance_uid '1.2' is listed twice",
        ),
        ([HEADER, row("", "", {})], "line 2: no sop_instance_uid or file"),
    ],
)
def test_bad_tables_are_refused_with_file_and_line(tmp_path, lines, message):
    with pytest.raises(DatasetError, match=message):
        read_findings_table(write(tmp_path / "bad.csv", *lines))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data = generate_arrays(SynthParams(sites=1, patients=6, images_per_patient=2, size=32)).to_tensors()
    cfg = load_config("tiny", ["device=cpu", "anonymize.ddim_steps=3"])
    models = build_models(cfg)
    with torch.random.fork_rng():
        for stage in ("autoencoder", "denoiser"):
            local_train(models, stage, data, cfg, 3, seed=0, progress=False)
    return save_anonymizer(models, cfg, tmp_path_factory.mktemp("model") / "anonymizer"), data


def test_anonymize_command_draws_the_tables_findings(trained, tmp_path, capsys):
    """Listed films come out as the anonymizer draws them told their findings; unlisted ones as
    without a table; the summary line counts both."""
    folder, data = trained
    source = tmp_path / "in"
    source.mkdir()
    for k in range(3):
        grey = ((data.images[k, 0].numpy() + 1) * 127.5).round().astype("uint8")
        Image.fromarray(grey).save(source / f"film{k}.png")
    cardiomegaly = {name: "0" for name in FINDINGS} | {"Cardiomegaly": "1", "Effusion": "1"}
    table = write(
        tmp_path / "findings.csv", HEADER, row("", "film0.png", cardiomegaly), row("", "film1.png", {})
    )
    args = ["anonymize", "--model", str(folder), "--in", str(source), "--no-progress", "--seed", "4"]
    assert main([*args, "--out", str(tmp_path / "told"), "--findings", str(table)]) == 0
    assert f"findings from {table} for 2, estimated for 1" in capsys.readouterr().out
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0

    def film(folder_name: str, k: int) -> np.ndarray:
        with Image.open(tmp_path / folder_name / f"film{k}.png") as image:
            return np.asarray(image)

    assert not np.array_equal(film("told", 0), film("plain", 0))  # told Cardiomegaly + Effusion
    assert np.array_equal(film("told", 2), film("plain", 2))  # not listed: estimated, as without a table
    # The listed film is exactly what the anonymizer draws when told those findings.
    from privdiff_core.anonymizer import seed_for
    from privdiff_core.data.images import read_image_tensor

    anonymizer = Anonymizer.load(folder)
    labels = torch.tensor([[float(cardiomegaly[name]) for name in FINDINGS]])
    direct = anonymizer.anonymize(
        read_image_tensor(source / "film0.png", 32)[None],
        Conditions(labels=labels, label_mask=torch.ones_like(labels, dtype=torch.bool)),
        seed=[seed_for(4, "film0.png")],
    )
    expected = np.round(np.clip((direct[0, 0].double().numpy() + 1) / 2, 0, 1) * 255).astype(np.uint8)
    assert np.array_equal(film("told", 0), expected)
    bad = write(tmp_path / "bad.csv", "file,Finding Labels", "film0.png,Flu")
    assert main([*args, "--out", str(tmp_path / "bad"), "--findings", str(bad)]) == 2
    assert "unknown finding" in capsys.readouterr().err and not (tmp_path / "bad").exists()
