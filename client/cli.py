"""The `privdiff-client` command, run at each hospital (site).

Same shape as `privdiff`: each subcommand is a module with `HELP`, `add_arguments(parser)` and
`run(args) -> int`, heavy imports inside `run`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from privdiff_core.errors import PrivdiffError

# name -> module implementing it, in the order `privdiff-client --help` lists them.
SITE_COMMANDS: dict[str, str] = {}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="privdiff-client",
        description=(
            "privdiff-client: a hospital's side of privdiff. Join the federation (start), check the "
            "shared anonymizer's signature (verify) and release anonymized DICOM (release)."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, path in SITE_COMMANDS.items():
        module = importlib.import_module(path)
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except PrivdiffError as err:
        print(f"privdiff-client {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"privdiff-client {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
