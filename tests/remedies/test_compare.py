"""`graddoctor.compare` and `graddoctor compare`: the runner, its JSON contract, the verdict rule, CLI errors."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

import graddoctor
from graddoctor.cli import main
from graddoctor.remedies.compare._verdict import Variant, verdict
from graddoctor.data import as_dataset, split
from graddoctor.errors import ConfigError

MODEL_FILE = '''
from torch import nn

def build():
    return nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))
'''


def tiny() -> nn.Module:
    return nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))


@pytest.fixture
def data():
    """Three separable classes in 12 dimensions, 240 samples."""
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(240) % 3
    x = torch.randn(240, 12, generator=gen) + 2.0 * nn.functional.one_hot(y, 12).float()
    return split("blobs", x, y)


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "tiny_model.py"
    path.write_text(MODEL_FILE)
    return f"{path}:build"


@pytest.fixture
def npz(tmp_path, data):
    path = tmp_path / "blobs.npz"
    np.savez(path, x=torch.cat([data.x_train, data.x_test]).numpy(), y=torch.cat([data.y_train, data.y_test]).numpy())
    return str(path)


@dataclasses.dataclass
class _FakeSurgery:
    model: nn.Module
    edits: list


@pytest.fixture
def fake_surgery(monkeypatch):
    """A stand-in `apply_remedy`: `relu` swaps Tanh for ReLU in a copy, `residual` refuses, others refuse too."""
    calls: list[str] = []

    def apply_remedy(model, remedy_id, *, data=None):
        calls.append(remedy_id)
        if remedy_id != "relu":
            raise ConfigError(f"cannot apply {remedy_id}: block '1' changes the shape")
        new = copy.deepcopy(model)
        for name, child in list(new.named_children()):
            if isinstance(child, nn.Tanh):
                setattr(new, name, nn.ReLU())
        return _FakeSurgery(new, [f"swap {remedy_id}"])

    try:
        import graddoctor.remedies.surgery as real
    except ImportError:
        module = types.ModuleType("graddoctor.remedies.surgery")
        module.apply_remedy = apply_remedy
        monkeypatch.setitem(sys.modules, "graddoctor.remedies.surgery", module)
    else:
        monkeypatch.setattr(real, "apply_remedy", apply_remedy)
    return calls


def test_json_contract_original_first_then_one_entry_per_remedy(data, store_path):
    c = graddoctor.compare(tiny, data, remedies=["adam", "lower_lr", "grad_clip+warmup"], steps=20, seeds=2,
                           jobs=1, store=store_path, lr=0.05, optimizer="sgd")
    doc = json.loads(c.to_json())
    names = [v["name"] for v in doc["variants"]]
    assert names == ["original", "adam", "lower_lr", "grad_clip+warmup"]
    assert doc["variants"][3]["remedies"] == ["grad_clip", "warmup"]
    assert "verdict" not in doc["variants"][0]
    for v in doc["variants"]:
        for key in ("test_accuracy", "final_loss", "grad_ratio_init", "grad_ratio_end", "sec_per_step"):
            assert set(v["metrics"][key]) >= {"mean", "std"}
            assert math.isfinite(v["metrics"][key]["mean"]), (v["name"], key)
    assert all(v["verdict"] in ("helps", "no_change", "hurts") for v in doc["variants"][1:])
    runs = {r["name"] for r in graddoctor.store.RunStore(store_path, readonly=True).runs()}
    assert runs == {f"{n}/seed{s}" for n in names for s in (0, 1)}
    text = str(c)
    assert "verdict rule" in text and "grad_clip+warmup" in text and "±" in text


def test_training_side_remedies_change_what_they_say(data):
    c = graddoctor.compare(tiny, data, remedies=["adam", "lower_lr"], steps=20, seeds=2, jobs=1, lr=0.05,
                           optimizer="sgd")
    original, adam, lower = c.variants
    # Same init for every variant of a seed: the gradient ratio at step 0 cannot differ.
    assert adam.metric("grad_ratio_init")["mean"] == pytest.approx(original.metric("grad_ratio_init")["mean"])
    assert lower.metric("final_loss")["mean"] > original.metric("final_loss")["mean"]   # lr/10 learns less in 20 steps
    assert adam.metric("final_loss")["mean"] < original.metric("final_loss")["mean"]


def test_runs_are_reproducible(data):
    a, b = (graddoctor.compare(tiny, data, remedies=["lower_lr"], steps=20, seeds=2, jobs=1) for _ in range(2))
    for va, vb in zip(a.variants, b.variants):
        assert [s["final_loss"] for s in va.per_seed] == [s["final_loss"] for s in vb.per_seed]


def test_two_worker_processes_match_one(model_file, data, store_path):
    kwargs = dict(remedies=["lower_lr"], steps=20, seeds=2, lr=0.05)
    parallel = graddoctor.compare(model_file, data, jobs=2, store=store_path, **kwargs)
    serial = graddoctor.compare(model_file, data, jobs=1, **kwargs)
    for vp, vs in zip(parallel.variants, serial.variants):
        assert [s["final_loss"] for s in vp.per_seed] == pytest.approx([s["final_loss"] for s in vs.per_seed])
    assert len(graddoctor.store.RunStore(store_path, readonly=True).runs()) == 4


def test_model_side_remedies_go_through_surgery(data, fake_surgery):
    c = graddoctor.compare(tiny, data, remedies=["relu"], steps=20, seeds=2, jobs=1)
    assert fake_surgery.count("relu") == 1 + 2  # once before training (refusals stop early), once per seed
    assert not c.variants[1].metric("saturated_frac")["mean"] > 0  # ReLU units never saturate (or are not counted)
    assert c.variants[0].metric("saturated_frac")["n"] == 2


def test_a_refused_remedy_stops_before_any_training(data, fake_surgery):
    with pytest.raises(ConfigError, match="'residual' cannot be applied.*changes the shape"):
        graddoctor.compare(tiny, data, remedies=["relu", "residual"], steps=20, seeds=2, jobs=1)
    assert fake_surgery == ["relu", "residual"]


def test_real_surgery_restores_gradient_flow_of_a_sigmoid_mlp(data):
    pytest.importorskip("graddoctor.remedies.surgery")

    c = graddoctor.compare(_sigmoid_mlp, data, remedies=["he_init", "batch_norm"], steps=20, seeds=2, jobs=1)
    original, _, bn = c.variants
    assert bn.metric("grad_ratio_init")["mean"] > 10 * original.metric("grad_ratio_init")["mean"]


def _sigmoid_mlp() -> nn.Module:
    layers: list[nn.Module] = [nn.Linear(12, 16)]
    for _ in range(7):
        layers += [nn.Sigmoid(), nn.Linear(16, 16)]
    return nn.Sequential(*layers, nn.Sigmoid(), nn.Linear(16, 3))


def test_regression_targets_compare_on_test_loss():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 12, generator=gen)
    y = x[:, :1] * 2.0
    c = graddoctor.compare(lambda: nn.Sequential(nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 1)), (x, y),
                           remedies=["lower_lr"], steps=20, seeds=1, jobs=1)
    doc = c.to_dict()
    assert doc["task"] == "regression" and "test_accuracy" not in doc["variants"][0]["metrics"]
    assert "test_loss" in doc["variants"][1]["metrics"]


@pytest.mark.parametrize(
    "original, remedied, higher, expected",
    [
        ((0.10, 0.01), (0.90, 0.02), True, "helps"),
        ((0.90, 0.02), (0.10, 0.01), True, "hurts"),
        ((0.50, 0.10), (0.60, 0.10), True, "no_change"),      # 0.10 < 2 pooled std (0.20)
        ((0.500, 0.0), (0.515, 0.0), True, "no_change"),      # below the 0.02 floor even with no spread
        ((0.500, 0.0), (0.530, 0.0), True, "helps"),
        ((1.00, 0.01), (0.50, 0.01), False, "helps"),         # a loss: lower is better
        ((1.00, 0.0), (1.01, 0.0), False, "no_change"),       # within 2% of the original's loss
        ((0.50, 0.01), (math.nan, math.nan), True, "hurts"),  # diverged
    ],
    ids=["big-gain", "big-loss", "within-spread", "below-floor", "above-floor", "loss-lower", "loss-2pct", "diverged"],
)
def test_verdict_rule(original, remedied, higher, expected):
    stat = lambda m, s: {"mean": m, "std": s}  # noqa: E731
    assert verdict(stat(*original), stat(*remedied), higher_is_better=higher) == expected


def test_variant_metric_ignores_non_finite_seeds():
    v = Variant("x", (), ({"steps_to_target": 10.0}, {"steps_to_target": math.nan}, {"steps_to_target": 14.0}))
    assert v.metric("steps_to_target") == {"mean": 12.0, "std": pytest.approx(2.828, rel=1e-3), "n": 2}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(remedies=["no_such_fix"]), "no remedy 'no_such_fix'"),
        (dict(remedies=[]), "at least one remedy"),
        (dict(remedies=["adam"]), "already adam"),
        (dict(remedies=["lower_lr", "lower_lr"]), "listed twice"),
        (dict(remedies=["lower_lr"], steps=0), "steps must be"),
        (dict(remedies=["lower_lr"], seeds=0), "seeds must be"),
        (dict(remedies=["lower_lr"], optimizer="rmsprop"), "optimizer must be"),
    ],
    ids=["unknown", "none", "adam-on-adam", "twice", "steps", "seeds", "optimizer"],
)
def test_bad_arguments_are_config_errors(data, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        graddoctor.compare(tiny, data, **{"jobs": 1, **kwargs})


def test_a_model_that_cannot_take_the_data_says_so(data):
    with pytest.raises(ConfigError, match="cannot take the data's inputs of shape \\(12,\\)"):
        graddoctor.compare(lambda: nn.Linear(5, 2), data, remedies=["lower_lr"], jobs=1)


@pytest.mark.parametrize("factory, message", [
    (lambda: [nn.Linear(12, 2)], "the model factory returned a list, not a torch.nn.Module"),
    (lambda: 1 / 0, "the model factory raised ZeroDivisionError"),
], ids=["not-a-module", "raises"])
def test_a_factory_that_gives_no_model_is_refused(data, factory, message):
    with pytest.raises(ConfigError, match=message):
        graddoctor.compare(factory, data, remedies=["lower_lr"], jobs=1)


def test_a_lambda_cannot_go_to_worker_processes(data):
    with pytest.raises(ConfigError, match="cannot be sent to worker processes.*jobs=1"):
        graddoctor.compare(lambda: tiny(), data, remedies=["lower_lr"], jobs=2)


def test_as_dataset_refuses_what_it_cannot_read():
    with pytest.raises(ConfigError, match="unknown dataset 'cifar'"):
        as_dataset("cifar")
    with pytest.raises(ConfigError, match="data must be"):
        as_dataset(42)


def test_mnist1d_keeps_its_own_split(monkeypatch):
    rng = np.random.default_rng(0)
    fake = {"x": rng.normal(size=(40, 40)), "y": rng.integers(0, 10, 40),
            "x_test": rng.normal(size=(10, 40)), "y_test": rng.integers(0, 10, 10)}
    data_module = types.ModuleType("mnist1d.data")
    data_module.get_dataset_args = lambda: None
    data_module.make_dataset = lambda args: fake
    monkeypatch.setitem(sys.modules, "mnist1d", types.ModuleType("mnist1d"))
    monkeypatch.setitem(sys.modules, "mnist1d.data", data_module)
    d = as_dataset("mnist1d")
    assert (len(d.x_train), len(d.x_test), d.task) == (40, 10, "classification")
    assert d.x_train.mean(0).abs().max() < 1e-5


def test_cli_json(model_file, npz, capsys):
    code = main(["compare", model_file, "--data", npz, "--remedies", "lower_lr", "--steps", "20", "--seeds", "2",
                 "--jobs", "1", "--json"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert [v["name"] for v in doc["variants"]] == ["original", "lower_lr"]
    assert doc["variants"][1]["verdict"] in ("helps", "no_change", "hurts")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--dataset", "digits", "--remedies", "bogus"], "no remedy 'bogus'"),
        (["--data", "missing.npz", "--remedies", "relu"], "no such data file"),
        (["--dataset", "digits", "--remedies", "adam"], "already adam"),
        (["--dataset", "digits", "--remedies", "lower_lr", "--steps", "1"], "steps must be"),
        (["--dataset", "digits", "--remedies", ""], "at least one remedy"),
    ],
    ids=["unknown-remedy", "missing-npz", "adam-on-adam", "steps", "empty-remedies"],
)
def test_cli_bad_input_exits_2_with_a_message(model_file, capsys, extra, message):
    assert main(["compare", model_file, *extra, "--jobs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("graddoctor compare: error:") and message in err


def test_cli_needs_exactly_one_data_source(model_file, npz, capsys):
    for extra in ([], ["--data", npz, "--dataset", "digits"]):
        with pytest.raises(SystemExit) as exc:
            main(["compare", model_file, "--remedies", "relu", *extra])
        assert exc.value.code == 2
    assert "--data" in capsys.readouterr().err


def test_import_graddoctor_does_not_import_sklearn():
    import subprocess

    code = "import sys, graddoctor; graddoctor.compare; print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def _conv_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))


def test_digits_are_served_as_1x8x8_images_to_a_model_that_needs_them():
    c = graddoctor.compare(_conv_net, "digits", remedies=["grad_clip"], steps=2, seeds=1, jobs=1, progress=False)
    assert "inputs (1, 8, 8)" in c.dataset and all(np.isfinite(v.metric("test_accuracy")["mean"]) for v in c.variants)
    with pytest.raises(ConfigError, match=r"of shape \(64,\).*nor of shape \(1, 8, 8\)"):
        graddoctor.compare(lambda: nn.Conv2d(3, 4, 3), "digits", remedies=["grad_clip"], steps=2, seeds=1, jobs=1)
