"""Fixtures shared by every test folder."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run a test on one torch thread and restore the count after it.

    Tiny models run fastest on one thread, a shared 2-core machine punishes two badly, and one
    thread fixes the reduction order, so a short training gives the same numbers on every run.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
