"""Experiment configs: OmegaConf YAML files in `configs/`, overridden with `key=value`.

A config names settings, never classes. Every run directory stores the resolved config next to
its outputs (`save_config`), so a result can be reproduced from its folder alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from privdiff_core.errors import PrivdiffError

# configs/ of the checkout, installed as package data of privdiff.configs (setup.py)
CONFIG_DIR = Path(str(resources.files("privdiff.configs")))


class ConfigError(PrivdiffError, ValueError):
    """A config file or override that cannot be used; the message says what to fix."""


def config_path(name_or_path: str | Path) -> Path:
    """The YAML file for `configs/demo.yaml`, `demo.yaml` or just `demo`."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    for candidate in (CONFIG_DIR / path.name, CONFIG_DIR / f"{path.name}.yaml"):
        if candidate.is_file():
            return candidate
    known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))) or "none"
    raise ConfigError(f"config {str(name_or_path)!r} not found (a YAML path, or one of: {known})")


def load_config(name_or_path: str | Path, overrides: Sequence[str] = ()) -> DictConfig:
    """Load a config and apply `key=value` overrides (dotted keys reach nested sections).

    Overrides may only set keys the config already has: a typo fails loudly instead of being
    silently ignored.
    """
    path = config_path(name_or_path)
    try:
        cfg = OmegaConf.load(path)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{path}: not a valid config: {err}") from err
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path}: a config must be a mapping at the top level")
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. train.denoiser.steps=100)")
    OmegaConf.set_struct(cfg, True)
    for item in overrides:  # one at a time, so an error names the override that caused it
        key = item.split("=", 1)[0]
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([item]))
        except ConfigKeyError as err:
            hint = err.msg.splitlines()[0]
            raise ConfigError(f"unknown config key {key!r} in {path.name} ({hint})") from err
        except OmegaConfBaseException as err:
            raise ConfigError(f"bad override {item!r}: {err.msg.splitlines()[0]}") from err
    OmegaConf.set_struct(cfg, False)
    return cfg


def save_config(cfg: DictConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (interpolations replaced by their values)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    tmp.replace(path)


def config_from_yaml(text: str) -> DictConfig:
    """A config from YAML text (for configs stored inside model folders and reports)."""
    cfg = OmegaConf.create(text)
    if not isinstance(cfg, DictConfig):
        raise ConfigError("a config must be a mapping at the top level")
    return cfg
