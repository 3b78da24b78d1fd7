"""The report's through-time figures (docs/through-time.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import graddoctor

pytest.importorskip("matplotlib")
from graddoctor.reporting import figures  # noqa: E402
from graddoctor.reporting.model import figure_plan  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tasks import recall, train_recall  # noqa: E402


@pytest.fixture(scope="module")
def run():
    return train_recall(recall.rnn(), steps=4, length=90)


def test_time_profile_draws_chosen_steps_on_a_log_axis(run):
    ax = figures.time_profile(run, "rnn", steps=[0, 3])
    assert ax.get_yscale() == "log" and [t.get_text() for t in ax.get_legend().get_texts()] == ["step 0", "step 3"]
    line = ax.get_lines()[0]
    want, edges = run.time_stat("in_grad_norm_t", "rnn")
    assert len(line.get_xdata()) == len(edges) - 1
    np.testing.assert_allclose(np.nan_to_num(line.get_ydata()), np.where(want[0] > 0, want[0], 0))


def test_time_heatmap_rows_are_time_steps(run):
    ax = figures.time_heatmap(run, "rnn")
    mesh = ax.collections[0]
    assert mesh.get_array().shape == (64, 4)  # 90 steps in 64 buckets x 4 training steps
    assert ax.get_ylabel() == "time step t"


def test_report_plans_the_figures_for_recurrent_layers_only(run):
    titles = [s.title for s in figure_plan(run)]
    assert "Gradient through time: rnn" in titles and "Time step x training step: rnn" in titles
    model = nn.Sequential(nn.Linear(2, 2))
    with graddoctor.watch(model) as plain:
        model(torch.randn(3, 2)).sum().backward()
        plain.step()
    assert not any("through time" in s.title for s in figure_plan(graddoctor.load(plain)))
