"""SAS: the projection equals the paper's N x N formula, removes F_s, never forms N x N; the
processor computes exactly O = normalize(P A_diag) V_diag per head, in float32 under autocast."""

import pytest
import torch
from diffusers.models.attention_processor import Attention

from privdiff_core.model.sas import (
    NORM_DELTA,
    SASAttnProcessor,
    normalize_suppressed,
    sas_project,
    sas_project_joint,
)
from privdiff_core.model.tokens import TokenLayout


def softmax_blocks(generator, *lead, n, sizes, sharpness=3.0):
    """Concatenated row-softmax maps (..., n, sum(sizes)), like [A_id, A_age, A_sex]."""
    return torch.cat(
        [
            torch.softmax(
                sharpness * torch.randn(*lead, n, size, generator=generator, dtype=torch.float64), -1
            )
            for size in sizes
        ],
        dim=-1,
    )


def naive_projection(A_diag, F_s, eps):
    """The paper's P = I - F_s (F_s^T F_s + eps' I)^-1 F_s^T, formed explicitly (N x N)."""
    gram = F_s.mT @ F_s
    ridge = eps * gram.diagonal(dim1=-2, dim2=-1).mean(-1)
    eye_s = torch.eye(gram.shape[-1], dtype=gram.dtype)
    P = (
        torch.eye(F_s.shape[-2], dtype=F_s.dtype)
        - F_s @ torch.linalg.inv(gram + ridge[..., None, None] * eye_s) @ F_s.mT
    )
    return P @ A_diag


@pytest.mark.parametrize("lead,n", [((), 64), ((2, 3), 256), ((4,), 40)])
def test_projection_equals_naive_formula_in_float64(lead, n):
    g = torch.Generator().manual_seed(n)
    F_s = softmax_blocks(g, *lead, n=n, sizes=(4, 4, 2))
    A_diag = softmax_blocks(g, *lead, n=n, sizes=(14,))
    fast, naive = sas_project(A_diag, F_s, 1e-4), naive_projection(A_diag, F_s, 1e-4)
    assert fast.dtype == torch.float64
    assert (fast - naive).norm() / naive.norm() < 1e-9
    # float32 maps (what the processor feeds it): products in float32, the solve in float64.
    single = sas_project(A_diag.float(), F_s.float(), 1e-4)
    assert single.dtype == torch.float32
    assert (single.double() - naive).norm() / naive.norm() < 1e-5


def test_joint_token_major_projection_is_the_same_equation():
    # What the processor runs: [F_s | A_diag] transposed to (..., L, N), one product for both
    # F_s^T F_s and F_s^T A_diag. It must equal the naive formula as sas_project does.
    g = torch.Generator().manual_seed(5)
    F_s = softmax_blocks(g, 2, 4, n=96, sizes=(4, 4, 2))
    A_diag = softmax_blocks(g, 2, 4, n=96, sizes=(14,))
    maps_t = torch.cat([F_s, A_diag], -1).mT
    joint = sas_project_joint(maps_t, 10, 1e-4)
    naive = naive_projection(A_diag, F_s, 1e-4)
    assert joint.shape == (2, 4, 14, 96) and joint.dtype == torch.float64
    assert (joint.mT - naive).norm() / naive.norm() < 1e-9
    single = sas_project_joint(maps_t.float(), 10, 1e-4)
    assert single.dtype == torch.float32
    assert (single.mT.double() - naive).norm() / naive.norm() < 1e-5
    # The normalization reads the transposed map the same way.
    assert torch.allclose(normalize_suppressed(joint, token_dim=-2).mT, normalize_suppressed(joint.mT))
    with pytest.raises(ValueError, match="token_dim"):
        normalize_suppressed(joint, token_dim=0)
    # Trained through: finite, correct gradients (the processor backpropagates through it).
    logits = torch.randn(1, 24, 12, generator=g, dtype=torch.float64, requires_grad=True)

    def f(lt):
        blocks = lt.split((4, 4, 2, 14), dim=-2)
        return sas_project_joint(torch.cat([b.softmax(-2) for b in blocks], -2), 10, 1e-3)

    assert torch.autograd.gradcheck(f, (logits,))


def test_projection_removes_the_sensitive_span_and_error_scales_with_eps():
    g = torch.Generator().manual_seed(0)
    F_s = softmax_blocks(g, 8, n=256, sizes=(4, 4, 2))
    residual = {eps: (sas_project(F_s, F_s, eps).norm() / F_s.norm()).item() for eps in (1e-2, 1e-4, 1e-6)}
    assert residual[1e-4] < 1e-2
    assert residual[1e-6] < residual[1e-4] / 10 < residual[1e-2] / 100
    # A vector orthogonal to span(F_s) passes unchanged; rows of the result sum to ~0 (ones in span).
    A_diag = softmax_blocks(g, 8, n=256, sizes=(14,))
    cleaned = sas_project(A_diag, F_s, 1e-8)
    assert cleaned.sum(-1).abs().max() < 1e-5
    ortho = torch.randn(8, 256, 3, generator=g, dtype=torch.float64)
    U, S, _ = torch.linalg.svd(F_s, full_matrices=False)
    U = U * (S[..., :1] * 1e-10 < S)[..., None, :]  # F_s is rank-deficient: keep its true span
    ortho = ortho - U @ (U.mT @ ortho)
    assert torch.allclose(sas_project(ortho, F_s, 1e-10), ortho, atol=1e-6)


def test_projection_never_forms_the_n_by_n_matrix():
    # N x N in float64 would need 80 GB here: only an O(N L) implementation can run this.
    g = torch.Generator().manual_seed(1)
    n = 100_000
    F_s = softmax_blocks(g, n=n, sizes=(4, 4, 2)).float()
    A_diag = softmax_blocks(g, n=n, sizes=(14,)).float()
    cleaned = sas_project(A_diag, F_s, 1e-4)
    assert cleaned.shape == (n, 14) and cleaned.dtype == torch.float32
    assert torch.isfinite(cleaned).all()


def test_projection_has_finite_gradients():
    g = torch.Generator().manual_seed(2)
    logits_s = torch.randn(1, 12, 10, generator=g, dtype=torch.float64, requires_grad=True)
    logits_d = torch.randn(1, 12, 14, generator=g, dtype=torch.float64, requires_grad=True)

    def f(ls, ld):
        F_s = torch.cat([ls[..., :4].softmax(-1), ls[..., 4:8].softmax(-1), ls[..., 8:].softmax(-1)], -1)
        return sas_project(ld.softmax(-1), F_s, 1e-3)

    assert torch.autograd.gradcheck(f, (logits_s, logits_d))


def test_normalization_keeps_suppressed_rows_small():
    A = torch.tensor([[[0.5, -0.5], [0.01, -0.01]]])
    out = normalize_suppressed(A)
    assert torch.allclose(out.abs().sum(-1).mean(), torch.tensor(1.0), atol=1e-4)
    assert out[0, 1].abs().sum() < 0.05  # a nearly wiped row is not blown back up
    assert NORM_DELTA < 1e-4


def reference_sas(attn, proc, layout, hidden, context):
    """O = normalize(P A_diag) V_diag per head with the naive N x N projector, then to_out."""
    B, N, _ = hidden.shape
    H, dk = attn.heads, attn.inner_dim // attn.heads
    heads = lambda x: x.view(B, -1, H, dk).transpose(1, 2).double()  # noqa: E731
    q = heads(attn.to_q(hidden))
    sl = layout.slices()
    maps = {}
    for name in ("identity", "age", "sex", "diagnosis"):
        proj = attn.to_k if name == "diagnosis" else proc.to_k_sensitive[name]
        maps[name] = torch.softmax(q @ heads(proj(context[:, sl[name]])).mT / dk**0.5, -1)
    F_s = torch.cat([maps["identity"], maps["age"], maps["sex"]], -1)
    A = naive_projection(maps["diagnosis"], F_s, proc.eps)
    A = A / (A.abs().sum(-1).mean(-1, keepdim=True).unsqueeze(-1) + NORM_DELTA)
    out = (A @ heads(attn.to_v(context[:, sl["diagnosis"]]))).transpose(1, 2).reshape(B, N, H * dk)
    return attn.to_out[0](out.float())


def make_attention(layout, dim=32, cross=16, heads=4):
    torch.manual_seed(0)
    attn = Attention(query_dim=dim, cross_attention_dim=cross, heads=heads, dim_head=dim // heads)
    proc = SASAttnProcessor(cross, attn.inner_dim, layout, eps=1e-4)
    attn.set_processor(proc)
    return attn, proc


def test_processor_matches_the_equations_and_runs_float32_under_autocast():
    layout = TokenLayout(identity=3)
    attn, proc = make_attention(layout)
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(2, 64, 32, generator=g)
    context = torch.randn(2, layout.total, 16, generator=g)
    with torch.no_grad():
        out = attn(hidden, encoder_hidden_states=context)
        expected = reference_sas(attn, proc, layout, hidden, context)
        assert (out - expected).abs().max() < 1e-4 * expected.abs().max()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out_autocast = attn(hidden, encoder_hidden_states=context)
    assert out_autocast.dtype == torch.float32
    assert torch.equal(out_autocast, out)
    # The processor's parameters belong to the layer (trained and saved with it).
    names = [n for n, _ in attn.named_parameters()]
    assert {"processor.to_k_sensitive.identity.weight", "processor.to_k_sensitive.sex.weight"} <= set(names)


def test_sensitive_tokens_change_the_output_only_through_the_projection():
    layout = TokenLayout(identity=3)
    attn, _ = make_attention(layout)
    g = torch.Generator().manual_seed(4)
    hidden = torch.randn(1, 64, 32, generator=g)
    context = torch.randn(1, layout.total, 16, generator=g)
    changed = context.clone()
    changed[:, layout.slices()["identity"]] += torch.randn(1, 3, 16, generator=g)
    with torch.no_grad():
        assert not torch.allclose(
            attn(hidden, encoder_hidden_states=context), attn(hidden, encoder_hidden_states=changed)
        )


def test_processor_rejects_wrong_token_count_and_self_attention():
    layout = TokenLayout(identity=3)
    attn, _ = make_attention(layout)
    with pytest.raises(ValueError, match="conditioning tokens"):
        attn(torch.randn(1, 16, 32), encoder_hidden_states=torch.randn(1, layout.total - 1, 16))
    with pytest.raises(ValueError, match="attn2"):
        attn.processor(attn, torch.randn(1, 16, 32))
    with pytest.raises(ValueError, match="at least 2 tokens"):
        TokenLayout(identity=1)


def test_keep_mean_projects_off_the_centered_sensitive_maps_and_keeps_each_findings_level():
    g = torch.Generator().manual_seed(3)
    F_s = softmax_blocks(g, 2, n=128, sizes=(4, 4, 2))
    A_diag = softmax_blocks(g, 2, n=128, sizes=(14,))
    maps_t = torch.cat([F_s, A_diag], -1).mT
    kept = sas_project_joint(maps_t, 10, 1e-8, keep_mean=True).mT  # (2, 128, 14)
    centered = F_s - F_s.mean(-2, keepdim=True)
    torch.testing.assert_close(kept, naive_projection(A_diag, centered, 1e-8))
    # The paper's projection wipes the all-ones direction (rows sum to ~0); centered, every
    # position still attends with total weight one and each finding keeps its spatial mean.
    paper = sas_project_joint(maps_t, 10, 1e-8).mT
    assert paper.sum(-1).abs().max() < 1e-5
    torch.testing.assert_close(kept.sum(-1), torch.ones(2, 128, dtype=torch.float64))
    torch.testing.assert_close(kept.mean(-2), A_diag.mean(-2))
    # What varies with the sensitive attention is still removed.
    assert (centered.mT @ kept).norm() / (centered.mT @ A_diag).norm() < 1e-4
