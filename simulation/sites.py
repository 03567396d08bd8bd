"""The virtual hospitals of a simulation: their data folders and what each keeps locally.

Site data is a synthetic federation (privdiff_core.synth, Contract 1) made for the run, or the
federation folder given as `data=`. A synthetic one is reused when the run folder already holds
one made with the same settings (generator version included), and regenerated otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from privdiff.common.errors import FederationError

FEDERATION_DIR = "federation"
SYNTH_KEY_FILE = "synth-key.json"
PUBLIC_KEY_NAME = "federation-public.pem"


def site_folders(root: Path) -> list[Path]:
    """Site folders (those with a labels.csv) of a federation folder, in name order."""
    sites = sorted(p for p in Path(root).iterdir() if p.is_dir() and (p / "labels.csv").is_file())
    if not sites:
        raise FederationError(f"{root}: no site folders (site_XX/labels.csv) in this federation folder")
    return sites


def synthetic_federation(cfg: DictConfig, run_dir: Path, sites: int, progress: bool = True) -> Path:
    """The run's synthetic federation with `sites` hospitals, made once per synth settings."""
    from privdiff_core.synth import GENERATOR_VERSION, SynthParams, generate_federation

    settings = OmegaConf.to_container(cfg.synth, resolve=True) if "synth" in cfg else {}
    assert isinstance(settings, dict)
    params = SynthParams.from_mapping({**settings, "sites": sites})
    key = {"generator": GENERATOR_VERSION, **asdict(params)}
    root = run_dir / FEDERATION_DIR
    key_file = run_dir / SYNTH_KEY_FILE
    if root.is_dir() and key_file.is_file() and json.loads(key_file.read_text()) == key:
        return root
    key_file.unlink(missing_ok=True)  # a half-made federation is never mistaken for a finished one
    generate_federation(root, params, overwrite=True, progress=progress, workers=min(4, os.cpu_count() or 1))
    key_file.write_text(json.dumps(key, indent=2))
    return root


def prepare_site_homes(site_dirs: list[Path], run_dir: Path, public_key: Path) -> list[Path]:
    """RUN/sites/<site>/ per site with its copy of the federation's public key (what a real
    hospital receives out of band) and room for its model store and data cache."""
    homes = []
    for site in site_dirs:
        home = run_dir / "sites" / site.name
        home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(public_key, home / PUBLIC_KEY_NAME)
        homes.append(home)
    return homes
