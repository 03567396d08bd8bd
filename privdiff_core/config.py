"""Experiment configs: OmegaConf YAML files in `configs/` on the typed schema of
`config_schema.py`, overridden with `key=value`.

A config names settings, never classes. Every run directory stores the resolved config next to
its outputs (`save_config`), so a result can be reproduced from its folder alone.

A config stored inside a model folder or sent by the server (`stored_config`) is read as it was
written: the keys the schema knows are type-checked, none is filled in from today's defaults (a
model keeps the settings it was trained with), and a key this version does not know (a removed
setting, a newer server) does not stop a site from loading an existing model.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from privdiff_core.config_schema import PrivdiffConfig
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


def _schema_error(err: OmegaConfBaseException, source: str) -> ConfigError:
    """One line naming the key: `source` says where the value came from (a file, an override)."""
    key = err.full_key or "?"
    reason = (err.msg or str(err)).splitlines()[0]
    if isinstance(err, ConfigKeyError):
        return ConfigError(f"unknown config key {key!r} in {source} (see privdiff_core/config_schema.py)")
    return ConfigError(f"config key {key!r} in {source}: {reason}")


def load_config(name_or_path: str | Path, overrides: Sequence[str] = ()) -> DictConfig:
    """Load a config onto the typed schema and apply `key=value` overrides (dotted keys reach
    nested sections).

    Every value is checked against `PrivdiffConfig` here, before a command writes anything: a
    wrong type or an unknown key (a typo) is a `ConfigError` naming the key.
    """
    path = config_path(name_or_path)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. train.denoiser.steps=100)")
    try:
        file_cfg = OmegaConf.load(path)
    except (OmegaConfBaseException, yaml.YAMLError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"{path}: not a valid config: {reason}") from err
    if not isinstance(file_cfg, DictConfig):
        raise ConfigError(f"{path}: a config must be a mapping at the top level")
    cfg = OmegaConf.structured(PrivdiffConfig)
    try:
        cfg = OmegaConf.merge(cfg, file_cfg)
    except OmegaConfBaseException as err:
        raise _schema_error(err, path.name) from err
    for item in overrides:  # one at a time, so an error names the override that caused it
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as err:
            raise _schema_error(err, f"override {item!r}") from err
    assert isinstance(cfg, DictConfig)
    # Code may attach run-time sections (benchmarks do); the schema already checked the file.
    OmegaConf.set_struct(cfg, False)
    return cfg


def save_config(cfg: DictConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (interpolations replaced by their values)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    tmp.replace(path)


def _drop(tree: dict, dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree[key]
    del tree[leaf]


def _as_written(written: dict, typed: dict) -> dict:
    """`written`'s keys, with the schema's typed value where the schema knows the key."""
    out = {}
    for key, value in written.items():
        if key not in typed:
            out[key] = value
        elif isinstance(value, dict) and isinstance(typed[key], dict):
            out[key] = _as_written(value, typed[key])
        else:
            out[key] = typed[key]
    return out


def stored_config(data: Mapping[str, Any] | DictConfig) -> DictConfig:
    """A config stored with a model or sent by the server, as it was written: the keys the schema
    knows are type-checked (and converted), keys it does not know are kept, and no key is filled in
    from today's defaults, so a model runs with the settings it was trained with."""
    if isinstance(data, DictConfig):
        data = OmegaConf.to_container(data, resolve=True)
    if not isinstance(data, Mapping):
        raise ConfigError("a config must be a mapping at the top level")
    written = copy.deepcopy(dict(data))
    known = copy.deepcopy(written)
    for _ in range(_count_keys(known) + 1):  # each pass drops one key the schema does not know
        try:
            typed = OmegaConf.merge(OmegaConf.structured(PrivdiffConfig), known)
            break
        except ConfigKeyError as err:
            _drop(known, str(err.full_key))
        except OmegaConfBaseException as err:
            raise _schema_error(err, "the stored config") from err
    else:  # unreachable: every pass drops a key, and a config of no keys merges
        raise ConfigError("the stored config could not be read")
    container = OmegaConf.to_container(typed, resolve=True)
    assert isinstance(container, dict)
    return OmegaConf.create(_as_written(written, container))


def _count_keys(tree: Any) -> int:
    return sum(1 + _count_keys(v) for v in tree.values()) if isinstance(tree, dict) else 0


def config_from_yaml(text: str) -> DictConfig:
    """A stored config from YAML text (model folders, the server's task messages): `stored_config`."""
    try:
        data = OmegaConf.create(text)
    except OmegaConfBaseException as err:
        raise ConfigError(f"not a valid stored config: {str(err).splitlines()[0]}") from err
    if not isinstance(data, DictConfig):
        raise ConfigError("a config must be a mapping at the top level")
    return stored_config(data)
