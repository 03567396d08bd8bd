"""The validation gate: the server signs a candidate model only after the sites have scored it.

After the last round the server sends every site the candidate (`query.validate`: all stage
states as one flat vector, plus the config). Each site scores, on its own val split (images never
trained on), the validation loss of every stage for the candidate and for the last accepted
model, which the site builds itself from the config (the seeded initial model every process
builds alike; a server cannot slip it a weaker baseline). Only losses and the count of images
leave the site.

Each site also runs the quick privacy/utility check (privdiff_core/evaluation/quick_check.py) on
`images` val films with its own judges (client/site_verifier.py): the re-ID AUC and the diagnosis
agreement of output vs input, for the candidate and for the model the site has installed (the
last one the federation accepted), if any.

The server signs when at least `quorum` sites answered and, for every stage, the candidate's
example-weighted mean loss is finite and at most `max_loss_ratio` times the accepted model's;
and the candidate's re-ID AUC and diagnosis agreement, averaged over the sites weighted by the
films each checked, are no worse than the installed model's by more than `max_reid_auc_increase`
/ `max_agreement_drop` (when every measuring site has one installed), or else within the
absolute `max_reid_auc` / `min_diagnosis_agreement` (the first model of a federation).
Otherwise the candidate is written, unsigned, to `OUT/rejected-candidate/` with the verdict in
`validation.json` for inspection, and nothing is distributed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from privdiff.common.protocol import PRIVACY_METRICS, SiteScores
from privdiff.server.settings import ValidationSettings

REJECTED_DIR = "rejected-candidate"
VERDICT_FILE = "validation.json"


@dataclass
class Verdict:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    stages: dict[str, dict[str, float]] = field(default_factory=dict)  # stage -> weighted losses, ratio
    sites: int = 0
    privacy: dict[str, Any] = field(default_factory=dict)  # the quick check, aggregated

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "reasons": self.reasons,
            "stages": self.stages,
            "sites": self.sites,
            "privacy": self.privacy,
        }


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
    if settings.images > 0:
        _privacy_verdict(scores, settings, result)
    return result


def _mean(scores: list[SiteScores], model: str, name: str, cap: int) -> float | None:
    """Films-weighted mean of one privacy metric over the sites that measured it; a site's weight
    is capped at the films it was asked to check (a site cannot outweigh the others by claiming)."""
    values = [(min(s.checked, cap), getattr(s, f"{model}_privacy").get(name, math.nan)) for s in scores]
    measured = [(w, v) for w, v in values if w > 0 and math.isfinite(v)]
    total = sum(w for w, _ in measured)
    return sum(w * v for w, v in measured) / total if total else None


def _privacy_verdict(scores: list[SiteScores], settings: ValidationSettings, result: Verdict) -> None:
    measured = [s for s in scores if s.checked > 0 and "reid_auc" in s.candidate_privacy]
    if not measured:
        result.passed = False
        result.reasons.append(
            "no site measured the candidate's re-ID AUC (federation.validation.images="
            f"{settings.images}; each site needs val films of two patients and its own verifier)"
        )
        return
    relative = all("reid_auc" in s.accepted_privacy for s in measured)
    cap = settings.images
    candidate = {n: _mean(measured, "candidate", n, cap) for n in PRIVACY_METRICS}
    accepted = {n: _mean(measured, "accepted", n, cap) for n in PRIVACY_METRICS} if relative else None
    result.privacy = {
        "images": sum(min(s.checked, cap) for s in measured),
        "sites": len(measured),
        "mode": "relative to the installed model" if relative else "absolute (no accepted model installed)",
        "candidate": candidate,
        "accepted": accepted,
    }
    auc = candidate["reid_auc"]
    assert auc is not None  # every measured site has one
    if accepted is not None and accepted["reid_auc"] is not None:
        limit = accepted["reid_auc"] + settings.max_reid_auc_increase
        rule = f"the installed model's {accepted['reid_auc']:.3g} + max_reid_auc_increase"
    else:
        limit, rule = settings.max_reid_auc, "max_reid_auc"
    if not auc <= limit:
        result.passed = False
        result.reasons.append(
            f"re-ID AUC of output vs input {auc:.3g} > {limit:.3g} ({rule}): "
            "outputs still point at their inputs"
        )
    agreement = candidate["diagnosis_agreement"]
    if agreement is None:
        return  # no site's films carry finding labels: nothing to compare (recorded as None)
    if accepted is not None and accepted["diagnosis_agreement"] is not None:
        floor = accepted["diagnosis_agreement"] - settings.max_agreement_drop
        rule = f"the installed model's {accepted['diagnosis_agreement']:.3g} - max_agreement_drop"
    else:
        floor, rule = settings.min_diagnosis_agreement, "min_diagnosis_agreement"
    if not agreement >= floor:
        result.passed = False
        result.reasons.append(
            f"diagnosis agreement of output vs input {agreement:.3g} < {floor:.3g} ({rule}): "
            "outputs lose the findings"
        )
