"""Model surgery: wrap the shape-preserving blocks of Sequential chains in residual connections."""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch import nn

from .. import theory
from ._edits import (
    NORMS, WEIGHT_LAYERS, Edit, RemedyError, Surgery, _dry_forward, _example_input, _join, _names, _rebuild, _target,
)


class Residual(nn.Module):
    """x + branch(x): the identity path carries the gradient past the branch unchanged."""

    def __init__(self, branch: nn.Module) -> None:
        super().__init__()
        self.branch = branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


def add_residual(model: nn.Module, *, data: torch.Tensor | None = None, inplace: bool = False) -> Surgery:
    """Wrap each shape-preserving block of every nn.Sequential chain as `Residual(block)`: x + f(x).

    A block is a Linear/Conv with the layers after it up to the next Linear/Conv (its norm and
    activation). Shapes come from one dry forward (eval mode, no gradient) on `data`, or, without
    it, on 4 random inputs shaped for the first layer. Blocks whose output shape differs from their
    input shape (typically the first and the last) stay as they are; Sequentials inside a Residual,
    and Sequentials the forward never ran, are left alone.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))
        >>> print(add_residual(net).edits[0])
        2: wrap in residual (x + f(x) over '2', '3' (Linear, ReLU); shape (4, 8) kept)

    Args:
        model: the model; copied first unless `inplace` (parameters keep their identity).
        data: a batch of inputs for the dry forward.

    Raises:
        RemedyError: no nn.Sequential, no input to run the dry forward on, or no shape-preserving block.
    """
    model = _target(model, inplace)
    seqs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Sequential) and not _under_residual(model, n)]
    if not seqs:
        raise RemedyError(
            f"{type(model).__name__} has no nn.Sequential: residual connections are added to Sequential chains "
            "only. Write x = x + block(x) in your forward instead."
        )
    shapes = _child_shapes(model, [m for _, m in seqs], data)
    wrapped: list[tuple[Residual, str, tuple]] = []  # (residual, what it wraps by original names, shape)
    refused: list[str] = []
    for prefix, seq in seqs:
        wrapped += _wrap_blocks(prefix, seq, shapes, refused)
    if not wrapped:
        why = "; ".join(refused) if refused else "no Sequential holds a Linear/Conv block that ran"
        raise RemedyError(f"no shape-preserving block to wrap in x + f(x) in {type(model).__name__}: {why}. "
                          "A residual over a shape-changing block needs a projection; add one by hand.")
    names = _names(model)
    edits = tuple(Edit(names[id(res)], "wrap in residual", f"x + f(x) over {what}; shape {shape} kept")
                  for res, what, shape in wrapped)
    return Surgery(model, edits)


def _under_residual(model: nn.Module, name: str) -> bool:
    parts = name.split(".") if name else []
    return any(isinstance(model.get_submodule(".".join(parts[:i])), Residual) for i in range(len(parts)))


def _child_shapes(model: nn.Module, seqs: list[nn.Sequential], data: torch.Tensor | None) -> dict[int, list[tuple]]:
    """{id(child): [(input shape, output shape) per call]} for the children of `seqs`, from one dry forward."""
    x = data if data is not None else _example_input(model)
    if x is None:
        raise RemedyError(f"cannot tell the input shape of {type(model).__name__} from its first layer: pass data=<a batch>.")
    shapes: dict[int, list[tuple]] = {}

    def record(mod: nn.Module, args: tuple, out: Any) -> None:
        shape_in = tuple(args[0].shape) if args and isinstance(args[0], torch.Tensor) else None
        shape_out = tuple(out.shape) if isinstance(out, torch.Tensor) else None
        shapes.setdefault(id(mod), []).append((shape_in, shape_out))

    try:
        _dry_forward(model, x, [(child, record) for seq in seqs for child in seq.children()])
    except Exception as err:
        raise RemedyError(f"the dry forward on an input of shape {tuple(x.shape)} failed ({err}); pass data=<a batch>.") from None
    return shapes


def _elementwise(m: nn.Module) -> bool:
    """Whether `m` may close a block after a weight layer: a norm, dropout or activation module."""
    if isinstance(m, NORMS + (nn.modules.dropout._DropoutNd, nn.Identity)):
        return True
    return type(m).__module__ == "torch.nn.modules.activation" and not isinstance(m, nn.MultiheadAttention) \
        or theory.activations.from_module(m) is not None


def _blocks(seq: nn.Sequential) -> Iterator[list[tuple[str, nn.Module]]]:
    """Runs of children: a Linear/Conv with the norms, activations and dropouts right after it.

    Any other child (pooling, Flatten, a custom module, a nested Sequential) stands alone.
    """
    block: list[tuple[str, nn.Module]] = []
    for key, child in seq._modules.items():
        if block and isinstance(block[0][1], WEIGHT_LAYERS) and _elementwise(child):
            block.append((key, child))
            continue
        if block:
            yield block
        block = [(key, child)]
    if block:
        yield block


def _wrap_blocks(prefix: str, seq: nn.Sequential, shapes: dict[int, list[tuple]], refused: list[str]) -> list[tuple[Residual, str, tuple]]:
    items: list[tuple[str | None, nn.Module]] = []
    wrapped: list[tuple[Residual, str, tuple]] = []
    for block in _blocks(seq):
        first, last = shapes.get(id(block[0][1])), shapes.get(id(block[-1][1]))
        if not isinstance(block[0][1], WEIGHT_LAYERS) or not first or not last or len(first) != len(last):
            items += block
            continue
        what = ", ".join(repr(_join(prefix, k)) for k, _ in block) + f" ({', '.join(type(m).__name__ for _, m in block)})"
        pairs = [(a[0], b[1]) for a, b in zip(first, last)]
        if any(i is None or i != o for i, o in pairs):
            refused.append(f"{what} changes the shape {pairs[0][0]} -> {pairs[0][1]}")
            items += block
            continue
        res = Residual(nn.Sequential(*[m for _, m in block]))
        items.append((block[0][0], res))
        wrapped.append((res, what, pairs[0][0]))
    if wrapped:
        _rebuild(seq, items)
    return wrapped
