"""The denoiser's training precision on a CPU (`train.denoiser.cpu_precision`).

On CUDA the whole training step runs under bfloat16 autocast already (`autocast_for`). On a CPU
the UNet's forward and backward are the bulk of a denoiser step, and a CPU that multiplies
bfloat16 itself (AVX512-BF16, AMX) runs them faster in bfloat16: demo, AMD EPYC, one thread, a
step 0.43 s against 0.50 s; the main job's denoiser rounds 540 s against 657 s
(benchmarks/results/main_job_demo_session27.md). A CPU without either emulates bfloat16 and is
slower than in float32, hence "auto". Only the UNet's forward is autocast: the findings network
(the estimator whose calls the anonymizer draws) learned a little worse in bfloat16 for 0.04 s a
step (demo, 150 steps from the same start, the last 40: BCE 8.51 against 8.29; the denoising loss
0.1759 with the UNet in bfloat16, 0.1747 in float32;
benchmarks/results/training_precision_losses_session27.md), and the autoencoder runs in float32
anyway (`full_precision`).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

CPU_PRECISIONS = ("float32", "bfloat16", "auto")


def cpu_multiplies_bf16() -> bool:
    """Whether this CPU has bfloat16 dot products in hardware (AVX512-BF16 or AMX tiles)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own checks
    return any(bool(getattr(torch.cpu, probe, lambda: False)()) for probe in probes)


def unet_bf16_on_cpu(precision: str) -> bool:
    """Whether `train.denoiser.cpu_precision` puts the UNet's forward in bfloat16 on this machine:
    "bfloat16", "float32", or "auto" (bfloat16 where the CPU multiplies it itself)."""
    if precision not in CPU_PRECISIONS:
        raise ValueError(f"train.denoiser.cpu_precision must be one of {CPU_PRECISIONS}, got {precision!r}")
    return cpu_multiplies_bf16() if precision == "auto" else precision == "bfloat16"


def unet_autocast(device: torch.device, bf16_on_cpu: bool) -> AbstractContextManager:
    """bfloat16 autocast around the UNet's forward on a CPU when `bf16_on_cpu`; nothing otherwise
    (CUDA: the trainer's own autocast is already in force)."""
    if device.type == "cpu" and bf16_on_cpu:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()
