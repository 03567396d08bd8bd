"""The site's Flower ClientApp (client/client_app.py), called in-process with the tiny PrivDiff-Net.

The federated tests run it inside Flower's engine; these check, message by message, what a site
answers: its description, its update (local minus global, clipped as told), its refusal to send
an unmasked update when it requires SecAgg+, and the install acknowledgement of a signed model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common import FitIns
from flwr.compat.common.recorddict_compat import fitins_to_recorddict, recorddict_to_fitres
from flwr.supercore.task_identity import TaskIdentity
from omegaconf import OmegaConf

from privdiff.client.client_app import NodeConfigSites, SimulatedSites, make_client_app
from privdiff.common import protocol
from privdiff.common.distribution import current_model, model_version, pack_folder
from privdiff.common.errors import FederationError
from privdiff.common.npy import from_parameters, to_parameters
from privdiff.common.task import PrivdiffTask
from privdiff.common.updates import StateLayout, flatten_state
from privdiff_core.config import load_config
from privdiff_core.signing import generate_signing_key, load_private_key

SITE_NODE = 7


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """One synthetic hospital, the federation's keys and a home folder with its public key."""
    from privdiff_core.synth import SynthParams, generate_federation

    root = tmp_path_factory.mktemp("site")
    generate_federation(
        root / "federation", SynthParams(sites=1, patients=6, images_per_patient=2, size=32), progress=False
    )
    generate_signing_key(root / "fed.pem", root / "fed.pub")
    generate_signing_key(root / "other.pem", root / "other.pub")
    (root / "home").mkdir()
    (root / "home" / "federation-public.pem").write_bytes((root / "fed.pub").read_bytes())
    return root


@pytest.fixture(scope="module")
def cfg():
    return load_config("tiny", ["device=cpu"])


@pytest.fixture(autouse=True)
def task_identity():
    """Flower stamps replies with the run it serves; the engine sets this, here the test does."""
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, SITE_NODE


def _context(node_config: dict) -> Context:
    return Context(run_id=1, node_id=SITE_NODE, node_config=node_config, state=RecordDict(), run_config={})


def _simulated(site: Path):
    sites = SimulatedSites((site / "federation" / "site_00",), (site / "home",))
    return make_client_app(sites), _context({"partition-id": 0, "num-partitions": 1})


def _message(content: RecordDict, message_type: str) -> Message:
    return Message(content=content, dst_node_id=SITE_NODE, message_type=message_type, group_id="1")


def _train_message(cfg, stage: str, clipping_range: float, round_: int = 1) -> tuple[Message, np.ndarray]:
    task = PrivdiffTask()
    models = task.build_models(cfg)
    state = task.stage_state(models, stage)
    layout = StateLayout.of(state)
    arrays = [flatten_state(state, layout)]
    if stage == "denoiser":
        frozen = task.stage_state(models, "autoencoder")
        arrays.append(flatten_state(frozen, StateLayout.of(frozen)))
    fit = protocol.FitConfig(
        stage=stage,
        round=round_,
        stage_round=round_,
        local_steps=1,
        layout=layout.fingerprint,
        clipping_range=clipping_range,
        seed=0,
        config_yaml=OmegaConf.to_yaml(cfg),
    )
    content = fitins_to_recorddict(FitIns(to_parameters(arrays), fit.to_record()), keep_input=True)
    return _message(content, "train"), arrays[0]


def test_describe_reports_examples_and_the_model_layout_per_stage(site, cfg):
    app, context = _simulated(site)
    reply = app(
        _message(
            RecordDict({protocol.CONFIG_RECORD: ConfigRecord({"config-yaml": OmegaConf.to_yaml(cfg)})}),
            protocol.DESCRIBE,
        ),
        context,
    )
    record = reply.content.config_records[protocol.CONFIG_RECORD]
    from privdiff_core.data import open_dataset

    assert record["examples"] == len(open_dataset(site / "federation" / "site_00", 32, split="train"))
    task = PrivdiffTask()
    models = task.build_models(cfg)
    assert list(record["layouts"]) == [
        StateLayout.of(task.stage_state(models, s)).fingerprint for s in task.stages
    ]
    assert record["can-install"] is True
    assert set(record) == {"examples", "layouts", "can-install"}  # nothing else about the site


@pytest.mark.parametrize("stage", ["autoencoder", "denoiser"])
def test_a_round_answers_local_minus_global_and_nothing_else(site, cfg, stage):
    app, context = _simulated(site)
    message, global_vector = _train_message(cfg, stage, clipping_range=0.0)
    reply = app(message, context)
    assert not reply.has_error()
    fitres = recorddict_to_fitres(reply.content, keep_input=True)
    [update] = from_parameters(fitres.parameters)  # one vector: the update of the trained stage only
    assert update.shape == global_vector.shape and np.isfinite(update).all() and np.abs(update).max() > 0
    assert fitres.num_examples > 0 and fitres.metrics["examples"] == fitres.num_examples
    assert fitres.metrics["clipped-values"] == 0 and np.isfinite(fitres.metrics["loss"])
    assert 2.0 ** fitres.metrics["update-range-exp"] >= np.abs(update).max()
    assert set(reply.content.array_records) == {"fitres.parameters"}  # no images, no labels, no ids


def test_a_site_keeps_its_optimizer_state_between_rounds_and_never_sends_it(site, cfg):
    app, context = _simulated(site)
    store = site / "home" / "cache" / "optimizer"
    stale = store / "run-0" / "autoencoder-round-9.pt"  # an earlier run's state: not this run's
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"")

    def train(round_: int):
        message, _ = _train_message(cfg, "autoencoder", clipping_range=0.0, round_=round_)
        return app(message, context)

    def steps() -> dict[str, int]:
        return {
            path.name: int(torch.load(path, weights_only=True)["0.step"])
            for path in sorted((store / "run-1").glob("autoencoder-*"))  # (the other tests' denoiser: theirs)
        }

    reply = train(1)
    assert steps() == {"autoencoder-round-1.pt": 1}  # Adam's moments after the round's one step
    assert not stale.exists()
    assert set(reply.content.array_records) == {"fitres.parameters"}  # the state stays on the site
    assert not context.state.array_records  # nor does it travel with every message (Flower's context)
    train(1)  # the server ran round 1 again (a rejected sum): it starts afresh, as the first attempt did
    assert steps() == {"autoencoder-round-1.pt": 1}
    train(2)
    train(3)  # continues round 2's state; round 1's is no longer needed
    assert steps() == {"autoencoder-round-2.pt": 2, "autoencoder-round-3.pt": 3}


def test_an_update_beyond_the_range_is_clipped_and_counted(site, cfg):
    app, context = _simulated(site)
    message, _ = _train_message(cfg, "autoencoder", clipping_range=2.0**-20)
    fitres = recorddict_to_fitres(app(message, context).content, keep_input=True)
    [update] = from_parameters(fitres.parameters)
    assert np.abs(update).max() <= 2.0**-20
    assert fitres.metrics["clipped-values"] > 0
    assert 2.0 ** fitres.metrics["update-range-exp"] > 2.0**-20  # the server learns the range it needs


def test_a_site_that_requires_secagg_refuses_an_unmasked_round(site, cfg):
    app = make_client_app(NodeConfigSites())
    context = _context(
        {
            "data": str(site / "federation" / "site_00"),
            "model-store": str(site / "store"),
            "require-secagg": True,
        }
    )
    message, _ = _train_message(cfg, "autoencoder", clipping_range=0.0)
    with pytest.raises(FederationError, match="refuses to send an unmasked update"):
        app(message, context)


def test_a_deployed_site_needs_its_data_folder_in_node_config():
    with pytest.raises(FederationError, match="--data"):
        NodeConfigSites().site(_context({"model-store": "/tmp/x"}))


def _install_message(folder: Path) -> Message:
    files = {name: Array(data) for name, data in pack_folder(folder).items()}
    return _message(
        RecordDict(
            {
                "anonymizer": ArrayRecord(array_dict=files),
                protocol.CONFIG_RECORD: ConfigRecord({"version": model_version(folder)}),
            }
        ),
        protocol.INSTALL_ANONYMIZER,
    )


def test_install_acknowledges_a_verified_model_and_reports_a_refused_one(site, cfg, tmp_path):
    from privdiff_core.signing import sign_model

    app, context = _simulated(site)
    task = PrivdiffTask()
    models = task.build_models(cfg)
    good, forged = tmp_path / "good", tmp_path / "forged"
    for folder, key in ((good, "fed.pem"), (forged, "other.pem")):
        task.save_anonymizer(models, cfg, folder, {"created": "2026-11-27T00:00:00Z"})
        sign_model(folder, load_private_key(site / key), {"created": "2026-11-27T00:00:00Z"})
    ack = app(_install_message(good), context).content.config_records[protocol.CONFIG_RECORD]
    assert ack["installed"] is True and ack["version"] == model_version(good)
    installed = current_model(site / "home" / "model-store")
    assert installed is not None and installed.name == model_version(good)
    ack = app(_install_message(forged), context).content.config_records[protocol.CONFIG_RECORD]
    assert ack["installed"] is False and "federation key" in ack["error"]
    assert current_model(site / "home" / "model-store") == installed
