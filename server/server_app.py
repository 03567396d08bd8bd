"""The Flower ServerApp (`privdiff.server.server_app:app`): runs the federated plan of a privdiff config.

Submitted with `flwr run`, it reads its knobs from the run config ([tool.flwr.app.config] in
pyproject.toml, overridden with `--run-config`):

    config       privdiff config name or YAML path (configs/tiny.yaml, demo, paper)
    overrides    space-separated key=value overrides of that config
    out          run folder on the server: checkpoints, the signed anonymizer, distribution.json
    signing-key  the federation's Ed25519 private key (from `privdiff federation init`)

Everything else (stages, rounds, SecAgg+, DP) comes from the config's `federation:` section.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from privdiff.common.errors import FederationError
from privdiff.common.task import PrivdiffTask
from privdiff.server.settings import federation_settings
from privdiff.server.workflow import FederatedPlan
from privdiff_core.config import load_config


def make_server_app(plan: FederatedPlan) -> ServerApp:
    """A ServerApp running one prepared plan (what `privdiff simulate` hands the engine)."""
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        plan(grid, context)

    return server_app


def plan_from_run_config(run_config: dict) -> FederatedPlan:
    """The plan a deployed run asks for through its run config (see module doc)."""
    name = str(run_config.get("config", "") or "demo")
    cfg = load_config(name, shlex.split(str(run_config.get("overrides", ""))))
    signing_key = str(run_config.get("signing-key", ""))
    if not signing_key:
        raise FederationError(
            "run config has no signing-key: pass --run-config \"signing-key='/path/model-signing.pem'\" "
            "(made by `privdiff federation init`)"
        )
    out = str(run_config.get("out", "") or f"runs/federation-{Path(name).stem}")
    return FederatedPlan(cfg, federation_settings(cfg), PrivdiffTask(), Path(out), Path(signing_key))


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    plan_from_run_config(dict(context.run_config))(grid, context)
