import numpy as np
import pytest

from privdiff_core.verification import make_pairs


def test_pairs_are_balanced_and_labelled_correctly():
    ids = [f"p{k // 3}" for k in range(30)] + ["single"]
    pairs = make_pairs(ids, 200, np.random.default_rng(0))
    assert pairs[:, 2].sum() == 100
    for i, j, same in pairs:
        assert i != j
        assert (ids[i] == ids[j]) == bool(same)


def test_pairs_need_repeated_patients():
    with pytest.raises(ValueError, match="two or more images"):
        make_pairs(["a", "b", "c"], 4, np.random.default_rng(0))
