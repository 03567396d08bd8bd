"""The first stage of the latent diffusion model: a one-channel diffusers `AutoencoderKL`.

Trained from scratch (no weights can be downloaded here) with an L1 reconstruction loss, a small
KL term, an L1 loss on image gradients that keeps rib and heart edges sharp and, optionally
(`vae.ssim_weight`), an SSIM loss (local structure: the L1 + SSIM mix of Zhao et al. 2017); or
started from a local diffusers VAE folder (`vae.pretrained`). The latents the denoiser sees are
z = (mode(E(x)) - shift) * scale with shift and scale measured on our own images (diffusers'
`shift_factor` / `scaling_factor` convention), not Stable Diffusion's 0.18215.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from omegaconf import DictConfig
from pytorch_msssim import ssim
from torch.nn import functional as F

from privdiff_core.errors import PrivdiffError


class PretrainedVAEError(PrivdiffError):
    """The configured pretrained VAE folder is missing or does not fit the model."""


def vae_downsampling(block_out_channels: list[int] | tuple[int, ...]) -> int:
    """Spatial downsampling factor of an AutoencoderKL: 2^(levels - 1)."""
    return 2 ** (len(block_out_channels) - 1)


def build_vae(cfg: DictConfig) -> AutoencoderKL:
    """The VAE of a config: from `vae.pretrained` when set, else a fresh one-channel model."""
    vae = _fresh_or_pretrained_vae(cfg)
    if cfg.vae.get("gradient_checkpointing"):  # .get: stored configs from before the key
        vae.enable_gradient_checkpointing()
    return vae


def _fresh_or_pretrained_vae(cfg: DictConfig) -> AutoencoderKL:
    section = cfg.vae
    if section.get("pretrained"):
        return load_pretrained_vae(Path(section.pretrained))
    widths = list(section.block_out_channels)
    groups = section.norm_num_groups
    if any(w % groups for w in widths):
        raise ValueError(f"vae.norm_num_groups={groups} must divide every width in {widths}")
    if cfg.image_size % vae_downsampling(widths):
        raise ValueError(f"image_size {cfg.image_size} is not divisible by the VAE's downsampling")
    return AutoencoderKL(
        in_channels=1,
        out_channels=1,
        down_block_types=("DownEncoderBlock2D",) * len(widths),
        up_block_types=("UpDecoderBlock2D",) * len(widths),
        block_out_channels=tuple(widths),
        layers_per_block=section.layers_per_block,
        latent_channels=section.latent_channels,
        norm_num_groups=groups,
        sample_size=cfg.image_size,
        scaling_factor=1.0,
        shift_factor=0.0,
    )


def load_pretrained_vae(folder: Path) -> AutoencoderKL:
    if not (folder / "config.json").is_file():
        raise PretrainedVAEError(
            f"vae.pretrained={folder}: no diffusers VAE folder there (config.json missing)"
        )
    vae = AutoencoderKL.from_pretrained(folder)
    if vae.config.in_channels != 1 or vae.config.out_channels != 1:
        raise PretrainedVAEError(
            f"vae.pretrained={folder}: the VAE has {vae.config.in_channels} input channels; "
            "privdiff needs a one-channel (grey) VAE"
        )
    return vae


def image_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def full_precision(tensor: torch.Tensor) -> AbstractContextManager:
    """float32 inside an autocast region, for the autoencoder (training, encode, decode). On an
    H100 under bf16 autocast the demo autoencoder did not train (reconstruction L1 0.45-1.1 over
    600 steps, training-batch SSIM 0.07; the same settings in float32 on the CPU: L1 0.08 and
    SSIM 0.79 at step 200; benchmarks/results/gpu_lease_h100_2026-12-05.json). Whether bf16 was
    the whole cause on the GPU is for the next lease to show (benchmarks/gpu_lease.py reports the
    autoencoder's last L1 and SSIM). The UNet, where the compute is, keeps bf16."""
    return torch.autocast(tensor.device.type, enabled=False)


def differentiable_ssim(recon: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of (B, 1, H, W) images in [-1, 1], with gradients (the evaluation's scikit-image
    SSIM has none): a Gaussian 11 x 11 window (Wang et al. 2004), reconstructions clamped as the
    evaluation clamps them."""
    return ssim((recon.clamp(-1, 1) + 1) / 2, (images + 1) / 2, data_range=1.0)


def vae_loss(
    vae: AutoencoderKL, images: torch.Tensor, weights: DictConfig, generator: torch.Generator
) -> tuple[torch.Tensor, dict[str, float]]:
    """L1(x_hat, x) + edge_weight * L1(grad x_hat, grad x) + ssim_weight * (1 - SSIM(x_hat, x))
    + kl_weight * KL per latent element; `weights`: the config's `vae` section.

    The SSIM term: the demo VAE alone, 3 seeds, reconstructs test films at SSIM 0.72 / 0.80
    after 400 / 600 steps with L1 and edges, at 0.82 / 0.85 with the term (weight 0.5;
    benchmarks/vae_curve.py)."""
    with full_precision(images):  # all of it in float32, even inside the trainer's autocast
        return _vae_loss(vae, images.float(), weights, generator)


def _vae_loss(
    vae: AutoencoderKL, images: torch.Tensor, weights: DictConfig, generator: torch.Generator
) -> tuple[torch.Tensor, dict[str, float]]:
    posterior = vae.encode(images).latent_dist
    recon = vae.decode(posterior.sample(generator=generator)).sample.float()
    rec = F.l1_loss(recon, images)
    grads = zip(image_gradients(recon), image_gradients(images), strict=True)
    edge = torch.stack([F.l1_loss(a, b) for a, b in grads]).sum()
    kl = posterior.kl().float().sum() / posterior.mean.numel()
    loss = rec + weights.edge_weight * edge + weights.kl_weight * kl
    parts = {"recon": rec.item(), "edge": edge.item(), "kl": kl.item()}
    # .get: a stored config from before this key trains as it did
    ssim_weight = float(weights.get("ssim_weight", 0.0))
    if ssim_weight:
        # The SSIM's variances are differences of means of squares: in bf16 (8 bits of mantissa)
        # they cancel to noise, one more reason the whole loss runs in float32.
        structure = differentiable_ssim(recon, images)
        loss = loss + ssim_weight * (1 - structure)
        parts["ssim"] = structure.item()
    return loss, parts
