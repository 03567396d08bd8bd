"""What a released object says about itself: new pixels, the pixel module they need, and how the
object was de-identified and derived.

Runs after `Deidentifier` on the same dataset. The output is a Secondary Capture Image
(PS3.3 A.8.1): its pixels are synthesized by a model from the original (Conversion Type "SYN",
Image Type DERIVED\\SECONDARY), which the CR/DX IODs do not describe, and it keeps the radiograph's
non-identifying technique attributes (Modality, View Position, KVP, ...) as a standard extended
SOP class. Pixels are 12 bits in 16 (MONOCHROME2, unsigned), the anonymizer's signed grey [-1, 1]
mapped linearly onto 0..4095 with a window covering the full range.

Claims are made only for what was checked: Burned In Annotation NO and the Clean Pixel Data
option code (CID 7050) are written only when the output's pixels passed the OCR check
(`client/ocr.py`, `PixelProvenance.text_check_passed`); otherwise neither is written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

import privdiff_core
from privdiff.client.deid.uids import UIDMapper

BITS_STORED = 12
MAX_STORED = 2**BITS_STORED - 1
# ImplementationClassUID of files privdiff writes: 2.25 + uuid5(NAMESPACE_URL, "https://github.com/privdiff/privdiff").
IMPLEMENTATION_CLASS_UID = "2.25.67088441598188205883466446652903712455"
IMPLEMENTATION_VERSION_NAME = ("PRIVDIFF_" + privdiff_core.__version__.replace(".", "_"))[:16]

# Attributes that describe the original pixel matrix, its grey-scale pipeline or graphics drawn
# in its pixel coordinates: all invalid once the pixels are replaced at another size.
PIXEL_BOUND_KEYWORDS = (
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PlanarConfiguration",
    "PixelAspectRatio",
    "SmallestImagePixelValue",
    "LargestImagePixelValue",
    "SmallestPixelValueInSeries",
    "LargestPixelValueInSeries",
    "PixelPaddingValue",
    "PixelPaddingRangeLimit",
    "NumberOfFrames",
    "FrameIncrementPointer",
    "RescaleIntercept",
    "RescaleSlope",
    "RescaleType",
    "ModalityLUTSequence",
    "VOILUTSequence",
    "WindowCenter",
    "WindowWidth",
    "WindowCenterWidthExplanation",
    "VOILUTFunction",
    "PresentationLUTSequence",
    "PresentationLUTShape",
    "PixelIntensityRelationship",
    "PixelIntensityRelationshipSign",
    "IconImageSequence",
    "PixelData",
    "FloatPixelData",
    "DoubleFloatPixelData",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
    "PixelDataProviderURL",
    "RedPaletteColorLookupTableDescriptor",
    "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor",
    "RedPaletteColorLookupTableData",
    "GreenPaletteColorLookupTableData",
    "BluePaletteColorLookupTableData",
    "PaletteColorLookupTableUID",
    "SegmentedRedPaletteColorLookupTableData",
    "SegmentedGreenPaletteColorLookupTableData",
    "SegmentedBluePaletteColorLookupTableData",
    "ShutterShape",
    "ShutterLeftVerticalEdge",
    "ShutterRightVerticalEdge",
    "ShutterUpperHorizontalEdge",
    "ShutterLowerHorizontalEdge",
    "CenterOfCircularShutter",
    "RadiusOfCircularShutter",
    "VerticesOfThePolygonalShutter",
    "ShutterPresentationValue",
    "ShutterOverlayGroup",
    "CollimatorShape",
    "CollimatorLeftVerticalEdge",
    "CollimatorRightVerticalEdge",
    "CollimatorUpperHorizontalEdge",
    "CollimatorLowerHorizontalEdge",
    "CenterOfCircularCollimator",
    "RadiusOfCircularCollimator",
    "VerticesOfThePolygonalCollimator",
    "BurnedInAnnotation",
    "RecognizableVisualFeatures",
    "ImageType",
)
SPACING_KEYWORDS = ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing")
# Type 2 attributes of the Secondary Capture IOD's Patient/Study/Series/Image modules: present,
# possibly empty, in every output even when the input lacked them.
TYPE2_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "SeriesNumber",
    "InstanceNumber",
    "PatientOrientation",
)


@dataclass(frozen=True)
class PixelProvenance:
    """How the new pixels were made; all of it goes into the header (none of it identifies anyone)."""

    model_sha256: str
    key_id: str | None  # None: the model was not signed (released with --allow-unsigned)
    image_size: int
    source_square_side: int  # side of the centred square of the original that was resampled
    # True only when the output's pixels went through the burned-in text check (client/ocr.py)
    # and it found no text: the one case where BurnedInAnnotation NO and Clean Pixel Data are true.
    text_check_passed: bool = False


def to_stored_values(signed: np.ndarray) -> np.ndarray:
    """Signed grey [-1, 1] (S, S) -> uint16 0..4095, MONOCHROME2 (bone bright)."""
    unit = np.clip((np.asarray(signed, dtype=np.float32) + 1.0) / 2.0, 0.0, 1.0)
    return np.rint(unit * MAX_STORED).astype(np.uint16)


def _code_item(code) -> Dataset:
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item


def replace_pixels(ds: Dataset, stored: np.ndarray, provenance: PixelProvenance) -> None:
    """Drop everything bound to the old pixel matrix and write the new one (a fresh array)."""
    for keyword in PIXEL_BOUND_KEYWORDS:
        if keyword in ds:
            delattr(ds, keyword)
    size = int(stored.shape[0])
    if stored.shape != (size, size) or stored.dtype != np.uint16:
        raise ValueError(f"expected square uint16 pixels, got {stored.dtype} {stored.shape}")
    # The anonymizer saw the centred square of side `source_square_side`, resampled to `size`:
    # one new pixel covers side/size old ones in both directions.
    scale = provenance.source_square_side / size
    for keyword in SPACING_KEYWORDS:
        spacing = ds.get(keyword)
        try:
            values = [float(v) for v in spacing] if spacing is not None else None
        except (TypeError, ValueError):
            values = None
        if values is not None and len(values) == 2 and all(v > 0 for v in values):
            setattr(ds, keyword, [f"{v * scale:.6g}" for v in values])
        elif keyword in ds:
            delattr(ds, keyword)  # unreadable spacing: better none than a wrong one
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated = 16
    ds.BitsStored = BITS_STORED
    ds.HighBit = BITS_STORED - 1
    ds.PixelRepresentation = 0
    ds.WindowCenter = f"{(MAX_STORED + 1) // 2}"
    ds.WindowWidth = f"{MAX_STORED + 1}"
    ds.PixelData = np.ascontiguousarray(stored, dtype="<u2").tobytes()
    ds["PixelData"].VR = "OW"


def describe_pixels(provenance: PixelProvenance) -> str:
    signer = f"signature key {provenance.key_id}" if provenance.key_id else "UNSIGNED model"
    return (
        "Pixel data replaced by the PrivDiff-Net anonymizer (latent diffusion; identity, age and sex "
        f"suppressed): original decoded to grey, centre square resampled to {provenance.image_size}x"
        f"{provenance.image_size} and regenerated; model sha256 {provenance.model_sha256}; {signer}; "
        f"privdiff {privdiff_core.__version__}."
    )


def stamp_release(ds: Dataset, provenance: PixelProvenance, uid_mapper: UIDMapper, fallback_uid: str) -> None:
    """Set the IOD, the de-identification record and the derivation record of a released object.

    `fallback_uid` (a salted hash of the input) names what the input did not: an input without
    SOP/Study/Series Instance UIDs still gets stable, unique new ones.
    """
    ds.SOPClassUID = SecondaryCaptureImageStorage
    for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        if not ds.get(keyword):
            setattr(ds, keyword, uid_mapper.derived(fallback_uid, keyword))
    if not ds.get("Modality"):
        ds.Modality = "OT"
    ds.ConversionType = "SYN"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    for keyword in TYPE2_KEYWORDS:
        if keyword not in ds:
            setattr(ds, keyword, None)

    # Code meanings come from PS3.16 and may need more than ASCII.
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientIdentityRemoved = "YES"
    methods = [_code_item(codes.cid7050.BasicApplicationConfidentialityProfile)]
    if provenance.text_check_passed:
        # Claimed only for what was checked: regenerated pixels in which OCR found no text.
        ds.BurnedInAnnotation = "NO"
        methods.append(_code_item(codes.cid7050.CleanPixelDataOption))
        pixel_method = "Clean Pixel Data: pixels regenerated by PrivDiff-Net, OCR found no text"
    else:
        pixel_method = "pixels regenerated by PrivDiff-Net; burned-in text NOT checked"
    ds.DeidentificationMethod = [
        "DICOM PS3.15 E Basic Application Confidentiality Profile (allow-list)",
        pixel_method,
        "no Retain options; UIDs remapped with a site key",
        f"privdiff {privdiff_core.__version__}",
    ]
    ds.DeidentificationMethodCodeSequence = Sequence(methods)
    # Dates were removed, not shifted (no Retain Longitudinal Temporal Information option).
    ds.LongitudinalTemporalInformationModified = "REMOVED"

    ds.DerivationDescription = describe_pixels(provenance)
    ds.DerivationCodeSequence = Sequence([_code_item(codes.cid7203.SpatialResampling)])
    equipment = Dataset()
    equipment.Manufacturer = "privdiff"
    equipment.ManufacturerModelName = "PrivDiff-Net anonymizer"
    equipment.SoftwareVersions = [privdiff_core.__version__, f"model sha256 {provenance.model_sha256[:16]}"]
    equipment.PurposeOfReferenceCodeSequence = Sequence([_code_item(codes.cid7005.DeIdentifyingEquipment)])
    equipment.ContributionDescription = describe_pixels(provenance)
    contributors = ds.get("ContributingEquipmentSequence")
    ds.ContributingEquipmentSequence = Sequence([*(contributors or []), equipment])


def file_meta_for(ds: Dataset) -> FileMetaDataset:
    """Fresh file meta information: nothing of the input's (its AE titles, its implementation)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta


def encode_file(ds: Dataset) -> bytes:
    """The Part 10 file: zero preamble, new file meta, Explicit VR Little Endian, uncompressed."""
    from io import BytesIO

    ds.file_meta = file_meta_for(ds)
    ds.preamble = b"\x00" * 128  # an input's preamble may hold anything (a TIFF header, text)
    buffer = BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True, implicit_vr=False, little_endian=True)
    return buffer.getvalue()
