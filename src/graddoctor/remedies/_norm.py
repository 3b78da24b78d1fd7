"""Model surgery: insert a BatchNorm/LayerNorm (GroupNorm for convs) after each hidden Linear/Conv."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._edits import (
    NORMS, Edit, RemedyError, Surgery, _dry_forward, _example_input, _names, _rebuild, _target, _weight_layers,
)


def insert_norm(model: nn.Module, kind: str = "batch", *, data: torch.Tensor | None = None, inplace: bool = False) -> Surgery:
    """Insert a norm layer after each Linear/Conv but the output layers.

    Linear(., n) gets BatchNorm1d(n) or LayerNorm(n); ConvNd(., c) gets BatchNormNd(c) or, for
    kind "layer", GroupNorm(1, c) (LayerNorm over channels and positions). In an nn.Sequential the
    norm goes right after the layer (digit keys renumbered); elsewhere the child `lin` becomes
    nn.Sequential(lin, norm), so the layer is then at `lin.0`. A layer already followed by a norm
    in its Sequential is left alone. The new norms' parameters are new: add them to the optimizer.
    One dry forward (eval mode, on `data` or on random inputs shaped for the first layer) finds the
    output layers, those whose output the model returns (without it: the last one defined), and
    checks for kind "batch" that each Linear's output is (N, n), as BatchNorm1d normalises dim 1.

    Example:
        >>> s = insert_norm(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1)))
        >>> print(s)
        1 edit(s) to Sequential:
          1: insert BatchNorm1d(8) (after Linear '0')

    Args:
        model: the model; copied first unless `inplace` (existing parameters keep their identity).
        kind: "batch" or "layer".
        data: a batch of inputs for the shape check.

    Raises:
        RemedyError: an unknown kind, no Linear/Conv layer but the output layer to put a norm after,
            or (kind "batch") a Linear whose output is not (N, features), e.g. (N, T, features).
    """
    if kind not in ("batch", "layer"):
        raise RemedyError(f"kind must be 'batch' or 'layer', got {kind!r}.")
    model = _target(model, inplace)
    targets = _norm_targets(model, kind, data)
    if not targets:
        have = ", ".join(f"{n!r} ({type(m).__name__})" for n, m in _weight_layers(model)) or "none"
        raise RemedyError(
            f"nothing to insert a norm after in {type(model).__name__}: its Linear/Conv layers are {have}; output "
            "layers (their output is the model's) get none, nor do layers already followed by a norm."
        )
    parents = {n: model.get_submodule(n.rpartition(".")[0]) for n, _ in targets}  # before any renumbering
    placed: list[tuple[nn.Module, nn.Module, str]] = []  # (norm, layer, original name of the layer)
    for name, layer in targets:
        parent, child = parents[name], name.rpartition(".")[2]
        norm = _norm_for(layer, kind)
        if isinstance(parent, nn.Sequential):
            _insert_after(parent, layer, norm)
        else:
            setattr(parent, child, nn.Sequential(layer, norm))
        placed.append((norm, layer, name))
    names = _names(model)
    edits = []
    for norm, layer, old in placed:
        moved = "" if names[id(layer)] == old else f", now at {names[id(layer)]!r}"
        edits.append(Edit(names[id(norm)], f"insert {_short(norm)}", f"after {type(layer).__name__} {old!r}{moved}"))
    return Surgery(model, tuple(edits))


def _outputs(model: nn.Module, layers: list[tuple[str, nn.Module]], data: torch.Tensor | None) -> dict[int, Any] | None:
    """{id(layer): its first output} from one dry forward, plus key 0: the model's output tensors; None
    when no input is known or the forward fails on the guessed one."""
    x = data if data is not None else _example_input(model)
    if x is None:
        return None
    outs: dict[int, Any] = {}

    def record(mod: nn.Module, args: Any, out: Any) -> None:
        outs.setdefault(id(mod), out)

    try:
        result = _dry_forward(model, x, [(m, record) for _, m in layers])
    except Exception:  # noqa: BLE001 - a guessed input may not fit: then nothing is known
        return None
    flat = result.values() if isinstance(result, dict) else result if isinstance(result, (tuple, list)) else [result]
    outs[0] = [t for t in flat if isinstance(t, torch.Tensor)]
    return outs


def _norm_targets(model: nn.Module, kind: str, data: torch.Tensor | None) -> list[tuple[str, nn.Module]]:
    """The layers to put a norm after: not an output layer, not already followed by a norm.

    Output layers are those whose output is returned by the model (one dry forward), or else the last
    Linear/Conv defined. For kind "batch", a Linear whose output is not (N, features) is refused.
    """
    layers = _weight_layers(model)
    outs = _outputs(model, layers, data)
    if outs is None:
        heads = {id(layers[-1][1])} if layers else set()
    else:
        heads = {id(m) for _, m in layers if any(outs.get(id(m)) is t for t in outs[0])}
    targets = [(n, m) for n, m in layers if id(m) not in heads and not _followed_by_norm(model, n)]
    if kind == "batch" and outs is not None:
        dims = {id(m): outs[id(m)].dim() for _, m in targets if isinstance(outs.get(id(m)), torch.Tensor)}
        bad = [f"{n!r} ({dims[id(m)]} dims)" for n, m in targets if isinstance(m, nn.Linear) and dims.get(id(m), 2) != 2]
        if bad:
            raise RemedyError(
                f"BatchNorm1d normalises dim 1, but the output of Linear {', '.join(bad)} is not (N, features), "
                "e.g. a sequence (N, T, features): use insert_norm(model, 'layer') (LayerNorm over the features) instead."
            )
    return targets


def _followed_by_norm(model: nn.Module, name: str) -> bool:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name)
    if not isinstance(parent, nn.Sequential):
        return False
    keys = list(parent._modules)
    i = keys.index(child)
    return i + 1 < len(keys) and isinstance(parent._modules[keys[i + 1]], NORMS)


def _insert_after(seq: nn.Sequential, layer: nn.Module, norm: nn.Module) -> None:
    items: list[tuple[str | None, nn.Module]] = []
    for key, module in list(seq._modules.items()):
        items.append((key, module))
        if module is layer:
            items.append((None, norm))
    _rebuild(seq, items)


def _norm_for(layer: nn.Module, kind: str) -> nn.Module:
    kw = {"device": layer.weight.device, "dtype": layer.weight.dtype}
    if isinstance(layer, nn.Linear):
        n = layer.out_features
        return nn.BatchNorm1d(n, **kw) if kind == "batch" else nn.LayerNorm(n, **kw)
    c = layer.out_channels
    if kind == "layer":
        return nn.GroupNorm(1, c, **kw)
    return {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Conv3d: nn.BatchNorm3d}[type(layer)](c, **kw)


def _short(norm: nn.Module) -> str:
    if isinstance(norm, nn.GroupNorm):
        return f"GroupNorm(1, {norm.num_channels})"
    if isinstance(norm, nn.LayerNorm):
        return f"LayerNorm({norm.normalized_shape[0]})"
    return f"{type(norm).__name__}({norm.num_features})"
