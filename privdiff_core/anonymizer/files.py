"""Files in and out of `privdiff anonymize`: which inputs to take, where outputs go, atomic PNGs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from privdiff_core.data.images import DICOM_SUFFIXES, RASTER_SUFFIXES, is_dicom_file


def is_candidate(path: Path) -> bool:
    """An image file by name (PNG/JPEG/TIFF/BMP/DICOM), or an extension-less DICOM file."""
    suffix = path.suffix.lower()
    if suffix in RASTER_SUFFIXES or suffix in DICOM_SUFFIXES:
        return True
    if suffix:
        return False
    try:
        return is_dicom_file(path)
    except OSError:
        return False


def discover_inputs(source: Path, exclude: Path | None = None) -> tuple[list[tuple[Path, Path]], int]:
    """(file, path relative to the input root) of every image under `source`, sorted; and the
    number of other files skipped. Hidden files and anything under `exclude` (the output
    folder, when it sits inside the input) are not visited."""
    if source.is_file():
        return [(source, Path(source.name))], 0
    exclude = exclude.resolve() if exclude is not None else None
    found, skipped = [], 0
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if not path.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        if exclude is not None and path.resolve().is_relative_to(exclude):
            continue
        if is_candidate(path):
            found.append((path, rel))
        else:
            skipped += 1
    return found, skipped


def output_paths(relatives: list[Path], out_dir: Path) -> list[Path]:
    """Mirrored relative paths with a .png suffix; names that would collide (a.dcm and a.png)
    keep their own suffix before .png (a.dcm.png, a.png.png)."""
    mapped = [rel.with_suffix(".png") for rel in relatives]
    counts: dict[Path, int] = {}
    for path in mapped:
        counts[path] = counts.get(path, 0) + 1
    return [
        out_dir / (rel.with_name(rel.name + ".png") if counts[path] > 1 else path)
        for rel, path in zip(relatives, mapped, strict=True)
    ]


def write_png(image: np.ndarray, path: Path, bits: int = 8) -> None:
    """Write a (S, S) signed-grey [-1, 1] image as an 8- or 16-bit grey PNG, atomically."""
    unit = np.clip((np.asarray(image, dtype=np.float64) + 1.0) / 2.0, 0.0, 1.0)
    if bits == 8:
        pil = Image.fromarray(np.round(unit * 255).astype(np.uint8))  # mode L
    elif bits == 16:
        pil = Image.fromarray(np.round(unit * 65535).astype(np.uint16))
    else:
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        pil.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
