"""report.json (every number, the config, seeds, versions) and report.md (tables shaped like the
paper's Tables 1-3, the paper's own numbers beside ours, a plain-language summary).

The paper's numbers come from ChestX-ray14 / CheXpert at 256 px with ResNet-50 / DenseNet-121;
ours usually from a synthetic federation with small CNNs. They are printed side by side for
orientation only, and every such table says so.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from privdiff_core.attributes import FINDINGS

from .limits import limits_md
from .results import AucCI, MeanStd, MethodResult, MethodSummary, Report

NOT_COMPARABLE = (
    "from the paper, ChestX-ray14/CheXpert, not comparable one to one: different data, image size, "
    "networks and attacker protocol"
)

# The paper's Table 1 (ChestX-ray14): identification AUC and classification AUC, % (mean ± std, 10 runs).
PAPER_TABLE1 = {
    "Real Data Unanonymized": ((81.8, 0.6), (80.5, 0.4)),
    "Privacy-Net (Kim et al. 2021)": ((49.8, 2.2), (57.5, 1.3)),
    "DP-Pix (b=8) (Fan 2018, 2019)": ((52.5, 3.2), (52.9, 0.6)),
    "PriCheXy-Net (mu=0.01)": ((57.7, 4.0), (76.2, 0.4)),
    "PrivDiff-Net": ((47.5, 0.8), (78.0, 1.0)),
}
# Table 2 (ChestX-ray14 ablation): identification %, classification %.
PAPER_TABLE2 = {
    "Vanilla Diffusion": (75.2, 72.1),
    "Diffusion + SAS": (61.3, 74.0),
    "Diffusion + SPG": (56.6, 76.8),
    "Diffusion + SAS + SPG": (47.5, 78.0),
}
# Table 3 (CheXpert): attribute classification accuracy %, real vs PrivDiff-Net.
PAPER_TABLE3 = {"Age Classification": (77.5, 43.2), "Gender Classification": (81.91, 50.11)}
# Image generation (text): FID and SSIM of PrivDiff-Net.
PAPER_QUALITY = {"ChestX-ray14": {"FID": 1.37, "SSIM": 0.85}, "CheXpert": {"FID": 3.28, "SSIM": 0.76}}

# Which of our methods corresponds to which column / row of the paper.
PAPER_COUNTERPART = {
    "dp_pix": "DP-Pix (b=8) (Fan 2018, 2019)",
    "deformation": "PriCheXy-Net (mu=0.01)",
    "privdiff": "PrivDiff-Net",
    "vanilla": "Vanilla Diffusion",
    "sas": "Diffusion + SAS",
    "spg": "Diffusion + SPG",
}
ABLATION_ROWS = {"vanilla": "Vanilla Diffusion", "sas": "Diffusion + SAS", "spg": "Diffusion + SPG"}
ABLATION_ROWS["privdiff"] = "Diffusion + SAS + SPG"

TRACKED_PACKAGES = (
    "privdiff",
    "torch",
    "numpy",
    "scipy",
    "scikit-learn",
    "scikit-image",
    "diffusers",
    "monai",
    "matplotlib",
    "omegaconf",
)


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


# ------------------------------------------------------------------ formatting


def _pct(ms: MeanStd, digits: int = 1) -> str:
    """'81.8 ± 0.6' from a mean ± std of fractions; '–' when missing; no ± for a single run."""
    if ms.mean is None:
        return "–"
    mean = 100 * ms.mean
    if ms.runs > 1:
        return f"{mean:.{digits}f} ± {100 * ms.std:.{digits}f}"
    return f"{mean:.{digits}f}"


def _ci(run: AucCI) -> str:
    return f"{100 * run.auc:.1f} [{100 * run.ci_low:.1f}, {100 * run.ci_high:.1f}]"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines + [""]


def _verdict_reid(auc: float, low: float, high: float) -> str:
    if low <= 0.5 <= high:
        return "no better than a coin toss (the confidence interval includes 0.5)"
    if auc < 0.5:
        return (
            "below 0.5: the scores are inverted, which an attacker who notices would simply flip "
            f"(equivalent to AUC {1 - auc:.2f}); this is not extra privacy"
        )
    if auc < 0.6:
        return "close to a coin toss, but measurably better than chance"
    if auc < 0.8:
        return "still able to link a clear share of images to their patient"
    return "still able to link most images to their patient: little identity protection"


# ------------------------------------------------------------------ markdown


def _methods(report: Report) -> list[tuple[str, MethodResult]]:
    return list(report.methods.items())


def _label(result: MethodResult) -> str:
    return result.method.label


def _summary_md(report: Report) -> list[str]:
    real = report.real.summary
    real_run = report.real.runs[0].reid
    runs = report.settings.runs
    ci_note = "95% CI" if runs == 1 else "95% CI of the first run"

    def pc(value: float | None) -> str:
        return "–" if value is None else f"{100 * value:.0f}%"

    real_diag = real.diagnosis_mean_auc.mean
    lines = ["## Summary in plain language", ""]
    lines.append(
        "An attacker who holds another chest X-ray of a person (for example from an earlier visit) "
        "tries to tell whether a released image shows the same person. We measure this with the ROC "
        "AUC: 1.0 = always right, 0.5 = a coin toss."
    )
    lines.append("")
    lines.append(
        f"- **Before anonymization**: the attacker reaches AUC {real.reid_auc.mean:.2f} "
        f"({ci_note} {real_run.ci_low:.2f}–{real_run.ci_high:.2f}). "
        f"Age group is guessed right {pc(real.age_accuracy.mean)} of the time (always guessing the "
        f"training films' most common group: {pc(real.age_chance.mean)}; balanced over the groups "
        f"{pc(real.age_balanced_accuracy.mean)}, chance {pc(real.age_balanced_chance.mean)}), "
        f"sex {pc(real.sex_accuracy.mean)} "
        f"(chance {pc(real.sex_chance.mean)}). A diagnosis network reaches a mean AUC of "
        f"{real_diag:.2f} over the findings."
    )
    for _, res in _methods(report):
        s = res.summary
        r0 = res.runs[0].reid_adaptive
        diag = s.diagnosis_mean_auc.mean
        diag_text = "–" if diag is None else f"{diag:.2f}"
        lines.append(
            f"- **{_label(res)}**: an attacker retrained on anonymized images reaches AUC "
            f"{s.reid_adaptive_auc.mean:.2f} ({ci_note} {r0.ci_low:.2f}–{r0.ci_high:.2f}): "
            f"{_verdict_reid(r0.auc, r0.ci_low, r0.ci_high)}. Strongest attacker (chosen on "
            f"validation patients): AUC {s.reid_strongest_auc.mean:.2f}. Age group "
            f"{pc(s.best_accuracy('age').mean)} (balanced {pc(s.best_accuracy('age', balanced=True).mean)}) "
            f"and sex {pc(s.best_accuracy('sex').mean)} correct (chance {pc(s.age_chance.mean)} "
            f"(balanced {pc(s.age_balanced_chance.mean)}) / {pc(s.sex_chance.mean)}). Diagnosis AUC on "
            f"anonymized images: {diag_text} (real: {real_diag:.2f})."
        )
    lines += [
        "",
        "Attackers were trained on the training patients and tested on other patients. Age and sex "
        "accuracies are the better of the attacker trained on real images and the one retrained on "
        "anonymized images. Balanced accuracy (the mean of the per-group recalls) is what says "
        "whether age is read: an attacker that answers mostly one group scores that group's share "
        "of the test films in plain accuracy, and 1 / groups balanced.",
        "",
    ]
    return lines


def _table1_md(report: Report) -> list[str]:
    real = report.real.summary
    methods = _methods(report)
    header = ["Task", "Real data (unanonymized)"] + [_label(r) for _, r in methods]
    rows = [
        ["Identification ↓ (attacker retrained on anonymized)", _pct(real.reid_auc)]
        + [_pct(r.summary.reid_adaptive_auc) for _, r in methods],
        ["Identification (naive attacker, trained on real)", _pct(real.reid_auc)]
        + [_pct(r.summary.reid_naive_auc) for _, r in methods],
        ["Identification (strongest attacker, chosen on validation)", _pct(real.reid_auc)]
        + [_pct(r.summary.reid_strongest_auc) for _, r in methods],
        ["Classification ↑ (mean AUC over findings)", _pct(real.diagnosis_mean_auc)]
        + [_pct(r.summary.diagnosis_mean_auc) for _, r in methods],
    ]
    lines = ["## Table 1: privacy and utility (ours)", ""]
    lines += [
        f"AUC in %, mean ± std over {report.settings.runs} independent run(s) (attackers retrained, "
        "pairs redrawn). Chance is 50.0 for every row.",
        "",
    ]
    lines += _table(header, rows)
    lines += ["Re-identification AUC of run 0 with its 95% bootstrap confidence interval:", ""]
    rows = [["Real data (unanonymized)", _ci(report.real.runs[0].reid), "–"]]
    rows += [[_label(r), _ci(r.runs[0].reid_adaptive), _ci(r.runs[0].reid_naive)] for _, r in methods]
    lines += _table(["Method", "retrained attacker", "naive attacker"], rows)
    lines += [f"### Table 1 {NOT_COMPARABLE}", ""]
    header = ["Task"] + list(PAPER_TABLE1)
    rows = [
        ["Identification ↓"] + [f"{v[0][0]} ± {v[0][1]}" for v in PAPER_TABLE1.values()],
        ["Classification ↑"] + [f"{v[1][0]} ± {v[1][1]}" for v in PAPER_TABLE1.values()],
    ]
    lines += _table(header, rows)
    lines += [
        "The paper does not say whether its identification attacker was retrained on anonymized "
        "images; PriCheXy-Net's protocol reports both. The paper's 47.5 is below chance: a score "
        "below 0.5 means inverted, not absent, identity signal.",
        "",
    ]
    return lines


def _table2_md(report: Report) -> list[str]:
    rows_src = [(name, r) for name, r in _methods(report) if name in ABLATION_ROWS]
    if not rows_src:
        return []
    # Ordered as our numbers fall (most identifiable first), whatever the paper's order was.
    rows_src.sort(key=lambda item: -(item[1].summary.reid_adaptive_auc.mean or 0))
    lines = ["## Table 2: ablation (ours)", "", "Rows sorted by our identification AUC, highest first.", ""]
    rows = [
        [
            f"{ABLATION_ROWS[name]} ({_label(r)})",
            _pct(r.summary.reid_adaptive_auc),
            _pct(r.summary.reid_naive_auc),
            _pct(r.summary.diagnosis_mean_auc),
            _pct(r.summary.best_accuracy("age")),
            _pct(r.summary.best_accuracy("sex")),
        ]
        for name, r in rows_src
    ]
    lines += _table(
        [
            "Model",
            "Identification ↓ (retrained)",
            "Identification (naive)",
            "Classification ↑",
            "Age acc. ↓",
            "Sex acc. ↓",
        ],
        rows,
    )
    lines += [f"### Table 2 {NOT_COMPARABLE}", ""]
    lines += _table(
        ["Model", "Identification ↓", "Classification ↑"],
        [[k, f"{v[0]}", f"{v[1]}"] for k, v in PAPER_TABLE2.items()],
    )
    return lines


def _table3_md(report: Report) -> list[str]:
    real = report.real.summary
    lines = ["## Table 3: age-group and sex attackers (ours)", ""]
    lines += [
        "Accuracy in %. 'trained on real' = attacker trained on real images applied to anonymized "
        "ones; 'retrained' = attacker trained on anonymized images of the training patients; where "
        "always answering the training images' most common class is right more often on anonymized "
        "validation images, it answers that (an attacker that reads nothing scores chance, not "
        "below). Chance = always answering the most common class of the attacker's training images, "
        "scored on the test images. Balanced = the mean of the per-group recalls: any answer blind to "
        "the true group scores 1 / groups (25% for the four age groups), whichever groups the test "
        "images over-represent.",
        "",
    ]
    header = [
        "Images",
        "Age group: trained on real",
        "Age group: retrained",
        "Age group balanced: trained on real",
        "Age group balanced: retrained",
        "Sex: trained on real",
        "Sex: retrained",
    ]
    rows = [
        [
            "Real data (unanonymized)",
            _pct(real.age_accuracy),
            "–",
            _pct(real.age_balanced_accuracy),
            "–",
            _pct(real.sex_accuracy),
            "–",
        ],
        [
            "Chance (training images' most common class; balanced: 1 / groups)",
            _pct(real.age_chance),
            "",
            _pct(real.age_balanced_chance),
            "",
            _pct(real.sex_chance),
            "",
        ],
    ]
    for _, r in _methods(report):
        s: MethodSummary = r.summary
        rows.append(
            [
                _label(r),
                _pct(s.age_accuracy),
                _pct(s.age_accuracy_adaptive),
                _pct(s.age_balanced_accuracy),
                _pct(s.age_balanced_accuracy_adaptive),
                _pct(s.sex_accuracy),
                _pct(s.sex_accuracy_adaptive),
            ]
        )
    lines += _table(header, rows)
    lines += [f"### Table 3 {NOT_COMPARABLE} (CheXpert, PrivDiff-Net)", ""]
    lines += _table(
        ["Attribute", "Real Data (%)", "PrivDiff-Net (%)"],
        [[k, f"{v[0]}", f"{v[1]}"] for k, v in PAPER_TABLE3.items()],
    )
    return lines


def _quality_md(report: Report) -> list[str]:
    methods = _methods(report)
    if not methods:
        return []
    fd_name = methods[0][1].quality.fd_name
    lines = ["## Image quality", ""]
    lines += [
        f"SSIM of each test image against its anonymized version (mean ± std over images). {fd_name}: "
        f"Fréchet distance between real and anonymized test images in the feature space of our "
        f"diagnosis network (the FID formula, but not Inception features, so not FID and not on FID's "
        f"scale). The real-vs-real floor is the same distance between two disjoint sets of real images. "
        f"Fine detail: the anonymized images' mean absolute Laplacian (high-frequency energy: ribs, "
        f"vessel markings, edges) as a share of the real test images' (100%: as sharp as real films; "
        f"far above it: pixel noise); blur lowers it where SSIM against a new film and the Fréchet "
        f"distance barely move.",
        "",
    ]
    rows = [
        [
            _label(r),
            f"{r.quality.ssim_mean:.3f} ± {r.quality.ssim_std:.3f}",
            f"{r.quality.fd:.3g}",
            f"{r.quality.fd_real_reference:.3g}",
            "-" if r.quality.detail is None else f"{r.quality.detail:.0%}",
        ]
        for _, r in methods
    ]
    header = ["Method", "SSIM ↑", f"{fd_name} ↓", f"{fd_name} real-vs-real floor", "Fine detail"]
    lines += _table(header, rows)
    lines += [
        f"PrivDiff-Net's image quality {NOT_COMPARABLE}: "
        + "; ".join(f"{k}: FID {v['FID']}, SSIM {v['SSIM']}" for k, v in PAPER_QUALITY.items()),
        "",
    ]
    return lines


def _findings_md(report: Report) -> list[str]:
    real = report.real.summary
    methods = _methods(report)
    lines = ["## Diagnosis AUC per finding", ""]
    header = ["Finding", "Real data"] + [_label(r) for _, r in methods]
    rows = []
    for name in FINDINGS:
        if real.per_finding_auc[name].mean is None:
            continue
        rows.append(
            [name, _pct(real.per_finding_auc[name])]
            + [_pct(r.summary.per_finding_auc[name]) for _, r in methods]
        )
    lines += _table(header, rows)
    skipped = real.skipped_findings
    if skipped:
        lines += [
            "Left out of every mean (no AUC exists): "
            + "; ".join(f"{k}: {v}" for k, v in skipped.items())
            + ".",
            "",
        ]
    return lines


def _privacy_budget_md(report: Report) -> list[str]:
    """One line per evaluated model: the DP budget its training stated (manifest metadata)."""
    lines = []
    for _, result in _methods(report):
        budget = result.method.privacy
        if budget is None:  # not a trained model (or a result cached before budgets were read)
            continue
        if budget.dp:
            spent = "; training stopped at the budget" if budget.budget_spent else ""
            text = f"DP epsilon {budget.epsilon:.3g} at delta {budget.delta:g}{spent}"
        elif budget.dp is False:
            text = "trained without differential privacy (no epsilon)"
        else:
            text = "no differential-privacy budget stated by the model"
        lines.append(f"- Privacy budget of {_label(result)}: {text}.")
    return lines


def _setup_md(report: Report) -> list[str]:
    s = report.settings
    data = report.data
    lines = ["## Set-up", ""]
    lines.append(f"- Data: `{data['root']}` ({data['image_size']} px), fingerprint `{data['fingerprint']}`.")
    for split, info in data["splits"].items():
        lines.append(f"  - {split}: {info['images']} images of {info['patients']} patients")
    lines.append("  - No patient is in two splits (checked).")
    v, c = s.verifier, s.classifier
    start = "the real-trained attackers" if s.adaptive_init == "real" else "scratch"
    lines += [
        f"- Runs: {s.runs}; test pairs per run: {s.test_pairs} (balanced, i != j); validation pairs: "
        f"{s.val_pairs}; bootstrap resamples: {s.bootstrap} ({int(100 * s.ci_level)}% CI).",
        f"- Verifier: Siamese {v.backbone} (embed {v.embed_dim}, widths {v.widths}), "
        f"{v.steps} steps of {v.batch_size} pairs; classifiers: {c.backbone}, {c.steps} steps.",
        f"- Adaptive attackers: start from {start}, "
        f"{s.adaptive_verifier_steps} verifier / {s.adaptive_classifier_steps} classifier steps on "
        f"anonymized images of {report.adaptive_train.images} training images "
        f"({report.adaptive_train.patients} patients); checkpoints chosen on anonymized validation "
        "images.",
        f"- Anonymizer conditions: {report.anonymizer_conditions}.",
        *_privacy_budget_md(report),
        f"- Seed {s.seed}; wall time {report.timing['total_s']:.0f} s "
        f"(judges {report.timing['judges_s']:.0f} s"
        + ("".join(f", {k} {m.timing.total_s:.0f} s" for k, m in report.methods.items()))
        + ").",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in report.versions.items() if v) + ".",
        "",
    ]
    return lines


def render_markdown(report: Report) -> str:
    lines = [
        "# privdiff evaluation report",
        "",
        f"Created {report.created} by `{report.command}`.",
        "",
    ]
    lines += _summary_md(report)
    lines += limits_md(report)
    lines += _table1_md(report)
    lines += _table2_md(report)
    lines += _table3_md(report)
    lines += _quality_md(report)
    lines += _findings_md(report)
    if report.figures:
        lines += ["## Figures", ""]
        lines += [f"- {title}: ![{title}]({name})" for title, name in report.figures.items()]
        lines.append("")
    if report.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    lines += _setup_md(report)
    return "\n".join(lines)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_report(out_dir: Path, report: Report) -> tuple[Path, Path]:
    """report.json then report.md, each written to a temporary name and renamed (never half-written)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "report.json", out_dir / "report.md"
    markdown = render_markdown(report)  # render first: a formatting error leaves the old report intact
    _atomic_write(json_path, json.dumps(asdict(report), indent=2, default=_jsonable))
    _atomic_write(md_path, markdown)
    return json_path, md_path


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
