"""`privdiff-client train-verifier`: train the site's own verifier and findings classifier."""

from __future__ import annotations

import argparse
from pathlib import Path

from privdiff_core.cli import add_config_arguments

HELP = "train this site's own patient verifier (and findings classifier) for the release and the gate"

EPILOG = """\
why
  The release holds back outputs still linkable to their input (the residual-risk check), and the
  federation's validation gate measures a candidate model's re-identification AUC and diagnosis
  agreement at every site. Both need judges the anonymizer was never trained against: this
  command trains them on the site's own films. Nothing leaves the site.

where
  --out (default $PRIVDIFF_HOME/verifier, i.e. ~/.privdiff/verifier beside the site secret):
  verifier.json + verifier.safetensors, and diagnosis.json + diagnosis.safetensors when the films
  carry finding labels. `privdiff-client release` and the ClientApp use this folder automatically.
  The networks' size and budget come from the config's evaluate.verifier / evaluate.classifier
  sections, the image size from image_size (override with key=value).

example
  privdiff-client train-verifier --data /data/cxr --config demo evaluate.verifier.steps=2000
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument(
        "--data", required=True, type=Path, metavar="DIR", help="the site's films (any layout privdiff reads)"
    )
    parser.add_argument(
        "--out", type=Path, metavar="DIR", help="where to save them (default: $PRIVDIFF_HOME/verifier)"
    )
    add_config_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from privdiff.client.site_verifier import default_site_verifier, judge_settings, train_site_judges
    from privdiff_core.config import load_config
    from privdiff_core.logs import logger

    cfg = load_config(args.config, args.overrides)
    verifier, diagnosis = judge_settings(cfg)
    out = args.out or default_site_verifier()
    judges = train_site_judges(
        args.data, out, int(cfg.image_size), verifier, diagnosis, progress=not args.no_progress
    )
    what = (
        "verifier and findings classifier" if judges.diagnosis is not None else "verifier (no finding labels)"
    )
    logger("train-verifier").info(f"site {what} at {judges.image_size} px saved in {out}")
    return 0
