"""Model methods: the anonymize mode reaches the anonymizer only when asked; the VAE method is the
autoencoder alone; --modes and --methods vae/oracle are parsed before anything runs."""

import json

import pytest
import torch
from eval_toydata import toy_cohort

from privdiff_core.cli import main
from privdiff_core.config import load_config
from privdiff_core.evaluation.cli_evaluate import (
    model_methods,
    parse_conditions,
    parse_modes,
    reference_methods,
)
from privdiff_core.evaluation.methods import AnonymizerMethod, MethodError, VAEMethod
from privdiff_core.model.privdiff_net import PrivDiffModels


class FakeAnonymizer:
    """Records the keywords (and conditions) of each anonymize call; returns the images negated."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.conditions: list = []

    def anonymize(self, images, conditions=None, seed=0, **kwargs):
        self.calls.append(kwargs)
        self.conditions.append(conditions)
        return -images


class FakeModels:
    """encode halves, decode doubles and shifts: a reconstruction that is visibly not the input."""

    device = torch.device("cpu")

    def encode(self, images):
        return images / 2

    def decode(self, latents):
        return latents * 2 - 0.25

    reconstruct = PrivDiffModels.reconstruct  # the real batching and clamping over the fakes above


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"config": {"sas": {"enabled": True}}}))
    return tmp_path


def test_the_mode_is_passed_only_when_given(folder):
    cohort = toy_cohort(3, 2, size=16)
    for mode, expected in (
        (None, {"strength": None}),
        ("generative", {"strength": 0.6, "mode": "generative"}),
    ):
        method = AnonymizerMethod("m", "m", folder, "none", 4, 0.6 if mode else None, mode=mode)
        method.anonymizer = FakeAnonymizer()
        out = method.anonymize(cohort, seed=0, progress=False)
        torch.testing.assert_close(out, -cohort.images)
        assert method.anonymizer.calls and all(c == expected for c in method.anonymizer.calls)
        assert ("mode" in method.settings) == (mode is not None)  # cached results without a mode stay valid


def test_models_are_evaluated_in_every_mode_and_strength(folder):
    cfg = load_config("tiny")
    methods = model_methods(cfg, [("privdiff", str(folder))], [None, 0.8], parse_modes("img2img,generative"))
    names = [m.name for m in methods]
    # A strength is an img2img setting: the generative mode is evaluated once, without one.
    assert names == ["privdiff_img2img", "privdiff_img2img_s80", "privdiff_generative"]
    assert methods[1].label.endswith("img2img, strength 0.8")
    assert "strength" not in methods[2].settings and methods[2].settings["mode"] == "generative"
    assert methods[1].curve == methods[0].curve != methods[2].curve
    # A strength without a mode runs img2img, whatever the model's default mode.
    (plain,) = model_methods(cfg, [("privdiff", str(folder))], [0.8])
    assert plain.name == "privdiff_s80" and plain.settings["mode"] == "img2img"
    assert parse_modes(None) == [None]
    for bad in ("sketch", "img2img,img2img", ""):
        with pytest.raises(MethodError, match="--modes"):
            parse_modes(bad)
    with pytest.raises(MethodError, match="mode must be one of"):
        AnonymizerMethod("m", "m", folder, "none", 4, mode="dream")


def test_the_vae_method_is_the_autoencoder_alone(folder):
    cohort = toy_cohort(3, 2, size=16)
    method = VAEMethod("vae", "VAE", folder, batch_size=4)
    method.anonymizer = type("A", (), {"models": FakeModels()})()
    out = method.anonymize(cohort, seed=0, progress=False)
    torch.testing.assert_close(out, (cohort.images - 0.25).clamp(-1, 1))


def test_vae_needs_a_model_and_the_oracle_is_skipped_on_real_data(folder, tmp_path, capsys):
    cfg = load_config("tiny", [f"data={tmp_path}"])
    with pytest.raises(MethodError, match="give --model"):
        reference_methods(["vae"], cfg, [])
    methods, notes = reference_methods(
        ["oracle", "vae", "noise"], cfg, [("a", str(folder)), ("b", str(folder))]
    )
    assert [m.name for m in methods] == ["a_vae", "b_vae", "noise"]
    assert len(notes) == 1 and notes[0].startswith("oracle skipped")
    assert "oracle skipped" in capsys.readouterr().out


def test_modes_without_a_model_are_refused(tmp_path, capsys):
    assert main(["evaluate", "--config", "tiny", "--modes", "generative", f"data={tmp_path}", "out=/y"]) == 2
    assert "--modes applies to the --model" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("metadata", "dp", "line"),
    [
        (
            {"dp": {"enabled": True}, "privacy": {"epsilon": 7.0812, "delta": 1e-05, "budget_spent": True}},
            True,
            "- Privacy budget of fed: DP epsilon 7.08 at delta 1e-05; training stopped at the budget.",
        ),
        (
            {"dp": {"enabled": False}},
            False,
            "- Privacy budget of fed: trained without differential privacy (no epsilon).",
        ),
        ({}, None, "- Privacy budget of fed: no differential-privacy budget stated by the model."),
    ],
)
def test_the_report_states_the_privacy_budget_the_model_was_trained_with(tmp_path, metadata, dp, line):
    """A federated DP run writes epsilon into the model's metadata (server/privacy.py); the
    evaluation carries it into report.json and report.md beside the model's numbers."""
    from dataclasses import asdict, replace

    from test_eval_results import typed_report

    from privdiff_core.evaluation.report import render_markdown
    from privdiff_core.evaluation.results import MethodInfo

    manifest = {"config": {"sas": {"enabled": True}}, "metadata": metadata}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    described = AnonymizerMethod("fed", "fed", tmp_path, "none", 4).describe()
    assert described["privacy"].dp is dp
    report = typed_report()
    fed = replace(report.methods["privdiff"], method=MethodInfo(**described))
    report = replace(report, methods={**report.methods, "privdiff": fed})
    assert line in render_markdown(report).splitlines()
    assert asdict(report)["methods"]["privdiff"]["method"]["privacy"]["dp"] is dp  # report.json


def test_each_model_is_evaluated_under_each_conditions_named_by_what_it_is_told(folder):
    """--conditions sensitive,all: the config's (sensitive) keeps the model's name; 'all' is
    NAME_reports, told every film's findings; the findings never reach the sensitive one."""
    cfg = load_config("tiny")
    methods = model_methods(
        cfg, [("federated", str(folder))], [None], [None], parse_conditions("sensitive,all")
    )
    assert [m.name for m in methods] == ["federated", "federated_reports"]
    assert methods[1].label.endswith("findings from the reports") and methods[0].curve != methods[1].curve
    cohort = toy_cohort(3, 2, size=16)
    for method in methods:
        method.anonymizer = FakeAnonymizer()
        method.anonymize(cohort, seed=0, progress=False)
    estimated, reports = (m.anonymizer.conditions[0] for m in methods)
    assert estimated.labels is None and estimated.sex is not None
    torch.testing.assert_close(reports.labels, cohort.labels[: len(reports.labels)])
    assert parse_conditions(None) == []
    for bad in ("reports", "all,all", ""):
        with pytest.raises(MethodError, match="--conditions"):
            parse_conditions(bad)
