"""Read any chest X-ray file privdiff meets (DICOM, PNG, JPEG) as one square grey image.

`read_image(path, size)` returns float32 (size, size) unit grey in [0, 1] (0 black, bone bright:
see `privdiff_core.data.grey` for the conventions and the center-crop); `read_image_tensor`
returns the model's (1, size, size) tensor in [-1, 1]. DICOM goes through
`privdiff_core.data.dicom` (window, rescale, MONOCHROME1); PNG and JPEG through Pillow:
8-bit levels / 255, 16-bit / 65535; an RGB file with equal channels is grey, a colour one is
refused. A file is DICOM when it carries the 'DICM' marker or a DICOM file name extension.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from privdiff_core.data.dicom import read_dicom_pixels
from privdiff_core.data.errors import ImageReadError
from privdiff_core.data.grey import grey_from_rgb, square_resize, to_signed

DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
# Raster formats Pillow reads; any other file without the DICM marker is tried as bare DICOM.
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def is_dicom_file(path: str | Path) -> bool:
    """A DICOM extension, or the 'DICM' marker at byte 128 (the standard's file format)."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    with path.open("rb") as handle:
        handle.seek(128)
        return handle.read(4) == b"DICM"


def read_image(path: str | Path, size: int | None = None) -> np.ndarray:
    """Unit-grey float32 image of a DICOM/PNG/JPEG file, center-cropped and resized to `size`.

    `size=None` keeps the file's own resolution and aspect ratio. Raises `ImageReadError`
    (file and reason) for a missing, unreadable, truncated, colour or multi-frame file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "file not found" if not path.exists() else "not a file")
    if is_dicom_file(path) or path.suffix.lower() not in RASTER_SUFFIXES:
        grey = read_dicom_pixels(path)
    else:
        grey = read_raster_pixels(path)
    return grey if size is None else square_resize(grey, size)


def read_image_tensor(path: str | Path, size: int) -> torch.Tensor:
    """The model's view of an image file: float32 tensor (1, size, size) in [-1, 1]."""
    return torch.from_numpy(to_signed(read_image(path, size))).unsqueeze(0)


def read_raster_pixels(path: str | Path) -> np.ndarray:
    """Unit-grey float32 pixels of a PNG/JPEG/TIFF file at its own resolution."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            if getattr(image, "n_frames", 1) > 1:
                raise ImageReadError(path, f"multi-frame image ({image.n_frames} frames)")
            image.load()
            return _unit_grey(image, path)
    except UnidentifiedImageError as err:
        raise ImageReadError(path, "not an image file Pillow can read (nor DICOM)") from err
    except OSError as err:  # Pillow raises OSError for truncated and corrupt streams
        raise ImageReadError(path, f"corrupt or truncated image file ({err})") from err


def _unit_grey(image: Image.Image, path: Path) -> np.ndarray:
    mode = image.mode
    if mode in ("1", "L", "LA"):
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    if mode.startswith("I;16") or mode == "I":
        levels = np.asarray(image, dtype=np.float32)
        if mode == "I" and levels.max(initial=0) > 65535:
            raise ImageReadError(path, "32-bit integer image: privdiff reads 8- and 16-bit grey levels")
        return levels / 65535.0
    if mode == "F":
        raise ImageReadError(path, "floating-point image: its grey scale is unknown; save it as 8/16-bit")
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return grey_from_rgb(rgb, path)
