"""SPG: the combination is the paper's equation, with |w_s|, and s cycles over the sensitive attributes."""

import torch

from privdiff_core.model.spg import cfg_combine, sensitive_for_step, spg_combine, spg_weights


def test_spg_combine_matches_the_equation():
    g = torch.Generator().manual_seed(0)
    e0, ed, es = (torch.randn(3, 4, 8, 8, generator=g) for _ in range(3))
    out = spg_combine(e0, ed, es, w_diag=2.5, w_s=-0.7)
    expected = e0 + 2.5 * (ed - e0) - 0.7 * (es - e0)
    assert torch.allclose(out, expected, atol=1e-6)
    # |w_s|: the sign of w_s never turns the suppression into amplification.
    assert torch.allclose(spg_combine(e0, ed, es, 2.5, 0.7), out)
    # w_diag = 1, w_s = 0 is the plain diagnosis-conditional prediction.
    assert torch.allclose(spg_combine(e0, ed, es, 1.0, 0.0), ed, atol=1e-6)
    # Moving eps(z, s) moves eps_p the opposite way.
    assert torch.allclose(spg_combine(e0, ed, es + 1, 2.5, -0.7) - out, torch.full_like(out, -0.7), atol=1e-5)


def test_cfg_combine_and_the_sensitive_cycle():
    e0, ec = torch.zeros(2), torch.ones(2)
    assert torch.equal(cfg_combine(e0, ec, 3.0), torch.full((2,), 3.0))
    assert [sensitive_for_step(k) for k in range(5)] == ["identity", "age", "sex", "identity", "age"]


def test_spg_weights_are_the_equation_as_a_weighted_sum():
    g = torch.Generator().manual_seed(1)
    e0, ed, es = (torch.randn(2, 4, 4, 4, generator=g) for _ in range(3))
    for w_diag, w_s in ((2.0, -1.0), (3.0, -0.5), (1.5, 0.25)):
        c0, cd, cs = spg_weights(w_diag, w_s)
        assert torch.allclose(c0 * e0 + cd * ed + cs * es, spg_combine(e0, ed, es, w_diag, w_s), atol=1e-5)
    assert spg_weights(2.0, -1.0)[0] == 0.0  # the configs' weights: eps(z, 0) drops out
