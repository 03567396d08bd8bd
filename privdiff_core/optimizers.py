"""Adam and AdamW with PyTorch's fused kernel wherever the parameters' device has one.

The default (for-loop) implementation on the CPU launches a handful of small ops per parameter
tensor; the UNet, the conditioner and the findings network are ~355 tensors, and one step of it
took 17 ms of a 0.53 s denoiser step (one thread), the fused kernel 5 ms
(benchmarks/results/stage_step_cost_session24.md). The update is the same algorithm; only the
order of the float operations differs. Devices without a fused kernel (e.g. MPS) get the default.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

FUSED_DEVICES = ("cpu", "cuda")


def _with_fused_kernel(optimizer: type[torch.optim.Optimizer], params: Iterable[Any], kwargs: dict) -> Any:
    """`optimizer(params, **kwargs)`, fused where every parameter's device allows it; `params`
    plain tensors or param groups (dicts with "params")."""
    given = list(params)
    if given and isinstance(given[0], dict):  # each group's params read once, kept for the optimizer
        given = [{**group, "params": list(group["params"])} for group in given]
        tensors = [p for group in given for p in group["params"]]
    else:
        tensors = given
    fusable = bool(tensors) and all(p.device.type in FUSED_DEVICES and p.is_floating_point() for p in tensors)
    return optimizer(given, fused=fusable, **kwargs)


def adam(params: Iterable[Any], **kwargs: Any) -> torch.optim.Adam:
    """torch.optim.Adam(params, **kwargs), fused where every parameter's device allows it."""
    return _with_fused_kernel(torch.optim.Adam, params, kwargs)


def adamw(params: Iterable[Any], **kwargs: Any) -> torch.optim.AdamW:
    """torch.optim.AdamW(params, **kwargs), fused where every parameter's device allows it."""
    return _with_fused_kernel(torch.optim.AdamW, params, kwargs)
