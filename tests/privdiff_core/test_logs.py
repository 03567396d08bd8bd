"""Logging of the commands: --version, --log-level, --log-file (plain, timestamped lines)."""

import re
from importlib.metadata import version

import pytest

from privdiff_core.cli import main
from privdiff_core.logs import configure_logging, logger


def test_version_comes_from_the_installed_package(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out == f"privdiff {version('privdiff')}\n"


def test_the_log_file_gets_plain_timestamped_lines_and_the_console_the_program_name(tmp_path, capsys):
    log_file = tmp_path / "logs" / "site.log"
    configure_logging("privdiff-client release", "info", log_file)
    log = logger("release")
    log.info("\x1b[32mreleased\x1b[0m 3 films")  # colour codes, as a progress bar or Flower writes them
    log.warning("UNSIGNED MODEL")
    log.debug("not at info")
    lines = log_file.read_text().splitlines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    assert re.fullmatch(rf"{stamp} INFO privdiff\.release: released 3 films", lines[0])
    assert re.fullmatch(rf"{stamp} WARNING privdiff\.release: UNSIGNED MODEL", lines[1])
    assert len(lines) == 2 and "\x1b" not in log_file.read_text()
    assert capsys.readouterr().err.splitlines()[1:] == ["privdiff-client release: WARNING: UNSIGNED MODEL"]


def test_log_level_warning_keeps_only_warnings_and_reconfiguring_never_doubles_a_line(tmp_path, capsys):
    configure_logging("privdiff simulate", "info")
    configure_logging("privdiff simulate", "warning", tmp_path / "a.log")
    logger("simulate").info("round 1 done")
    logger("simulate").warning("a site dropped out")
    assert capsys.readouterr().err == "privdiff simulate: WARNING: a site dropped out\n"
    assert (tmp_path / "a.log").read_text().count("a site dropped out") == 1


def test_a_log_file_that_cannot_be_written_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "not-a-folder").write_text("")
    argv = ["train", "--config", "tiny", "--log-file", str(tmp_path / "not-a-folder" / "x.log")]
    assert main([*argv, f"data={tmp_path}", f"out={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("privdiff train: error: --log-file") and err.count("\n") == 1
    assert not (tmp_path / "run").exists()
