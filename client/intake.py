"""The reading side of a release: find the inputs, decide what may be released, prepare it.

Every input ends up as either a `Prepared` image (pixels for the anonymizer + a de-identified
header) or an `Outcome` that says why it is not released. Reasons are codes from `REASONS` with
fixed messages: nothing read from a file (a header value, an exception text that may quote one,
the file's path) ever reaches a log or the audit trail.

What is released: chest radiographs only --
- Modality CR or DX (projection radiography), single frame, grey scale, with pixel data, whose
  Body Part Examined, when present, names the chest;
- a Secondary Capture explicitly marked as a chest image (Body Part Examined names the chest).
Everything else is refused with its reason: CT, MR and other modalities, colour (RGB, palette,
YBR) images, multi-frame objects, non-image objects (SR, PR, KO: no pixel data), non-DICOM files.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from client.deid import Deidentifier, salted_hash
from privdiff_core.data import ImageReadError, dicom_image_info, dicom_pixels, read_dicom_dataset
from privdiff_core.data.grey import center_square, square_resize, to_signed

# reason code -> what it means (printed and stored as is; never with values from the file).
REASONS: dict[str, str] = {
    "ok": "released",
    "already_done": "finished by an earlier run into this folder",
    "not_dicom": "not a DICOM file",
    "unreadable": "unreadable or corrupt DICOM file",
    "truncated": "truncated file: it ends before its pixel data does",
    "not_an_image": "a DICOM object without pixel data (a structured report, presentation state, ...)",
    "multi_frame": "multi-frame object; a chest radiograph has one frame",
    "colour": "colour image; the anonymizer is for grey-scale chest radiographs",
    "not_a_radiograph": "not a projection radiograph (Modality is not CR or DX)",
    "not_chest": "Body Part Examined is not the chest",
    "secondary_capture_not_chest": "secondary capture not marked as a chest image (Body Part Examined CHEST)",
    "unsupported_bit_depth": "bit depth outside 8..16",
    "unsupported_transfer_syntax": "transfer syntax without an installed pixel decoder",
    "pixel_decode_error": "pixel data could not be decoded",
    "duplicate_input": "same content as another input of this release (its output is released once)",
    "residual_risk": "output still linkable to its input above the quarantine threshold",
    "reader_crash": "reading this file crashed its reader process (a malformed file)",
    "write_error": "the output could not be written",
    "internal_error": "unexpected error while processing this input",
}

RADIOGRAPH_MODALITIES = ("CR", "DX")
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"  # SC Image Storage and its multi-frame kin
# Body Part Examined values (any language hospitals use) that name the chest.
CHEST_TERMS = ("CHEST", "THORAX", "LUNG", "TORAX", "TORACE", "BRUST", "POITRINE", "PECHO")
# Well-known modality terms that may be quoted in a refusal (a free value from the file never is).
KNOWN_MODALITIES = frozenset(
    "CT MR US NM PT XA RF MG OT SC SR PR KO DOC IO PX OP OPT ES XC "  # noqa: SIM905
    "GM SM ECG EPS HD RTIMAGE RTDOSE RTSTRUCT RTPLAN SEG REG BMD BI DG LS TG CR DX".split()
)


@dataclass(frozen=True)
class InputFile:
    """One file of the input tree; `ref` (a salted hash of its relative path) is its public name."""

    path: Path
    ref: str


@dataclass
class Prepared:
    """An image ready for the anonymizer."""

    source: InputFile
    input_sha: str
    image: np.ndarray  # (S, S) float32 in [-1, 1]
    square_side: int  # side of the centred square of the original the image was resampled from
    header: Dataset  # de-identified, without pixel data
    output_name: str  # "<study>/<series>/<sop>.dcm", all remapped UIDs


@dataclass(frozen=True)
class Outcome:
    """An input that is not released (or was finished by an earlier run)."""

    source: InputFile
    input_sha: str
    status: str  # refused | failed | skipped (already done)
    reason: str
    detail: str = ""  # a fixed-vocabulary detail (e.g. a known modality term), never a file's value


class NotReleasableError(Exception):
    """An input refused or failed, with its reason code."""

    def __init__(self, status: str, reason: str, detail: str = ""):
        super().__init__(reason)
        self.status, self.reason, self.detail = status, reason, detail


def walk_inputs(root: Path, secret: bytes, exclude: Path | None = None) -> list[InputFile]:
    """Every regular file under `root`, sorted by relative path; symlinked folders are not followed."""
    files = []
    for folder, subfolders, names in os.walk(root):
        subfolders.sort()
        if exclude is not None:
            subfolders[:] = [d for d in subfolders if Path(folder, d).resolve() != exclude]
        for name in sorted(names):
            path = Path(folder, name)
            if path.is_file():
                relative = path.relative_to(root).as_posix()
                files.append(InputFile(path, salted_hash(secret, relative.encode(), "input-path")[:16]))
    return files


def _names_chest(body_part: str) -> bool:
    value = body_part.strip().upper()
    return any(term in value for term in CHEST_TERMS)


def check_chest_radiograph(ds: Dataset) -> None:
    """Raise NotReleasableError('refused', ...) unless `ds` is a single-frame grey chest radiograph."""
    info = dicom_image_info(ds)
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        if info.rows and info.columns:
            raise NotReleasableError("failed", "truncated")
        raise NotReleasableError("refused", "not_an_image", _known_modality(info.modality))
    if info.number_of_frames != 1:
        raise NotReleasableError("refused", "multi_frame")
    if info.samples_per_pixel != 1 or info.photometric_interpretation not in ("MONOCHROME1", "MONOCHROME2"):
        raise NotReleasableError("refused", "colour")
    modality = info.modality.strip().upper()
    body_part = info.body_part_examined
    if modality in RADIOGRAPH_MODALITIES:
        if body_part.strip() and not _names_chest(body_part):
            raise NotReleasableError("refused", "not_chest")
        return
    if info.sop_class_uid.startswith(SECONDARY_CAPTURE_PREFIX) and modality in ("", "OT", "SC"):
        if not _names_chest(body_part):
            raise NotReleasableError("refused", "secondary_capture_not_chest")
        return
    raise NotReleasableError("refused", "not_a_radiograph", _known_modality(modality))


def _known_modality(modality: str) -> str:
    modality = modality.strip().upper()
    return f"Modality {modality}" if modality in KNOWN_MODALITIES else ""


_READ_ERROR_CODES = (
    (re.compile(r"not a DICOM file"), "refused", "not_dicom"),
    (re.compile(r"truncated|ends inside|no data elements"), "failed", "truncated"),
    (re.compile(r"no pixel data|non-image|parametric map"), "refused", "not_an_image"),
    (re.compile(r"multi-frame"), "refused", "multi_frame"),
    (re.compile(r"colour|samples per pixel"), "refused", "colour"),
    (re.compile(r"bit depth"), "failed", "unsupported_bit_depth"),
    (re.compile(r"transfer syntax"), "failed", "unsupported_transfer_syntax"),
    (re.compile(r"decode|decoded shape"), "failed", "pixel_decode_error"),
)


def classify_read_error(err: ImageReadError) -> NotReleasableError:
    """The reader's error as one of our reason codes (its message is never passed on)."""
    for pattern, status, reason in _READ_ERROR_CODES:
        if pattern.search(err.reason):
            return NotReleasableError(status, reason)
    return NotReleasableError("failed", "unreadable")


class Intake:
    """Reads, checks and prepares inputs (one call per input; run in reader processes)."""

    def __init__(self, image_size: int, secret: bytes, deidentifier: Deidentifier, done: set[str]):
        self.image_size = image_size
        self.secret = secret
        self.deidentify = deidentifier
        self.done = done  # input hashes an earlier run finished

    def __call__(self, source: InputFile) -> Prepared | Outcome:
        input_sha = ""
        try:
            with open(source.path, "rb") as handle:
                content = handle.read()
            input_sha = salted_hash(self.secret, content, "input-content")
            if input_sha in self.done:
                return Outcome(source, input_sha, "skipped", "already_done")
            return self._prepare(source, input_sha)
        except NotReleasableError as refusal:
            return Outcome(source, input_sha, refusal.status, refusal.reason, refusal.detail)
        except OSError:
            return Outcome(source, input_sha, "failed", "unreadable")
        except Exception:  # noqa: BLE001 -- one bad input must not stop a release; no message is kept
            return Outcome(source, input_sha, "failed", "internal_error")

    def _prepare(self, source: InputFile, input_sha: str) -> Prepared:
        try:
            ds = read_dicom_dataset(source.path)
        except ImageReadError as err:
            raise classify_read_error(err) from None
        check_chest_radiograph(ds)
        try:
            grey = dicom_pixels(ds, source.path)
        except ImageReadError as err:
            raise classify_read_error(err) from None
        side = int(min(center_square(grey).shape))
        image = to_signed(square_resize(grey, self.image_size)).astype(np.float32)
        del ds.PixelData  # the original pixels never go further than this function
        self.deidentify(ds)
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            if not ds.get(keyword):
                # An input without it still needs a stable, unique name: derive one from its content.
                setattr(ds, keyword, self.deidentify.map_uid.derived(input_sha, keyword))
        output_name = f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
        return Prepared(source, input_sha, image, side, ds, output_name)
