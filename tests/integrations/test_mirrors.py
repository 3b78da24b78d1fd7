"""Tracker mirrors, for real: MLflow against a local file store read back with MlflowClient, W&B in
offline mode read back from the files it writes, and the feed's own contract (writer thread, failures)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from torch import nn

import graddoctor
from graddoctor.errors import ConfigError
from graddoctor.integrations.mirror import Metric, TrackerMirror, export_to_mirror, metric_key


def deep_sigmoid(depth: int = 6) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(16, 16), nn.Sigmoid()]
    return nn.Sequential(*layers, nn.Linear(16, 1))


def record(store, *, mirror=None, name="m", steps=4, nan=False, pause=0.0, **options):
    """Train a small deep sigmoid net for `steps` steps, watched and mirrored; returns its RunView."""
    torch.manual_seed(0)
    model = deep_sigmoid()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with graddoctor.watch(model, opt, store=store, name=name, mirror=mirror, **options) as run:
        for _ in range(steps):
            time.sleep(pause)
            loss = model(torch.randn(32, 16)).pow(2).mean()
            if nan:
                loss = loss * float("nan")
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log(loss=loss)
        if isinstance(mirror, Recorder):
            mirror.calls.append(("block ends", threading.current_thread().name))
    return graddoctor.load(store, name=name)


def expected_metrics(view) -> dict[str, dict[int, float]]:
    """key -> {step: value} of everything the run recorded, straight from the store."""
    out: dict[str, dict[int, float]] = {}
    for stat in view.stats:
        matrix, recorded = view.stat_matrix(stat), view.recorded(stat)
        for i, layer in enumerate(view.layers):
            got = {int(s): float(matrix[i, j]) for j, s in enumerate(view.steps) if recorded[i, j]}
            if got:
                out[metric_key(stat, layer)] = got
    for key in view.scalars:
        values, recorded = view.scalar(key), view.scalar_recorded(key)
        out[metric_key(key)] = {int(s): float(values[j]) for j, s in enumerate(view.steps) if recorded[j]}
    return out


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


class Recorder(TrackerMirror):
    """A mirror that keeps what it was given and the threads it was called from."""

    def __init__(self, fail_in: str | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.metrics: list[Metric] = []
        self.findings = None
        self.status = None
        self.fail_in = fail_in

    def _called(self, method):
        self.calls.append((method, threading.current_thread().name))
        if method == self.fail_in:
            raise OSError("tracking server gone")

    def start(self, info):
        self._called("start")
        self.info = info

    def log_metrics(self, metrics):
        self._called("log_metrics")
        self.metrics += metrics

    def log_findings(self, findings, text):
        self._called("log_findings")
        self.findings = findings

    def log_actions(self, actions):
        self._called("log_actions")

    def finish(self, status):
        self._called("finish")
        self.status = status


# -- the feed's contract ------------------------------------------------------------------------


def test_metrics_are_sent_from_the_writer_thread_and_equal_the_store(store_path):
    mirror = Recorder()
    view = record(store_path, mirror=mirror, steps=6, pause=0.1, flush_seconds=0.05)
    during = mirror.calls[1:mirror.calls.index(("block ends", "MainThread"))]
    assert during and {thread for _, thread in during} == {"graddoctor-store"}  # never the training thread
    assert mirror.info.name == "m" and mirror.info.store == str(store_path)
    got: dict[str, dict[int, float]] = {}
    for m in mirror.metrics:
        assert m.step not in got.setdefault(m.key, {}), f"{m.key} step {m.step} sent twice"
        got[m.key][m.step] = m.value
    want = expected_metrics(view)
    assert set(got) == set(want)
    assert all(got[k].keys() == want[k].keys() for k in want)
    assert all(same(got[k][s], want[k][s]) for k in want for s in want[k])
    assert "graddoctor/grad_norm/0" in got and "graddoctor/loss" in got and "graddoctor/lr/group0" in got
    assert mirror.findings == [f.to_dict() for f in graddoctor.diagnose(view).findings]
    assert mirror.status == "finished" and mirror.calls[-1][0] == "finish"


def test_a_failing_mirror_is_warned_about_and_dropped_while_the_store_records_everything(store_path):
    mirror = Recorder(fail_in="log_metrics")
    with pytest.warns(RuntimeWarning, match="Recorder mirror of run 'm' failed in log_metrics.*export"):
        view = record(store_path, mirror=mirror)
    assert view.status == "finished" and view.steps.tolist() == [0, 1, 2, 3]
    assert "finish" not in [method for method, _ in mirror.calls]  # dropped at its first failure


def test_guard_actions_reach_the_mirror_in_the_batch_that_stores_them(store_path):
    mirror = Recorder()
    mirror.actions = []
    mirror.log_actions = lambda actions: mirror.actions.extend(actions)
    view = record(store_path, mirror=mirror, nan=True, guard="default")  # every gradient NaN: skipped
    stored = [a.to_dict() if hasattr(a, "to_dict") else a for a in view.guard_actions]
    assert mirror.actions and len(mirror.actions) == len(stored)
    assert {(a["step"], a["action"]) for a in mirror.actions} == {(a["step"], a["action"]) for a in stored}
    assert any(a["action"] == "skip" for a in mirror.actions)


def test_mirror_argument_is_checked_when_watch_is_called(store_path):
    model = deep_sigmoid()
    for bad in ("mlflow", [], [Recorder(), object()]):
        with pytest.raises(ConfigError, match="mirror= takes a tracker mirror or a list of them.*MlflowMirror"):
            graddoctor.watch(model, torch.optim.SGD(model.parameters(), lr=0.1), store=store_path, mirror=bad)
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())  # refused before any hook


def test_two_mirrors_each_get_every_metric_and_the_findings(store_path):
    first, second = Recorder(), Recorder()
    view = record(store_path, mirror=[first, second])
    want = sum(len(v) for v in expected_metrics(view).values())
    assert len(first.metrics) == len(second.metrics) == want
    assert first.findings == second.findings and first.status == second.status == "finished"


def test_importing_the_mirror_modules_imports_no_tracker():
    code = (
        "import sys, graddoctor.integrations.mirror, graddoctor.integrations.mlflow, graddoctor.integrations.wandb;"
        "print(sorted(m for m in ('mlflow', 'wandb') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- MLflow, a local file store read back with MlflowClient ---------------------------------------


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    # MLflow 3 refuses a plain-file store unless asked: it is the one backend that needs no server or database.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return (tmp_path / "mlruns").as_uri()


def mlflow_run(uri: str, experiment: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return client, run


def assert_mlflow_has(client, run, view):
    for key, want in expected_metrics(view).items():
        history = client.get_metric_history(run.info.run_id, key)
        got = {m.step: m.value for m in history}
        assert got.keys() == want.keys(), key
        assert all(same(got[s], want[s]) for s in want), (key, got, want)


@pytest.mark.slow
def test_mlflow_mirror_logs_every_statistic_and_the_findings(store_path, mlflow_uri, tmp_path):
    from graddoctor.integrations.mlflow import MlflowMirror

    view = record(store_path, mirror=MlflowMirror(tracking_uri=mlflow_uri, experiment="deep-sigmoid"))
    client, run = mlflow_run(mlflow_uri, "deep-sigmoid")
    assert run.info.run_name == "m" and run.info.status == "FINISHED"
    assert_mlflow_has(client, run, view)
    assert run.data.tags["graddoctor/run"] == "m" and json.loads(run.data.params["graddoctor/every"]) == 1
    path = client.download_artifacts(run.info.run_id, "graddoctor/findings.json", str(tmp_path))
    findings = json.load(open(path))["findings"]
    assert findings == json.loads(graddoctor.diagnose(view).to_json())["findings"]
    assert run.data.tags["graddoctor/worst"] == (str(graddoctor.diagnose(view).worst) if findings else "none")


@pytest.mark.slow
def test_mlflow_keeps_nan_values_and_marks_a_failed_run(store_path, mlflow_uri):
    from graddoctor.integrations.mlflow import MlflowMirror

    mirror = MlflowMirror(tracking_uri=mlflow_uri, experiment="nan")
    view = record(store_path, mirror=mirror, nan=True)
    client, run = mlflow_run(mlflow_uri, "nan")
    grad = [m.value for m in client.get_metric_history(run.info.run_id, "graddoctor/grad_norm/0")]
    assert len(grad) == 4 and all(math.isnan(v) for v in grad)
    assert "nonfinite" in run.data.tags["graddoctor/findings"]
    mirror.finish("failed")  # the mirror of its own run ends it with the status it is told
    assert client.get_run(run.info.run_id).info.status == "FAILED"
    assert view.status == "finished"


@pytest.mark.slow
def test_mlflow_mirror_logs_into_the_callers_active_run(store_path, mlflow_uri, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    mlflow.set_experiment("mine")
    with mlflow.start_run(run_name="my-run") as active:
        from graddoctor.integrations.mlflow import MlflowMirror

        record(store_path, mirror=MlflowMirror())  # no settings: MLflow's own (the env, the active run)
        assert mlflow.active_run().info.run_id == active.info.run_id
        assert mlflow.get_run(active.info.run_id).info.status == "RUNNING"  # left open: it is the caller's
    client, run = mlflow_run(mlflow_uri, "mine")
    assert run.info.run_id == active.info.run_id and "graddoctor/grad_norm/0" in run.data.metrics


@pytest.mark.slow
def test_export_sends_a_finished_run_as_a_live_mirror_would(store_path, mlflow_uri):
    from graddoctor.integrations.mlflow import MlflowMirror

    view = record(store_path)
    counts = export_to_mirror(view, MlflowMirror(tracking_uri=mlflow_uri, experiment="later"))
    client, run = mlflow_run(mlflow_uri, "later")
    assert_mlflow_has(client, run, view)
    assert counts["metrics"] == sum(len(v) for v in expected_metrics(view).values())


# -- W&B offline mode, read back from the files it writes ----------------------------------------


@pytest.fixture
def wandb_dir(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    yield tmp_path
    import wandb

    wandb.teardown()  # wandb keeps its settings (WANDB_DIR included) process-wide until torn down


@pytest.mark.slow
def test_wandb_offline_mirror_logs_every_statistic_against_graddoctor_step(store_path, wandb_dir):
    from graddoctor.integrations.wandb import STEP_KEY, WandbMirror

    from wandb_files import read_offline_run

    view = record(store_path, mirror=WandbMirror(project="deep-sigmoid", dir=str(wandb_dir)), nan=False)
    files = read_offline_run(wandb_dir)
    got: dict[str, dict[int, float]] = {}
    for row in files["history"]:
        for key, value in row.items():
            if key.startswith("graddoctor/") and key != STEP_KEY and isinstance(value, (int, float)):
                got.setdefault(key, {})[row[STEP_KEY]] = float(value)
    want = expected_metrics(view)
    assert got.keys() >= want.keys()
    assert all(got[k] == pytest.approx(want[k], rel=1e-12) for k in want)
    diagnosis = graddoctor.diagnose(view)
    assert files["summary"]["graddoctor/findings_count"] == len(diagnosis.findings)
    assert files["summary"]["graddoctor/run"] == "m"
    assert files["config"]["graddoctor"]["watch"]["every"] == 1
    assert files["exit"] == 0


@pytest.mark.slow
def test_wandb_offline_keeps_nan_values(store_path, wandb_dir):
    from wandb_files import read_offline_run

    from graddoctor.integrations.wandb import WandbMirror

    record(store_path, mirror=WandbMirror(), nan=True)  # no settings: wandb.init reads WANDB_MODE and WANDB_DIR
    rows = [r for r in read_offline_run(wandb_dir)["history"] if "graddoctor/grad_norm/0" in r]
    assert len(rows) == 4 and all(np.isnan(r["graddoctor/grad_norm/0"]) for r in rows)




# -- the framework callbacks take the same mirror= ------------------------------------------------


@pytest.mark.slow
def test_lightning_callback_mirrors_what_it_records(tmp_path):
    pytest.importorskip("lightning.pytorch")
    from graddoctor.integrations.lightning import GradDoctorCallback
    from test_lightning import Tiny, fit

    mirror = Recorder()
    callback = GradDoctorCallback(store=tmp_path / "runs.db", name="pl", mirror=mirror)
    fit(tmp_path, callback, Tiny())
    view = graddoctor.load(tmp_path / "runs.db", name="pl")
    got = {(m.key, m.step): m.value for m in mirror.metrics}
    want = {(k, s): v for k, steps in expected_metrics(view).items() for s, v in steps.items()}
    assert got.keys() == want.keys() and all(same(got[k], want[k]) for k in want)
    assert mirror.status == "finished" and mirror.info.name == "pl"


@pytest.mark.slow
def test_hf_callback_mirrors_what_it_records(tmp_path):
    pytest.importorskip("transformers")
    from graddoctor.integrations.hf import GradDoctorCallback
    from test_hf import STEPS, tiny_gpt2, train

    mirror = Recorder()
    train(tmp_path, tiny_gpt2(), GradDoctorCallback(store=tmp_path / "runs.db", name="hf", mirror=mirror))
    view = graddoctor.load(tmp_path / "runs.db", name="hf")
    assert sorted({m.step for m in mirror.metrics}) == list(range(STEPS))
    assert len(mirror.metrics) == sum(len(v) for v in expected_metrics(view).values())
    assert mirror.status == "finished"


def test_callbacks_refuse_a_bad_mirror_at_construction():
    pytest.importorskip("lightning.pytorch")
    from graddoctor.integrations.lightning import GradDoctorCallback

    with pytest.raises(ConfigError, match="mirror= takes"):
        GradDoctorCallback(mirror=42)


@pytest.mark.slow
def test_cli_export_format_mlflow_sends_a_finished_run(store_path, mlflow_uri, capsys):
    from graddoctor.cli import main

    view = record(store_path)
    assert main(["export", str(store_path), "--format", "mlflow", "-o", mlflow_uri, "--experiment", "cli"]) == 0
    assert "findings of run 'm' to mlflow" in capsys.readouterr().err
    client, run = mlflow_run(mlflow_uri, "cli")
    assert_mlflow_has(client, run, view)
    assert run.info.status == "FINISHED" and run.info.run_name == "m"


@pytest.mark.slow
def test_cli_export_format_wandb_writes_an_offline_run(store_path, wandb_dir):
    from graddoctor.cli import main
    from wandb_files import read_offline_run

    view = record(store_path)
    assert main(["export", str(store_path), "--format", "wandb", "-o", str(wandb_dir), "--experiment", "cli"]) == 0
    rows = [r for r in read_offline_run(wandb_dir)["history"] if "graddoctor/grad_norm/0" in r]
    assert [r["graddoctor/step"] for r in rows] == view.steps.tolist()
    assert [r["graddoctor/grad_norm/0"] for r in rows] == pytest.approx(view.stat("grad_norm", "0").tolist(), rel=1e-12)


def test_cli_export_to_a_tracker_that_refuses_exits_2_with_one_paragraph(store_path, tmp_path, monkeypatch, capsys):
    pytest.importorskip("mlflow")
    from graddoctor.cli import main

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # MLflow 3 then refuses a plain-file store
    record(store_path)
    assert main(["export", str(store_path), "--format", "mlflow", "-o", (tmp_path / "mlruns").as_uri()]) == 2
    err = capsys.readouterr().err
    assert "could not start the MlflowMirror for run 'm'" in err and "Traceback" not in err


def test_cli_export_refuses_an_mlflow_uri_naming_the_run_store_itself(store_path, capsys):
    from graddoctor.cli import main

    record(store_path)
    before = store_path.read_bytes()
    assert main(["export", str(store_path), "--format", "mlflow", "-o", f"sqlite:///{store_path}"]) == 2
    assert "is the run store being exported" in capsys.readouterr().err
    assert store_path.read_bytes() == before
