"""The site's own judges: a patient verifier and a findings classifier trained on its own films.

They are independent of every anonymizer (the federation never saw them, no model was optimised
against them), so the release's residual-risk check (client/residual_risk.py) and the
validation gate's quick privacy/utility check (client/validation.py) use them by default.
`privdiff-client train-verifier` trains them; the identities never leave the site.

The folder (default `$PRIVDIFF_HOME/verifier`, i.e. `~/.privdiff/verifier`, beside the site
secret) holds safetensors weights and the settings that rebuild each network:

    verifier.json   + verifier.safetensors     the Siamese patient verifier (residual_risk format)
    diagnosis.json  + diagnosis.safetensors    the findings classifier (only if the films have labels)
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from omegaconf import DictConfig

from privdiff.client.deid.uids import default_secret_path
from privdiff.client.residual_risk import VerifierError, load_verifier, save_verifier
from privdiff_core.evaluation.attackers import AttackerSettings, build_diagnosis, train_diagnosis
from privdiff_core.nets import ImageClassifier, SiameseVerifier
from privdiff_core.verification import VerifierTraining, train_verifier

DIAGNOSIS_FORMAT = "privdiff-diagnosis/1"
DIAGNOSIS_CONFIG = "diagnosis.json"
DIAGNOSIS_WEIGHTS = "diagnosis.safetensors"


def default_site_verifier() -> Path:
    """`$PRIVDIFF_HOME/verifier` (default `~/.privdiff/verifier`), beside the site secret."""
    return default_secret_path().with_name("verifier")


def has_site_verifier(folder: Path | None) -> bool:
    return folder is not None and (folder / "verifier.json").is_file()


@dataclass
class SiteJudges:
    verifier: SiameseVerifier
    diagnosis: ImageClassifier | None  # None: the site's films carry no finding labels
    image_size: int
    folder: Path


def judge_settings(cfg: DictConfig, steps: int | None = None) -> tuple[VerifierTraining, AttackerSettings]:
    """Network and budget of both judges from a config's evaluate.verifier / evaluate.classifier;
    `steps` replaces both sections' training steps (the gate's quick judges)."""
    section = cfg.evaluate.verifier
    verifier = VerifierTraining(
        backbone=str(section.backbone),
        embed_dim=int(section.embed_dim),
        widths=tuple(section.widths) if section.widths else None,
        steps=int(section.steps),
        batch_size=int(section.batch_size),
        lr=float(section.lr),
        weight_decay=float(section.weight_decay),
        seed=int(cfg.seed),
    )
    classifier = AttackerSettings.from_config(cfg.evaluate.classifier, seed=int(cfg.seed))
    if steps is None:
        return verifier, classifier
    return replace(verifier, steps=int(steps)), replace(classifier, steps=int(steps))


def save_diagnosis(model: ImageClassifier, folder: Path, image_size: int, settings: AttackerSettings) -> None:
    from safetensors.torch import save_file

    config = {
        "format": DIAGNOSIS_FORMAT,
        "image_size": int(image_size),
        "backbone": settings.backbone,
        "embed_dim": settings.embed_dim,
        "widths": list(settings.widths) if settings.widths else None,
    }
    save_file({k: v.contiguous().cpu() for k, v in model.state_dict().items()}, folder / DIAGNOSIS_WEIGHTS)
    (folder / DIAGNOSIS_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True))


def load_diagnosis(folder: Path, device: str | torch.device = "cpu") -> ImageClassifier | None:
    """The findings classifier of a site folder, or None when the folder has none."""
    from safetensors.torch import load_file

    if not (folder / DIAGNOSIS_CONFIG).is_file():
        return None
    try:
        config = json.loads((folder / DIAGNOSIS_CONFIG).read_text())
        state = load_file(folder / DIAGNOSIS_WEIGHTS)
    except (OSError, ValueError) as err:
        raise VerifierError(f"{folder}: needs {DIAGNOSIS_CONFIG} and {DIAGNOSIS_WEIGHTS} ({err})") from err
    if config.get("format") != DIAGNOSIS_FORMAT:
        raise VerifierError(f"{folder}: format {config.get('format')!r}, expected {DIAGNOSIS_FORMAT}")
    widths = tuple(config["widths"]) if config.get("widths") else None
    # by keyword: AttackerSettings extends FitBudget, whose fields come first
    model = build_diagnosis(
        AttackerSettings(backbone=config["backbone"], embed_dim=int(config["embed_dim"]), widths=widths)
    )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise VerifierError(f"{folder}: diagnosis weights do not fit their config ({err})") from err
    return model.to(device).eval()


def load_site_judges(folder: Path, device: str | torch.device = "cpu") -> SiteJudges:
    verifier, size = load_verifier(folder, device)
    return SiteJudges(verifier, load_diagnosis(folder, device), size, folder)


def train_site_judges(
    data: str | Path,
    folder: str | Path,
    image_size: int,
    verifier: VerifierTraining,
    diagnosis: AttackerSettings,
    progress: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> SiteJudges:
    """Train both judges on every film of a site folder (any layout `open_dataset` reads) and
    write them to `folder`, replacing what was there only once both are saved. on_progress: called
    with (steps done, steps in all) over both judges' training (a simulated site's pacer)."""
    from privdiff_core.data import open_dataset

    folder = Path(folder)
    tensors = open_dataset(data, image_size, progress=progress).load_tensors(progress=progress)
    patients = len(set(tensors.patient_ids))
    if patients < 2 or patients == len(tensors):
        raise VerifierError(
            f"{data}: {len(tensors)} films of {patients} patients; a verifier needs at least two "
            "patients and some patient with two films"
        )
    labelled = bool(tensors.label_mask.any())
    total = verifier.steps + (diagnosis.steps if labelled else 0)

    def paced(offset: int) -> Callable[[int, int], None] | None:
        return None if on_progress is None else lambda done, _: on_progress(offset + done, total)

    verifier_net = train_verifier(
        tensors.image, tensors.patient_ids, verifier, progress=progress, on_progress=paced(0)
    )
    classifier = None
    if labelled:
        classifier, _ = train_diagnosis(
            tensors.image,
            tensors.labels,
            tensors.label_mask,
            diagnosis,
            progress=progress,
            on_progress=paced(verifier.steps),
        )
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_verifier(verifier_net, tmp, image_size, verifier.backbone, verifier.embed_dim, verifier.widths)
    if classifier is not None:
        save_diagnosis(classifier, tmp, image_size, diagnosis)
    (tmp / "training.json").write_text(
        json.dumps(
            {"films": len(tensors), "patients": patients, "verifier": asdict(verifier)}, indent=2, default=str
        )
    )
    old = folder.with_name(f".{folder.name}.{os.getpid()}.old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return SiteJudges(verifier_net.eval(), classifier, image_size, folder)
