"""The messages privdiff's ServerApp and ClientApp exchange, besides Flower's own.

- `query.describe` (before round 1): the server sends the resolved config; each site answers
  with its number of training examples and the layout fingerprint of every stage, so a site
  whose data or code does not match fails before any training, and the server can size
  SecAgg+'s weight quantization (max_weight) from the data.
- `train` (every round, legacy FitIns/FitRes layout, SecAgg+ stages around it): the flat global
  stage state plus the `FitConfig` below; the reply carries the site's clipped update
  (local - global) and `TrainMetrics`.
- `query.validate` (after the last round): the candidate model (every stage, one flat vector);
  each site answers with `SiteScores`: its val losses for the candidate and the accepted model,
  and the quick privacy/utility check (re-ID AUC, diagnosis agreement) of both on a few val films;
- `query.install_anonymizer` (after the validation gate passed): the signed anonymizer folder; each site
  verifies and installs it and answers with an acknowledgement (common/distribution.py).

Only the update, its weight (number of examples) and the metrics named here leave a site.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from typing import Any

DESCRIBE = "query.describe"
INSTALL_ANONYMIZER = "query.install_anonymizer"
VALIDATE = "query.validate"  # the candidate, scored on each site's val split (server/validation.py)

CONFIG_RECORD = "privdiff"  # ConfigRecord name used by the query messages


@dataclass(frozen=True)
class FitConfig:
    """What the server tells every site in each round (FitIns.config, hyphenated keys)."""

    stage: str
    round: int  # global round, 1-based over all stages
    stage_round: int  # 1-based within the stage
    local_steps: int
    layout: str  # StateLayout fingerprint the site must reproduce
    clipping_range: float  # clip each update value to +-this; 0 = no clipping (plain FedAvg)
    seed: int
    config_yaml: str  # the resolved privdiff config: model, training hyper-parameters
    secagg_vector: str = ""  # SecAgg+ masked-vector path (server/secagg.py); "" without SecAgg+

    def to_record(self) -> dict[str, str | int | float]:
        return {key.replace("_", "-"): value for key, value in asdict(self).items()}

    @classmethod
    def from_record(cls, record: dict) -> FitConfig:
        values, missing = {}, []
        for name, spec in cls.__dataclass_fields__.items():
            key = name.replace("_", "-")
            if key in record:
                values[name] = record[key]
            elif spec.default is dataclasses.MISSING:
                missing.append(key)
        if missing:
            raise ValueError(f"train message lacks {', '.join(missing)}: is the server a privdiff ServerApp?")
        return cls(**values)


# FitIns.config key set per site: its registered weight (examples declared at enrolment, capped).
# A site weights its update by it, never by what it counts in the round, so the server knows
# every weight in the (masked) sum in advance and can check it.
SITE_WEIGHT = "site-weight"

# Metric names a site reports with its update (FitRes.metrics).
METRIC_LOSS = "loss"
METRIC_EXAMPLES = "examples"
METRIC_CLIPPED = "clipped-values"
METRIC_RANGE_EXP = "update-range-exp"


# The quick privacy/utility check's numbers in a site's scores (client/validation.py); a number
# absent from the dicts (NaN in the record) was not measured (no accepted model installed at
# the site, no finding labels, one patient only).
PRIVACY_METRICS = ("reid_auc", "diagnosis_agreement")


@dataclass(frozen=True)
class SiteScores:
    """One site's answer: per stage, the candidate's and the accepted model's val loss; and the
    quick privacy/utility check of both on `checked` val films (`PRIVACY_METRICS`)."""

    node_id: int
    examples: int
    candidate: dict[str, float]
    accepted: dict[str, float]
    checked: int = 0
    candidate_privacy: dict[str, float] = dataclasses.field(default_factory=dict)
    accepted_privacy: dict[str, float] = dataclasses.field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"examples": self.examples, "checked": self.checked}
        for stage, loss in self.candidate.items():
            record[f"candidate-{stage}"] = loss
            record[f"accepted-{stage}"] = self.accepted[stage]
        for name in PRIVACY_METRICS:
            record[f"candidate-{name}"] = float(self.candidate_privacy.get(name, math.nan))
            record[f"accepted-{name}"] = float(self.accepted_privacy.get(name, math.nan))
        return record

    @classmethod
    def from_record(cls, node_id: int, record: dict[str, Any], stages: list[str]) -> SiteScores:
        return cls(
            node_id=node_id,
            examples=int(record["examples"]),
            candidate={s: float(record[f"candidate-{s}"]) for s in stages},
            accepted={s: float(record[f"accepted-{s}"]) for s in stages},
            checked=int(record.get("checked", 0)),
            candidate_privacy=_measured(record, "candidate"),
            accepted_privacy=_measured(record, "accepted"),
        )


def _measured(record: dict[str, Any], model: str) -> dict[str, float]:
    values = {name: float(record.get(f"{model}-{name}", math.nan)) for name in PRIVACY_METRICS}
    return {name: value for name, value in values.items() if not math.isnan(value)}
