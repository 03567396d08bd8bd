"""`privdiff simulate` (simulation/): the main job, on the tiny config.

A synthetic federation of 3 hospitals trains the tiny PrivDiff-Net in Flower's simulation engine
with SecAgg+; the server signs the anonymizer and sends it to every site, and each site
anonymizes its test split with the model it installed. The evaluation report is `privdiff
evaluate`'s job (minutes even at the tiny size): here its hand-off is checked with a stand-in.
"""

from __future__ import annotations

import argparse
import json
import sys
import types

import pytest
import torch

from privdiff.common.distribution import current_model
from privdiff_core.cli import main as privdiff
from privdiff_core.data import open_dataset
from privdiff_core.signing import load_public_key, verify_model


@pytest.mark.slow
def test_tiny_federation_trains_signs_distributes_and_anonymizes(tmp_path, capsys, isolated_home):
    run = tmp_path / "run"
    assert privdiff(["simulate", "--config", "tiny", "--no-evaluate", "--no-progress", f"out={run}"]) == 0
    captured = capsys.readouterr()
    # results on stdout; the plan and the rounds in the log, on stderr
    output = "\n".join(line.removeprefix("privdiff simulate: ") for line in captured.err.splitlines())
    assert "reading headers" not in captured.err  # --no-progress: no progress bar anywhere
    # readable progress: the plan, one line per round with stage, round, loss, time
    assert "federated plan: autoencoder x1 rounds then denoiser x1 rounds (SecAgg+, 3 sites" in output
    for stage in ("autoencoder", "denoiser"):
        line = next(line for line in output.splitlines() if line.startswith(f"[{stage} 1/1]"))
        assert "loss" in line and " s |" in line and "3 sites" in line and "SecAgg+ range" in line

    sites = sorted(p for p in (run / "federation").iterdir() if p.is_dir())
    assert [p.name for p in sites] == ["site_00", "site_01", "site_02"]
    history = torch.load(run / "checkpoint.pt", weights_only=True)["history"]
    assert [(h["stage"], h["sites"], h["clipped-values"]) for h in history] == [
        ("autoencoder", 3, 0),
        ("denoiser", 3, 0),
    ]

    key = load_public_key(run / "keys" / "model-signing.pub")
    metadata = verify_model(run / "anonymizer", key)["metadata"]
    assert metadata["secagg"] is True and metadata["sites"] == 3
    assert metadata["rounds"] == {"autoencoder": 1, "denoiser": 1}
    acks = json.loads((run / "distribution.json").read_text())["sites"]
    assert len(acks) == 3 and all(a["installed"] for a in acks)

    from privdiff_core.anonymizer import Anonymizer

    for site in sites:
        installed = current_model(run / "sites" / site.name / "model-store")
        verify_model(installed, load_public_key(run / "sites" / site.name / "federation-public.pem"))
        assert Anonymizer.load(installed).image_size == 32
        written = sorted((run / "anonymized" / site.name).glob("0*.png"))
        assert len(written) == len(open_dataset(site, 32, split="test"))
        assert (run / "anonymized" / site.name / "preview.png").is_file()
    assert not (isolated_home / ".flwr").exists()  # Flower's state stays in the run folder, not in ~/.flwr


def test_the_evaluation_report_is_handed_the_signed_federated_model(tmp_path, monkeypatch, capsys):
    from privdiff.simulation import cli as simulate
    from privdiff_core import cli as core_cli
    from privdiff_core.logs import configure_logging

    configure_logging("privdiff simulate")  # as `privdiff simulate` does before it runs
    calls = []
    stand_in = types.ModuleType("evaluate_stand_in")
    stand_in.HELP = "stand-in for privdiff evaluate"
    stand_in.add_arguments = lambda parser: (
        parser.add_argument("--config"),
        parser.add_argument("--model"),
        parser.add_argument("--no-progress", action="store_true"),
        parser.add_argument("--methods"),
        parser.add_argument("overrides", nargs="*"),
    )
    stand_in.run = lambda args: calls.append(args) or 0
    monkeypatch.setitem(sys.modules, "evaluate_stand_in", stand_in)
    monkeypatch.setitem(core_cli.CORE_COMMANDS, "evaluate", "evaluate_stand_in")
    assert simulate._evaluate(tmp_path / "run", tmp_path / "federation", progress=False) == 0
    [args] = calls
    assert isinstance(args, argparse.Namespace) and args.no_progress
    assert args.config == str(tmp_path / "run" / "config.yaml")
    assert args.model == f"federated={tmp_path / 'run' / 'anonymizer'}"
    assert args.overrides == [f"data={tmp_path / 'federation'}", f"out={tmp_path / 'run' / 'evaluation'}"]
    assert args.methods is None  # no light pass asked for: evaluate's own default baselines

    light = ["evaluate.verifier.steps=5", "evaluate.pairs.test=10"]
    assert simulate._evaluate(tmp_path / "run", tmp_path / "fed", False, "dp_pix", light) == 0
    assert calls[-1].methods == "dp_pix"
    assert calls[-1].overrides[2:] == light  # after data= and out=, so they win over the run's config
    assert "--full-evaluation" in capsys.readouterr().err  # the log says it is a light pass

    monkeypatch.delitem(core_cli.CORE_COMMANDS, "evaluate")
    assert simulate._evaluate(tmp_path / "run", tmp_path / "federation", progress=False) is None
    assert "privdiff simulate: WARNING: evaluation: privdiff_core.evaluation is not installed" in (
        capsys.readouterr().err
    )


def test_the_demo_evaluates_a_lighter_pass_whose_overrides_evaluate_accepts():
    from privdiff.simulation.cli import evaluation_plan
    from privdiff_core.config import load_config

    demo = load_config("demo")
    methods, overrides, conditions = evaluation_plan(demo, full=False)
    assert methods == "oracle,dp_pix" and overrides  # the limit beside the model
    assert conditions == "sensitive"  # findings estimated (told from reports: `all`, ~65 s more)
    light = load_config("demo", overrides)  # every override names a key the config has
    assert light.evaluate.verifier.steps < demo.evaluate.verifier.steps
    assert light.evaluate.max_images.test < (demo.evaluate.max_images.test or float("inf"))
    assert evaluation_plan(demo, full=True) == (None, [], None)  # --full-evaluation
    assert evaluation_plan(load_config("paper"), full=False) == (None, [], None)
    none = load_config("tiny", ["federation.simulation.evaluation={methods: [], overrides: []}"])
    assert evaluation_plan(none, full=False) == ("none", [], None)


def test_a_bad_federation_setting_stops_before_any_work(tmp_path, capsys):
    assert (
        privdiff(["simulate", "--config", "tiny", f"out={tmp_path / 'run'}", "federation.min_sites=1"]) == 2
    )
    assert "federation.min_sites" in capsys.readouterr().err
    assert not (tmp_path / "run" / "federation").exists()
