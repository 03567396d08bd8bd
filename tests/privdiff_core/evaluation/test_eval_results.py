"""Typed evaluation results: report.md and report.json come from dataclasses, a cached result
reads back into the same types, and a wrong field is an error instead of a silent "–"."""

import json
from dataclasses import asdict, replace

import pytest

from privdiff_core.attributes import FINDINGS
from privdiff_core.config import load_config
from privdiff_core.evaluation import results as r
from privdiff_core.evaluation.engine import EvaluationSettings
from privdiff_core.evaluation.limits import limits
from privdiff_core.evaluation.report import render_markdown, write_report


def auc(value: float) -> dict:
    return {
        "auc": value,
        "ci_low": value - 0.05,
        "ci_high": value + 0.05,
        "ci_level": 0.95,
        "n": 400,
        "bootstrap": "patients",
    }


def diagnosis(mean: float) -> r.Diagnosis:
    per = {name: None for name in FINDINGS} | {"Effusion": mean - 0.01, "Cardiomegaly": mean + 0.01}
    skipped = {name: "only negative cases in the test set" for name, v in per.items() if v is None}
    return r.Diagnosis(mean_auc=mean, per_finding=per, skipped=skipped, n_findings=2)


def demographics(age: float, sex: float) -> r.Demographics:
    return r.Demographics(
        age=r.Accuracy(
            accuracy=age, chance=0.4, n=40, chance_class=2, balanced_accuracy=age - 0.1, balanced_chance=0.25
        ),
        sex=r.Accuracy(
            accuracy=sex, chance=0.5, n=40, chance_class=0, balanced_accuracy=sex, balanced_chance=0.5
        ),
    )


LOG = r.TrainingLog(best_step=50, best_val=0.7, steps_run=100, final_loss=0.4)
MEMORIZATION = r.Memorization(
    rate=0.05, threshold={"score": 0.9, "distance": 0.1}, films=40, max_score=0.95, min_distance=0.2
)


def real_result() -> r.RealResult:
    run = r.RealRun(
        run=0,
        reid=r.AucCI(**auc(0.83)),
        diagnosis=diagnosis(0.91),
        demographics=demographics(0.8, 0.9),
        judge_training={"verifier": LOG, "diagnosis": LOG, "demographics": LOG},
        reid_hard_naive=r.AucCI(**auc(0.75)),
        retrieval_naive=r.Retrieval(precision_at_1=0.6, chance=0.05, queries=40),
        memorization=MEMORIZATION,
    )
    return r.RealResult(runs=[run], summary=r.summarize_real([run]))


def method_result(name: str, kind: str, reid: float, diag: float) -> r.MethodResult:
    run = r.MethodRun(
        run=0,
        reid_naive=r.NaiveReid(**auc(reid - 0.02), val_auc=reid - 0.03),
        reid_adaptive=r.AdaptiveReid(**auc(reid), training=LOG),
        reid_strongest=r.StrongestReid(**auc(reid), attacker="adaptive"),
        diagnosis=diagnosis(diag),
        demographics_naive=demographics(0.45, 0.55),
        demographics_adaptive=r.AdaptiveDemographics(
            **vars(demographics(0.5, 0.6)), training=LOG, fixed_answers={"age": 1}
        ),
        reid_hard_naive=None,  # no matched negatives in this test set
        retrieval_naive=r.Retrieval(precision_at_1=0.1, chance=0.05, queries=40),
        memorization=MEMORIZATION,
        reid_hard_adaptive=r.AucCI(**auc(reid - 0.05)),
        retrieval_adaptive=r.Retrieval(precision_at_1=0.12, chance=0.05, queries=40),
    )
    return r.MethodResult(
        method=r.MethodInfo(
            name=name,
            label=f"{name} label",
            kind=kind,
            settings={"strength": 0.6},
            curve=f"{name}/img2img",
            # a trained model states its DP budget (manifest metadata); the oracle has none
            privacy=r.PrivacyBudget(dp=True, epsilon=7.0812, delta=1e-5, budget_spent=True)
            if kind == "model"
            else None,
        ),
        runs=[run],
        summary=r.summarize_method([run]),
        quality=r.Quality(
            ssim_mean=0.71, ssim_std=0.05, fd_name="FD-small", fd=3.2, fd_real_reference=1.1, fd_samples=40
        ),
        timing=r.MethodTiming(
            prepare_s=1.0, anonymize_s=2.0, anonymized_images=90, attacks_s=3.0, quality_s=0.5, total_s=7.0
        ),
        adaptive_train=r.CohortSize(images=60, patients=20),
    )


def typed_report() -> r.Report:
    real = real_result()
    methods = {
        "privdiff": method_result("privdiff", "model", 0.52, 0.85),
        "oracle": method_result("oracle", "oracle", 0.5, 0.88),
    }
    return r.Report(
        created="2026-12-03T09:00:00+00:00",
        command="privdiff evaluate (test)",
        data={
            "root": "toy",
            "image_size": 32,
            "fingerprint": "abc",
            "splits": {"test": {"images": 40, "patients": 12}},
        },
        settings=EvaluationSettings.from_config(load_config("tiny"), progress=False),
        seeds={"base": 0, "runs": [7]},
        anonymizer_conditions="sensitive",
        adaptive_train=r.CohortSize(images=60, patients=20),
        judges_from_cache=[False],
        real=real,
        methods=methods,
        limits=limits(real, methods),
        config={},
        versions={"torch": "2.13.0"},
        timing={"judges_s": 10.0, "total_s": 30.0},
        notes=["a note"],
    )


def test_report_markdown_is_rendered_from_typed_results():
    report = typed_report()
    md = render_markdown(report)
    assert "AUC 0.83" in md  # the real re-ID AUC in the plain-language summary
    assert "| Identification ↓ (attacker retrained on anonymized) | 83.0 | 52.0 | 50.0 |" in md
    assert "| Effusion | 90.0 | 84.0 | 87.0 |" in md  # per-finding AUC, only findings with an AUC
    assert "Atelectasis" not in md.split("## Diagnosis AUC per finding")[1].split("Left out")[0]
    assert "Privacy floor (the oracle's retrained re-ID AUC): 50.0" in md
    # The stronger age attacker (retrained, 50%; balanced 40%) is reported, not the naive one (45%; 35%).
    assert "Age group 50% (balanced 40%) and sex 60% correct (chance 40% (balanced 25%) / 50%)" in md
    assert (
        "- Privacy budget of privdiff label: DP epsilon 7.08 at delta 1e-05; training stopped at the budget."
        in md
    )
    assert "Privacy budget of oracle" not in md
    assert report.limits.methods["privdiff"].reid_above_floor == pytest.approx(0.02)


def test_report_json_keeps_the_keys_benchmarks_and_tests_read(tmp_path):
    json_path, md_path = write_report(tmp_path, typed_report())
    data = json.loads(json_path.read_text())
    summary = data["methods"]["privdiff"]["summary"]
    assert summary["reid_adaptive_auc"]["mean"] == pytest.approx(0.52)
    assert summary["retrieval_adaptive_p1"]["runs"] == 1
    assert summary["per_finding_auc"]["Effusion"]["mean"] == pytest.approx(0.84)
    assert data["real"]["summary"]["reid_auc"]["mean"] == pytest.approx(0.83)
    assert data["real"]["runs"][0]["reid"]["ci_low"] == pytest.approx(0.78)
    assert data["methods"]["privdiff"]["runs"][0]["reid_hard_naive"] is None
    assert data["limits"]["privacy_floor"] == pytest.approx(0.5)
    assert data["settings"]["verifier"]["backbone"] == "small"
    assert data["methods"]["oracle"]["method"]["kind"] == "oracle"
    assert md_path.read_text().startswith("# privdiff evaluation report")


def test_a_cached_result_reads_back_into_the_same_types():
    result = method_result("privdiff", "model", 0.52, 0.85)
    stored = json.loads(json.dumps(asdict(result)))
    again = r.from_dict(r.MethodResult, stored)
    assert again == result
    assert isinstance(again.runs[0].reid_adaptive.training, r.TrainingLog)
    assert again.runs[0].reid_hard_naive is None
    assert again.method.privacy == r.PrivacyBudget(dp=True, epsilon=7.0812, delta=1e-5, budget_spent=True)
    assert again.summary.per_finding_auc["Effusion"].mean == pytest.approx(0.84)


def test_wrong_fields_are_errors_not_dashes():
    result = method_result("privdiff", "model", 0.52, 0.85)
    stored = asdict(result)
    stored["summary"]["reid_adaptive_auc_renamed"] = stored["summary"].pop("reid_adaptive_auc")
    with pytest.raises(TypeError, match="reid_adaptive_auc_renamed"):
        r.from_dict(r.MethodResult, stored)
    with pytest.raises(AttributeError):
        _ = result.summary.reid_adaptive  # a misspelled field
    with pytest.raises(TypeError):
        replace(result.runs[0], reid_adaptive_auc=0.5)
