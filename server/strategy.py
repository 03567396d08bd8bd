"""FedAvg over updates, as a legacy Flower strategy (SecAgg+ in flwr 1.42 needs one).

The strategy averages whatever the sites send, weighted by their number of examples; privdiff
sites send `local - global`, so its result is the averaged update, which the round loop
(server/workflow.py) adds to the global state. Under SecAgg+ Flower has already computed the
weighted average from the masked sum and hands every result the same aggregate, so it is taken
as is instead of being averaged a second time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from flwr.common import FitIns, FitRes, Parameters, Scalar
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg

from server.npy import from_parameters, scratch, to_parameters


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

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        sample_size, min_num = self.num_fit_clients(client_manager.num_available())
        clients = client_manager.sample(num_clients=sample_size, min_num_clients=min_num)
        self.last = RoundResults(sampled=len(clients))
        fit_ins = FitIns(parameters, dict(self.fit_config))
        return [(client, fit_ins) for client in clients]

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
        return to_parameters(weighted_mean(results)), weighted_metrics(self.last.metrics)


def weighted_mean(results: list[tuple[ClientProxy, FitRes]]) -> list[np.ndarray]:
    """FedAvg: sum_i n_i u_i / sum_i n_i per array, read from the received bytes without copies
    and accumulated in reused buffers (the caller serializes the result before the next round)."""
    total = sum(res.num_examples for _, res in results)
    if total <= 0:
        raise ValueError("the sites reported no training examples")
    per_site = [(from_parameters(res.parameters), res.num_examples / total) for _, res in results]
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
