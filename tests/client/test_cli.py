"""`privdiff-client` itself: --version, and the logging options every site command has."""

from importlib.metadata import version

import pytest

from privdiff.client.cli import SITE_COMMANDS, build_parser, main


def test_version_comes_from_the_installed_package(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out == f"privdiff-client {version('privdiff')}\n"


@pytest.mark.parametrize("command", sorted(SITE_COMMANDS))
def test_every_site_command_takes_log_level_and_log_file(command, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    text = capsys.readouterr().out
    assert "--log-level" in text and "--log-file FILE" in text
