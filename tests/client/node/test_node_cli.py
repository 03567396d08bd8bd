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
