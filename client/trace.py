"""`privdiff-client trace`: which input file a released or quarantined output came from.

A release names its inputs only by salted hashes of their relative paths (`OUT/audit.sqlite`),
so nothing that leaves the site can point back to a patient's file. The site itself can: with
the site secret and the input folder it recomputes the hashes and maps each output back to its
input. The map is never written into OUT (whose `released/` folder is what gets shipped): it is
printed here, for the site's staff, and exists only where both the secret (mode 0600) and the
input folder are readable.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "map released or quarantined outputs back to their input files (site-local, needs the site secret)"

EPILOG = """\
examples:
  privdiff-client trace --out OUT --in /pacs/export                      # every input's outcome
  privdiff-client trace --out OUT --in /pacs/export OUT/quarantine/1.2.826.../x.dcm

Input paths can identify a patient (a folder named after them): run this at the site only and
keep what it prints there. --in and the site secret must be those of the release.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="the release's output folder")
    parser.add_argument(
        "--in", dest="source", required=True, type=Path, metavar="DIR", help="the release's input folder"
    )
    parser.add_argument(
        "--site-secret",
        type=Path,
        metavar="FILE",
        help="the secret the release used (default: $PRIVDIFF_HOME/site_secret or ~/.privdiff/site_secret)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    parser.add_argument(
        "outputs", nargs="*", metavar="OUTPUT", help="output files to trace (default: every input's outcome)"
    )


def trace(out: Path, source: Path, secret: bytes) -> list[dict[str, str]]:
    """Every input's latest outcome: its output (relative to `out`, "" if none) and input path."""
    from privdiff.client.audit import AUDIT_FILE, AuditTrail
    from privdiff.client.intake import walk_inputs
    from privdiff_core.errors import PrivdiffError

    if not (out / AUDIT_FILE).is_file():
        raise PrivdiffError(f"{out} has no {AUDIT_FILE}: not the output folder of a release")
    if not source.is_dir():
        raise PrivdiffError(f"--in {source}: no such folder")
    paths = {item.ref: item.path for item in walk_inputs(source, secret, exclude=out.resolve())}
    audit = AuditTrail(out)
    try:
        records = audit.latest_records()
    finally:
        audit.close()
    return [
        {
            "output": output,
            "input": str(paths[ref].relative_to(source)) if ref in paths else "",
            "status": status,
            "reason": reason,
        }
        for ref, output, status, reason in records
    ]


def _relative_to_out(path: Path, out: Path) -> str:
    """An output as the audit names it: relative to OUT (given as a path, or already relative)."""
    resolved = path.resolve()
    return (resolved.relative_to(out) if resolved.is_relative_to(out) else path).as_posix()


def run(args: argparse.Namespace) -> int:
    from privdiff.client.deid.uids import default_secret_path, load_site_secret
    from privdiff_core.errors import PrivdiffError

    out = args.out.resolve()
    rows = trace(out, args.source.resolve(), load_site_secret(args.site_secret or default_secret_path()))
    if args.outputs:
        wanted = {_relative_to_out(Path(name), out) for name in args.outputs}
        rows = [row for row in rows if row["output"] in wanted]
        missing = wanted - {row["output"] for row in rows}
        if missing:
            raise PrivdiffError(f"not an output of this release: {', '.join(sorted(missing))}")
    if not any(row["input"] for row in rows) and rows:
        raise PrivdiffError("no output maps to a file under --in: another input folder or site secret?")
    if args.json:
        print(json.dumps({"outputs": rows}, indent=2))
        return 0
    for row in rows:
        output, source = row["output"] or "(no output)", row["input"] or "(not under --in)"
        print(f"{output}  <-  {source}  [{row['status']}: {row['reason']}]")
    return 0
