"""Reading chest X-rays: pixels (DICOM, PNG, JPEG) and the data-set layouts privdiff knows.

Grey-level conventions (details in `privdiff_core.data.grey`): readers return **unit grey**
float32 in [0, 1], 0 black and 1 white as displayed, bone bright (MONOCHROME2 sense; DICOM
MONOCHROME1 is inverted after its window); models see **signed grey** in [-1, 1] (``2x - 1``).

- `read_image(path, size)` / `read_image_tensor(path, size)`: one file, square and resized;
- `read_dicom_image(source)` (module `dicom`): DICOM pixels + header facts, for the release;
- `open_dataset(root, size, split=None)` -> `CXRDataset` (Contract 2), `load_tensors()` ->
  `CXRTensors`, over a site folder, a federation folder, ChestX-ray14 or CheXpert.
"""

from privdiff_core.data.dataset import CXRDataset, CXRTensors, open_dataset
from privdiff_core.data.dicom import (
    DicomImage,
    DicomImageInfo,
    dicom_image_info,
    dicom_pixels,
    read_dicom_dataset,
    read_dicom_image,
    read_dicom_pixels,
)
from privdiff_core.data.errors import DatasetError, ImageReadError
from privdiff_core.data.grey import to_signed, to_unit
from privdiff_core.data.images import read_image, read_image_tensor
from privdiff_core.data.layouts import LAYOUTS, detect_layout, read_records
from privdiff_core.data.records import SPLITS, CXRRecord

__all__ = [
    "LAYOUTS",
    "SPLITS",
    "CXRDataset",
    "CXRRecord",
    "CXRTensors",
    "DatasetError",
    "DicomImage",
    "DicomImageInfo",
    "ImageReadError",
    "detect_layout",
    "dicom_image_info",
    "dicom_pixels",
    "open_dataset",
    "read_dicom_dataset",
    "read_dicom_image",
    "read_dicom_pixels",
    "read_image",
    "read_image_tensor",
    "read_records",
    "to_signed",
    "to_unit",
]
