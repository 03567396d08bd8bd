"""The assembled PrivDiff-Net: the ablation switches really change the model, and sampling is
deterministic for a seed."""

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from privdiff_core.config import load_config
from privdiff_core.model import Conditions, SASAttnProcessor, spg_combine
from privdiff_core.model.spg import cfg_combine
from privdiff_core.model.tokens import DIAGNOSIS
from privdiff_core.training import build_models


def tiny(*overrides):
    return build_models(load_config("tiny", ["device=cpu", *overrides]))


def images(batch=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.avg_pool2d(torch.rand(batch, 1, 40, 40, generator=g), 9, 1)
    return (smooth - smooth.amin()) / (smooth.amax() - smooth.amin()) * 2 - 1


def test_sas_switch_sets_processor_types_per_config():
    sas, plain = tiny(), tiny("sas.enabled=false")
    for model, cross_type in ((sas, SASAttnProcessor), (plain, AttnProcessor2_0)):
        processors = model.unet.attn_processors
        cross = {k: v for k, v in processors.items() if k.endswith("attn2.processor")}
        self_ = {k: v for k, v in processors.items() if k.endswith("attn1.processor")}
        assert cross and len(cross) == len(self_)
        assert all(type(p) is cross_type for p in cross.values())
        assert all(type(p) is AttnProcessor2_0 for p in self_.values())
    extra = set(sas.state_dict()) - set(plain.state_dict())
    assert extra and all(".attn2.processor.to_k_sensitive." in k for k in extra)


@torch.no_grad()
def test_sas_changes_the_noise_prediction_with_the_same_weights():
    sas, plain = tiny(), tiny("sas.enabled=false")
    missing = sas.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert all("to_k_sensitive" in k for k in missing)
    x = images()
    z = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.full((4,), 500)
    state = sas.condition_state(x)
    assert not torch.allclose(sas.predict_noise(z, t, state), plain.predict_noise(z, t, state), atol=1e-4)


@torch.no_grad()
def test_with_sas_a_sensitive_attribute_acts_only_through_the_projector_yet_acts():
    model = tiny()
    x = images()
    z = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.full((4,), 500)
    labels = (torch.rand(4, 14, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    state = model.condition_state(x, Conditions(age_group=torch.tensor([0, 1, 2, 3]), labels=labels))
    eps_null = model.predict_noise(z, t, state.only())
    for s in ("identity", "age"):
        assert not torch.allclose(model.predict_noise(z, t, state.only(s)), eps_null, atol=1e-5)
    assert not torch.allclose(model.predict_noise(z, t, state.only(DIAGNOSIS)), eps_null, atol=1e-5)


@torch.no_grad()
def test_spg_switch_changes_anonymization_and_sampling_is_seeded():
    spg, plain = tiny(), tiny("spg.enabled=false")
    plain.load_state_dict(spg.state_dict())
    x = images()
    run = lambda m, seeds: m.anonymize(x[: len(seeds)], None, seeds, strength=0.6, ddim_steps=10)  # noqa: E731
    a, b = run(spg, [1, 2, 3, 4]), run(spg, [1, 2, 3, 4])
    assert torch.equal(a, b)
    assert a.shape == x.shape and a.min() >= -1 and a.max() <= 1
    assert not torch.allclose(a, run(spg, [5, 6, 7, 8]), atol=1e-4)
    assert not torch.allclose(a, run(plain, [1, 2, 3, 4]), atol=1e-4)
    # An image's output does not depend on its batch neighbours (noise is drawn per image).
    assert torch.allclose(run(spg, [1, 2])[0], a[0], atol=1e-5)


def test_invalid_strength_and_seed_count_are_refused():
    model = tiny()
    with pytest.raises(ValueError, match="strength"):
        model.anonymize(images(1), None, [0], strength=0.0, ddim_steps=10)
    with pytest.raises(ValueError, match="leaves no denoising step"):
        model.anonymize(images(1), None, [0], strength=0.05, ddim_steps=10)
    with pytest.raises(ValueError, match="seeds"):
        model.anonymize(images(2), None, [0], strength=0.5, ddim_steps=10)


@torch.no_grad()
def test_sampling_skips_the_unconditional_pass_only_when_its_weight_is_zero():
    model = tiny("spg.negative=paper")  # w_diag = 2, w_s = -1: eps(z, 0) has weight 0 in eps_p
    x = images(2)
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor(400)
    state = model.condition_state(x, Conditions(labels=torch.ones(2, 14)))
    batches = []
    hook = model.unet.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    fast = model.guided_noise(z, t, state, step=1)
    three = [
        model.predict_noise(z, t.expand(2), s)
        for s in (state.only(), state.only("diagnosis"), state.only("age"))
    ]
    hook.remove()
    assert batches[0] == 4  # two predictions in one call
    assert torch.allclose(fast, spg_combine(*three, w_diag=2.0, w_s=-1.0), atol=1e-4)  # batch rounding
    other = tiny("spg.w_s=-0.5", "spg.negative=paper")
    other.load_state_dict(model.state_dict())
    hook = other.unet.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    full = other.guided_noise(z, t, state, step=1)
    hook.remove()
    assert batches[-1] == 6  # eps(z, 0) has weight 1 - 2 + 0.5 != 0: three predictions
    assert torch.allclose(full, spg_combine(*three, w_diag=2.0, w_s=-0.5), atol=1e-4)


@torch.no_grad()
def test_guidance_is_spg_with_the_cycled_attribute_and_cfg_when_spg_is_off():
    model = tiny("spg.w_s=-0.5", "spg.negative=paper")
    x = images(2)
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    t = torch.tensor(700)
    state = model.condition_state(x, Conditions(sex=torch.tensor([0, 1]), labels=torch.ones(2, 14)))
    predict = lambda m, s: m.predict_noise(z, t.expand(2), s)  # noqa: E731
    uncond, diag = predict(model, state.only()), predict(model, state.only(DIAGNOSIS))
    for step, sensitive in enumerate(("identity", "age", "sex")):
        expected = spg_combine(uncond, diag, predict(model, state.only(sensitive)), w_diag=2.0, w_s=-0.5)
        assert torch.allclose(model.guided_noise(z, t, state, step), expected, atol=1e-4)
    cfg_model = tiny("spg.enabled=false", "spg.w_diag=3.0")
    cfg_model.load_state_dict(model.state_dict())
    expected = cfg_combine(predict(cfg_model, state.only()), predict(cfg_model, state), 3.0)
    assert torch.allclose(cfg_model.guided_noise(z, t, state, 0), expected, atol=1e-4)


@torch.no_grad()
def test_diagnosis_negative_pushes_away_from_diag_plus_s_relative_to_diag():
    model = tiny("spg.w_s=-1.5")  # the configs' negative: eps(diag + s) - eps(diag)
    x = images(2)
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    t = torch.tensor(500)
    state = model.condition_state(x, Conditions(sex=torch.tensor([1, 0]), labels=torch.ones(2, 14)))
    predict = lambda s: model.predict_noise(z, t.expand(2), s)  # noqa: E731
    uncond, diag = predict(state.only()), predict(state.only(DIAGNOSIS))
    for step, sensitive in enumerate(("identity", "age", "sex")):
        diag_s = predict(state.only(DIAGNOSIS, sensitive))
        expected = uncond + 2.0 * (diag - uncond) - 1.5 * (diag_s - diag)
        assert torch.allclose(model.guided_noise(z, t, state, step), expected, atol=1e-4)


@torch.no_grad()
def test_generative_mode_ignores_the_input_pixels_but_keeps_its_findings():
    model = tiny()
    a, b = images(2, seed=0), images(2, seed=5)
    labels = torch.zeros(2, 14)
    labels[:, 3] = 1
    cond = Conditions(age_group=torch.tensor([0, 0]), sex=torch.tensor([0, 0]), labels=labels)
    seeds = [11, 12]
    # without SPG nothing of the input reaches the output but the findings
    spg_off = tiny("spg.enabled=false")
    spg_off.load_state_dict(model.state_dict())
    out_a = spg_off.anonymize(a, cond, seeds, 1.0, 5, estimate=False, mode="generative")
    out_b = spg_off.anonymize(b, cond, seeds, 1.0, 5, estimate=False, mode="generative")
    assert torch.equal(out_a, out_b)
    other = labels.clone()
    other[:, 7] = 1
    changed = spg_off.anonymize(a, Conditions(labels=other), seeds, 1.0, 5, estimate=False, mode="generative")
    assert not torch.allclose(changed, out_a)
    with pytest.raises(ValueError, match="mode"):
        model.anonymize(a, cond, seeds, 1.0, 5, mode="inpaint")


def test_joint_dropout_trains_the_all_null_and_diagnosis_only_patterns():
    model = tiny()
    ages, sexes = torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 0, 1])
    known = Conditions(age_group=ages, sex=sexes, labels=torch.ones(4, 14))
    state = model.condition_state(images(4), known)
    state = state.cat([state] * 500)  # 2000 samples
    g = torch.Generator().manual_seed(0)
    per_category = state.drop(0.1, g)
    null = lambda s: ~(s.identity_known | s.age_known | s.sex_known | s.diagnosis_known.any(1))  # noqa: E731
    assert null(per_category).float().mean() < 0.002  # 0.1 ** 4: the bug this dropout fixes
    dropped = state.drop(0.1, g, joint=0.15, diagnosis_only=0.15)
    assert 0.12 < null(dropped).float().mean() < 0.19
    others = dropped.identity_known | dropped.age_known | dropped.sex_known
    only_diag = dropped.diagnosis_known.all(1) & ~others
    assert 0.12 < only_diag.float().mean() < 0.20
