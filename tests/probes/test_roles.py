"""Layer roles: decided once from the module when watch plans the layers, stored with each layer."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import graddoctor
from graddoctor.config import Role
from graddoctor.errors import ConfigError
from graddoctor.probes import roles
from graddoctor.probes.libraries import AFFINE_NAMES
from graddoctor.probes.select import plan_layers
from graddoctor.store.roles import NORM_NAMES, role_by_name

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models import CASES  # noqa: E402


def _role(module: nn.Module) -> Role:
    """The role the plan gives `module` (inside a model, beside its children if any)."""
    (layer,) = [layer for layer in plan_layers(nn.ModuleDict({"m": module})) if layer.name == "m"]
    return layer.role


class Conv1D(nn.Module):  # transformers.pytorch_utils.Conv1D, by class name (not imported)
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(4, 4))


class LlamaRMSNorm(nn.Module):  # transformers' Llama norm, by class name
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(4))


class MyNorm(nn.LayerNorm):  # a subclass under another name is classed like its base
    pass


class Gain(nn.Module):  # a custom block that owns its weight: a weight layer
    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(4))


class SelfAttention(nn.Module):  # an attention container: its weights live in its children
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)


@pytest.mark.parametrize("module, role", [
    (nn.Linear(3, 4), Role.WEIGHT), (nn.Conv2d(3, 4, 3), Role.WEIGHT), (nn.ConvTranspose1d(3, 4, 3), Role.WEIGHT),
    (nn.Bilinear(3, 3, 4), Role.WEIGHT), (nn.MultiheadAttention(4, 2), Role.WEIGHT), (Conv1D(), Role.WEIGHT),
    (Gain(), Role.WEIGHT),
    (nn.BatchNorm1d(4), Role.NORM), (nn.SyncBatchNorm(4), Role.NORM), (nn.InstanceNorm2d(4, affine=True), Role.NORM),
    (nn.LayerNorm(4), Role.NORM), (nn.GroupNorm(2, 4), Role.NORM), (nn.RMSNorm(4), Role.NORM),
    (LlamaRMSNorm(), Role.NORM), (MyNorm(4), Role.NORM),
    (nn.Embedding(5, 4), Role.EMBEDDING), (nn.EmbeddingBag(5, 4), Role.EMBEDDING),
    (nn.LSTM(4, 4), Role.RECURRENT), (nn.GRU(4, 4), Role.RECURRENT), (nn.RNNCell(4, 4), Role.RECURRENT),
    (nn.ReLU(), Role.ACTIVATION), (nn.PReLU(), Role.ACTIVATION), (nn.GELU(), Role.ACTIVATION),
], ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else str(v))
def test_each_layer_type_has_its_role(module, role):
    assert _role(module) is role


def test_an_attention_container_without_weights_is_other():
    site = SelfAttention()
    assert _role(site) is Role.OTHER and _role(site.proj) is Role.WEIGHT
    assert {layer.kind for layer in plan_layers(nn.ModuleDict({"m": site})) if layer.name == "m"} == {"attention"}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_every_zoo_layer_reads_the_same_role_from_its_name(case):
    """A store without roles (v1) derives them by class name and kind: on the zoo that is the role
    the plan decided from the module, so an old run diagnoses as a new one."""
    plan = plan_layers(case.build())
    assert plan
    for layer in plan:
        assert (layer.role is Role.ACTIVATION) == (layer.kind == "activation"), layer.name
        assert role_by_name(layer.type_name, layer.kind) is layer.role, (case.name, layer.name)


def test_the_zoo_has_every_role_that_a_plan_of_it_can_give():
    seen = {layer.role for case in CASES for layer in plan_layers(case.build())}
    assert seen == {Role.WEIGHT, Role.NORM, Role.ACTIVATION, Role.EMBEDDING, Role.RECURRENT}


def test_library_norms_are_norms_by_name_too():
    # probes.libraries and store.roles both list transformers/timm class names: they agree
    norms = {name for name, role in roles.LIBRARY_ROLES.items() if role is Role.NORM}
    assert norms and norms <= NORM_NAMES
    assert {name for name in AFFINE_NAMES if name not in norms} == {n for n, r in roles.LIBRARY_ROLES.items() if r is Role.WEIGHT}
    assert all(role_by_name(name, "param") is Role.WEIGHT for name in AFFINE_NAMES if name not in norms)


def test_the_role_is_stored_with_the_layer(tmp_path):
    model = nn.Sequential(nn.Linear(4, 4), MyNorm(4), nn.ReLU(), nn.Linear(4, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with graddoctor.watch(model, opt, store=tmp_path / "r.db", name="r"):
        model(torch.randn(3, 4)).sum().backward()
        opt.step()
    db = sqlite3.connect(tmp_path / "r.db")
    stored = db.execute("SELECT layer, role FROM layers ORDER BY position").fetchall()
    db.close()
    assert stored == [("0", "weight"), ("1", "norm"), ("2", "activation"), ("3", "weight")]
    # MyNorm by its name alone would be a weight layer: the stored role, decided from the module, wins
    assert [i.role for i in graddoctor.load(tmp_path / "r.db").layer_info] == [
        Role.WEIGHT, Role.NORM, Role.ACTIVATION, Role.WEIGHT]


def test_register_role_classes_a_custom_type_and_says_what_it_takes():
    class ScaleNorm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.g = nn.Parameter(torch.ones(1))

    assert _role(ScaleNorm()) is Role.WEIGHT
    roles.register_role(ScaleNorm, "norm")
    try:
        assert _role(ScaleNorm()) is Role.NORM
        with pytest.raises(ConfigError, match="already has the role 'norm'"):
            roles.register_role(ScaleNorm, Role.WEIGHT)
        with pytest.raises(ConfigError, match="got .* and role 'activation'; expected an nn.Module subclass and one of"):
            roles.register_role(ScaleNorm, "activation", overwrite=True)
        with pytest.raises(ConfigError, match="role 'normalisation'"):
            roles.register_role(ScaleNorm, "normalisation", overwrite=True)
        with pytest.raises(ConfigError, match="expected an nn.Module subclass"):
            roles.register_role(int, "norm")
    finally:
        del roles.ROLES[ScaleNorm]
