"""Rules on runs recorded with watch's default tiers (the full tier on its own schedule): no finding
that the same run recorded in full does not have, and the full-tier rules still fire."""

from __future__ import annotations

import pytest
import torch
from scenarios import SCENARIOS, train

from graddoctor.diagnosis import diagnose
from graddoctor.diagnosis.rules import RULES

CASES = {c["id"]: c for c in SCENARIOS}


def _run(case_id: str, tiers: dict):
    case = CASES[case_id]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            return train(case["build"](), **case["train"], tiers=tiers)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("case_id", ["negative_bias_kills_layer", "small_mlp"])
def test_default_tiers_find_nothing_the_full_record_does_not(case_id, scenario_runs):
    tiered = _run(case_id, {"full_every": 5, "full_first": 2})
    full = scenario_runs(case_id)
    cheap_steps = ~tiered.recorded("act_std").any(axis=0)
    assert cheap_steps.sum() > len(tiered.steps) // 2  # most steps hold the cheap tier only
    assert tiered.recorded("grad_norm").any(axis=0).all()
    kinds = {str(f.kind) for f in diagnose(tiered).findings}
    assert kinds <= {str(f.kind) for f in diagnose(full).findings}
    expected = set(CASES[case_id].get("expect", {}))
    assert expected <= kinds  # dead_units (a full-tier rule) still fires from the full-tier steps


def test_every_rule_says_which_tier_it_reads():
    assert {spec.tier for spec in RULES} <= {"cheap", "full"}
    full = {str(spec.kind) for spec in RULES if spec.tier == "full"}
    assert {"dead_units", "saturated_units", "stalled_updates", "large_updates"} <= full
