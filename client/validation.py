"""The site's half of the validation gate (server/validation.py): score a candidate model.

The site rebuilds the accepted model itself from the config (seeded: the model every process
builds alike), loads the candidate's stage states into a second copy, and computes each
requested stage's loss on its own val split for both. Only the losses and the number of val
images go back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flwr.app import RecordDict

from privdiff.common import protocol
from privdiff.common.errors import FederationError

if TYPE_CHECKING:
    from privdiff.client.client_app import Site
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
    return protocol.SiteScores(
        node_id=0,  # the server knows who answered
        examples=task.num_examples(data),
        candidate={s: task.validation_loss(candidate, s, data, cfg, batches, device) for s in stages},
        accepted={s: task.validation_loss(accepted, s, data, cfg, batches, device) for s in stages},
    )
