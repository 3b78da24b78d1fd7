"""Model surgery: re-initialise the weights of the Linear/Conv layers (he, xavier, critical, lsuv)."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from .. import theory
from ..errors import ConfigError
from ._edits import Edit, RemedyError, Surgery, _dominant_activation, _dry_forward, _target, _weight_layers
from ._recurrent import recurrent_modules, recurrent_reinit

SCHEMES = ("he", "xavier", "critical", "lsuv")


def reinit(model: nn.Module, scheme: str = "he", *, data: torch.Tensor | None = None, inplace: bool = False) -> Surgery:
    """Re-initialise the weights of every trainable Linear/Conv layer and zero their biases.

    Recurrent layers (nn.RNN/LSTM/GRU, cells) are covered by "he" and "xavier": their input weights
    by the scheme, W_hh orthogonal (`_recurrent.recurrent_reinit`); "critical" and "lsuv" refuse them.

    - "he": N(0, 2 / ((1 + a^2) fan_in)), a the slope of the model's dominant LeakyReLU (0 otherwise).
    - "xavier": N(0, gain^2 * 2 / (fan_in + fan_out)), gain = nn.init.calculate_gain of the dominant
      activation (tanh 5/3, relu sqrt 2, sigmoid and unknown 1).
    - "critical": N(0, sigma_w^2 / fan_in) with sigma_w^2 = theory.critical_sigma_w2(activation, 0),
      so that chi_1 = 1 for the dominant activation (2 for ReLU: He init).
    - "lsuv": orthogonal weights, then each layer, in forward order, rescaled so that its output has
      variance 1 on `data` (Mishkin & Matas 2016, without the pre-whitening).

    Frozen weights (requires_grad False) are left alone; a weight shared by two layers is drawn once.

    Example:
        >>> s = reinit(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1)), "he")
        >>> [e.layer for e in s.edits]
        ['0', '2']

    Args:
        model: the model; copied first unless `inplace`.
        scheme: "he", "xavier", "critical" or "lsuv".
        data: a batch of inputs, needed by "lsuv" only.
        inplace: write into `model`'s own parameters (their identity is kept, so an optimizer
            built on them stays valid).

    Raises:
        RemedyError: an unknown scheme, "lsuv" without data, no trainable Linear/Conv layer, or no
            activation whose critical sigma_w^2 is known (scheme "critical").
    """
    if scheme not in SCHEMES:
        raise RemedyError(f"unknown init scheme {scheme!r}; choose one of {', '.join(SCHEMES)}.")
    if scheme == "lsuv" and not isinstance(data, torch.Tensor):
        raise RemedyError("scheme 'lsuv' scales each layer on real inputs: pass data=<a batch tensor>.")
    model = _target(model, inplace)
    layers, seen = [], set()
    for name, m in _weight_layers(model):
        if isinstance(m.weight, nn.parameter.UninitializedParameter):
            raise RemedyError(f"layer {name!r} is lazy and not initialised yet: run one forward pass first.")
        if m.weight.requires_grad and id(m.weight) not in seen:
            seen.add(id(m.weight))
            layers.append((name, m))
    recurrent = recurrent_modules(model)
    if recurrent and scheme in ("critical", "lsuv"):  # never skip recurrent weights silently
        raise RemedyError(f"init scheme {scheme!r} is derived for feed-forward layers; {recurrent[0][0]!r} is a "
                          f"{type(recurrent[0][1]).__name__}, whose W_hh acts at every time step: use orthogonal_init "
                          f"(or he_init/xavier_init, which draw W_hh orthogonal).")
    if not layers and not recurrent:
        raise RemedyError(f"{type(model).__name__} has no trainable Linear/Conv layer to re-initialise.")
    act = _dominant_activation(model)
    with torch.no_grad():
        if scheme == "lsuv":
            return Surgery(model, _lsuv(model, layers, data))
        draw = _drawer(scheme, act) if layers else None
        edits = tuple(Edit(name, f"re-init ({scheme})", draw(m)) for name, m in layers)
    slope = float(act.negative_slope) if isinstance(act, nn.LeakyReLU) else 0.0
    return Surgery(model, edits + recurrent_reinit(model, scheme, 2.0 / (1.0 + slope**2)))


def _fans(m: nn.Module) -> tuple[int, int]:
    return nn.init._calculate_fan_in_and_fan_out(m.weight)


def _drawer(scheme: str, act: nn.Module | None) -> Callable[[nn.Module], str]:
    """A function that draws one layer's weights in place, zeroes its bias and describes what it did."""
    act_name = type(act).__name__ if act is not None else "no activation"
    if scheme == "he":
        slope = float(act.negative_slope) if isinstance(act, nn.LeakyReLU) else 0.0
        gain2 = 2.0 / (1.0 + slope**2)
        why = f"LeakyReLU slope {slope:g}" if slope else "ReLU gain"
        return lambda m: _normal(m, gain2 / _fans(m)[0], f"{gain2:.4g}/fan_in, {why}")
    if scheme == "xavier":
        gain = _torch_gain(act)
        return lambda m: _normal(m, gain**2 * 2.0 / sum(_fans(m)), f"gain {gain:.4g} ({act_name}) * 2/(fan_in+fan_out)")
    found = theory.activations.from_module(act) if act is not None else None
    if found is None:
        raise RemedyError(
            "critical init needs the model's activation, and none of its modules is a known one "
            f"({', '.join(theory.NAMES)}); use scheme 'he' or 'xavier'."
        )
    try:
        sigma_w2 = theory.critical_sigma_w2(found, 0.0)
    except ConfigError as err:
        raise RemedyError(f"no critical init for {found.name}: {err}") from None
    return lambda m: _normal(m, sigma_w2 / _fans(m)[0], f"{sigma_w2:.4g}/fan_in, chi_1 = 1 for {found.name}")


def _torch_gain(act: nn.Module | None) -> float:
    if isinstance(act, nn.LeakyReLU):
        return nn.init.calculate_gain("leaky_relu", act.negative_slope)
    known = {nn.Tanh: "tanh", nn.ReLU: "relu", nn.Sigmoid: "sigmoid", nn.SELU: "selu"}
    return nn.init.calculate_gain(known.get(type(act), "linear"))


def _normal(m: nn.Module, var: float, why: str) -> str:
    nn.init.normal_(m.weight, 0.0, var**0.5)
    if m.bias is not None and m.bias.requires_grad:
        nn.init.zeros_(m.bias)
    return f"weight ~ N(0, {var:.4g}) = {why}; bias 0" if m.bias is not None else f"weight ~ N(0, {var:.4g}) = {why}"


def _lsuv(model: nn.Module, layers: list[tuple[str, nn.Module]], data: torch.Tensor) -> tuple[Edit, ...]:
    """Orthogonal init, then rescale each layer in forward order until Var(output) = 1 on `data`."""
    for _, m in layers:
        nn.init.orthogonal_(m.weight)
        if m.bias is not None and m.bias.requires_grad:
            nn.init.zeros_(m.bias)
    order = _forward_order(model, [m for _, m in layers], data)
    edits = []
    for name, m in sorted(layers, key=lambda nm: order.get(id(nm[1]), len(order))):
        if id(m) not in order:
            edits.append(Edit(name, "re-init (orthogonal)", "did not run on data: orthogonal only, not rescaled"))
            continue
        scale = 1.0
        for _ in range(10):  # one rescale is exact for a layer used once; a reused one may need more
            var = _output_var(model, m, data)
            if var == 0 or abs(var - 1.0) < 1e-3:
                break
            m.weight.mul_(var**-0.5)
            scale *= var**-0.5
        edits.append(Edit(name, "re-init (lsuv)", f"orthogonal, scaled x{scale:.4g}: output variance {var:.4g} on data"))
    return tuple(edits)


def _forward_order(model: nn.Module, modules: list[nn.Module], data: torch.Tensor) -> dict[int, int]:
    order: dict[int, int] = {}

    def record(mod: nn.Module, args: Any, out: Any) -> None:  # returns None: a forward hook's value replaces the output
        order.setdefault(id(mod), len(order))

    try:
        _dry_forward(model, data, [(m, record) for m in modules])
    except Exception as err:
        raise RemedyError(f"lsuv: the forward pass on data of shape {tuple(data.shape)} failed: {err}") from None
    return order


def _output_var(model: nn.Module, layer: nn.Module, data: torch.Tensor) -> float:
    seen: list[float] = []
    _dry_forward(model, data, [(layer, lambda mod, i, o: seen.append(float(o.float().var())) if not seen else None)])
    return seen[0]
