"""TensorBoard export: every recorded statistic, scalar and histogram, read back by TensorBoard itself."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import graddoctor
from graddoctor.cli import main

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


@pytest.fixture
def recorded(store_path):
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with graddoctor.watch(model, opt, store=store_path, name="tb", hist_every=2) as run:
        for step in range(4):
            loss = model(torch.randn(8, 4)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log(loss=loss, **({"nan_metric": float("nan")} if step == 1 else {}))
    return store_path


def read_events(logdir) -> EventAccumulator:
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


def test_export_writes_every_statistic_per_layer_and_the_logged_scalars(recorded, tmp_path, capsys):
    assert main(["export", str(recorded), "--format", "tensorboard", "-o", str(tmp_path / "tb")]) == 0
    assert "of run 'tb'" in capsys.readouterr().err
    view = graddoctor.load(recorded)
    acc = read_events(tmp_path / "tb")
    tags = set(acc.Tags()["scalars"])
    for stat in view.stats:
        for layer in view.layers:
            if view.recorded(stat)[view.layers.index(layer)].any():
                assert f"{stat}/{layer}" in tags
    events = acc.Scalars("grad_norm/0")
    assert [e.step for e in events] == view.steps.tolist()
    np.testing.assert_allclose([e.value for e in events], view.stat("grad_norm", "0"), rtol=1e-6)
    np.testing.assert_allclose([e.wall_time for e in events], view.wall_time, rtol=1e-9)
    assert [e.step for e in acc.Scalars("loss")] == [0, 1, 2, 3]
    np.testing.assert_allclose([e.value for e in acc.Scalars("loss")], view.scalar("loss"), rtol=1e-6)
    assert "lr/group0" in tags


def test_nonfinite_values_are_written_and_unlogged_steps_are_not(recorded, tmp_path):
    assert main(["export", str(recorded), str(tmp_path / "tb"), "--format", "tensorboard"]) == 0
    events = read_events(tmp_path / "tb").Scalars("nan_metric")
    assert [e.step for e in events] == [1] and math.isnan(events[0].value)


def test_histograms_keep_the_recorded_bins(recorded, tmp_path):
    assert main(["export", str(recorded), "--format", "tensorboard", "-o", str(tmp_path / "tb")]) == 0
    view = graddoctor.load(recorded)
    acc = read_events(tmp_path / "tb")
    assert {"act_hist/1", "grad_hist/0", "grad_hist/2"} <= set(acc.Tags()["histograms"])
    stored = view.hist("0", "grad")
    events = acc.Histograms("grad_hist/0")
    assert [e.step for e in events] == [s for s, *_ in stored] == [0, 2]
    step, lo, hi, _, counts = stored[-1]
    value = events[-1].histogram_value
    assert value.min == pytest.approx(lo) and value.max == pytest.approx(hi)
    assert value.num == counts.sum()
    assert list(value.bucket) == counts.tolist()
    assert value.bucket_limit[-1] == pytest.approx(hi)


def test_tensorboard_export_needs_an_output_directory(recorded, capsys):
    assert main(["export", str(recorded), "--format", "tensorboard"]) == 2
    assert "log directory" in capsys.readouterr().err


def test_mirror_writes_steps_while_training_holding_back_the_newest(store_path, tmp_path):
    from graddoctor.integrations.tensorboard import TensorBoardMirror

    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with graddoctor.watch(model, opt, store=store_path, name="live") as run:
        mirror = TensorBoardMirror(run, tmp_path / "tb")
        for step in range(5):
            loss = model(torch.randn(8, 4)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log(loss=loss)  # after the step: reaches the store with the next step
            if step == 2:
                assert mirror.update() == 2 and mirror.written == 1  # steps 0, 1; step 2 held back
    mirror.close()
    acc = read_events(tmp_path / "tb")
    view = graddoctor.load(store_path, name="live")
    assert [e.step for e in acc.Scalars("loss")] == [0, 1, 2, 3, 4]
    np.testing.assert_allclose([e.value for e in acc.Scalars("loss")], view.scalar("loss"), rtol=1e-6)
    assert [e.step for e in acc.Scalars("grad_norm/0")] == [0, 1, 2, 3, 4]


def test_follow_on_a_finished_run_writes_it_all_and_returns(recorded, tmp_path, capsys):
    assert main(["export", str(recorded), "--format", "tensorboard", "-o", str(tmp_path / "tb"), "--follow", "0.1"]) == 0
    assert "steps up to 3" in capsys.readouterr().err
    assert [e.step for e in read_events(tmp_path / "tb").Scalars("loss")] == [0, 1, 2, 3]
    assert main(["export", str(recorded), "--format", "csv", "--follow", "1"]) == 2


def test_importing_graddoctor_and_its_cli_imports_no_framework():
    import subprocess
    import sys

    code = ("import sys, graddoctor, graddoctor.cli, graddoctor.integrations.tensorboard; "
            "print([m for m in ('lightning', 'pytorch_lightning', 'transformers', 'accelerate', 'tensorboard', "
            "'torch.utils.tensorboard') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == "[]"
