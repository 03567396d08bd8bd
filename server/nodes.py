"""`privdiff federation nodes`: which node id is which hospital.

Flower keeps the name given at registration (`flwr supernode register ... --name site_00`) with
the node, but `flwr supernode list` shows only node ids; this asks the SuperLink's Control API
for the same list and prints the names beside the ids, so a node id in a log maps to a site.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from privdiff.common.errors import FederationError


def list_nodes(connection: str) -> list[dict[str, str]]:
    """Registered nodes (unregistered ones left out), oldest first: node id, name, status."""
    import click

    from privdiff.common.flower_internals import list_superlink_nodes

    config = Path(os.environ.get("FLWR_HOME") or "~/.flwr").expanduser() / "config.toml"
    if not config.is_file():  # Flower would write a default one there and find no connection in it
        raise FederationError(
            f"no Flower configuration {config}: set FLWR_HOME to the federation's flwr-home"
        )
    try:
        nodes = list_superlink_nodes(connection)
    except click.ClickException as err:
        raise FederationError(
            f"cannot list the sites through connection {connection!r}: {err.format_message()} "
            "(set FLWR_HOME to the federation's flwr-home; is the SuperLink running?)"
        ) from None
    nodes = sorted(nodes, key=lambda node: node.registered_at)
    return [
        {"node-id": str(node.node_id), "name": node.name or "-", "status": node.status}
        for node in nodes
        if node.status != "unregistered"
    ]


def print_nodes(connection: str, as_json: bool = False) -> int:
    nodes = list_nodes(connection)
    if as_json:
        print(json.dumps({"nodes": nodes}, indent=2))
        return 0
    width = max([len("node id"), *(len(n["node-id"]) for n in nodes)])
    print(f"{'node id':<{width}}  {'name':<12}  status")
    for node in nodes:
        print(f"{node['node-id']:<{width}}  {node['name']:<12}  {node['status']}")
    return 0
