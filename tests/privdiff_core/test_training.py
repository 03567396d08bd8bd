"""Stage-wise training (Contract 4): what a federation averages round-trips, the tiny model
learns, stages touch only their own weights, and `privdiff train` resumes where it stopped."""

import numpy as np
import pytest
import torch

from privdiff_core.anonymizer import Anonymizer
from privdiff_core.cli import main
from privdiff_core.config import load_config
from privdiff_core.synth import SynthParams, generate_arrays, generate_federation
from privdiff_core.training import (
    STAGES,
    StageTrainer,
    TrainingError,
    build_models,
    load_stage_state,
    local_train,
    lr_factor,
    resolve_steps,
    stage_state,
)
from privdiff_core.training.run import train_run

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def data():
    """Synthetic CXR phantoms (2 sites x 12 patients x 3 images, 32 px) as CXRTensors."""
    return generate_arrays(SynthParams(sites=2, patients=12, images_per_patient=3, size=32)).to_tensors()


def tiny_cfg(*overrides):
    return load_config("tiny", ["device=cpu", *overrides])


def test_stage_states_partition_the_model_and_round_trip(data):
    cfg = tiny_cfg()
    trained = build_models(cfg)
    for stage in STAGES:
        local_train(trained, stage, data, cfg, 2, seed=0, progress=False)
    states = {stage: stage_state(trained, stage) for stage in STAGES}
    floating = {k for k, v in trained.state_dict().items() if v.is_floating_point()}
    assert set(states["autoencoder"]) | set(states["denoiser"]) == floating
    assert not set(states["autoencoder"]) & set(states["denoiser"])
    assert {"latent_scale", "latent_shift"} <= set(states["autoencoder"])
    assert any(".processor.to_k_sensitive." in k for k in states["denoiser"])
    assert all(v.device.type == "cpu" and v.is_floating_point() for s in states.values() for v in s.values())

    fresh = build_models(tiny_cfg("seed=1"))
    assert not torch.equal(fresh.latent_scale, trained.latent_scale)
    for stage in STAGES:
        load_stage_state(fresh, stage, states[stage])
        assert all(torch.equal(v, states[stage][k]) for k, v in stage_state(fresh, stage).items())
    x = data.images[:2]
    assert torch.equal(fresh.anonymize(x, None, [1, 2], 0.6, 10), trained.anonymize(x, None, [1, 2], 0.6, 10))
    # stage_state is a copy: training afterwards does not change it.
    before = states["denoiser"]["conditioner.age.classes"].clone()
    local_train(trained, "denoiser", data, cfg, 1, seed=0, progress=False)
    assert torch.equal(states["denoiser"]["conditioner.age.classes"], before)


def test_load_stage_state_refuses_a_state_of_another_model(data):
    models = build_models(tiny_cfg())
    state = stage_state(models, "denoiser")
    with pytest.raises(TrainingError, match="missing"):
        load_stage_state(models, "denoiser", {k: v for k, v in state.items() if "conditioner" not in k})
    bad = dict(state)
    bad["conditioner.age.classes"] = torch.zeros(3, 3)
    with pytest.raises(TrainingError, match="shape"):
        load_stage_state(models, "denoiser", bad)
    plain_state = stage_state(build_models(tiny_cfg("sas.enabled=false")), "denoiser")
    with pytest.raises(TrainingError, match="missing"):
        load_stage_state(models, "denoiser", plain_state)
    with pytest.raises(TrainingError, match="unknown stage"):
        stage_state(models, "vae")


@pytest.mark.parametrize("stage,ratio", [("autoencoder", 0.9), ("denoiser", 0.7)])
def test_tiny_model_loss_falls(data, stage, ratio):
    cfg = tiny_cfg()
    models = build_models(cfg)
    if stage == "denoiser":
        local_train(models, "autoencoder", data, cfg, 10, seed=0, progress=False)
    trainer = StageTrainer(models, stage, data, cfg, seed=0)
    losses = [trainer.step()["loss"] for _ in range(30)]
    first, last = np.mean(losses[:8]), np.mean(losses[-8:])
    assert last < ratio * first, (first, last)


def test_local_train_reports_its_progress_before_each_step_and_at_the_end(data):
    cfg = tiny_cfg()
    reported: list[tuple[int, int]] = []
    paced, unpaced = build_models(cfg), build_models(cfg)
    local_train(
        paced, "autoencoder", data, cfg, 3, seed=0, progress=False, on_progress=lambda *p: reported.append(p)
    )
    local_train(unpaced, "autoencoder", data, cfg, 3, seed=0, progress=False)
    assert reported == [(0, 3), (1, 3), (2, 3), (3, 3)]
    # waiting is all a pacer may do: the weights are those of the same training without one
    same = stage_state(unpaced, "autoencoder")
    assert all(torch.equal(v, same[k]) for k, v in stage_state(paced, "autoencoder").items())


def test_stages_train_only_their_own_weights_and_measure_the_latent_scale(data):
    cfg = tiny_cfg()
    models = build_models(cfg)
    untouched = stage_state(models, "denoiser")
    metrics = local_train(models, "autoencoder", data, cfg, 3, seed=0, progress=False)
    assert metrics["examples"] == len(data) and metrics["steps"] == 3 and np.isfinite(metrics["loss"])
    assert {"recon", "kl", "verifier", "attributes", "latent_scale"} <= set(metrics)
    assert all(torch.equal(v, untouched[k]) for k, v in stage_state(models, "denoiser").items())
    with torch.no_grad():
        z = models.encode(data.images)
    assert abs(z.std().item() - 1) < 0.05 and abs(z.mean().item()) < 0.05

    frozen = stage_state(models, "autoencoder")
    before = stage_state(models, "denoiser")
    metrics = local_train(models, "denoiser", data, tiny_cfg("spg.weight=1.0"), 3, seed=0, progress=False)
    assert {"simple", "spg"} <= set(metrics)
    assert all(torch.equal(v, frozen[k]) for k, v in stage_state(models, "autoencoder").items())
    # The sensitive key projections of SAS learn (through the projector) with the rest of the UNet.
    after = stage_state(models, "denoiser")
    sensitive = [k for k in after if ".to_k_sensitive." in k]
    assert sensitive and all(not torch.equal(after[k], before[k]) for k in sensitive)
    assert all(p.requires_grad is False for p in models.vae.parameters())


def test_the_attribute_encoder_learns_on_every_kth_autoencoder_step_only(data):
    cfg = tiny_cfg("train.autoencoder.encoder_every=2")
    models = build_models(cfg)
    trainer = StageTrainer(models, "autoencoder", data, cfg, seed=0)

    def weights(module):
        return [p.detach().clone() for p in module.parameters()]

    def moved(before, module):
        return any(not torch.equal(a, b) for a, b in zip(before, weights(module), strict=True))

    changed_per_step = []
    for _ in range(4):
        vae, encoder = weights(models.vae), weights(models.encoder)
        parts = trainer.step()
        changed_per_step.append((moved(vae, models.vae), moved(encoder, models.encoder), "verifier" in parts))
    # steps 0 and 2 train both; steps 1 and 3 the VAE alone (and report no encoder loss)
    assert changed_per_step == [(True, True, True), (True, False, False)] * 2
    with pytest.raises(TrainingError, match="encoder_every"):
        StageTrainer(build_models(cfg), "autoencoder", data, tiny_cfg("train.autoencoder.encoder_every=0"))


def test_the_vae_trains_on_its_own_batch_size_and_the_denoiser_on_the_shared_one(data):
    cfg = tiny_cfg("train.autoencoder.batch_size=3", "train.batch_size=5")
    models = build_models(cfg)
    autoencoder = StageTrainer(models, "autoencoder", data, cfg, seed=0).objective
    denoiser = StageTrainer(models, "denoiser", data, cfg, seed=0).objective
    assert len(autoencoder.batch(autoencoder.generator(0))[0]) == 3
    assert len(denoiser.batch(denoiser.generator(0))[0]) == 5
    unset = StageTrainer(models, "autoencoder", data, tiny_cfg("train.batch_size=5"), seed=0).objective
    assert len(unset.batch(unset.generator(0))[0]) == 5
    with pytest.raises(TrainingError, match="batch_size"):
        StageTrainer(build_models(cfg), "autoencoder", data, tiny_cfg("train.autoencoder.batch_size=0"))


def test_epochs_count_the_steps_of_each_stage_in_its_own_batches():
    cfg = tiny_cfg(
        "train.autoencoder.steps=null",
        "train.autoencoder.epochs=2",
        "train.denoiser.steps=null",
        "train.denoiser.epochs=2",
        "train.batch_size=5",
        "train.autoencoder.batch_size=3",
    )
    assert resolve_steps(cfg, "autoencoder", 30) == 20  # 2 x 30 films / 3 a step
    assert resolve_steps(cfg, "denoiser", 30) == 12  # 2 x 30 films / 5 a step


@pytest.mark.parametrize("stage", STAGES)
def test_each_term_backward_at_once_gives_the_gradients_of_the_summed_loss(data, stage):
    """The trainer takes each term's gradients as soon as the term is formed (StageObjective.
    _spent: the terms' activations are never held together); the gradients must be those of one
    backward pass through their sum, in the steps that train the encoder too (step 0) and the
    autoencoder alone (step 1 with encoder_every 2)."""
    cfg = tiny_cfg("train.autoencoder.encoder_every=2", "encoder.findings_network=true")
    for step in (0, 1):
        gradients = []
        for backward in (False, True):
            torch.manual_seed(0)
            models = build_models(cfg)
            trainer = StageTrainer(models, stage, data, cfg, seed=0, device="cpu")
            loss, parts = trainer.objective(step, backward=backward)
            if not backward:
                assert loss.requires_grad
                loss.backward()
            else:
                assert not loss.requires_grad
            gradients.append((loss.item(), parts, {n: p.grad for n, p in models.named_parameters()}))
        (summed_loss, summed_parts, summed), (spent_loss, spent_parts, spent) = gradients
        assert spent_loss == pytest.approx(summed_loss, rel=1e-6) and spent_parts == summed_parts
        assert {n for n, g in summed.items() if g is not None} == {
            n for n, g in spent.items() if g is not None
        }
        assert any(g is not None for g in spent.values())
        for name, reference in summed.items():
            if reference is not None:
                torch.testing.assert_close(spent[name], reference, rtol=1e-5, atol=1e-7, msg=name)


def test_extra_findings_steps_train_the_findings_network_alone(data):
    """encoder.findings_steps: each denoiser step also takes that many Adam steps of the findings
    network, each on a batch of its own; the denoiser's own steps are exactly those of one step."""
    overrides = ["encoder.findings_network=true", "encoder.findings_batch=5"]
    trained = {}
    for steps in (1, 3):
        cfg = tiny_cfg(*overrides, f"encoder.findings_steps={steps}")
        models = build_models(cfg)
        batches: list[int] = []
        models.encoder.findings.register_forward_pre_hook(
            lambda _, args, seen=batches: seen.append(len(args[0]))
        )
        trainer = StageTrainer(models, "denoiser", data, cfg, seed=0, device="cpu")
        for _ in range(2):
            trainer.step()
        assert batches == [5] * 2 * steps
        adam_steps = {
            group: {int(trainer.optimizer.state[p]["step"]) for p in params}
            for group, params in (
                ("findings", list(models.encoder.findings.parameters())),
                ("unet", list(models.unet.parameters())),
            )
        }
        assert adam_steps == {"findings": {2 * steps}, "unet": {2}}
        trained[steps] = models
    one, three = (dict(trained[s].named_parameters()) for s in (1, 3))
    for name, value in one.items():
        if name.startswith(("unet.", "conditioner.")):
            torch.testing.assert_close(three[name], value, rtol=0, atol=0, msg=name)
    assert any(not torch.equal(three[n], one[n]) for n in one if n.startswith("encoder.findings."))
    with pytest.raises(TrainingError, match="findings_steps"):
        StageTrainer(
            build_models(tiny_cfg(*overrides)),
            "denoiser",
            data,
            tiny_cfg(*overrides, "encoder.findings_steps=0"),
            seed=0,
            device="cpu",
        )


def test_spg_off_trains_with_the_plain_loss(data):
    cfg = tiny_cfg("spg.enabled=false")
    metrics = local_train(build_models(cfg), "denoiser", data, cfg, 2, seed=0, progress=False)
    assert "spg" not in metrics and metrics["simple"] == pytest.approx(metrics["loss"])


def test_interrupted_run_resumes_to_the_same_weights(data, tmp_path):
    cfg = tiny_cfg(
        "train.autoencoder.steps=4",
        "train.denoiser.steps=4",
        "train.checkpoint_every=2",
        "train.val_batches=1",
    )
    kwargs = {"progress": False, "train_data": data, "val_data": data.subset(range(8))}
    straight = train_run(cfg, "unused", tmp_path / "straight", **kwargs)
    assert straight.finished and straight.steps_done == 8

    run = tmp_path / "interrupted"
    first = train_run(cfg, "unused", run, stop_after=3, **kwargs)
    assert not first.finished and first.steps_done == 3
    saved = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert saved["stage_index"] == 0 and saved["trainer"]["step"] == 3
    second = train_run(cfg, "unused", run, stop_after=3, **kwargs)  # crosses into the denoiser
    assert second.steps_done == 3
    saved = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert saved["stage_index"] == 1 and saved["trainer"]["step"] == 2
    last = train_run(cfg, "unused", run, **kwargs)
    assert last.finished and last.steps_done == 2  # continued, not restarted

    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=True)["models"]
    b = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["models"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (run / "anonymizer" / "manifest.json").is_file() and (run / "config.yaml").is_file()
    assert "val_loss" in last.metrics["stages"]["denoiser"]

    with pytest.raises(TrainingError, match="different model config"):
        train_run(tiny_cfg("sas.enabled=false"), "unused", run, **kwargs)


class _Planted:
    """What a planted checkpoint smuggles in: unpickling it would call os.system."""

    def __reduce__(self):  # noqa: ANN204
        import os

        return (os.system, ("touch PLANTED",))


def test_a_planted_pickle_checkpoint_is_refused_without_running_it(data, tmp_path, monkeypatch):
    cfg = tiny_cfg("train.autoencoder.steps=2", "train.denoiser.steps=2", "train.checkpoint_every=1")
    kwargs = {"progress": False, "train_data": data, "val_data": data.subset(range(8))}
    run = tmp_path / "run"
    train_run(cfg, "unused", run, stop_after=1, **kwargs)
    saved = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    torch.save({**saved, "metrics": _Planted()}, run / "checkpoints" / "last.pt")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TrainingError, match="refusing a checkpoint that holds more than tensors"):
        train_run(cfg, "unused", run, **kwargs)
    assert not (tmp_path / "PLANTED").exists()


@pytest.mark.slow
def test_train_command_on_a_synthetic_federation(tmp_path, capsys):
    fed = tmp_path / "fed"
    generate_federation(fed, SynthParams(sites=2, patients=8, images_per_patient=3, size=32), progress=False)
    run = tmp_path / "run"
    args = [
        "train", "--config", "tiny", f"data={fed}", f"out={run}", "device=cpu",
        "train.autoencoder.steps=3", "train.denoiser.steps=3", "train.checkpoint_every=1", "--no-progress",
    ]  # fmt: skip
    assert main([*args, "--stop-after", "4"]) == 0
    assert "run the same command again" in capsys.readouterr().out
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "anonymizer:" in out and "val" in out
    assert (run / "anonymizer" / "manifest.json").is_file() and (run / "metrics.json").is_file()
    assert main(["train", "--config", "tiny", f"out={run}"]) == 2
    assert "data=DIR" in capsys.readouterr().err
    # a second stage on the first one's autoencoder: the summary says where that stage came from
    reused = tmp_path / "reused"
    elsewhere = [a for a in args if not a.startswith("out=")] + [f"out={reused}"]
    assert main([*elsewhere, f"train.autoencoder.reuse={run}"]) == 0
    out = capsys.readouterr().out
    assert f"autoencoder reused from {run / 'anonymizer'}" in out and "denoiser loss" in out


def test_ctrl_c_leaves_a_checkpoint_to_resume_from(data, tmp_path, monkeypatch):
    cfg = tiny_cfg("train.autoencoder.steps=3", "train.denoiser.steps=2", "train.checkpoint_every=100")
    real_step, calls = StageTrainer.step, []

    def interrupted_step(self, progress=0.0):
        calls.append(self.step_index)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_step(self, progress)

    monkeypatch.setattr(StageTrainer, "step", interrupted_step)
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, "unused", tmp_path, progress=False, train_data=data)
    saved = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert saved["stage_index"] == 0 and saved["trainer"]["step"] == 2
    monkeypatch.setattr(StageTrainer, "step", real_step)
    result = train_run(cfg, "unused", tmp_path, progress=False, train_data=data)
    assert result.finished and result.steps_done == 3


def test_ablation_variants_can_share_one_trained_autoencoder_stage(data, tmp_path):
    steps = ["train.autoencoder.steps=3", "train.denoiser.steps=2", "train.val_batches=0"]
    first = train_run(tiny_cfg(*steps), "unused", tmp_path / "full", progress=False, train_data=data)
    cfg = tiny_cfg(
        *steps, "sas.enabled=false", "spg.enabled=false", f"train.autoencoder.reuse={tmp_path / 'full'}"
    )
    variant = train_run(cfg, "unused", tmp_path / "vanilla", progress=False, train_data=data)
    assert variant.finished and variant.steps_done == 2  # only the denoiser trained
    a = Anonymizer.load(first.anonymizer).models
    b = Anonymizer.load(variant.anonymizer).models
    assert all(
        torch.equal(v, stage_state(b, "autoencoder")[k]) for k, v in stage_state(a, "autoencoder").items()
    )
    bad = tiny_cfg(*steps, "vae.latent_channels=3", f"train.autoencoder.reuse={tmp_path / 'full'}")
    with pytest.raises(TrainingError, match="does not fit"):
        train_run(bad, "unused", tmp_path / "bad", progress=False, train_data=data)


def test_trainers_of_both_stages_can_share_one_model(data):
    cfg = tiny_cfg()
    models = build_models(cfg)
    first, second = (
        StageTrainer(models, "autoencoder", data, cfg),
        StageTrainer(models, "denoiser", data, cfg),
    )
    for _ in range(2):
        assert np.isfinite(first.step()["loss"]) and np.isfinite(second.step()["loss"])


def test_spg_without_its_loss_trains_each_sample_on_one_guidance_pattern(data):
    cfg = tiny_cfg()  # spg.weight 0: one prediction per sample, its pattern drawn at random
    models = build_models(cfg)
    calls = []
    hook = models.unet.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    metrics = local_train(models, "denoiser", data, cfg, 2, seed=0, progress=False)
    hook.remove()
    assert calls == [cfg.train.batch_size] * 2 and "spg" not in metrics


@pytest.mark.parametrize("stage", STAGES)
def test_both_stages_step_with_the_fused_adam_kernel_on_the_cpu(data, stage):
    cfg = tiny_cfg()
    trainer = StageTrainer(build_models(cfg), stage, data, cfg, seed=0, device="cpu")
    assert trainer.optimizer.defaults["fused"] is True  # privdiff_core/optimizers.py
    trainer.step()
    # The kept state (a site's between rounds) loads into a fresh trainer's fused Adam.
    fresh = StageTrainer(build_models(cfg), stage, data, cfg, seed=0, device="cpu")
    assert fresh.load_optimizer_tensors(trainer.optimizer_tensors())
    fresh.step()


def test_optimizer_state_carries_over_between_calls(data):
    cfg = tiny_cfg()
    kept, fresh = build_models(cfg), build_models(cfg)
    fresh.load_state_dict(kept.state_dict())
    state: dict = {}
    local_train(kept, "autoencoder", data, cfg, 2, seed=0, progress=False, optimizer_state=state)
    local_train(fresh, "autoencoder", data, cfg, 2, seed=0, progress=False)
    assert state and all(torch.isfinite(v).all() for v in state.values())
    assert int(state["0.step"]) == 2
    # A second call continues Adam (its step count goes on) and so moves the weights differently.
    local_train(kept, "autoencoder", data, cfg, 1, seed=1, progress=False, optimizer_state=state)
    local_train(fresh, "autoencoder", data, cfg, 1, seed=1, progress=False)
    assert int(state["0.step"]) == 3
    assert not torch.equal(kept.vae.encoder.conv_in.weight, fresh.vae.encoder.conv_in.weight)


def test_cosine_schedule_decays_every_lr_of_the_stage_to_its_final_fraction():
    cfg = tiny_cfg("train.denoiser.lr_schedule=cosine", "train.denoiser.lr_final=0.2")
    assert lr_factor(cfg, "autoencoder", 0.7) == 1.0  # constant: the default
    assert lr_factor(cfg, "denoiser", 0.0) == pytest.approx(1.0)
    assert lr_factor(cfg, "denoiser", 0.5) == pytest.approx(0.6)
    assert lr_factor(cfg, "denoiser", 1.0) == pytest.approx(0.2)
    factors = [lr_factor(cfg, "denoiser", p / 10) for p in range(11)]
    assert all(a > b for a, b in zip(factors, factors[1:], strict=False))
    with pytest.raises(TrainingError, match="train.denoiser.lr_schedule must be one of"):
        lr_factor(tiny_cfg("train.denoiser.lr_schedule=linear"), "denoiser", 0.5)
    with pytest.raises(TrainingError, match="lr_final must be in"):
        lr_factor(tiny_cfg("train.denoiser.lr_schedule=cosine", "train.denoiser.lr_final=2"), "denoiser", 0.5)


def test_a_federated_round_trains_its_part_of_the_schedule(data):
    """local_train's schedule_span reaches the optimizer: at the end of a cosine schedule that
    decays to 0 the weights stay where they are; at its start they move."""
    cfg = tiny_cfg("train.denoiser.lr_schedule=cosine", "train.denoiser.lr_final=0")
    models = build_models(cfg)
    before = stage_state(models, "denoiser")
    local_train(models, "denoiser", data, cfg, 2, seed=0, progress=False, schedule_span=(1.0, 1.0))
    assert all(torch.equal(v, before[k]) for k, v in stage_state(models, "denoiser").items())
    local_train(models, "denoiser", data, cfg, 2, seed=0, progress=False, schedule_span=(0.0, 0.5))
    assert not all(torch.equal(v, before[k]) for k, v in stage_state(models, "denoiser").items())
    with pytest.raises(TrainingError, match="schedule_span"):
        local_train(models, "denoiser", data, cfg, 1, seed=0, progress=False, schedule_span=(0.6, 0.5))


def test_privdiff_train_runs_each_stage_through_its_whole_schedule(data, tmp_path, monkeypatch):
    cfg = tiny_cfg("train.autoencoder.steps=4", "train.denoiser.steps=2", "train.checkpoint_every=100")
    real_step, seen = StageTrainer.step, []

    def recorded_step(self, progress=0.0):
        seen.append((self.stage, progress))
        return real_step(self, progress)

    monkeypatch.setattr(StageTrainer, "step", recorded_step)
    train_run(cfg, "unused", tmp_path, progress=False, train_data=data)
    assert seen == [
        ("autoencoder", 0.0), ("autoencoder", 0.25), ("autoencoder", 0.5), ("autoencoder", 0.75),
        ("denoiser", 0.0), ("denoiser", 0.5),
    ]  # fmt: skip


def test_cpu_precision_puts_only_the_unets_forward_in_bfloat16(data, monkeypatch):
    """train.denoiser.cpu_precision: "bfloat16" runs the UNet's forward in bfloat16 on the CPU;
    the findings network (it learned a little worse in bfloat16) and every weight stay float32, so the
    first step's findings loss is float32's exactly and its denoising loss is not."""
    overrides = ["encoder.findings_network=true", "encoder.findings_batch=5"]
    start = build_models(tiny_cfg(*overrides)).state_dict()
    dtypes: dict[str, dict[str, torch.dtype]] = {}
    parts = {}
    for chosen in ("float32", "bfloat16"):
        cfg = tiny_cfg(*overrides, f"train.denoiser.cpu_precision={chosen}")
        models = build_models(cfg)
        models.load_state_dict(start)
        seen = dtypes.setdefault(chosen, {})
        for name, module in (("unet", models.unet.conv_in), ("findings", models.encoder.findings)):

            def record(_module, _args, out, seen=seen, name=name) -> None:  # None: output unchanged
                seen.setdefault(name, out.dtype)

            module.register_forward_hook(record)
        parts[chosen] = StageTrainer(models, "denoiser", data, cfg, seed=0, device="cpu").step()
        assert {p.dtype for p in models.parameters()} == {torch.float32}
    assert dtypes == {
        "float32": {"unet": torch.float32, "findings": torch.float32},
        "bfloat16": {"unet": torch.bfloat16, "findings": torch.float32},
    }
    bf16, fp32 = parts["bfloat16"], parts["float32"]
    assert np.isfinite(bf16["simple"]) and bf16["simple"] != fp32["simple"]
    assert bf16["findings"] == fp32["findings"]

    # "auto": bfloat16 only where the CPU multiplies it itself (emulated, it is slower than float32)
    from privdiff_core.training import precision

    for has_bf16 in (True, False):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=has_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        assert precision.unet_bf16_on_cpu("auto") is has_bf16
    assert precision.unet_bf16_on_cpu("float32") is False and precision.unet_bf16_on_cpu("bfloat16") is True
    with pytest.raises(TrainingError, match="cpu_precision"):
        StageTrainer(build_models(tiny_cfg()), "denoiser", data, tiny_cfg("train.denoiser.cpu_precision=on"))
