"""The denoiser eps_theta(z_t, t, c): a diffusers `UNet2DConditionModel` with SAS cross-attention.

Cross-attention sits at the levels `unet.attention` marks (the paper: 16x16 and 8x8) and in the
mid block; its processor is SAS or the standard one (`sas.enabled`), swapped in with
`set_attn_processor`, never a forked UNet.
"""

from __future__ import annotations

from diffusers import UNet2DConditionModel
from omegaconf import DictConfig

from privdiff_core.model.sas import install_attention_processors
from privdiff_core.model.tokens import TokenLayout


def unet_kwargs(cfg: DictConfig, latent_size: int, latent_channels: int) -> dict:
    """UNet2DConditionModel arguments of a config."""
    section = cfg.unet
    widths = list(section.block_out_channels)
    attention = list(section.attention)
    if len(attention) != len(widths):
        raise ValueError(f"unet.attention needs one flag per level ({len(widths)}), got {attention}")
    heads = section.heads
    if any(w % heads for w in widths):
        raise ValueError(f"unet.heads={heads} must divide every width in {widths} (head dim = width / heads)")
    groups = section.norm_num_groups
    if any(w % groups for w in widths):
        raise ValueError(f"unet.norm_num_groups={groups} must divide every width in {widths}")
    return {
        "sample_size": latent_size,
        "in_channels": latent_channels,
        "out_channels": latent_channels,
        "down_block_types": tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention),
        "up_block_types": tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)),
        "block_out_channels": tuple(widths),
        "layers_per_block": section.layers_per_block,
        "norm_num_groups": groups,
        "cross_attention_dim": cfg.conditioning.embed_dim,
        # diffusers' `attention_head_dim` is, for this UNet, the NUMBER of heads (FIELD-NOTES).
        "attention_head_dim": heads,
    }


def build_unet(
    cfg: DictConfig, latent_size: int, latent_channels: int, layout: TokenLayout
) -> UNet2DConditionModel:
    unet = UNet2DConditionModel(**unet_kwargs(cfg, latent_size, latent_channels))
    configure_processors(unet, cfg, layout)
    return unet


def configure_processors(unet: UNet2DConditionModel, cfg: DictConfig, layout: TokenLayout) -> None:
    install_attention_processors(unet, layout, sas=cfg.sas.enabled, eps=cfg.sas.eps)
