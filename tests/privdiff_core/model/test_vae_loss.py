"""The autoencoder's loss: L1 + edges + KL, plus an SSIM term with its own weight."""

import pytest
import torch
from omegaconf import OmegaConf

from privdiff_core.config import load_config
from privdiff_core.evaluation.quality import ssim_per_image
from privdiff_core.model.vae import build_vae, differentiable_ssim, vae_loss
from privdiff_core.synth import SynthParams, generate_arrays
from privdiff_core.training import build_models


@pytest.fixture(scope="module")
def films():
    params = SynthParams(sites=1, patients=4, images_per_patient=2, size=32)
    return generate_arrays(params).to_tensors().images


def _loss(vae, films, **weights):
    section = OmegaConf.merge(load_config("tiny").vae, weights)
    return vae_loss(vae, films, section, torch.Generator().manual_seed(0))


def test_the_ssim_term_adds_its_weight_times_one_minus_ssim(films):
    vae = build_vae(load_config("tiny"))
    plain, plain_parts = _loss(vae, films, ssim_weight=0.0)
    with_ssim, parts = _loss(vae, films, ssim_weight=0.5)
    assert "ssim" not in plain_parts and 0.0 < parts["ssim"] < 1.0
    assert with_ssim.item() == pytest.approx(plain.item() + 0.5 * (1 - parts["ssim"]), rel=1e-5)
    # a config stored before the key existed trains as it did
    stored = OmegaConf.create({k: v for k, v in load_config("tiny").vae.items() if k != "ssim_weight"})
    as_before, _ = vae_loss(vae, films, stored, torch.Generator().manual_seed(0))
    assert as_before.item() == pytest.approx(plain.item())


def test_descending_the_ssim_term_raises_the_evaluations_ssim(films):
    """The term is the structure the evaluation measures (scikit-image's SSIM): its gradient on
    a noisy reconstruction alone makes that reconstruction score higher there."""
    torch.manual_seed(0)
    recon = (films + 0.4 * torch.randn_like(films)).clamp(-1, 1).requires_grad_(True)
    before = ssim_per_image(films, recon.detach()).mean()
    optimizer = torch.optim.Adam([recon], lr=0.02)
    for _ in range(30):
        loss = 1 - differentiable_ssim(recon, films)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert ssim_per_image(films, recon.detach()).mean() > before + 0.1


def test_the_autoencoder_runs_in_float32_inside_the_trainers_autocast(films):
    """On CUDA the trainer and the sampler run under bf16 autocast; the autoencoder opts out
    (vae.full_precision). CPU bf16 autocast stands in: the loss, the latents and the films are
    those of float32, bit for bit."""
    torch.manual_seed(0)
    models = build_models(load_config("tiny", ["device=cpu"]))
    plain, _ = _loss(models.vae, films, ssim_weight=0.5)
    latents = models.encode(films)
    decoded = models.decode(latents)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16  # autocast is on
        under, _ = _loss(models.vae, films, ssim_weight=0.5)
        latents_under = models.encode(films)
        decoded_under = models.decode(latents)
    assert under.dtype == torch.float32 and under.item() == plain.item()
    for ours, reference in ((latents_under, latents), (decoded_under, decoded)):
        assert ours.dtype == torch.float32
        torch.testing.assert_close(ours, reference, rtol=0, atol=0)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(films):
    """vae.gradient_checkpointing (the paper config's, for memory) recomputes activations in the
    backward pass: the loss and every parameter's gradient are those without it."""
    gradients = {}
    for checkpointing in (False, True):
        torch.manual_seed(0)
        vae = build_vae(load_config("tiny", [f"vae.gradient_checkpointing={checkpointing}"])).train()
        assert vae.encoder.gradient_checkpointing is checkpointing
        loss, _ = _loss(vae, films, ssim_weight=0.5)
        loss.backward()
        gradients[checkpointing] = (loss.item(), [p.grad.clone() for p in vae.parameters()])
    (plain_loss, plain), (saved_loss, saved) = gradients[False], gradients[True]
    assert saved_loss == pytest.approx(plain_loss, rel=1e-6)
    for ours, reference in zip(saved, plain, strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-6)
