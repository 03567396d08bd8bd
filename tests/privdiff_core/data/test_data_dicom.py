"""DICOM pixel reading: real files from others (the repo's fixtures, pydicom's own test files) and
files written here to pin down each step of the display pipeline."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from data_dicom_factory import REAL, gradient, make_dataset, write_dicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import JPEG2000Lossless, RLELossless, generate_uid

from privdiff_core.data import ImageReadError, read_dicom_image, read_dicom_pixels
from privdiff_core.data import dicom as dicom_module

PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"


def pydicom_file(name: str) -> Path:
    path = PYDICOM_FILES / name
    assert path.is_file(), f"pydicom no longer ships {name}"
    return path


# --- the repository's real fixtures ---------------------------------------------------------


def test_jpeg_baseline_cr_matches_an_independent_jpeg_decoder():
    image = read_dicom_image(REAL / "rsna_cr_jpeg_baseline.dcm")
    assert image.pixels.dtype == np.float32 and image.pixels.shape == (1024, 1024)
    assert image.info.modality == "CR" and image.info.is_radiograph
    assert image.info.transfer_syntax_uid == "1.2.840.10008.1.2.4.50"
    # Decode the embedded JPEG stream with Pillow (libjpeg-turbo): an 8-bit image without a
    # window spans 0..255, so the reading is the stream's grey levels / 255 up to IDCT rounding.
    ds = pydicom.dcmread(REAL / "rsna_cr_jpeg_baseline.dcm")
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    reference = np.asarray(Image.open(io.BytesIO(frame)), dtype=np.float32) / 255.0
    assert np.abs(image.pixels - reference).max() <= 2 / 255
    assert np.abs(image.pixels - reference).mean() < 0.5 / 255


def test_monochrome1_reads_as_the_inverse_of_the_same_stored_image():
    mono2 = read_dicom_pixels(REAL / "rsna_cr_jpeg_baseline.dcm")
    mono1 = read_dicom_pixels(REAL / "rsna_cr_jpeg_baseline_monochrome1.dcm")
    # Same stored values, opposite interpretation: once displayed, one is the negative of the other.
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)
    assert mono2.mean() > 0.5 > mono1.mean()  # MONOCHROME2 chest: mostly bright body


def test_ct_slice_reads_through_its_window_and_says_it_is_a_ct():
    image = read_dicom_image(REAL / "ct_not_a_radiograph.dcm")
    assert image.info.modality == "CT" and not image.info.is_radiograph
    assert image.info.photometric_interpretation == "MONOCHROME2"
    assert image.pixels.shape == (552, 394) and 0 <= image.pixels.min() < image.pixels.max() <= 1
    # Cross-check with pydicom's own pipeline: its window output spans the signed 16-bit range.
    ds = image.dataset
    shown = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)
    y_min, y_max = -(2**15), 2**15 - 1
    np.testing.assert_allclose(image.pixels, (shown - y_min) / (y_max - y_min), atol=1e-6)


# --- pydicom's real test files: transfer syntaxes and refusals --------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
    ],
)
def test_lossless_transfer_syntaxes_read_exactly_like_the_uncompressed_file(name):
    reference = read_dicom_pixels(pydicom_file("MR_small.dcm"))
    np.testing.assert_array_equal(read_dicom_pixels(pydicom_file(name)), reference)


@pytest.mark.parametrize(
    "name", ["JPGExtended.dcm", "JPEG2000.dcm", "693_J2KI.dcm", "JPEGLSNearLossless_16.dcm", "image_dfl.dcm"]
)
def test_other_compressed_syntaxes_decode(name):
    pixels = read_dicom_pixels(pydicom_file(name))
    assert pixels.dtype == np.float32 and pixels.ndim == 2
    assert pixels.min() == 0.0 and pixels.max() == 1.0  # no window: min..max


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("rtdose.dcm", "multi-frame image (15 frames)"),
        ("examples_rgb_color.dcm", "colour image"),
        ("examples_palette.dcm", "PALETTE COLOR"),
        ("SC_ybr_full_422_uncompressed.dcm", "colour image"),
        # no preamble, no file meta: still read as DICOM, and refused for what it is
        ("ExplVR_LitEndNoMeta.dcm", "no pixel data: a non-image DICOM object (RT Ion Plan Storage"),
        ("reportsi.dcm", "no pixel data: a non-image DICOM object (Basic Text SR Storage"),
        ("MR_truncated.dcm", "truncated pixel data: 8130 of 8192 bytes"),
        ("liver_1frame.dcm", "unsupported bit depth: BitsStored 1"),
    ],
)
def test_unreadable_real_files_are_refused_with_the_file_and_reason(name, reason):
    with pytest.raises(ImageReadError) as caught:
        read_dicom_pixels(pydicom_file(name))
    assert reason in str(caught.value)
    assert caught.value.path == pydicom_file(name) and name in str(caught.value)


# --- files written here -----------------------------------------------------------------------


def test_eight_and_sixteen_bit_without_window_span_min_to_max(tmp_path):
    for bits, high, dtype in [(8, 200, np.uint8), (12, 4000, np.uint16), (16, 60000, np.uint16)]:
        stored = gradient(high=high, dtype=dtype) + dtype(10)
        path = write_dicom(tmp_path / f"b{bits}.dcm", make_dataset(stored, bits_stored=bits))
        expected = (stored - stored.min()) / (stored.max() - stored.min())
        np.testing.assert_allclose(read_dicom_pixels(path), expected, atol=1e-6)


def test_bits_above_bits_stored_are_ignored(tmp_path):
    stored = gradient(high=4095, dtype=np.uint16)
    ds = make_dataset(stored, bits_stored=12)
    dirty = stored.copy()
    dirty[::2] |= 0xF000  # old files keep overlay planes in the unused high bits
    ds.PixelData = dirty.tobytes()
    np.testing.assert_allclose(
        read_dicom_pixels(write_dicom(tmp_path / "o.dcm", ds)), stored / 4095.0, atol=1e-6
    )


def test_signed_pixels_with_rescale_and_window(tmp_path):
    stored = (gradient(high=2000, dtype=np.int16) - 1000).astype(np.int16)  # -1000..1000
    ds = make_dataset(
        stored, bits_stored=12, slope=2.0, intercept=-24.0, window=(100.0, 801.0), modality="DX"
    )
    pixels = read_dicom_pixels(write_dicom(tmp_path / "signed.dcm", ds))
    # LINEAR window (PS3.3 C.11.2.1.2) on the rescaled values: c' = c - 0.5, w' = w - 1.
    values = stored * 2.0 - 24.0
    expected = np.clip((values - 99.5) / 800.0 + 0.5, 0, 1)
    np.testing.assert_allclose(pixels, expected, atol=1e-6)
    assert (pixels == 0).any() and (pixels == 1).any()


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_windows_agree_with_pydicom_apply_windowing(tmp_path, function):
    stored = gradient(high=4095, dtype=np.uint16)
    ds = make_dataset(
        stored, bits_stored=12, slope=1.5, intercept=-100.0, window=(2000, 2500), voi_function=function
    )
    pixels = read_dicom_pixels(write_dicom(tmp_path / "w.dcm", ds))
    shown = apply_voi_lut(apply_modality_lut(stored, ds), ds)
    y_min, y_max = 0 * 1.5 - 100.0, 4095 * 1.5 - 100.0  # pydicom's output range (unsigned, rescaled)
    np.testing.assert_allclose(pixels, (shown - y_min) / (y_max - y_min), atol=1e-6)


def test_invalid_window_falls_back_to_min_max(tmp_path):
    stored = gradient(high=255)
    ds = make_dataset(stored, bits_stored=8, window=(128, 0))
    pixels = read_dicom_pixels(write_dicom(tmp_path / "w0.dcm", ds))
    np.testing.assert_allclose(pixels, stored / 255.0, atol=1e-6)


def test_voi_lut_sequence_is_applied_and_preferred_to_the_window(tmp_path):
    stored = gradient(high=1023, dtype=np.uint16)
    ds = make_dataset(stored, bits_stored=10, window=(10, 20))
    lut = np.round(np.sqrt(np.arange(1024) / 1023) * 4095).astype(np.uint16)  # a gamma curve
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [1024, 0, 16])  # 16-bit descriptor, 12-bit data: data range
    item.add_new("LUTData", "OW", lut.astype("<u2").tobytes())
    ds.VOILUTSequence = [item]
    pixels = read_dicom_pixels(write_dicom(tmp_path / "lut.dcm", ds))
    np.testing.assert_allclose(pixels, lut[stored] / 4095.0, atol=1e-6)


def test_written_monochrome1_is_inverted_after_the_window(tmp_path):
    stored = gradient(high=4095, dtype=np.uint16)
    common = dict(bits_stored=12, window=(1500, 2000))
    mono2 = read_dicom_pixels(write_dicom(tmp_path / "m2.dcm", make_dataset(stored, **common)))
    mono1 = read_dicom_pixels(
        write_dicom(tmp_path / "m1.dcm", make_dataset(stored, photometric="MONOCHROME1", **common))
    )
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_compressed_files_written_here_read_like_uncompressed(tmp_path, syntax):
    stored = gradient(high=3000, dtype=np.uint16)
    plain = read_dicom_pixels(write_dicom(tmp_path / "plain.dcm", make_dataset(stored, bits_stored=12)))
    packed = write_dicom(tmp_path / "packed.dcm", make_dataset(stored, bits_stored=12), compress=syntax)
    assert pydicom.dcmread(packed).file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(read_dicom_pixels(packed), plain)


def test_rgb_with_equal_channels_is_grey_and_colour_is_refused(tmp_path):
    grey = gradient(high=255)
    ds = make_dataset(np.stack([grey] * 3, axis=-1), bits_stored=8, photometric="RGB")
    np.testing.assert_allclose(
        read_dicom_pixels(write_dicom(tmp_path / "g.dcm", ds)), grey / 255.0, atol=1e-6
    )
    tinted = np.stack([grey, grey, grey // 2], axis=-1)
    path = write_dicom(tmp_path / "c.dcm", make_dataset(tinted, bits_stored=8, photometric="RGB"))
    with pytest.raises(ImageReadError, match="colour image"):
        read_dicom_pixels(path)


def test_a_dataset_in_memory_reads_like_its_file(tmp_path):
    ds = make_dataset(gradient(), bits_stored=8)
    path = write_dicom(tmp_path / "x.dcm", ds)
    np.testing.assert_array_equal(read_dicom_pixels(ds), read_dicom_pixels(path))


def test_non_image_structured_report_is_refused(tmp_path):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "SR"
    ds.PatientID = "P1"
    ds.ValueType = "CONTAINER"
    path = tmp_path / "report.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(ImageReadError, match=r"report.dcm: no pixel data: a non-image .*Basic Text SR"):
        read_dicom_pixels(path)


def test_missing_and_non_dicom_files(tmp_path):
    with pytest.raises(ImageReadError, match=r"nope.dcm: file not found"):
        read_dicom_pixels(tmp_path / "nope.dcm")
    text = tmp_path / "notes.dcm"
    text.write_text("not an image at all\n" * 20)
    with pytest.raises(ImageReadError, match=r"notes.dcm: not a DICOM file"):
        read_dicom_pixels(text)


def test_truncated_files_are_named_as_truncated(tmp_path):
    jpeg = (REAL / "rsna_cr_jpeg_baseline.dcm").read_bytes()
    cut = tmp_path / "cut_jpeg.dcm"
    cut.write_bytes(jpeg[: len(jpeg) // 2])  # inside the encapsulated JPEG stream
    with pytest.raises(ImageReadError, match=r"cut_jpeg.dcm: truncated"):
        read_dicom_pixels(cut)
    ct = (REAL / "ct_not_a_radiograph.dcm").read_bytes()
    cut_ct = tmp_path / "cut_ct.dcm"
    cut_ct.write_bytes(ct[:-1000])  # native pixel data, 1000 bytes short
    with pytest.raises(ImageReadError, match=r"cut_ct.dcm: truncated pixel data: 433976 of 434976 bytes"):
        read_dicom_pixels(cut_ct)
    header_only = tmp_path / "cut_header.dcm"
    header_only.write_bytes(jpeg[:400])
    with pytest.raises(ImageReadError, match=r"cut_header.dcm: (truncated|corrupt)"):
        read_dicom_pixels(header_only)


def test_unsupported_transfer_syntax_and_missing_plugin(tmp_path, monkeypatch):
    ds = make_dataset(gradient(), bits_stored=8)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no pixel decoder exists
    with pytest.raises(ImageReadError, match=r"unsupported transfer syntax MPEG2 .*no pixel decoder"):
        read_dicom_pixels(ds)

    class MissingPlugin:
        is_available = False
        missing_dependencies = ["pylibjpeg - requires pylibjpeg-libjpeg"]

    monkeypatch.setattr(dicom_module, "get_decoder", lambda uid: MissingPlugin())
    with pytest.raises(ImageReadError, match=r"needs a pixel-data plugin .*pylibjpeg-libjpeg"):
        read_dicom_pixels(REAL / "rsna_cr_jpeg_baseline.dcm")
