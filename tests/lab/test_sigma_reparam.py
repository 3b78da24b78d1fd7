"""sigma-Reparam (remedies/_sigma_reparam.py): the spectral-norm estimate against torch's, the forward, the surgery."""

import pytest
import torch
from torch import nn

from graddoctor.remedies import RemedyError
from graddoctor.remedies._sigma_reparam import SigmaReparamLinear, sigma_reparam
from graddoctor.train.sequence import SeqNetSpec
from graddoctor.train.tasks import load_task


def test_power_iteration_converges_to_the_spectral_norm():
    torch.manual_seed(0)
    layer = SigmaReparamLinear(48, 80)
    exact = torch.linalg.matrix_norm(layer.weight.detach(), ord=2)
    layer.power_iteration(200)
    assert float(layer.sigma().detach()) == pytest.approx(float(exact), rel=1e-4)
    x = torch.randn(7, 48)
    w_hat = layer.weight.detach() / exact  # gamma = 1: the forward uses W / ||W||_2
    torch.testing.assert_close(layer(x), x @ w_hat.t() + layer.bias.detach(), rtol=1e-4, atol=1e-5)


def test_one_step_per_training_forward_tracks_a_changing_weight_and_eval_does_not_step():
    torch.manual_seed(1)
    layer = SigmaReparamLinear(16, 16)
    with torch.no_grad():
        layer.weight.mul_(3.0)  # the estimate follows a weight that changes between steps
    for _ in range(100):
        layer(torch.randn(2, 16))
    assert float(layer.sigma().detach()) == pytest.approx(float(torch.linalg.matrix_norm(layer.weight.detach(), ord=2)), rel=1e-3)
    layer.eval()
    u = layer.u.clone()
    layer(torch.randn(2, 16))
    assert torch.equal(layer.u, u)


def test_gradient_reaches_gamma_and_the_weight_through_sigma():
    torch.manual_seed(2)
    layer = SigmaReparamLinear(8, 4)
    layer.power_iteration(100)
    layer(torch.randn(5, 8)).square().sum().backward()
    assert layer.gamma.grad is not None and float(layer.gamma.grad.abs()) > 0
    # the output is invariant to scaling W (W / sigma(W)): the gradient is orthogonal to W
    assert float((layer.weight.grad * layer.weight.detach()).sum().abs()) < 1e-4 * float(layer.weight.grad.norm())


def test_surgery_keeps_the_parameters_and_the_transformer_spec_uses_it():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    weights = [m.weight for m in model if isinstance(m, nn.Linear)]
    fixed = sigma_reparam(model).model
    assert [type(m) for m in fixed if isinstance(m, nn.Linear)] == [SigmaReparamLinear] * 2
    assert all(isinstance(m, nn.Linear) for m in model if not isinstance(m, nn.ReLU))  # the original untouched
    assert sigma_reparam(model, inplace=True).model[0].weight is weights[0]
    with pytest.raises(RemedyError, match="no nn.Linear"):
        sigma_reparam(nn.Sequential(nn.ReLU()))
    data = load_task("chars-8-n16")
    net = SeqNetSpec(kind="transformer", depth=1, width=16, heads=2, sigma_reparam=True).build(data)
    assert sum(isinstance(m, SigmaReparamLinear) for m in net.modules()) == 5  # qkv, proj, fc1, fc2, head
    assert net(data.x_train[:2]).shape[:2] == (2, 8)
