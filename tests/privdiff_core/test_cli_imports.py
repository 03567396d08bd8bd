"""`privdiff --help` must stay fast: building the command parser may not import torch or diffusers."""

from __future__ import annotations

import subprocess
import sys

from privdiff_core.cli import CORE_COMMANDS

HEAVY = ("torch", "diffusers", "flwr")

PROBE = f"""
import sys
from privdiff_core.cli import build_parser
parser = build_parser()
text = parser.format_help()
for name in {sorted(CORE_COMMANDS)!r}:
    assert name in text, name
heavy = [m for m in {HEAVY!r} if m in sys.modules]
print("HEAVY:" + ",".join(heavy))
"""


def test_privdiff_help_imports_no_torch_diffusers_or_flower() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "HEAVY:", done.stdout


def test_core_subcommands_still_run_their_modules() -> None:
    # The command table names light modules whose run() does the work; a subcommand's own
    # --help also must not import torch (argparse exits 0 after printing it).
    probe = (
        "import sys\n"
        "from privdiff_core.cli import main\n"
        "for name in ('train', 'anonymize', 'synth'):\n"
        "    try:\n"
        "        main([name, '--help'])\n"
        "    except SystemExit as stop:\n"
        "        assert stop.code == 0, (name, stop.code)\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage: privdiff train" in done.stdout
    assert "usage: privdiff anonymize" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "False"
