"""Every labelled scenario is diagnosed with the right kinds on the right layers; healthy ones get no error."""

from __future__ import annotations

import math

import pytest
from scenarios import SCENARIOS

from graddoctor.diagnosis import diagnose

IDS = [case["id"] for case in SCENARIOS]


@pytest.mark.parametrize("case", SCENARIOS, ids=IDS)
def test_scenario_is_diagnosed_as_labelled(case, scenario_runs):
    d = diagnose(scenario_runs(case["id"]))
    found = {f"{f.kind}/{f.severity}": f.layers for f in d.findings}
    for kind, layers in case.get("expect", {}).items():
        hits = d.of_kind(kind)
        assert hits, f"{case['id']}: expected {kind}, found {found}"
        named = {layer for f in hits for layer in f.layers}
        assert set(layers) <= named, f"{case['id']}: {kind} should name {layers}, named {sorted(named)}"
    for kind, severity in case.get("severity", {}).items():
        assert any(str(f.severity) == severity for f in d.of_kind(kind)), found
    for kind in case.get("forbid", []):
        assert not d.of_kind(kind), f"{case['id']}: {kind} should not be found: {found}"
    if case.get("healthy"):
        assert not d.reaches("error"), f"{case['id']} is healthy but got {found}"


@pytest.mark.parametrize("case", SCENARIOS, ids=IDS)
def test_every_finding_explains_itself(case, scenario_runs):
    for f in diagnose(scenario_runs(case["id"])).findings:
        assert f.remedies, f"{f.kind} has no remedy"
        assert len({a.id for a in f.remedies}) == len(f.remedies), "a remedy is listed twice"
        assert f.cause.endswith((".", ")")) and len(f.cause) > 60
        assert any(ch.isdigit() for ch in f.cause), "the cause should quote the evidence"
        assert all(isinstance(v, (int, float, str)) for v in f.evidence.values())


def first_remedy(run, kind):
    return diagnose(run).of_kind(kind)[0].remedies[0].id


def test_remedy_ranking_follows_the_evidence(scenario_runs):
    # A saturated sigmoid net and an exploding BatchNorm net get different first advice.
    assert first_remedy(scenario_runs("deep_sigmoid"), "vanishing_gradient") == "relu"
    assert first_remedy(scenario_runs("deep_sigmoid"), "saturated_units") == "xavier_init"
    assert first_remedy(scenario_runs("deep_relu_default_init"), "vanishing_gradient") == "he_init"
    assert first_remedy(scenario_runs("bn_relu_30_no_skips_at_init"), "exploding_gradient") == "residual"
    assert first_remedy(scenario_runs("relu_lr_too_high"), "dead_units") == "lower_lr"
    assert first_remedy(scenario_runs("negative_bias_kills_layer"), "dead_units") == "he_init"
    assert first_remedy(scenario_runs("relu_he_sgd_diverges"), "nonfinite") == "lower_lr"


def test_divergence_is_explosion_then_nonfinite_at_the_recorded_step(scenario_runs):
    run = scenario_runs("relu_he_sgd_diverges")
    d = diagnose(run)
    nonfinite = d.of_kind("nonfinite")[0]
    explosion = d.of_kind("exploding_gradient")[0]
    assert nonfinite.step_range[0] == run.first_nonfinite["step"] == nonfinite.evidence["first_step"]
    assert explosion.step_range[0] < nonfinite.step_range[0]
    assert nonfinite.evidence["grad_norm_growth_before"] > 100
    assert "diverged" in nonfinite.cause


def test_dead_layer_evidence_points_at_the_shift(scenario_runs):
    f = diagnose(scenario_runs("negative_bias_kills_layer")).of_kind("dead_units")[0]
    assert f.evidence["dead_frac@5"] == 1.0
    assert f.evidence["preact_layer"] == "4" and f.evidence["preact_mean"] < -5
    assert "shifted negative" in f.cause and "nothing under it learns" in f.cause


def test_deep_sigmoid_reads_the_decay_from_the_preactivation_gradient(scenario_runs):
    run = scenario_runs("deep_sigmoid_default_init")
    f = diagnose(run).of_kind("vanishing_gradient")[0]
    g = run.stat("out_grad_norm", "0")[0] / run.stat("out_grad_norm", "18")[0]
    assert f.evidence["first_last_ratio"] == pytest.approx(g, rel=0.5)
    assert 0.05 < f.evidence["factor_per_layer"] < 0.25  # sigma' <= 1/4 and PyTorch's small default weights
    assert str(f.severity) == "error" and f.evidence["fit_r2"] > 0.95
    assert "1/4" in f.cause


def test_bn_explosion_rate_matches_theory(scenario_runs):
    f = diagnose(scenario_runs("bn_relu_30_no_skips_at_init")).of_kind("exploding_gradient")[0]
    # Yang et al. 2019: BN-ReLU multiplies the gradient's squared norm by about pi/(pi-1) per layer.
    assert f.evidence["factor_per_layer"] == pytest.approx(math.sqrt(math.pi / (math.pi - 1)), rel=0.1)
    assert "skip connections" in f.cause
