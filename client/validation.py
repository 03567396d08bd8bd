"""The site's half of the validation gate (server/validation.py): score a candidate model.

The site rebuilds the accepted model itself from the config (seeded: the model every process
builds alike), loads the candidate's stage states into a second copy, and computes each
requested stage's loss on its own val split for both.

Then the quick privacy/utility check (privdiff_core/evaluation/quick_check.py): the first
`images` val films (spread over as many patients as possible) go through the candidate and
through the model this site has installed (MODEL_STORE/current: the last one the federation
accepted, if any), and the site's own judges (client/site_verifier.py) score output vs input:
re-ID AUC and diagnosis agreement. A site without judges trains them first on its own films
(the config's evaluate.verifier / evaluate.classifier settings) and keeps them in its site
folder. Only the losses, the two numbers per model and the counts go back.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import torch
from flwr.app import RecordDict

from privdiff.common import protocol
from privdiff.common.errors import FederationError
from privdiff_core.data.errors import DatasetError

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from privdiff.client.client_app import Site
    from privdiff.client.site_verifier import SiteJudges
    from privdiff.common.task import FederatedTask


def score_candidate(task: FederatedTask, site: Site, content: RecordDict) -> protocol.SiteScores:
    from privdiff.common.task import resolve_device
    from privdiff.common.updates import StateLayout, unflatten_state
    from privdiff_core.config import config_from_yaml

    record = content.config_records[protocol.CONFIG_RECORD]
    cfg = config_from_yaml(str(record["config-yaml"]))
    stages, batches = [str(s) for s in record["stages"]], int(record["batches"])
    data = task.load_validation_data(site.data, cfg)
    if task.num_examples(data) == 0:
        raise FederationError(f"{site.data} has no val split: this site cannot score the candidate")
    device = resolve_device(cfg.device)
    accepted, candidate = task.build_models(cfg), task.build_models(cfg)
    vector = content.array_records["candidate"]["state"].numpy()
    offset = 0
    for stage in task.stages:
        layout = StateLayout.of(task.stage_state(candidate, stage))
        if offset + layout.size > vector.size:
            break
        task.load_stage_state(
            candidate, stage, unflatten_state(vector[offset : offset + layout.size], layout)
        )
        offset += layout.size
    if offset != vector.size:
        raise FederationError("the candidate does not fit this site's model (another privdiff version?)")
    images = int(record.get("images", 0))
    checked, candidate_privacy, accepted_privacy = 0, {}, {}
    if images > 0:
        films, patients = held_out_films(task, site, cfg, data)
        checked, candidate_privacy, accepted_privacy = privacy_check(
            task, site, cfg, candidate, films, patients, images
        )
    return protocol.SiteScores(
        node_id=0,  # the server knows who answered
        examples=task.num_examples(data),
        candidate={s: task.validation_loss(candidate, s, data, cfg, batches, device) for s in stages},
        accepted={s: task.validation_loss(accepted, s, data, cfg, batches, device) for s in stages},
        checked=checked,
        candidate_privacy=candidate_privacy,
        accepted_privacy=accepted_privacy,
    )


def held_out_films(
    task: FederatedTask, site: Site, cfg: DictConfig, val: Any
) -> tuple[torch.Tensor, list[str]]:
    """The val films, and the test split's too when val has one patient only (re-ID needs two);
    neither split is ever trained on."""
    films, patients = val.image, list(val.patient_ids)
    if len(set(patients)) < 2:
        with contextlib.suppress(DatasetError):  # no test split: re-ID stays unmeasured
            test = task.load_validation_data(site.data, cfg, split="test")
            films, patients = torch.cat([films, test.image]), [*patients, *test.patient_ids]
    return films, patients


def spread_over_patients(patient_ids: list[str], count: int) -> list[int]:
    """`count` row indices, first films of each patient first: the most patients for re-ID."""
    seen: dict[str, int] = {}
    rank = []
    for index, patient in enumerate(patient_ids):
        rank.append((seen.get(patient, 0), index))
        seen[patient] = seen.get(patient, 0) + 1
    return [index for _, index in sorted(rank)[:count]]


def site_judges(site: Site, cfg: DictConfig) -> SiteJudges:
    """The site's judges from its site folder, trained there first if it has none."""
    from privdiff.client.site_log import event
    from privdiff.client.site_verifier import (
        has_site_verifier,
        judge_settings,
        load_site_judges,
        train_site_judges,
    )

    if site.verifier is None:
        raise FederationError("this site has no folder for its verifier (privdiff-client start --verifier)")
    if has_site_verifier(site.verifier):
        return load_site_judges(site.verifier)
    verifier, diagnosis = judge_settings(cfg, cfg.federation.validation.get("judge_steps"))
    pacer = site.pacer("gate-judges")  # simulated sites train their judges at once: kept in step
    judges = train_site_judges(
        site.data,
        site.verifier,
        int(cfg.image_size),
        verifier,
        diagnosis,
        on_progress=pacer.progress if pacer else None,
    )
    event(f"trained this site's own verifier for the validation gate: {site.verifier}")
    return judges


def privacy_check(
    task: FederatedTask,
    site: Site,
    cfg: DictConfig,
    candidate: torch.nn.Module,
    films: torch.Tensor,
    patient_ids: list[str],
    images: int,
) -> tuple[int, dict[str, float], dict[str, float]]:
    """(films checked, the candidate's numbers, the installed model's numbers or {})."""
    from privdiff.client.site_log import event
    from privdiff.common.distribution import current_model
    from privdiff_core.anonymizer import Anonymizer
    from privdiff_core.errors import PrivdiffError

    judges = site_judges(site, cfg)
    index = spread_over_patients(patient_ids, images)
    originals = films[index]
    patients = [patient_ids[i] for i in index]
    seed = int(cfg.seed)
    measured = measure(judges, originals, task.anonymize(candidate, cfg, originals, seed), patients)
    installed = current_model(site.model_store)
    if installed is None:
        return len(index), measured, {}
    try:
        accepted = Anonymizer.load(installed)
    except PrivdiffError as err:
        event(f"the installed model {installed.name} cannot be opened ({err}); the gate uses absolute limits")
        return len(index), measured, {}
    outputs = task.anonymize(accepted.models, accepted.cfg, originals, seed)
    return len(index), measured, measure(judges, originals, outputs, patients)


def measure(
    judges: SiteJudges, originals: torch.Tensor, outputs: torch.Tensor, patients: list[str]
) -> dict[str, float]:
    """Re-ID AUC and diagnosis agreement at the judges' image size (absent: not measurable)."""
    from torch.nn import functional as F

    from privdiff_core.evaluation.quick_check import diagnosis_agreement, reid_auc

    def at_judge_size(images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] == judges.image_size:
            return images
        return F.interpolate(images, size=judges.image_size, mode="bilinear", antialias=True).clamp(-1, 1)

    first, second = at_judge_size(originals.float()), at_judge_size(outputs.float())
    result: dict[str, float] = {}
    auc = reid_auc(judges.verifier, first, second, patients)
    if auc is not None:
        result["reid_auc"] = auc
    if judges.diagnosis is not None:
        result["diagnosis_agreement"] = diagnosis_agreement(judges.diagnosis, first, second)
    return result
