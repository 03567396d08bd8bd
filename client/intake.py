"""The reading side of a release: find the inputs, decide what may be released, prepare it.

Every input ends up as either a `Prepared` image (pixels for the anonymizer + a de-identified
header) or an `Outcome` that says why it is not released. Reasons are codes from `REASONS` with
fixed messages: nothing read from a file (a header value, an exception text that may quote one,
the file's path) ever reaches a log or the audit trail.

What is released: chest radiographs only --
- Modality CR or DX (projection radiography) in a CR, DX or Secondary Capture Image object, single
  frame, grey scale, with pixel data, whose Body Part Examined (and Anatomic Region Sequence),
  when present, is exactly one of the chest's terms (codes);
- a Secondary Capture Image (by exact SOP Class UID) of Modality OT/SC or none, marked as a chest
  image by Body Part Examined or Anatomic Region Sequence.
Everything else is refused with its reason: CT, MR and other modalities, other SOP classes (a VL
Photographic image marked CHEST is still a photograph), colour (RGB, palette, YBR) images,
multi-frame objects, non-image objects (SR, PR, KO: no pixel data), non-DICOM files, images
larger than the pixel budget, and images whose header says text is burned into the pixels
(Burned In Annotation / Recognizable Visual Features YES) unless the site opted in to pixel
cleaning (then the output's OCR check decides).

No input can stop or fool the release: symbolic links (to files or folders) and special files
(FIFOs, devices) are reported and never opened or followed; any name is accepted (a name that is
not UTF-8 is hashed from its bytes); files are hashed while streaming and read only within the
pixel budget.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from pydicom.dataset import Dataset

from privdiff.client.audit import UNREAD
from privdiff.client.deid import Deidentifier, salted_hash
from privdiff.client.deid.retained import CHEST_BODY_PARTS, CHEST_REGION_CODES
from privdiff.client.deid.uids import salted_file_hash
from privdiff.client.ocr import BurnedInTextCheck
from privdiff_core.data import ImageReadError, dicom_image_info, dicom_pixels, read_dicom_dataset
from privdiff_core.data.dicom import DEFAULT_PIXEL_BUDGET
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
    "not_chest": "Body Part Examined (or Anatomic Region Sequence) is not the chest",
    "secondary_capture_not_chest": "secondary capture not marked as a chest image (Body Part Examined CHEST)",
    "unsupported_sop_class": "SOP class is not CR, DX or Secondary Capture Image Storage",
    "symlink": "a symbolic link: never followed (copy the file itself into --in)",
    "not_a_regular_file": "not a regular file (a FIFO, socket or device): never opened",
    "too_large": "larger than the pixel budget (--pixel-budget-mib), checked before decoding",
    "burned_in_annotation": "the header says text is burned into the pixels (Burned In Annotation or "
    "Recognizable Visual Features YES); rerun with --clean-burned-in to let the OCR check decide",
    "burned_in_text": "text found in the anonymized pixels by the OCR check: held back",
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
# Exact SOP classes: CR Image, DX Image For Presentation / For Processing.
RADIOGRAPH_SOP_CLASSES = frozenset(
    {"1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1.1"}
)
# Secondary Capture Image Storage and its grey multi-frame kin (byte, word); by exact UID: a prefix
# would also admit VL Photographic Image Storage (1.2.840.10008.5.1.4.1.1.77.1.4).
SECONDARY_CAPTURE_SOP_CLASSES = frozenset(
    {"1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.7.2", "1.2.840.10008.5.1.4.1.1.7.3"}
)
# Well-known modality terms that may be quoted in a refusal (a free value from the file never is).
KNOWN_MODALITIES = frozenset(
    "CT MR US NM PT XA RF MG OT SC SR PR KO DOC IO PX OP OPT ES XC "  # noqa: SIM905
    "GM SM ECG EPS HD RTIMAGE RTDOSE RTSTRUCT RTPLAN SEG REG BMD BI DG LS TG CR DX".split()
)


@dataclass(frozen=True)
class InputFile:
    """One entry of the input tree; `ref` (a salted hash of its relative path) is its public name.

    `kind` is "file", or the reason code of an entry never opened ("symlink", "not_a_regular_file"
    (refused), "unreadable" (a folder that cannot be listed: failed, retried by a rerun))."""

    path: Path
    ref: str
    kind: str = "file"


@dataclass
class Prepared:
    """An image ready for the anonymizer."""

    source: InputFile
    input_sha: str
    image: np.ndarray  # (S, S) float32 in [-1, 1]
    square_side: int  # side of the centred square of the original the image was resampled from
    header: Dataset  # de-identified, without pixel data
    output_name: str  # "<study>/<series>/<sop>.dcm", all remapped UIDs
    burned_in_flagged: bool = False  # the header said YES and the site opted in to pixel cleaning
    # the input's own SOP Instance UID, kept in memory only to find its row in the site's findings
    # table (--findings); never written: the output carries the remapped one
    source_uid: str = ""


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


def input_ref(secret: bytes, relative: str) -> str:
    """The public name of an input: a salted hash of its relative path's bytes (any encoding)."""
    return salted_hash(secret, os.fsencode(relative), "input-path")[:16]


def walk_inputs(root: Path, secret: bytes, exclude: Path | None = None) -> list[InputFile]:
    """Every entry under `root`, sorted by relative path. Symbolic links (to files or folders),
    special files and folders that cannot be listed come back with their reason code as `kind`:
    nothing is followed or opened here, and nothing is skipped silently."""
    found = []

    def unlistable(error: OSError) -> None:
        if error.filename is not None and Path(error.filename) != root:
            path = Path(error.filename)
            found.append(InputFile(path, input_ref(secret, path.relative_to(root).as_posix()), "unreadable"))

    for folder, subfolders, names in os.walk(root, onerror=unlistable):
        subfolders.sort()
        if exclude is not None:
            subfolders[:] = [d for d in subfolders if Path(folder, d).resolve() != exclude]
        linked = [d for d in subfolders if os.path.islink(os.path.join(folder, d))]
        subfolders[:] = [d for d in subfolders if d not in linked]
        for name in sorted([*names, *linked]):
            path = Path(folder, name)
            try:
                mode = path.lstat().st_mode
            except OSError:
                continue  # gone since the folder was listed: no longer an input
            kind = "symlink" if stat.S_ISLNK(mode) else "file" if stat.S_ISREG(mode) else "not_a_regular_file"
            found.append(InputFile(path, input_ref(secret, path.relative_to(root).as_posix()), kind))
    return found


def _names_chest(ds: Dataset) -> bool | None:
    """True/False when Body Part Examined or Anatomic Region Sequence says; None when neither does.
    Exact terms and codes only: "BRUSTWIRBELSAEULE" (thoracic spine) contains BRUST but is no chest."""
    verdicts = []
    body_part = str(ds.get("BodyPartExamined", "") or "").strip().upper()
    if body_part:
        verdicts.append(body_part in CHEST_BODY_PARTS)
    for item in ds.get("AnatomicRegionSequence") or []:
        code = (str(item.get("CodingSchemeDesignator", "")).strip(), str(item.get("CodeValue", "")).strip())
        verdicts.append(code in CHEST_REGION_CODES)
    return all(verdicts) if verdicts else None


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
    sop_class = info.sop_class_uid.strip()
    chest = _names_chest(ds)
    if modality in RADIOGRAPH_MODALITIES:
        if sop_class not in RADIOGRAPH_SOP_CLASSES | SECONDARY_CAPTURE_SOP_CLASSES:
            raise NotReleasableError("refused", "unsupported_sop_class")
        if chest is False:
            raise NotReleasableError("refused", "not_chest")
        return
    if sop_class in SECONDARY_CAPTURE_SOP_CLASSES and modality in ("", "OT", "SC"):
        if not chest:
            raise NotReleasableError("refused", "secondary_capture_not_chest")
        return
    raise NotReleasableError("refused", "not_a_radiograph", _known_modality(modality))


def header_says_burned_in(ds: Dataset) -> bool:
    """Burned In Annotation or Recognizable Visual Features YES (PS3.3 C.7.6.1.1.7, C.7.6.1)."""
    return any(
        str(ds.get(keyword, "") or "").strip().upper() == "YES"
        for keyword in ("BurnedInAnnotation", "RecognizableVisualFeatures")
    )


def _known_modality(modality: str) -> str:
    modality = modality.strip().upper()
    return f"Modality {modality}" if modality in KNOWN_MODALITIES else ""


_READ_ERROR_CODES = (
    (re.compile(r"not a DICOM file"), "refused", "not_dicom"),
    (re.compile(r"pixel budget"), "refused", "too_large"),
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

    def __init__(
        self,
        image_size: int,
        secret: bytes,
        deidentifier: Deidentifier,
        done: set[tuple[str, str]],
        pixel_budget: int = DEFAULT_PIXEL_BUDGET,
        clean_burned_in: bool = False,
        blank_text: BurnedInTextCheck | None = None,
    ):
        self.image_size = image_size
        self.secret = secret
        self.deidentify = deidentifier
        self.done = done  # (input hash, input ref) pairs an earlier run finished
        self.pixel_budget = pixel_budget
        self.clean_burned_in = clean_burned_in
        self.blank_text = blank_text  # blank words OCR finds in the input before anonymizing

    def __call__(self, source: InputFile) -> Prepared | Outcome:
        input_sha = ""
        try:
            if source.kind != "file":
                # Never opened: known by its path alone, so a rerun finds its verdict by path.
                if (UNREAD, source.ref) in self.done:
                    return Outcome(source, input_sha, "skipped", "already_done")
                return Outcome(
                    source, input_sha, "failed" if source.kind == "unreadable" else "refused", source.kind
                )
            # O_NOFOLLOW: a file swapped for a link after the walk is refused, not followed;
            # O_NONBLOCK: a file swapped for a FIFO cannot hang the reader.
            fd = os.open(source.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            with os.fdopen(fd, "rb") as handle:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    return Outcome(source, input_sha, "refused", "not_a_regular_file")
                input_sha = salted_file_hash(self.secret, handle, "input-content")
                if (input_sha, source.ref) in self.done:
                    return Outcome(source, input_sha, "skipped", "already_done")
                handle.seek(0)
                return self._prepare(source, handle, input_sha)
        except NotReleasableError as refusal:
            return Outcome(source, input_sha, refusal.status, refusal.reason, refusal.detail)
        except OSError as err:
            if err.errno == errno.ELOOP:
                return Outcome(source, input_sha, "refused", "symlink")
            return Outcome(source, input_sha, "failed", "unreadable")
        except Exception:  # noqa: BLE001 -- one bad input must not stop a release; no message is kept
            return Outcome(source, input_sha, "failed", "internal_error")

    def _prepare(self, source: InputFile, handle: BinaryIO, input_sha: str) -> Prepared:
        try:
            ds = read_dicom_dataset(handle, pixel_budget=self.pixel_budget)
        except ImageReadError as err:
            raise classify_read_error(err) from None
        check_chest_radiograph(ds)
        burned_in = header_says_burned_in(ds)
        if burned_in and not self.clean_burned_in:
            raise NotReleasableError("refused", "burned_in_annotation")
        try:
            grey = dicom_pixels(ds, source.path, pixel_budget=self.pixel_budget)
        except ImageReadError as err:
            raise classify_read_error(err) from None
        if self.blank_text is not None:
            grey, _ = self.blank_text.blank_text(grey)
        side = int(min(center_square(grey).shape))
        image = to_signed(square_resize(grey, self.image_size)).astype(np.float32)
        del ds.PixelData  # the original pixels never go further than this function
        source_uid = str(ds.get("SOPInstanceUID", "") or "")
        self.deidentify(ds)
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            if not ds.get(keyword):
                # An input without it still needs a stable, unique name: derive one from its content.
                setattr(ds, keyword, self.deidentify.map_uid.derived(input_sha, keyword))
        output_name = f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
        return Prepared(source, input_sha, image, side, ds, output_name, burned_in, source_uid)
