"""The anonymizer as a diffusers pipeline: `PrivDiffPipeline.from_pretrained(folder)`.

    pipe = PrivDiffPipeline.from_pretrained("runs/demo/anonymizer")
    out = pipe(images, seed=7).images          # (B, 1, S, S) in [-1, 1], the same pixels as
                                               # Anonymizer.load(folder).anonymize(images, seed=7)

`DiffusionPipeline.from_pretrained` does the loading (model_index.json names every component's
class; see `privdiff_core.model.folder`); the sampling is `Anonymizer.anonymize`'s, on the same
models, so both faces of a model give identical outputs. `from_pretrained` checks the folder's
manifest hashes first, as `Anonymizer.load` does. Plain `DiffusionPipeline.from_pretrained(folder)`
cannot find a pipeline class outside diffusers (it looks `_class_name` up in the diffusers
package) unless the folder ships executable code, which a signed model folder does not: call it on
this class.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DiffusionPipeline, ImagePipelineOutput
from omegaconf import OmegaConf

from privdiff_core.anonymizer import Anonymizer, find_model_folder
from privdiff_core.model.attribute_encoder import AttributeEncoder
from privdiff_core.model.conditioning import ConditionEncoder, Conditions
from privdiff_core.model.folder import (
    MODEL_INDEX_FILE,
    ModelFolderError,
    place_models,
    read_manifest,
    save_models,
)
from privdiff_core.model.privdiff_net import PrivDiffModels, pooled_thresholds_as_rows
from privdiff_core.model.unet import SASUNet2DConditionModel


class PrivDiffPipeline(DiffusionPipeline):
    """PrivDiff-Net anonymization (img2img or generative, SAS + SPG) as a diffusers pipeline.

    Components: `vae`, `unet` (SAS), `encoder` (attribute encoder), `conditioning` (category
    tokens), `scheduler` (DDIM); `privdiff_config` is the resolved training config (sampling
    settings, guidance weights, token layout).
    """

    model_cpu_offload_seq = "encoder->conditioning->unet->vae"

    def __init__(
        self,
        vae: AutoencoderKL,
        unet: SASUNet2DConditionModel,
        encoder: AttributeEncoder,
        conditioning: ConditionEncoder,
        scheduler: DDIMScheduler,
        privdiff_config: dict | None = None,
    ):
        super().__init__()
        if privdiff_config is None:
            raise ModelFolderError("PrivDiffPipeline needs privdiff_config (the model's resolved config)")
        self.register_modules(
            vae=vae, unet=unet, encoder=encoder, conditioning=conditioning, scheduler=scheduler
        )
        self.register_to_config(privdiff_config=privdiff_config)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any) -> PrivDiffPipeline:
        """Load an anonymizer folder (or a `privdiff train` run folder) after checking its hashes."""
        folder = find_model_folder(pretrained_model_name_or_path)
        read_manifest(folder)  # every file against its SHA-256, as Anonymizer.load does
        if not (folder / MODEL_INDEX_FILE).is_file():
            raise ModelFolderError(
                f"{folder}: no {MODEL_INDEX_FILE}: saved by an older privdiff (manifest format 1); "
                "Anonymizer.load still opens it, or re-save it with privdiff_core.training.save_anonymizer"
            )
        kwargs.setdefault("low_cpu_mem_usage", False)  # the fast path needs `accelerate`, not installed
        return super().from_pretrained(folder, **kwargs)

    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> None:
        """Write a complete anonymizer folder (manifest with hashes, model_index.json), atomically:
        the folder `privdiff train` writes, which both this class and `Anonymizer.load` open."""
        if kwargs:
            raise TypeError(f"PrivDiffPipeline.save_pretrained takes no options, got {sorted(kwargs)}")
        anonymizer = self.anonymizer()
        save_models(anonymizer.models, anonymizer.cfg, save_directory)

    def anonymizer(self) -> Anonymizer:
        """The components as an `Anonymizer` (shared modules, no copies), on the pipeline's device."""
        cfg = OmegaConf.create(self.config.privdiff_config)
        if not isinstance(self.scheduler, DDIMScheduler):
            raise TypeError(
                "PrivDiffPipeline samples with DDIM (deterministic, eta 0); "
                f"got {type(self.scheduler).__name__}"
            )
        models = PrivDiffModels(
            cfg, vae=self.vae, unet=self.unet, encoder=self.encoder, conditioner=self.conditioning
        )
        thresholds = self.encoder.config.finding_thresholds
        if thresholds is not None:
            models.finding_thresholds.copy_(pooled_thresholds_as_rows(thresholds))
        models.sampler_config = dict(self.scheduler.config)
        return Anonymizer.from_models(place_models(models, self.device), cfg)

    @torch.no_grad()
    def __call__(
        self,
        images: torch.Tensor,
        conditions: Conditions | None = None,
        seed: int | Sequence[int] = 0,
        *,
        return_dict: bool = True,
        **settings: Any,
    ) -> ImagePipelineOutput | tuple[torch.Tensor]:
        """Anonymize (B, 1, S, S) images in [-1, 1] with `Anonymizer.anonymize`'s arguments: the
        keyword settings are its `strength`, `ddim_steps`, `batch_size` and `mode` (model defaults).

        Returns `ImagePipelineOutput(images=tensor)` (or a one-tuple with `return_dict=False`);
        the tensor is (B, 1, S, S) in [-1, 1] on the input's device.
        """
        out = self.anonymizer().anonymize(images, conditions, seed, **settings)
        return ImagePipelineOutput(images=out) if return_dict else (out,)
