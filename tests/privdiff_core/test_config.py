import pytest

from privdiff_core.config import CONFIG_DIR, ConfigError, load_config, save_config


@pytest.mark.parametrize("name", ["tiny", "demo", "paper"])
def test_bundled_configs_load_by_name(name):
    cfg = load_config(name)
    assert cfg.image_size > 0
    assert load_config(CONFIG_DIR / f"{name}.yaml") == cfg


def test_override_reaches_nested_key():
    cfg = load_config("tiny", ["synth.patients=7", "data=/tmp/x"])
    assert cfg.synth.patients == 7
    assert cfg.data == "/tmp/x"


def test_unknown_override_key_is_refused():
    with pytest.raises(ConfigError, match="synth.patiants"):
        load_config("tiny", ["synth.patiants=7"])


def test_override_without_equals_is_refused():
    with pytest.raises(ConfigError, match="key=value"):
        load_config("tiny", ["synth.patients"])


def test_unknown_config_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match="tiny"):
        load_config("no-such-config")


def test_saved_config_reloads_identically(tmp_path):
    cfg = load_config("demo", ["seed=3"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg
