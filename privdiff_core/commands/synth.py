"""`privdiff synth`: write a synthetic hospital federation of DICOM chest X-rays.

The sizes come from the config's `synth:` section; `--sites`, `--patients`,
`--images-per-patient`, `--size` and `--seed` override it, as do `synth.KEY=VALUE` overrides.
The output folder appears complete or not at all (written under a temporary name, then
renamed), and an existing non-empty folder is only replaced with `--overwrite`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from privdiff_core.cli import add_config_arguments

HELP = "write a synthetic federation of hospitals (DICOM chest X-rays with chest biometrics)"

_FLAGS = {  # command-line flag destination -> synth config key
    "sites": "sites",
    "patients": "patients",
    "images_per_patient": "images_per_patient",
    "size": "size",
    "seed": "seed",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "examples:\n"
        "  privdiff synth --out data/synthetic            # the demo config: 3 sites x 200 patients\n"
        "  privdiff synth --out data/tiny --config tiny   # seconds, for trying things out\n"
        "  privdiff synth --out data/big --size 256 --patients 1000 --workers 2\n"
        "  privdiff synth --out data/s --config demo synth.test_fraction=0.2\n"
        "\n"
        "Writes DIR/federation.json and DIR/site_NN/{labels.csv, images/<PatientID>/<SOPInstanceUID>.dcm}\n"
        "(docs/architecture.md, Contract 1). Identity, age and sex live in the DICOM headers; labels.csv\n"
        "holds the 14 ChestX-ray14 findings and the patient-level train/val/test split.\n"
        "Same settings and seed give byte-identical files."
    )
    parser.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="output folder of the federation"
    )
    add_config_arguments(parser)
    parser.add_argument("--sites", type=int, help="number of hospitals (default: config synth.sites)")
    parser.add_argument("--patients", type=int, help="patients per site (default: config synth.patients)")
    parser.add_argument(
        "--images-per-patient",
        type=int,
        help="follow-up films per patient (default: config synth.images_per_patient)",
    )
    parser.add_argument(
        "--size", type=int, help="image side in pixels, 32..2048 (default: config synth.size)"
    )
    parser.add_argument("--seed", type=int, help="random seed (default: config synth.seed)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace DIR if it already holds a federation"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes rendering in parallel (same bytes either way; default 1)",
    )
    parser.add_argument(
        "--preview", type=Path, metavar="PNG", help="also save a contact sheet of some patients' films"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def synth_settings(args: argparse.Namespace) -> dict:
    """The `synth:` section after config, `synth.KEY=VALUE` overrides and explicit flags."""
    from omegaconf import OmegaConf

    from privdiff_core.config import load_config
    from privdiff_core.synth.federation import SynthError

    cfg = load_config(args.config, args.overrides)
    if "synth" not in cfg:
        raise SynthError(f"config {args.config!r} has no synth: section")
    settings = OmegaConf.to_container(cfg.synth, resolve=True)
    for flag, key in _FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            settings[key] = value
    return settings


def run(args: argparse.Namespace) -> int:
    from privdiff_core.synth.federation import SynthError, SynthParams, generate_federation

    if args.workers < 1:
        raise SynthError(f"--workers must be at least 1, got {args.workers}")
    params = SynthParams.from_mapping(synth_settings(args))
    start = time.perf_counter()
    summary = generate_federation(
        args.out, params, overwrite=args.overwrite, progress=not args.no_progress, workers=args.workers
    )
    seconds = time.perf_counter() - start
    print(
        f"wrote {summary['images']} images of {params.sites * params.patients} patients "
        f"({params.sites} sites, {params.size}x{params.size}) to {args.out} in {seconds:.1f} s"
    )
    for site in summary["sites"]:
        split = site["patients_per_split"]
        print(
            f"  {site['folder']}: {site['institution']}, {site['modality']} "
            f"{site['photometric_interpretation']} {site['bits_stored']}-bit, "
            f"patients train/val/test {split['train']}/{split['val']}/{split['test']}"
        )
    if args.preview is not None:
        from privdiff_core.synth.preview import contact_sheet

        print(f"preview: {contact_sheet(args.preview, params)}")
    return 0
