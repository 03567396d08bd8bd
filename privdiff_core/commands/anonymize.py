"""`privdiff anonymize`: image files in, anonymized grey PNGs out.

Reads PNG, JPEG and DICOM files (pixels only: DICOM header de-identification is the release
command's job), from one file or a folder tree, at the model's size; writes one PNG per input at
the mirrored relative path, each written to a temporary name and renamed, so an interrupted run
leaves no half-written file. Inputs are only ever read. A file that cannot be read is reported
with its reason and skipped; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HELP = "anonymize chest X-ray files (PNG, JPEG, DICOM pixels) with a trained anonymizer"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "example: privdiff anonymize --model runs/demo --in data/site_00/images --out anon/ --seed 7\n"
        "Each output is a grey PNG at the model's size; the same seed gives the same images."
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--model", required=True, type=Path, help="anonymizer folder, or a `privdiff train` run folder"
    )
    parser.add_argument(
        "--in", dest="source", required=True, type=Path, help="an image file or a folder (walked recursively)"
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed; same seed, same outputs (default 0)")
    parser.add_argument(
        "--strength", type=float, default=None, help="0..1: how much is redrawn (default: the model's config)"
    )
    parser.add_argument(
        "--ddim-steps", type=int, default=None, help="DDIM steps (default: the model's config)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="images per batch (default: the model's config)"
    )
    parser.add_argument(
        "--findings",
        type=Path,
        default=None,
        metavar="CSV",
        help="the films' findings from their reports (columns file or sop_instance_uid, and the 14 "
        "findings 1/0/empty or a 'Finding Labels' column; privdiff_core/anonymizer/findings_table.py): "
        "the generative mode draws exactly these; films or findings it does not list are estimated "
        "from the image",
    )
    parser.add_argument("--bits", type=int, choices=(8, 16), default=8, help="PNG bit depth (default 8)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    from privdiff_core.anonymizer import Anonymizer, AnonymizerInputError, seed_for
    from privdiff_core.anonymizer.files import discover_inputs, output_paths, write_png
    from privdiff_core.anonymizer.findings_table import FindingsTable, read_findings_table
    from privdiff_core.data.images import read_image_tensor
    from privdiff_core.errors import PrivdiffError

    source, out_dir = args.source, args.out
    if not source.exists():
        raise AnonymizerInputError(f"--in {source}: no such file or folder")
    if source.is_dir() and out_dir.resolve() == source.resolve():
        raise AnonymizerInputError(f"--out {out_dir} is the input folder; choose an output folder of its own")
    findings = read_findings_table(args.findings) if args.findings is not None else None
    anonymizer = Anonymizer.load(args.model, device=args.device)
    inputs, skipped = discover_inputs(source, exclude=out_dir)
    if not inputs:
        raise AnonymizerInputError(f"--in {source}: no PNG, JPEG or DICOM files found")
    outputs = output_paths([rel for _, rel in inputs], out_dir)
    input_files = {path.resolve() for path, _ in inputs}
    clash = next((o for o in outputs if o.resolve() in input_files), None)
    if clash is not None:
        raise AnonymizerInputError(
            f"--out {out_dir}: output {clash} would overwrite an input; choose another folder"
        )
    batch_size = int(args.batch_size or anonymizer.cfg.anonymize.batch_size)
    if batch_size < 1:
        raise AnonymizerInputError("--batch-size must be at least 1")
    size, failures, written, told = anonymizer.image_size, [], 0, 0
    start = time.perf_counter()
    bar = tqdm(total=len(inputs), unit="img", desc="anonymize", disable=args.no_progress)
    for first in range(0, len(inputs), batch_size):
        chunk = list(
            zip(inputs[first : first + batch_size], outputs[first : first + batch_size], strict=True)
        )
        images, keep = [], []
        for (path, rel), out in chunk:
            try:
                images.append(read_image_tensor(path, size))
                keep.append((rel, out))
            except PrivdiffError as err:
                failures.append((rel, getattr(err, "reason", str(err))))
        if images:
            seeds = [seed_for(args.seed, rel.as_posix()) for rel, _ in keep]
            conditions = None
            if findings is not None:
                entries = [findings.lookup(file=rel.as_posix()) for rel, _ in keep]
                told += sum(entry is not None for entry in entries)
                conditions = FindingsTable.conditions(entries)
            with torch.inference_mode():
                result = anonymizer.anonymize(
                    torch.stack(images),
                    conditions=conditions,
                    seed=seeds,
                    strength=args.strength,
                    ddim_steps=args.ddim_steps,
                    batch_size=batch_size,
                )
            for image, (_, out) in zip(result.cpu().numpy(), keep, strict=True):
                write_png(image[0], out, bits=args.bits)
            written += len(keep)
        bar.update(len(chunk))
    bar.close()
    seconds = time.perf_counter() - start
    print(
        f"anonymized {written} image(s) into {out_dir} in {seconds:.1f} s "
        f"({written / max(seconds, 1e-9):.2f} img/s)"
        + (f"; {skipped} non-image file(s) ignored" if skipped else "")
        + (f"; findings from {args.findings} for {told}, estimated for {written - told}" if findings else "")
    )
    for rel, reason in failures:
        print(f"privdiff anonymize: skipped {rel}: {reason}", file=sys.stderr)
    if failures:
        print(f"privdiff anonymize: {len(failures)} file(s) could not be read", file=sys.stderr)
        return 1
    return 0
