import json

import pytest
from eval_toydata import toy_splits

from privdiff_core.config import load_config
from privdiff_core.evaluation.methods import IdentityMethod, NoiseMethod, builtin_method
from privdiff_core.evaluation.pipeline import EvaluationError, run_evaluation
from privdiff_core.evaluation.quality import UnsupportedMetricError

FAST = [
    "evaluate.verifier.steps=40",
    "evaluate.classifier.steps=30",
    "evaluate.adaptive.verifier_steps=20",
    "evaluate.adaptive.classifier_steps=10",
    "evaluate.bootstrap=50",
    "evaluate.pairs.test=200",
    "evaluate.pairs.val=100",
]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    cfg = load_config("tiny", FAST)
    out = tmp_path_factory.mktemp("report")
    methods = [IdentityMethod(), NoiseMethod(), builtin_method("dp_pix", cfg)]
    splits = toy_splits()
    report = run_evaluation(cfg, splits, methods, out, "privdiff evaluate (test)", "toy", progress=False)
    return cfg, splits, out, report


def test_report_files_hold_every_method(finished):
    _, _, out, report = finished
    data = json.loads((out / "report.json").read_text())
    assert set(data["methods"]) == {"identity", "noise", "dp_pix"}
    assert data["real"]["summary"]["reid_auc"]["mean"] > 0.5
    assert data["versions"]["torch"] and data["config"]["evaluate"]["runs"] == 1
    assert data["seeds"]["base"] == 0 and len(data["seeds"]["runs"]) == 1
    md = (out / "report.md").read_text()
    for text in (
        "Table 1",
        "Table 3",
        "Image quality",
        "Fine detail",
        "not comparable one to one",
        "plain language",
        "Distance to the limits",
        "hard negatives",
        "Precision@1",
        "Memorization",
    ):
        assert text in md
    for result in data["methods"].values():
        assert result["method"]["label"] in md
    assert "DP-Pix (b=4, m=1, eps=1)" in md
    for name in data["figures"].values():
        assert (out / name).is_file() and (out / name).stat().st_size > 1000
    assert {"privacy_utility.png", "frontier.png", "samples.png", "tsne_noise.png"} <= {
        p.name for p in out.glob("*.png")
    }
    for name in data["methods"]:  # the linkage measurements beside every AUC
        summary = data["methods"][name]["summary"]
        for key in ("reid_hard_adaptive_auc", "retrieval_adaptive_p1", "memorization_rate"):
            assert summary[key]["runs"] == 1, (name, key)
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]  # written atomically, nothing left over


def test_the_plain_language_summary_states_chance_levels(finished):
    _, _, out, _ = finished
    md = (out / "report.md").read_text()
    assert "0.5 = a coin toss" in md
    assert "always guessing the training films' most common group" in md
    assert "balanced over the groups" in md and "(balanced 25%)" in md  # four age groups in the toy data


def test_a_second_run_reuses_judges_and_finished_methods(finished, capsys):
    cfg, splits, out, first = finished
    methods = [IdentityMethod(), NoiseMethod(), builtin_method("dp_pix", cfg)]
    again = run_evaluation(cfg, splits, methods, out, "again", "toy", progress=False)
    assert again.judges_from_cache == [True]
    assert "finished earlier" in capsys.readouterr().out
    noise, noise_before = again.methods["noise"], first.methods["noise"]  # read back typed
    assert (noise.summary, noise.runs, noise.quality) == (
        noise_before.summary,
        noise_before.runs,
        noise_before.quality,
    )
    assert again.real.summary.reid_auc == first.real.summary.reid_auc


def test_bad_requests_fail_clearly(finished, tmp_path):
    cfg, splits, _, _ = finished
    with pytest.raises(EvaluationError, match="nothing to evaluate"):
        run_evaluation(cfg, splits, [], tmp_path, "x", progress=False)
    cfg2 = load_config("tiny", [*FAST, "evaluate.inception_weights=/w/pt_inception.pth"])
    with pytest.raises(UnsupportedMetricError, match="not supported"):
        run_evaluation(cfg2, splits, [NoiseMethod()], tmp_path, "x", progress=False)
