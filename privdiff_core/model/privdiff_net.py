"""PrivDiff-Net as one module: VAE, attribute encoder, condition tokens and the SAS UNet.

`PrivDiffModels.anonymize` is the paper's use of the model: encode, noise the latent part of the
way (img2img-style partial noising to `strength`), denoise with DDIM driven by the SPG noise
eps_p (or by classifier-free guidance when SPG is switched off), decode.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from omegaconf import DictConfig
from torch import nn

from privdiff_core.model.attribute_encoder import AttributeEncoder
from privdiff_core.model.conditioning import ConditionEncoder, Conditions, ConditionState, state_from_labels
from privdiff_core.model.spg import cfg_combine, sensitive_for_step, spg_combine, spg_weights
from privdiff_core.model.tokens import DIAGNOSIS
from privdiff_core.model.unet import build_unet
from privdiff_core.model.vae import build_vae, vae_downsampling


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


class PrivDiffModels(nn.Module):
    """Everything PrivDiff-Net learns, in one state dict.

    Children: `vae` (AutoencoderKL), `encoder` (AttributeEncoder), `conditioner`
    (ConditionEncoder: state -> tokens), `unet` (UNet2DConditionModel with SAS processors), and the
    buffers `latent_shift` / `latent_scale` measured on the training images (part of the
    `autoencoder` stage state, so a federation averages them like weights).
    """

    def __init__(
        self, cfg: DictConfig, vae: AutoencoderKL | None = None, unet: UNet2DConditionModel | None = None
    ):
        super().__init__()
        self.cfg = cfg
        self.image_size = int(cfg.image_size)
        self.vae = vae if vae is not None else build_vae(cfg)
        factor = vae_downsampling(self.vae.config.block_out_channels)
        if self.image_size % factor:
            raise ValueError(
                f"image_size {self.image_size} is not divisible by the VAE downsampling {factor}"
            )
        self.latent_size = self.image_size // factor
        self.latent_channels = int(self.vae.config.latent_channels)
        enc = cfg.encoder
        self.encoder = AttributeEncoder(str(enc.backbone), int(enc.embed_dim), list(enc.widths or []))
        self.conditioner = ConditionEncoder(
            int(enc.embed_dim), int(cfg.conditioning.embed_dim), int(cfg.conditioning.identity_tokens)
        )
        self.unet = (
            unet
            if unet is not None
            else build_unet(cfg, self.latent_size, self.latent_channels, self.conditioner.layout)
        )
        self.register_buffer("latent_shift", torch.tensor(float(self.vae.config.shift_factor or 0.0)))
        self.register_buffer("latent_scale", torch.tensor(float(self.vae.config.scaling_factor)))

    @property
    def device(self) -> torch.device:
        return self.latent_scale.device

    @property
    def sas_enabled(self) -> bool:
        return bool(self.cfg.sas.enabled)

    @property
    def spg_enabled(self) -> bool:
        return bool(self.cfg.spg.enabled)

    # --- latents -------------------------------------------------------------------------------
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """z0 = (mode(E(x)) - shift) * scale: the deterministic posterior mode, scaled to unit std."""
        return (self.vae.encode(images).latent_dist.mode() - self.latent_shift) * self.latent_scale

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents / self.latent_scale + self.latent_shift).sample

    @torch.no_grad()
    def measure_latent_stats(self, images: torch.Tensor, batch_size: int = 64) -> tuple[float, float]:
        """Set latent_shift / latent_scale to the mean and 1/std of the raw latents of `images`."""
        device = self.device
        with autocast_for(device):
            raw = torch.cat(
                [
                    self.vae.encode(images[i : i + batch_size].to(device)).latent_dist.mode().float()
                    for i in range(0, len(images), batch_size)
                ]
            )
        shift, std = raw.mean(), raw.std()
        self.latent_shift.fill_(shift.item())
        self.latent_scale.fill_(1.0 / max(std.item(), 1e-6))
        return self.latent_shift.item(), self.latent_scale.item()

    # --- conditioning --------------------------------------------------------------------------
    def condition_state(
        self, images: torch.Tensor, conditions: Conditions | None = None, estimate: bool = False
    ) -> ConditionState:
        """Identity embedding of the images themselves + the known labels; with `estimate`, the
        attribute encoder fills in what the labels do not say."""
        conditions = conditions if conditions is not None else Conditions()
        identity = self.encoder.identity_embedding(images).float()
        estimates = self.encoder.estimate(images) if estimate else None
        return state_from_labels(identity, conditions, estimates)

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
        self, latents: torch.Tensor, timestep: torch.Tensor, state: ConditionState, step: int
    ) -> torch.Tensor:
        """The noise that drives sampling, all predictions in one UNet call.

        SPG on: eps_p = spg_combine(eps(z,0), eps(z,diag), eps(z,s)), s cycled per DDIM step;
        when eps(z,0)'s weight 1 - w_diag + |w_s| is 0 (the configs' w_diag = 2, w_s = -1) its
        prediction is skipped (`spg_weights`): the same eps_p for two thirds of the work.
        SPG off: classifier-free guidance eps(z,0) + w_diag (eps(z,c) - eps(z,0)) on the full
        condition c (identity, age, sex, diagnosis): the plain conditional model of the ablation.
        """
        w_diag, w_s = float(self.cfg.spg.w_diag), float(self.cfg.spg.w_s)
        c_uncond, c_diag, c_s = spg_weights(w_diag, w_s)
        skip_uncond = self.spg_enabled and c_uncond == 0.0  # eps(z,0) has weight 0 in eps_p
        if self.spg_enabled:
            states = [state.only(DIAGNOSIS), state.only(sensitive_for_step(step))]
            if not skip_uncond:
                states.insert(0, state.only())
        elif w_diag == 1.0:
            states = [state]  # plain conditional sampling: no unconditional pass needed
        else:
            states = [state.only(), state]
        k = len(states)
        batch = latents.shape[0]
        timesteps = timestep.expand(batch * k) if timestep.ndim == 0 else timestep.repeat(k)
        eps = self.predict_noise(latents.repeat(k, 1, 1, 1), timesteps, ConditionState.cat(states)).float()
        chunks = eps.chunk(k)
        if skip_uncond:
            return c_diag * chunks[0] + c_s * chunks[1]
        if self.spg_enabled:
            return spg_combine(*chunks, w_diag=w_diag, w_s=w_s)
        return chunks[0] if k == 1 else cfg_combine(chunks[0], chunks[1], w_diag)

    # --- schedulers ----------------------------------------------------------------------------
    def train_scheduler(self) -> DDPMScheduler:
        d = self.cfg.diffusion
        return DDPMScheduler(
            num_train_timesteps=int(d.train_timesteps),
            beta_schedule=str(d.beta_schedule),
            beta_start=float(d.beta_start),
            beta_end=float(d.beta_end),
            prediction_type="epsilon",
        )

    def sample_scheduler(self) -> DDIMScheduler:
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
    ) -> torch.Tensor:
        """(B, 1, S, S) in [-1, 1] -> anonymized (B, 1, S, S) in [-1, 1]; one noise seed per image.

        img2img partial noising: t_start = N - int(N * strength), z = add_noise(z0, noise,
        timesteps[t_start]), DDIM (eta 0, deterministic) over timesteps[t_start:].
        """
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        if len(seeds) != len(images):
            raise ValueError(f"{len(seeds)} seeds for {len(images)} images")
        device = self.device
        images = images.to(device)
        scheduler = self.sample_scheduler()
        scheduler.set_timesteps(int(ddim_steps), device=device)
        timesteps = scheduler.timesteps
        t_start = len(timesteps) - int(len(timesteps) * strength)
        if t_start >= len(timesteps):
            raise ValueError(f"strength {strength} x {ddim_steps} DDIM steps leaves no denoising step")
        with autocast_for(device):
            z0 = self.encode(images).float()
            state = self.condition_state(images, conditions, estimate=estimate)
        noise = noise_for_seeds(seeds, z0.shape[1:]).to(device)
        latents = scheduler.add_noise(z0, noise, timesteps[t_start].repeat(len(images)))
        for step, t in enumerate(timesteps[t_start:]):
            with autocast_for(device):
                eps = self.guided_noise(latents, t, state, step)
            latents = scheduler.step(eps.float(), t, latents).prev_sample
        with autocast_for(device):
            out = self.decode(latents).float()
        return out.clamp(-1.0, 1.0)
