"""Malicious virtual sites for the federation tests: Flower mods that turn one partition into an
attacker inside its own ClientApp process, after (or instead of) privdiff's honest steps.

- `shift`: adds 2**28 quantization levels to every value of its masked upload, after masking
  (the issue's attack: +3.3 on every value of the global update with the tiny model's range);
- `weight`: rewrites the weight field of its masked upload (claims 50x the largest weight);
- `flip`: sends its update flipped and scaled x1000, quantized WITHOUT the clipping step (a site
  controls its own code: here the quantizer of common/secagg.py is swapped in its process).

Each mod writes the attacker's node id to `record_dir/attacker-node` the first time it attacks,
so a test can check which site the server excluded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ATTACKS = ("shift", "weight", "flip")
SCALE = 1000.0


def flipped_and_scaled(
    update: np.ndarray, ratio: float, clipping_range: float, levels: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """privdiff.common.secagg.quantize_weighted's output format for -SCALE x the update, never clipped:
    values beyond the grid wrap round modulo 2**32."""
    from privdiff.common.secagg import quantized_weight

    q_ratio = quantized_weight(ratio, levels)
    scaled = -SCALE * (q_ratio / levels) * np.asarray(update, dtype=np.float64).reshape(-1)
    grid = np.floor((scaled + clipping_range) * levels / (2.0 * clipping_range) + rng.random(scaled.size))
    return np.array([q_ratio], dtype=np.uint32), grid.astype(np.int64).astype(np.uint32)


class MaliciousSite:
    """Partition `partition` attacks in every round from `from_round` on (see module doc)."""

    def __init__(self, partition: int, attack: str, record_dir: Path, from_round: int = 1) -> None:
        if attack not in ATTACKS:
            raise ValueError(f"unknown attack {attack!r}")
        self.partition, self.attack, self.from_round = partition, attack, from_round
        self.record_dir = Path(record_dir)

    def _attacking(self, msg, context) -> bool:  # noqa: ANN001 (Flower's Message, Context)
        from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage

        content = msg.content
        return (
            int(context.node_config["partition-id"]) == self.partition
            and RECORD_KEY_CONFIGS in content.config_records
            and content.config_records[RECORD_KEY_CONFIGS].get(Key.STAGE) == Stage.COLLECT_MASKED_VECTORS
            and int(content.config_records["fitins.config"]["round"]) >= self.from_round
        )

    def __call__(self, msg, context, call_next):  # noqa: ANN001, ANN204 (a Flower mod)
        if not self._attacking(msg, context):
            return call_next(msg, context)
        self.record_dir.mkdir(parents=True, exist_ok=True)
        (self.record_dir / "attacker-node").write_text(str(context.node_id))
        if self.attack == "flip":
            import privdiff.common.secagg as secagg

            honest = secagg.quantize_weighted
            secagg.quantize_weighted = flipped_and_scaled
            try:
                return call_next(msg, context)
            finally:
                secagg.quantize_weighted = honest
        reply = call_next(msg, context)
        if reply.has_error():
            return reply
        from flwr.app import Array, ArrayRecord

        from privdiff.common.npy import NUMPY_STYPE, npy_bytes, npy_view
        from privdiff.common.secagg import MASKED_RECORD
        from privdiff.server.workflow import QUANTIZATION_RANGE

        upload = np.array(npy_view(reply.content.array_records[MASKED_RECORD]["masked"].data))
        if self.attack == "shift":
            upload[1:] += np.uint32(2**28)
        else:
            upload[0] += np.uint32(50 * QUANTIZATION_RANGE)
        data = Array(dtype="uint32", shape=upload.shape, stype=NUMPY_STYPE, data=npy_bytes(upload))
        reply.content.array_records[MASKED_RECORD] = ArrayRecord(array_dict={"masked": data})
        return reply
