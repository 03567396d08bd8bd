"""The reader on what `privdiff synth` writes: a tiny generated federation, read back."""

from __future__ import annotations

import numpy as np
import pytest

from privdiff_core.data import detect_layout, open_dataset
from privdiff_core.synth import SynthParams, generate_federation, iter_federation

# Four sites: the generator's fixed profiles cover MONOCHROME1, 8/10/12/14-bit and rescale.
PARAMS = SynthParams(sites=4, patients=3, images_per_patient=2, size=32, seed=3)


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "federation"
    generate_federation(root, PARAMS, progress=False)
    return root


def test_generated_federation_reads_back_as_generated(federation):
    truth = {sample.sop_instance_uid: sample for sample in iter_federation(PARAMS)}
    dataset = open_dataset(federation, PARAMS.size, progress=False)
    assert detect_layout(federation) == "federation"
    assert len(dataset) == len(truth) == 24
    tensors = dataset.load_tensors(progress=False)
    for index, record in enumerate(dataset.records):
        sample = truth[record.uid]
        assert record.patient_id == f"{sample.patient.site.name}/{sample.patient.patient_id}"
        assert (record.age_group, record.sex) == (sample.study.age_group, sample.patient.sex)
        assert record.split == sample.patient.split
        np.testing.assert_array_equal(np.array(record.labels), sample.labels)
        assert all(record.label_mask)  # the generator labels every finding
        # The file's window (1st..99th percentile) stretches the rendered image linearly and clips
        # the tails; MONOCHROME1 sites are stored inverted and must read the right way round.
        shown = (tensors.image[index, 0].numpy() + 1) / 2
        assert np.corrcoef(shown.ravel(), sample.image.ravel())[0, 1] > 0.98


def test_generated_splits_stay_per_patient(federation):
    dataset = open_dataset(federation, 16, progress=False)
    for name in ("train", "val", "test"):
        others = {r.patient_id for r in dataset.records if r.split != name}
        assert not set(dataset.split(name).patient_ids) & others
