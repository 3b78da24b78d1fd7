"""From a torch model to layer specs: actual sigmas from the tensors, the graph (residuals), what is
not covered and why, and that reading a model leaves no trace."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import graddoctor
from graddoctor.errors import ConfigError
from graddoctor.theory import Op, read_model


def kinds(spec) -> list[str]:
    return [s.kind.value for s in spec.layers]


def test_sigmas_are_read_from_the_tensors():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(300, 200), nn.Tanh(), nn.Linear(200, 10))
    spec = read_model(model)
    first = spec.layers[spec.dense[0]]
    w, b = model[0].weight.detach().double(), model[0].bias.detach().double()
    assert first.sigma_w2 == pytest.approx(300 * float(w.pow(2).mean()), rel=1e-12)
    assert first.sigma_b2 == pytest.approx(float(b.pow(2).mean()), rel=1e-12)
    assert first.sigma_w2 == pytest.approx(1 / 3, rel=0.02)          # PyTorch's default init: U(+-1/sqrt(fan_in))
    assert kinds(spec) == ["input", "dense", "activation", "dense", "output"]
    assert spec.input_shape == (300,)


def test_conv_fan_in_and_zero_padding_border():
    """fan_in = C k^2; 3x3 taps with padding 1 on 8x8: 22 of 24 taps per axis land inside."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, padding_mode="circular"),
                          nn.ReLU(), nn.Conv2d(8, 4, 3, padding="same", bias=False))
    spec = read_model(model, (3, 8, 8))
    convs = [spec.layers[i] for i in spec.dense]
    assert [c.fan_in for c in convs] == [27, 72, 72]
    assert convs[0].border == pytest.approx((22 / 24) ** 2)
    assert convs[1].border == 1.0
    assert convs[2].border == pytest.approx((22 / 24) ** 2) and convs[2].sigma_b2 == 0.0


def test_residual_functional_and_method_ops_are_read():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2, self.fc3 = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)

        def forward(self, x):
            y = x + self.fc2(F.leaky_relu(self.fc1(x), 0.3))
            y = 0.5 * y.tanh()
            return self.fc3(F.dropout(y, 0.2, training=True)).view(x.size(0), -1)

    spec = read_model(Net())
    assert kinds(spec) == ["input", "dense", "activation", "dense", "add", "activation", "scale", "scale", "dense",
                           "pass", "output"]
    add = next(s for s in spec.layers if s.kind == Op.ADD)
    assert add.inputs == (0, 3)
    acts = [s.activation.name for s in spec.layers if s.kind == Op.ACTIVATION]
    assert acts == ["leaky_relu:0.3", "tanh"]
    scales = [s for s in spec.layers if s.kind == Op.SCALE]
    assert scales[0].forward == 0.25 and scales[1].forward == pytest.approx(1 / 0.8) and not scales[1].keeps_gaussian


class Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc, self.out = nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.out(torch.tanh(self.fc(torch.tanh(self.fc(x)))))


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc, self.out = nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            x = -x
        return self.out(self.fc(x))


def _tied() -> nn.Module:
    model = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))
    model[2].weight = model[0].weight
    return model


def _shifted() -> nn.Module:
    model = nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 2))
    with torch.no_grad():
        model[0].weight.add_(1.0)
    return model


def _trained_bn() -> nn.Module:
    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.linspace(0.5, 1.5, 8))
    return model


# case -> (model, input shape, type named as uncovered, words of the reason, a layer past it or None)
UNCOVERED = {
    "lstm": (lambda: nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.LSTM(8, 8)), (8,), "LSTM", "not covered", None),
    "maxpool": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 2)),
                (3, 8, 8), "MaxPool2d", "pooling", "4"),
    "batchnorm2d": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3)), (3, 8, 8),
                    "BatchNorm2d", "spatial positions", "3"),
    "module_twice": (Twice, (8,), "Linear", "called more than once", "out"),
    "tied_weights": (_tied, (8,), "Linear", "tied", "4"),
    "shifted_weights": (_shifted, (64,), "Linear", "not centred", "2"),
    "trained_batchnorm": (_trained_bn, (8,), "BatchNorm1d", "differ across features", "3"),
    "two_activations": (lambda: nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.ReLU(), nn.Linear(8, 2)), (8,), "ReLU",
                        "not a zero-mean Gaussian", "3"),
    "untraceable": (Branchy, (8,), "Branchy", "torch.fx cannot trace", "out"),
}


@pytest.mark.parametrize("case", sorted(UNCOVERED))
def test_uncovered_parts_say_why_and_predict_nothing_past_them(case):
    build, shape, type_, needle, past = UNCOVERED[case]
    p = graddoctor.predict(build(), input_shape=shape)
    assert not p.covered
    assert any(t == type_ and needle in reason for _, t, reason in p.uncovered), p.uncovered
    assert past is None or past not in [lp.name for lp in p.layers]
    assert f"{type_})" in repr(p)


def test_input_shape_is_needed_unless_the_first_layer_is_linear():
    with pytest.raises(ConfigError, match=r"input_shape=\(3, 32, 32\)"):
        read_model(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))
    with pytest.raises(ConfigError, match="does not run on an input of shape"):
        read_model(nn.Sequential(nn.Linear(8, 4)), (9,))
    with pytest.raises(ConfigError, match="nn.Module"):
        read_model(lambda x: x)


def test_reading_a_model_leaves_no_trace():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 2))
    model.train()
    model[3].eval()  # mixed modes must come back exactly
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    graddoctor.predict(model, batch=32)
    assert [m.training for m in model.modules()] == [True, True, True, True, False, True]
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_custom_activation_module_declares_its_nonlinearity():
    class Erf(nn.Module):
        graddoctor_activation = "erf"

        def forward(self, x):
            return torch.erf(x)

    spec = read_model(nn.Sequential(nn.Linear(4, 4), Erf(), nn.Linear(4, 1)))
    assert spec.layers[2].kind == Op.ACTIVATION and spec.layers[2].activation.name == "erf"
    assert math.isfinite(graddoctor.predict(nn.Sequential(nn.Linear(4, 4), Erf(), nn.Linear(4, 1))).mean_factor)
