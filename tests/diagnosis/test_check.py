"""graddoctor.check: a few watched steps on one batch, then the rules; the model is left as it was."""

from __future__ import annotations

import pytest
import torch
from scenarios import he, mlp
from torch import nn

import graddoctor
from graddoctor.errors import ConfigError, GradDoctorError


def deep_sigmoid() -> nn.Sequential:
    return mlp(10, 32, nn.Sigmoid, d_in=16)


def test_check_finds_vanishing_in_a_deep_sigmoid_mlp_with_random_targets():
    d = graddoctor.check(deep_sigmoid(), torch.randn(32, 16), steps=5)
    assert "vanishing_gradient" in d.kinds
    assert any("random class labels in [0, 10)" in note for note in d.notes)
    assert d.run["n_steps"] == 5


def test_check_leaves_no_trace():
    model = mlp(4, 16, nn.ReLU, d_in=8, batch_norm=True)
    model.eval()
    model[0].weight.grad = torch.ones_like(model[0].weight)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    params = [id(p) for p in model.parameters()]
    batch = (torch.randn(16, 8), torch.randint(0, 10, (16,)))
    rng = torch.get_rng_state()
    graddoctor.check(model, batch, steps=3, optimizer=optimizer)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # BN running stats too
    assert [id(p) for p in model.parameters()] == params
    assert not model.training and not any(m.training for m in model.modules())
    assert torch.equal(model[0].weight.grad, torch.ones_like(model[0].weight)) and model[3].weight.grad is None
    assert optimizer.state_dict()["state"] == {}
    assert torch.equal(torch.get_rng_state(), rng)
    assert not model._forward_hooks and not model[0]._forward_hooks


def test_float_targets_get_mse_and_one_output_gets_random_regression_targets():
    model = mlp(3, 16, nn.Tanh, d_in=4, d_out=1)
    d = graddoctor.check(model, torch.randn(8, 4), steps=2)
    assert any("mean squared error" in note for note in d.notes)
    d = graddoctor.check(model, (torch.randn(8, 4), torch.randn(8, 1)), steps=2, loss_fn=nn.functional.l1_loss)
    assert d.run["n_steps"] == 2


def test_a_diverging_check_stops_at_the_first_nonfinite_step():
    model = mlp(6, 64, nn.ReLU, init=he, d_in=16)
    d = graddoctor.check(model, torch.randn(64, 16) * 20, steps=20,
                         optimizer=torch.optim.SGD(model.parameters(), lr=5.0))
    assert "nonfinite" in d.kinds and d.run["n_steps"] < 20


@pytest.mark.parametrize("model, batch, kwargs, message", [
    ("not a model", torch.randn(2, 3), {}, "takes a torch.nn.Module"),
    (nn.Linear(3, 2), torch.randn(2, 3), {"steps": 0}, "steps must be an integer >= 1"),
    (nn.Linear(784, 10), torch.randn(4, 100), {}, r"shape \(4, 100\).*\(N, \.\.\., 784\)"),
    (nn.Conv2d(3, 8, 3), torch.randn(4, 1, 8, 8), {}, r"expects inputs of shape \(N, 3, H, W\)"),
    (nn.Linear(3, 2), (torch.randn(4, 3), torch.full((4,), 9)), {}, "the loss failed at step 0"),
])
def test_bad_input_is_a_clear_error(model, batch, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        graddoctor.check(model, batch, **kwargs)


class FailsLater(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 3:
            raise ValueError("boom")
        return self.fc(x)


def test_an_error_in_a_later_step_names_the_step_and_restores_the_model():
    model = FailsLater()
    before = model.fc.weight.clone()
    with pytest.raises(GradDoctorError, match="training step 2: ValueError: boom"):
        graddoctor.check(model, torch.randn(4, 4), steps=5)
    assert torch.equal(model.fc.weight, before)
