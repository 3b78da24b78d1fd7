"""Model surgery: each edit does what it says on a copy (or refuses clearly), and the remedies act on gradient flow."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import graddoctor
from graddoctor import theory
from graddoctor.errors import ConfigError
from graddoctor.remedies import (
    Edit, RemedyError, Residual, Surgery, add_residual, apply_remedy, insert_norm, reinit, swap_activation,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import models  # noqa: E402


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def snapshot(model: nn.Module) -> tuple[str, dict[str, torch.Tensor]]:
    return repr(model), {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: nn.Module, before: tuple[str, dict[str, torch.Tensor]]) -> None:
    text, state = before
    assert repr(model) == text
    now = model.state_dict()
    assert now.keys() == state.keys()
    assert all(torch.equal(now[k], v) for k, v in state.items())


def deep_mlp(act: type[nn.Module] = nn.Sigmoid, depth: int = 10, width: int = 32, d_in: int = 16) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(d_in, width), act()]
    for _ in range(depth - 2):
        layers += [nn.Linear(width, width), act()]
    return nn.Sequential(*layers, nn.Linear(width, 4))


def same_width_convnet() -> nn.Sequential:
    """Stem, two shape-preserving conv blocks around a pool, a nested Sequential block, a head."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.Tanh(),
        nn.Sequential(nn.Conv2d(8, 8, 1), nn.ReLU()),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2),
    )


# -- Edit and Surgery --------------------------------------------------------------------------------


def test_edit_and_surgery_print_what_changed():
    edit = Edit("3", "swap activation", "Sigmoid -> ReLU")
    assert str(edit) == "3: swap activation (Sigmoid -> ReLU)"
    s = Surgery(nn.Linear(2, 2), (edit,))
    assert str(s).splitlines() == ["1 edit(s) to Linear:", "  3: swap activation (Sigmoid -> ReLU)"]
    assert issubclass(RemedyError, ConfigError)


# -- swap_activation ---------------------------------------------------------------------------------


def test_swap_replaces_sigmoid_and_tanh_on_a_copy():
    model = models.mlp()
    before = snapshot(model)
    s = swap_activation(model)
    assert [str(e) for e in s.edits] == ["1: swap activation (Tanh -> ReLU)", "3: swap activation (Sigmoid -> ReLU)"]
    assert [type(m) for m in s.model if not isinstance(m, nn.Linear)] == [nn.ReLU] * 3
    assert n_params(s.model) == n_params(model)
    assert s.model(torch.randn(5, 6)).shape == (5, 3)
    assert_unchanged(model, before)


def test_swap_takes_a_factory_and_edits_in_place_when_asked():
    model = models.inplace_relu()
    weights = [id(p) for p in model.parameters()]
    s = swap_activation(model, nn.ReLU, lambda: nn.LeakyReLU(0.2), inplace=True)
    assert s.model is model and len(s.edits) == 2
    assert all(m.negative_slope == 0.2 for m in model if isinstance(m, nn.LeakyReLU))
    assert [id(p) for p in model.parameters()] == weights


def test_swap_keeps_a_shared_activation_shared():
    model = models.Reused()  # `act` is called twice but registered once
    s = swap_activation(model)
    assert len(s.edits) == 1 and isinstance(s.model.act, nn.ReLU)


def test_swap_in_nested_submodules():
    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Tanh(), nn.Sequential(nn.Linear(4, 4), nn.Sigmoid())))
    s = swap_activation(model, new=nn.GELU)
    assert [e.layer for e in s.edits] == ["1.0", "1.1.1"]
    assert isinstance(s.model[1][1][1], nn.GELU)


def test_swap_refuses_when_no_activation_module_is_found():
    with pytest.raises(RemedyError, match=r"no Sigmoid/Tanh module in Nested.*custom forward \(F.relu"):
        swap_activation(models.Nested())  # Block's activation is a ReLU module; none of the requested types


def test_swap_refuses_bad_arguments():
    with pytest.raises(RemedyError, match="nn.Module class"):
        swap_activation(models.mlp(), old="sigmoid")
    with pytest.raises(RemedyError, match="must return an nn.Module"):
        swap_activation(models.mlp(), new=lambda: "relu")
    with pytest.raises(RemedyError, match="nn.Module, got int"):
        swap_activation(3)


# -- reinit ------------------------------------------------------------------------------------------


def wide(act: nn.Module) -> nn.Sequential:
    return nn.Sequential(nn.Linear(200, 300), act, nn.Linear(300, 300), act, nn.Linear(300, 3))


def target_variances(scheme: str, act: nn.Module) -> list[float]:
    fans = [(200, 300), (300, 300), (300, 3)]
    if scheme == "he":
        slope = act.negative_slope if isinstance(act, nn.LeakyReLU) else 0.0
        return [2 / (1 + slope**2) / fi for fi, _ in fans]
    if scheme == "xavier":
        gain = nn.init.calculate_gain("tanh") if isinstance(act, nn.Tanh) else 1.0
        return [gain**2 * 2 / (fi + fo) for fi, fo in fans]
    sw2 = theory.critical_sigma_w2(theory.resolve(act), 0.0)
    return [sw2 / fi for fi, _ in fans]


@pytest.mark.parametrize(("scheme", "act"), [
    ("he", nn.ReLU()), ("he", nn.LeakyReLU(0.3)), ("xavier", nn.Tanh()), ("xavier", nn.Sigmoid()),
    ("critical", nn.Tanh()), ("critical", nn.Sigmoid()), ("critical", nn.ReLU()),
], ids=["he-relu", "he-leaky", "xavier-tanh", "xavier-sigmoid", "critical-tanh", "critical-sigmoid", "critical-relu"])
def test_reinit_hits_the_target_weight_variance(scheme, act):
    model = wide(act)
    before = snapshot(model)
    s = reinit(model, scheme)
    linears = [m for m in s.model if isinstance(m, nn.Linear)]
    for m, var in zip(linears, target_variances(scheme, act)):
        n = m.weight.numel()
        # the sample variance of n normal draws has relative std sqrt(2/n): allow 5 of them
        assert m.weight.var().item() == pytest.approx(var, rel=5 * (2 / n) ** 0.5)
        assert abs(m.weight.mean().item()) < 5 * (var / n) ** 0.5
        assert torch.count_nonzero(m.bias) == 0
    assert [e.layer for e in s.edits] == ["0", "2", "4"]
    assert all(e.action == f"re-init ({scheme})" for e in s.edits)
    assert_unchanged(model, before)


def test_critical_init_for_relu_is_he_init():
    assert "2/fan_in" in str(reinit(wide(nn.ReLU()), "critical").edits[0])


def test_reinit_in_place_keeps_parameter_identity_and_skips_frozen_weights():
    model = models.Frozen()
    ids = [id(p) for p in model.parameters()]
    stem = model.stem.weight.clone()
    s = reinit(model, "he", inplace=True)
    assert s.model is model and [id(p) for p in model.parameters()] == ids
    assert torch.equal(model.stem.weight, stem)  # frozen: left alone
    assert [e.layer for e in s.edits] == ["head"]


def test_reinit_draws_a_tied_weight_once():
    s = reinit(models.TiedLM(), "xavier")
    assert [e.layer for e in s.edits] == ["proj", "decoder"]
    assert s.model.decoder.weight is s.model.emb.weight


def test_lsuv_gives_unit_output_variance_on_the_data():
    data = torch.randn(256, 200)
    s = reinit(wide(nn.Tanh()), "lsuv", data=data)
    outs = []
    hooks = [m.register_forward_hook(lambda mod, i, o: outs.append(o.var().item())) for m in s.model if isinstance(m, nn.Linear)]
    with torch.no_grad():
        s.model(data)
    for h in hooks:
        h.remove()
    assert outs == pytest.approx([1.0] * 3, rel=1e-2)
    assert all(e.action == "re-init (lsuv)" for e in s.edits)
    assert all(torch.count_nonzero(m.bias) == 0 for m in s.model if isinstance(m, nn.Linear))


def test_lsuv_on_a_conv_net_leaves_batchnorm_statistics_alone():
    model = models.conv_net()
    s = reinit(model, "lsuv", data=torch.randn(8, 3, 10, 10))
    assert len(s.edits) == 4
    assert torch.count_nonzero(s.model[1].running_mean) == 0 and s.model.training


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"scheme": "orthogonal"}, "unknown init scheme 'orthogonal'; choose one of he, xavier, critical, lsuv"),
    ({"scheme": "lsuv"}, "pass data="),
])
def test_reinit_refuses_bad_arguments(kwargs, message):
    with pytest.raises(RemedyError, match=message):
        reinit(models.mlp(), **kwargs)


def test_reinit_refuses_what_it_cannot_do():
    with pytest.raises(RemedyError, match="no trainable Linear/Conv"):
        reinit(models.DictOut().heads, "he")
    with pytest.raises(RemedyError, match="critical init needs the model's activation"):
        reinit(nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3)), "critical")


# -- insert_norm -------------------------------------------------------------------------------------


def test_batchnorm_after_each_hidden_linear():
    model = models.mlp()
    before = snapshot(model)
    s = insert_norm(model)
    assert [str(e) for e in s.edits] == [
        "1: insert BatchNorm1d(16) (after Linear '0')",
        "4: insert BatchNorm1d(16) (after Linear '2', now at '3')",
        "7: insert BatchNorm1d(12) (after Linear '4', now at '6')",
    ]
    assert [type(m).__name__ for m in s.model] == [
        "Linear", "BatchNorm1d", "Tanh", "Linear", "BatchNorm1d", "Sigmoid", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert n_params(s.model) == n_params(model) + 2 * (16 + 16 + 12)
    assert s.model(torch.randn(5, 6)).shape == (5, 3)
    assert_unchanged(model, before)


def test_layernorm_and_groupnorm_on_a_conv_net():
    model = models.conv_net()
    s = insert_norm(model, "layer")  # conv "0" already has its BatchNorm; "9" is the output layer
    assert [str(e) for e in s.edits] == [
        "4: insert GroupNorm(1, 6) (after Conv2d '3')",
        "9: insert LayerNorm(5) (after Linear '7', now at '8')",
    ]
    assert s.model(torch.randn(2, 3, 10, 10)).shape == (2, 2)
    b = insert_norm(model, "batch")
    assert isinstance(b.model[4], nn.BatchNorm2d) and b.model[4].num_features == 6


def test_norm_in_custom_modules_wraps_the_layer():
    model = models.Nested()
    s = insert_norm(model)
    assert [e.layer for e in s.edits] == ["stem.1", "body.0.0.fc.1", "body.0.1.fc.1"]
    assert isinstance(s.model.stem, nn.Sequential) and s.model.stem[0] is not model.stem
    assert "now at 'stem.0'" in s.edits[0].detail
    assert s.model(torch.randn(3, 4)).shape == (3, 2)


def test_norm_skips_every_output_layer():
    s = insert_norm(models.NoGradBranch())
    assert "main.1" not in [e.layer for e in s.edits]  # its output is the model's first output
    assert isinstance(s.model.main, nn.Linear)


def test_batchnorm_refuses_a_sequence_linear_and_layernorm_does_it():
    with pytest.raises(RemedyError, match=r"'proj' \(3 dims\).*insert_norm\(model, 'layer'\)"):
        insert_norm(models.TiedLM())
    s = insert_norm(models.TiedLM(), "layer")
    assert [str(e) for e in s.edits] == ["proj.1: insert LayerNorm(8) (after Linear 'proj', now at 'proj.0')"]
    assert s.model(torch.randint(0, 20, (2, 5))).shape == (2, 5, 20)


@pytest.mark.parametrize("build", [models.LSTMNet, models.batchnorm_mlp], ids=["only_an_output_layer", "already_normed"])
def test_norm_refuses_when_there_is_nothing_to_insert_after(build):
    with pytest.raises(RemedyError, match="nothing to insert a norm after"):
        insert_norm(build())
    with pytest.raises(RemedyError, match="kind must be 'batch' or 'layer'"):
        insert_norm(build(), "group")


def test_batchnorm_raises_the_gradient_ratio_of_a_deep_sigmoid_mlp():
    torch.manual_seed(0)
    model = deep_mlp(nn.Sigmoid, depth=10)
    x, y = torch.randn(64, 16), torch.randint(0, 4, (64,))
    before = grad_ratio(model, x, y)
    after = grad_ratio(insert_norm(model).model, x, y)
    assert before < 1e-5  # ten sigmoid layers at PyTorch's default init: the gradient is gone
    assert after > 1e3 * before


def grad_ratio(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """out_grad_norm of the first over the last Linear, measured by graddoctor.watch at step 0."""
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with graddoctor.watch(model, opt) as run:
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    view = graddoctor.load(run)
    linears = [info.name for info in view.layer_info if info.type == "Linear"]
    return float(view.stat("out_grad_norm", linears[0])[0] / view.stat("out_grad_norm", linears[-1])[0])


# -- add_residual ------------------------------------------------------------------------------------


def test_residual_wraps_the_shape_preserving_blocks_of_a_deep_mlp():
    model = deep_mlp(nn.Tanh, depth=5)
    before = snapshot(model)
    s = add_residual(model)
    assert [e.layer for e in s.edits] == ["2", "3", "4"]
    assert s.edits[0].detail == "x + f(x) over '2', '3' (Linear, Tanh); shape (4, 32) kept"
    assert [type(m).__name__ for m in s.model] == ["Linear", "Tanh", "Residual", "Residual", "Residual", "Linear"]
    assert n_params(s.model) == n_params(model)
    x = torch.randn(3, 16)
    h = model[1](model[0](x))
    assert torch.allclose(s.model[2](h), h + model[3](model[2](h)))
    assert s.model(x).shape == (3, 4)
    assert_unchanged(model, before)


def test_residual_on_a_conv_net_with_pooling_and_a_nested_block():
    s = add_residual(same_width_convnet())
    assert [e.layer for e in s.edits] == ["2", "4", "5.0"]
    assert "'2', '3', '4' (Conv2d, BatchNorm2d, ReLU)" in s.edits[0].detail
    assert isinstance(s.model[5][0], Residual) and isinstance(s.model[3], nn.MaxPool2d)
    assert s.model(torch.randn(2, 3, 16, 16)).shape == (2, 2)


def test_residual_uses_the_data_when_given():
    model = models.frozen_conv_stem()  # Flatten -> Linear(800): only a 10x10 input fits
    with pytest.raises(RemedyError, match="dry forward .* failed .*pass data="):
        add_residual(model)
    with pytest.raises(RemedyError, match=r"changes the shape \(2, 3, 10, 10\) -> \(2, 8, 10, 10\)"):
        add_residual(model, data=torch.randn(2, 3, 10, 10))


def test_residual_refuses_shape_changing_blocks_and_models_without_sequential():
    with pytest.raises(RemedyError, match=r"no shape-preserving block.*'3', '4' \(Conv2d, ReLU\) changes the shape"):
        add_residual(models.conv_net())
    with pytest.raises(RemedyError, match="has no nn.Sequential.*x = x \\+ block\\(x\\)"):
        add_residual(models.Reused())


def test_shape_checks_leave_the_rng_stream_and_training_mode_alone():
    model = deep_mlp(nn.Tanh, depth=4)
    state = torch.get_rng_state()
    s = add_residual(model)
    t = insert_norm(model)
    assert torch.equal(torch.get_rng_state(), state)
    assert s.model.training and t.model.training and all(m.training for m in t.model.modules())


def test_residual_twice_refuses_instead_of_nesting():
    once = add_residual(deep_mlp(nn.ReLU, depth=4)).model
    with pytest.raises(RemedyError, match="no shape-preserving block"):
        add_residual(once)


# -- apply_remedy ------------------------------------------------------------------------------------


def test_relu_remedy_swaps_and_reinitialises():
    model = deep_mlp(nn.Sigmoid, depth=4)
    s = apply_remedy(model, "relu")
    assert [e.action for e in s.edits] == ["swap activation"] * 3 + ["re-init (he)"] * 4
    assert not any(isinstance(m, nn.Sigmoid) for m in s.model.modules())
    assert isinstance(model[1], nn.Sigmoid)


def test_leaky_relu_remedy_uses_he_init_for_its_slope():
    s = apply_remedy(deep_mlp(nn.ReLU, depth=3), "leaky_relu")
    assert all(m.negative_slope == 0.01 for m in s.model if isinstance(m, nn.LeakyReLU))
    assert "LeakyReLU slope 0.01" in s.edits[-1].detail


@pytest.mark.parametrize(("remedy_id", "check"), [
    ("he_init", lambda s: s.edits[0].action == "re-init (he)"),
    ("xavier_init", lambda s: s.edits[0].action == "re-init (xavier)"),
    ("critical_init", lambda s: s.edits[0].action == "re-init (critical)"),
    ("batch_norm", lambda s: isinstance(s.model[1], nn.BatchNorm1d)),
    ("layer_norm", lambda s: isinstance(s.model[1], nn.LayerNorm)),
    ("residual", lambda s: isinstance(s.model[2], Residual)),
])
def test_every_model_side_id_applies(remedy_id, check):
    assert check(apply_remedy(deep_mlp(nn.Tanh, depth=4), remedy_id))


@pytest.mark.parametrize("remedy_id", ["grad_clip", "lower_lr", "warmup", "adam", "change_optimizer"])
def test_training_side_ids_are_trainer_options(remedy_id):
    with pytest.raises(RemedyError, match="option of the trainer"):
        apply_remedy(models.mlp(), remedy_id)


def test_unknown_id_lists_the_known_ones():
    with pytest.raises(RemedyError, match="'magic' is unknown; model-side remedies: relu, leaky_relu, he_init"):
        apply_remedy(models.mlp(), "magic")
