"""`privdiff simulate`: the project's main job, a whole federation on one machine.

1. makes (or reuses) a synthetic federation of `federation.sites` hospitals (privdiff_core.synth),
   or takes the federation folder given as `data=`;
2. runs the federated plan in Flower's simulation engine (Ray, one virtual SuperNode per site):
   the shared VAE for R1 rounds, then the SAS/SPG denoiser for R2 rounds, SecAgg+ on, a
   checkpoint after every round (run the command again to resume);
3. the server writes the anonymizer, signs it, and sends it to every site, which verifies it
   and installs it in its model store;
4. each site anonymizes its test split with the model it received;
5. the evaluation report (`privdiff evaluate`), when privdiff's evaluation package is installed:
   a lighter pass than the config's `evaluate:` section when `federation.simulation.evaluation`
   says so (demo: fewer attacker steps and test images), the full one with --full-evaluation.

Everything goes under out=RUN (default runs/simulate-<config>).
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from privdiff_core.cli import add_config_arguments
from privdiff_core.logs import logger

if TYPE_CHECKING:
    from omegaconf import DictConfig

log = logger("simulate")

HELP = "train PrivDiff-Net federated (Flower simulation, SecAgg+) on synthetic hospitals, sign, anonymize"

EPILOG = """\
examples:
  privdiff simulate --config demo                       the CPU main job (minutes on 2 cores)
  privdiff simulate --config demo federation.sites=20   tens of virtual hospitals (bigger machine)
  privdiff simulate --config tiny federation.secagg.enabled=false out=runs/plain   plain FedAvg
  privdiff simulate --config demo data=data/synthetic   an existing federation folder
  privdiff simulate --config demo --full-evaluation     the report with demo.yaml's evaluate: as is

RUN (out=) holds: config.yaml, federation/ (the synthetic hospitals), keys/ (the federation's
model-signing key pair), checkpoint.pt, anonymizer/ (signed), distribution.json (each site's
acknowledgement), sites/<site>/model-store/ (what each site installed), anonymized/<site>/
(its test split, anonymized) and evaluation/ (report.md). Run the same command again to resume
an interrupted run from its last completed round.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    add_config_arguments(parser, default="demo")
    parser.add_argument("--no-evaluate", action="store_true", help="skip the evaluation report")
    parser.add_argument(
        "--full-evaluation",
        action="store_true",
        help="evaluate with the config's evaluate: section as is, not the lighter "
        "federation.simulation.evaluation pass (much longer)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--verbose", action="store_true", help="show Flower's and Ray's own logs")


def evaluation_plan(cfg: DictConfig, full: bool) -> tuple[str | None, list[str], str | None]:
    """(--methods, overrides, --conditions) for the report: `federation.simulation.evaluation` of
    the config, a lighter pass than its `evaluate:` section so the main job stays in minutes; `full`
    (or a config without that key) keeps the config's evaluation as it is."""
    light = cfg.federation.get("simulation", {}).get("evaluation") if "federation" in cfg else None
    if full or not light:
        return None, [], None
    methods = light.get("methods")
    chosen = None if methods is None else (",".join(str(m) for m in methods) or "none")
    conditions = light.get("conditions")
    told = None if not conditions else ",".join(str(c) for c in conditions)
    return chosen, [str(item) for item in light.get("overrides") or []], told


def _evaluate(
    run_dir: Path,
    data_root: Path,
    progress: bool,
    methods: str | None = None,
    overrides: Sequence[str] = (),
    conditions: str | None = None,
) -> int | None:
    """The evaluation report through `privdiff evaluate`, if privdiff's evaluation package exists."""
    from privdiff_core import cli as core_cli

    if (
        importlib.util.find_spec("privdiff_core.evaluation") is None
        or "evaluate" not in core_cli.CORE_COMMANDS
    ):
        log.warning(
            "evaluation: privdiff_core.evaluation is not installed here, no report (the anonymizer is ready)"
        )
        return None
    argv = [
        "evaluate",
        "--config",
        str(run_dir / "config.yaml"),
        "--model",
        f"federated={run_dir / 'anonymizer'}",
        *(["--methods", methods] if methods is not None else []),
        *(["--conditions", conditions] if conditions is not None else []),
        f"data={data_root}",
        f"out={run_dir / 'evaluation'}",
        *overrides,
    ]
    if not progress:
        argv.insert(1, "--no-progress")
    if overrides or methods is not None:
        log.info(
            "evaluation: a light pass (federation.simulation.evaluation: fewer attacker steps and "
            "images); `privdiff simulate --full-evaluation` runs the config's evaluate: section as is"
        )
    log.info(f"evaluation: privdiff {' '.join(argv)}")
    args = core_cli.build_parser().parse_args(argv)
    return int(args._run(args) or 0)


def run(args: argparse.Namespace) -> int:
    from privdiff.common.task import PrivdiffTask
    from privdiff.server.settings import federation_settings
    from privdiff.simulation.anonymize_sites import anonymize_test_splits
    from privdiff.simulation.engine import run_federation
    from privdiff.simulation.sites import prepare_site_homes, site_folders, synthetic_federation
    from privdiff_core.config import config_path, load_config, save_config
    from privdiff_core.signing import generate_signing_key

    started = time.perf_counter()
    cfg = load_config(args.config, args.overrides)
    settings = federation_settings(cfg)
    run_dir = Path(cfg.get("out") or f"runs/simulate-{config_path(args.config).stem}")
    cfg.out = str(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")

    if cfg.get("data"):
        data_root = Path(cfg.data)
        site_dirs = site_folders(data_root)
        if len(site_dirs) != settings.sites:
            log.warning(
                f"data={data_root} has {len(site_dirs)} sites; federation.sites={settings.sites} is not used"
            )
    else:
        log.info(f"synthetic federation: {settings.sites} hospitals ({run_dir / 'federation'})")
        data_root = synthetic_federation(cfg, run_dir, settings.sites, progress=not args.no_progress)
        site_dirs = site_folders(data_root)

    keys = run_dir / "keys"
    if not (keys / "model-signing.pem").is_file():
        keys.mkdir(parents=True, exist_ok=True)
        generate_signing_key(keys / "model-signing.pem", keys / "model-signing.pub")
    homes = prepare_site_homes(site_dirs, run_dir, keys / "model-signing.pub")

    plan = " then ".join(f"{stage} x{rounds} rounds" for stage, rounds in settings.plan)
    secagg = "SecAgg+" if settings.secagg.enabled else "NO secure aggregation"
    log.info(
        f"federated plan: {plan} ({secagg}, {len(site_dirs)} sites, "
        f"{settings.cpus_per_site:g} CPU per site) -> {run_dir}"
    )
    run_federation(
        cfg,
        settings,
        PrivdiffTask(),
        run_dir,
        site_dirs,
        homes,
        keys / "model-signing.pem",
        progress=log.info,
        verbose=args.verbose,
    )

    log.info("each site anonymizes its test split with the anonymizer it installed")
    results = anonymize_test_splits(
        site_dirs,
        homes,
        run_dir / "anonymized",
        cfg.image_size,
        cfg.seed,
        progress=not args.no_progress,
    )
    for result in results:
        print(f"  {result.site}: {result.images} test images in {result.seconds:.1f} s -> {result.folder}")

    status = 0
    if not args.no_evaluate:
        methods, overrides, conditions = evaluation_plan(cfg, args.full_evaluation)
        evaluated = time.perf_counter()
        status = _evaluate(run_dir, data_root, not args.no_progress, methods, overrides, conditions) or 0
        log.info(f"evaluation: {time.perf_counter() - evaluated:.0f} s")
    print(f"done in {time.perf_counter() - started:.0f} s: signed anonymizer {run_dir / 'anonymizer'}")
    return status
