"""Model surgery: swap activation modules (Sigmoid/Tanh -> ReLU and the like)."""

from __future__ import annotations

from typing import Callable

from torch import nn

from ._edits import Edit, RemedyError, Surgery, _set_child, _target


def swap_activation(
    model: nn.Module,
    old: type[nn.Module] | tuple[type[nn.Module], ...] = (nn.Sigmoid, nn.Tanh),
    new: Callable[[], nn.Module] = nn.ReLU,
    *,
    inplace: bool = False,
) -> Surgery:
    """Replace every activation module of a type in `old` by a fresh `new()`.

    Example:
        >>> s = swap_activation(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)))
        >>> print(s.edits[0])
        1: swap activation (Tanh -> ReLU)

    Args:
        model: the model; copied first unless `inplace`.
        old: the activation class(es) to replace (isinstance).
        new: a class or zero-argument factory of the replacement (`lambda: nn.LeakyReLU(0.1)`).
        inplace: edit `model` itself; its parameters keep their identity (activations own none,
            except e.g. PReLU, whose parameter goes away with it).

    Raises:
        RemedyError: no module of the `old` types; activations called in a custom forward
            (F.relu, torch.sigmoid) are not modules and cannot be swapped.
    """
    olds = old if isinstance(old, tuple) else (old,)
    if not olds or not all(isinstance(c, type) and issubclass(c, nn.Module) for c in olds):
        raise RemedyError(f"old must be an nn.Module class or a tuple of them, got {old!r}.")
    if isinstance(model, olds):
        raise RemedyError(f"the model itself is a {type(model).__name__}: build a new one instead of swapping it.")
    model = _target(model, inplace)
    replaced: dict[int, nn.Module] = {}
    edits = []
    for name, module in list(model.named_modules(remove_duplicate=False)):
        if not isinstance(module, olds) or not name:
            continue
        if id(module) not in replaced:  # a module registered at two places stays shared
            replaced[id(module)] = _make(new)
            edits.append(Edit(name, "swap activation", f"{type(module).__name__} -> {type(replaced[id(module)]).__name__}"))
        _set_child(model, name, replaced[id(module)])
    if not edits:
        wanted = "/".join(c.__name__ for c in olds)
        raise RemedyError(
            f"found no {wanted} module in {type(model).__name__}: nothing to swap. Activations called inside a "
            f"custom forward (F.relu, torch.sigmoid, x.tanh()) are not modules and cannot be swapped; make them "
            f"modules (self.act = nn.{olds[0].__name__}()) or edit the forward."
        )
    return Surgery(model, tuple(edits))


def _make(new: Callable[[], nn.Module]) -> nn.Module:
    try:
        module = new()
    except TypeError as err:
        raise RemedyError(f"new must be a class or zero-argument factory of an nn.Module; calling it failed: {err}") from None
    if not isinstance(module, nn.Module):
        raise RemedyError(f"new() must return an nn.Module, got {type(module).__name__}.")
    return module
