import pytest

from privdiff_core.synth import SynthParams, generate_federation

# Two sites cover both photometric interpretations (site_00 MONOCHROME2 DX, site_01 MONOCHROME1 CR).
TINY = SynthParams(sites=2, patients=6, images_per_patient=3, size=32, seed=3)


@pytest.fixture(scope="session")
def tiny_params():
    return TINY


@pytest.fixture(scope="session")
def tiny_federation(tmp_path_factory):
    """A small federation written once for the read-only tests."""
    out = tmp_path_factory.mktemp("synth") / "federation"
    summary = generate_federation(out, TINY, progress=False)
    return out, summary
