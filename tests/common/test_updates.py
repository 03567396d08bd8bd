"""Updates on the wire (common/updates.py) and Flower's array bytes without copies (common/npy.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.common import bytes_to_ndarray, ndarray_to_bytes

from privdiff.common.npy import npy_bytes, npy_bytes_of_parts, npy_view
from privdiff.common.updates import (
    MIN_RANGE_EXPONENT,
    StateLayout,
    apply_server_update,
    clip_update,
    flatten_state,
    next_clipping_range,
    unflatten_state,
)


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "conv.weight": torch.randn(4, 1, 3, 3, generator=g),
        "norm.bias": torch.randn(4, generator=g),
        "latent_scale": torch.tensor(0.18),
        "bn.num_batches_tracked": torch.tensor(12, dtype=torch.int64),
    }


def test_flat_vector_round_trips_every_tensor_with_its_dtype():
    state = _state()
    layout = StateLayout.of(state)
    vector = flatten_state(state, layout)
    assert vector.dtype == np.float32 and vector.size == layout.size == 36 + 4 + 1 + 1
    vector.setflags(write=False)  # as a view of a received message is
    back = unflatten_state(vector, layout)
    assert list(back) == list(state)
    for name in state:
        assert back[name].dtype == state[name].dtype and torch.equal(back[name], state[name]), name


def test_the_server_update_at_rate_one_is_the_sites_average_and_scales_only_the_weights():
    """server_lr 1: global + mean(site - global) is FedAvg's mean of the sites' states, integer
    buffers rounded back; server_lr 3 triples the weights' step, buffers keep the plain mean."""
    start = _state()
    layout = StateLayout.of(start)
    sites = [{name: value + (k + 1) for name, value in start.items()} for k in range(2)]  # +1, +2
    averaged = np.mean([flatten_state(site, layout) - flatten_state(start, layout) for site in sites], axis=0)
    weights = {"conv.weight", "norm.bias"}

    fedavg = apply_server_update(start, averaged, weights, server_lr=1.0)
    for name, value in start.items():
        assert fedavg[name].dtype == value.dtype, name
        if value.is_floating_point():
            assert torch.allclose(fedavg[name], value + 1.5, atol=1e-5), name
    assert fedavg["bn.num_batches_tracked"].item() == 14  # 12 + 1.5, rounded to even

    faster = apply_server_update(start, averaged, weights, server_lr=3.0)
    assert torch.allclose(faster["conv.weight"], start["conv.weight"] + 4.5, atol=1e-5)
    assert torch.allclose(faster["latent_scale"], start["latent_scale"] + 1.5, atol=1e-6)
    assert torch.equal(start["conv.weight"], _state()["conv.weight"])  # the input is not changed


def test_layout_fingerprint_changes_with_any_name_shape_or_dtype():
    base = StateLayout.of(_state()).fingerprint
    renamed = {("x." + k): v for k, v in _state().items()}
    reshaped = {**_state(), "norm.bias": torch.zeros(5)}
    retyped = {**_state(), "latent_scale": torch.tensor(0.18, dtype=torch.float64)}
    assert len({base, *(StateLayout.of(s).fingerprint for s in (renamed, reshaped, retyped))}) == 4


def test_unflatten_refuses_a_vector_of_another_size():
    layout = StateLayout.of(_state())
    with pytest.raises(ValueError, match="does not fit"):
        unflatten_state(np.zeros(layout.size + 1, np.float32), layout)


def test_clip_counts_what_it_clips_and_reports_the_range_before_clipping():
    update = np.array([0.001, -0.3, 0.2, 0.05, -0.06], dtype=np.float32)
    inside = clip_update(update, 0.5)
    assert inside.clipped_values == 0 and np.array_equal(inside.vector, update)
    assert inside.range_exponent == -1  # max |u| = 0.3 <= 2**-1
    clipped = clip_update(update, 0.1)
    assert clipped.clipped_values == 2
    assert np.allclose(clipped.vector, [0.001, -0.1, 0.1, 0.05, -0.06])
    assert clipped.range_exponent == -1  # the server learns how wide the next range must be
    assert clip_update(np.zeros(3, np.float32), 1.0).range_exponent == MIN_RANGE_EXPONENT
    with pytest.raises(ValueError, match="non-finite"):
        clip_update(np.array([np.nan], np.float32), 1.0)


def test_next_range_holds_the_largest_reported_update_with_headroom():
    assert next_clipping_range([-7, -5, -9]) == 2.0**-4
    assert next_clipping_range([-60]) == 2.0**-24  # bounded below: the quantization grid stays sane
    assert next_clipping_range([30]) == 2.0**10


@pytest.mark.parametrize(
    "array",
    [
        np.arange(7, dtype=np.float32),
        np.zeros((3, 4), np.uint32),
        np.array(2.5),
        np.arange(12, dtype=np.float64).reshape(3, 4).T,
    ],
)
def test_npy_bytes_are_numpys_and_views_read_them_without_copying(array):
    data = npy_bytes(array)
    assert np.array_equal(bytes_to_ndarray(data), array)
    if array.flags.c_contiguous:
        assert data == ndarray_to_bytes(array)
    view = npy_view(ndarray_to_bytes(array))
    assert np.array_equal(view, array) and view.shape == array.shape and not view.flags.writeable


def test_npy_parts_concatenate_without_building_the_whole():
    head, body = np.array([7], np.uint32), np.arange(5, dtype=np.uint32)
    assert npy_bytes_of_parts([head, body]) == ndarray_to_bytes(np.concatenate([head, body]))


def test_npy_view_refuses_pickled_object_arrays():
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="object"):
        npy_view(buffer.getvalue())
