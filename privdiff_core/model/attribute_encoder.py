"""The anonymizer's own attribute encoder: identity embedding plus age, sex and diagnosis heads.

Trained in the `autoencoder` stage beside the VAE, frozen afterwards. It serves two purposes:
(a) the identity tokens of the denoiser come from its identity embedding of the input image, so
identity conditioning works for patients never seen and needs no global patient-ID list; (b) at
anonymize time it estimates what is unknown about an image (age group, sex, findings as
probabilities), e.g. for a hospital DICOM without labels.

The identity branch is `nets.SiameseVerifier` trained on balanced same/different-patient pairs
(BCE on |e1 - e2|, Packhäuser et al. 2022); the attributes use `nets.ImageClassifier`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch.nn import functional as F

from privdiff_core.attributes import NUM_AGE_GROUPS, NUM_FINDINGS, NUM_SEXES, UNKNOWN
from privdiff_core.nets import ImageClassifier, SiameseVerifier

ATTRIBUTE_SIZES = {"age": NUM_AGE_GROUPS, "sex": NUM_SEXES, "diagnosis": NUM_FINDINGS}
_DEMOGRAPHICS = {"age": NUM_AGE_GROUPS, "sex": NUM_SEXES}


class AttributeEncoder(ModelMixin, ConfigMixin):
    """Identity verifier + multi-task attribute classifier on (B, 1, S, S) images in [-1, 1].

    A diffusers model (`save_pretrained` / `from_pretrained`, config.json beside the weights).
    `findings_widths`: the findings network's own widths (None: `widths`); `findings_pool_grid`:
    its pooling grid (nets.SmallConvNet: 1 averages over the film, G > 1 keeps where features are).
    `finding_thresholds` only travels in the config: where each finding's estimate counts as present,
    a row per sex, measured in training (`PrivDiffModels.finding_thresholds` holds the live copy;
    models saved before the rows were per sex have one row).
    """

    @register_to_config
    def __init__(
        self,
        backbone: str = "small",
        embed_dim: int = 128,
        widths: Sequence[int] | None = None,
        finding_thresholds: Sequence[Sequence[float]] | Sequence[float] | None = None,
        findings_network: bool = False,
        findings_widths: Sequence[int] | None = None,
        findings_pool_grid: int = 1,
    ):
        super().__init__()
        widths = tuple(widths) if widths else None
        self.embed_dim = embed_dim
        self.verifier = SiameseVerifier(backbone, embed_dim, widths)
        # With `findings_network` the findings get their own network, like the evaluation's
        # diagnosis judge: on a backbone shared with age and sex they compete with two easier tasks.
        findings_widths = tuple(findings_widths) if findings_widths else widths
        self.findings = (
            ImageClassifier(NUM_FINDINGS, backbone, embed_dim, findings_widths, findings_pool_grid)
            if findings_network
            else None
        )
        heads = ATTRIBUTE_SIZES if self.findings is None else _DEMOGRAPHICS
        self.classifier = ImageClassifier(sum(heads.values()), backbone, embed_dim, widths)

    def identity_embedding(self, images: torch.Tensor) -> torch.Tensor:
        """(B, embed_dim): the verifier's embedding, whose |difference| decides same patient."""
        return self.verifier.embed(images)

    def attribute_logits(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per attribute: age (B, 4), sex (B, 2), diagnosis (B, 14, multi-label)."""
        if self.findings is None:
            logits = self.classifier(images).split(list(ATTRIBUTE_SIZES.values()), dim=1)
            return dict(zip(ATTRIBUTE_SIZES, logits, strict=True))
        return {**self.demographic_logits(images), "diagnosis": self.findings(images)}

    def finding_logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 14) finding logits alone (differentiable: reading guidance steps along them)."""
        if self.findings is None:
            return self.attribute_logits(images)["diagnosis"]
        return self.findings(images)

    def demographic_logits(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Age (B, 4) and sex (B, 2) logits alone (the findings network, when there is one, is
        trained in another stage)."""
        if self.findings is None:
            return {k: v for k, v in self.attribute_logits(images).items() if k != "diagnosis"}
        logits = self.classifier(images)
        return dict(zip(_DEMOGRAPHICS, logits.split(list(_DEMOGRAPHICS.values()), dim=1), strict=True))

    @torch.no_grad()
    def estimate(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Probabilities: softmax for age and sex, sigmoid per finding for the diagnosis."""
        logits = self.attribute_logits(images)
        return {
            "age": logits["age"].float().softmax(-1),
            "sex": logits["sex"].float().softmax(-1),
            "diagnosis": logits["diagnosis"].float().sigmoid(),
        }


def attribute_loss(
    logits: dict[str, torch.Tensor],
    age_group: torch.Tensor,
    sex: torch.Tensor,
    labels: torch.Tensor,
    label_mask: torch.Tensor,
    pos_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy for age group and sex (unknown -1 ignored) + BCE on the known findings only
    (positives weighted by `pos_weight` per finding: `nets.finding_pos_weight`).

    Every finding weighs as much as age or sex: the BCE is summed over an image's known findings
    and averaged over the images that have any. The three heads share one backbone; with the BCE
    averaged over all 14 findings each finding had 1/14 of the weight of age or sex, the backbone
    learned age and sex first and the finding head stayed near chance (demo, 600 autoencoder
    steps, seeds 0 / 1: mean finding test AUC 0.59 / 0.56 averaged, 0.65 / 0.67 summed). Age and
    sex pay for it: test accuracy 0.56 / 0.51 and 0.98 / 0.94 before, 0.42 / 0.50 and 0.88 / 0.89 after.
    """
    total = logits["age"].new_zeros(())
    for name, target in (("age", age_group), ("sex", sex)):
        if (target != UNKNOWN).any():
            total = total + F.cross_entropy(logits[name].float(), target.long(), ignore_index=UNKNOWN)
    if "diagnosis" in logits:  # absent: a separate findings network, trained on its own
        total = total + findings_loss(logits["diagnosis"], labels, label_mask, pos_weight)
    return total


def findings_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    label_mask: torch.Tensor,
    pos_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """BCE of the finding logits (B, 14) on the known labels, summed over an image's known findings
    and averaged over the images that have any (0 when none does)."""
    mask = label_mask.float()
    labelled_images = mask.amax(dim=1).sum()
    if labelled_images == 0:
        return logits.new_zeros((), dtype=torch.float32)
    per_label = F.binary_cross_entropy_with_logits(
        logits.float(), labels.float(), reduction="none", pos_weight=pos_weight
    )
    return (per_label * mask).sum() / labelled_images


def verification_loss(
    encoder: AttributeEncoder, first: torch.Tensor, second: torch.Tensor, same: torch.Tensor
):
    """BCE of the Siamese verifier on image pairs (same = 1 for two images of one patient)."""
    return F.binary_cross_entropy_with_logits(encoder.verifier(first, second).float(), same.float())
