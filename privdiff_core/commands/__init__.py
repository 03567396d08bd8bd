"""The core `privdiff` subcommands (synth, train, anonymize), one module each.

This package is deliberately light: it imports nothing but the standard library at import time,
so `privdiff --help` never loads torch or diffusers. Each module has `HELP`, `add_arguments`
and `run(args) -> int`; heavy imports happen inside `run`. (Command modules used to live next
to the code they drive, e.g. `privdiff_core/training/cli.py`, but those packages' `__init__`
import torch and diffusers, which made `--help` take seconds.)
"""
