"""Adam and AdamW with PyTorch's fused kernel wherever the parameters' device has one.

The default (for-loop) implementation on the CPU launches a handful of small ops per parameter
tensor; the UNet, the conditioner and the findings network are ~355 tensors, and one step of it
took 17 ms of a 0.53 s denoiser step (one thread), the fused kernel 5 ms
(benchmarks/results/stage_step_cost_fused_adam.md). The update is the same algorithm; only the
order of the float operations differs. Devices without a fused kernel (e.g. MPS) get the default.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

FUSED_DEVICES = ("cpu", "cuda")


def _parameters(params: Iterable[Any]) -> tuple[list[Any], list[torch.Tensor]]:
    """(what the optimizer gets, every parameter tensor in it): plain tensors or param groups."""
    given = list(params)
    if given and isinstance(given[0], dict):
        return given, [p for group in given for p in group["params"]]
    return given, given


def _fusable(tensors: list[torch.Tensor]) -> bool:
    return bool(tensors) and all(p.device.type in FUSED_DEVICES and p.is_floating_point() for p in tensors)


def adam(params: Iterable[Any], **kwargs: Any) -> torch.optim.Adam:
    """torch.optim.Adam(params, **kwargs), fused where every parameter's device allows it."""
    given, tensors = _parameters(params)
    return torch.optim.Adam(given, fused=_fusable(tensors), **kwargs)


def adamw(params: Iterable[Any], **kwargs: Any) -> torch.optim.AdamW:
    """torch.optim.AdamW(params, **kwargs), fused where every parameter's device allows it."""
    given, tensors = _parameters(params)
    return torch.optim.AdamW(given, fused=_fusable(tensors), **kwargs)
