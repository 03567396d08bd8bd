"""Operational output of the commands: standard `logging` under the `privdiff` logger.

Results a user asked for (tables, summaries, JSON) are printed on stdout by the command itself;
everything else (progress notes, warnings, what was created where) goes through
`logging.getLogger("privdiff.<command>")`: on stderr as `PROG: message` (`PROG: WARNING: ...` from
warnings up), and with `--log-file FILE` also appended to FILE with a timestamp, a level and no
colour codes, for a hospital's operations team. `--log-level` chooses what both show.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from privdiff_core.errors import PrivdiffError

ROOT = "privdiff"
LEVELS = ("debug", "info", "warning", "error")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_INSTALLED = "_privdiff_handler"  # marks the handlers configure_logging added (and may replace)

LogSetup = tuple[str, str, "Path | None"]  # (prog, level, log file): configure_logging's arguments
_current: LogSetup = (ROOT, "info", None)


def logger(name: str) -> logging.Logger:
    """The logger of one command or module: `privdiff.<name>`."""
    return logging.getLogger(f"{ROOT}.{name}")


def add_logging_arguments(parser: argparse.ArgumentParser, nested: bool = False) -> None:
    """--log-level and --log-file. `nested`: a sub-action's parser (`federation init`), whose
    options must not reset what its command's parser already parsed (argparse applies a
    subparser's defaults last), so it has none."""
    group = parser.add_argument_group("logging")
    group.add_argument(
        "--log-level",
        choices=LEVELS,
        default=argparse.SUPPRESS if nested else "info",
        help="least important messages shown on stderr and written to --log-file (default: info)",
    )
    group.add_argument(
        "--log-file",
        type=Path,
        metavar="FILE",
        default=argparse.SUPPRESS if nested else None,
        help="also append the messages to FILE, timestamped, without colour codes",
    )


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time of each message (a test's capture, a
    redirection made after logging was configured), never to a stream that has since closed."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ sets it; the property decides
        pass


class _ConsoleFormatter(logging.Formatter):
    def __init__(self, prog: str) -> None:
        super().__init__()
        self.prog = prog

    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno < logging.WARNING else f"{record.levelname}: "
        return f"{self.prog}: {level}{record.getMessage()}"


class _PlainFormatter(logging.Formatter):
    """Timestamped lines for a log file: colour codes (from progress bars, Flower) removed."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return _ANSI.sub("", super().format(record))


def configure_logging(prog: str, level: str = "info", log_file: Path | None = None) -> None:
    """Send the `privdiff` loggers to stderr (and `log_file`); replaces an earlier configuration,
    so calling it once per command (and per test) never doubles a line."""
    global _current
    root = logging.getLogger(ROOT)
    for handler in [h for h in root.handlers if getattr(h, _INSTALLED, False)]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(getattr(logging, level.upper()))
    root.propagate = False  # a host application's root handlers would print every line twice
    console = _StderrHandler()
    console.setFormatter(_ConsoleFormatter(prog))
    handlers: list[logging.Handler] = [console]
    if log_file is not None:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            file_handler = logging.FileHandler(log_file, encoding="utf-8")
        except OSError as err:
            raise PrivdiffError(f"--log-file {log_file}: cannot write there ({err.strerror})") from err
        file_handler.setFormatter(_PlainFormatter())
        handlers.append(file_handler)
    for handler in handlers:
        setattr(handler, _INSTALLED, True)
        root.addHandler(handler)
    _current = (prog, level, log_file)


def current_log_setup() -> LogSetup:
    """This process's logging configuration, for a spawned child to apply the same."""
    return _current
