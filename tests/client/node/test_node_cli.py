"""`privdiff-client serve`'s command line: mistakes get one line that says what to fix."""

from __future__ import annotations

import pytest

from privdiff.client.cli import main


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "missing --model, --destination, --allow-ae"),
        (["--model", "m", "--destination", "ARCHIVE@h:104", "--allow-ae", "PACS", "--port", "0"], "--port"),
        (["--model", "m", "--destination", "ARCHIVE@h:104", "--allow-ae", "A" * 17], "AE title"),
        (
            ["--model", "m", "--destination", "ARCHIVE@h:104", "--allow-ae", "PACS", "--tls-cert", "c"],
            "--tls-key",
        ),
        (["--model", "m", "--destination", "archive-host", "--allow-ae", "PACS"], "AE_TITLE@HOST:PORT"),
        (["--model", "missing", "--destination", "ARCHIVE@h:104", "--allow-ae", "PACS"], "no such folder"),
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path, capsys, extra, message):
    assert main(["serve", "--node-dir", str(tmp_path / "node"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "node").exists()  # nothing created for a node that did not start


def test_status_of_a_folder_where_no_node_ran(tmp_path, capsys):
    assert main(["serve", "--node-dir", str(tmp_path), "--status"]) == 2
    assert "no node has run in this folder" in capsys.readouterr().err


def test_a_node_without_an_independent_verifier_does_not_start(tiny_model, tmp_path, monkeypatch, capsys):
    """Before any image can arrive: no --verifier, none in the site folder, no --own-verifier."""
    monkeypatch.setenv("PRIVDIFF_HOME", str(tmp_path / "home"))
    argv = ["serve", "--node-dir", str(tmp_path / "node"), "--model", str(tiny_model.folder)]
    argv += ["--public-key", str(tiny_model.public_key), "--destination", "ARCHIVE@127.0.0.1:104"]
    assert main([*argv, "--allow-ae", "PACS", "--port", "11112"]) == 2
    err = capsys.readouterr().err
    assert "no independent verifier" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "node").exists()
