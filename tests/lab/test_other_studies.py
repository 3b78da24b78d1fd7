"""The paper studies (issue 7, item 4) run quick and reproduce the papers' qualitative results."""

from __future__ import annotations

import json
import math

import pytest

from graddoctor.lab.runner import run_study


def quick_run(name: str, tmp_path, seeds: int = 2) -> tuple[dict, str]:
    """(results.json's content, report.html's text) of `graddoctor lab run NAME --quick`, one process."""
    run = run_study(name, quick=True, seeds=seeds, jobs=1, out=tmp_path, progress=False)
    return json.loads(run.results_path.read_text()), run.report_path.read_text()


def test_bn_explosion_grows_by_pi_over_pi_minus_1_and_residual_removes_it(tmp_path):
    analysis, html = quick_run("bn-explosion", tmp_path)
    s = analysis["summary"]
    assert abs(s["vs_theory"]) < 0.05                       # finite-batch theory (batch 64: 1.493)
    assert abs(s["plain_growth"] / (math.pi / (math.pi - 1)) - 1) < 0.06
    for row in analysis["batch_sweep"]:
        assert row["growth"]["mean"] == pytest.approx(row["theory"], rel=0.06)
    assert s["residual_late_growth"] < 1.15 < s["plain_growth"]
    assert s["residual_ratio"] < s["plain_ratio"] / 2
    assert html.count("<figure>") == 3 and "pi/(pi-1)" in html


def test_he_init_trains_and_xavier_stalls_at_depth_30(tmp_path):
    analysis, html = quick_run("he-init", tmp_path)
    assert analysis["he_trains"] and analysis["xavier_stalls"]
    xavier = next(p for p in analysis["points"] if p["init"] == "xavier")
    assert xavier["log10_grad_ratio"]["mean"] == pytest.approx(xavier["predicted_log10_grad_ratio"], abs=1.0)
    assert xavier["predicted_log10_grad_ratio"] < -3           # 2^-14: the gradient reaching layer 1
    assert html.count("<figure>") == 2


def test_criticality_deepest_nets_train_only_near_chi1_equal_1(tmp_path):
    analysis, html = quick_run("criticality", tmp_path, seeds=1)
    assert analysis["critical_sigma_w2"] == pytest.approx(1.76, abs=0.01)     # tanh, the paper's sigma_b^2 = 0.05
    assert analysis["best_sigma_w2_at_deepest"] == 1.76                       # the peak sits at chi_1 = 1
    shallow, deep = analysis["accuracy"]
    assert shallow[0]["mean"] < 0.2 and shallow[1]["mean"] > 0.5 and shallow[2]["mean"] > 0.5   # 6 xi_c: 7, inf, 42
    assert deep[1]["mean"] > deep[2]["mean"] + 0.1 and deep[1]["mean"] > deep[0]["mean"] + 0.1
    assert analysis["agreement"] >= 0.8
    assert "6 xi_c" in html and html.count("<figure>") == 1


def test_glorot_bengio_standard_init_shrinks_gradients_toward_the_input(tmp_path):
    analysis, html = quick_run("glorot-bengio", tmp_path, seeds=1)
    p = {(q["activation"], q["init"]): q for q in analysis["points"]}
    for act in ("tanh", "sigmoid", "softsign"):
        std, norm = p[act, "standard"], p[act, "normalised"]
        assert std["grad_ratio"]["mean"] < norm["grad_ratio"]["mean"]          # Fig. 7: standard shrinks more
        assert std["act_ratio"]["mean"] < norm["act_ratio"]["mean"] + 0.05     # Fig. 6: upper layers narrower
        assert std["grad_ratio"]["mean"] == pytest.approx(std["theory_grad_ratio"], rel=0.3)
    assert p["tanh", "standard"]["grad_ratio"]["mean"] == pytest.approx(1 / 9, rel=0.35)   # paper: (1/3)^(4/2)
    hist = p["tanh", "standard"]["grad_hist"]                                 # Fig. 7's data, in results.json
    assert len(hist["edges"]) == 81 and len(hist["fractions"]) == 5
    assert all(0.97 < sum(f) <= 1.0 for f in hist["fractions"])              # +-3 std of the widest layer
    centre = [sum(f[35:45]) for f in hist["fractions"]]                     # mass near 0: layer 1 narrowest
    assert centre[0] > centre[-1]
    assert html.count("<figure>") == 6


def test_depth_sweep_gradient_ratio_follows_theory_and_batchnorm_rescues_deep_sigmoid(tmp_path):
    analysis, html = quick_run("depth-sweep", tmp_path, seeds=1)
    cell = {(c["activation"], c["norm"], c["depth"]): c for c in analysis["cells"]}
    deep_sigmoid = cell["sigmoid", "none", 12]
    assert deep_sigmoid["log10_ratio"]["mean"] < -5 and deep_sigmoid["test_accuracy"]["mean"] < 0.2
    assert cell["sigmoid", "batch", 12]["test_accuracy"]["mean"] > 0.8
    assert abs(cell["relu", "none", 3]["log10_ratio"]["mean"]) < abs(deep_sigmoid["log10_ratio"]["mean"])
    assert analysis["max_theory_error_plain"] < 0.5
    assert html.count("<figure>") == 1
