"""Grey levels: the two value conventions every privdiff image uses, and the shared pixel steps.

**[0, 1], "unit" grey** (what the readers return as numpy arrays): 0 is black and 1 is white *as
a radiologist sees the image on screen*, i.e. in the MONOCHROME2 sense: air (lungs, background)
dark, bone and metal bright. Every source is brought to this sense before anything else:

- DICOM MONOCHROME2 stores it directly; DICOM MONOCHROME1 stores the opposite (a high pixel value
  is dark, as on film), so its grey levels are inverted (``1 - x``) *after* the rescale and
  window steps, as the standard's display pipeline does (PS3.3 C.7.6.3.1.2, C.11.2);
- DICOM pixel values are first mapped to display levels by the modality LUT (Rescale Slope /
  Intercept) and the VOI LUT or window, and that window's output range becomes [0, 1]; without
  a window the image's own min..max does (see `privdiff_core.data.dicom`);
- PNG and JPEG files hold display levels already: 8-bit values are divided by 255, 16-bit by
  65535 (no per-image stretching, so a dark PNG stays dark).

**[-1, 1], "signed" grey** (what the models see; `CXRDataset` samples): ``2 * unit - 1``, so -1
is black and +1 white. This is the range diffusion models and their VAEs are trained in.

Resizing keeps the aspect ratio by **center-cropping** to a square (the largest centred
square, cutting the long side), then resamples with an antialiased bilinear (triangle) filter.
A crop rather than padding because frontal chest radiographs are close to square and put the
chest in the middle: a crop loses some shoulder or abdomen, while padding would add black bars
that no real image has and that a generative model would learn to draw.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from privdiff_core.data.errors import ImageReadError

# An image stored as RGB is accepted as grey when no pixel's channels differ by more than this
# (in unit grey). Lossless grey-as-RGB files differ by 0; a grey image saved as RGB JPEG by a
# level or two from rounding; a genuinely coloured pixel (an annotation, a heat map) by far more.
RGB_GREY_TOLERANCE = 0.05

# PIL shrinks by an integer box-reduction first and resamples only the last factor of ~3: about
# 4x faster on 1024 -> 64 and, per PIL's documentation, indistinguishable from a full resample.
_REDUCING_GAP = 3.0


def to_signed(unit: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Unit grey [0, 1] -> signed grey [-1, 1]."""
    return unit * 2 - 1


def to_unit(signed: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Signed grey [-1, 1] -> unit grey [0, 1]."""
    return (signed + 1) / 2


def grey_from_rgb(rgb: np.ndarray, path: str | Path | None) -> np.ndarray:
    """Grey (H, W) from an (H, W, 3) unit-grey RGB array whose channels are (nearly) equal.

    Radiographs are sometimes stored as RGB with three equal channels; those are grey and read
    as the channel mean. A genuinely colour image is refused: privdiff reads radiographs, and
    colour usually means burned-in annotations or a photograph.
    """
    spread = float((rgb.max(axis=-1) - rgb.min(axis=-1)).max()) if rgb.size else 0.0
    if spread > RGB_GREY_TOLERANCE:
        raise ImageReadError(
            path,
            f"colour image (channels differ by up to {spread:.2f} of full scale); "
            "privdiff reads grey-scale radiographs only",
        )
    return rgb.mean(axis=-1, dtype=np.float32)


def center_square(grey: np.ndarray) -> np.ndarray:
    """The largest centred square of a 2-D array (the long side is cut evenly on both ends)."""
    height, width = grey.shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return grey[top : top + side, left : left + side]


def square_resize(grey: np.ndarray, size: int) -> np.ndarray:
    """Center-crop to a square and resize to (size, size) with an antialiased bilinear filter.

    Input and output are float32 unit grey; the triangle filter never overshoots, so the output
    stays in [0, 1]. An image already square at `size` is returned unchanged (no resampling).
    """
    if size < 1:
        raise ValueError(f"image size must be a positive number of pixels, got {size}")
    square = np.ascontiguousarray(center_square(grey), dtype=np.float32)
    if square.shape[0] == size:
        return square
    image = Image.fromarray(square)  # float32 -> PIL mode "F"
    resized = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=_REDUCING_GAP)
    return np.asarray(resized, dtype=np.float32)
