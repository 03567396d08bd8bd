"""Model updates on the wire: one flat float32 vector per message, clipped deliberately.

Flower's SecAgg+ masks a list of arrays, one PRG draw and one quantization pass per array. A
stage state has hundreds of tensors, so every message carries the whole `stage_state` as ONE
flat vector in a fixed order (the `StateLayout`), and sites send `local - global`, the update,
never raw weights (SecAgg+ clips every value to +-clipping_range: weights would lose their
magnitude, updates are small and centred on zero).

SecAgg+ would clip silently; `clip_update` clips on purpose first, counts what it clipped and
reports the update's range as a power of two, so the server can size the next round's range.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
import torch

# Range exponents are reported as integers; an all-zero update reports this floor.
MIN_RANGE_EXPONENT = -40


@dataclass(frozen=True)
class StateLayout:
    """Names, shapes and dtypes of a stage state, in the order of the flat vector."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]

    @classmethod
    def of(cls, state: Mapping[str, torch.Tensor]) -> StateLayout:
        return cls(
            names=tuple(state),
            shapes=tuple(tuple(t.shape) for t in state.values()),
            dtypes=tuple(str(t.dtype).removeprefix("torch.") for t in state.values()),
        )

    @property
    def size(self) -> int:
        return sum(math.prod(shape) for shape in self.shapes)

    @property
    def fingerprint(self) -> str:
        """Short hash that differs whenever a name, shape or dtype differs (config mismatch)."""
        text = json.dumps([self.names, self.shapes, self.dtypes])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def flatten_state(state: Mapping[str, torch.Tensor], layout: StateLayout) -> np.ndarray:
    """The state as one float32 vector in layout order (integer buffers are cast)."""
    if tuple(state) != layout.names:
        raise ValueError("state names differ from the layout; was the model built from another config?")
    parts = [t.detach().reshape(-1).to(device="cpu", dtype=torch.float32) for t in state.values()]
    return torch.cat(parts).numpy() if parts else np.zeros(0, np.float32)


def unflatten_state(vector: np.ndarray, layout: StateLayout) -> dict[str, torch.Tensor]:
    """Inverse of `flatten_state`; integer and bool tensors are rounded back to their dtype."""
    if vector.ndim != 1 or vector.size != layout.size:
        raise ValueError(f"vector of {vector.size} values does not fit a layout of {layout.size}")
    state, start = {}, 0
    for name, shape, dtype_name in zip(layout.names, layout.shapes, layout.dtypes, strict=True):
        count = math.prod(shape)
        # a copy per tensor: `vector` may be a read-only view of a received message
        piece = torch.from_numpy(np.array(vector[start : start + count], dtype=np.float32)).reshape(shape)
        dtype = getattr(torch, dtype_name)
        state[name] = piece.to(dtype) if dtype.is_floating_point else piece.round().to(dtype)
        start += count
    return state


def apply_server_update(
    state: Mapping[str, torch.Tensor],
    update: np.ndarray,
    weight_names: Collection[str],
    server_lr: float,
) -> dict[str, torch.Tensor]:
    """The next global state: `state` + server_lr x `update` on the weights named; every other
    entry (float buffers: latent scale, running statistics) takes the plain average, rate 1.

    `update` is the sites' averaged update as one flat vector in `StateLayout.of(state)` order.
    Sums run in float64 and are stored as each tensor's dtype (integer buffers rounded), so a
    server learning rate of 1 reproduces FedAvg's average of the sites' states.
    """
    layout = StateLayout.of(state)
    step = update.astype(np.float64)
    if server_lr != 1.0:
        rates = {
            name: torch.full(value.shape, server_lr if name in weight_names else 1.0, dtype=torch.float32)
            for name, value in state.items()
        }
        step *= flatten_state(rates, layout)
    new_state = flatten_state(state, layout).astype(np.float64) + step
    return unflatten_state(new_state.astype(np.float32), layout)


def range_exponent(max_abs: float) -> int:
    """Smallest integer e with max_abs <= 2**e (MIN_RANGE_EXPONENT for an all-zero update)."""
    if not math.isfinite(max_abs):
        raise ValueError(f"the update contains non-finite values (max |value| = {max_abs})")
    if max_abs <= 0.0:
        return MIN_RANGE_EXPONENT
    return max(MIN_RANGE_EXPONENT, math.ceil(math.log2(max_abs)))


@dataclass(frozen=True)
class ClippedUpdate:
    vector: np.ndarray
    clipped_values: int  # values that were beyond +-clipping_range and were clipped
    range_exponent: int  # ceil(log2(max |value|)) BEFORE clipping: sizes the next round's range


def clip_update(update: np.ndarray, clipping_range: float) -> ClippedUpdate:
    """Clip every value to +-clipping_range, counting the values that were clipped.

    Only the count and the power-of-two range leave the site next to the masked update; the
    server learns neither a single value nor the exact maximum.
    """
    if clipping_range <= 0:
        raise ValueError(f"clipping_range must be positive, got {clipping_range}")
    # two reductions, no temporary array: this runs on every update of every site
    max_abs = max(-float(update.min()), float(update.max())) if update.size else 0.0
    exponent = range_exponent(max_abs)
    vector = update.astype(np.float32, copy=False)
    clipped = 0
    if max_abs > clipping_range:
        clipped = int(np.count_nonzero(np.abs(update) > clipping_range))
        vector = np.clip(vector, -clipping_range, clipping_range)
    return ClippedUpdate(vector=vector, clipped_values=clipped, range_exponent=exponent)


def next_clipping_range(
    range_exponents: list[int], headroom: int = 1, bounds: tuple[float, float] = (2.0**-24, 2.0**10)
) -> float:
    """Clipping range for the next round: 2**(largest reported exponent + headroom), bounded.

    A power of two keeps SecAgg+'s quantization grid (2*range/2**22) a power of two as well.
    With one bit of headroom an update as large as last round's largest uses half the range.
    """
    if not range_exponents:
        raise ValueError("no site reported its update range")
    low, high = bounds
    return float(min(max(2.0 ** (max(range_exponents) + headroom), low), high))


def quantization_step(clipping_range: float, quantization_range: int) -> float:
    """Spacing of SecAgg+'s integer grid: each value is rounded (stochastically) to it."""
    return 2.0 * clipping_range / quantization_range
