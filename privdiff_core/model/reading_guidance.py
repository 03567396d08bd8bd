"""Reading guidance: the drawn film should read as showing the findings it was given.

In the generative mode without the reports, the denoiser draws what the site's own findings
estimator reads on the input film. Two readings then stand in a row (the estimator's of the input,
the judge's of the drawing) and each loses some of the findings: the main job's films drew
diagnosis ~0.08 below the real films where, told the true findings, they drew within 0.01
(benchmarks/estimated_findings_limit.py). The denoiser only sees the reading as 14 graded calls,
and draws each one about as plainly whatever the evidence behind it.

Reading guidance closes part of that gap at sampling time, with nothing trained: at each DDIM step
the predicted clean latent x0 = (z_t - sqrt(1 - a_t) eps) / sqrt(a_t) is decoded, the estimator
reads it, and x0 takes one gradient step on the binary cross-entropy between that reading and the
findings the denoiser is drawing: where the estimator estimated them, its graded calls on the
input film or its probabilities (`READING_TARGETS`), the labels where the site told them (the
reports). The step's eps is then the
one that points at the moved x0, so the DDIM update itself is unchanged. It is classifier
guidance with the clean-image estimator applied to the predicted x0 (as in "universal guidance",
Bansal et al. 2023, without the gradient through the denoiser, which would cost a UNet backward
per step).

Told findings were left to the conditions alone until session 22; guided toward the told labels
they draw better on every count (the main job's model, 160 films, 3 runs, the same judges;
benchmarks/results/told_findings_reading_guidance.md): diagnosis 0.701 +- 0.011 against
0.651 +- 0.026 (real films 0.687), FD 4.7 against 17.3, memorized 0.6% against 1.7%. With the
findings estimated, the graded calls as targets drew as the estimator's probabilities did on
160 films (diagnosis 0.654 +- 0.021 against 0.654 +- 0.023, FD 2.3 against 2.5; session 26, two
evaluations each: 0.630 / 0.641 against 0.629 / 0.651); on all 360 test films the probabilities
keep a little more (`READING_TARGETS`).

Only the steps whose predicted film is mostly film are guided (`GUIDED_FROM_ALPHA_BAR`).

The judge is a different network trained on real films, so only what both read moves it: the main
job's model (session 13), 160 test films, one evaluation judge, one draw: the estimator read its
own drawings at 0.61 and the judge at 0.596 without guidance, 0.73 / 0.627 at scale 0.8, with
scale 4 overshooting (0.609); samples showed no visible artefacts.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

# Reading guidance steps only where the predicted clean film is mostly film: a_t >= 0.25 (signal
# std >= half), the last 5 of the demo's 10 DDIM steps. The earlier steps' predictions are mostly
# noise, and a move of x0 there barely moves the next latent (by ~ sqrt(a_prev) - sqrt(a_t (1 -
# a_prev) / (1 - a_t)) of it). One probe (main job's model, 160 films, one judge, scale 1.5): judge
# AUC 0.625 guiding all 10 steps, 0.625 the last 5 or 7, 0.620 the last 3 or 1, 0.596 none; half the
# steps is half the cost (a decoder and estimator backward each).
GUIDED_FROM_ALPHA_BAR = 0.25

# What estimated findings are guided toward (`anonymize.reading_target`): the calls the denoiser
# is drawing, or the estimator's probabilities on the input film. A call keeps one bit of how sure
# the estimator was (graded calls little more: a finding it reads well is near 0 or 1 either way);
# the probability keeps the rest, so a surer reading draws a plainer finding and the judge ranks
# the drawings more as the estimator ranks the inputs. Session 24's main job's model, all 360
# test films, 3 runs, session 22's judges, scale 1.5: diagnosis 0.634 +- 0.016 against 0.622 +-
# 0.005 toward the calls (real films 0.656; 0.632 +- 0.013 in a second evaluation), edema,
# emphysema, fibrosis and infiltration gaining in both, cardiomegaly in neither; re-ID 0.512-0.516
# against 0.502 (benchmarks/results/reading_target_session26.md).
READING_TARGETS = ("calls", "estimates")

# The gradient is taken for this many films at a time: it goes back through the decoder at full
# resolution, whose activations are kept for the backward pass. At the paper's 256 px (a 128-channel
# full-resolution decoder level) one batch of 64 ran out of an 80 GB H100 after batches of 1, 8 and
# 32 had passed (benchmarks/gpu_lease.py, 2026-12-05). Each film's step depends on that film alone
# (the loss is summed; the decoder and the estimator, in eval mode, treat films one by one), so the
# chunks give the same step as one pass.
FILMS_PER_GRADIENT = 8


def reading_guided_noise(
    latents: torch.Tensor,
    eps: torch.Tensor,
    alpha_bar: torch.Tensor,
    read: Callable[[torch.Tensor], torch.Tensor],
    target: torch.Tensor,
    mask: torch.Tensor,
    scale: float,
    films_per_gradient: int = FILMS_PER_GRADIENT,
) -> torch.Tensor:
    """eps pointing at x0 moved one step toward the target reading.

    latents z_t and eps (B, C, h, w); alpha_bar the scheduler's cumulative alpha at this step;
    `read` maps a predicted clean latent to finding logits (B, 14) (decode, then the estimator);
    target (B, 14) probabilities; mask (B, 14) bool: which findings pull. The loss is summed over
    the batch, so each film's step depends on that film alone; its gradient is taken
    `films_per_gradient` films at a time (FILMS_PER_GRADIENT).
    """
    alpha_bar = alpha_bar.to(latents.device, torch.float32)
    signal, noise = alpha_bar.sqrt(), (1.0 - alpha_bar).sqrt()
    x0 = ((latents - noise * eps) / signal).detach()
    grad = torch.cat(
        [
            _reading_gradient(
                x0[i : i + films_per_gradient],
                read,
                target[i : i + films_per_gradient],
                mask[i : i + films_per_gradient],
            )
            for i in range(0, len(x0), films_per_gradient)
        ]
    )
    moved = x0 - scale * grad
    return (latents - signal * moved) / noise


def _reading_gradient(
    x0: torch.Tensor, read: Callable[[torch.Tensor], torch.Tensor], target: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """d/dx0 of the masked binary cross-entropy between the reading of x0 and the target."""
    x0 = x0.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = read(x0).float()
        loss = F.binary_cross_entropy_with_logits(logits, target.to(logits), reduction="none")
        loss = (loss * mask.to(logits)).sum()
        (grad,) = torch.autograd.grad(loss, x0)
    return grad
