"""The anonymizer folder as a diffusers pipeline: `PrivDiffPipeline.from_pretrained` gives the
same pixels as `Anonymizer`, each component loads alone with diffusers (the SAS UNet keeps SAS),
signatures cover the new files, format-1 folders still load, and pinned pixels prove the
anonymized pixels did not change with the diffusers-native classes."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DiffusionPipeline
from pinned_values import assert_pixels_pinned
from safetensors.torch import load_file

from privdiff_core.anonymizer import Anonymizer, Conditions, ModelFolderError, seed_for
from privdiff_core.anonymizer.files import write_png
from privdiff_core.anonymizer.pipeline import PrivDiffPipeline
from privdiff_core.cli import main
from privdiff_core.config import load_config
from privdiff_core.data.images import read_image_tensor
from privdiff_core.model import SASAttnProcessor
from privdiff_core.model.attribute_encoder import AttributeEncoder
from privdiff_core.model.conditioning import ConditionEncoder
from privdiff_core.model.unet import SAS_CONFIG_KEYS, SASUNet2DConditionModel
from privdiff_core.signing import (
    SignatureError,
    generate_signing_key,
    load_private_key,
    load_public_key,
    sha256_file,
    sign_model,
    verify_model,
)
from privdiff_core.synth import SynthParams, generate_arrays
from privdiff_core.training import build_models, local_train, save_anonymizer

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

# `Anonymizer.anonymize(images[:3], seed=11, mode=...)` of the `tiny_model` below is pinned in
# tests/fixtures/pinned/tiny_anonymizer_{mode}.npy (pinned_values.py: to 2e-3, what another CPU's
# kernels move): first as a hash on main before the diffusers-native classes, recomputed when the
# attribute loss changed (issue 10: the weights change, the sampling does not), stored as values
# when an AVX-512 CI machine's last bits differed. A change of sampling, initialisation order or
# saved weights moves them far more; re-pin on main only for a change meant to.
SEED = 11


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """The tiny config trained two steps per stage on synthetic phantoms, saved; and its images."""
    data = generate_arrays(
        SynthParams(sites=1, patients=4, images_per_patient=2, size=32, seed=0)
    ).to_tensors()
    cfg = load_config("tiny", ["device=cpu", "anonymize.ddim_steps=4"])
    with torch.random.fork_rng():
        torch.set_num_threads(1)
        models = build_models(cfg)
        for stage in ("autoencoder", "denoiser"):
            local_train(models, stage, data, cfg, 2, seed=0, progress=False)
    folder = save_anonymizer(models, cfg, tmp_path_factory.mktemp("model") / "anonymizer", {})
    return folder, data.images[:3], data


def test_anonymized_pixels_match_the_pixels_pinned_before_the_change(tiny_model):
    folder, images, _ = tiny_model
    anonymizer = Anonymizer.load(folder)
    for mode in ("generative", "img2img"):
        assert_pixels_pinned(f"tiny_anonymizer_{mode}", anonymizer.anonymize(images, seed=SEED, mode=mode))


def test_from_pretrained_gives_the_same_pixels_as_the_anonymizer(tiny_model):
    folder, images, data = tiny_model
    pipe = PrivDiffPipeline.from_pretrained(folder)
    assert isinstance(pipe, DiffusionPipeline)
    assert set(pipe.components) == {"vae", "unet", "encoder", "conditioning", "scheduler"}
    assert isinstance(pipe.scheduler, DDIMScheduler) and isinstance(pipe.vae, AutoencoderKL)
    anonymizer = Anonymizer.load(folder)
    known = Conditions(age_group=data.age_group[:3], sex=data.sex[:3], labels=data.labels[:3])
    calls = [
        {"seed": SEED, "mode": "generative"},
        {"seed": SEED, "mode": "img2img"},
        {"seed": [5, 6, 7], "mode": "img2img", "strength": 0.5, "ddim_steps": 6, "batch_size": 2},
        {"conditions": known, "seed": 3},  # the model's default mode
    ]
    for kwargs in calls:
        expected = anonymizer.anonymize(images, **kwargs)
        torch.testing.assert_close(pipe(images, **kwargs).images, expected, rtol=0, atol=0)
    assert_pixels_pinned("tiny_anonymizer_img2img", pipe(images, seed=SEED, mode="img2img").images)
    (out,) = pipe(images, seed=SEED, mode="generative", return_dict=False)
    assert_pixels_pinned("tiny_anonymizer_generative", out)
    # A `privdiff train` run folder (holding anonymizer/) opens the same way.
    assert PrivDiffPipeline.from_pretrained(folder.parent).config.privdiff_config["image_size"] == 32


def test_the_pipeline_writes_the_pngs_of_privdiff_anonymize(tiny_model, tmp_path):
    """`privdiff anonymize` on PNG files and the pipeline on the same files, same seeds: same bytes."""
    folder, images, _ = tiny_model
    source = tmp_path / "in"
    for i, image in enumerate(images):
        write_png(image[0].numpy(), source / f"film_{i}.png")
    args = ["anonymize", "--model", str(folder), "--in", str(source), "--out", str(tmp_path / "cli")]
    assert main([*args, "--seed", "7", "--device", "cpu", "--no-progress"]) == 0
    pipe = PrivDiffPipeline.from_pretrained(folder)
    files = sorted(source.glob("*.png"))
    batch = torch.stack([read_image_tensor(path, 32) for path in files])
    out = pipe(batch, seed=[seed_for(7, path.name) for path in files]).images
    for path, image in zip(files, out, strict=True):
        write_png(image[0].numpy(), tmp_path / "pipe" / path.name)
        assert (tmp_path / "pipe" / path.name).read_bytes() == (tmp_path / "cli" / path.name).read_bytes()


def test_save_pretrained_writes_a_folder_both_loaders_open(tiny_model, tmp_path):
    folder, images, _ = tiny_model
    PrivDiffPipeline.from_pretrained(folder).save_pretrained(tmp_path / "again")
    again = PrivDiffPipeline.from_pretrained(tmp_path / "again")
    assert_pixels_pinned("tiny_anonymizer_img2img", again(images, seed=SEED, mode="img2img").images)
    loaded = Anonymizer.load(tmp_path / "again")
    assert_pixels_pinned("tiny_anonymizer_generative", loaded.anonymize(images, seed=SEED, mode="generative"))


def test_model_index_names_importable_classes_and_the_resolved_config(tiny_model):
    folder, _, _ = tiny_model
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == PrivDiffPipeline.__name__
    assert index["vae"] == ["diffusers", "AutoencoderKL"]
    assert index["scheduler"] == ["diffusers", "DDIMScheduler"]
    assert index["unet"] == ["privdiff_core.model.components", "SASUNet2DConditionModel"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert index["privdiff_config"] == manifest["config"]


def test_each_component_loads_alone_and_the_unet_keeps_sas(tiny_model):
    folder, _, _ = tiny_model
    unet = SASUNet2DConditionModel.from_pretrained(folder / "unet", low_cpu_mem_usage=False)
    assert {key: unet.config[key] for key in SAS_CONFIG_KEYS} == {
        "sas_enabled": True,
        "sas_eps": 1e-4,
        "sas_keep_mean": False,
        "identity_tokens": 2,
    }
    processors = unet.attn_processors
    cross = [p for name, p in processors.items() if name.endswith("attn2.processor")]
    assert cross and all(isinstance(p, SASAttnProcessor) for p in cross)
    for cls, sub in (
        (SASUNet2DConditionModel, "unet"),
        (AttributeEncoder, "encoder"),
        (ConditionEncoder, "conditioning"),
    ):
        model = cls.from_pretrained(folder / sub, low_cpu_mem_usage=False)
        saved = load_file(folder / sub / "diffusion_pytorch_model.safetensors")
        state = model.state_dict()
        assert set(state) == set(saved), sub
        assert all(torch.equal(state[k], saved[k]) for k in saved), sub
    # The SAS key projections are weights of the UNet file: the plain class would drop them.
    assert any("to_k_sensitive" in key for key in saved_keys(folder / "unet"))
    encoder = AttributeEncoder.from_pretrained(folder / "encoder", low_cpu_mem_usage=False)
    assert np.array(encoder.config.finding_thresholds).shape == (2, 14)  # a row per sex


def saved_keys(folder: Path) -> list[str]:
    return list(load_file(folder / "diffusion_pytorch_model.safetensors"))


def test_the_signature_covers_every_file_of_the_pipeline_folder(tiny_model, tmp_path):
    folder, _, _ = tiny_model
    signed = Path(shutil.copytree(folder, tmp_path / "signed"))
    generate_signing_key(tmp_path / "key.pem", tmp_path / "key.pub")
    payload = sign_model(signed, load_private_key(tmp_path / "key.pem"))
    on_disk = {p.relative_to(signed).as_posix() for p in signed.rglob("*") if p.is_file()}
    assert set(payload["files"]) == on_disk - {"signature.json"}
    assert {"model_index.json", "scheduler/scheduler_config.json", "manifest.json"} <= set(payload["files"])
    verify_model(signed, load_public_key(tmp_path / "key.pub"))
    index = signed / "model_index.json"
    index.write_text(index.read_text().replace('"w_s": -1.0', '"w_s": 0.0'))
    with pytest.raises(SignatureError, match="model_index.json was changed"):
        verify_model(signed, load_public_key(tmp_path / "key.pub"))
    with pytest.raises(ModelFolderError, match="model_index.json does not match"):
        PrivDiffPipeline.from_pretrained(signed)


def write_format_1(folder: Path, target: Path) -> Path:
    """The folder as privdiff wrote it before the pipeline (manifest format 1): plain safetensors for
    encoder/ and conditioning/, a plain UNet config, no model_index.json and no scheduler/."""
    old = Path(shutil.copytree(folder, target))
    (old / "model_index.json").unlink()
    shutil.rmtree(old / "scheduler")
    for sub, config in (
        ("encoder", {"class": "AttributeEncoder", "backbone": "small", "embed_dim": 32}),
        ("conditioning", {"class": "ConditionEncoder", "embed_dim": 32, "token_lengths": [2, 4, 2, 14]}),
    ):
        (old / sub / "diffusion_pytorch_model.safetensors").rename(old / sub / "model.safetensors")
        thresholds = json.loads((old / sub / "config.json").read_text()).get("finding_thresholds")
        extra = {"finding_thresholds": thresholds} if thresholds else {}
        (old / sub / "config.json").write_text(json.dumps({**config, **extra}))
    unet_config = json.loads((old / "unet" / "config.json").read_text())
    unet_config = {k: v for k, v in unet_config.items() if k not in SAS_CONFIG_KEYS}
    (old / "unet" / "config.json").write_text(
        json.dumps({**unet_config, "_class_name": "UNet2DConditionModel"})
    )
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["format"] = "privdiff-anonymizer/1"
    manifest["files"] = {
        p.relative_to(old).as_posix(): sha256_file(p)
        for p in sorted(old.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }
    (old / "manifest.json").write_text(json.dumps(manifest))
    return old


def test_format_1_folders_and_their_signatures_still_load(tiny_model, tmp_path):
    folder, images, _ = tiny_model
    old = write_format_1(folder, tmp_path / "format1")
    generate_signing_key(tmp_path / "key.pem", tmp_path / "key.pub")
    sign_model(old, load_private_key(tmp_path / "key.pem"))
    verify_model(old, load_public_key(tmp_path / "key.pub"))
    loaded = Anonymizer.load(old)
    assert_pixels_pinned("tiny_anonymizer_generative", loaded.anonymize(images, seed=SEED, mode="generative"))
    with pytest.raises(ModelFolderError, match="format 1"):
        PrivDiffPipeline.from_pretrained(old)


def test_per_finding_states_are_learned_saved_and_loaded_by_both_loaders(tmp_path):
    """conditioning.finding_states=per_finding: the findings' own state offsets start at zero, move
    with the denoiser's training, and come back from the folder through `Anonymizer.load` and
    `PrivDiffPipeline.from_pretrained` (the conditioning's config.json says which layout it has)."""
    data = generate_arrays(
        SynthParams(sites=1, patients=4, images_per_patient=2, size=32, seed=0)
    ).to_tensors()
    cfg = load_config(
        "tiny", ["device=cpu", "anonymize.ddim_steps=4", "conditioning.finding_states=per_finding"]
    )
    models = build_models(cfg)
    assert not models.conditioner.diagnosis.token_states.any()
    for stage in ("autoencoder", "denoiser"):
        local_train(models, stage, data, cfg, 2, seed=0, progress=False)
    trained = models.conditioner.diagnosis.token_states.detach().clone()
    assert trained.abs().sum() > 0
    folder = save_anonymizer(models, cfg, tmp_path / "anonymizer", {})
    assert (
        json.loads((folder / "conditioning" / "config.json").read_text())["finding_states"] == "per_finding"
    )
    anonymizer = Anonymizer.load(folder)
    torch.testing.assert_close(anonymizer.models.conditioner.diagnosis.token_states, trained)
    pipe = PrivDiffPipeline.from_pretrained(folder)
    torch.testing.assert_close(pipe.conditioning.diagnosis.token_states, trained)
    images = data.images[:2]
    torch.testing.assert_close(
        pipe(images, seed=SEED, mode="generative").images,
        anonymizer.anonymize(images, seed=SEED, mode="generative"),
    )
