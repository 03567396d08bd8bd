"""Conditioning tokens: order and count per category, null/unknown states, soft estimates, dropout."""

import pytest
import torch

from privdiff_core.attributes import UNKNOWN
from privdiff_core.model.conditioning import (
    ConditionEncoder,
    Conditions,
    ConditionsError,
    ConditionState,
    state_from_labels,
)
from privdiff_core.model.tokens import CATEGORIES


def example_state(batch=3, embed=8):
    g = torch.Generator().manual_seed(0)
    labels = (torch.rand(batch, 14, generator=g) > 0.5).float()
    conditions = Conditions(
        age_group=torch.tensor([0, 3, UNKNOWN])[:batch],
        sex=torch.tensor([1, UNKNOWN, 0])[:batch],
        labels=labels,
        label_mask=torch.rand(batch, 14, generator=g) > 0.3,
    )
    return state_from_labels(torch.randn(batch, embed, generator=g), conditions), conditions


def test_tokens_come_in_the_documented_order_and_count():
    torch.manual_seed(0)
    encoder = ConditionEncoder(identity_embed_dim=8, embed_dim=16, identity_tokens=3)
    state, _ = example_state()
    tokens = encoder(state)
    assert tokens.shape == (3, 3 + 4 + 2 + 14, 16)
    assert encoder.layout.lengths == (3, 4, 2, 14)
    assert list(encoder.layout.slices()) == list(CATEGORIES)
    # Changing only the age group changes only the age slice.
    other = ConditionState(**{**state.__dict__, "age": torch.roll(state.age, 1, dims=1)})
    diff = (encoder(other) - tokens).abs().sum(-1)[0]
    changed = diff.nonzero().flatten().tolist()
    assert changed and all(3 <= i < 7 for i in changed)


@pytest.mark.parametrize("finding_states", ["shared", "per_finding"])
def test_a_present_finding_changes_its_own_token_by_its_own_vector_only_with_per_finding_states(
    finding_states,
):
    torch.manual_seed(0)
    encoder = ConditionEncoder(8, 16, 2, finding_states=finding_states)
    known = torch.ones(1, 14, dtype=torch.bool)
    if finding_states == "per_finding":
        # The offsets start at zero: the same tokens as the shared layout until training moves them.
        torch.manual_seed(0)
        shared = ConditionEncoder(8, 16, 2, finding_states="shared")
        assert torch.equal(
            encoder.diagnosis(torch.ones(1, 14), known), shared.diagnosis(torch.ones(1, 14), known)
        )
        with torch.no_grad():
            encoder.diagnosis.token_states.normal_()  # as training would move them
    off = encoder.diagnosis(torch.zeros(1, 14), known)[0]
    shifts = []
    for k in range(14):
        present = torch.zeros(1, 14)
        present[0, k] = 1.0
        on = encoder.diagnosis(present, known)[0]
        changed = (on - off).abs().sum(-1).nonzero().flatten().tolist()
        assert changed == [k]  # only finding k's own token moves
        shifts.append(on[k] - off[k])
    shifts = torch.stack(shifts)
    # Shared states: "present" adds one vector to whichever finding it is (the look then has to come
    # from where the image attends); per finding: 14 different vectors.
    same = torch.allclose(shifts, shifts[:1].expand_as(shifts))
    assert same == (finding_states == "shared")
    # Soft estimates interpolate either way; unknown is its own state.
    tok = encoder.diagnosis(torch.full((1, 14), 0.3), known)
    on = encoder.diagnosis(torch.ones(1, 14), known)
    assert torch.allclose(tok, 0.3 * on + 0.7 * off, atol=1e-5)


def test_unknown_finding_states_layout_is_refused():
    with pytest.raises(ConditionsError, match="finding_states"):
        ConditionEncoder(8, 16, 2, finding_states="per_site")


def test_null_state_is_shared_and_soft_estimates_interpolate():
    torch.manual_seed(0)
    encoder = ConditionEncoder(8, 16, 2)
    state, _ = example_state()
    null = encoder(state.only())
    assert torch.allclose(null[0], null[1]) and torch.allclose(null[1], null[2])
    diag_only = encoder(state.only("diagnosis"))
    sl = encoder.layout.slices()
    assert torch.allclose(diag_only[:, sl["identity"]], null[:, sl["identity"]])
    assert not torch.allclose(diag_only[:, sl["diagnosis"]], null[:, sl["diagnosis"]])
    # Unknown entries stay unknown without estimates and become soft tokens with them.
    assert not state.age_known[2] and not state.sex_known[1]
    estimates = {
        "age": torch.full((3, 4), 0.25),
        "sex": torch.full((3, 2), 0.5),
        "diagnosis": torch.full((3, 14), 0.3),
    }
    _, conditions = example_state()
    filled = state_from_labels(state.identity, conditions, estimates)
    assert filled.age_known.all() and filled.diagnosis_known.all()
    assert torch.allclose(filled.age[2], torch.full((4,), 0.25)) and torch.equal(filled.age[0], state.age[0])
    tok = encoder.diagnosis(torch.tensor([[0.3] * 14]), torch.ones(1, 14, dtype=torch.bool))
    on = encoder.diagnosis(torch.ones(1, 14), torch.ones(1, 14, dtype=torch.bool))
    off = encoder.diagnosis(torch.zeros(1, 14), torch.ones(1, 14, dtype=torch.bool))
    assert torch.allclose(tok, 0.3 * on + 0.7 * off, atol=1e-5)


def test_condition_dropout_rate_and_batch_concat():
    g = torch.Generator().manual_seed(0)
    state = state_from_labels(torch.randn(2000, 4), Conditions(age_group=torch.zeros(2000, dtype=torch.long)))
    dropped = state.drop(0.25, g)
    assert 0.2 < 1 - dropped.age_known.float().mean().item() < 0.3
    assert 0.2 < 1 - dropped.identity_known.float().mean().item() < 0.3
    assert state.drop(0.0, g) is state
    both = ConditionState.cat([state.only(), state])
    assert both.batch_size == 4000 and not both.age_known[:2000].any() and both.age_known[2000:].all()


def test_conditions_reject_bad_shapes_and_values():
    with pytest.raises(ConditionsError, match="age_group"):
        Conditions(age_group=torch.tensor([0, 1])).validate(3)
    with pytest.raises(ConditionsError, match="sex"):
        Conditions(sex=torch.tensor([2])).validate(1)
    with pytest.raises(ConditionsError, match="labels"):
        Conditions(labels=torch.full((1, 14), 2.0)).validate(1)
    with pytest.raises(ValueError, match="unknown categories"):
        example_state()[0].only("diag")


def test_conditions_from_labelled_samples_tell_or_leave_the_findings_to_the_estimator():
    _, given = example_state()
    told = Conditions.from_samples(given).index(slice(1, 3))
    assert torch.equal(told.labels, given.labels[1:3])
    assert torch.equal(told.told_findings(2), given.label_mask[1:3])
    untold = Conditions.from_samples(given, findings_told=False).index(slice(1, 3))
    assert untold.labels is None and untold.label_mask is None
    assert torch.equal(untold.age_group, given.age_group[1:3]) and torch.equal(untold.sex, given.sex[1:3])
    assert not untold.told_findings(2).any()
