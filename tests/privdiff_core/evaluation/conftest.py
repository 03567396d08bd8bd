"""Shared fixtures of the evaluation tests (the toy data lives in eval_toydata.py)."""

import pytest
from eval_toydata import toy_splits

from privdiff_core.evaluation.protocol import EvalSplits


@pytest.fixture(scope="session")
def splits() -> EvalSplits:
    return toy_splits()
