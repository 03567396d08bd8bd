"""A trained anonymizer on disk: one folder anyone in the diffusers ecosystem can open.

    FOLDER/
      vae/           config.json + diffusion_pytorch_model.safetensors (AutoencoderKL; its
                     scaling_factor / shift_factor are our measured latent scale and shift)
      unet/          config.json + diffusion_pytorch_model.safetensors (UNet2DConditionModel; the
                     SAS processors' key projections are in the same file)
      encoder/       config.json + model.safetensors (AttributeEncoder)
      conditioning/  config.json + model.safetensors (ConditionEncoder: the category tokens)
      manifest.json  format, resolved config, package versions, SHA-256 of every file above

`UNet2DConditionModel.from_pretrained` silently drops processor parameters, so loading rebuilds
the UNet from its config, installs the processors the manifest's config names, and loads the
weights with strict=True. The folder is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file

import privdiff_core
from privdiff_core.config import stored_config
from privdiff_core.errors import PrivdiffError
from privdiff_core.model.privdiff_net import PrivDiffModels
from privdiff_core.model.unet import configure_processors
from privdiff_core.signing import SIGNATURE_FILE, sha256_file

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "privdiff-anonymizer/1"
WEIGHT_FOLDERS = ("vae", "unet", "encoder", "conditioning")
_WEIGHTS = "model.safetensors"
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


def _save_module(module: torch.nn.Module, folder: Path, config: dict[str, Any]) -> None:
    folder.mkdir(parents=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(state, folder / _WEIGHTS)
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))


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
    enc = cfg.encoder
    _save_module(
        models.encoder,
        tmp / "encoder",
        {
            "class": "AttributeEncoder",
            "backbone": enc.backbone,
            "embed_dim": enc.embed_dim,
            # where each finding's estimate counts as present (measured in training)
            "finding_thresholds": [float(t) for t in models.finding_thresholds],
        },
    )
    layout = models.conditioner.layout
    _save_module(
        models.conditioner,
        tmp / "conditioning",
        {
            "class": "ConditionEncoder",
            "embed_dim": cfg.conditioning.embed_dim,
            "token_order": ["identity", "age", "sex", "diagnosis"],
            "token_lengths": list(layout.lengths),
        },
    )
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
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ModelFolderError(f"{path}: not a {MANIFEST_FORMAT} manifest")
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
        for file in sorted((folder / sub).rglob("*")):
            name = file.relative_to(folder).as_posix()
            if file.is_file() and name not in files and name != SIGNATURE_FILE:
                raise ModelFolderError(f"{folder}: file {name} is not in the manifest (added after saving)")
    return manifest


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except Exception as err:  # safetensors raises its own error types for truncated headers
        raise ModelFolderError(f"{path}: unreadable weights ({err})") from err


def _load_strict(module: torch.nn.Module, path: Path) -> None:
    try:
        module.load_state_dict(_load_weights(path), strict=True)
    except RuntimeError as err:
        raise ModelFolderError(f"{path}: weights do not fit the model of the manifest ({err})") from err


def load_models(
    folder: str | Path, device: str | torch.device = "cpu"
) -> tuple[PrivDiffModels, DictConfig, dict]:
    """(models in eval mode, resolved config, manifest) of an anonymizer folder, hashes checked."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    cfg = stored_config(manifest["config"])  # as trained: unknown keys kept, no defaults added
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
    _load_strict(vae, folder / "vae" / _DIFFUSERS_WEIGHTS)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
    models = PrivDiffModels(cfg, vae=vae, unet=unet)
    configure_processors(unet, cfg, models.conditioner.layout)
    _load_strict(unet, folder / "unet" / _DIFFUSERS_WEIGHTS)
    _load_strict(models.encoder, folder / "encoder" / _WEIGHTS)
    _load_strict(models.conditioner, folder / "conditioning" / _WEIGHTS)
    models.latent_shift.fill_(float(vae.config.shift_factor or 0.0))
    models.latent_scale.fill_(float(vae.config.scaling_factor))
    thresholds = json.loads((folder / "encoder" / "config.json").read_text()).get("finding_thresholds")
    if thresholds is not None:  # folders written before thresholds were measured keep 0.5
        models.finding_thresholds.copy_(torch.tensor(thresholds, dtype=torch.float32))
    models.to(device).eval()
    if torch.device(device).type == "cuda":  # convolutions run faster in channels_last on GPUs
        models.unet.to(memory_format=torch.channels_last)
        models.vae.to(memory_format=torch.channels_last)
    return models, cfg, manifest
