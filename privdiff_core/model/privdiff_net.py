"""PrivDiff-Net as one module: VAE, attribute encoder, condition tokens and the SAS UNet.

`PrivDiffModels.anonymize` has two modes:

- "img2img" (the paper's use): encode, noise the latent part of the way (partial noising to
  `strength`), denoise with DDIM driven by the SPG noise eps_p (or by classifier-free guidance when
  SPG is switched off), decode. What the starting latent still holds (coarse anatomy) survives.
- "generative": start from pure noise and draw a new film conditioned on the input's findings
  only (binarized), pushed away from its identity/age/sex by SPG: a new patient with the same
  findings. Nothing of the input reaches the output but the findings and the SPG negative.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from omegaconf import DictConfig
from torch import nn

from privdiff_core.attributes import NUM_FINDINGS, NUM_SEXES
from privdiff_core.model.attribute_encoder import AttributeEncoder
from privdiff_core.model.conditioning import ConditionEncoder, Conditions, ConditionState, state_from_labels
from privdiff_core.model.reading_guidance import (
    GUIDED_FROM_ALPHA_BAR,
    READING_TARGETS,
    reading_guided_noise,
)
from privdiff_core.model.spg import (
    cfg_combine,
    check_negative,
    sensitive_for_step,
    spg_combine,
    spg_combine_diagnosis,
    spg_weights,
)
from privdiff_core.model.tokens import DIAGNOSIS
from privdiff_core.model.unet import build_unet
from privdiff_core.model.vae import build_vae, full_precision, vae_downsampling

ANONYMIZE_MODES = ("img2img", "generative")
# Films of one sex needed to give that sex its own finding thresholds (`measure_finding_thresholds`).
MIN_FILMS_PER_SEX = 20
# How often an estimated finding is called present (encoder.finding_calls).
FINDING_CALLS = ("prevalence", "youden")


def autocast_for(device: torch.device) -> AbstractContextManager:
    """bf16 autocast on CUDA (SAS itself runs in float32), nothing on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def resolve_device(name: str | torch.device | None) -> torch.device:
    """`auto` (or None) -> CUDA when present, else CPU."""
    if name is None or str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA GPU is available (use device=auto or cpu)")
    return device


def noise_for_seeds(seeds: Sequence[int], shape: Sequence[int]) -> torch.Tensor:
    """One standard-normal tensor per seed, drawn on the CPU so results match across machines.

    Per image, not per batch: an image's noise does not depend on its batch neighbours.
    """
    return torch.stack(
        [torch.randn(tuple(shape), generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    )


def pooled_thresholds_as_rows(thresholds: Sequence | torch.Tensor) -> torch.Tensor:
    """(NUM_SEXES, NUM_FINDINGS) finding thresholds from either layout: one row per sex, or the
    single row of models saved before the thresholds were per sex (every sex gets it)."""
    values = torch.as_tensor(thresholds, dtype=torch.float32)
    return values.expand(NUM_SEXES, NUM_FINDINGS).clone()


def _widen_pooled_thresholds(state_dict: dict, prefix: str, *_: object) -> None:
    """Checkpoints written before the thresholds were per sex hold one row: load it for every sex."""
    key = f"{prefix}finding_thresholds"
    if key in state_dict and state_dict[key].ndim == 1:
        state_dict[key] = pooled_thresholds_as_rows(state_dict[key])


class PrivDiffModels(nn.Module):
    """Everything PrivDiff-Net learns, in one state dict.

    Children: `vae` (AutoencoderKL), `encoder` (AttributeEncoder), `conditioner`
    (ConditionEncoder: state -> tokens), `unet` (UNet2DConditionModel with SAS processors), and the
    buffers `latent_shift` / `latent_scale` measured on the training images (part of the
    `autoencoder` stage state, so a federation averages them like weights).
    """

    def __init__(
        self,
        cfg: DictConfig,
        vae: AutoencoderKL | None = None,
        unet: UNet2DConditionModel | None = None,
        encoder: AttributeEncoder | None = None,
        conditioner: ConditionEncoder | None = None,
    ):
        super().__init__()
        self.cfg = cfg
        self.image_size = cfg.image_size
        self.vae = vae if vae is not None else build_vae(cfg)
        factor = vae_downsampling(self.vae.config.block_out_channels)
        if self.image_size % factor:
            raise ValueError(
                f"image_size {self.image_size} is not divisible by the VAE downsampling {factor}"
            )
        self.latent_size = self.image_size // factor
        self.latent_channels = int(self.vae.config.latent_channels)
        # models saved before the option existed called their estimated findings yes/no
        self.finding_softness = float((cfg.get("anonymize") or {}).get("finding_softness", 0.0))
        if self.finding_softness < 0:
            raise ValueError(f"anonymize.finding_softness must be >= 0, got {self.finding_softness}")
        # models saved before the option existed drew without reading guidance (reading_guidance.py)
        self.reading_guidance = float((cfg.get("anonymize") or {}).get("reading_guidance", 0.0))
        if self.reading_guidance < 0:
            raise ValueError(f"anonymize.reading_guidance must be >= 0, got {self.reading_guidance}")
        self.guided_from_alpha_bar = GUIDED_FROM_ALPHA_BAR  # which steps it guides (0: all)
        # models saved before the option existed guided toward their calls
        self.reading_target = str((cfg.get("anonymize") or {}).get("reading_target", "calls"))
        if self.reading_target not in READING_TARGETS:
            raise ValueError(
                f"anonymize.reading_target must be one of {READING_TARGETS}, got {self.reading_target!r}"
            )
        enc = cfg.encoder
        # models trained before the option existed called at Youden's threshold
        self.finding_calls = str(enc.get("finding_calls", "youden"))
        if self.finding_calls not in FINDING_CALLS:
            raise ValueError(
                f"encoder.finding_calls must be one of {FINDING_CALLS}, got {self.finding_calls!r}"
            )
        self.encoder = (
            encoder
            if encoder is not None
            else AttributeEncoder(
                str(enc.backbone),
                int(enc.embed_dim),
                list(enc.widths or []),
                # models trained before the option existed share one backbone
                findings_network=bool(enc.get("findings_network", False)),
                findings_widths=list(enc.get("findings_widths") or []) or None,
                findings_pool_grid=int(enc.get("findings_pool_grid", 1)),
            )
        )
        self.conditioner = (
            conditioner
            if conditioner is not None
            else ConditionEncoder(
                int(enc.embed_dim),
                int(cfg.conditioning.embed_dim),
                int(cfg.conditioning.identity_tokens),
                # models trained before the option existed share one pair of states
                str(cfg.conditioning.get("finding_states", "shared")),
            )
        )
        self.unet = (
            unet
            if unet is not None
            else build_unet(cfg, self.latent_size, self.latent_channels, self.conditioner.layout)
        )
        self.register_buffer("latent_shift", torch.tensor(float(self.vae.config.shift_factor or 0.0)))
        self.register_buffer("latent_scale", torch.tensor(float(self.vae.config.scaling_factor)))
        # Decision thresholds of the attribute encoder's finding estimates, one row per sex (row s for
        # films of sex s), chosen on the training images by the stage that learns the findings
        # (`measure_finding_thresholds`).
        self.register_buffer("finding_thresholds", torch.full((NUM_SEXES, NUM_FINDINGS), 0.5))
        self._register_load_state_dict_pre_hook(_widen_pooled_thresholds)
        # A DDIM scheduler configuration that replaces the config's own (the diffusers pipeline's
        # `scheduler` component); None: built from `diffusion` (`sample_scheduler`).
        self.sampler_config: dict | None = None

    @property
    def device(self) -> torch.device:
        return self.latent_scale.device

    @property
    def sas_enabled(self) -> bool:
        return self.cfg.sas.enabled

    @property
    def spg_enabled(self) -> bool:
        return self.cfg.spg.enabled

    @property
    def spg_negative(self) -> str:
        # Models trained before the option existed used the paper's direction.
        return check_negative(str(self.cfg.spg.get("negative", "paper")))

    # --- latents -------------------------------------------------------------------------------
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """z0 = (mode(E(x)) - shift) * scale: the deterministic posterior mode, scaled to unit std."""
        return (self._raw_latents(images) - self.latent_shift) * self.latent_scale

    def _raw_latents(self, images: torch.Tensor) -> torch.Tensor:
        """The autoencoder's posterior mode of `images`, in float32 (`full_precision`)."""
        with full_precision(images):
            return self.vae.encode(images.float()).latent_dist.mode()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Films (B, 1, S, S) of scaled latents, the autoencoder in float32 (`full_precision`)."""
        with full_precision(latents):
            return self.vae.decode(latents.float() / self.latent_scale + self.latent_shift).sample

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """decode(encode(x)) in [-1, 1] on the CPU, `batch_size` images at a time: what the
        autoencoder alone keeps (no noise, no denoiser, no conditions)."""
        device, out = self.device, []
        for start in range(0, len(images), batch_size):
            with autocast_for(device):
                out.append(
                    self.decode(self.encode(images[start : start + batch_size].to(device))).float().cpu()
                )
        return torch.cat(out).clamp(-1.0, 1.0)

    @torch.no_grad()
    def measure_latent_stats(self, images: torch.Tensor, batch_size: int = 64) -> tuple[float, float]:
        """Set latent_shift / latent_scale to the mean and 1/std of the raw latents of `images`."""
        device = self.device
        raw = torch.cat(
            [
                self._raw_latents(images[i : i + batch_size].to(device))
                for i in range(0, len(images), batch_size)
            ]
        )
        shift, std = raw.mean(), raw.std()
        self.latent_shift.fill_(shift.item())
        self.latent_scale.fill_(1.0 / max(std.item(), 1e-6))
        return self.latent_shift.item(), self.latent_scale.item()

    @torch.no_grad()
    def finding_probabilities(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """(N, NUM_FINDINGS) the estimator's finding probabilities of `images`, `batch_size` films at
        a time, on the CPU."""
        return torch.cat(
            [
                self.encoder.estimate(images[i : i + batch_size].to(self.device))["diagnosis"].cpu()
                for i in range(0, len(images), batch_size)
            ]
        )

    @torch.no_grad()
    def measure_finding_thresholds(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        label_mask: torch.Tensor,
        sex: torch.Tensor,
        batch_size: int = 64,
    ) -> torch.Tensor:
        """Set `finding_thresholds` from these images; returns a copy (NUM_SEXES, NUM_FINDINGS).

        How often each finding is called, by `encoder.finding_calls`:
        - "prevalence": in the share of these films that have it. The denoiser learned films with
          their true findings (1.4 per film in the demo); Youden's threshold called 4.3 per film,
          so the generated films were unlike any it learned (FD 23 against 4.9 at the
          prevalence, one model, 3 runs: benchmarks/results/finding_calls_prevalence.md).
        - "youden": at the Youden-optimal threshold of all films (the most sensitivity +
          specificity per finding; a fixed 0.5 would call almost every rare finding absent).
        Then each sex gets its own threshold, the one that calls the finding in that same share of
        its films. The estimator picks up sex-linked anatomy (in the demo's main job it called
        Emphysema in 23% of women and 3% of men, truly 4% and 6%), the generated patient shows what
        was called, and calls made more often in one sex tell the sex (a classifier read it from
        the 14 calls at 0.68, from the per-sex calls at 0.62, majority 0.52). This also evens out
        a true difference in prevalence between the sexes, on purpose: the anonymized film must not
        tell the sex. Findings never seen positive and negative keep their threshold (0.5 at
        first), and a sex with fewer than `MIN_FILMS_PER_SEX` such films the pooled one.
        """
        from sklearn.metrics import roc_curve

        probs = self.finding_probabilities(images, batch_size).numpy()
        truth, known, sexes = labels.numpy(), label_mask.bool().numpy(), sex.cpu().numpy()
        for k in range(NUM_FINDINGS):
            y, p = truth[known[:, k], k], probs[known[:, k], k]
            if not 0 < y.sum() < len(y):
                continue
            if self.finding_calls == "youden":
                fpr, tpr, cut = roc_curve(y, p)
                pooled = float(min(cut[int((tpr - fpr).argmax())], 1.0))
                called_share = float((p >= pooled).mean())
            else:
                called_share = float(y.mean())
                pooled = float(np.quantile(p, 1.0 - called_share))
            self.finding_thresholds[:, k] = pooled
            for s in range(NUM_SEXES):
                group = p[sexes[known[:, k]] == s]
                if len(group) >= MIN_FILMS_PER_SEX and 0 < called_share < 1:
                    # the (1 - share) quantile: `share` of the group's films lie at or above it
                    self.finding_thresholds[s, k] = float(np.quantile(group, 1.0 - called_share))
        return self.finding_thresholds.clone()

    def finding_thresholds_for(self, sex: torch.Tensor) -> torch.Tensor:
        """(B, NUM_FINDINGS) thresholds for films whose sex is `sex`: (B, NUM_SEXES) one-hot labels or
        estimated probabilities (the likelier sex's row)."""
        return self.finding_thresholds[sex.argmax(dim=1).to(self.finding_thresholds.device)]

    # --- conditioning --------------------------------------------------------------------------
    def condition_state(
        self,
        images: torch.Tensor,
        conditions: Conditions | None = None,
        estimate: bool = False,
    ) -> ConditionState:
        """Identity embedding of the images themselves + the known labels; with `estimate`, the
        attribute encoder fills in what the labels do not say (findings called at
        `finding_thresholds`, the row of the film's told or estimated sex: yes/no, or graded with
        `anonymize.finding_softness`)."""
        return self._conditions_and_reading(images, conditions, estimate)[0]

    def _conditions_and_reading(
        self, images: torch.Tensor, conditions: Conditions | None, estimate: bool
    ) -> tuple[ConditionState, torch.Tensor]:
        """`condition_state`, and the findings before they were called (B, 14): the estimator's
        probabilities where it estimated them, the told labels elsewhere."""
        conditions = conditions if conditions is not None else Conditions()
        identity = self.encoder.identity_embedding(images).float()
        estimates = self.encoder.estimate(images) if estimate else None
        state = state_from_labels(identity, conditions, estimates)
        if not estimate:
            return state, state.diagnosis
        estimated = ~conditions.told_findings(len(images))
        called = state.with_called_diagnosis(
            self.finding_thresholds_for(state.sex), estimated, self.finding_softness
        )
        return called, state.diagnosis

    def spg_negative_state(self, state: ConditionState, sensitive: str) -> ConditionState:
        """The condition SPG pushes away from: diag + s ("diagnosis") or s alone ("paper")."""
        if self.spg_negative == "diagnosis":
            return state.only(DIAGNOSIS, sensitive)
        return state.only(sensitive)

    def spg_guidance(self, eps_uncond: torch.Tensor, eps_diag: torch.Tensor, eps_neg: torch.Tensor):
        """eps_p from the three predictions of [0, diag, spg_negative_state] (spg.py)."""
        w_diag, w_s = self.cfg.spg.w_diag, self.cfg.spg.w_s
        if self.spg_negative == "diagnosis":
            return spg_combine_diagnosis(eps_uncond, eps_diag, eps_neg, w_diag, w_s)
        return spg_combine(eps_uncond, eps_diag, eps_neg, w_diag, w_s)

    # --- noise prediction ----------------------------------------------------------------------
    def predict_noise(
        self, latents: torch.Tensor, timesteps: torch.Tensor, state: ConditionState
    ) -> torch.Tensor:
        """eps_theta(z_t, t, c) for a batch (timesteps (B,) or a scalar)."""
        tokens = self.conditioner(state)
        if latents.device.type == "cuda":
            latents = latents.contiguous(memory_format=torch.channels_last)
        return self.unet(latents, timesteps, encoder_hidden_states=tokens).sample

    def guided_noise(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        state: ConditionState,
        step: int,
        diagnosis_only: bool = False,
    ) -> torch.Tensor:
        """The noise that drives sampling, all predictions in one UNet call.

        SPG on: eps_p = spg_guidance(eps(z,0), eps(z,diag), eps(z,negative)), s cycled per DDIM
        step; with the paper's negative and 1 - w_diag + |w_s| = 0 (w_diag = 2, w_s = -1),
        eps(z,0) has weight 0 and its prediction is skipped (`spg_weights`).
        SPG off: classifier-free guidance eps(z,0) + w_diag (eps(z,c) - eps(z,0)) on the full
        condition c, or on the diagnosis alone with `diagnosis_only` (the generative mode).
        """
        w_diag, w_s = self.cfg.spg.w_diag, self.cfg.spg.w_s
        skip_uncond = self.spg_enabled and self.spg_negative == "paper" and spg_weights(w_diag, w_s)[0] == 0.0
        condition = state.only(DIAGNOSIS) if diagnosis_only else state
        if self.spg_enabled:
            negative = self.spg_negative_state(state, sensitive_for_step(step))
            states = [state.only(), state.only(DIAGNOSIS), negative]
            if skip_uncond:
                states = states[1:]
        elif w_diag == 1.0:
            states = [condition]  # plain conditional sampling: no unconditional pass needed
        else:
            states = [state.only(), condition]
        k = len(states)
        batch = latents.shape[0]
        timesteps = timestep.expand(batch * k) if timestep.ndim == 0 else timestep.repeat(k)
        eps = self.predict_noise(latents.repeat(k, 1, 1, 1), timesteps, ConditionState.cat(states)).float()
        chunks = eps.chunk(k)
        if skip_uncond:
            _, c_diag, c_s = spg_weights(w_diag, w_s)
            return c_diag * chunks[0] + c_s * chunks[1]
        if self.spg_enabled:
            return self.spg_guidance(*chunks)
        return chunks[0] if k == 1 else cfg_combine(chunks[0], chunks[1], w_diag)

    def _reading_to_match(
        self, state: ConditionState, uncalled: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(target (B, 14), mask (B, 14)) for reading guidance: the told labels where the site gave
        them; where it did not, the calls the denoiser is drawing (`anonymize.reading_target`
        "calls") or the estimator's probabilities `uncalled` ("estimates"). None when guidance is
        off or no finding is known."""
        if self.reading_guidance == 0 or not state.diagnosis_known.any():
            return None
        target = uncalled if self.reading_target == "estimates" else state.diagnosis
        return target.float(), state.diagnosis_known.bool()

    def _read_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """The estimator's finding logits of the films these clean latents decode to."""
        with autocast_for(latents.device):
            return self.encoder.finding_logits(self.decode(latents).clamp(-1.0, 1.0))

    # --- schedulers ----------------------------------------------------------------------------
    def train_scheduler(self) -> DDPMScheduler:
        d = self.cfg.diffusion
        return DDPMScheduler(
            num_train_timesteps=d.train_timesteps,
            beta_schedule=d.beta_schedule,
            beta_start=d.beta_start,
            beta_end=d.beta_end,
            prediction_type="epsilon",
        )

    def sample_scheduler(self) -> DDIMScheduler:
        if self.sampler_config is not None:  # a fresh one: set_timesteps changes a scheduler's state
            return DDIMScheduler.from_config(self.sampler_config)
        # clip_sample=False: latents are not bounded to [-1, 1]; trailing spacing starts at t = T-1.
        return DDIMScheduler.from_config(
            self.train_scheduler().config, clip_sample=False, timestep_spacing="trailing"
        )

    # --- anonymization -------------------------------------------------------------------------
    @torch.no_grad()
    def anonymize(
        self,
        images: torch.Tensor,
        conditions: Conditions | None,
        seeds: Sequence[int],
        strength: float,
        ddim_steps: int,
        estimate: bool = True,
        mode: str = "img2img",
    ) -> torch.Tensor:
        """(B, 1, S, S) in [-1, 1] -> anonymized (B, 1, S, S) in [-1, 1]; one noise seed per image.

        img2img: t_start = N - int(N * strength), z = add_noise(z0, noise, timesteps[t_start]),
        DDIM (eta 0, deterministic) over timesteps[t_start:]. generative: z = noise (pure: not
        even a scaled z0, which add_noise would keep at the last step), DDIM over all N steps,
        the positive condition the findings alone; `strength` is not used. With
        `anonymize.reading_guidance` > 0, the steps with a_t >= `guided_from_alpha_bar` also pull
        the drawing toward reading as those findings: told, or as the estimator read or called them
        (`anonymize.reading_target`, reading_guidance.py).
        """
        if mode not in ANONYMIZE_MODES:
            raise ValueError(f"anonymize mode must be one of {ANONYMIZE_MODES}, got {mode!r}")
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        if len(seeds) != len(images):
            raise ValueError(f"{len(seeds)} seeds for {len(images)} images")
        device = self.device
        images = images.to(device)
        scheduler = self.sample_scheduler()
        scheduler.set_timesteps(int(ddim_steps), device=device)
        timesteps = scheduler.timesteps
        generative = mode == "generative"
        t_start = 0 if generative else len(timesteps) - int(len(timesteps) * strength)
        if t_start >= len(timesteps):
            raise ValueError(f"strength {strength} x {ddim_steps} DDIM steps leaves no denoising step")
        with autocast_for(device):
            state, uncalled = self._conditions_and_reading(images, conditions, estimate)
            z0 = None if generative else self.encode(images).float()
        reading = self._reading_to_match(state, uncalled) if generative else None
        shape = (self.latent_channels, self.latent_size, self.latent_size)
        noise = noise_for_seeds(seeds, shape).to(device)
        if generative:
            latents = noise * scheduler.init_noise_sigma
        else:
            latents = scheduler.add_noise(z0, noise, timesteps[t_start].repeat(len(images)))
        for step, t in enumerate(timesteps[t_start:]):
            with autocast_for(device):
                eps = self.guided_noise(latents, t, state, step, diagnosis_only=generative).float()
            alpha_bar = scheduler.alphas_cumprod[int(t)]
            if reading is not None and alpha_bar >= self.guided_from_alpha_bar:
                eps = reading_guided_noise(
                    latents,
                    eps,
                    alpha_bar,
                    self._read_latents,
                    *reading,
                    scale=self.reading_guidance,
                )
            latents = scheduler.step(eps, t, latents).prev_sample
        with autocast_for(device):
            out = self.decode(latents).float()
        return out.clamp(-1.0, 1.0)
