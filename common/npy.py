"""Flower's array bytes (the `.npy` format of `np.save`) without the extra copies.

Flower serializes an array with `np.save` into a growing BytesIO and parses it with `np.load`
into a fresh array. For a 50M-parameter update that is several hundred MB of copying per
message, and on a VM every freshly allocated page also costs a page fault. These helpers write
the same bytes with one copy and read them as a read-only view of the message's own buffer.
"""

from __future__ import annotations

import io

import numpy as np
from flwr.common import Parameters

NUMPY_STYPE = "numpy.ndarray"  # what Flower's ndarrays_to_parameters writes as tensor_type / stype


def npy_bytes(array: np.ndarray) -> bytes:
    """Exactly what `np.save(buffer, array)` writes, built with a single copy of the data."""
    if not array.flags.c_contiguous:
        array = array.copy(order="C")
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(array))
    return b"".join([header.getvalue(), memoryview(array).cast("B")])


def npy_bytes_of_parts(parts: list[np.ndarray]) -> bytes:
    """The `.npy` bytes of the 1-d concatenation of `parts` (same dtype), without building it."""
    dtype = parts[0].dtype
    if any(p.dtype != dtype or p.ndim != 1 or not p.flags.c_contiguous for p in parts):
        raise ValueError("parts must be contiguous 1-d arrays of one dtype")
    header = io.BytesIO()
    size = sum(p.size for p in parts)
    np.lib.format.write_array_header_1_0(
        header, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (size,)}
    )
    return b"".join([header.getvalue(), *(memoryview(p).cast("B") for p in parts)])


_SCRATCH: dict[str, np.ndarray] = {}


def scratch(name: str, size: int, dtype: np.dtype | type) -> np.ndarray:
    """A reusable 1-d work buffer per name: a round's large temporaries reuse last round's
    memory instead of faulting in fresh pages (slow on VMs). Contents are undefined."""
    buffer = _SCRATCH.get(name)
    if buffer is None or buffer.size != size or buffer.dtype != np.dtype(dtype):
        buffer = _SCRATCH[name] = np.empty(size, dtype=dtype)
    return buffer


def npy_view(data: bytes) -> np.ndarray:
    """The array in `.npy` bytes as a read-only view (no copy); C-order, no pickles."""
    stream = io.BytesIO(data[:4096])  # the header is at most a few hundred bytes
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
    if dtype.hasobject:
        raise ValueError("refusing an object array (pickled data)")
    count = int(np.prod(shape)) if shape else 1
    array = np.frombuffer(data, dtype=dtype, count=count, offset=stream.tell())
    return array.reshape(shape, order="F" if fortran else "C")


def to_parameters(arrays: list[np.ndarray]) -> Parameters:
    """`ndarrays_to_parameters` with one copy per array."""
    return Parameters(tensors=[npy_bytes(a) for a in arrays], tensor_type=NUMPY_STYPE)


def from_parameters(parameters: Parameters) -> list[np.ndarray]:
    """`parameters_to_ndarrays` as read-only views of the received bytes."""
    return [npy_view(t) for t in parameters.tensors]
