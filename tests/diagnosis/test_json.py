"""The Findings JSON contract of DESIGN.md, checked on real diagnoses and on the edge cases (NaN, no finding)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fakes import fake_run, mlp_layers, profile_stats

import graddoctor
from graddoctor.diagnosis import diagnose
from graddoctor.remedies import CATALOG

KINDS = {"vanishing_gradient", "exploding_gradient", "dead_units", "saturated_units", "nonfinite", "stalled_updates",
         # DESIGN.md, Findings JSON: the kinds for transformers and instability
         "large_updates", "activation_growth", "attention_logit_growth", "attention_entropy_collapse", "loss_spike"}
SEVERITIES = {"info", "warning", "error"}


def _no_constants(name):
    raise AssertionError(f"JSON holds the non-standard constant {name}")


def validate(text: str) -> dict:
    """Check `text` against the Findings contract; return the parsed object."""
    doc = json.loads(text, parse_constant=_no_constants)
    assert {"version", "findings", "layers"} <= set(doc)
    assert doc["version"] == graddoctor.__version__
    assert isinstance(doc["findings"], list) and isinstance(doc["layers"], list)
    names = {layer["name"] for layer in doc["layers"]}
    for f in doc["findings"]:
        assert set(f) == {"kind", "severity", "layers", "step_range", "evidence", "cause", "remedies"}
        assert f["kind"] in KINDS and f["severity"] in SEVERITIES
        assert isinstance(f["layers"], list) and set(f["layers"]) <= names
        assert f["step_range"] is None or (len(f["step_range"]) == 2 and all(isinstance(s, int) for s in f["step_range"])
                                           and f["step_range"][0] <= f["step_range"][1])
        assert isinstance(f["evidence"], dict) and f["evidence"]
        assert all(isinstance(v, (int, float, str)) and not isinstance(v, bool) for v in f["evidence"].values())
        assert isinstance(f["cause"], str) and f["cause"]
        assert f["remedies"], "remedies are a ranked, non-empty list"
        for r in f["remedies"]:
            assert set(r) == {"id", "title", "why"} and r["id"] in CATALOG and r["title"] == CATALOG[r["id"]].title
    for layer in doc["layers"]:
        assert {"name", "type", "kind", "findings"} <= set(layer)
        assert set(layer["findings"]) <= KINDS
    return doc


@pytest.mark.parametrize("case_id", ["deep_sigmoid", "relu_he_sgd_diverges", "negative_bias_kills_layer",
                                     "residual_prenorm"])
def test_real_diagnoses_follow_the_contract(case_id, scenario_runs):
    d = diagnose(scenario_runs(case_id))
    doc = validate(d.to_json())
    assert [f["kind"] for f in doc["findings"]] == [str(f.kind) for f in d.findings]
    assert len(doc["layers"]) == len(scenario_runs(case_id).layers)


def test_findings_come_worst_first(scenario_runs):
    doc = validate(diagnose(scenario_runs("negative_bias_kills_layer")).to_json())
    ranks = [["info", "warning", "error"].index(f["severity"]) for f in doc["findings"]]
    assert ranks == sorted(ranks, reverse=True)


def test_nonfinite_numbers_are_spelled_out_never_dropped():
    stats = profile_stats(4, 1.0, steps=6)
    stats["out_grad_norm"]["4"] = np.r_[np.ones(3), np.full(3, np.nan)]
    stats["grad_norm"]["4"] = np.r_[np.ones(3), np.full(3, np.inf)]
    doc = validate(diagnose(fake_run(mlp_layers(4), stats, steps=6)).to_json())
    layer = next(layer for layer in doc["layers"] if layer["name"] == "4")
    assert layer["nonfinite_steps"] == 3 and layer["grad_norm_end"] == 1.0  # medians cover the finite steps
    nonfinite = next(f for f in doc["findings"] if f["kind"] == "nonfinite")
    assert nonfinite["evidence"]["first_step"] == 3 and nonfinite["layers"] == ["4"]


def test_json_number_spells_out_nan_and_infinities():
    from graddoctor.diagnosis.findings import json_number

    assert [json_number(v) for v in (float("nan"), float("inf"), -float("inf"), np.float64(2.5), 3)] == [
        "nan", "inf", "-inf", 2.5, 3]


def test_a_healthy_run_has_an_empty_list_not_a_missing_key(scenario_runs):
    doc = validate(diagnose(scenario_runs("small_mlp")).to_json())
    assert doc["findings"] == []
    assert all(layer["findings"] == [] for layer in doc["layers"])


def test_text_output_names_severity_kind_layers_evidence_cause_and_remedies(scenario_runs):
    text = str(diagnose(scenario_runs("deep_sigmoid")))
    for needle in ("WARNING  vanishing_gradient", "layers: '0', '2'", "evidence: first_last_ratio=", "cause: ",
                   "try, in this order:", "1. Use ReLU-family activations", "per layer (input side first"):
        assert needle in text
