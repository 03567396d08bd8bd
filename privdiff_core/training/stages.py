"""Stage-wise training of PrivDiff-Net on one site's in-memory data (Contract 4).

Stage `autoencoder`: the VAE (L1 + edge + small KL), the attribute encoder's Siamese verifier (BCE
on balanced same/different-patient pairs) and its age/sex/finding heads; at the end of each call
the latent shift and scale are measured on the local images. Stage `denoiser`: the SAS UNet and
the category tokens, with the VAE and the attribute encoder frozen (except a separate findings
network, `encoder.findings_network`: it learns here, BCE beside the denoising loss, and its
thresholds are measured at the end of each call). The objective (paper, SPG):

    SPG on:  L = mean_{c in {0, diag, n}} ||eps(z_t, c) - eps||^2 + lambda ||eps_p - eps||^2
             eps_p = eps(z_t, 0) + w_diag [eps(z_t, diag) - eps(z_t, 0)] - |w_s| [eps(z_t, n) - eps(z_t, m)]
             (n, m) = (diag + s, diag) with spg.negative "diagnosis", (s, 0) with "paper"
    SPG off: L = ||eps(z_t, c_dropped) - eps||^2  (condition dropout: per category, all at once,
             and all but the diagnosis; see ConditionState.drop)

With SPG on, the three predictions are ONE UNet call (batch 3B) and the plain denoising term is
applied to each of them: they are the condition-dropout patterns 0 / diag-only / n, so the
unconditional and single-attribute predictions that eps_p needs are trained by the same call.
s cycles identity -> age -> sex over the iterations. lambda (spg.weight) may be 0: fitting eps_p
to the true noise of an image that still shows its identity pulls eps_p towards the identity-
conditioned prediction, i.e. against the guidance it is meant to teach.

Every step draws its batch, timesteps and noise from a generator seeded by (seed, stage, step), so
a run resumed from a checkpoint (model + optimizer state + step) continues exactly where it stopped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from privdiff_core.errors import PrivdiffError
from privdiff_core.model.attribute_encoder import attribute_loss, findings_loss, verification_loss
from privdiff_core.model.conditioning import Conditions, ConditionState
from privdiff_core.model.privdiff_net import PrivDiffModels, autocast_for, resolve_device
from privdiff_core.model.spg import sensitive_for_step
from privdiff_core.model.tokens import DIAGNOSIS
from privdiff_core.model.vae import vae_loss
from privdiff_core.nets import finding_pos_weight, jitter
from privdiff_core.optimizers import adam
from privdiff_core.training.precision import unet_autocast, unet_bf16_on_cpu
from privdiff_core.verification import make_pairs

STAGES: tuple[str, ...] = ("autoencoder", "denoiser")
# What each stage learns, as state-dict name prefixes (exact names for the latent buffers).
_STAGE_PREFIXES = {
    "autoencoder": ("vae.", "encoder.", "latent_shift", "latent_scale", "finding_thresholds"),
    "denoiser": ("unet.", "conditioner."),
}
# A separate findings network (encoder.findings_network) and its decision thresholds are learned
# in the denoiser stage: the autoencoder stage's few federated steps leave a finding estimator
# near chance, and the denoiser stage has several times as many.
_FINDINGS_PREFIXES = ("encoder.findings.", "finding_thresholds")
_DATA_FIELDS = ("images", "patient_ids", "age_group", "sex", "labels", "label_mask")


class TrainingError(PrivdiffError, ValueError):
    """Training cannot start: unknown stage, unusable data, mismatched stage state."""


def check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise TrainingError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")


LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine")


def lr_factor(cfg: DictConfig, stage: str, progress: float) -> float:
    """The multiplier of a stage's learning rates at `progress` through its training (0: its first
    step, 1: past its last), from train.<stage>.lr_schedule. "cosine" goes from 1 down to
    train.<stage>.lr_final along half a cosine: the last steps take small steps around what the
    earlier ones found instead of jumping about at the full rate. Tried on the demo's federated
    denoiser (its samples less realistic than central training's): worse there (config_schema)."""
    section = cfg.train[stage]
    schedule = str(section.lr_schedule)
    if schedule not in LR_SCHEDULES:
        choices = ", ".join(LR_SCHEDULES)
        raise TrainingError(f"train.{stage}.lr_schedule must be one of {choices}, got {schedule!r}")
    if schedule == "constant":
        return 1.0
    final = float(section.lr_final)
    if not 0.0 <= final <= 1.0:
        raise TrainingError(f"train.{stage}.lr_final must be in [0, 1], got {final}")
    progress = min(max(float(progress), 0.0), 1.0)
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _matches(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or (p.endswith(".") and name.startswith(p)) for p in prefixes)


def has_findings_network(models: PrivDiffModels) -> bool:
    return models.encoder.findings is not None


def _in_stage(name: str, stage: str, models: PrivDiffModels) -> bool:
    if has_findings_network(models) and _matches(name, _FINDINGS_PREFIXES):
        return stage == "denoiser"
    return _matches(name, _STAGE_PREFIXES[stage])


def stage_modules(models: PrivDiffModels, stage: str) -> list[nn.Module]:
    check_stage(stage)
    if stage == "autoencoder":
        return [models.vae, models.encoder]
    findings = [models.encoder.findings] if has_findings_network(models) else []
    return [models.unet, models.conditioner, *findings]


def stage_state(models: PrivDiffModels, stage: str) -> dict[str, torch.Tensor]:
    """Everything the stage learned from data, as CPU float tensors keyed by state-dict name.

    This is what a federation averages: weights and float buffers (the latent shift and scale;
    BatchNorm running statistics of paper-scale backbones). Integer bookkeeping buffers
    (BatchNorm's num_batches_tracked) are left out: they are counters, not knowledge.
    """
    check_stage(stage)
    return {
        name: value.detach().to("cpu", copy=True)
        for name, value in models.state_dict().items()
        if _in_stage(name, stage, models) and value.is_floating_point()
    }


def load_stage_state(models: PrivDiffModels, stage: str, state: dict[str, torch.Tensor]) -> None:
    """Copy a `stage_state` dict into the models in place; names and shapes must match exactly."""
    own = {
        k: v for k, v in models.state_dict().items() if _in_stage(k, stage, models) and v.is_floating_point()
    }
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise TrainingError(
            f"{stage} state does not fit the model: "
            f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''} (same config on both sides?)"
        )
    for name, target in own.items():  # check everything before changing anything
        shape = tuple(torch.as_tensor(state[name]).shape)
        if shape != tuple(target.shape):
            raise TrainingError(
                f"{stage} state does not fit the model: {name} has shape {shape}, "
                f"the model {tuple(target.shape)} (same config on both sides?)"
            )
    with torch.no_grad():
        for name, target in own.items():
            target.copy_(torch.as_tensor(state[name]).to(device=target.device, dtype=target.dtype))


def check_training_data(data: Any, image_size: int) -> int:
    """Number of examples of a CXRTensors-like object, after checking its fields and image size."""
    missing = [f for f in _DATA_FIELDS if not hasattr(data, f)]
    if missing:
        raise TrainingError(
            f"training data lacks fields {missing} (expected a privdiff_core.data.CXRTensors)"
        )
    images = data.images
    n = len(images)
    if n == 0:
        raise TrainingError("training data is empty")
    if images.ndim != 4 or tuple(images.shape[1:]) != (1, image_size, image_size):
        raise TrainingError(
            f"training images have shape {tuple(images.shape)}; "
            f"the model needs (N, 1, {image_size}, {image_size})"
        )
    if len(data.patient_ids) != n:
        raise TrainingError(f"{len(data.patient_ids)} patient ids for {n} images")
    return n


def stage_batch_size(cfg: DictConfig, stage: str) -> int:
    """Films per step of the stage's main batch: the autoencoder stage's VAE takes
    train.autoencoder.batch_size when set, everything else train.batch_size."""
    check_stage(stage)
    # .get: a stored config from before this key trains as it did
    own = cfg.train.autoencoder.get("batch_size") if stage == "autoencoder" else None
    if own is None:
        return int(cfg.train.batch_size)
    if int(own) < 1:
        raise TrainingError(f"train.autoencoder.batch_size must be >= 1, got {own}")
    return int(own)


def resolve_steps(cfg: DictConfig, stage: str, examples: int) -> int:
    """train.<stage>.steps, or ceil(epochs * examples / the stage's batch size) when steps is null."""
    section = cfg.train[stage]
    if section.get("steps") is not None:
        return section.steps
    if section.get("epochs") is None:
        raise TrainingError(f"set train.{stage}.steps or train.{stage}.epochs")
    return math.ceil(section.epochs * examples / stage_batch_size(cfg, stage))


class StageObjective:
    """The loss of one stage at one step index (batch, timesteps and noise drawn from the step seed)."""

    def __init__(self, models: PrivDiffModels, stage: str, data: Any, cfg: DictConfig, *, seed: int):
        check_stage(stage)
        self.models, self.stage, self.data, self.cfg, self.seed = models, stage, data, cfg, int(seed)
        self._backward = False  # set by each call
        self.examples = check_training_data(data, models.image_size)
        self.batch_size = min(cfg.train.batch_size, self.examples)
        self.step_batch = min(stage_batch_size(cfg, stage), self.examples)  # the VAE's may differ
        self.patient_ids = [str(p) for p in data.patient_ids]
        self.can_pair = _can_make_pairs(self.patient_ids)
        self.scheduler = models.train_scheduler() if stage == "denoiser" else None
        # Rare findings are up-weighted for the attribute encoder's finding head, as for the
        # evaluation's diagnosis judge (without it the head answers "absent" for them).
        self.pos_weight = finding_pos_weight(data.labels, data.label_mask)
        # Which stage learns the findings (and measures their thresholds at the end of a call).
        self.learns_findings = _in_stage("finding_thresholds", stage, models)
        # .get: a stored config from before this key trains as it did
        self.encoder_every = int(cfg.train.autoencoder.get("encoder_every", 1))
        if self.encoder_every < 1:
            raise TrainingError(f"train.autoencoder.encoder_every must be >= 1, got {self.encoder_every}")
        # Adam steps the findings network takes per step of this stage (1 where it learns none)
        self.findings_steps = int(cfg.encoder.get("findings_steps", 1)) if self.learns_findings else 1
        if self.findings_steps < 1:
            raise TrainingError(f"encoder.findings_steps must be >= 1, got {self.findings_steps}")
        # .get: a stored config from before this key trains as it did (float32)
        try:
            self.unet_bf16 = unet_bf16_on_cpu(str(cfg.train.denoiser.get("cpu_precision", "float32")))
        except ValueError as error:
            raise TrainingError(str(error)) from None

    def generator(self, step: int, substep: int = 0) -> torch.Generator:
        """The step's random stream; `substep` k > 0: the stream of its k-th extra findings step."""
        stage_index = STAGES.index(self.stage)
        mixed = ((self.seed * 1_000_003 + stage_index) * 1_000_003 + step) % (2**63 - 1)
        if substep:
            mixed = (mixed * 1_000_003 + substep) % (2**63 - 1)
        return torch.Generator().manual_seed(mixed)

    def batch(self, generator: torch.Generator) -> tuple[torch.Tensor, Conditions]:
        idx = torch.randperm(self.examples, generator=generator)[: self.step_batch]
        device = self.models.device
        conditions = Conditions.from_samples(self.data).index(idx)
        images = self.data.images[idx].to(device)
        return images, conditions

    def __call__(self, step: int, backward: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
        """(loss, parts) of this step. backward=True also takes the gradients, each term's as soon
        as it is formed (`_spent`), and returns the loss detached."""
        generator = self.generator(step)
        self._backward = backward
        with autocast_for(self.models.device):
            if self.stage == "autoencoder":
                loss, parts = self._autoencoder_loss(step, generator)
            else:
                loss, parts = self._denoiser_loss(step, generator)
        return self._spent(loss), parts

    def _spent(self, term: torch.Tensor) -> torch.Tensor:
        """`term`; when this call takes the gradients, they are taken now and the term comes back
        detached. The terms of a step have graphs of their own (the autoencoder's loss, the
        attribute heads', the verifier's; the denoising loss, the findings network's), so their
        activations are never held together: the peak memory is the largest term's, not their sum
        (paper config: the autoencoder stage's three ran out of an 80 GB H100 together). The
        gradients are those of the sum. A non-finite term gets none: the trainer refuses the step."""
        if not self._backward or not term.requires_grad:
            return term
        if torch.isfinite(term):
            with torch.autocast(term.device.type, enabled=False):  # backward outside autocast
                term.backward()
        return term.detach()

    def _autoencoder_loss(self, step: int, generator: torch.Generator):
        models, cfg = self.models, self.cfg
        images, _ = self.batch(generator)
        loss, parts = vae_loss(models.vae, images, cfg.vae, generator)
        loss = self._spent(loss)
        if step % self.encoder_every:
            # A VAE-only step: the encoder's parameters get no gradient, and Adam leaves them be.
            parts["loss"] = loss.item()
            return loss, parts
        device = images.device
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
        idx, seen = self._attribute_batch(generator, rng)
        logits = (
            models.encoder.attribute_logits(seen)
            if self.learns_findings
            else models.encoder.demographic_logits(seen)
        )
        attributes = attribute_loss(
            logits,
            self.data.age_group[idx].to(device),
            self.data.sex[idx].to(device),
            self.data.labels[idx].to(device),
            self.data.label_mask[idx].to(device),
            pos_weight=self.pos_weight.to(device),
        )
        loss = loss + self._spent(attributes)
        parts["attributes"] = attributes.item()
        if self.can_pair:
            pairs = torch.from_numpy(make_pairs(self.patient_ids, cfg.encoder.pairs_per_step, rng))
            first = self.data.images[pairs[:, 0]].to(device)
            second = self.data.images[pairs[:, 1]].to(device)
            verifier = verification_loss(models.encoder, first, second, pairs[:, 2].to(device))
            loss = loss + self._spent(verifier)
            parts["verifier"] = verifier.item()
        parts["loss"] = loss.item()
        return loss, parts

    def _attribute_batch(self, generator: torch.Generator, rng: np.random.Generator, size: int | None = None):
        """(indices, images) of the attribute heads' own batch (`size` films, default
        `encoder.attribute_batch`), larger than the VAE's or the denoiser's and jittered: on the
        VAE's batch of 8 the finding head stayed at chance (test AUC ~0.5 after 600 steps), and the
        generative mode draws the findings it estimates."""
        enc = self.cfg.encoder
        size = size or enc.attribute_batch or self.batch_size
        idx = torch.randint(0, self.examples, (size,), generator=generator)
        seen = self.data.images[idx]
        seen = jitter(seen, rng) if enc.augment else seen
        return idx, seen.to(self.models.device)

    def _denoiser_loss(self, step: int, generator: torch.Generator):
        loss, parts = self._denoising_loss(step, generator)
        loss = self._spent(loss)
        if not self.learns_findings:
            return loss, parts
        # Drawn after everything the denoising term draws: its batches stay those of a model
        # without a findings network.
        findings = self._findings_term(generator)
        # "loss" stays the denoising loss (its validation curve shows the denoiser converge).
        return loss + self._spent(findings), {**parts, "findings": findings.item()}

    def _findings_term(self, generator: torch.Generator) -> torch.Tensor:
        """The findings network's BCE on its own jittered batch (`encoder.findings_batch` films)."""
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
        idx, seen = self._attribute_batch(generator, rng, self.cfg.encoder.get("findings_batch"))
        device = seen.device
        return findings_loss(
            self.models.encoder.findings(seen),
            self.data.labels[idx].to(device),
            self.data.label_mask[idx].to(device),
            self.pos_weight.to(device),
        )

    def extra_findings_loss(self, step: int, substep: int, backward: bool = False) -> torch.Tensor:
        """The findings BCE of step `step`'s extra findings step `substep` (1..findings_steps-1),
        on a batch of its own; backward=True takes its gradients and returns it detached."""
        self._backward = backward
        with autocast_for(self.models.device):
            return self._spent(self._findings_term(self.generator(step, substep)))

    def _predict_noise(
        self, noisy: torch.Tensor, timesteps: torch.Tensor, state: ConditionState
    ) -> torch.Tensor:
        """The UNet's noise prediction, as float32; its forward in bfloat16 on a CPU where
        train.denoiser.cpu_precision says so (training/precision.py)."""
        with unet_autocast(noisy.device, self.unet_bf16):
            return self.models.predict_noise(noisy, timesteps, state).float()

    def _denoising_loss(self, step: int, generator: torch.Generator):
        models, cfg = self.models, self.cfg
        images, cond = self.batch(generator)
        with torch.no_grad():  # frozen first stage and attribute encoder
            z0 = models.encode(images).float()
            state = models.condition_state(images, cond, estimate=False)
        batch = z0.shape[0]
        timesteps = torch.randint(0, self.scheduler.config.num_train_timesteps, (batch,), generator=generator)
        noise = torch.randn(z0.shape, generator=generator).to(z0.device)
        timesteps = timesteps.to(z0.device)
        noisy = self.scheduler.add_noise(z0, noise, timesteps)
        if not models.spg_enabled:
            c = cfg.conditioning
            dropped = state.drop(c.dropout, generator, c.joint_dropout, c.diagnosis_only)
            eps = self._predict_noise(noisy, timesteps, dropped)
            loss = F.mse_loss(eps, noise)
            return loss, {"loss": loss.item(), "simple": loss.item()}
        s = sensitive_for_step(step)
        patterns = [state.only(), state.only(DIAGNOSIS), models.spg_negative_state(state, s)]
        weight = cfg.spg.weight
        if weight == 0.0:
            # Without L_SPG the three predictions need not share a noisy latent: each sample trains
            # one of the patterns eps_p combines, drawn at random (the same objective in
            # expectation, a third of the UNet work per sample).
            pattern = torch.randint(0, len(patterns), (batch,), generator=generator)
            eps = self._predict_noise(noisy, timesteps, ConditionState.choose(patterns, pattern))
            simple = F.mse_loss(eps, noise)
            return simple, {"loss": simple.item(), "simple": simple.item()}
        states = ConditionState.cat(patterns)
        eps = self._predict_noise(noisy.repeat(3, 1, 1, 1), timesteps.repeat(3), states)
        simple = F.mse_loss(eps, noise.repeat(3, 1, 1, 1))
        eps_p = models.spg_guidance(*eps.chunk(3))
        spg = F.mse_loss(eps_p, noise)
        loss = simple + weight * spg
        return loss, {"loss": loss.item(), "simple": simple.item(), "spg": spg.item()}


def _can_make_pairs(patient_ids: list[str]) -> bool:
    """Verifier pairs need a patient with two images and at least two patients."""
    counts: dict[str, int] = {}
    for pid in patient_ids:
        counts[pid] = counts.get(pid, 0) + 1
    return len(counts) >= 2 and max(counts.values()) >= 2


def prepare_models(models: PrivDiffModels, stage: str, device: torch.device) -> None:
    """Move to the device (channels_last on CUDA) and activate the stage (`activate_stage`)."""
    models.to(device)
    if device.type == "cuda":
        models.unet.to(memory_format=torch.channels_last)
        models.vae.to(memory_format=torch.channels_last)
    activate_stage(models, stage)


def activate_stage(models: PrivDiffModels, stage: str) -> None:
    """Train mode and gradients for the stage's modules; eval mode and frozen for the rest."""
    models.eval().requires_grad_(False)
    for module in stage_modules(models, stage):
        module.train().requires_grad_(True)
    if stage == "autoencoder" and has_findings_network(models):
        models.encoder.findings.eval().requires_grad_(False)  # the denoiser stage's


class StageTrainer:
    """Adam on one stage's parameters, one `step()` at a time; checkpointable (`state_dict`)."""

    def __init__(
        self,
        models: PrivDiffModels,
        stage: str,
        data: Any,
        cfg: DictConfig,
        *,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ):
        self.device = resolve_device(device)
        self.objective = StageObjective(models, stage, data, cfg, seed=seed)
        self.models, self.stage, self.data, self.cfg = models, stage, data, cfg
        prepare_models(models, stage, self.device)
        if stage == "autoencoder":
            encoder = [
                p
                for name, p in models.encoder.named_parameters()
                if _in_stage(f"encoder.{name}", stage, models)
            ]
            groups = [
                {"params": list(models.vae.parameters()), "lr": cfg.train.autoencoder.lr},
                {"params": encoder, "lr": cfg.encoder.lr},
            ]
        else:
            groups = [
                {
                    "params": list(models.unet.parameters()) + list(models.conditioner.parameters()),
                    "lr": cfg.train.denoiser.lr,
                }
            ]
            if has_findings_network(models):
                groups.append({"params": list(models.encoder.findings.parameters()), "lr": cfg.encoder.lr})
        self.optimizer = adam(groups)
        self.base_lrs = [group["lr"] for group in groups]
        self.step_index = 0

    def step(self, progress: float = 0.0) -> dict[str, float]:
        """One Adam step; `progress` (0..1) through the whole stage sets the learning rates
        (`lr_factor`: a constant schedule ignores it)."""
        factor = lr_factor(self.cfg, self.stage, progress)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor
        # Re-activated every step: another trainer (or an evaluation) may share these models.
        activate_stage(self.models, self.stage)
        self.optimizer.zero_grad(set_to_none=True)
        loss, parts = self.objective(self.step_index, backward=True)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"{self.stage} loss became {loss.item()} at step {self.step_index}; lower the lr"
            )
        self.optimizer.step()
        # Extra steps of the findings network alone: only its parameters get gradients, and Adam
        # leaves the others be (their gradients are None).
        for substep in range(1, self.objective.findings_steps):
            self.optimizer.zero_grad(set_to_none=True)
            findings = self.objective.extra_findings_loss(self.step_index, substep, backward=True)
            if not torch.isfinite(findings):
                raise TrainingError(
                    f"findings loss became {findings.item()} at step {self.step_index}; lower encoder.lr"
                )
            self.optimizer.step()
        self.step_index += 1
        return parts

    def finish(self) -> dict[str, float]:
        """End-of-call work: the autoencoder stage measures the latent shift and scale, the stage
        that learns the findings their decision thresholds."""
        count = min(self.cfg.train.latent_stats_images, self.objective.examples)
        idx = torch.randperm(self.objective.examples, generator=self.objective.generator(-1))[:count]
        self.models.eval()
        measured = {}
        if self.stage == "autoencoder":
            shift, scale = self.models.measure_latent_stats(self.data.images[idx])
            measured = {"latent_shift": shift, "latent_scale": scale}
        if self.objective.learns_findings:
            self.models.measure_finding_thresholds(
                self.data.images[idx], self.data.labels[idx], self.data.label_mask[idx], self.data.sex[idx]
            )
        return measured

    def optimizer_tensors(self) -> dict[str, torch.Tensor]:
        """Adam's per-parameter state as flat tensors ("<param index>.<name>"), e.g. for a site to
        keep between federated rounds (Flower's ArrayRecord holds tensors, not nested dicts)."""
        return {
            f"{index}.{name}": torch.as_tensor(value).detach().cpu().clone()
            for index, state in self.optimizer.state_dict()["state"].items()
            for name, value in state.items()
        }

    def load_optimizer_tensors(self, tensors: dict[str, torch.Tensor]) -> bool:
        """Restore `optimizer_tensors`; False (fresh Adam kept) when they do not fit these parameters."""
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            index, _, name = key.partition(".")
            state.setdefault(int(index), {})[name] = value
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        fits = all(
            0 <= i < len(params) and all(v.ndim == 0 or v.shape == params[i].shape for v in s.values())
            for i, s in state.items()
        )
        if not fits:
            return False
        full = self.optimizer.state_dict()
        full["state"] = state
        self.optimizer.load_state_dict(full)
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "step": self.step_index, "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["stage"] != self.stage:
            raise TrainingError(f"checkpoint is for stage {state['stage']}, not {self.stage}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.step_index = int(state["step"])


@torch.no_grad()
def evaluate_stage(
    models: PrivDiffModels,
    stage: str,
    data: Any,
    cfg: DictConfig,
    batches: int,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> float:
    """Mean loss of a stage over `batches` fixed batches of `data` (a val loss), without training."""
    device = resolve_device(device)
    models.to(device).eval()
    objective = StageObjective(models, stage, data, cfg, seed=seed)
    # parts["loss"]: the stage's own loss (the denoising loss, without a findings network's BCE)
    return float(np.mean([objective(step)[1]["loss"] for step in range(batches)]))


def local_train(
    models: PrivDiffModels,
    stage: str,
    data: Any,
    cfg: DictConfig,
    steps: int,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    optimizer_state: dict[str, torch.Tensor] | None = None,
    schedule_span: tuple[float, float] = (0.0, 1.0),
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, float]:
    """Train one stage for `steps` Adam steps on `data` (a CXRTensors); returns metrics.

    {"loss": mean loss of the call, "loss_last": mean of its last quarter, "examples": len(data)
    (the FedAvg weight), "steps", "seconds", the mean of each loss part, and for the autoencoder
    stage the measured "latent_shift" / "latent_scale"}. Batches depend on (seed, stage, step
    index within the call): pass a different seed per federated round, e.g. the round number.

    optimizer_state: a site's Adam state of its previous call for this stage
    (`StageTrainer.optimizer_tensors`); when given it is loaded (if it fits) and replaced in
    place by the state after this call. A fresh Adam every federated round restarts its moment
    estimates from zero each time: the federated autoencoder then reconstructs far worse than
    the same number of steps trained centrally.

    schedule_span: the part of the stage's learning-rate schedule (`lr_factor`) these steps
    cover, e.g. (2/6, 3/6) for the 3rd of a stage's 6 federated rounds.

    on_progress: called with (steps done, `steps`) before each step and once at the end (a
    simulated site's `StepPacer.progress`: training/pacing.py); it may wait, not change anything.
    """
    if steps < 0:
        raise TrainingError(f"steps must be >= 0, got {steps}")
    first, last = schedule_span
    if not 0.0 <= first <= last <= 1.0:
        raise TrainingError(f"schedule_span must satisfy 0 <= start <= end <= 1, got {schedule_span}")
    trainer = StageTrainer(models, stage, data, cfg, seed=seed, device=device)
    if optimizer_state:
        trainer.load_optimizer_tensors(optimizer_state)
    start, history = time.perf_counter(), []
    bar = tqdm(range(steps), desc=f"{stage}", disable=not progress, leave=False)
    for index in bar:
        if on_progress is not None:
            on_progress(index, steps)
        parts = trainer.step(first + (last - first) * index / max(steps, 1))
        history.append(parts)
        bar.set_postfix(loss=f"{parts['loss']:.4f}")
    if on_progress is not None:
        on_progress(steps, steps)
    metrics: dict[str, float] = {
        "examples": trainer.objective.examples,
        "steps": steps,
        "loss": float(np.mean([p["loss"] for p in history])) if history else float("nan"),
        "loss_last": float(np.mean([p["loss"] for p in history[-max(1, steps // 4) :]]))
        if history
        else float("nan"),
    }
    for key in sorted({k for p in history for k in p} - {"loss"}):
        metrics[key] = float(np.mean([p[key] for p in history if key in p]))
    if optimizer_state is not None:
        optimizer_state.clear()
        optimizer_state.update(trainer.optimizer_tensors())
    metrics.update(trainer.finish())
    models.eval()
    metrics["seconds"] = time.perf_counter() - start
    return metrics
