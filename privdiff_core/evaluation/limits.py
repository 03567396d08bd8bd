"""How far each method lies from the limits of its data: the oracle's privacy floor, real data's
diagnosis and the oracle's utility ceiling; and the linkage measurements beside the AUC.

The oracle (`oracle.OracleMethod`, synthetic data only) re-renders each film's findings on a new
patient: an attacker retrained on its films still links what findings, site and demographics
give away, which no anonymizer that keeps the findings can hide (its re-ID AUC is the *floor*),
and the diagnosis judge reads every finding it was given (its AUC is the *ceiling*). A method is
done when it is close to both; `limits` computes the distances, `limits_md` writes the section.
"""

from __future__ import annotations

from .results import Limits, MeanStd, MethodLimits, MethodResult, RealResult, Report, Summary

ORACLE_KIND = "oracle"


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def limits(real: RealResult, methods: dict[str, MethodResult]) -> Limits:
    """The limits and each method's distance to them (fractions of AUC; positive = worse)."""
    oracle = next((name for name, r in methods.items() if r.method.kind == ORACLE_KIND), None)
    floor = ceiling = None
    if oracle is not None:
        floor = methods[oracle].summary.reid_adaptive_auc.mean
        ceiling = methods[oracle].summary.diagnosis_mean_auc.mean
    real_diag = real.summary.diagnosis_mean_auc.mean
    rows = {}
    for name, result in methods.items():
        reid, diag = result.summary.reid_adaptive_auc.mean, result.summary.diagnosis_mean_auc.mean
        rows[name] = MethodLimits(
            reid_adaptive_auc=reid,
            reid_above_floor=_minus(reid, floor),
            diagnosis_auc=diag,
            diagnosis_below_real=_minus(real_diag, diag),
            diagnosis_below_ceiling=_minus(ceiling, diag),
        )
    return Limits(
        oracle=oracle, privacy_floor=floor, utility_ceiling=ceiling, real_diagnosis=real_diag, methods=rows
    )


def _pct(ms: MeanStd) -> str:
    if ms.mean is None:
        return "–"
    text = f"{100 * ms.mean:.1f}"
    return text + (f" ± {100 * ms.std:.1f}" if ms.runs > 1 else "")


def _points(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:+.1f}"


def _p1(summary: Summary, precision: MeanStd) -> str:
    return f"{_pct(precision)} (chance {_pct(summary.retrieval_chance)})"


def limits_md(report: Report) -> list[str]:
    """The 'Distance to the limits' section of report.md."""
    lim, real = report.limits, report.real.summary
    lines = ["## Distance to the limits", ""]
    if lim.oracle is None:
        lines += [
            "No oracle in this report (it needs a synthetic federation and `--methods oracle`): "
            "distances to the privacy floor and the utility ceiling cannot be given.",
            "",
        ]
    else:
        lines += [
            f"Privacy floor (the oracle's retrained re-ID AUC): {100 * lim.privacy_floor:.1f}; utility "
            f"ceiling (the oracle's diagnosis AUC): {100 * lim.utility_ceiling:.1f}; real data's "
            f"diagnosis AUC: {100 * lim.real_diagnosis:.1f}. 'Above floor' and 'below real / ceiling' "
            "are in AUC points: 0 means the method reaches that limit; a negative 'above floor' means "
            "the method hides more than the oracle does (usually by destroying findings).",
            "",
        ]
    header = [
        "Method",
        "Re-ID retrained ↓",
        "above floor",
        "Re-ID, hard negatives (retrained) ↓",
        "Precision@1 (retrained) ↓",
        "Diagnosis ↑",
        "below real",
        "below ceiling",
        "Memorization ↓",
    ]
    rows = [
        [
            "Real data (unanonymized)",
            _pct(real.reid_auc),
            "",
            _pct(real.reid_hard_naive_auc),
            _p1(real, real.retrieval_naive_p1),
            _pct(real.diagnosis_mean_auc),
            "",
            "",
            _pct(real.memorization_rate),
        ]
    ]
    for name, result in report.methods.items():
        s, d = result.summary, lim.methods[name]
        rows.append(
            [
                result.method.label,
                _pct(s.reid_adaptive_auc),
                _points(d.reid_above_floor),
                _pct(s.reid_hard_adaptive_auc),
                _p1(s, s.retrieval_adaptive_p1),
                _pct(s.diagnosis_mean_auc),
                _points(d.diagnosis_below_real),
                _points(d.diagnosis_below_ceiling),
                _pct(s.memorization_rate),
            ]
        )
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows] + [""]
    fpr = report.settings.memorization_fpr
    lines += [
        "Hard negatives: the other patient of each negative pair has the same sex, age group and site "
        "as the anonymized film, so only the person is left to tell them apart. Precision@1: for each "
        "anonymized test film, is the real test film the attacker scores highest (its own original "
        "left out) one of the same patient's? Chance is the share of such films in the gallery.",
        "",
        "Memorization (% of anonymized test films): the real-trained verifier compares each film with "
        "every training film; a film counts when its best same-patient score (read as closeness: the "
        "head's positive weights on |e1 - e2| left out, so a film unlike any real one cannot score "
        "high), or its nearest distance "
        "in the verifier's embedding space (which catches exact copies, a pair the verifier never "
        f"trained on), crosses a threshold that real validation films (patients no model saw, all of "
        "the split's) cross "
        f"against the same training films at {100 * fpr / 2:g}% each ({100 * fpr:g}% at most together). "
        "The real row is that rate for real test films: the level of chance resemblance, which a "
        "method that copies no one stays near.",
        "",
    ]
    return lines
