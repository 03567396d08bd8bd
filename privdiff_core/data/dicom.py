"""DICOM pixel data -> one float32 grey image in [0, 1], MONOCHROME2 sense (0 black, 1 white).

The steps follow the standard's grey-scale display pipeline (PS3.3 C.11, PS3.4 N.2.1.1):

1. **Decode** the stored values (`Dataset.pixel_array`): pydicom masks them to *Bits Stored*
   and sign-extends them when *Pixel Representation* is 1, so 8- to 16-bit, signed or not, come
   out as integers. Compressed transfer syntaxes need a pixel-data plugin; those the project
   installs decode JPEG Baseline/Extended/Lossless and JPEG-LS (pylibjpeg-libjpeg), JPEG 2000 and
   HTJ2K (pylibjpeg-openjpeg), RLE (pylibjpeg-rle, or pydicom itself) and Deflate (pydicom).
2. **Modality LUT** (`pydicom.pixels.apply_modality_lut`): *Rescale Slope/Intercept* or a
   *Modality LUT Sequence* turn stored values into the modality's units (for CT, Hounsfield).
3. **VOI LUT** (the "window"): a *VOI LUT Sequence* is applied with `pydicom.pixels.apply_voi`
   and its output range (the LUT's smallest..largest entry) becomes [0, 1]; otherwise *Window
   Center/Width* with *VOI LUT Function* LINEAR (the default), LINEAR_EXACT or SIGMOID, by the
   formulas of PS3.3 C.11.2.1.2 / C.11.2.1.3 (those of `pydicom.pixels.apply_windowing`),
   written here straight into [0, 1] so the result does not depend on the bit depth. When the
   file has neither, or the window is invalid (width < 1 for LINEAR), the image's own
   minimum..maximum becomes [0, 1] (a constant image reads as all 0). The first of several
   windows is used.
4. **MONOCHROME1** (high values dark, as on film) is inverted, ``1 - x``, *after* the window,
   so both photometric interpretations of the same stored values read as mirror images and a
   MONOCHROME1 radiograph reads with bone bright like every other image.

Colour DICOM (RGB, YBR) whose three channels are equal is read as grey (secondary captures of
grey images); real colour and PALETTE COLOR are refused. So are multi-frame objects, bit depths
outside 8..16, non-image DICOM (a structured report has no Pixel Data), truncated files and
transfer syntaxes no installed plugin decodes: every failure is an `ImageReadError` naming the
file and the reason, never a silent skip.

Resources are bounded before anything is decoded: a file larger than the pixel budget plus a
header allowance is not read; the header's frames x rows x columns x samples x bytes must fit the
pixel budget (`DEFAULT_PIXEL_BUDGET`, sized for the largest CR/DX detectors); a deflated data set
is inflated in chunks and abandoned once it outgrows the same bound (a 274 KiB deflate bomb
would otherwise inflate to gigabytes); a JPEG / JPEG 2000 stream whose own size differs from the
header's is not handed to a decoder (which would allocate what the stream says).

Modality and photometric facts come with the pixels (`DicomImageInfo`), so a caller can refuse
what is not a radiograph: a CT slice reads fine here, because deciding that it does not belong
in a chest X-ray release is the release's job, not the reader's.
"""

from __future__ import annotations

import os
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.errors import InvalidDicomError

# Private helpers of pydicom 3 (pinned <4): the file meta reader that stops where the data set
# starts (to inflate a deflated one ourselves) and the JPEG SOF parser (a stream's own size).
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.filewriter import write_file_meta_info
from pydicom.pixels import apply_modality_lut, apply_voi, get_decoder
from pydicom.pixels.utils import _get_jpg_parameters, get_expected_length
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from privdiff_core.data.errors import ImageReadError
from privdiff_core.data.grey import grey_from_rgb

DicomSource = str | Path | Dataset

GREY_PHOTOMETRIC = ("MONOCHROME1", "MONOCHROME2")
# Colour interpretations pydicom hands back as RGB; accepted only when the channels are equal.
RGB_PHOTOMETRIC = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420")
# Projection radiography modalities (PS3.3 C.7.3.1.1.1); "DR" is not standard but common.
RADIOGRAPH_MODALITIES = ("CR", "DX", "DR")
MIN_BITS_STORED, MAX_BITS_STORED = 8, 16

# Stored pixel bytes one image may have. The largest CR/DX detectors: flat panels of 43 x 43 cm at
# 100 um (4300 x 4300) and CR plates of 35 x 43 cm at 100 um (3520 x 4280), 16 bits: 35 and 29 MiB.
# 64 MiB (33.5 Mpx at 16 bits, 5792 x 5792) leaves room for any of them and bounds a reader's peak
# memory (stored values + float32 grey + resampling) well under 1 GiB.
DEFAULT_PIXEL_BUDGET = 64 * 2**20
# What a file may hold besides its pixels (header, icon, private blocks) before it is not read.
HEADER_ALLOWANCE = 64 * 2**20
_INFLATE_CHUNK = 2**20
_JPEG_SYNTAXES = frozenset(
    "1.2.840.10008.1.2.4." + n for n in ("50", "51", "57", "70", "80", "81")
)  # JPEG Baseline, Extended, Lossless, Lossless SV1, JPEG-LS Lossless and Near-Lossless
_J2K_SYNTAXES = frozenset("1.2.840.10008.1.2.4." + n for n in ("90", "91", "201", "202", "203"))

_PIXEL_DATA_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


@dataclass(frozen=True)
class DicomImageInfo:
    """The header facts a caller needs to decide whether an image belongs where it is going."""

    modality: str
    sop_class_uid: str
    sop_class_name: str
    photometric_interpretation: str
    transfer_syntax_uid: str
    transfer_syntax_name: str
    rows: int
    columns: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    samples_per_pixel: int
    number_of_frames: int
    body_part_examined: str
    view_position: str

    @property
    def is_radiograph(self) -> bool:
        """True for projection radiography (CR, DX): what a chest X-ray release accepts."""
        return self.modality.upper() in RADIOGRAPH_MODALITIES


@dataclass(frozen=True)
class DicomImage:
    """A read DICOM image: unit-grey pixels (rows, columns), its header facts, and the dataset."""

    pixels: np.ndarray
    info: DicomImageInfo
    dataset: Dataset


def read_dicom_dataset(
    source: str | Path | BinaryIO,
    *,
    header_only: bool = False,
    pixel_budget: int | None = DEFAULT_PIXEL_BUDGET,
) -> Dataset:
    """Read a DICOM file (a path, or a binary file opened by the caller), turning every way it can
    fail into an `ImageReadError`.

    `header_only` stops before the pixel data (fast; for identity, age and sex). Files without
    the 128-byte preamble and 'DICM' marker are still read when they start like a bare data set
    (group 0002 or 0008), as old archives write them; anything else is "not a DICOM file".
    `pixel_budget` (bytes of stored pixels, None: unbounded) bounds what is read and inflated and
    the image the header describes (module docstring).
    """
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise ImageReadError(path, "file not found" if not path.exists() else "not a file")
        with path.open("rb") as handle:
            return _read_dataset(handle, path, header_only, pixel_budget)
    return _read_dataset(source, _dataset_path(source), header_only, pixel_budget)


def _read_dataset(fp: BinaryIO, path: Path | None, header_only: bool, budget: int | None) -> Dataset:
    if budget is not None:
        size = _remaining_bytes(fp)
        if size > budget + HEADER_ALLOWANCE:
            raise ImageReadError(
                path,
                f"file of {size / 2**20:.0f} MiB is larger than the pixel budget of {budget / 2**20:.0f} MiB "
                f"allows (plus {HEADER_ALLOWANCE / 2**20:.0f} MiB of header): not read",
            )
    start = fp.tell()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fp = _inflated_if_deflated(fp, path, budget)
            try:
                ds = pydicom.dcmread(fp, stop_before_pixels=header_only)
            except InvalidDicomError:
                fp.seek(start)
                if not _starts_like_bare_dataset(fp):
                    raise
                fp.seek(start)
                ds = pydicom.dcmread(fp, stop_before_pixels=header_only, force=True)
        except InvalidDicomError as err:
            raise ImageReadError(path, "not a DICOM file (no 'DICM' marker after the preamble)") from err
        except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError, zlib.error) as err:
            if isinstance(err, ImageReadError):
                raise
            raise ImageReadError(path, f"corrupt or truncated DICOM file ({err})") from err
    ended_early = any("End of file reached" in str(w.message) for w in caught)
    if len(ds) == 0:
        raise ImageReadError(path, "truncated DICOM file: no data elements after the file meta header")
    if not header_only and ended_early and not any(tag in ds for tag in _PIXEL_DATA_TAGS):
        # pydicom drops an encapsulated Pixel Data element the file ends inside of (with a warning):
        # that is a truncated image, not a non-image object.
        raise ImageReadError(path, "truncated pixel data: the file ends inside the Pixel Data element")
    if budget is not None:
        check_pixel_budget(ds, budget, path)
    return ds


def _remaining_bytes(fp: BinaryIO) -> int:
    here = fp.tell()
    end = fp.seek(0, os.SEEK_END)
    fp.seek(here)
    return end - here


def _inflated_if_deflated(fp: BinaryIO, path: Path | None, budget: int | None) -> BinaryIO:
    """A Deflated Explicit VR file as an in-memory Explicit VR one, inflated with a bound; any
    other file as it is (rewound). pydicom would inflate the whole stream at once, unbounded."""
    start = fp.tell()
    try:
        preamble = read_preamble(fp, False)
        meta = _read_file_meta_info(fp)
    except Exception:  # noqa: BLE001 -- not a Part 10 file: dcmread decides what it is
        fp.seek(start)
        return fp
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        fp.seek(start)
        return fp
    limit = None if budget is None else budget + HEADER_ALLOWANCE
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    body = bytearray()
    while chunk := fp.read(_INFLATE_CHUNK):
        body += inflater.decompress(chunk, (limit + 1 - len(body)) if limit is not None else 0)
        if limit is not None and (len(body) > limit or inflater.unconsumed_tail):
            raise ImageReadError(
                path,
                f"deflated data set inflates beyond the pixel budget of {budget / 2**20:.0f} MiB "
                f"(plus {HEADER_ALLOWANCE / 2**20:.0f} MiB of header): not read (a deflate bomb?)",
            )
    body += inflater.flush()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = BytesIO()
    out.write(preamble or b"\x00" * 128)
    out.write(b"DICM")
    write_file_meta_info(out, meta, enforce_standard=False)
    out.write(body)
    out.seek(0)
    return out


def stored_pixel_bytes(ds: Dataset) -> int:
    """Bytes the header says its decoded pixels take: frames x rows x columns x samples x bytes."""
    info = dicom_image_info(ds)
    bytes_per_sample = max(1, (int(ds.get("BitsAllocated", 0) or 0) + 7) // 8)
    return info.number_of_frames * info.rows * info.columns * info.samples_per_pixel * bytes_per_sample


def check_pixel_budget(ds: Dataset, budget: int, path: str | Path | None = None) -> None:
    """Raise `ImageReadError` when the header describes more stored pixel bytes than `budget`."""
    try:
        needed = stored_pixel_bytes(ds)
    except (TypeError, ValueError) as err:
        raise ImageReadError(path, f"unreadable image size in the header ({err})") from err
    if needed > budget:
        raise ImageReadError(
            path,
            f"pixel budget exceeded: the header describes {needed / 2**20:.0f} MiB of pixels, the budget is "
            f"{budget / 2**20:.0f} MiB (not decoded)",
        )


def _starts_like_bare_dataset(fp: BinaryIO) -> bool:
    head = fp.read(2)
    return head in (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08")  # group 2 or 8, LE or BE


def dicom_image_info(ds: Dataset) -> DicomImageInfo:
    """Header facts of an image (missing attributes read as '' or 0; frames default to 1)."""
    meta = getattr(ds, "file_meta", None)
    tsyntax = meta.get("TransferSyntaxUID") if meta is not None else None
    sop_class = ds.get("SOPClassUID")
    return DicomImageInfo(
        modality=str(ds.get("Modality", "") or ""),
        sop_class_uid=str(sop_class or ""),
        sop_class_name=getattr(sop_class, "name", str(sop_class or "")),
        photometric_interpretation=str(ds.get("PhotometricInterpretation", "") or "").strip(),
        transfer_syntax_uid=str(tsyntax or ""),
        transfer_syntax_name=getattr(tsyntax, "name", str(tsyntax or "")),
        rows=int(ds.get("Rows", 0) or 0),
        columns=int(ds.get("Columns", 0) or 0),
        bits_allocated=int(ds.get("BitsAllocated", 0) or 0),
        bits_stored=int(ds.get("BitsStored", 0) or ds.get("BitsAllocated", 0) or 0),
        pixel_representation=int(ds.get("PixelRepresentation", 0) or 0),
        samples_per_pixel=int(ds.get("SamplesPerPixel", 1) or 1),
        number_of_frames=int(ds.get("NumberOfFrames", 1) or 1),
        body_part_examined=str(ds.get("BodyPartExamined", "") or ""),
        view_position=str(ds.get("ViewPosition", "") or ""),
    )


def read_dicom_image(source: DicomSource) -> DicomImage:
    """Read a DICOM file (or an already read Dataset): unit-grey pixels, header facts, dataset."""
    if isinstance(source, Dataset):
        ds, path = source, _dataset_path(source)
    else:
        ds, path = read_dicom_dataset(source), Path(source)
    info = dicom_image_info(ds)
    return DicomImage(pixels=_display_pipeline(ds, info, path), info=info, dataset=ds)


def read_dicom_pixels(source: DicomSource) -> np.ndarray:
    """Unit-grey float32 pixels (rows, columns) of a DICOM file or Dataset (module docstring)."""
    return read_dicom_image(source).pixels


def _dataset_path(ds: Dataset | BinaryIO) -> Path | None:
    filename = getattr(ds, "filename", None) or getattr(ds, "name", None)
    return Path(filename) if isinstance(filename, str | Path) and filename else None


def dicom_pixels(
    ds: Dataset, path: str | Path | None = None, *, pixel_budget: int | None = DEFAULT_PIXEL_BUDGET
) -> np.ndarray:
    """The display pipeline of the module docstring on a read Dataset; `path` names it in errors."""
    return _display_pipeline(ds, dicom_image_info(ds), path, pixel_budget)


def _display_pipeline(
    ds: Dataset, info: DicomImageInfo, path: str | Path | None, budget: int | None = DEFAULT_PIXEL_BUDGET
) -> np.ndarray:
    _check_is_single_grey_image(ds, info, path)
    if budget is not None:
        check_pixel_budget(ds, budget, path)
    stored = _decode(ds, info, path)
    if info.samples_per_pixel == 3:
        # The modality and VOI LUTs are defined for grey images only; colour values are display
        # levels already, scaled by the stored bit depth.
        return grey_from_rgb(stored.astype(np.float32) / (2**info.bits_stored - 1), path)
    values = apply_modality_lut(stored, ds)
    unit = _voi_to_unit(values, ds)
    if info.photometric_interpretation == "MONOCHROME1":
        np.subtract(1.0, unit, out=unit)
    return np.ascontiguousarray(unit, dtype=np.float32)


def _check_is_single_grey_image(ds: Dataset, info: DicomImageInfo, path: str | Path | None) -> None:
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise ImageReadError(path, "float pixel data (parametric map) is not a radiograph")
        if info.rows or "Image Storage" in info.sop_class_name:
            # An image's header without its pixels: the file ends early (pydicom stops quietly).
            what = info.sop_class_name or "image"
            raise ImageReadError(path, f"truncated file: a {what} header without Pixel Data")
        kind = info.sop_class_name or "unknown SOP class"
        modality = f", modality {info.modality}" if info.modality else ""
        raise ImageReadError(path, f"no pixel data: a non-image DICOM object ({kind}{modality})")
    photometric = info.photometric_interpretation
    if photometric not in GREY_PHOTOMETRIC + RGB_PHOTOMETRIC:
        raise ImageReadError(
            path, f"colour image (PhotometricInterpretation {photometric or 'missing'}); grey-scale only"
        )
    samples = info.samples_per_pixel
    if samples not in (1, 3) or (samples == 3) != (photometric in RGB_PHOTOMETRIC):
        raise ImageReadError(
            path, f"{samples} samples per pixel do not fit PhotometricInterpretation {photometric}"
        )
    if info.number_of_frames != 1:
        raise ImageReadError(
            path, f"multi-frame image ({info.number_of_frames} frames); a radiograph has one frame"
        )
    if not MIN_BITS_STORED <= info.bits_stored <= MAX_BITS_STORED:
        raise ImageReadError(
            path,
            f"unsupported bit depth: BitsStored {info.bits_stored} "
            f"(radiographs have {MIN_BITS_STORED} to {MAX_BITS_STORED})",
        )


def _decode(ds: Dataset, info: DicomImageInfo, path: str | Path | None) -> np.ndarray:
    uid = ds.file_meta.TransferSyntaxUID if "TransferSyntaxUID" in getattr(ds, "file_meta", {}) else None
    if uid is None:
        raise ImageReadError(path, "no Transfer Syntax UID in the file meta information: cannot decode")
    try:
        decoder = get_decoder(uid)
    except NotImplementedError as err:
        raise ImageReadError(
            path,
            f"unsupported transfer syntax {info.transfer_syntax_name} ({uid}): no pixel decoder exists "
            "for it in pydicom; convert the file first (e.g. `gdcmconv --raw` or dcmtk's `dcmdjpeg`)",
        ) from err
    if not decoder.is_available:
        needs = "; ".join(decoder.missing_dependencies) or "a pixel-data plugin"
        raise ImageReadError(
            path,
            f"transfer syntax {info.transfer_syntax_name} ({uid}) needs a pixel-data plugin that is not "
            f"installed: {needs} (pip install the one named)",
        )
    if decoder.is_native:
        expected = get_expected_length(ds, unit="bytes")  # knows YBR_FULL_422's subsampling
        have = len(ds.PixelData)
        if have < expected:
            raise ImageReadError(path, f"truncated pixel data: {have} of {expected} bytes")
    else:
        _check_stream_size(ds, info, uid, path)
    try:
        stored = ds.pixel_array
    except Exception as err:  # decoders raise anything from ValueError to RuntimeError
        raise ImageReadError(path, f"cannot decode pixel data ({info.transfer_syntax_name}): {err}") from err
    expected_shape = (info.rows, info.columns) + ((3,) if info.samples_per_pixel == 3 else ())
    if stored.shape != expected_shape:
        raise ImageReadError(path, f"decoded shape {stored.shape}, the header says {expected_shape}")
    return stored


def _stream_size(frame: bytes, uid: str) -> tuple[int, int] | None:
    """(rows, columns) a JPEG or JPEG 2000 frame declares itself (SOF / SIZ marker), or None."""
    if uid in _JPEG_SYNTAXES:
        params = _get_jpg_parameters(frame)
        return (params["height"], params["width"]) if "height" in params else None
    if uid in _J2K_SYNTAXES:
        offset = frame.find(b"\xff\x4f\xff\x51")  # SOC then SIZ (15444-1 A.5.1), inside a JP2 box or not
        if offset < 0 or len(frame) < offset + 24:
            return None
        siz = frame[offset + 4 :]
        width, height, x0, y0 = (int.from_bytes(siz[i : i + 4], "big") for i in (4, 8, 12, 16))
        return height - y0, width - x0
    return 0, 0  # RLE and others: their decoders allocate what the header says


def _check_stream_size(ds: Dataset, info: DicomImageInfo, uid: str, path: str | Path | None) -> None:
    """A compressed frame must declare the header's size: decoders allocate what the stream says."""
    try:
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    except Exception as err:  # noqa: BLE001 -- malformed encapsulation
        raise ImageReadError(path, f"cannot decode pixel data: malformed encapsulation ({err})") from err
    size = _stream_size(frame, uid)
    if size != (0, 0) and size != (info.rows, info.columns):
        raise ImageReadError(
            path,
            f"cannot decode pixel data: the compressed stream declares {size}, the header "
            f"({info.rows}, {info.columns}); not decoded",
        )


def _voi_to_unit(values: np.ndarray, ds: Dataset) -> np.ndarray:
    """VOI LUT, window, or min..max -> [0, 1] (step 3 of the module docstring), float32."""
    if _has_voi_lut_sequence(ds):
        if not np.issubdtype(values.dtype, np.integer):
            values = np.rint(values).astype(np.int64)  # a LUT is indexed by integer values
        mapped = apply_voi(values, ds).astype(np.float32)
        # The LUT's own output range, found by passing every input it maps through pydicom (which
        # also parses the LUT's byte order): robust to descriptors that overstate the bit depth.
        descriptor = ds.VOILUTSequence[0].LUTDescriptor
        first, entries = int(descriptor[1]), int(descriptor[0]) or 2**16
        outputs = apply_voi(np.arange(first, first + entries, dtype=np.int64), ds)
        return _stretch(mapped, float(outputs.min()), float(outputs.max()))
    # float32 from here: exact for every stored integer (< 2^24), and half the memory traffic of
    # float64 on large radiographs.
    values = values.astype(np.float32)
    window = _window(ds)
    if window is not None:
        center, width, function = window
        return _apply_window(values, center, width, function)
    return _stretch(values, float(values.min()), float(values.max()))


def _has_voi_lut_sequence(ds: Dataset) -> bool:
    sequence = ds.get("VOILUTSequence")
    if not sequence:
        return False
    item = sequence[0]
    return item.get("LUTDescriptor") is not None and item.get("LUTData") is not None


def _first_number(value: object) -> float | None:
    """First value of a DS/IS element that may be multi-valued or empty."""
    if value is None or value == "":
        return None
    if isinstance(value, Sequence) and not isinstance(value, str):  # MultiValue, list
        return _first_number(value[0]) if len(value) else None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _window(ds: Dataset) -> tuple[float, float, str] | None:
    """(center, width, VOI LUT function) of the first valid window, or None."""
    center = _first_number(ds.get("WindowCenter"))
    width = _first_number(ds.get("WindowWidth"))
    if center is None or width is None:
        return None
    function = str(ds.get("VOILUTFunction", "") or "LINEAR").strip().upper()
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        function = "LINEAR"  # the standard's default for an absent or unknown function
    invalid = width < 1 if function == "LINEAR" else width <= 0
    if invalid:
        return None  # an invalid window (PS3.3 C.11.2.1.2): fall back to min..max
    return center, width, function


def _apply_window(x: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """PS3.3 C.11.2.1.2 (LINEAR), C.11.2.1.3.2 (LINEAR_EXACT), C.11.2.1.3.1 (SIGMOID) into [0, 1].

    The standard's piecewise LINEAR definition (0 below the window, 1 above, a ramp between) is
    exactly the ramp clipped to [0, 1]. Overwrites `x` (a float32 array owned by the caller).
    """
    if function == "SIGMOID":
        x -= center
        x *= -4.0 / width
        with np.errstate(over="ignore"):  # exp -> inf far below the window: 1 / inf = 0, as it should
            np.exp(x, out=x)
        x += 1.0
        return np.reciprocal(x, out=x)
    if function == "LINEAR":
        center, width = center - 0.5, width - 1.0
        if width == 0:  # width 1: a hard threshold
            return (x > center).astype(np.float32)
    x -= center - width / 2  # (x - c) / w + 0.5 == (x - (c - w/2)) / w
    return _stretch(x, 0.0, width)


def _stretch(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map [low, high] linearly onto [0, 1], clipped, in place; all zeros when low == high."""
    if high <= low:
        return np.zeros_like(x, dtype=np.float32)
    x -= low
    x *= 1.0 / (high - low)
    return np.clip(x, 0.0, 1.0, out=x)
