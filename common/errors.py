"""Errors of the federated run (printed without a traceback by the `privdiff` CLI)."""

from privdiff_core.errors import PrivdiffError


class FederationError(PrivdiffError):
    """The federated run cannot go on; the message says what to fix."""


class ImpossibleAggregateError(FederationError):
    """An unmasked SecAgg+ sum that no set of in-range updates with the registered weights could
    produce: at least one site sent something else. Carries the sites whose uploads were summed."""

    def __init__(self, reason: str, sites: frozenset[int]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sites = sites
