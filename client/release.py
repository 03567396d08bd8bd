"""`privdiff-client release`: anonymized, de-identified chest X-ray DICOM out of the hospital.

The command line of `privdiff.client.release_pipeline`; see there for how the work is overlapped,
and `privdiff.client.intake`, `privdiff.client.deid`, `privdiff.client.audit` for what is released,
how, and what is recorded.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from privdiff_core.logs import logger

HELP = "release chest X-ray DICOM through the shared anonymizer: pixels anonymized, headers de-identified"

EPILOG = """\
what it does
  1. checks the anonymizer's signature against --public-key BEFORE any input is opened
     (an unsigned model is refused unless --allow-unsigned, which is then recorded everywhere);
  2. walks --in (every file; DICOM is recognised by content, not by name) and releases chest
     radiographs only: Modality CR or DX, or a Secondary Capture marked Body Part Examined CHEST.
     CT, MR, colour, multi-frame and non-image objects (SR, PR, KO) are refused with a reason;
  3. regenerates the pixels with the anonymizer at its image size (a new patient drawn with the
     film's findings: from --findings, the site's report labels, where it lists the film, else
     estimated from the film, which keeps far less of the diagnosis), and de-identifies the header
     per DICOM PS3.15 Annex E (Basic Profile + Clean Pixel Data, no Retain options: names, IDs,
     dates, ages, sex, institutions, free text and private tags go; UIDs are remapped with the
     site secret, consistently, so a study stays a study);
  4. scores each output against its own input with the site's own patient-verification network
     (--verifier, else $PRIVDIFF_HOME/verifier from `privdiff-client train-verifier`; the
     anonymizer's own verifier only with --own-verifier) and holds back (OUT/quarantine/)
     outputs still linkable above --quarantine-threshold;
  5. reads every output with OCR (Tesseract), at its resolution and at the input's: an output in
     which text survived is held back (reason burned_in_text). Only outputs that passed write
     Burned In Annotation NO and the Clean Pixel Data code. An input whose header says text is
     burned in (Burned In Annotation / Recognizable Visual Features YES) is refused unless
     --clean-burned-in.

bad inputs
  Symbolic links (files or folders) and special files are reported, never followed or opened.
  Images whose header describes more than --pixel-budget-mib of pixels, or files too large to
  be such an image, are refused before decoding; deflated files are inflated within that bound.
  File names need not be UTF-8. No single input can stop the release.

output folder
  OUT/released/<study>/<series>/<instance>.dcm   the release: ship this folder only
  OUT/quarantine/...                             held back (residual risk, text found): keep on site
  OUT/audit.sqlite                               one record per input (salted hashes, no PHI)
  OUT/release_summary.json                       counts, reasons, model hash, key id, speed
  Inputs are only ever read. Outputs are written to a temporary name and renamed when complete;
  a killed release resumes when run again with the same arguments, without duplicates.

privacy of the logs
  Paths can themselves identify a patient (a folder named after them), so inputs are never named
  by path or header value in messages, the audit trail or the summary: each input is referred to
  by a salted hash of its relative path (16 hex digits; the salt is the site secret).

exit status
  0  every input was released
  1  the run completed, but some inputs were refused or quarantined (see the summary)
  2  the release did not start (bad arguments, signature, model, output folder: nothing was
     released), or stopped midway because the audit trail could not be written (disk full): the
     message then says how many inputs were already released; rerun to resume
  3  the run completed, but some inputs failed (unreadable, truncated, undecodable, write error)
  130 interrupted (rerun to resume)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--model", required=True, type=Path, metavar="DIR", help="the anonymizer folder")
    parser.add_argument(
        "--in",
        dest="source",
        required=True,
        type=Path,
        metavar="DIR",
        help="folder of DICOM files to release (walked recursively; never modified)",
    )
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="DIR",
        help="output folder (created; rerun with the same folder to resume)",
    )
    trust = parser.add_mutually_exclusive_group()
    trust.add_argument(
        "--public-key",
        type=Path,
        metavar="KEY",
        help="the federation's Ed25519 public key (PEM): the model must be signed by it",
    )
    trust.add_argument(
        "--allow-unsigned",
        action="store_true",
        help="release with an unsigned model (testing only; recorded in every output and the audit)",
    )
    parser.add_argument(
        "--site-secret",
        type=Path,
        metavar="FILE",
        help="secret that keys the new UIDs and the salted hashes (default: $PRIVDIFF_HOME/"
        "site_secret or ~/.privdiff/site_secret, created on first use); keep it for reruns",
    )
    parser.add_argument(
        "--quarantine-threshold",
        type=float,
        default=0.5,
        metavar="T",
        help="hold back outputs whose same-patient probability with their own input is above T "
        "(default 0.5: more likely the same patient than not)",
    )
    parser.add_argument(
        "--verifier",
        type=Path,
        metavar="DIR",
        help="the site's own patient-verification network (verifier.json + verifier.safetensors); "
        "default: $PRIVDIFF_HOME/verifier, trained by `privdiff-client train-verifier`",
    )
    parser.add_argument(
        "--own-verifier",
        action="store_true",
        help="if the site has no verifier of its own, let the anonymizer's own identity verifier judge "
        "(weaker: the model was trained with it; recorded in the audit). Without an independent "
        "verifier and without this flag the release refuses to start",
    )
    parser.add_argument(
        "--gallery",
        type=Path,
        metavar="DIR",
        help="a folder of the site's own films: an output is also held back when it matches any of them "
        "(a generated film must not show one of our patients; see client/residual_risk.py)",
    )
    parser.add_argument(
        "--findings",
        type=Path,
        metavar="CSV",
        help="the films' findings from their reports: columns sop_instance_uid (or file, relative to "
        "--in) and the 14 findings (1/0/empty) or a 'Finding Labels' column, as the site's labels.csv "
        "(privdiff_core/anonymizer/findings_table.py). The generative anonymizer draws exactly these; "
        "without a table (or for films it does not list) it estimates them from each film, which keeps "
        "far less of the diagnosis. The summary counts both",
    )
    parser.add_argument(
        "--no-residual-check",
        action="store_true",
        help="release without the residual-risk check (recorded in the audit)",
    )
    parser.add_argument(
        "--batch-size", type=int, metavar="B", help="images per anonymizer batch (default: the model's)"
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="reader processes decoding ahead of the model (default 2)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="CPU threads for the model (default: torch's choice); on a CPU-only machine, leaving "
        "a core or two to the readers keeps both busy",
    )
    parser.add_argument(
        "--pixel-budget-mib",
        type=float,
        metavar="MIB",
        help="largest image accepted, in MiB of stored pixels (frames x rows x columns x bytes), checked "
        "from the header before decoding (default 64: the largest CR/DX detectors at 16 bits, with room "
        "to spare; privdiff_core.data.dicom.DEFAULT_PIXEL_BUDGET); bounds each reader's memory",
    )
    parser.add_argument(
        "--clean-burned-in",
        action="store_true",
        help="also release inputs whose header says text is burned into the pixels: the anonymizer "
        "redraws them and the OCR check decides (default: refuse them)",
    )
    parser.add_argument(
        "--blank-input-text",
        action="store_true",
        help="before anonymizing, also fill the words OCR finds in each input with the film's median grey "
        "(slower: reads every input at full resolution); the output check still decides",
    )
    parser.add_argument(
        "--no-text-check",
        action="store_true",
        help="skip the OCR check of the outputs (then no output claims Clean Pixel Data or Burned In "
        "Annotation NO)",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument(
        "--seed", type=int, default=0, help="noise seed (per image: reruns give the same pixels)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--log",
        type=Path,
        metavar="FILE",
        help="also append the release's one-line summary (counts only) to FILE, e.g. the site's log "
        "of `privdiff-client start --log`",
    )


log = logger("release")


def run(args: argparse.Namespace) -> int:
    from privdiff.client.outputs import write_atomically
    from privdiff.client.release_pipeline import SUMMARY_FILE, ReleaseError, ReleaseSettings, run_release

    if not 0.0 <= args.quarantine_threshold <= 1.0:
        raise ReleaseError(
            f"--quarantine-threshold must be a probability in [0, 1], got {args.quarantine_threshold}"
        )
    if args.batch_size is not None and args.batch_size < 1:
        raise ReleaseError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.workers < 1:
        raise ReleaseError(f"--workers must be at least 1, got {args.workers}")
    if args.pixel_budget_mib is not None and not args.pixel_budget_mib > 0:
        raise ReleaseError(f"--pixel-budget-mib must be positive, got {args.pixel_budget_mib}")
    if args.threads is not None:
        import torch

        torch.set_num_threads(max(1, args.threads))
    settings = ReleaseSettings(
        model=args.model,
        source=args.source,
        out=args.out,
        public_key=args.public_key,
        allow_unsigned=args.allow_unsigned,
        site_secret=args.site_secret,
        quarantine_threshold=args.quarantine_threshold,
        residual_check=not args.no_residual_check,
        verifier=args.verifier,
        own_verifier=args.own_verifier,
        gallery=args.gallery,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        seed=args.seed,
        progress=not args.no_progress,
        clean_burned_in=args.clean_burned_in,
        text_check=not args.no_text_check,
        blank_input_text=args.blank_input_text,
        findings=args.findings,
    )
    if args.pixel_budget_mib is not None:
        settings.pixel_budget = int(args.pixel_budget_mib * 2**20)
    summary = run_release(settings, log)
    record = summary.as_json()
    try:
        write_atomically(
            summary.out / SUMMARY_FILE, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
        )
    except OSError as err:
        log.warning(f"could not write {SUMMARY_FILE} ({err.strerror}); the audit trail holds every record")
    counts = summary.counts
    print(
        f"released {counts['released']}, quarantined {counts['quarantined']}, refused {counts['refused']}, "
        f"failed {counts['failed']} of {sum(counts.values())} inputs "
        f"({summary.processed} processed now, {summary.skipped} done earlier; "
        f"{summary.images_per_second:.2f} images/s)"
    )
    for code, number in summary.reasons.items():
        print(f"  {number:6d}  {code}")
    print(
        f"model sha256 {summary.trust.model_sha256[:16]}..., key {summary.trust.key_id}, "
        f"{summary.trust.privacy_budget}; "
        f"residual-risk check: {summary.residual_check}; summary: {SUMMARY_FILE}, audit: audit.sqlite"
    )
    if not summary.trust.signed:
        log.warning("this release used an UNSIGNED model (--allow-unsigned).")
    from privdiff.client.size_check import shrink_warning

    if warning := shrink_warning(args.model, args.source):
        log.warning(warning)
    if args.log:
        from privdiff.client.site_log import append_event

        append_event(
            args.log,
            f"release into {summary.out.name}: released {counts['released']}, quarantined "
            f"{counts['quarantined']}, refused {counts['refused']}, failed {counts['failed']} "
            f"(model key {summary.trust.key_id}, exit status {summary.exit_status})",
        )
    return summary.exit_status
