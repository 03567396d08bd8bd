"""`read_image` / `read_image_tensor`: any file -> square unit-grey image, real PNGs included."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_dicom_factory import REAL, gradient, make_dataset, write_dicom
from PIL import Image

from privdiff_core.data import ImageReadError, read_dicom_pixels, read_image, read_image_tensor
from privdiff_core.data.grey import square_resize


@pytest.mark.parametrize("name", ["nih_00000001_000.png", "nih_00027426_000.png"])
def test_real_nih_png_reads_its_grey_levels(name):
    pixels = read_image(REAL / name)
    expected = np.asarray(Image.open(REAL / name).convert("L"), dtype=np.float32) / 255.0
    assert pixels.shape == (512, 512) and pixels.dtype == np.float32
    np.testing.assert_array_equal(pixels, expected)


def test_png_stored_as_rgb_with_equal_channels_reads_as_grey():
    with Image.open(REAL / "tbx11k_h0001.png") as image:
        assert image.mode == "RGB"
        rgb = np.asarray(image)
    assert (rgb[..., 0] == rgb[..., 2]).all()
    np.testing.assert_allclose(read_image(REAL / "tbx11k_h0001.png"), rgb[..., 0] / 255.0, atol=1e-6)


def test_colour_png_is_refused(tmp_path):
    rgb = np.zeros((16, 16, 3), dtype=np.uint8)
    rgb[..., 0] = 200  # red
    Image.fromarray(rgb).save(tmp_path / "red.png")
    with pytest.raises(ImageReadError, match=r"red.png: colour image"):
        read_image(tmp_path / "red.png")


def test_sixteen_bit_png_and_grey_jpeg(tmp_path):
    levels = (gradient(high=65535, dtype=np.uint16)).astype(np.uint16)
    Image.fromarray(levels).save(tmp_path / "deep.png")
    np.testing.assert_allclose(read_image(tmp_path / "deep.png"), levels / 65535.0, atol=1e-6)
    grey = gradient(high=255)
    Image.fromarray(grey).save(tmp_path / "grey.jpg", quality=95)
    assert np.abs(read_image(tmp_path / "grey.jpg") - grey / 255.0).mean() < 0.02


def test_resize_center_crops_and_antialiases():
    # A 1-pixel checkerboard must average to mid-grey when shrunk 16x (aliasing would not).
    board = (np.indices((512, 512)).sum(axis=0) % 2).astype(np.float32)
    small = square_resize(board, 32)
    assert small.shape == (32, 32) and np.abs(small - 0.5).max() < 0.02
    # A wide image keeps its central square: left and right thirds are cut.
    wide = np.zeros((30, 90), dtype=np.float32)
    wide[:, 30:60] = 1.0
    np.testing.assert_array_equal(square_resize(wide, 30), np.ones((30, 30), dtype=np.float32))
    np.testing.assert_array_equal(square_resize(board, 512), board)  # already at size: untouched


def test_size_argument_and_signed_tensor_on_real_files():
    for name in ("nih_00000001_000.png", "rsna_cr_jpeg_baseline.dcm", "ct_not_a_radiograph.dcm"):
        unit = read_image(REAL / name, 64)
        assert unit.shape == (64, 64) and unit.min() >= 0.0 and unit.max() <= 1.0
        tensor = read_image_tensor(REAL / name, 64)
        assert tensor.shape == (1, 64, 64) and tensor.dtype == torch.float32
        torch.testing.assert_close(tensor, torch.from_numpy(unit * 2 - 1).unsqueeze(0))
    # The CT (552 x 394) keeps its central 394 x 394 square.
    full = read_dicom_pixels(REAL / "ct_not_a_radiograph.dcm")
    np.testing.assert_allclose(read_image(REAL / "ct_not_a_radiograph.dcm", 394), full[79:473], atol=1e-6)


def test_dicom_is_recognised_by_its_marker_without_an_extension(tmp_path):
    path = write_dicom(tmp_path / "IM000001", make_dataset(gradient(), bits_stored=8))
    np.testing.assert_allclose(read_image(path), gradient() / 255.0, atol=1e-6)


def test_unreadable_raster_files(tmp_path):
    with pytest.raises(ImageReadError, match=r"missing.png: file not found"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(ImageReadError, match=r"text.png: not an image file"):
        read_image(tmp_path / "text.png")
    data = (REAL / "nih_00000001_000.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageReadError, match=r"cut.png: corrupt or truncated"):
        read_image(tmp_path / "cut.png")
