"""The attribute encoder's finding head learns beside its age and sex heads (issue 10: it stayed at
chance because the 14 findings together weighed as much as age or sex alone)."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from privdiff_core.attributes import NUM_AGE_GROUPS, NUM_FINDINGS, NUM_SEXES
from privdiff_core.config import load_config
from privdiff_core.model.attribute_encoder import attribute_loss
from privdiff_core.synth import SynthParams, generate_arrays
from privdiff_core.training import build_models, local_train

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _finding_logit_grad(label_mask: torch.Tensor) -> torch.Tensor:
    """d attribute_loss / d finding logits for 4 images with zero logits and known age and sex."""
    torch.manual_seed(0)
    batch = len(label_mask)
    diagnosis = torch.zeros(batch, NUM_FINDINGS, requires_grad=True)
    logits = {
        "age": torch.zeros(batch, NUM_AGE_GROUPS),
        "sex": torch.zeros(batch, NUM_SEXES),
        "diagnosis": diagnosis,
    }
    labels = (torch.arange(batch * NUM_FINDINGS).view(batch, NUM_FINDINGS) % 3 == 0).float()
    loss = attribute_loss(logits, torch.zeros(batch), torch.ones(batch), labels, label_mask)
    loss.backward()
    return diagnosis.grad


def test_each_finding_weighs_as_much_as_age_or_sex():
    everything = _finding_logit_grad(torch.ones(4, NUM_FINDINGS))
    # One finding's logit gets the gradient of its own BCE averaged over the images, (p - y) / B,
    # as an age or sex logit gets (softmax - onehot) / B from its cross-entropy.
    labels = (torch.arange(4 * NUM_FINDINGS).view(4, NUM_FINDINGS) % 3 == 0).float()
    assert torch.allclose(everything, (0.5 - labels) / 4)
    # Findings that are unknown contribute nothing and do not dilute the known ones.
    mask = torch.zeros(4, NUM_FINDINGS)
    mask[:, 0] = 1.0
    only_first = _finding_logit_grad(mask)
    assert torch.allclose(only_first[:, 0], everything[:, 0])
    assert torch.count_nonzero(only_first[:, 1:]) == 0


def test_autoencoder_stage_teaches_the_finding_head():
    """60 tiny autoencoder steps fit the synthetic findings (mean AUC on the training films ~0.70;
    with the findings' BCE averaged over the 14 findings it stayed at ~0.52)."""
    data = generate_arrays(SynthParams(sites=2, patients=12, images_per_patient=3, size=32)).to_tensors()
    cfg = load_config("tiny", ["device=cpu"])
    torch.manual_seed(0)
    models = build_models(cfg)
    local_train(models, "autoencoder", data, cfg, 60, seed=0, progress=False)
    estimates = models.encoder.estimate(data.images)["diagnosis"].numpy()
    labels = data.labels.numpy()
    present = [k for k in range(NUM_FINDINGS) if 0 < labels[:, k].sum() < len(labels)]
    auc = np.mean([roc_auc_score(labels[:, k], estimates[:, k]) for k in present])
    assert auc > 0.62, f"finding head mean AUC {auc:.3f} on its own training films"


def test_a_separate_findings_network_learns_in_the_denoiser_stage(tmp_path):
    """encoder.findings_network: the findings get their own network, trained (and its thresholds
    measured) in the denoiser stage; the autoencoder stage leaves it alone, and a saved folder
    gives back the same estimates."""
    from privdiff_core.model.folder import load_models
    from privdiff_core.training import save_anonymizer, stage_state

    data = generate_arrays(SynthParams(sites=2, patients=12, images_per_patient=3, size=32)).to_tensors()
    cfg = load_config("tiny", ["device=cpu", "encoder.findings_network=true"])
    torch.manual_seed(0)
    models = build_models(cfg)
    auto, denoise = stage_state(models, "autoencoder"), stage_state(models, "denoiser")
    assert not set(auto) & set(denoise)
    assert "finding_thresholds" in denoise and any(k.startswith("encoder.findings.") for k in denoise)
    assert not any(k.startswith("encoder.findings.") for k in auto)
    assert set(auto) | set(denoise) == {k for k, v in models.state_dict().items() if v.is_floating_point()}

    local_train(models, "autoencoder", data, cfg, 5, seed=0, progress=False)
    after_auto = stage_state(models, "denoiser")
    assert all(torch.equal(after_auto[k], denoise[k]) for k in denoise)  # findings untouched
    assert not torch.equal(
        stage_state(models, "autoencoder")["encoder.classifier.head.1.weight"],
        auto["encoder.classifier.head.1.weight"],
    )

    before = stage_state(models, "autoencoder")
    metrics = local_train(models, "denoiser", data, cfg, 60, seed=0, progress=False)
    assert metrics["findings"] > 0  # the BCE is reported beside the denoising loss
    assert all(torch.equal(v, before[k]) for k, v in stage_state(models, "autoencoder").items())
    assert not torch.equal(models.finding_thresholds, torch.full_like(models.finding_thresholds, 0.5))
    estimates = models.encoder.estimate(data.images)["diagnosis"]
    labels = data.labels.numpy()
    present = [k for k in range(NUM_FINDINGS) if 0 < labels[:, k].sum() < len(labels)]
    auc = np.mean([roc_auc_score(labels[:, k], estimates.numpy()[:, k]) for k in present])
    assert auc > 0.62, f"findings network mean AUC {auc:.3f} on its own training films"

    folder = save_anonymizer(models, cfg, tmp_path / "anonymizer", {})
    loaded, _, _ = load_models(folder)
    torch.testing.assert_close(loaded.encoder.estimate(data.images)["diagnosis"], estimates)
    torch.testing.assert_close(loaded.finding_thresholds, models.finding_thresholds)


def test_the_findings_network_has_its_own_widths_and_batch(tmp_path):
    """encoder.findings_widths / findings_batch / findings_pool_grid: the findings network is built
    with its own widths and pooling grid and learns on batches of its own size (the age/sex heads
    keep `attribute_batch`); a saved folder is rebuilt with those widths and that grid."""
    from privdiff_core.model.folder import load_models
    from privdiff_core.training import save_anonymizer

    data = generate_arrays(SynthParams(sites=2, patients=12, images_per_patient=3, size=32)).to_tensors()
    overrides = ["device=cpu", "encoder.findings_network=true", "encoder.attribute_batch=4"]
    own = ["encoder.findings_widths=[8,16]", "encoder.findings_batch=10", "encoder.findings_pool_grid=2"]
    cfg = load_config("tiny", [*overrides, *own])
    models = build_models(cfg)
    convs = [m for m in models.encoder.findings.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [conv.out_channels for conv in convs[::2]] == [8, 16]  # two convolutions per width
    assert models.encoder.findings.backbone.embed.in_features == 16 * 2 * 2  # a 2 x 2 grid of the last width
    assert models.encoder.classifier.backbone.pool_grid == 1  # age and sex: pooled over the film
    assert models.encoder.classifier.backbone.features[0].out_channels == cfg.encoder.widths[0]
    seen: dict[str, list[int]] = {"findings": [], "classifier": []}
    for name in seen:
        getattr(models.encoder, name).register_forward_pre_hook(
            lambda _, args, name=name: seen[name].append(len(args[0]))
        )
    local_train(models, "autoencoder", data, cfg, 2, seed=0, progress=False)
    local_train(models, "denoiser", data, cfg, 3, seed=0, progress=False)
    assert seen["classifier"][:2] == [4, 4]  # the age/sex heads: encoder.attribute_batch
    assert seen["findings"][:3] == [10, 10, 10]  # later calls: the thresholds measured on the training films

    folder = save_anonymizer(models, cfg, tmp_path / "anonymizer", {})
    loaded, _, _ = load_models(folder)
    torch.testing.assert_close(
        loaded.encoder.estimate(data.images)["diagnosis"], models.encoder.estimate(data.images)["diagnosis"]
    )
    # unset: the findings network has the encoder's widths and the attribute batch, as before
    plain = build_models(load_config("tiny", overrides))
    assert plain.encoder.findings.backbone.features[0].out_channels == cfg.encoder.widths[0]
    assert plain.encoder.findings.backbone.pool_grid == 1
