import pytest
import torch
from torch import nn

from privdiff_core.optimizers import adam, adamw


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def _train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int = 5) -> None:
    torch.manual_seed(1)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        model(torch.randn(6, 1, 8, 8)).square().mean().backward()
        optimizer.step()


@pytest.mark.parametrize(
    ("make", "reference", "kwargs"),
    [
        (adam, torch.optim.Adam, {"lr": 1e-2}),
        (adamw, torch.optim.AdamW, {"lr": 1e-2, "weight_decay": 0.1}),
    ],
)
def test_cpu_parameters_get_the_fused_kernel_and_the_same_updates(make, reference, kwargs):
    fused_model, plain_model = _model(0), _model(0)
    initial = [p.detach().clone() for p in fused_model.parameters()]
    fused = make(fused_model.parameters(), **kwargs)
    plain = reference(plain_model.parameters(), **kwargs)
    assert fused.defaults["fused"] is True
    assert not plain.defaults["fused"]
    _train(fused_model, fused)
    _train(plain_model, plain)
    for a, b, before in zip(fused_model.parameters(), plain_model.parameters(), initial, strict=True):
        assert not torch.equal(a, before)  # trained
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_param_groups_keep_their_own_learning_rates():
    first, second = nn.Linear(3, 3), nn.Linear(3, 2)
    groups = [{"params": first.parameters(), "lr": 1e-3}, {"params": second.parameters(), "lr": 5e-2}]
    optimizer = adam(groups)
    assert optimizer.defaults["fused"] is True
    assert [group["lr"] for group in optimizer.param_groups] == [1e-3, 5e-2]
    # the groups' parameters were given as generators: all of them still reach the optimizer
    assert [len(group["params"]) for group in optimizer.param_groups] == [2, 2]


def test_a_device_without_a_fused_kernel_gets_the_default_implementation():
    params = [nn.Parameter(torch.empty(4, 4, device="meta"))]
    assert not adam(params, lr=1e-3).defaults["fused"]
    assert not adamw(params, lr=1e-3).defaults["fused"]
