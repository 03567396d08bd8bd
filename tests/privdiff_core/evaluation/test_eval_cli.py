"""`privdiff evaluate` and `privdiff ablate` end to end on a small synthetic federation on disk."""

import json
import shutil

import pytest
from omegaconf import OmegaConf

from privdiff_core.cli import main

FAST = [
    "evaluate.verifier.steps=30",
    "evaluate.classifier.steps=20",
    "evaluate.adaptive.verifier_steps=10",
    "evaluate.adaptive.classifier_steps=10",
    "evaluate.bootstrap=30",
    "evaluate.pairs.test=100",
    "evaluate.pairs.val=60",
    "baselines.deformation.steps=5",
    "baselines.deformation.pretrain_steps=5",
]


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    from privdiff_core.synth import SynthParams, generate_federation

    root = tmp_path_factory.mktemp("fed") / "data"
    generate_federation(
        root, SynthParams(sites=2, patients=14, images_per_patient=3, size=32), progress=False
    )
    return root


def test_evaluate_requires_data_and_out(capsys):
    assert main(["evaluate", "--config", "tiny", "--methods", "noise"]) == 2
    assert "data=DIR" in capsys.readouterr().err
    assert main(["evaluate", "--config", "tiny", "--methods", "bogus", "data=/x", "out=/y"]) == 2
    assert "unknown method 'bogus'" in capsys.readouterr().err


def test_a_config_without_the_evaluation_sections_gets_the_schemas(tmp_path, capsys):
    """The typed config fills what a custom file leaves out: the command goes on to the data."""
    mine = tmp_path / "mine.yaml"
    mine.write_text("seed: 0\ndata: null\nout: null\nimage_size: 32\n")
    assert main(["evaluate", "--config", str(mine), "--methods", "noise", "data=/x", "out=/y"]) == 2
    assert "data folder /x does not exist" in capsys.readouterr().err


def test_evaluate_refuses_a_missing_model(federation, tmp_path, capsys):
    code = main(
        [
            "evaluate",
            "--config",
            "tiny",
            "--model",
            str(tmp_path / "nope"),
            f"data={federation}",
            f"out={tmp_path}",
        ]
    )
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_writes_a_report_from_dicom_sites(federation, tmp_path):
    out = tmp_path / "report"
    args = ["evaluate", "--config", "tiny", "--methods", "identity,dp_pix,oracle", "--no-progress"]
    assert main([*args, f"data={federation}", f"out={out}", *FAST]) == 0
    report = json.loads((out / "report.json").read_text())
    assert list(report["methods"]) == ["oracle", "identity", "dp_pix"]  # the oracle first, under the inputs
    assert report["data"]["splits"]["test"]["patients"] >= 2
    assert (out / "report.md").is_file() and (out / "privacy_utility.png").is_file()
    # The oracle is the floor and the ceiling every method is measured against.
    limits, oracle = report["limits"], report["methods"]["oracle"]["summary"]
    assert limits["oracle"] == "oracle"
    assert limits["privacy_floor"] == oracle["reid_adaptive_auc"]["mean"]
    assert limits["methods"]["identity"]["diagnosis_below_real"] == 0.0
    assert "Distance to the limits" in (out / "report.md").read_text()
    assert (out / "frontier.png").stat().st_size > 1000


def test_the_oracle_is_skipped_with_a_note_on_data_without_a_generator(federation, tmp_path, capsys):
    data = tmp_path / "real"
    shutil.copytree(federation, data)
    (data / "federation.json").unlink()
    out = tmp_path / "report"
    args = ["evaluate", "--config", "tiny", "--methods", "oracle,noise", "--no-progress"]
    assert main([*args, f"data={data}", f"out={out}", *FAST]) == 0
    assert "oracle skipped" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert list(report["methods"]) == ["noise"] and report["limits"]["oracle"] is None
    assert any(note.startswith("oracle skipped") for note in report["notes"])


@pytest.mark.slow
def test_ablate_trains_variants_once_and_resumes(federation, tmp_path, capsys):
    """Two variants (vanilla, SAS+SPG) and one baseline: trained, evaluated, then skipped on a rerun."""
    out = tmp_path / "ablation"
    args = ["ablate", "--config", "tiny", "--only", "vanilla,privdiff,dp_pix", "--no-progress"]
    short = ["train.autoencoder.steps=4", "train.denoiser.steps=4", "anonymize.ddim_steps=4"]
    assert main([*args, f"data={federation}", f"out={out}", *FAST, *short]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["methods"]) == {"vanilla", "privdiff", "dp_pix"}
    assert report["methods"]["privdiff"]["method"]["kind"] == "model"
    md = (out / "report.md").read_text()
    assert "Table 2: ablation" in md and "Vanilla diffusion" in md
    vanilla = OmegaConf.load(out / "models" / "vanilla" / "config.yaml")
    full = OmegaConf.load(out / "models" / "privdiff" / "config.yaml")
    assert (vanilla.sas.enabled, vanilla.spg.enabled, full.sas.enabled, full.spg.enabled) == (
        False,
        False,
        True,
        True,
    )
    assert full.train.autoencoder.reuse.endswith("vanilla/anonymizer")  # one shared first stage
    assert full.train.denoiser.steps == vanilla.train.denoiser.steps  # same budget
    for name in ("vanilla", "privdiff"):
        assert (out / "models" / name / "anonymizer" / "manifest.json").is_file()
    capsys.readouterr()
    with_bars = [a for a in args if a != "--no-progress"]  # bars or not, the results are the same
    assert main([*with_bars, f"data={federation}", f"out={out}", *FAST, *short]) == 0
    again = capsys.readouterr().out
    assert again.count("trained earlier") == 2 and again.count("finished earlier") == 3

    # The trained model at two strengths (a privacy/utility curve), against the judges trained above.
    curve = tmp_path / "curve"
    shutil.copytree(out / "judges", curve / "judges")
    model = ["--model", str(out / "models" / "privdiff"), "--strengths", "0.25,1", "--methods", "none"]
    model += ["--model", f"plain={out / 'models' / 'vanilla'}"]
    args = ["evaluate", "--config", "tiny", *model, "--no-progress", f"data={federation}", f"out={curve}"]
    assert main([*args, *FAST, *short]) == 0
    report = json.loads((curve / "report.json").read_text())
    assert report["judges_from_cache"] == [True]
    methods = report["methods"]
    assert {name: m["method"]["settings"]["strength"] for name, m in methods.items()} == {
        "privdiff_s25": 0.25,
        "privdiff_s100": 1.0,
        "plain_s25": 0.25,
        "plain_s100": 1.0,
    }
    # Labelled by what the model runs: a vanilla model is never called PrivDiff-Net.
    assert methods["privdiff_s25"]["method"]["label"] == "PrivDiff-Net, strength 0.25"
    assert methods["plain_s100"]["method"]["label"] == "Vanilla diffusion (plain), strength 1"
    # Noising the latent less keeps more of the image.
    assert methods["privdiff_s25"]["quality"]["ssim_mean"] > methods["privdiff_s100"]["quality"]["ssim_mean"]


def test_strengths_are_checked_before_anything_runs(federation, tmp_path, capsys):
    base = ["evaluate", "--config", "tiny", "--methods", "none", f"data={federation}", f"out={tmp_path}"]
    assert main([*base, "--model", str(tmp_path), "--strengths", "0.3,1.5"]) == 2
    assert "(0, 1]" in capsys.readouterr().err
    assert main([*base, "--strengths", "0.3"]) == 2
    assert "--model" in capsys.readouterr().err
