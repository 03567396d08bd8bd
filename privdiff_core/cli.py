"""The `privdiff` command: one subcommand per user job.

Each subcommand is a module with `HELP` (one line), `add_arguments(parser)` and
`run(args) -> int` (the exit status). Modules keep heavy imports (torch, diffusers) inside
`run`, so `privdiff --help` stays fast. Subcommands that need Flower (`simulate`,
`federation`) live in simulation/ and server/ and are found through the `privdiff.commands`
entry-point group, so this package never imports them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, entry_points, version
from types import ModuleType

from privdiff_core.errors import PrivdiffError
from privdiff_core.logs import add_logging_arguments, configure_logging

# name -> module implementing it, in the order `privdiff --help` lists them. Every module named
# here must import in a light package (privdiff_core.commands, privdiff_core.evaluation): a
# package whose __init__ imports torch or diffusers would make `privdiff --help` take seconds.
CORE_COMMANDS: dict[str, str] = {
    "synth": "privdiff_core.commands.synth",
    "train": "privdiff_core.commands.train",
    "anonymize": "privdiff_core.commands.anonymize",
    "evaluate": "privdiff_core.evaluation.cli_evaluate",
    "ablate": "privdiff_core.evaluation.cli_ablate",
}


def add_config_arguments(parser: argparse.ArgumentParser, default: str = "demo") -> None:
    """The `--config NAME` + `key=value ...` pair every training-like command takes."""
    parser.add_argument(
        "--config",
        default=default,
        help=f"config name in configs/ (tiny, demo, paper) or a YAML path (default: {default})",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="override any config value, e.g. train.denoiser.steps=200 anonymize.strength=0.5",
    )


def _command_modules() -> dict[str, ModuleType]:
    modules = {name: importlib.import_module(path) for name, path in CORE_COMMANDS.items()}
    for ep in entry_points(group="privdiff.commands"):
        modules.setdefault(ep.name, ep.load())
    return modules


def package_version() -> str:
    """The installed privdiff distribution's version (`unknown` when run from a bare checkout)."""
    try:
        return version("privdiff")
    except PackageNotFoundError:
        return "unknown"


def build_command_parser(
    prog: str, description: str, modules: dict[str, ModuleType]
) -> argparse.ArgumentParser:
    """An argparse parser with one subcommand per command module (HELP/add_arguments/run), each
    with --log-level and --log-file; --version on the parser itself."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in modules.items():
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        add_logging_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def run_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse argv and run the chosen subcommand; user errors print one line, no traceback."""
    args, extra = parser.parse_known_args(argv)
    # argparse stops collecting `key=value` overrides at the first option; collect the rest too,
    # so `privdiff train data=D --no-progress out=R` works in any order.
    if (
        extra
        and isinstance(getattr(args, "overrides", None), list)
        and all("=" in item and not item.startswith("-") for item in extra)
    ):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        configure_logging(f"{parser.prog} {args.command}", args.log_level, args.log_file)
        return int(args._run(args) or 0)
    except PrivdiffError as err:
        print(f"{parser.prog} {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog} {args.command}: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    return build_command_parser(
        "privdiff",
        "privdiff: hospitals jointly train PrivDiff-Net, a chest X-ray anonymizer, with Flower "
        "and release anonymized images on site. Start with `privdiff simulate --config demo`.",
        _command_modules(),
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
