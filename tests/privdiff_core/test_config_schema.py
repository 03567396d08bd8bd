"""The typed config: each bundled config keeps the values it had as three full files, and a
wrong type or unknown key is refused at load time, naming the key."""

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from privdiff_core.config import ConfigError, config_from_yaml, load_config

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "configs"

# Keys the code read with a fallback before the schema existed; the schema now names them, with
# that fallback as their default, so the effective values are unchanged.
ADDED = {
    "evaluate.verifier.augment": False,
    "evaluate.classifier.augment": False,
    "evaluate.memorization_fpr": 0.01,
    "federation.dp.target_delta": 1e-5,
    "federation.dp.max_epsilon": None,
    "federation.simulation.evaluation": None,
}


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value and key != "variants":
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("name", ["tiny", "demo", "paper"])
def test_each_config_loads_to_the_values_of_its_former_full_file(name):
    before = _flat(json.loads((FIXTURES / f"{name}.json").read_text()))
    after = _flat(OmegaConf.to_container(load_config(name), resolve=True))
    for key, value in before.items():
        assert key in after, key
        assert after[key] == value and type(after[key]) in (type(value), float), (key, value, after[key])
    added = {key: after[key] for key in after.keys() - before.keys()}
    assert added == {key: value for key, value in ADDED.items() if key in added}
    assert set(added) <= set(ADDED)


def test_overlays_only_hold_what_differs_from_the_defaults():
    tiny = load_config("tiny")
    for name in ("demo", "paper"):
        overlay = _flat(
            OmegaConf.to_container(OmegaConf.load(FIXTURES.parents[2] / "configs" / f"{name}.yaml"))
        )
        assert all(OmegaConf.select(tiny, key) != value for key, value in overlay.items()), name


def test_bad_type_in_an_override_names_the_key():
    with pytest.raises(ConfigError, match=r"'train\.batch_size'.*could not be converted to Integer") as err:
        load_config("tiny", ["train.batch_size=abc"])
    assert "\n" not in str(err.value)


def test_bad_type_in_a_file_names_the_key_and_the_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("train:\n  denoiser:\n    lr: fast\n")
    with pytest.raises(ConfigError, match=r"'train\.denoiser\.lr' in mine\.yaml"):
        load_config(path)


def test_unknown_key_in_a_file_is_refused(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("unet:\n  head: 8\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'unet\.head' in mine\.yaml"):
        load_config(path)


def test_a_partial_file_gets_the_defaults(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("image_size: 64\ntrain: {batch_size: 4}\n")
    cfg = load_config(path)
    assert (cfg.image_size, cfg.train.batch_size, cfg.train.denoiser.steps) == (64, 4, 40)


def test_values_arrive_typed():
    cfg = load_config("tiny", ["train.denoiser.lr=1", "federation.secagg.num_shares=5", "out=7"])
    assert isinstance(cfg.train.denoiser.lr, float) and cfg.train.denoiser.lr == 1.0
    assert cfg.federation.secagg.num_shares == 5 and cfg.out == "7"
    assert load_config("tiny", ["federation.secagg.num_shares=auto"]).federation.secagg.num_shares == "auto"


def test_a_stored_config_is_read_as_written_with_known_keys_typed():
    """A model folder's config keeps unknown keys and gets no defaults: the model behaves as trained."""
    cfg = config_from_yaml("image_size: 32\nspg: {w_s: -2, retired_knob: 3}\nold_section: {a: 1}\n")
    assert cfg.spg.retired_knob == 3 and cfg.old_section.a == 1
    assert "negative" not in cfg.spg and "train" not in cfg
    assert isinstance(cfg.spg.w_s, float)
    with pytest.raises(ConfigError, match=r"'spg\.w_s' in the stored config"):
        config_from_yaml("spg: {w_s: strong}\n")


@pytest.mark.usefixtures("one_thread")
def test_a_model_folder_with_a_key_this_version_does_not_know_still_loads(tmp_path):
    from privdiff_core.model import PrivDiffModels
    from privdiff_core.model.folder import MANIFEST_FILE, load_models, save_models

    folder = save_models(PrivDiffModels(load_config("tiny")), load_config("tiny"), tmp_path / "model")
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["config"]["spg"]["retired_knob"] = 3
    manifest["config"]["old_section"] = {"a": 1}
    del manifest["config"]["spg"]["negative"]  # written before the option existed
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    models, cfg, _ = load_models(folder)
    assert cfg.spg.retired_knob == 3 and models.spg_negative == "paper"  # the old default, not today's


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.batch_size=abc", "privdiff train: error: config key 'train.batch_size' in override"),
        ("train.batch_sise=8", "privdiff train: error: unknown config key 'train.batch_sise'"),
    ],
)
def test_the_cli_says_which_key_is_wrong_in_one_line_before_writing_anything(
    tmp_path, capsys, override, message
):
    from privdiff_core.cli import main

    run = tmp_path / "run"
    assert main(["train", "--config", "tiny", override, f"data={tmp_path}", f"out={run}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err
    assert not run.exists()
