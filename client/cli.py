"""The `privdiff-client` command, run at each hospital (site).

Same shape as `privdiff`: each subcommand is a module with `HELP`, `add_arguments(parser)` and
`run(args) -> int`, heavy imports inside `run`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from privdiff_core.cli import build_command_parser, run_command

# name -> module implementing it, in the order `privdiff-client --help` lists them.
SITE_COMMANDS: dict[str, str] = {
    "start": "privdiff.client.supernode",
    "verify": "privdiff.client.verify",
    "train-verifier": "privdiff.client.train_verifier",
    "release": "privdiff.client.release",
    "trace": "privdiff.client.trace",
    "serve": "privdiff.client.node.serve",
}


def build_parser() -> argparse.ArgumentParser:
    return build_command_parser(
        "privdiff-client",
        "privdiff-client: a hospital's side of privdiff. Join the federation (start), check the "
        "shared anonymizer's signature (verify), train the site's own verifier (train-verifier), "
        "release anonymized DICOM (release) and map a release's outputs back to their inputs on "
        "site (trace).",
        {name: importlib.import_module(path) for name, path in SITE_COMMANDS.items()},
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
