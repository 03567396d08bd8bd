"""The server's side of privdiff's SecAgg+ vector path (common/secagg.py has the arithmetic both
sides share and the site's mod): Flower's `SecAggPlusWorkflow` with the masked-vector and unmask
stages replaced. The uint32 uploads are summed modulo 2**32, the masks the protocol lets the
server rebuild are removed, the sum is checked against the registered site weights, and the
weighted mean goes to the strategy as Flower's unmask stage would hand it.
"""

from __future__ import annotations

from logging import DEBUG, ERROR, INFO
from typing import cast

import numpy as np
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.common import log
from flwr.server import LegacyContext
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.serverapp import Grid

from privdiff.common.errors import FederationError, ImpossibleAggregateError
from privdiff.common.flower_internals import (
    MAIN_CONFIGS_RECORD,
    MAIN_PARAMS_RECORD,
    RECORD_KEY_CONFIGS,
    SecAggKey,
    SecAggStage,
    WorkflowKey,
    WorkflowState,
    combine_shares,
    compat,
)
from privdiff.common.npy import npy_view, scratch, to_parameters
from privdiff.common.secagg import (
    MASKED_RECORD,
    MODULUS,
    check_unmasked_sum,
    quantized_weight,
    remove_masks,
    weighted_mean_of_sum,
)


class PrivdiffSecAggPlusWorkflow(SecAggPlusWorkflow):
    """Flower's SecAgg+ workflow with the vector path above (setup and key sharing inherited)."""

    def __init__(self, *args, site_weights: dict[int, int], **kwargs) -> None:  # noqa: ANN002, ANN003
        """Flower's arguments, plus every site's registered weight (examples, at most max_weight):
        the unmasked sum is checked against them (check_unmasked_sum)."""
        super().__init__(*args, **kwargs)
        self.site_weights = site_weights
        if self.modulus_range != MODULUS:
            raise FederationError("privdiff's SecAgg+ vector path works modulo 2**32 (modulus_range)")

    def collect_masked_vectors_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        cfg = context.state.config_records[MAIN_CONFIGS_RECORD]

        def make(nid: int) -> Message:
            content = state.nid_to_fitins[nid]
            content.config_records[RECORD_KEY_CONFIGS] = ConfigRecord(
                {
                    SecAggKey.STAGE: SecAggStage.COLLECT_MASKED_VECTORS,
                    SecAggKey.CIPHERTEXT_LIST: state.forward_ciphertexts[nid],
                    SecAggKey.SOURCE_LIST: state.forward_srcs[nid],
                }
            )
            return Message(
                content=content,
                dst_node_id=nid,
                message_type=MessageType.TRAIN,
                group_id=str(cfg[WorkflowKey.CURRENT_ROUND]),
            )

        log(DEBUG, "[Stage 2] Forwarding encrypted key shares to %s clients.", len(state.active_node_ids))
        msgs = list(grid.send_and_receive([make(n) for n in state.active_node_ids], timeout=self.timeout))
        state.active_node_ids = {m.metadata.src_node_id for m in msgs if not m.has_error()}
        log(DEBUG, "[Stage 2] Received masked vectors from %s clients.", len(state.active_node_ids))
        del state.forward_ciphertexts, state.forward_srcs, state.nid_to_fitins
        total: np.ndarray | None = None
        for msg in msgs:
            if msg.has_error():
                state.failures.append(Exception(msg.error))
                continue
            vector = npy_view(msg.content.array_records[MASKED_RECORD]["masked"].data)
            if vector.dtype != np.uint32 or (total is not None and vector.shape != total.shape):
                state.failures.append(
                    Exception(f"malformed masked vector from node {msg.metadata.src_node_id}")
                )
                state.active_node_ids.discard(msg.metadata.src_node_id)
                continue
            if total is None:
                total = scratch("secagg-total", vector.size, np.uint32)
                np.copyto(total, vector)
            else:
                total += vector  # modulo 2**32
            state.legacy_results.append(
                (
                    state.nid_to_proxies[msg.metadata.src_node_id],
                    compat.recorddict_to_fitres(msg.content, True),
                )
            )
        if total is not None:
            state.aggregate_ndarrays = [total]
        return self._check_threshold(state)

    def unmask_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        cfg = context.state.config_records[MAIN_CONFIGS_RECORD]
        current_round = cast(int, cfg[WorkflowKey.CURRENT_ROUND])
        active, dead = state.active_node_ids, state.sampled_node_ids - state.active_node_ids

        def make(nid: int) -> Message:
            neighbours = state.nid_to_neighbours[nid]
            content = RecordDict(
                {
                    RECORD_KEY_CONFIGS: ConfigRecord(
                        {
                            SecAggKey.STAGE: SecAggStage.UNMASK,
                            SecAggKey.ACTIVE_NODE_ID_LIST: list(neighbours & active),
                            SecAggKey.DEAD_NODE_ID_LIST: list(neighbours & dead),
                        }
                    )
                }
            )
            return Message(
                content=content, dst_node_id=nid, message_type=MessageType.TRAIN, group_id=str(current_round)
            )

        log(DEBUG, "[Stage 3] Requesting key shares from %s clients to remove masks.", len(active))
        msgs = grid.send_and_receive([make(n) for n in active], timeout=self.timeout)
        state.active_node_ids = {m.metadata.src_node_id for m in msgs if not m.has_error()}
        shares: dict[int, list[bytes]] = {nid: [] for nid in state.sampled_node_ids}
        for msg in msgs:
            if msg.has_error():
                state.failures.append(Exception(msg.error))
                continue
            record = msg.content.config_records[RECORD_KEY_CONFIGS]
            for owner, share in zip(
                cast(list[int], record[SecAggKey.NODE_ID_LIST]),
                cast(list[bytes], record[SecAggKey.SHARE_LIST]),
                strict=True,
            ):
                shares[owner].append(share)
        if not state.aggregate_ndarrays:
            log(ERROR, "No masked vector to unmask")
            return False
        total = state.aggregate_ndarrays[0]
        secrets = {}
        for nid, share_list in shares.items():
            if len(share_list) < state.threshold:
                log(ERROR, "Not enough shares to recover secret in unmask vectors stage")
                return False
            secrets[nid] = combine_shares(share_list)
        if len(active) * state.quantization_range >= MODULUS:
            log(ERROR, "Too many sites for one sum modulo 2**32 (at most 1023 per round)")
            return False
        remove_masks(
            total,
            secrets,
            active,
            state.nid_to_neighbours,
            {nid: keys[0] for nid, keys in state.nid_to_publickeys.items()},
        )
        expected = sum(
            quantized_weight(self.site_weights[nid] / state.max_weight, state.quantization_range)
            for nid in active
        )
        problem = check_unmasked_sum(total, len(active), expected, state.quantization_range)
        if problem is not None:
            raise ImpossibleAggregateError(f"impossible SecAgg+ sum: {problem}", frozenset(active))
        aggregate = weighted_mean_of_sum(total, len(active), state.clipping_range, state.quantization_range)
        del state.aggregate_ndarrays
        parameters = to_parameters([aggregate])
        for _, fitres in state.legacy_results:
            fitres.parameters = parameters
        log(
            INFO,
            "aggregate_fit: received %s results and %s failures",
            len(state.legacy_results),
            len(state.failures),
        )
        parameters_aggregated, metrics = context.strategy.aggregate_fit(
            current_round,
            state.legacy_results,
            state.failures,  # type: ignore[arg-type]
        )
        if parameters_aggregated:
            context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
                parameters_aggregated, True
            )
            context.history.add_metrics_distributed_fit(server_round=current_round, metrics=metrics)
        return True
