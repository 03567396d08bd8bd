"""Does the trained denoiser use its conditions? The conditioning gain, measured.

For held-out films, z0 is noised to z_t at fixed timesteps with fixed noise, and the denoising
error MSE(eps_theta(z_t, t, c), eps) is compared between condition states c:

- null:  every category unknown (the unconditional branch guidance subtracts);
- own:   the film's own condition (its findings, or its full condition);
- other: the same kind of condition taken from a film of ANOTHER patient.

gain = MSE(null) - MSE(own) > 0 says the condition carries information the denoiser uses;
MSE(other) - MSE(own) > 0 says it uses *this* film's condition, not just any. A denoiser whose
conditioning is broken (untrained null branch, too few steps) shows gains <= 0 here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from privdiff_core.model.conditioning import Conditions, ConditionState
from privdiff_core.model.privdiff_net import PrivDiffModels
from privdiff_core.model.tokens import DIAGNOSIS

DEFAULT_TIMESTEPS = (100, 300, 500, 700)
PATTERNS = ("diagnosis", "full")


@dataclass(frozen=True)
class ConditioningGain:
    """Mean denoising errors of one condition pattern over films and timesteps."""

    pattern: str
    mse_null: float
    mse_own: float
    mse_other: float

    @property
    def gain(self) -> float:
        """MSE(null) - MSE(own): > 0 when the condition helps."""
        return self.mse_null - self.mse_own

    @property
    def own_advantage(self) -> float:
        """MSE(other) - MSE(own): > 0 when the film's own condition beats another patient's."""
        return self.mse_other - self.mse_own


def other_patient_index(patient_ids: Sequence[str]) -> np.ndarray:
    """For each film, the next film (cyclically) of a different patient."""
    pids = np.asarray([str(p) for p in patient_ids])
    n = len(pids)
    if len(set(pids)) < 2:
        raise ValueError("the conditioning gain needs films of at least two patients")
    return np.array([next(j % n for j in range(i + 1, i + n) if pids[j % n] != pids[i]) for i in range(n)])


def _pattern(state: ConditionState, pattern: str) -> ConditionState:
    return state.only(DIAGNOSIS) if pattern == "diagnosis" else state


@torch.no_grad()
def conditioning_gain(
    models: PrivDiffModels,
    images: torch.Tensor,
    conditions: Conditions,
    patient_ids: Sequence[str],
    timesteps: Sequence[int] = DEFAULT_TIMESTEPS,
    seed: int = 0,
    batch_size: int = 32,
) -> dict[str, ConditioningGain]:
    """Conditioning gain per pattern ("diagnosis": findings only; "full": every category).

    images (N, 1, S, S) in [-1, 1] of held-out films with their known labels; patient_ids name
    each film's patient (the "other" condition always comes from a different patient).
    """
    if len(images) != len(patient_ids):
        raise ValueError(f"{len(patient_ids)} patient ids for {len(images)} images")
    models.eval()
    device = models.device
    other = torch.from_numpy(other_patient_index(patient_ids))
    scheduler = models.train_scheduler()
    generator = torch.Generator().manual_seed(seed)
    errors = {p: {"null": [], "own": [], "other": []} for p in PATTERNS}
    for start in range(0, len(images), batch_size):
        part = slice(start, start + batch_size)
        x = images[part].to(device)
        z0 = models.encode(x).float()
        own = models.condition_state(x, conditions.index(part))
        idx = other[part]
        swapped = models.condition_state(images[idx].to(device), conditions.index(idx))
        for t in timesteps:
            noise = torch.randn(z0.shape, generator=generator).to(device)
            t_batch = torch.full((len(z0),), int(t), dtype=torch.long, device=device)
            noisy = scheduler.add_noise(z0, noise, t_batch)

            def mse(state: ConditionState, noisy=noisy, t_batch=t_batch, noise=noise) -> torch.Tensor:
                eps = models.predict_noise(noisy, t_batch, state).float()
                return ((eps - noise) ** 2).flatten(1).mean(1).cpu()

            null = mse(own.only())
            for pattern in PATTERNS:
                errors[pattern]["null"].append(null)
                errors[pattern]["own"].append(mse(_pattern(own, pattern)))
                errors[pattern]["other"].append(mse(_pattern(swapped, pattern)))
    return {
        p: ConditioningGain(p, *(float(torch.cat(errors[p][k]).mean()) for k in ("null", "own", "other")))
        for p in PATTERNS
    }
