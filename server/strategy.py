"""FedAvg over updates, as a legacy Flower strategy (SecAgg+ in flwr 1.42 needs one).

The strategy averages whatever the sites send, weighted by their registered weights (the
example counts they declared at enrolment, capped: `site_weights`, never what a site reports in a
round); privdiff
sites send `local - global`, so its result is the averaged update, which the round loop
(server/workflow.py) adds to the global state. Under SecAgg+ Flower has already computed the
weighted average from the masked sum and hands every result the same aggregate, so it is taken
as is instead of being averaged a second time.

Only registered, not excluded sites are asked to train: a site whose contribution made a round
impossible (server/secagg.py, check_unmasked_sum) is excluded by the round loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from flwr.common import FitIns, FitRes, Parameters, Scalar
from flwr.server import ClientManager
from flwr.server.strategy import FedAvg

from privdiff.common import protocol
from privdiff.common.flower_internals import ClientProxy
from privdiff.common.npy import from_parameters, scratch, to_parameters


def weighted_metrics(metrics: list[tuple[int, dict[str, Scalar]]]) -> dict[str, Scalar]:
    """Round summary: example-weighted loss, examples, clipped values, largest update range."""
    total = sum(n for n, _ in metrics)
    if not metrics or total <= 0:
        return {}
    return {
        "loss": sum(n * float(m.get("loss", 0.0)) for n, m in metrics) / total,
        "examples": total,
        "sites": len(metrics),
        "clipped-values": sum(int(m.get("clipped-values", 0)) for _, m in metrics),
        "update-range-exp": max(int(m.get("update-range-exp", -40)) for _, m in metrics),
    }


@dataclass
class RoundResults:
    """What the sites of one round reported next to their (masked) updates."""

    sampled: int = 0  # sites asked to train
    metrics: list[tuple[int, dict[str, Scalar]]] = field(default_factory=list)  # (num_examples, metrics)

    @property
    def dropped(self) -> int:
        """Sites asked but without a usable update (Flower may list one failure twice)."""
        return self.sampled - len(self.metrics)


class UpdateFedAvg(FedAvg):
    """FedAvg of site updates; `fit_config` is set by the round loop before every round."""

    def __init__(self, min_sites: int) -> None:
        super().__init__(
            fraction_fit=1.0,
            fraction_evaluate=0.0,  # the federation evaluates the finished anonymizer, not per round
            min_fit_clients=min_sites,
            min_available_clients=min_sites,
            accept_failures=True,
            fit_metrics_aggregation_fn=weighted_metrics,
        )
        self.fit_config: dict[str, Scalar] = {}
        self.last = RoundResults()
        self.site_weights: dict[int, int] = {}  # node id -> registered weight (set by the round loop)
        self.excluded: set[int] = set()  # node ids left out of every round

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        sample_size, min_num = self.num_fit_clients(client_manager.num_available())
        clients = [
            client
            for client in client_manager.sample(num_clients=sample_size, min_num_clients=min_num)
            if _node_id(client) in self.site_weights and _node_id(client) not in self.excluded
        ]
        if len(clients) < self.min_fit_clients:
            clients = []  # the round fails as one with too few sites does
        self.last = RoundResults(sampled=len(clients))
        return [
            (
                client,
                FitIns(
                    parameters, {**self.fit_config, protocol.SITE_WEIGHT: self.site_weights[_node_id(client)]}
                ),
            )
            for client in clients
        ]

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        self.last.metrics = [(res.num_examples, dict(res.metrics)) for _, res in results]
        if not results:
            return None, {}
        first = results[0][1].parameters
        if all(res.parameters is first for _, res in results):  # SecAgg+: already the weighted mean
            return first, weighted_metrics(self.last.metrics)
        weights = [self.site_weights[_node_id(proxy)] for proxy, _ in results]
        return to_parameters(weighted_mean(results, weights)), weighted_metrics(self.last.metrics)


def _node_id(client: ClientProxy) -> int:
    return int(client.cid)  # Flower's grid proxies are named by their node id


def weighted_mean(results: list[tuple[ClientProxy, FitRes]], weights: list[int]) -> list[np.ndarray]:
    """FedAvg: sum_i w_i u_i / sum_i w_i per array (w_i: the sites' registered weights), read from
    the received bytes without copies and accumulated in reused buffers (the caller serializes the
    result before the next round)."""
    total = sum(weights)
    if total <= 0:
        raise ValueError("the sites' registered weights add up to 0")
    per_site = [
        (from_parameters(res.parameters), w / total) for (_, res), w in zip(results, weights, strict=True)
    ]
    means = []
    for index in range(len(per_site[0][0])):
        first, weight = per_site[0][0][index].reshape(-1), per_site[0][1]
        mean = scratch(f"fedavg-mean-{index}", first.size, np.float32)
        work = scratch("fedavg-work", first.size, np.float32)
        np.multiply(first, weight, out=mean, dtype=np.float32)
        for arrays, weight in per_site[1:]:
            np.multiply(arrays[index].reshape(-1), weight, out=work, dtype=np.float32)
            mean += work
        means.append(mean.reshape(per_site[0][0][index].shape))
    return means
