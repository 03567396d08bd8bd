"""Errors of the federated run (printed without a traceback by the `privdiff` CLI)."""

from privdiff_core.errors import PrivdiffError


class FederationError(PrivdiffError):
    """The federated run cannot go on; the message says what to fix."""
