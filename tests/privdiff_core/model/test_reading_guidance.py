"""Reading guidance (`anonymize.reading_guidance`): in the generative mode each late DDIM step
pulls the drawing toward reading as the findings it is drawn with: the estimator's calls on the
input film or its probabilities (`anonymize.reading_target`), or the labels a site told."""

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from privdiff_core.attributes import NUM_FINDINGS
from privdiff_core.config import load_config
from privdiff_core.model.conditioning import Conditions
from privdiff_core.model.reading_guidance import GUIDED_FROM_ALPHA_BAR, reading_guided_noise
from privdiff_core.training import build_models

ALPHA_BAR = torch.tensor(0.4)


def linear_reader(seed: int = 0):
    weights = torch.randn(4 * 4 * 4, NUM_FINDINGS, generator=torch.Generator().manual_seed(seed)) / 8
    return lambda x0: x0.flatten(1) @ weights


def clean_latent(latents: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    return (latents - (1 - ALPHA_BAR).sqrt() * eps) / ALPHA_BAR.sqrt()


def reading_loss(read, x0: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(read(x0), target, reduction="none").sum(dim=1)


def test_the_step_moves_the_clean_latent_toward_the_target_reading():
    torch.manual_seed(0)
    latents, eps = torch.randn(3, 4, 4, 4), torch.randn(3, 4, 4, 4)
    target, read = torch.rand(3, NUM_FINDINGS), linear_reader()
    everything = torch.ones(3, NUM_FINDINGS, dtype=torch.bool)
    guided = reading_guided_noise(latents, eps, ALPHA_BAR, read, target, everything, scale=0.05)
    before = reading_loss(read, clean_latent(latents, eps), target)
    after = reading_loss(read, clean_latent(latents, guided), target)
    assert (after < before - 0.05).all(), (before, after)


def test_findings_left_out_do_not_pull_and_each_film_moves_on_its_own():
    torch.manual_seed(1)
    latents, eps = torch.randn(3, 4, 4, 4), torch.randn(3, 4, 4, 4)
    target, read = torch.rand(3, NUM_FINDINGS), linear_reader(1)
    nothing = torch.zeros(3, NUM_FINDINGS, dtype=torch.bool)
    torch.testing.assert_close(reading_guided_noise(latents, eps, ALPHA_BAR, read, target, nothing, 1.0), eps)
    only_first = nothing.clone()
    only_first[0] = True
    guided = reading_guided_noise(latents, eps, ALPHA_BAR, read, target, only_first, 1.0)
    torch.testing.assert_close(guided[1:], eps[1:])
    assert not torch.allclose(guided[0], eps[0])
    alone = reading_guided_noise(latents[:1], eps[:1], ALPHA_BAR, read, target[:1], only_first[:1], 1.0)
    torch.testing.assert_close(alone, guided[:1])


def test_the_gradient_taken_a_few_films_at_a_time_is_the_one_pass_step():
    """The chunks (FILMS_PER_GRADIENT) bound the decoder's memory; they must not change the step,
    also where the batch does not divide into them."""
    torch.manual_seed(2)
    latents, eps = torch.randn(7, 4, 4, 4), torch.randn(7, 4, 4, 4)
    target, read = torch.rand(7, NUM_FINDINGS), linear_reader(2)
    mask = torch.rand(7, NUM_FINDINGS) < 0.6
    calls = []

    def counted(x0: torch.Tensor) -> torch.Tensor:
        calls.append(len(x0))
        return read(x0)

    whole = reading_guided_noise(latents, eps, ALPHA_BAR, counted, target, mask, 0.5, films_per_gradient=7)
    assert calls == [7]
    calls.clear()
    chunked = reading_guided_noise(latents, eps, ALPHA_BAR, counted, target, mask, 0.5, films_per_gradient=3)
    assert calls == [3, 3, 1]
    torch.testing.assert_close(chunked, whole)
    assert not torch.allclose(whole, eps)


def anonymize(models, images: torch.Tensor, conditions: Conditions) -> torch.Tensor:
    return models.anonymize(
        images, conditions, seeds=range(len(images)), strength=1.0, ddim_steps=4, mode="generative"
    )


def reading_distance(models, outputs: torch.Tensor, target: torch.Tensor) -> float:
    """Binary cross-entropy of the estimator's reading of `outputs` against `target` (B, 14)."""
    with torch.no_grad():
        return float(F.binary_cross_entropy_with_logits(models.encoder.finding_logits(outputs), target))


def estimator_reading(models, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return models.encoder.finding_logits(images).sigmoid()


def tiny_models(guidance: float, *overrides: str):
    torch.manual_seed(0)
    return build_models(
        load_config("tiny", ["device=cpu", f"anonymize.reading_guidance={guidance}", *overrides])
    )


def films_lit_from_one_side(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Films brighter on the left or on the right half, and which (1: left): a finding the
    estimator can learn in a few steps, so that its reading means something."""
    generator = torch.Generator().manual_seed(seed)
    left = torch.randint(0, 2, (count,), generator=generator).float()
    ramp = torch.linspace(0.6, -0.6, 32).expand(32, -1)
    sign = (left * 2 - 1)[:, None, None, None]
    noise = torch.randn(count, 1, 32, 32, generator=generator) * 0.2
    return (sign * ramp + noise).clamp(-1, 1), left


def train_the_estimator_on_the_lit_side(models) -> None:
    optimizer = torch.optim.Adam(models.encoder.parameters(), lr=3e-3)
    for step in range(60):
        films, left = films_lit_from_one_side(32, seed=100 + step)
        logits = models.encoder.finding_logits(films)[:, 0]
        loss = F.binary_cross_entropy_with_logits(logits, left)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    models.eval()


def test_guided_drawings_read_as_the_findings_they_are_given():
    plain, guided = tiny_models(0.0), tiny_models(5.0)
    for models in (plain, guided):
        train_the_estimator_on_the_lit_side(models)
    images, left = films_lit_from_one_side(6, seed=0)
    # findings estimated: the drawing reads closer to the estimator's calls on the input
    untold = Conditions()
    calls = guided.condition_state(images, untold, estimate=True).diagnosis
    plain_out, guided_out = anonymize(plain, images, untold), anonymize(guided, images, untold)
    assert reading_distance(guided, guided_out, calls) < reading_distance(plain, plain_out, calls) - 0.05
    # only the steps whose predicted film is mostly film are guided: with none of them, no change
    guided.guided_from_alpha_bar = 1.01
    torch.testing.assert_close(anonymize(guided, images, untold), plain_out, rtol=0, atol=0)
    guided.guided_from_alpha_bar = GUIDED_FROM_ALPHA_BAR
    # findings told (here the opposite side to the one each film is lit from): the drawing reads
    # closer to the told labels, which the input film contradicts
    labels = torch.zeros(6, NUM_FINDINGS)
    labels[:, 0] = 1 - left
    told = Conditions(labels=labels, label_mask=torch.ones(6, NUM_FINDINGS, dtype=torch.bool))
    plain_told, guided_told = anonymize(plain, images, told), anonymize(guided, images, told)
    assert reading_distance(guided, guided_told, labels) < reading_distance(plain, plain_told, labels) - 0.05
    assert reading_distance(guided, guided_told, estimator_reading(guided, images)) > reading_distance(
        plain, plain_told, estimator_reading(plain, images)
    )


def test_guided_toward_the_estimates_the_drawings_follow_the_estimator_not_its_calls():
    # the two models' estimators are the same network, trained alike; their thresholds are above
    # any probability, so every finding is called absent while the estimator reads some present
    to_calls, to_estimates = tiny_models(5.0), tiny_models(5.0, "anonymize.reading_target=estimates")
    for models in (to_calls, to_estimates):
        train_the_estimator_on_the_lit_side(models)
        models.finding_thresholds.fill_(0.999999)
    films, left = films_lit_from_one_side(8, seed=3)
    estimates = estimator_reading(to_estimates, films)[:, 0]
    calls = to_calls.condition_state(films, Conditions(), estimate=True).diagnosis[:, 0]
    assert left.sum() >= 2 and (estimates[left == 1] > 0.9).all() and (calls == 0).all()
    untold = Conditions()
    read_to_calls = estimator_reading(to_calls, anonymize(to_calls, films, untold))[:, 0]
    read_to_estimates = estimator_reading(to_estimates, anonymize(to_estimates, films, untold))[:, 0]
    assert read_to_estimates[left == 1].mean() > read_to_calls[left == 1].mean() + 0.1
    # told findings are guided toward the told labels whatever the setting
    labels = (torch.rand(8, NUM_FINDINGS, generator=torch.Generator().manual_seed(4)) < 0.3).float()
    told = Conditions(labels=labels, label_mask=torch.ones(8, NUM_FINDINGS, dtype=torch.bool))
    torch.testing.assert_close(anonymize(to_estimates, films, told), anonymize(to_calls, films, told))


def test_the_setting_is_checked_and_older_models_draw_without_it():
    with pytest.raises(ValueError, match="reading_guidance"):
        tiny_models(-1.0)
    with pytest.raises(ValueError, match="reading_target"):
        tiny_models(1.0, "anonymize.reading_target=probabilities")
    older = OmegaConf.to_container(load_config("tiny", ["device=cpu"]))
    del older["anonymize"]["reading_guidance"]
    del older["anonymize"]["reading_target"]
    models = build_models(OmegaConf.create(older))
    assert models.reading_guidance == 0.0
    assert models.reading_target == "calls"
