"""Selective Privacy Guidance (SPG): the paper's privacy-focused noise prediction.

    eps_p = eps(z_t, 0) + w_diag [eps(z_t, diag) - eps(z_t, 0)] - |w_s| [eps(z_t, s) - eps(z_t, 0)]
    L_SPG = ||eps_p - eps||^2

with s one sensitive attribute per training iteration (and per DDIM step when sampling), cycled
identity -> age -> sex. What each prediction is conditioned on (see `ConditionState.only`):

- eps(z_t, 0):    every category in its null/unknown state;
- eps(z_t, diag): the diagnosis tokens set, identity/age/sex null;
- eps(z_t, s):    the tokens of s set, everything else null (diagnosis too). With SAS on, the
  values come from the diagnosis tokens only, so this prediction differs from eps(z_t, 0) only
  through the projector P, i.e. through what s's attention removes from the diagnosis map; with
  SAS off, s is attended to directly.

`spg.negative` chooses the direction pushed away from:

- "paper":     eps(z_t, s) - eps(z_t, 0), as written. It mixes "s present" with "diagnosis absent"
               (eps(z_t, s) has the diagnosis nulled), so it also pushes away from the findings' absence;
- "diagnosis": eps(z_t, diag + s) - eps(z_t, diag): only what adding s to the diagnosis changes
               (the default; the pattern diag + s is trained in place of s-only).
"""

from __future__ import annotations

import torch

from privdiff_core.model.tokens import SENSITIVE


def spg_combine(
    eps_uncond: torch.Tensor, eps_diag: torch.Tensor, eps_s: torch.Tensor, w_diag: float, w_s: float
) -> torch.Tensor:
    """eps_p = eps_0 + w_diag (eps_diag - eps_0) - |w_s| (eps_s - eps_0)  (paper, SPG)."""
    return eps_uncond + w_diag * (eps_diag - eps_uncond) - abs(w_s) * (eps_s - eps_uncond)


def spg_weights(w_diag: float, w_s: float) -> tuple[float, float, float]:
    """eps_p as a weighted sum: (c_0, c_diag, c_s) = (1 - w_diag + |w_s|, w_diag, -|w_s|).

    When c_0 is 0 (e.g. w_diag = 2, w_s = -1) eps(z_t, 0) drops out of eps_p, and sampling can
    skip the unconditional prediction: the same eps_p from two predictions instead of three.
    """
    return 1.0 - w_diag + abs(w_s), w_diag, -abs(w_s)


def cfg_combine(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, w: float) -> torch.Tensor:
    """Classifier-free guidance eps_0 + w (eps_c - eps_0): sampling when SPG is switched off."""
    return eps_uncond + w * (eps_cond - eps_uncond)


NEGATIVE_DIRECTIONS = ("paper", "diagnosis")


def check_negative(negative: str) -> str:
    if negative not in NEGATIVE_DIRECTIONS:
        raise ValueError(f"spg.negative must be one of {NEGATIVE_DIRECTIONS}, got {negative!r}")
    return negative


def spg_combine_diagnosis(
    eps_uncond: torch.Tensor, eps_diag: torch.Tensor, eps_diag_s: torch.Tensor, w_diag: float, w_s: float
) -> torch.Tensor:
    """eps_p = eps_0 + w_diag (eps_diag - eps_0) - |w_s| (eps_{diag+s} - eps_diag)  (negative: diagnosis)."""
    return eps_uncond + w_diag * (eps_diag - eps_uncond) - abs(w_s) * (eps_diag_s - eps_diag)


def sensitive_for_step(step: int) -> str:
    """The sensitive attribute s of SPG at a training iteration or DDIM step (cycled)."""
    return SENSITIVE[step % len(SENSITIVE)]
