"""The remedy catalog is complete, self-contained data, and every id the diagnosis advises exists in it."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from graddoctor.remedies import CATALOG, Remedy, get_remedy

REQUIRED = ("he_init", "xavier_init", "critical_init", "relu", "leaky_relu", "batch_norm", "layer_norm",
            "residual", "lower_lr", "grad_clip", "warmup", "change_optimizer")
ADVICE = Path(__file__).resolve().parents[2] / "src" / "graddoctor" / "diagnosis" / "advice.py"


@pytest.mark.parametrize("remedy_id", REQUIRED)
def test_required_remedies_are_documented(remedy_id):
    remedy = CATALOG[remedy_id]
    assert remedy.id == remedy_id
    for field in ("title", "changes", "helps", "limits"):
        assert len(getattr(remedy, field)) > 20, f"{remedy_id}.{field} is too thin"
    assert remedy.references


def test_aliases_and_unknown_ids():
    assert get_remedy("adam") is CATALOG["change_optimizer"]
    with pytest.raises(KeyError, match="known remedies: .*he_init"):
        get_remedy("magic")


def test_catalog_is_immutable_data():
    with pytest.raises(TypeError):
        CATALOG["x"] = CATALOG["relu"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        CATALOG["relu"].title = "x"
    assert all(isinstance(r, Remedy) for r in CATALOG.values())


def test_every_advised_remedy_is_in_the_catalog():
    calls = [node for node in ast.walk(ast.parse(ADVICE.read_text()))
             if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "advise"]
    ids = {call.args[0].value for call in calls if isinstance(call.args[0], ast.Constant)}
    assert len(ids) >= 10
    assert ids <= set(CATALOG), ids - set(CATALOG)
