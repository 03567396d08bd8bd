"""`privdiff-client verify`: signed metadata and key id, or a non-zero exit status."""

from __future__ import annotations

import json
import shutil

from privdiff.client.cli import main
from privdiff.client.verify import metadata_yaml


def test_verify_prints_key_id_and_signed_metadata(tiny_model, capsys):
    assert (
        main(["verify", "--model", str(tiny_model.folder), "--public-key", str(tiny_model.public_key)]) == 0
    )
    out = capsys.readouterr().out
    assert tiny_model.key_id in out and "  rounds: 2" in out and "signature OK" in out


def test_the_signed_config_reads_as_yaml_not_one_escaped_string():
    """A federated model's metadata holds its resolved config as YAML text (server/workflow.py)."""
    config = "image_size: 32\nvae:\n  latent_channels: 4\n  block_out_channels: [16, 32]\n"
    text = metadata_yaml({"config": config, "sites": 2, "secagg": True})
    assert "\\n" not in text
    assert text.splitlines() == [
        "  secagg: true",
        "  sites: 2",
        "  config:",
        "    image_size: 32",
        "    vae:",
        "      latent_channels: 4",
        "      block_out_channels:",
        "      - 16",
        "      - 32",
    ]


def test_verify_json(tiny_model, capsys):
    argv = ["verify", "--model", str(tiny_model.folder), "--public-key", str(tiny_model.public_key), "--json"]
    assert main(argv) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["verified"] is True and record["key_id"] == tiny_model.key_id
    assert record["metadata"] == {"rounds": 2, "config": "tiny"} and len(record["model_sha256"]) == 64


def test_verify_fails_for_another_key_or_a_changed_file(tiny_model, tmp_path, capsys):
    assert (
        main(["verify", "--model", str(tiny_model.folder), "--public-key", str(tiny_model.other_public_key)])
        == 2
    )
    assert "signed by key" in capsys.readouterr().err
    changed = shutil.copytree(tiny_model.folder, tmp_path / "changed")
    (changed / "extra.txt").write_text("added after signing")
    assert main(["verify", "--model", str(changed), "--public-key", str(tiny_model.public_key)]) == 2
    assert "added after signing" in capsys.readouterr().err


def test_a_training_run_folder_stands_for_its_anonymizer(tiny_model, tmp_path, capsys):
    shutil.copytree(tiny_model.folder, tmp_path / "run" / "anonymizer")
    (tmp_path / "run" / "metrics.json").write_text("{}")  # run files beside it are not the model
    argv = ["verify", "--public-key", str(tiny_model.public_key), "--json", "--model"]
    assert main([*argv, str(tmp_path / "run")]) == 0
    from_run = json.loads(capsys.readouterr().out)
    assert main([*argv, str(tiny_model.folder)]) == 0
    assert from_run == json.loads(capsys.readouterr().out)
