"""A trained anonymizer on disk: one folder anyone in the diffusers ecosystem can open.

    FOLDER/
      model_index.json  diffusers pipeline index: `PrivDiffPipeline` and where each component's
                        class lives, plus the resolved config (`privdiff_config`)
      vae/           config.json + diffusion_pytorch_model.safetensors (AutoencoderKL; its
                     scaling_factor / shift_factor are our measured latent scale and shift)
      unet/          config.json + diffusion_pytorch_model.safetensors (SASUNet2DConditionModel:
                     the SAS settings are in its config, the processors' key projections in the file)
      encoder/       config.json + diffusion_pytorch_model.safetensors (AttributeEncoder)
      conditioning/  config.json + diffusion_pytorch_model.safetensors (ConditionEncoder: the tokens)
      scheduler/     scheduler_config.json (the DDIM sampler)
      manifest.json  format, resolved config, package versions, SHA-256 of every file above

`PrivDiffPipeline.from_pretrained(FOLDER)` (privdiff_core.anonymizer.pipeline) opens it with
diffusers' own loader. `load_models` reads it without diffusers' pipeline machinery and also
reads folders of format 1 (written before the pipeline existed: no model_index.json, no
scheduler/, encoder and conditioning weights in model.safetensors). The folder is written under
a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file

import privdiff_core
from privdiff_core.config import stored_config
from privdiff_core.errors import PrivdiffError
from privdiff_core.model import components
from privdiff_core.model.privdiff_net import PrivDiffModels, pooled_thresholds_as_rows
from privdiff_core.model.tokens import TokenLayout
from privdiff_core.model.unet import SASUNet2DConditionModel, sas_settings
from privdiff_core.signing import SIGNATURE_FILE, sha256_file

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "privdiff-anonymizer/2"
# Format 1: the same models, encoder/ and conditioning/ as plain safetensors, no pipeline index.
READABLE_FORMATS = ("privdiff-anonymizer/1", MANIFEST_FORMAT)
MODEL_INDEX_FILE = "model_index.json"
PIPELINE_CLASS = "PrivDiffPipeline"  # privdiff_core.anonymizer.pipeline
WEIGHT_FOLDERS = ("vae", "unet", "encoder", "conditioning", "scheduler")
_LEGACY_WEIGHTS = "model.safetensors"
_DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"


class ModelFolderError(PrivdiffError):
    """The anonymizer folder is missing, incomplete, corrupted or was changed after saving."""


def package_versions() -> dict[str, str]:
    versions = {"privdiff": privdiff_core.__version__, "python": platform.python_version()}
    for name in ("torch", "diffusers", "safetensors", "numpy", "omegaconf"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _component_entry(component: object) -> list[str]:
    """model_index.json's [library, class] of a component: diffusers' own classes by package name,
    ours by `model.components`, the one module diffusers imports to load them."""
    name = type(component).__name__
    if getattr(components, name, None) is type(component):
        return [components.LIBRARY, name]
    if type(component).__module__.split(".")[0] != "diffusers":
        raise TypeError(f"{name} is neither a diffusers class nor in {components.LIBRARY}")
    return ["diffusers", name]


def _write_model_index(models: PrivDiffModels, cfg: DictConfig, scheduler: object, folder: Path) -> None:
    components = {
        "vae": models.vae,
        "unet": models.unet,
        "encoder": models.encoder,
        "conditioning": models.conditioner,
        "scheduler": scheduler,
    }
    index = {
        "_class_name": PIPELINE_CLASS,
        "_diffusers_version": diffusers.__version__,
        **{name: _component_entry(component) for name, component in components.items()},
        "privdiff_config": OmegaConf.to_container(cfg, resolve=True),
    }
    (folder / MODEL_INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True))


def save_models(
    models: PrivDiffModels, cfg: DictConfig, folder: str | Path, metadata: dict[str, Any] | None = None
) -> Path:
    """Write the anonymizer folder (atomically replacing an existing one); returns its path."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    # The measured latent statistics travel in the VAE's own config fields, so the vae/ folder
    # alone is a complete, correctly scaled diffusers VAE.
    models.vae.register_to_config(
        scaling_factor=float(models.latent_scale), shift_factor=float(models.latent_shift)
    )
    models.vae.save_pretrained(tmp / "vae", safe_serialization=True)
    models.unet.save_pretrained(tmp / "unet", safe_serialization=True)
    models.encoder.register_to_config(
        finding_thresholds=models.finding_thresholds.tolist()  # measured in training, a row per sex
    )
    models.encoder.save_pretrained(tmp / "encoder", safe_serialization=True)
    models.conditioner.save_pretrained(tmp / "conditioning", safe_serialization=True)
    scheduler = models.sample_scheduler()
    scheduler.save_pretrained(tmp / "scheduler")
    _write_model_index(models, cfg, scheduler, tmp)
    files = {
        path.relative_to(tmp).as_posix(): sha256_file(path)
        for path in sorted(tmp.rglob("*"))
        if path.is_file()
    }
    manifest = {
        "format": MANIFEST_FORMAT,
        "image_size": models.image_size,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "versions": package_versions(),
        "files": files,
        "metadata": metadata or {},
    }
    (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of an anonymizer folder after checking every file's SHA-256 against it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(f"{folder}: no such anonymizer folder")
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise ModelFolderError(
            f"{folder}: no {MANIFEST_FILE}; not an anonymizer folder (see `privdiff train`)"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ModelFolderError(f"{path}: unreadable manifest ({err})") from err
    if not isinstance(manifest, dict) or manifest.get("format") not in READABLE_FORMATS:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise ModelFolderError(
            f"{path}: manifest format {found!r} is not one this privdiff reads "
            f"({', '.join(READABLE_FORMATS)})"
        )
    files = manifest.get("files", {})
    for name, digest in sorted(files.items()):
        file = folder / name
        if not file.is_file():
            raise ModelFolderError(f"{folder}: file {name} listed in the manifest is missing")
        if sha256_file(file) != digest:
            raise ModelFolderError(
                f"{folder}: file {name} does not match its manifest hash (corrupted or changed)"
            )
    for sub in WEIGHT_FOLDERS:
        for file in sorted((folder / sub).rglob("*")):  # model_index.json: checked by the loaders
            name = file.relative_to(folder).as_posix()
            if file.is_file() and name not in files and name != SIGNATURE_FILE:
                raise ModelFolderError(f"{folder}: file {name} is not in the manifest (added after saving)")
    return manifest


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except Exception as err:  # safetensors raises its own error types for truncated headers
        raise ModelFolderError(f"{path}: unreadable weights ({err})") from err


def _weights_file(folder: Path) -> Path:
    """diffusers' weights file, or the plain one of a format-1 encoder/ or conditioning/ folder."""
    for name in (_DIFFUSERS_WEIGHTS, _LEGACY_WEIGHTS):
        if (folder / name).is_file():
            return folder / name
    raise ModelFolderError(f"{folder}: no weights ({_DIFFUSERS_WEIGHTS})")


def _load_strict(module: torch.nn.Module, path: Path) -> None:
    try:
        module.load_state_dict(_load_weights(path), strict=True)
    except RuntimeError as err:
        raise ModelFolderError(f"{path}: weights do not fit the model of the manifest ({err})") from err


def load_models(
    folder: str | Path, device: str | torch.device = "cpu"
) -> tuple[PrivDiffModels, DictConfig, dict]:
    """(models in eval mode, resolved config, manifest) of an anonymizer folder, hashes checked.

    The manifest's config decides the architecture (format-1 UNet configs lack the SAS fields).
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    cfg = stored_config(manifest["config"])  # as trained: unknown keys kept, no defaults added
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
    _load_strict(vae, folder / "vae" / _DIFFUSERS_WEIGHTS)
    layout = TokenLayout(identity=int(cfg.conditioning.identity_tokens))
    unet = SASUNet2DConditionModel.from_config(
        UNet2DConditionModel.load_config(folder / "unet"), **sas_settings(cfg, layout)
    )
    _load_strict(unet, folder / "unet" / _DIFFUSERS_WEIGHTS)
    models = PrivDiffModels(cfg, vae=vae, unet=unet)
    _load_strict(models.encoder, _weights_file(folder / "encoder"))
    _load_strict(models.conditioner, _weights_file(folder / "conditioning"))
    models.latent_shift.fill_(float(vae.config.shift_factor or 0.0))
    models.latent_scale.fill_(float(vae.config.scaling_factor))
    thresholds = json.loads((folder / "encoder" / "config.json").read_text()).get("finding_thresholds")
    if thresholds is not None:  # folders written before thresholds were measured keep 0.5
        models.finding_thresholds.copy_(pooled_thresholds_as_rows(thresholds))
    return place_models(models, device), cfg, manifest


def place_models(models: PrivDiffModels, device: str | torch.device) -> PrivDiffModels:
    """Models on `device` in eval mode, as every loader puts them (the same layout, the same pixels)."""
    models.to(device).eval()
    if torch.device(device).type == "cuda":  # convolutions run faster in channels_last on GPUs
        models.unet.to(memory_format=torch.channels_last)
        models.vae.to(memory_format=torch.channels_last)
    return models
