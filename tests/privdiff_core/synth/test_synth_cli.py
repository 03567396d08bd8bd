"""`privdiff synth` on the command line."""

import json

import pytest

from privdiff_core.cli import main


def test_help_teaches_the_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--out", "--sites", "--patients", "--images-per-patient", "--size", "--seed", "--overwrite"):
        assert flag in text
    assert "labels.csv" in text and "byte-identical" in text


def test_flags_override_the_config(tmp_path, capsys):
    out = tmp_path / "fed"
    status = main(
        ["synth", "--out", str(out), "--config", "tiny", "--patients", "3", "--images-per-patient", "2",
         "--no-progress", "synth.sites=1"]
    )  # fmt: skip
    assert status == 0
    arguments = json.loads((out / "federation.json").read_text())["arguments"]
    assert arguments["patients"] == 3 and arguments["images_per_patient"] == 2 and arguments["sites"] == 1
    assert arguments["size"] == 32  # from configs/tiny.yaml
    assert len(list(out.rglob("*.dcm"))) == 6
    assert "wrote 6 images" in capsys.readouterr().out


def test_refuses_to_overwrite_without_the_flag(tmp_path, capsys):
    out = tmp_path / "fed"
    args = [
        "synth",
        "--out",
        str(out),
        "--config",
        "tiny",
        "--patients",
        "3",
        "--sites",
        "1",
        "--no-progress",
    ]
    assert main(args) == 0
    before = (out / "federation.json").read_text()
    assert main([*args, "--seed", "9"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (out / "federation.json").read_text() == before
    assert main([*args, "--seed", "9", "--overwrite"]) == 0
    assert json.loads((out / "federation.json").read_text())["arguments"]["seed"] == 9


def test_bad_values_are_reported_without_a_traceback(tmp_path, capsys):
    assert (
        main(["synth", "--out", str(tmp_path / "x"), "--config", "tiny", "--size", "8", "--no-progress"]) == 2
    )
    assert "size must be between 32" in capsys.readouterr().err
    assert main(["synth", "--out", str(tmp_path / "x"), "--config", "tiny", "synth.nope=1"]) == 2
    assert "unknown config key" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
