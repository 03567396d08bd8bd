"""Run a federated plan in Flower's simulation engine (Ray), in this process.

`flwr.simulation.run_simulation` runs the ServerApp in a thread of this process and the
ClientApps in Ray actors; it shuts Ray down when the run ends, so nothing is left running.
One actor per `federation.simulation.cpus_per_site` CPUs: on 2 cores with 1 CPU per site, two
virtual sites train at a time and the others queue, however many sites the federation has.
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from omegaconf import DictConfig

from privdiff.client.client_app import SimulatedSites, make_client_app
from privdiff.common.flower_internals import Mod
from privdiff.common.task import FederatedTask
from privdiff.server.server_app import make_server_app
from privdiff.server.settings import FederationSettings
from privdiff.server.workflow import FederatedPlan

QUIET_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "RAY_DEDUP_LOGS": "0",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    # Ray runs its workers at nice 15 by default; here they ARE the work (the virtual sites'
    # training), and niced they got ~4% of a core each beside any ordinary process (measured
    # on a shared 2-core machine): they run at this process's priority instead.
    "RAY_worker_niceness": "0",
}


def run_federation(
    cfg: DictConfig,
    settings: FederationSettings,
    task: FederatedTask,
    out_dir: Path,
    site_dirs: Sequence[Path],
    site_homes: Sequence[Path],
    signing_key: Path,
    *,
    extra_client_mods: Sequence[Mod] = (),
    progress: Callable[[str], None] | None = None,
    verbose: bool = False,
) -> None:
    """Train, sign and distribute with one virtual SuperNode per site folder.

    `site_homes[i]` is what site i keeps locally (model store, its copy of the federation's
    public key, data cache). Flower's own state (FLWR_HOME) stays inside `out_dir`.
    """
    from flwr.simulation import run_simulation

    if len(site_dirs) != len(site_homes):
        raise ValueError("one home folder per site folder")
    out_dir = Path(out_dir)
    # PYTHONPATH too: Flower's Ray backend sets it to this process's sys.path and never resets it,
    # so every process started afterwards (pip, a site, a test's fresh venv) would see this checkout.
    saved_env = {key: os.environ.get(key) for key in ("FLWR_HOME", "PYTHONPATH", *QUIET_ENV)}
    os.environ["FLWR_HOME"] = str((out_dir / "flwr-home").resolve())
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    plan = FederatedPlan(
        cfg, settings, task, out_dir, signing_key, **({"progress": progress} if progress else {})
    )
    pace_dir = (out_dir / "site-pace").resolve() if settings.pace_sites else None
    sites = SimulatedSites(
        tuple(Path(d).resolve() for d in site_dirs),
        tuple(Path(h).resolve() for h in site_homes),
        pace_dir=pace_dir,
    )
    backend_config = {
        "client_resources": {"num_cpus": settings.cpus_per_site, "num_gpus": settings.gpus_per_site},
        "init_args": {"logging_level": "ERROR" if not verbose else "INFO", "log_to_driver": verbose},
    }
    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    if not verbose:  # the plan prints one line per round (and every problem); Flower's INFO
        flwr_logger.setLevel(logging.ERROR)  # lines and run_simulation's deprecation notice would bury it
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            run_simulation(
                server_app=make_server_app(plan),
                client_app=make_client_app(sites, task, extra_client_mods),
                num_supernodes=len(site_dirs),
                backend_config=backend_config,
                verbose_logging=verbose,
            )
    finally:
        flwr_logger.setLevel(level)
        if pace_dir is not None:
            shutil.rmtree(pace_dir, ignore_errors=True)
        for key, value in saved_env.items():  # this process goes on; leave its environment as it was
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
