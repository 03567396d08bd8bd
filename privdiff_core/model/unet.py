"""The denoiser eps_theta(z_t, t, c): a diffusers `UNet2DConditionModel` with SAS cross-attention.

Cross-attention sits at the levels `unet.attention` marks (the paper: 16x16 and 8x8) and in the
mid block; its processor is SAS or the standard one (`sas.enabled`), swapped in with
`set_attn_processor`, never a forked UNet. `SASUNet2DConditionModel` is the plain diffusers UNet
plus three config fields (`sas_enabled`, `sas_eps`, `identity_tokens`): it installs its processors
when it is built, so `SASUNet2DConditionModel.from_pretrained(folder)` loads the SAS key
projections with the other weights (the plain class would drop them).
"""

from __future__ import annotations

from diffusers import ConfigMixin, UNet2DConditionModel
from omegaconf import DictConfig

from privdiff_core.model.sas import install_attention_processors
from privdiff_core.model.tokens import TokenLayout

SAS_CONFIG_KEYS = ("sas_enabled", "sas_eps", "sas_keep_mean", "identity_tokens")


class SASUNet2DConditionModel(UNet2DConditionModel):
    """`UNet2DConditionModel` whose config records its cross-attention processors (SAS or standard)."""

    def __init__(
        self,
        *,
        sas_enabled: bool = True,
        sas_eps: float = 1e-4,
        sas_keep_mean: bool = False,
        identity_tokens: int = 2,
        **unet_kwargs,
    ):
        super().__init__(**unet_kwargs)  # registers the UNet's own arguments in the config
        self.register_to_config(
            sas_enabled=sas_enabled,
            sas_eps=sas_eps,
            sas_keep_mean=sas_keep_mean,
            identity_tokens=identity_tokens,
        )
        install_attention_processors(
            self, TokenLayout(identity=identity_tokens), sas=sas_enabled, eps=sas_eps, keep_mean=sas_keep_mean
        )

    @staticmethod
    def _get_init_keys(input_class: type) -> set[str]:
        # `from_config` hands the constructor only the config keys its signature names; ours takes
        # the UNet's arguments through **unet_kwargs, so name them here.
        return ConfigMixin._get_init_keys(UNet2DConditionModel) | set(SAS_CONFIG_KEYS) | {"self"}


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


def sas_settings(cfg: DictConfig, layout: TokenLayout) -> dict:
    """The SASUNet2DConditionModel config fields of a config."""
    return {
        "sas_enabled": bool(cfg.sas.enabled),
        "sas_eps": float(cfg.sas.eps),
        # Absent from configs of models trained before the option: the paper's projection.
        "sas_keep_mean": bool(cfg.sas.get("keep_mean", False)),
        "identity_tokens": layout.identity,
    }


def build_unet(
    cfg: DictConfig, latent_size: int, latent_channels: int, layout: TokenLayout
) -> SASUNet2DConditionModel:
    return SASUNet2DConditionModel(
        **unet_kwargs(cfg, latent_size, latent_channels), **sas_settings(cfg, layout)
    )
