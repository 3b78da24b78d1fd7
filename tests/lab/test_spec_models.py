"""The model builder: specs as data, checked, built into the layout the docstring promises."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from graddoctor.errors import ConfigError
from graddoctor.train.models import build
from graddoctor.train.spec import NetSpec, RunSpec, TrainSpec, from_dict, run_spec


@pytest.mark.parametrize("bad, word", [({"activation": "swishy"}, "activation"), ({"depth": 0}, "depth"),
                                       ({"norm": "group"}, "norm"), ({"bias": False, "bias_shift": -1.0}, "bias_shift")],
                         ids=["activation", "depth", "norm", "shift-without-bias"])
def test_bad_net_spec_names_the_field(bad, word):
    with pytest.raises(ConfigError, match=word):
        NetSpec(**bad)


def test_bad_train_spec_names_the_field():
    with pytest.raises(ConfigError, match="optimizer"):
        TrainSpec(optimizer="lion")
    with pytest.raises(ConfigError, match="hist_every"):
        TrainSpec(every=3, hist_every=10)


def test_mlp_layout_and_output_shape():
    model = build(NetSpec(depth=4, width=16, activation="tanh", norm="batch"), (64,), 10)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert len(linears) == 4 and sum(isinstance(m, nn.BatchNorm1d) for m in model) == 3
    assert model(torch.randn(5, 64)).shape == (5, 10)


def test_residual_wraps_every_hidden_block_but_the_first():
    model = build(NetSpec(depth=5, width=16, residual=True), (8,), 3)
    assert sum(type(m).__name__ == "Residual" for m in model) == 3
    assert model(torch.randn(2, 8)).shape == (2, 3)


@pytest.mark.parametrize("image", [(1, 8, 8), (1, 40)], ids=["conv2d", "conv1d"])
def test_conv_net_from_flat_inputs(image):
    n = image[0] * image[1] * (image[2] if len(image) == 3 else 1)
    model = build(NetSpec(kind="conv", depth=3, width=4, norm="batch"), (n,), 10, image)
    assert model(torch.randn(3, n)).shape == (3, 10)


def test_conv_net_without_an_image_shape_says_what_it_needs():
    with pytest.raises(ConfigError, match="image"):
        build(NetSpec(kind="conv", depth=3, width=4), (64,), 10)


@pytest.mark.parametrize("init, var", [("he", 2.0), ("normal", 3.0)], ids=["he", "normal-sigma_w2=3"])
def test_init_variance_per_fan_in(init, var):
    torch.manual_seed(0)
    model = build(NetSpec(depth=3, width=512, init=init, sigma_w2=3.0), (512,), 512)
    w = model[2].weight
    assert w.var().item() * 512 == pytest.approx(var, rel=0.05)
    assert model[2].bias.abs().max() == 0


def test_glorot_is_uniform_with_variance_2_over_fan_in_plus_fan_out():
    torch.manual_seed(0)
    model = build(NetSpec(depth=3, width=512, init="glorot"), (256,), 512)
    w = model[0].weight                                           # fan_in 256, fan_out 512
    bound = (6 / (256 + 512)) ** 0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.99 * bound
    assert w.var().item() == pytest.approx(2 / (256 + 512), rel=0.05)
    assert model[0].bias.abs().max() == 0


def test_sigma_b2_draws_normal_biases_and_needs_the_normal_init():
    torch.manual_seed(0)
    model = build(NetSpec(depth=3, width=2048, init="normal", sigma_b2=0.05), (64,), 2048)
    assert model[2].bias.var().item() == pytest.approx(0.05, rel=0.1)
    torch.manual_seed(0)
    assert build(NetSpec(depth=3, width=8, init="normal"), (4,), 2)[0].bias.abs().max() == 0   # default: zero biases
    with pytest.raises(ConfigError, match="sigma_b2.*init='normal'"):
        NetSpec(init="he", sigma_b2=0.05)
    with pytest.raises(ConfigError, match="sigma_b2 must be >= 0"):
        NetSpec(init="normal", sigma_b2=-1.0)


def test_bias_shift_moves_hidden_biases_only():
    torch.manual_seed(0)
    plain = build(NetSpec(depth=3, width=8), (4,), 2)
    torch.manual_seed(0)
    shifted = build(NetSpec(depth=3, width=8, bias_shift=-1.0), (4,), 2)
    assert torch.allclose(shifted[0].bias, plain[0].bias - 1.0)
    assert torch.equal(shifted[4].bias, plain[4].bias)


def test_leaky_relu_is_the_correct_formula():
    model = build(NetSpec(depth=2, width=4, activation="leaky_relu", negative_slope=0.01), (4,), 2)
    act = model[1]
    x = torch.tensor([-2.0, 3.0])
    assert torch.equal(act(x), torch.tensor([-0.02, 3.0]))


def test_run_spec_round_trips_through_its_dict():
    spec = run_spec("a/s1", net=NetSpec(depth=3), train=TrainSpec(clip=1.0), seed=1, claim="C1", depth=3)
    assert isinstance(spec, RunSpec) and spec.tag("claim") == "C1"
    assert from_dict(spec.to_dict()) == spec
