"""The rules on hand-made runs: exact statistics, so each threshold and each blind spot is pinned down."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from fakes import fake_run, mlp_layers, profile_stats

from graddoctor.diagnosis import Thresholds, diagnose
from graddoctor.errors import ConfigError


def kinds(d):
    return {f"{f.kind}/{f.severity}" for f in d.findings}


# -- vanishing / exploding across depth -----------------------------------------------------------


@pytest.mark.parametrize("factor, expected", [
    (1.0, set()),
    (0.9, set()),                                   # 0.9**9 = 0.39: mild, not a finding
    (0.5, {"vanishing_gradient/warning"}),         # 0.5**9 = 2e-3
    (0.1, {"vanishing_gradient/error"}),           # 1e-9
    (1.8, {"exploding_gradient/warning"}),         # 1.8**9 = 198
    (4.0, {"exploding_gradient/error"}),           # 2.6e5
], ids=lambda v: str(v))
def test_depth_profile_severity(factor, expected):
    run = fake_run(mlp_layers(10), profile_stats(10, factor), steps=10)
    assert kinds(diagnose(run)) == expected


@pytest.mark.parametrize("scale", [1e-8, 1.0, 1e6])
def test_depth_reading_does_not_depend_on_the_gradient_scale(scale):
    run = fake_run(mlp_layers(10), profile_stats(10, 0.4, last=0.1 * scale), steps=10)
    f = diagnose(run).of_kind("vanishing_gradient")[0]
    assert f.evidence["factor_per_layer"] == pytest.approx(0.4)
    assert f.evidence["first_last_ratio"] == pytest.approx(0.4 ** 9)
    assert f.layers[:2] == ("0", "2")


def test_vanishing_is_read_from_the_preactivation_gradient_not_weight_gradients():
    # Critical He-init ReLU MLP (issue 3): ||dW|| shrinks ~0.82 per layer toward the input while the
    # pre-activation gradient keeps its norm. Make the weight gradients collapse much harder: still healthy.
    stats = profile_stats(10, 1.0)
    stats["grad_norm"] = {name: 0.1 ** (9 - k) for k, name in enumerate(stats["grad_norm"])}
    assert not diagnose(fake_run(mlp_layers(10), stats, steps=10)).findings


def test_normalisation_layers_are_not_part_of_the_depth_profile():
    layers = [("0", "Linear", "param"), ("1", "BatchNorm1d", "param"), ("2", "ReLU", "activation"),
              ("3", "Linear", "param"), ("4", "BatchNorm1d", "param"), ("5", "ReLU", "activation"),
              ("6", "Linear", "param"), ("7", "BatchNorm1d", "param"), ("8", "ReLU", "activation"),
              ("9", "Linear", "param")]
    # BN layers carry a tiny out_grad (large batch statistics): they must not read as vanishing.
    out_grad = {"0": 1.0, "1": 1e-5, "3": 1.0, "4": 1e-5, "6": 1.0, "7": 1e-5, "9": 1.0}
    assert not diagnose(fake_run(layers, {"out_grad_norm": out_grad}, steps=5)).findings


def test_two_weight_layers_are_too_few_for_a_depth_trend():
    run = fake_run(mlp_layers(2), profile_stats(2, 1e-4), steps=5)
    assert not diagnose(run).of_kind("vanishing_gradient")


def test_a_problem_gone_by_the_end_is_info():
    steps = 30
    stats = profile_stats(10, 1.0, steps=steps)
    linears = list(stats["out_grad_norm"])
    ramp = np.r_[np.full(10, 1e-4), np.ones(steps - 10)]
    stats["out_grad_norm"] = {n: 0.1 * (ramp if n == "0" else 1.0) * (ramp if n == "2" else 1.0) for n in linears}
    f = diagnose(fake_run(mlp_layers(10), stats, steps=steps)).of_kind("vanishing_gradient")[0]
    assert str(f.severity) == "info" and "resolved itself" in f.cause


def test_zero_gradient_below_an_all_dead_layer():
    stats = profile_stats(6, 1.0)
    for name in ("0", "2", "4"):
        stats["out_grad_norm"][name] = 0.0
    stats["dead_frac"]["5"] = 1.0
    d = diagnose(fake_run(mlp_layers(6), stats, steps=10))
    assert {"vanishing_gradient/error", "dead_units/error"} <= kinds(d)
    vanishing = d.of_kind("vanishing_gradient")[0]
    assert vanishing.evidence["all_dead_layer"] == "5" and vanishing.remedies[0].id == "leaky_relu"


# -- spikes over time ----------------------------------------------------------------------------


@pytest.mark.parametrize("jump, expected", [(3.0, set()), (50.0, {"exploding_gradient/warning"}),
                                            (1e4, {"exploding_gradient/error"})])
def test_gradient_spike_against_the_running_median(jump, expected):
    stats = profile_stats(4, 1.0, steps=20)
    grad = np.ones(20)
    grad[12] = jump
    stats["grad_norm"] = {name: grad for name in stats["grad_norm"]}
    d = diagnose(fake_run(mlp_layers(4), stats, steps=20))
    assert kinds(d) == expected
    if expected:
        assert d.findings[0].evidence["first_spike_step"] == 12


# -- dead units ------------------------------------------------------------------------------------


def dead_run(dead, steps=10):
    stats = profile_stats(4, 1.0, steps=steps)
    stats["dead_frac"]["3"] = dead
    return fake_run(mlp_layers(4), stats, steps=steps)


def test_dead_units_need_silence_on_every_step_of_the_window():
    alternating = np.where(np.arange(10) % 2, 0.6, 0.05)   # different units silent on different batches
    assert not diagnose(dead_run(alternating)).findings
    f = diagnose(dead_run(0.6)).of_kind("dead_units")[0]
    assert str(f.severity) == "warning" and f.layers == ("3",) and f.evidence["dead_frac@3"] == 0.6


def test_whole_layer_dead_is_an_error_and_one_step_is_not_enough_to_tell():
    assert str(diagnose(dead_run(1.0)).of_kind("dead_units")[0].severity) == "error"
    assert str(diagnose(dead_run(1.0, steps=2)).of_kind("dead_units")[0].severity) == "info"


def test_healthy_chance_silence_is_below_the_threshold():
    # ~10-20 % of a healthy deep He/ReLU layer is silent on a whole batch (issue 3): not a finding.
    assert not diagnose(dead_run(0.2)).findings


# -- saturation ------------------------------------------------------------------------------------


def saturated_run(sat, loss=None, steps=20):
    stats = profile_stats(4, 1.0, steps=steps, act="Tanh")
    stats["saturated_frac"] = {name: sat for name in ("1", "3", "5")}
    return fake_run(mlp_layers(4, "Tanh"), stats, steps=steps, scalars={"loss": loss} if loss is not None else None)


def test_saturation_thresholds():
    assert not diagnose(saturated_run(0.1)).findings                  # trained nets sit near 10-15 %
    assert str(diagnose(saturated_run(0.4)).findings[0].severity) == "warning"
    assert str(diagnose(saturated_run(0.95)).findings[0].severity) == "error"


def test_saturation_that_grows_while_the_loss_falls_is_only_info():
    growing = np.linspace(0.0, 0.4, 20)
    f = diagnose(saturated_run(growing, loss=np.linspace(2.0, 0.5, 20))).of_kind("saturated_units")[0]
    assert str(f.severity) == "info" and "grew during training" in f.cause
    f = diagnose(saturated_run(growing, loss=np.full(20, 2.0))).of_kind("saturated_units")[0]
    assert str(f.severity) == "warning" and f.remedies[0].id == "lower_lr"


# -- non-finite ------------------------------------------------------------------------------------


def test_nonfinite_without_growth_points_at_one_operation():
    stats = profile_stats(4, 1.0, steps=10)
    stats["grad_norm"]["2"] = np.r_[np.ones(6), np.full(4, np.nan)]
    f = diagnose(fake_run(mlp_layers(4), stats, steps=10)).of_kind("nonfinite")[0]
    assert f.step_range == (6, 9) and f.layers == ("2",) and f.evidence["first_stat"] == "grad_norm"
    assert f.remedies[0].id == "guard_numerics" and "Nothing grew" in f.cause


def test_infinite_update_ratio_of_zero_weights_is_not_a_nonfinite_value():
    stats = profile_stats(4, 1.0, steps=5)
    stats["weight_norm"]["6"] = 0.0          # a zero-initialised head: ||dw|| / 0
    stats["update_ratio"]["6"] = np.inf
    assert not diagnose(fake_run(mlp_layers(4), stats, steps=5)).of_kind("nonfinite")


# -- updates ---------------------------------------------------------------------------------------


def test_uniformly_tiny_updates_with_a_flat_loss():
    stats = profile_stats(4, 1.0, steps=20, update=1e-7)
    flat = fake_run(mlp_layers(4), stats, steps=20, scalars={"loss": np.full(20, 2.3)})
    f = diagnose(flat).of_kind("vanishing_gradient")[0]
    assert str(f.severity) == "warning" and f.remedies[0].id == "raise_lr"
    moving = fake_run(mlp_layers(4), stats, steps=20, scalars={"loss": np.linspace(2.3, 1.0, 20)})
    assert not diagnose(moving).findings
    unknown = fake_run(mlp_layers(4), stats, steps=20)
    assert str(diagnose(unknown).findings[0].severity) == "info"


def test_stalled_layer_among_moving_ones():
    stats = profile_stats(5, 1.0, steps=10)
    stats["update_ratio"]["2"] = 1e-6
    f = diagnose(fake_run(mlp_layers(5), stats, steps=10)).of_kind("stalled_updates")[0]
    assert f.layers == ("2",) and "ordinary" in f.cause
    stats["grad_norm"]["2"] = 0.0
    f = diagnose(fake_run(mlp_layers(5), stats, steps=10)).of_kind("stalled_updates")[0]
    assert "no gradient at all" in f.cause


# -- thresholds --------------------------------------------------------------------------------------


def test_thresholds_can_be_tuned_and_are_validated():
    run = dead_run(0.6)
    assert not diagnose(run, thresholds=dataclasses.replace(Thresholds(), dead_warning=0.7)).findings
    with pytest.raises(ConfigError, match="positive"):
        Thresholds(spike_factor=-1)
    with pytest.raises(ConfigError, match="vanishing_error < vanishing_warning"):
        Thresholds(vanishing_warning=1e-8)


def test_every_threshold_default_is_commented():
    import inspect

    from graddoctor.diagnosis import thresholds

    source = inspect.getsource(thresholds.Thresholds)
    for field in dataclasses.fields(Thresholds):
        line = next(line for line in source.splitlines() if line.strip().startswith(f"{field.name}:"))
        assert "#" in line, f"Thresholds.{field.name} has no comment giving its reason"
