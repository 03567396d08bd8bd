"""privdiff's SecAgg+ vector path (common/secagg.py) against Flower's own protocol steps.

Key setup, key sharing and the unmask answers come from Flower's client functions; masking,
summing, unmasking and dequantizing are privdiff's. No Ray: every site is a SecAggPlusState here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import numpy as np
import pytest
from flwr.app import ConfigRecord
from flwr.common.secure_aggregation.crypto.shamir import combine_shares
from flwr.common.secure_aggregation.secaggplus_constants import Key

from privdiff.common.errors import FederationError
from privdiff.common.secagg import (
    MODULUS,
    _receive_shares,
    check_unmasked_sum,
    mask_update,
    quantized_weight,
    remove_masks,
    weighted_mean_of_sum,
)
from privdiff.common.updates import quantization_step

flower = importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod")
LEVELS = 2**22


def _ring(nids: list[int], shares: int) -> dict[int, set[int]]:
    """SecAgg+ neighbourhoods as Flower's workflow builds them: a ring, `shares` nodes each."""
    half = shares // 2
    return {nid: {nids[(i + k) % len(nids)] for k in range(-half, half + 1)} for i, nid in enumerate(nids)}


def _federation(
    n: int, threshold: int, clipping_range: float, max_weight: float, shares: int | None = None
) -> dict[int, object]:
    """n sites that ran Flower's setup and key-sharing stages with their ring neighbourhoods."""
    nids = list(range(101, 101 + n))
    neighbours = _ring(nids, shares or n)
    states = {}
    for nid in nids:
        state = flower.SecAggPlusState()
        state.nid = nid
        flower._setup(
            state,
            ConfigRecord(
                {
                    Key.SAMPLE_NUMBER: n,
                    Key.SHARE_NUMBER: shares or n,
                    Key.THRESHOLD: threshold,
                    Key.CLIPPING_RANGE: clipping_range,
                    Key.TARGET_RANGE: LEVELS,
                    Key.MOD_RANGE: MODULUS,
                    Key.MAX_WEIGHT: max_weight,
                }
            ),
        )
        states[nid] = state
    forwarded: dict[int, list[tuple[int, bytes]]] = {nid: [] for nid in states}
    for nid, state in states.items():
        keys = {str(other): [states[other].pk1, states[other].pk2] for other in neighbours[nid]}
        sent = flower._share_keys(state, ConfigRecord(keys))
        for dst, ciphertext in zip(sent[Key.DESTINATION_LIST], sent[Key.CIPHERTEXT_LIST], strict=True):
            forwarded[dst].append((nid, ciphertext))
    for nid, state in states.items():
        state.neighbours = neighbours[nid]
        state.forwarded = ConfigRecord(
            {
                Key.SOURCE_LIST: [s for s, _ in forwarded[nid]],
                Key.CIPHERTEXT_LIST: [c for _, c in forwarded[nid]],
            }
        )
    return states


def _unmasked_sum(
    states: dict,
    updates: dict[int, np.ndarray],
    examples: dict[int, int],
    active: set[int],
    tamper: Callable[[int, np.ndarray], None] | None = None,
) -> np.ndarray:
    """Masked uploads of the active sites (`tamper(nid, upload)` may rewrite one after masking,
    as a malicious site can), their sum mod 2**32, unmasked: [sum q(w_i), sum q(w_i u_i)...]."""
    total = None
    for nid in sorted(active):
        state = states[nid]
        neighbours = _receive_shares(state, state.forwarded)
        head, body = mask_update(updates[nid].copy(), examples[nid], state, neighbours)
        upload = np.concatenate([head, body])
        if tamper is not None:
            tamper(nid, upload)
        total = upload.copy() if total is None else total + upload  # uint32: wraps modulo 2**32
    dead = set(states) - active
    shares: dict[int, list[bytes]] = {nid: [] for nid in states}
    for nid in active:  # Flower's own unmask answer of every surviving site, about its neighbours
        hood = states[nid].neighbours
        answer = flower._unmask(
            states[nid],
            ConfigRecord(
                {Key.ACTIVE_NODE_ID_LIST: sorted(hood & active), Key.DEAD_NODE_ID_LIST: sorted(hood & dead)}
            ),
        )
        for owner, share in zip(answer[Key.NODE_ID_LIST], answer[Key.SHARE_LIST], strict=True):
            shares[owner].append(share)
    secrets = {nid: combine_shares(share_list) for nid, share_list in shares.items()}
    remove_masks(
        total,
        secrets,
        active,
        {nid: s.neighbours for nid, s in states.items()},
        {nid: s.pk1 for nid, s in states.items()},
    )
    return total


def _aggregate(
    states: dict, updates: dict[int, np.ndarray], examples: dict[int, int], active: set[int]
) -> np.ndarray:
    """Unmasked sum of the active sites' uploads, dequantized to the weighted mean."""
    total = _unmasked_sum(states, updates, examples, active)
    return weighted_mean_of_sum(total, len(active), states[min(states)].clipping_range, LEVELS).copy()


def _reference(updates, examples, active) -> np.ndarray:
    weights = np.array([examples[n] for n in sorted(active)], dtype=np.float64)
    stacked = np.stack([updates[n].astype(np.float64) for n in sorted(active)])
    return (weights[:, None] * stacked).sum(0) / weights.sum()


@pytest.fixture
def three_sites():
    rng = np.random.default_rng(7)
    clipping_range = 2.0**-4
    updates = {nid: (rng.standard_normal(10_000) * 0.01).astype(np.float32) for nid in (101, 102, 103)}
    examples = {101: 40, 102: 25, 103: 31}
    return clipping_range, updates, examples


def test_unmasked_sum_is_fedavg_within_quantization(three_sites):
    clipping_range, updates, examples = three_sites
    states = _federation(3, threshold=2, clipping_range=clipping_range, max_weight=40.0)
    mean = _aggregate(states, updates, examples, active={101, 102, 103})
    expected = _reference(updates, examples, {101, 102, 103})
    step = quantization_step(clipping_range, LEVELS)
    weight_sum = sum(examples.values()) / 40.0
    np.testing.assert_allclose(mean, expected, rtol=0, atol=3 * step / weight_sum)
    assert np.abs(expected).max() > 1000 * step  # not a comparison of two near-zero vectors


def test_a_dropped_sites_masks_are_rebuilt_from_the_survivors_shares(three_sites):
    clipping_range, updates, examples = three_sites
    states = _federation(3, threshold=2, clipping_range=clipping_range, max_weight=40.0)
    mean = _aggregate(states, updates, examples, active={101, 103})  # 102 shared keys, then vanished
    expected = _reference(updates, examples, {101, 103})
    step = quantization_step(clipping_range, LEVELS)
    np.testing.assert_allclose(mean, expected, rtol=0, atol=2 * step / ((40 + 31) / 40))


def test_partial_neighbourhoods_with_two_dropouts_as_with_tens_of_sites():
    """9 sites, 5 shares each (a ring, as with many sites), threshold 3; two sites vanish after
    sharing keys, one of them a neighbour of the other."""
    rng = np.random.default_rng(3)
    nids = list(range(101, 110))
    updates = {nid: (rng.standard_normal(2_000) * 0.02).astype(np.float32) for nid in nids}
    examples = {nid: int(rng.integers(10, 50)) for nid in nids}
    states = _federation(9, threshold=3, clipping_range=2.0**-3, max_weight=50.0, shares=5)
    active = set(nids) - {104, 105}
    mean = _aggregate(states, updates, examples, active)
    step = quantization_step(2.0**-3, LEVELS)
    weight_sum = sum(examples[n] for n in active) / 50.0
    np.testing.assert_allclose(
        mean, _reference(updates, examples, active), rtol=0, atol=len(active) * step / weight_sum
    )


def test_a_single_upload_looks_uniform_and_is_four_bytes_per_value(three_sites):
    clipping_range, updates, examples = three_sites
    states = _federation(3, threshold=2, clipping_range=clipping_range, max_weight=40.0)
    state = states[101]
    head, body = mask_update(
        updates[101].copy(), examples[101], state, _receive_shares(state, state.forwarded)
    )
    assert body.dtype == np.uint32 and body.size == updates[101].size and head.size == 1
    # quantized values alone would sit in [0, 2**22]; masked ones spread over all of [0, 2**32)
    assert body.max() > 2**31 and np.abs(body.astype(np.float64).mean() / 2**31 - 1) < 0.05
    assert abs(np.corrcoef(body.astype(np.float64), updates[101])[0, 1]) < 0.05


def test_more_examples_than_max_weight_fails_instead_of_overflowing(three_sites):
    clipping_range, updates, _ = three_sites
    states = _federation(3, threshold=2, clipping_range=clipping_range, max_weight=10.0)
    state = states[101]
    with pytest.raises(FederationError, match="max_weight"):
        mask_update(updates[101].copy(), 11, state, _receive_shares(state, state.forwarded))


def _registered_total(examples: dict[int, int], active: set[int], max_weight: float) -> int:
    return sum(quantized_weight(examples[n] / max_weight, LEVELS) for n in active)


def test_honest_sums_are_possible_even_at_the_edges_of_the_range(three_sites):
    clipping_range, updates, examples = three_sites
    states = _federation(3, threshold=2, clipping_range=clipping_range, max_weight=40.0)
    edges = {
        nid: np.full_like(u, (-1) ** i * 10 * clipping_range) for i, (nid, u) in enumerate(updates.items())
    }
    for values, active in ((updates, {101, 102, 103}), (edges, {101, 102, 103}), (updates, {101, 103})):
        total = _unmasked_sum(states, values, examples, active)
        assert (
            check_unmasked_sum(total, len(active), _registered_total(examples, active, 40.0), LEVELS) is None
        )


@pytest.mark.parametrize(
    ("attack", "message"),
    [
        # the attack: 2**28 levels added to every masked value after masking
        (lambda upload: upload[1:].__iadd__(np.uint32(2**28)), "beyond 3 x the clipping range"),
        # a shift below zero wraps round to near 2**32: caught by the same bound
        (lambda upload: upload[1:].__isub__(np.uint32(2 * LEVELS)), "beyond 3 x the clipping range"),
        (lambda upload: upload[:1].__iadd__(np.uint32(LEVELS)), "summed weight"),  # weight inflated
        (lambda upload: upload[:1].__isub__(np.uint32(5)), "summed weight"),  # weight lowered a little
    ],
)
def test_a_site_rewriting_its_masked_upload_makes_the_sum_impossible(three_sites, attack, message):
    clipping_range, updates, examples = three_sites
    states = _federation(3, threshold=2, clipping_range=clipping_range, max_weight=40.0)
    active = {101, 102, 103}

    def tamper(nid: int, upload: np.ndarray) -> None:
        if nid == 102:
            attack(upload)

    total = _unmasked_sum(states, updates, examples, active, tamper)
    problem = check_unmasked_sum(total, 3, _registered_total(examples, active, 40.0), LEVELS)
    assert problem is not None and message in problem


def test_a_sum_of_sites_without_weight_is_refused_not_divided_by_zero(three_sites):
    clipping_range, updates, examples = three_sites
    states = _federation(3, threshold=2, clipping_range=clipping_range, max_weight=40.0)
    nothing = dict.fromkeys(examples, 0)
    total = _unmasked_sum(states, updates, nothing, {101, 102, 103})
    assert "no registered weight" in check_unmasked_sum(total, 3, 0, LEVELS)


def test_a_weight_other_than_the_registered_one_is_refused(three_sites):
    """A site that weights by more examples than it registered (honest masking, wrong weight)."""
    clipping_range, updates, examples = three_sites
    states = _federation(3, threshold=2, clipping_range=clipping_range, max_weight=40.0)
    claimed = examples | {103: 40}
    total = _unmasked_sum(states, updates, claimed, {101, 102, 103})
    problem = check_unmasked_sum(total, 3, _registered_total(examples, {101, 102, 103}, 40.0), LEVELS)
    assert problem is not None and "summed weight" in problem
