"""One training loop for the attacker and judge networks: Siamese verifiers, diagnosis and
demographic classifiers (evaluation), the biometrics attackers (synth) and the site's residual-risk
verifier (verification).

`fit` draws a fresh batch every step from `batch_loss(rng)` (the loss knows its data), steps AdamW,
optionally decays the learning rate on a cosine to zero over the budget, and, given `validate`,
keeps the checkpoint with the best validation score (validation patients are disjoint from the
test patients, so choosing on them is fair). Batches depend only on `seed`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from privdiff_core.optimizers import adamw


@dataclass
class FitBudget:
    """How long and how fast a network trains; eval_every and patience matter only with a
    validation score. The settings dataclasses of the networks extend it."""

    steps: int = 500
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    eval_every: int = 100
    patience: int = 0  # evaluations without improvement before stopping early; 0 = never stop early


@dataclass
class FitLog:
    """What a training run did: the selected step and its validation score, the loss curve."""

    best_step: int = 0
    best_val: float | None = None
    steps_run: int = 0
    losses: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        tail = self.losses[-20:]
        return {
            "best_step": self.best_step,
            "best_val": self.best_val,
            "steps_run": self.steps_run,
            "final_loss": float(np.mean(tail)) if tail else None,
        }


def fit(
    model: nn.Module,
    batch_loss: Callable[[np.random.Generator], torch.Tensor],
    budget: FitBudget,
    validate: Callable[[], float] | None = None,
    *,
    cosine: bool = True,
    desc: str = "training",
    progress: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> FitLog:
    """Train `model` on `batch_loss(rng)` for `budget.steps` AdamW steps; returns the log, model in
    eval mode.

    cosine: decay the learning rate to zero over the budget (the last steps fine-tune). validate:
    a score (higher is better) computed every `budget.eval_every` steps and at the end; the best
    checkpoint is restored, and with `budget.patience` > 0 training stops after that many
    evaluations without improvement. on_progress: called with (steps done, the budget's steps)
    before each step and with (steps, steps) at the end (a simulated site's pacer: it may wait).
    """
    steps, seed = budget.steps, budget.seed
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    optimizer = adamw(model.parameters(), lr=budget.lr, weight_decay=budget.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps)) if cosine else None
    log = FitLog()
    best_state = None
    stale = 0
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
    for step in bar:
        if on_progress is not None:
            on_progress(step, steps)
        model.train()
        loss = batch_loss(rng)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        log.losses.append(float(loss.item()))
        log.steps_run = step + 1
        last = step + 1 == steps
        if validate is not None and ((step + 1) % max(1, budget.eval_every) == 0 or last):
            model.eval()
            score = float(validate())
            if log.best_val is None or score > log.best_val:
                log.best_val, log.best_step, stale = score, step + 1, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
            bar.set_postfix(loss=f"{loss.item():.3f}", val=f"{score:.3f}")
            if budget.patience and stale >= budget.patience:
                break
        elif step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    if on_progress is not None:
        on_progress(steps, steps)  # done, also when patience stopped it early
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        log.best_step = log.steps_run
    model.eval()
    return log
