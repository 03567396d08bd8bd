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
