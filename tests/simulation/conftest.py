"""Shared fixtures of the simulation tests."""

import pytest


@pytest.fixture
def isolated_home(tmp_path, monkeypatch):
    """A fresh HOME and no FLWR_HOME: Flower's and Ray's per-user state stays inside the test."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("FLWR_HOME", raising=False)
    return home
