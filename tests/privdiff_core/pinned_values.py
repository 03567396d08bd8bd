"""Values pinned on main, compared within what another x86-64 CPU changes.

A bit-exact hash of pixels or trained weights pins too much: oneDNN and MKL pick kernels by
instruction set, so the same code, seeds and one torch thread give floats that differ in the last
bits on an AVX-512 machine and an AVX2 one, and a few training steps grow that to ~1e-3 (measured
by forcing the kernels here: ONEDNN_MAX_CPU_ISA=AVX2 / SSE41, MKL_ENABLE_INSTRUCTIONS; largest
difference 3e-4 in the tiny anonymizer's pixels, 9e-4 in a weight, 1.6e-4 of a network's norm).
What a test must catch (another sampling, initialisation order, loss, step count) moves them by
1e-2 to 1. So the pins are values, stored under tests/fixtures/pinned/, and compared with a
tolerance between the two:

- pixels are kept whole (a few thousand floats) and must agree to `PIXEL_ATOL`;
- weights (a million floats) are kept as a fingerprint per tensor: mean, root mean square and
  three fixed random projections, each to agree within `WEIGHT_RTOL` of the tensor's pinned RMS.

`PRIVDIFF_REPIN=1 pytest ...` rewrites a pin from this machine and skips the test: run it on main,
after a change that is meant to move the values, and commit the files with that change.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

PINNED = Path(__file__).parents[1] / "fixtures" / "pinned"
PIXEL_ATOL = 2e-3
WEIGHT_RTOL = 1e-2
_PROJECTIONS = 3


def _repinning() -> bool:
    return os.environ.get("PRIVDIFF_REPIN") == "1"


def _skip_repinned(paths: list[Path]) -> None:
    """After re-pinning, skip the test: a re-pinning run never passes."""
    names = ", ".join(path.name for path in paths)
    pytest.skip(f"re-pinned {names} in {PINNED.relative_to(PINNED.parents[2])} (PRIVDIFF_REPIN=1): commit it")


def assert_pixels_pinned(name: str, images: torch.Tensor) -> None:
    """`images` equal the pinned `name` to PIXEL_ATOL."""
    path = PINNED / f"{name}.npy"
    got = images.detach().float().cpu().numpy()
    if _repinning():
        np.save(path, got)
        _skip_repinned([path])
    np.testing.assert_allclose(got, np.load(path), rtol=0, atol=PIXEL_ATOL, err_msg=name)


def weight_fingerprint(model: nn.Module) -> dict[str, list[float]]:
    """Per state-dict tensor: [mean, rms, projection 1..3] (projections onto fixed unit-variance
    random vectors, seeded by the tensor's name, divided by sqrt(size): each is ~ rms in size)."""
    fingerprint = {}
    for key, tensor in sorted(model.state_dict().items()):
        values = tensor.detach().double().reshape(-1).cpu().numpy()
        rng = np.random.default_rng(list(key.encode()))
        directions = rng.standard_normal((_PROJECTIONS, values.size))
        projections = directions @ values / np.sqrt(max(values.size, 1))
        rms = float(np.sqrt(np.mean(values**2))) if values.size else 0.0
        fingerprint[key] = [float(values.mean()) if values.size else 0.0, rms, *map(float, projections)]
    return fingerprint


def assert_weights_pinned(models: dict[str, nn.Module]) -> None:
    """Each model's weights match its pinned fingerprint (`name.json`): the same tensors, each value
    within WEIGHT_RTOL of the tensor's pinned RMS (plus 1e-6 for tensors that are all zeros)."""
    got = {name: weight_fingerprint(model) for name, model in models.items()}
    if _repinning():
        paths = [PINNED / f"{name}.json" for name in got]
        for path, fingerprint in zip(paths, got.values(), strict=True):
            path.write_text(json.dumps(fingerprint, indent=1) + "\n")
        _skip_repinned(paths)
    for name, fingerprint in got.items():
        pinned = json.loads((PINNED / f"{name}.json").read_text())
        assert fingerprint.keys() == pinned.keys(), f"{name}: other tensors than pinned"
        for key, expected in pinned.items():
            atol = WEIGHT_RTOL * expected[1] + 1e-6
            message = f"{name}: {key}"
            np.testing.assert_allclose(fingerprint[key], expected, rtol=0, atol=atol, err_msg=message)
