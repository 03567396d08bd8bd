"""Every Flower internal privdiff relies on, in one place. Written against flwr==1.42.0 (the exact
pin of pyproject.toml): Flower may move or change any name here in a minor release.

"Internal" means anything outside Flower's documented API, i.e. outside the `__all__` of
flwr.app, flwr.clientapp, flwr.serverapp, flwr.client, flwr.server, flwr.common, flwr.simulation
and their public subpackages (tests/test_import_graph.py checks that no other module of privdiff
imports such a name). Why privdiff needs them:

- SecAgg+ exists only as Flower's legacy workflow and client mod; privdiff's vector path
  (common/secagg.py, server/secagg.py) subclasses the workflow and wraps the mod, so it uses the
  protocol's constants, state, crypto helpers and the legacy record converters.
- The federation drives the legacy strategy through Flower's compat layer (server/workflow.py).
- `privdiff federation nodes` asks the SuperLink's Control API for the node names (Flower's CLI
  helpers; imported on call: they pull in the CLI's dependencies).
- A site checks the app package before Flower imports it (client/app_trust.py), by wrapping the
  ClientApp runtime's pull step (imported on call: only the guarded process needs it).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common.secure_aggregation.crypto.shamir import combine_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import decrypt, generate_shared_key
from flwr.common.secure_aggregation.secaggplus_constants import (
    RECORD_KEY_CONFIGS,
    RECORD_KEY_STATE,
)
from flwr.common.secure_aggregation.secaggplus_constants import Key as SecAggKey
from flwr.common.secure_aggregation.secaggplus_constants import Stage as SecAggStage
from flwr.common.secure_aggregation.secaggplus_utils import share_keys_plaintext_separate
from flwr.compat.common import recorddict_compat as compat
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.app_utils import start_update_client_manager_thread
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.default_workflows import default_fit_workflow
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM
from flwr.supercore.primitives.asymmetric import bytes_to_private_key, bytes_to_public_key

# The module, not the function of the same name its package exports.
flower_secaggplus = importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod")

__all__ = [
    "KEY_CLIPPING_NORM",
    "MAIN_CONFIGS_RECORD",
    "MAIN_PARAMS_RECORD",
    "RECORD_KEY_CONFIGS",
    "RECORD_KEY_STATE",
    "ClientAppCallable",
    "ClientProxy",
    "Mod",
    "SecAggKey",
    "SecAggStage",
    "WorkflowKey",
    "WorkflowState",
    "bytes_to_private_key",
    "bytes_to_public_key",
    "combine_shares",
    "compat",
    "decrypt",
    "default_fit_workflow",
    "flower_secaggplus",
    "generate_shared_key",
    "list_superlink_nodes",
    "run_clientapp_checked",
    "share_keys_plaintext_separate",
    "start_update_client_manager_thread",
]


def list_superlink_nodes(connection: str) -> list[Any]:
    """The SuperLink's node records (node_id, name, status, registered_at) through the Control
    API, as `flwr supernode list` asks for them. Raises click.ClickException as Flower's CLI does."""
    from flwr.cli.flower_config import read_superlink_connection
    from flwr.cli.utils import flwr_cli_exc_handler, init_http_client_from_connection
    from flwr.proto.control_pb2 import ListNodesRequest

    client = init_http_client_from_connection(read_superlink_connection(connection))
    try:
        with flwr_cli_exc_handler():
            response = client.ListNodes(ListNodesRequest())
    finally:
        client.close()
    return list(response.nodes_info)


def run_clientapp_checked(check: Callable[[bytes, str], None]) -> None:
    """Flower's `flwr-clientapp` with `check(fab_content, fab_hash)` run on every app package it
    pulls, before Flower puts the package on sys.path; `check` raises to refuse the package."""
    import flwr.supernode.runtime.run_clientapp as runtime
    from flwr.supernode.cli import flwr_clientapp

    pull = runtime.pull_task_input

    def checked_pull(client):  # noqa: ANN001, ANN202 (Flower's RuntimeHttpClient and tuple)
        message, context, run, fab = pull(client)
        check(fab.content, fab.hash_str)
        return message, context, run, fab

    runtime.pull_task_input = checked_pull
    flwr_clientapp()
