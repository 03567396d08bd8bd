"""Selective Attribute Suppression (SAS): the paper's cross-attention with orthogonal projection.

For each category c in {identity, age, sex, diagnosis} (paper, "Selective Attribute Suppression"):

    Q   = W_Q z_t                               (N x d_k, shared query: attn.to_q)
    K_c = W_Kc C_c                              (L_c x d_k, one key projection per category)
    A_c = softmax(Q K_c^T / sqrt(d_k))          (N x L_c, per head)
    F_s = [A_id, A_age, A_sex]                  (N x L_s)
    P   = I - F_s (F_s^T F_s + eps I)^-1 F_s^T  (N x N: never formed here)
    A'_diag = P A_diag
    O   = normalize(A'_diag) V_diag             (V_diag = W_Vdiag C_diag)

`SASAttnProcessor` is a diffusers attention processor installed on every cross-attention layer
(`attn2`) with `unet.set_attn_processor`; the diagnosis key/value projections are the layer's own
`to_k` / `to_v`, the sensitive categories get their own key projections (the paper's V_c of the
sensitive categories never reach the output, so they are not created).
"""

from __future__ import annotations

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn

from privdiff_core.model.tokens import CATEGORIES, DIAGNOSIS, SENSITIVE, TokenLayout

# The joint map [A_id, A_age, A_sex, A_diag] is [F_s | A_diag] only because CATEGORIES lists the
# sensitive categories first; `sas_project_joint` relies on it.
if (*SENSITIVE, DIAGNOSIS) != CATEGORIES:
    raise ImportError(f"tokens.CATEGORIES {CATEGORIES} must be SENSITIVE followed by the diagnosis")

# Added to the mean row L1 norm in `normalize_suppressed`, only to avoid 0/0 on a wiped map.
NORM_DELTA = 1e-6


def sas_project(A_diag: torch.Tensor, F_s: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """A'_diag = A_diag - F_s (F_s^T F_s + eps' I)^-1 F_s^T A_diag, without the N x N projector P.

    A_diag: (..., N, L_diag) and F_s: (..., N, L_s) attention maps (batch and head dims leading).
    The Gram matrix F_s^T F_s is only L_s x L_s; it is always singular (every softmax block of F_s
    sums to one per row, so the blocks share the all-ones vector), hence the ridge. The ridge is
    relative, eps' = eps * mean(diag(F_s^T F_s)), so it does not depend on N or on the attention
    sharpness, and the small system is solved (LU) in float64, where it is stable; ||P F_s|| /
    ||F_s|| then scales with eps. The O(N) products run in the inputs' precision, at least float32
    (float32 inputs land within ~1e-6 of the all-float64 result, float64 inputs compute everything
    in float64). Memory and time are O(N L_s L_diag) instead of O(N^2).
    Returns A'_diag in A_diag's dtype.
    """
    if A_diag.shape[:-1] != F_s.shape[:-1]:
        raise ValueError(
            f"A_diag {tuple(A_diag.shape)} and F_s {tuple(F_s.shape)} differ before the last dim"
        )
    work = torch.promote_types(torch.promote_types(A_diag.dtype, F_s.dtype), torch.float32)
    F, A = F_s.to(work), A_diag.to(work)
    coeffs = projection_coefficients(F.mT @ F, F.mT @ A, eps)  # (..., L_s, L_diag)
    return (A - F @ coeffs.to(work)).to(A_diag.dtype)


def sas_project_joint(
    maps_t: torch.Tensor, sensitive: int, eps: float = 1e-4, keep_mean: bool = False
) -> torch.Tensor:
    """`sas_project` on the joint map the processor builds, stored token-major (transposed).

    maps_t = [F_s | A_diag]^T, shape (..., L_s + L_diag, N), float32 or float64; returns
    A'_diag^T (..., L_diag, N) in its dtype. Same equation and numerics as `sas_project`:
    F_s^T F_s and F_s^T A_diag come out of ONE product F_s^T [F_s | A_diag]. Token-major because
    the per-category softmax over a few tokens is ~5x faster on the CPU when the N positions
    are the contiguous dimension.

    keep_mean: project on the sensitive maps minus their mean over positions instead. The
    paper's F_s always spans the all-ones vector (each softmax block sums to one per position),
    so P also removes every diagnosis map's spatial mean: rows of A'_diag sum to ~0 and the layer
    can only add a contrast between findings, never a finding's own overall presence. Measured on
    the demo model (generative mode, true findings): mean diagnosis AUC 0.55 with the paper's
    projection against 0.60 without SAS (cardiomegaly 0.65 against 0.85). Centered, P still
    removes every direction along which the sensitive attention varies over the image, but keeps
    the constant, so rows of A'_diag sum to one as attention rows do.
    """
    F_t, A_t = maps_t[..., :sensitive, :], maps_t[..., sensitive:, :]
    if keep_mean:
        F_t = F_t - F_t.mean(-1, keepdim=True)
        maps_t = torch.cat([F_t, A_t], dim=-2)
    products = F_t @ maps_t.mT  # F_s^T [F_s | A_diag]: (..., L_s, L_s + L_diag)
    coeffs = projection_coefficients(products[..., :sensitive], products[..., sensitive:], eps)
    return A_t - coeffs.to(maps_t.dtype).mT @ F_t  # (A_diag - F_s C)^T


def projection_coefficients(gram: torch.Tensor, FtA: torch.Tensor, eps: float) -> torch.Tensor:
    """(F_s^T F_s + eps' I)^-1 F_s^T A_diag in float64, eps' = eps * mean(diag(F_s^T F_s)).

    One batched LU solve over every (image, head): the systems are only L_s x L_s.
    """
    gram = gram.double()
    ridge = eps * gram.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(torch.finfo(torch.float64).tiny)
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    return torch.linalg.solve(gram + ridge[..., None, None] * eye, FtA.double())


def normalize_suppressed(A_clean: torch.Tensor, token_dim: int = -1) -> torch.Tensor:
    """The paper's "normalized" step for A'_diag (..., N, L_diag), our choice documented here.

    Rows of A'_diag sum to ~0 after the projection (the all-ones vector lies in span(F_s)), so
    rows cannot be renormalized to sum to one. We divide the whole map (per image and head) by its
    mean row L1 norm: the output has the scale of ordinary attention (rows of unit L1 norm on
    average), while positions whose diagnosis attention was mostly sensitive stay small. Per-row
    L1 normalization would blow exactly those suppressed rows back up, undoing the projection.
    token_dim=-2 takes the transposed map (..., L_diag, N) and returns it transposed.
    """
    if token_dim not in (-1, -2):
        raise ValueError(f"token_dim must be -1 or -2, got {token_dim}")
    scale = A_clean.abs().sum(token_dim).mean(-1)[..., None, None]
    return A_clean / (scale + NORM_DELTA)


class SASAttnProcessor(nn.Module):
    """diffusers attention processor computing SAS cross-attention (see the module docstring).

    `encoder_hidden_states` carries all category tokens in the order of `tokens.CATEGORIES`
    (lengths from `layout`). It is an nn.Module (its key projections are trained and saved with the
    UNet) and defines `__call__`, not `forward`, because diffusers inspects `__call__`'s signature.
    The whole computation runs in float32 even under bf16/fp16 autocast: the projection is a
    difference of nearly equal maps.
    """

    def __init__(
        self,
        cross_attention_dim: int,
        inner_dim: int,
        layout: TokenLayout,
        eps: float = 1e-4,
        keep_mean: bool = False,
    ):
        super().__init__()
        self.layout = layout
        self.eps = float(eps)
        self.keep_mean = bool(keep_mean)
        self.to_k_sensitive = nn.ModuleDict(
            {name: nn.Linear(cross_attention_dim, inner_dim, bias=False) for name in SENSITIVE}
        )

    def attention_maps(
        self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The joint map [A_id, A_age, A_sex, A_diag] = [F_s | A_diag], transposed to (B, heads,
        L, N), and V_diag, (B, heads, L_diag, d_v), in float32.

        All categories share the query, so their keys are concatenated and scored in one matmul;
        the softmax then runs per category block (A_c = softmax(Q K_c^T / sqrt(d_k))).
        """
        batch, _, _ = hidden_states.shape
        head_dim = attn.inner_dim // attn.heads

        def split_heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, -1, attn.heads, head_dim).transpose(1, 2)

        query = split_heads(attn.to_q(hidden_states))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        slices = self.layout.slices()
        keys = torch.cat(
            [
                (attn.to_k if name == DIAGNOSIS else self.to_k_sensitive[name])(
                    encoder_hidden_states[:, slices[name]]
                )
                for name in CATEGORIES
            ],
            dim=1,
        )
        key = split_heads(keys)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        scores_t = (key @ query.mT) * attn.scale  # (B, heads, L, N): token-major, see sas_project_joint
        maps_t = torch.cat(
            [block.softmax(-2) for block in scores_t.split(self.layout.lengths, dim=-2)], dim=-2
        )
        value = split_heads(attn.to_v(encoder_hidden_states[:, slices[DIAGNOSIS]]))
        return maps_t, value

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        if encoder_hidden_states is None:
            raise ValueError(
                "SASAttnProcessor is a cross-attention processor: install it on attn2 layers only"
            )
        if attention_mask is not None:
            raise ValueError("SAS cross-attention takes no attention mask (category tokens are never padded)")
        if encoder_hidden_states.shape[1] != self.layout.total:
            raise ValueError(
                f"expected {self.layout.total} conditioning tokens {self.layout.lengths}, "
                f"got {encoder_hidden_states.shape[1]}"
            )
        residual, in_dtype = hidden_states, hidden_states.dtype
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        with torch.autocast(device_type=hidden_states.device.type, enabled=False):
            hidden_states = hidden_states.float()
            context = encoder_hidden_states.float()
            if attn.norm_cross:
                context = attn.norm_encoder_hidden_states(context)
            maps_t, value = self.attention_maps(attn, hidden_states, context)
            A_clean_t = sas_project_joint(
                maps_t, self.layout.sensitive_total, self.eps, self.keep_mean
            )  # (P A_diag)^T
            out = normalize_suppressed(A_clean_t, token_dim=-2).mT @ value  # O = normalize(A'_diag) V_diag
            batch, heads, n, head_dim = out.shape
            out = out.transpose(1, 2).reshape(batch, n, heads * head_dim)
            out = attn.to_out[1](attn.to_out[0](out))
        out = out.to(in_dtype)
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def install_attention_processors(
    unet: nn.Module, layout: TokenLayout, sas: bool, eps: float = 1e-4, keep_mean: bool = False
) -> None:
    """Give every attention layer of a diffusers UNet its processor.

    Self-attention (attn1) always gets the standard scaled-dot-product processor; cross-attention
    (attn2) gets `SASAttnProcessor` when `sas` is on, else the same standard processor over the
    concatenated category tokens (the "SAS off" ablation).
    """
    processors: dict[str, object] = {}
    for name in unet.attn_processors:
        layer = unet.get_submodule(name.removesuffix(".processor"))
        if sas and name.endswith("attn2.processor"):
            processors[name] = SASAttnProcessor(
                layer.cross_attention_dim, layer.inner_dim, layout, eps, keep_mean
            )
        else:
            processors[name] = AttnProcessor2_0()
    unet.set_attn_processor(processors)
