"""SecAgg+ with a fast vector path: Flower's protocol, privdiff's masking arithmetic.

Flower's `SecAggPlusWorkflow` + `secaggplus_mod` run the SecAgg+ protocol (Bell et al. 2020):
key agreement, Shamir shares of every site's mask seed and key, dropout recovery. Its vector
arithmetic, though, walks a list of int64 numpy arrays value by value in several passes, draws
masks from `np.random.RandomState` seeded with 32 bits folded out of the 256-bit seed, and
uploads 8 bytes per parameter inside a ConfigRecord. On a 50M-parameter update that is most of
a round, and 32-bit seeds can be brute-forced.

privdiff keeps every protocol step of Flower (setup, key sharing, unmasking, the checks between
them, the threshold logic: the inherited methods and Flower's own client functions) and replaces
only the masked-vector stage on both sides. This module holds what both sides run (the site's
mod and the masking arithmetic the server repeats to unmask); server/secagg.py is the server's
workflow.

- the site quantizes its (already clipped) update exactly as Flower does (weighted by
  num_examples / max_weight, clipped to +-clipping_range, stochastically rounded to
  2**22 levels), prefixes the quantized weight, and adds its masks, all modulo 2**32 in one
  chunked pass over a uint32 vector;
- masks are AES-256-CTR key streams (the `cryptography` package, AES-NI) keyed by SHA-256 of the
  full secret: the private mask by the site's 32-byte seed, each pairwise mask by the ECDH key
  of the pair, so the server can rebuild exactly the masks the protocol lets it rebuild;
- the masked vector travels as a uint32 ArrayRecord (4 bytes per parameter, like plain FedAvg's
  float32, chunked by Flower's transport);
- the server sums the uint32 vectors (wrap-around is the modulus), removes the masks it
  reconstructs, and dequantizes to the weighted mean, as Flower's unmask stage does.

Which vector path a round uses travels in the fit config (`SECAGG_VECTOR`), so a site follows
the server. `federation.secagg.implementation: flower` runs Flower's stock path instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any, cast

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType

from privdiff.common.errors import FederationError
from privdiff.common.flower_internals import (
    RECORD_KEY_CONFIGS,
    RECORD_KEY_STATE,
    ClientAppCallable,
    SecAggKey,
    SecAggStage,
    bytes_to_private_key,
    bytes_to_public_key,
    compat,
    decrypt,
    flower_secaggplus,
    generate_shared_key,
    share_keys_plaintext_separate,
)
from privdiff.common.npy import NUMPY_STYPE, from_parameters, npy_bytes_of_parts

SECAGG_VECTOR = "secagg-vector"  # FitIns.config key: which masked-vector path this round uses
PRIVDIFF_VECTOR = "privdiff-aes-u32/1"
FLOWER_VECTOR = "flower"
MASKED_RECORD = "privdiff.masked"  # ArrayRecord holding a site's masked uint32 vector
# message id -> the site's clipped update, put here by the ClientApp's update mod so a 50M-value
# vector is not serialized and parsed again between two mods of the same call
_PENDING_UPDATES: dict[str, np.ndarray] = {}


def stash_update(message_id: str, update: np.ndarray) -> None:
    """Hand the clipped update of message `message_id` to `secaggplus_mod` in memory.

    (A function, not the dict: Flower pickles the ClientApp's closures into Ray actors by value,
    which would give them a copy of a module-level dict.) A process handles one message at a
    time, so an update left behind by a failed call is dropped here rather than kept."""
    _PENDING_UPDATES.clear()
    _PENDING_UPDATES[message_id] = update


MODULUS = 2**32  # uint32 arithmetic: wrap-around is the reduction
CHUNK = 1 << 20  # values per pass: the float64 temporaries of a chunk stay in cache
_ZEROS = bytes(4 * CHUNK)


def _aes_stream(label: bytes, secret: bytes):  # noqa: ANN202 (a cryptography CipherContext)
    key = hashlib.sha256(b"privdiff/secagg+/" + label + b"/v1\0" + secret).digest()
    return Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()


def private_mask_stream(rd_seed: bytes):  # noqa: ANN201
    """The key stream of a site's private mask (seed: 32 random bytes, Shamir-shared)."""
    return _aes_stream(b"private-mask", rd_seed)


def pairwise_mask_stream(shared_key: bytes):  # noqa: ANN201
    """The key stream both sites of a pair (and the server, for a dropped site) derive from
    the ECDH key of the pair's first key pairs."""
    return _aes_stream(b"pair-mask", shared_key)


def _apply_streams(vector: np.ndarray, streams: Iterable[tuple[int, object]]) -> None:
    """vector += sign * stream, modulo 2**32, chunk by chunk (streams advance in step)."""
    streams = list(streams)
    for start in range(0, vector.size, CHUNK):
        block = vector[start : start + CHUNK]
        for sign, stream in streams:
            keys = np.frombuffer(stream.update(_ZEROS[: 4 * block.size]), dtype=np.uint32)
            if sign > 0:
                block += keys
            else:
                block -= keys


def quantized_weight(ratio: float, levels: int) -> int:
    """A site's weight (examples / max_weight, at most 1) on SecAgg+'s integer grid: what the
    site puts in its upload's head, and what the server expects there for that site."""
    return round(ratio * levels)


def quantize_weighted(
    update: np.ndarray, ratio: float, clipping_range: float, levels: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(head, body): head = [round(ratio * levels)], body = q(ratio * update) as uint32, q as in
    Flower's SecAgg+ (clip to +-clipping_range, map to [0, levels], round stochastically:
    unbiased). The body is written over `update`'s own memory (a float32 and a uint32 are both
    4 bytes), so a 50M-value update needs no second buffer; `update` is consumed."""
    if update.dtype != np.float32 or not update.flags.writeable or not update.flags.c_contiguous:
        update = np.array(update, dtype=np.float32)
    update = update.reshape(-1)
    q_ratio = quantized_weight(ratio, levels)
    weight = q_ratio / levels
    scale = levels / (2.0 * clipping_range)
    body = update.view(np.uint32)
    for start in range(0, update.size, CHUNK):
        chunk = update[start : start + CHUNK].astype(np.float64)  # read before the slot is overwritten
        chunk *= weight
        np.clip(chunk, -clipping_range, clipping_range, out=chunk)
        chunk += clipping_range
        chunk *= scale
        chunk += rng.random(chunk.size)
        np.floor(chunk, out=chunk)
        np.minimum(chunk, levels, out=chunk)
        body[start : start + chunk.size] = chunk
    return np.array([q_ratio], dtype=np.uint32), body


def mask_update(
    update: np.ndarray,
    num_examples: int,
    state: Any,
    neighbours: list[int],
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A site's masked upload [head, body] (see quantize_weighted): the quantized weight and
    update plus the site's private mask plus, for each neighbour that shared keys, +pairwise mask
    if this site's id is larger, else -pairwise; modulo 2**32."""
    ratio = num_examples / state.max_weight
    if ratio > 1:
        raise FederationError(
            f"{num_examples} examples exceed SecAgg+'s max_weight {state.max_weight:g}: the weight would "
            "overflow its quantization (did the site's data change since the describe step?)"
        )
    head, body = quantize_weighted(
        update, ratio, state.clipping_range, state.target_range, rng or np.random.default_rng()
    )
    own_private = bytes_to_private_key(state.sk1)
    streams = [(+1, private_mask_stream(state.rd_seed))]
    for nid in neighbours:
        shared = generate_shared_key(own_private, bytes_to_public_key(state.public_keys_dict[nid][0]))
        streams.append((+1 if state.nid > nid else -1, pairwise_mask_stream(shared)))
    _apply_streams(head, streams)  # the streams' first 4 bytes mask the head, the rest the body
    _apply_streams(body, streams)
    return head, body


def remove_masks(
    total: np.ndarray,
    secrets: dict[int, bytes],
    active: set[int],
    neighbours: dict[int, set[int]],
    public_keys_1: dict[int, bytes],
) -> None:
    """Unmask the sum of the active sites' uploads in place, from the reconstructed secrets:
    an active site's private-mask seed, or a dropped site's first private key, from which the
    pairwise masks its active neighbours added are rebuilt (masks between two dropped sites
    were never added; their two rebuilds cancel, as in Flower)."""
    streams: list[tuple[int, object]] = []
    for nid, secret in secrets.items():
        if nid in active:
            streams.append((-1, private_mask_stream(secret)))
            continue
        for neighbour in neighbours[nid] - {nid}:
            shared = generate_shared_key(
                bytes_to_private_key(secret), bytes_to_public_key(public_keys_1[neighbour])
            )
            streams.append((+1 if nid > neighbour else -1, pairwise_mask_stream(shared)))
    _apply_streams(total, streams)


def check_unmasked_sum(total: np.ndarray, sites: int, expected_weight: int, levels: int) -> str | None:
    """Why the unmasked sum [sum q(w_i), sum q(w_i u_i)...] of `sites` uploads cannot be one of
    in-range updates with the registered weights, or None if it can.

    Every site's quantized value lies in [0, levels], so each coordinate of the sum lies in
    [0, sites * levels] (below 0 wraps to near 2**32 and fails the same test); the head must be
    exactly the registered weights of the summed sites. A site that shifts its masked vector,
    rewrites its weight or skips the clipping fails here; one that sends a wrong but in-range
    update does not (its influence is bounded by its weight times the range)."""
    if expected_weight <= 0:
        return f"the {sites} summed sites have no registered weight (no training examples)"
    if int(total[0]) != expected_weight:
        return (
            f"the summed weight is {int(total[0])} grid units, the registered weights of these "
            f"{sites} sites add up to {expected_weight}"
        )
    bound = sites * levels
    beyond = 0
    for start in range(1, total.size, CHUNK):  # chunked: no temporary of the vector's size
        beyond += int(np.count_nonzero(total[start : start + CHUNK] > bound))
    if beyond:
        return f"{beyond} of {total.size - 1} summed values lie beyond {sites} x the clipping range"
    return None


def weighted_mean_of_sum(total: np.ndarray, sites: int, clipping_range: float, levels: int) -> np.ndarray:
    """sum_i w_i u_i / sum_i w_i from the unmasked sum [sum q(w_i), sum q(w_i u_i)...], written
    over `total`'s own memory as float32 (returned as that view)."""
    weight_total = int(total[0])
    step = 2.0 * clipping_range / levels
    offset = -sites * clipping_range  # each site's values were shifted by +clipping_range
    body = total[1:]
    mean = body.view(np.float32)
    for start in range(0, body.size, CHUNK):
        chunk = body[start : start + CHUNK].astype(np.float64)
        chunk *= step
        chunk += offset
        chunk *= levels / weight_total
        mean[start : start + chunk.size] = chunk
    return mean


def _receive_shares(state: Any, configs: ConfigRecord) -> list[int]:
    """Decrypt the key shares forwarded to this site (Flower's checks, unchanged)."""
    ciphertexts = cast(list[bytes], configs[SecAggKey.CIPHERTEXT_LIST])
    srcs = cast(list[int], configs[SecAggKey.SOURCE_LIST])
    if len(ciphertexts) + 1 < state.threshold:
        raise ValueError("Not enough available neighbour clients.")
    available = []
    for src, ciphertext in zip(srcs, ciphertexts, strict=True):
        plaintext = decrypt(state.ss2_dict[src], ciphertext)
        actual_src, dst, rd_seed_share, sk1_share = share_keys_plaintext_separate(plaintext)
        if src != actual_src:
            raise ValueError(f"Node {state.nid}: received ciphertext from {actual_src} instead of {src}.")
        if dst != state.nid:
            raise ValueError(
                f"Node {state.nid}: received an encrypted message for Node {dst} from Node {src}."
            )
        available.append(src)
        state.rd_seed_share_dict[src] = rd_seed_share
        state.sk1_share_dict[src] = sk1_share
    return available


def secaggplus_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Flower's `secaggplus_mod`, with privdiff's vector path when the server asks for it."""
    if msg.metadata.message_type != MessageType.TRAIN:
        return call_next(msg, ctxt)
    stage = msg.content.config_records[RECORD_KEY_CONFIGS].get(SecAggKey.STAGE)
    fit_config = msg.content.config_records.get("fitins.config")
    if (
        stage != SecAggStage.COLLECT_MASKED_VECTORS
        or fit_config is None
        or fit_config.get(SECAGG_VECTOR) != PRIVDIFF_VECTOR
    ):
        # key stages, or Flower's own vector path
        return flower_secaggplus.secaggplus_mod(msg, ctxt, call_next)
    if RECORD_KEY_STATE not in ctxt.state.config_records:
        ctxt.state.config_records[RECORD_KEY_STATE] = ConfigRecord({})
    state = flower_secaggplus.SecAggPlusState(**ctxt.state.config_records[RECORD_KEY_STATE])
    configs = msg.content.config_records[RECORD_KEY_CONFIGS]
    flower_secaggplus.check_stage(state.current_stage, configs)
    state.current_stage = cast(str, configs.pop(SecAggKey.STAGE))
    flower_secaggplus.check_configs(state.current_stage, configs)
    if state.current_stage != SecAggStage.COLLECT_MASKED_VECTORS:
        raise ValueError(f"privdiff's SecAgg+ vector path got stage {state.current_stage} with a fit config")
    neighbours = _receive_shares(state, configs)
    out_content = call_next(msg, ctxt).content
    fitres = compat.recorddict_to_fitres(out_content, keep_input=True)
    update = _PENDING_UPDATES.pop(msg.metadata.message_id, None)
    if update is None:
        [update] = from_parameters(fitres.parameters)
    head, body = mask_update(update, fitres.num_examples, state, neighbours)
    for record in out_content.array_records.values():
        record.clear()  # nothing but the masked vector leaves the site
    data = Array(
        dtype="uint32",
        shape=(head.size + body.size,),
        stype=NUMPY_STYPE,
        data=npy_bytes_of_parts([head, body]),
    )
    out_content.array_records[MASKED_RECORD] = ArrayRecord(array_dict={"masked": data})
    ctxt.state.config_records[RECORD_KEY_STATE] = ConfigRecord(state.to_dict())
    out_content.config_records[RECORD_KEY_CONFIGS] = ConfigRecord({}, False)
    return Message(out_content, reply_to=msg)
