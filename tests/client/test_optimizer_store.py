"""A site's Adam state between rounds on its own disk (client/optimizer_store.py).

How a site uses it over rounds (a rerun round, the context left empty) is checked through the
ClientApp in test_client_app.py; these check the store's own promises.
"""

from __future__ import annotations

import pytest
import torch

from privdiff.client.optimizer_store import OptimizerStore
from privdiff.common.errors import FederationError


def _state(step: float) -> dict[str, torch.Tensor]:
    return {"0.step": torch.tensor(step), "0.exp_avg": torch.full((3, 2), step)}


def test_a_round_starts_from_the_latest_earlier_round_of_its_stage_only(tmp_path):
    store = OptimizerStore(tmp_path, run_id=5)
    assert store.earlier("denoiser", 1) == {}  # nothing kept yet: a fresh Adam
    store.keep("autoencoder", 4, _state(4.0))
    store.keep("denoiser", 1, _state(1.0))
    store.keep("denoiser", 2, _state(2.0))
    assert torch.equal(store.earlier("denoiser", 3)["0.exp_avg"], torch.full((3, 2), 2.0))
    assert store.earlier("denoiser", 2)["0.step"].item() == 1.0  # a rerun of round 2
    assert store.earlier("autoencoder", 5)["0.step"].item() == 4.0  # stages kept apart
    store.keep("denoiser", 3, _state(3.0))
    assert sorted(store.rounds("denoiser")) == [2, 3]  # round 1 is nobody's start any more
    assert not list(store.run_dir.glob(".*"))  # no partial file left behind


def test_only_the_run_in_progress_is_kept(tmp_path):
    OptimizerStore(tmp_path, run_id=1).keep("denoiser", 7, _state(7.0))
    OptimizerStore(tmp_path, run_id=2).keep("denoiser", 1, _state(1.0))
    assert [p.name for p in tmp_path.iterdir()] == ["run-2"]
    assert OptimizerStore(tmp_path, run_id=2).earlier("denoiser", 8)["0.step"].item() == 1.0


def test_an_unreadable_state_stops_the_round_with_what_to_do(tmp_path):
    store = OptimizerStore(tmp_path, run_id=3)
    store.keep("denoiser", 1, _state(1.0))
    (store.run_dir / "denoiser-round-1.pt").write_bytes(b"not a torch file")
    with pytest.raises(FederationError, match=r"denoiser-round-1\.pt cannot be read.*delete .*run-3"):
        store.earlier("denoiser", 2)
