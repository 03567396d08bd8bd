"""The anonymizer (Contract 3) and `privdiff anonymize`: a saved folder reloads to identical
outputs, tampering is caught, bad input is refused clearly, outputs are seeded and atomic, and
real PNG/DICOM files go through while a broken file is reported and skipped."""

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from privdiff_core.anonymizer import Anonymizer, AnonymizerInputError, Conditions, ModelFolderError
from privdiff_core.cli import main
from privdiff_core.config import load_config
from privdiff_core.model import ConditionsError
from privdiff_core.synth import SynthParams, generate_arrays
from privdiff_core.training import build_models, local_train, save_anonymizer

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real"


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained a few steps per stage on synthetic phantoms, and its saved folder."""
    data = generate_arrays(SynthParams(sites=1, patients=10, images_per_patient=3, size=32)).to_tensors()
    cfg = load_config("tiny", ["device=cpu", "anonymize.ddim_steps=5"])
    models = build_models(cfg)
    with torch.random.fork_rng():
        torch.set_num_threads(1)
        for stage in ("autoencoder", "denoiser"):
            local_train(models, stage, data, cfg, 4, seed=0, progress=False)
    folder = save_anonymizer(models, cfg, tmp_path_factory.mktemp("model") / "anonymizer", {"note": "test"})
    return models, cfg, folder, data


def test_saved_folder_reloads_to_identical_outputs(trained):
    models, cfg, folder, data = trained
    loaded = Anonymizer.load(folder)
    in_memory = Anonymizer.from_models(models, cfg)
    x = data.images[:5]
    assert loaded.image_size == 32
    assert torch.equal(loaded.anonymize(x, seed=3), in_memory.anonymize(x, seed=3))
    assert loaded.manifest["metadata"] == {"note": "test"}
    assert loaded.manifest["config"]["sas"]["enabled"] is True
    assert {
        "vae/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "encoder/diffusion_pytorch_model.safetensors",
        "model_index.json",
    } <= set(loaded.manifest["files"])
    # The run folder of `privdiff train` (holding anonymizer/) opens the same way.
    assert Anonymizer.load(folder.parent).image_size == 32


def test_anonymize_is_seeded_changes_the_image_and_uses_conditions(trained):
    models, cfg, folder, data = trained
    anonymizer = Anonymizer.from_models(models, cfg)
    x = data.images[:4]
    a, b, c = (
        anonymizer.anonymize(x, seed=1),
        anonymizer.anonymize(x, seed=1),
        anonymizer.anonymize(x, seed=2),
    )
    assert torch.equal(a, b)
    assert not torch.allclose(a, c, atol=1e-4)
    assert a.shape == x.shape and a.min() >= -1 and a.max() <= 1
    assert (a - x).abs().mean() > 0.01
    known = Conditions(age_group=data.age_group[:4], sex=data.sex[:4], labels=data.labels[:4])
    assert not torch.allclose(anonymizer.anonymize(x, known, seed=1), a, atol=1e-5)
    # img2img: a stronger setting moves further from the input.
    weak = anonymizer.anonymize(x, seed=1, strength=0.2, mode="img2img")
    strong = anonymizer.anonymize(x, seed=1, strength=1.0, mode="img2img")
    assert (weak - x).abs().mean() < (strong - x).abs().mean()
    with pytest.raises(AnonymizerInputError, match="mode"):
        anonymizer.anonymize(x, seed=1, mode="paint")


@pytest.mark.parametrize(
    "images,message",
    [
        (np.zeros((1, 1, 32, 32), np.float32), "torch.Tensor"),
        (torch.zeros(1, 1, 32, 32, dtype=torch.uint8), "float"),
        (torch.zeros(1, 32, 32), r"\(B, 1, 32, 32\)"),
        (torch.zeros(2, 1, 64, 64), r"\(B, 1, 32, 32\)"),
        (torch.zeros(1, 3, 32, 32), r"\(B, 1, 32, 32\)"),
        (torch.full((1, 1, 32, 32), 255.0), r"\[-1, 1\]"),
        (torch.full((1, 1, 32, 32), float("nan")), "NaN"),
        (torch.zeros(0, 1, 32, 32), "empty"),
    ],
)
def test_bad_images_are_refused_clearly(trained, images, message):
    models, cfg, _, _ = trained
    with pytest.raises(AnonymizerInputError, match=message):
        Anonymizer.from_models(models, cfg).anonymize(images)


def test_bad_conditions_seeds_and_settings_are_refused(trained):
    models, cfg, _, data = trained
    anonymizer = Anonymizer.from_models(models, cfg)
    x = data.images[:2]
    with pytest.raises(ConditionsError, match="age_group"):
        anonymizer.anonymize(x, Conditions(age_group=torch.tensor([0, 1, 2])))
    with pytest.raises(AnonymizerInputError, match="seeds"):
        anonymizer.anonymize(x, seed=[1, 2, 3])
    with pytest.raises(AnonymizerInputError, match="strength"):
        anonymizer.anonymize(x, strength=1.5)


def copy_model(folder, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(folder, target)
    return target


def test_missing_corrupted_or_tampered_folders_are_refused(trained, tmp_path):
    _, _, folder, _ = trained
    with pytest.raises(ModelFolderError, match="no such"):
        Anonymizer.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFolderError, match="manifest"):
        Anonymizer.load(tmp_path / "empty")

    tampered = copy_model(folder, tmp_path / "a")
    weights = tampered / "unet" / "diffusion_pytorch_model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-5] ^= 0x01  # one bit of one weight
    weights.write_bytes(bytes(raw))
    with pytest.raises(ModelFolderError, match="unet/diffusion_pytorch_model.safetensors does not match"):
        Anonymizer.load(tampered)

    missing = copy_model(folder, tmp_path / "b")
    (missing / "encoder" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelFolderError, match="missing"):
        Anonymizer.load(missing)

    added = copy_model(folder, tmp_path / "c")
    (added / "unet" / "extra.safetensors").write_bytes(b"x")
    with pytest.raises(ModelFolderError, match="not in the manifest"):
        Anonymizer.load(added)

    broken = copy_model(folder, tmp_path / "d")
    (broken / "manifest.json").write_text("{not json")
    with pytest.raises(ModelFolderError, match="unreadable manifest"):
        Anonymizer.load(broken)


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_anonymize_command_on_real_files(trained, tmp_path, capsys):
    _, _, folder, _ = trained
    inputs = tmp_path / "in"
    (inputs / "nih").mkdir(parents=True)
    (inputs / "dicom").mkdir()
    shutil.copy(REAL / "nih_00000001_000.png", inputs / "nih")
    shutil.copy(REAL / "tbx11k_h0001.png", inputs / "nih")
    shutil.copy(REAL / "rsna_cr_jpeg_baseline.dcm", inputs / "dicom")
    shutil.copy(REAL / "rsna_cr_jpeg_baseline_monochrome1.dcm", inputs / "dicom" / "no_extension")
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (inputs / "notes.txt").write_text("not an image")
    before = {p: sha(p) for p in inputs.rglob("*") if p.is_file()}

    out = tmp_path / "out"
    args = [
        "anonymize",
        "--model",
        str(folder.parent),
        "--in",
        str(inputs),
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main([*args, "--batch-size", "3", "--seed", "5"]) == 1  # one file could not be read
    captured = capsys.readouterr()
    assert "broken.png" in captured.err and "anonymized 4 image(s)" in captured.out
    expected = ["dicom/no_extension.png", "dicom/rsna_cr_jpeg_baseline.png", "nih/nih_00000001_000.png",
                "nih/tbx11k_h0001.png"]  # fmt: skip
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == expected
    with Image.open(out / "nih" / "nih_00000001_000.png") as image:
        assert image.size == (32, 32) and image.mode == "L"
    assert {p: sha(p) for p in inputs.rglob("*") if p.is_file()} == before  # inputs untouched

    # Same seed, same bytes, whatever the batch size; another seed, other images.
    first = {p: sha(out / p) for p in expected}
    assert main([*args, "--batch-size", "2", "--seed", "5"]) == 1
    assert {p: sha(out / p) for p in expected} == first
    other = tmp_path / "other"
    assert main([*args[:-3], "--out", str(other), "--no-progress", "--seed", "6"]) == 1
    assert all(sha(other / p) != first[p] for p in expected)
    deep = tmp_path / "deep"
    assert (
        main(
            [
                "anonymize",
                "--model",
                str(folder),
                "--in",
                str(inputs / "nih"),
                "--out",
                str(deep),
                "--bits",
                "16",
            ]
        )
        == 0
    )
    with Image.open(deep / "nih_00000001_000.png") as image:
        assert image.mode == "I;16"
    capsys.readouterr()


def test_anonymize_command_reports_bad_model_and_input(tmp_path, trained, capsys):
    _, _, folder, _ = trained
    png = tmp_path / "x.png"
    shutil.copy(REAL / "nih_00000001_000.png", png)
    assert (
        main(["anonymize", "--model", str(tmp_path / "none"), "--in", str(png), "--out", str(tmp_path)]) == 2
    )
    assert "no such model folder" in capsys.readouterr().err
    assert (
        main(["anonymize", "--model", str(folder), "--in", str(tmp_path / "missing.png"), "--out", "o"]) == 2
    )
    assert "no such file" in capsys.readouterr().err
    # Writing into the input folder, or over an input, is refused before anything is written.
    assert main(["anonymize", "--model", str(folder), "--in", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "is the input folder" in capsys.readouterr().err
    assert main(["anonymize", "--model", str(folder), "--in", str(png), "--out", str(tmp_path)]) == 2
    assert "would overwrite an input" in capsys.readouterr().err


def test_output_names_mirror_inputs_and_never_collide(tmp_path):
    from privdiff_core.anonymizer.files import discover_inputs, output_paths

    for name in ("a/x.dcm", "a/x.png", "a/y.jpg", "a/.hidden.png", "b/notes.csv", "out/old.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found, skipped = discover_inputs(tmp_path, exclude=tmp_path / "out")
    relatives = [rel for _, rel in found]
    assert [r.as_posix() for r in relatives] == ["a/x.dcm", "a/x.png", "a/y.jpg"] and skipped == 1
    outputs = output_paths(relatives, Path("o"))
    assert [p.as_posix() for p in outputs] == ["o/a/x.dcm.png", "o/a/x.png.png", "o/a/y.png"]
