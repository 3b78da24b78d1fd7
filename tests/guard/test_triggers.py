"""Triggers on hand-made host numbers: thresholds relative to the run, non-finite values kept out of the statistics."""

from __future__ import annotations

import math

import numpy as np

from graddoctor.probes.guard import DeadLayers, GradSpike, LargeUpdates, NonFinite, Observation, StepTotal


def obs(step, *, norm=None, stats=None, scalars=None, layers=("a", "b")):
    totals = () if norm is None else (StepTotal(step, norm, skipped=False),)
    return Observation(step, layers, stats or {}, scalars or {}, totals)


def test_grad_spike_limit_follows_the_runs_own_level_and_a_nan_never_enters_it():
    spike = GradSpike(min_history=20)
    rng = np.random.default_rng(0)
    for t in range(40):
        assert spike.check(obs(t, norm=float(3.0 * math.exp(rng.normal(0, 0.1))))) == []
    limit = spike.device_limit()
    assert 3.0 < limit < 3.0 * math.exp(6 * 0.2)  # about e^(6 sigma) above the level, sigma = 0.1
    assert spike.check(obs(40, norm=float("nan"))) == [] and spike.device_limit() == limit  # not in the window
    assert spike.check(obs(41, norm=float("inf"))) == [] and math.isfinite(spike.device_limit())
    fired = spike.check(obs(42, norm=10 * limit))
    assert [e.trigger for e in fired] == ["grad_spike"] and fired[0].evidence["limit"] == limit


def test_grad_spike_accepts_a_lasting_change_of_level_instead_of_firing_forever():
    spike = GradSpike(min_history=20, window=64)
    for t in range(64):
        spike.check(obs(t, norm=1.0))
    fired = [t for t in range(64, 200) if spike.check(obs(t, norm=20.0))]
    assert fired and fired[-1] < 64 + 40  # about half a window, not all 136 steps


def test_grad_spike_is_silent_before_it_has_a_history():
    spike = GradSpike(min_history=20)
    assert spike.device_limit() == math.inf
    assert all(spike.check(obs(t, norm=10.0 ** t)) == [] for t in range(20))


def test_nonfinite_names_the_first_value_in_compute_order():
    nf = NonFinite()
    stats = {"act_mean": {"b": float("nan")}, "grad_norm": {"a": float("nan"), "b": float("nan")}}
    [event] = nf.check(obs(5, norm=float("nan"), stats=stats))
    assert event.layer == "b" and event.evidence["first_stat"] == "act_mean"  # forward before backward
    [event] = NonFinite().check(obs(5, norm=float("nan"), stats={"grad_norm": {"a": float("nan"), "b": float("nan")}}))
    assert event.layer == "b"  # backward: the output side first


def test_nonfinite_does_not_report_a_late_logged_loss_twice():
    nf = NonFinite()
    assert len(nf.check(obs(5, norm=float("nan")))) == 1
    late = Observation(6, ("a",), {}, {"loss": float("nan")}, (StepTotal(6, 1.0, False),), {"loss": 5})
    assert nf.check(late) == []
    fresh = Observation(9, ("a",), {}, {"loss": float("nan")}, (StepTotal(9, 1.0, False),), {"loss": 9})
    [event] = nf.check(fresh)  # a NaN loss of a step not reported yet is an event
    assert event.step == 9 and math.isnan(event.evidence["scalar:loss"])


def test_large_updates_fire_once_per_episode_against_the_layers_early_median():
    lu = LargeUpdates(baseline_steps=5, consecutive=2)
    ratio = lambda t, v: obs(t, stats={"update_ratio": {"a": v, "b": 1e-3}})  # noqa: E731
    assert lu.check(ratio(0, 5.0)) == []  # step 0 is never in the baseline
    for t in range(1, 6):
        assert lu.check(ratio(t, 2e-3)) == []
    assert lu.check(ratio(6, float("nan"))) == []
    assert lu.check(ratio(7, 0.5)) == []  # one step above: not yet
    [event] = lu.check(ratio(8, 0.5))
    assert event.layer == "a" and event.evidence["early_median"] == 2e-3
    assert lu.check(ratio(9, 0.5)) == []  # same episode
    lu.check(ratio(10, 2e-3))
    lu.check(ratio(11, 0.5))
    assert len(lu.check(ratio(12, 0.5))) == 1  # a new episode


def test_large_updates_respect_the_floor_during_a_warm_up():
    lu = LargeUpdates(baseline_steps=5, consecutive=1)
    for t in range(1, 6):
        lu.check(obs(t, stats={"update_ratio": {"a": 1e-5}}))
    assert lu.check(obs(6, stats={"update_ratio": {"a": 5e-3}})) == []  # 500x the early median, under the floor


def test_dead_layers_need_the_whole_layer_on_consecutive_steps():
    dl = DeadLayers(consecutive=3)
    assert [dl.check(obs(t, stats={"dead_frac": {"a": 1.0, "b": 0.7}})) for t in range(2)] == [[], []]
    assert dl.check(obs(2, stats={"dead_frac": {"a": float("nan")}})) == []  # NaN neither counts nor resets
    [event] = dl.check(obs(3, stats={"dead_frac": {"a": 1.0, "b": 0.7}}))
    assert event.layer == "a"
