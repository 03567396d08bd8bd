"""The validation gate: the server signs a candidate model only after the sites have scored it.

After the last round the server sends every site the candidate (`query.validate`: all stage
states as one flat vector, plus the config). Each site scores, on its own val split (images never
trained on), the validation loss of every stage for the candidate and for the last accepted
model, which the site builds itself from the config (the seeded initial model every process
builds alike; a server cannot slip it a weaker baseline). Only losses and the count of images
leave the site.

The server signs when at least `quorum` sites answered and, for every stage, the candidate's
example-weighted mean loss is finite and at most `max_loss_ratio` times the accepted model's.
Otherwise the candidate is written, unsigned, to `OUT/rejected-candidate/` with the verdict in
`validation.json` for inspection, and nothing is distributed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from privdiff.common.protocol import SiteScores
from privdiff.server.settings import ValidationSettings

REJECTED_DIR = "rejected-candidate"
VERDICT_FILE = "validation.json"


@dataclass
class Verdict:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    stages: dict[str, dict[str, float]] = field(default_factory=dict)  # stage -> weighted losses, ratio
    sites: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "reasons": self.reasons, "stages": self.stages, "sites": self.sites}


def verdict(
    scores: list[SiteScores], stages: list[str], settings: ValidationSettings, quorum: int
) -> Verdict:
    """Pass or fail the candidate from the sites' scores (see module doc)."""
    result = Verdict(passed=True, sites=len(scores))
    if len(scores) < quorum:
        result.passed = False
        result.reasons.append(f"{len(scores)} sites scored the candidate, the quorum is {quorum}")
        return result
    total = sum(s.examples for s in scores)
    for stage in stages:
        candidate = sum(s.examples * s.candidate[stage] for s in scores) / total
        accepted = sum(s.examples * s.accepted[stage] for s in scores) / total
        ratio = candidate / accepted if accepted > 0 else math.inf
        result.stages[stage] = {"candidate_loss": candidate, "accepted_loss": accepted, "ratio": ratio}
        if not math.isfinite(candidate) or not ratio <= settings.max_loss_ratio:
            result.passed = False
            result.reasons.append(
                f"{stage}: val loss {candidate:.4g} vs {accepted:.4g} for the accepted model "
                f"(ratio {ratio:.3g} > federation.validation.max_loss_ratio={settings.max_loss_ratio:g})"
            )
    return result
