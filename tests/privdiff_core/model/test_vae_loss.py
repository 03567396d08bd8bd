"""The autoencoder's loss: L1 + edges + KL, plus an SSIM term with its own weight."""

import pytest
import torch
from omegaconf import OmegaConf

from privdiff_core.config import load_config
from privdiff_core.evaluation.quality import ssim_per_image
from privdiff_core.model.vae import build_vae, differentiable_ssim, vae_loss
from privdiff_core.synth import SynthParams, generate_arrays


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
