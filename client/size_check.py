"""Say so when a release makes films far smaller than they came in.

The anonymizer regenerates every film at its own image size (the config's `image_size`: 32 px
for `tiny`, 64 for `demo`, 256 for `paper`). A 1024 px CR released through a 32 px model is a
thumbnail; `privdiff-client release` warns with this check after the run (never before: the
model's signature is checked before any input is opened).
"""

from __future__ import annotations

import statistics
from pathlib import Path

# Outputs this many times smaller than the inputs (per side) get a warning.
SHRINK_WARNING_FACTOR = 4


def model_image_size(model: Path) -> int | None:
    """The anonymizer's image size from its manifest (None if it cannot be read)."""
    from privdiff_core.anonymizer import find_model_folder
    from privdiff_core.errors import PrivdiffError
    from privdiff_core.model.folder import read_manifest

    try:
        manifest = read_manifest(find_model_folder(model))
        return int(manifest.get("image_size") or manifest["config"]["image_size"])
    except (PrivdiffError, KeyError, TypeError, ValueError):
        return None


def typical_input_size(source: Path, sample: int = 20) -> int | None:
    """Median longer side of up to `sample` DICOM images under `source` (headers only)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    sides: list[int] = []
    for path in sorted(source.rglob("*")):
        if len(sides) >= sample:
            break
        if not path.is_file():
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
        except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError):
            continue
        side = max(int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0))
        if side:
            sides.append(side)
    return int(statistics.median(sides)) if sides else None


def shrink_warning(model: Path, source: Path) -> str | None:
    """One line if the outputs are at least SHRINK_WARNING_FACTOR times smaller than the inputs."""
    size, typical = model_image_size(model), typical_input_size(source)
    if not size or not typical or typical < SHRINK_WARNING_FACTOR * size:
        return None
    return (
        f"the outputs are {size}x{size} px, the inputs about {typical} px "
        f"({typical // size}x smaller per side): this anonymizer was trained at image_size {size}. "
        "For diagnostic use release with a model trained at your films' resolution."
    )
