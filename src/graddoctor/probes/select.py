"""Which modules to probe and how: resolved once, when `watch` attaches ("the plan").

A *layer* is a module that directly owns trainable parameters (its own, not its children's), or
an activation module (`nn.ReLU`, `nn.Tanh`, ...). Containers are skipped. Tied parameters belong
to the first module, in `named_modules()` order, that owns them; frozen parameters are ignored.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Callable

import torch
from torch import nn

from ..config import Role
from ..errors import ConfigError
from .libraries import is_affine, is_attention_site, is_library_activation
from .roles import role_of

# Activation modules: their outputs get the full set of activation statistics.
ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU,
    nn.SiLU, nn.Mish, nn.Softplus, nn.Tanh, nn.Sigmoid, nn.Hardtanh, nn.Hardsigmoid,
    nn.Hardswish, nn.Softsign, nn.LogSigmoid, nn.Tanhshrink, nn.Softshrink, nn.Hardshrink,
    nn.Threshold,
)

# Outputs known to be >= 0: the dead-unit and zero counts can skip an `abs` pass.
NONNEGATIVE: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6, nn.Hardsigmoid, nn.Sigmoid, nn.Softplus)

# Layers whose output is affine in their input (or a gated RNN state): an exact zero there says
# nothing about the layer, so act_zero_frac and dead_frac are not computed for them. Any other
# module that owns parameters (a custom block that applies F.relu inside, PReLU) gets them.
NO_ZERO_COUNTS: tuple[type[nn.Module], ...] = (
    nn.Linear, nn.Bilinear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
    nn.ConvTranspose3d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.Embedding, nn.EmbeddingBag,
    nn.RNNBase, nn.MultiheadAttention,
)

# Modules whose outputs put units (channels) in dim 1 rather than in the last dim.
CHANNELS_FIRST: tuple[type[nn.Module], ...] = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
    nn.GroupNorm, nn.LocalResponseNorm,
)

Bounds = tuple[float | None, float | None]


def _hardtanh_bounds(m: nn.Hardtanh) -> Bounds:
    # Saturated means clamped: the derivative is exactly 0 at either bound.
    eps = 1e-6 * (m.max_val - m.min_val)
    return (m.min_val + eps, m.max_val - eps)


# Saturation: the output region where the derivative is (nearly) zero. Each entry gives the
# output bounds (lo, hi) outside which a value counts as saturated; docs/statistics.md lists them (saturated_frac).
SATURATION: dict[type[nn.Module], Callable[[nn.Module], Bounds]] = {
    nn.Sigmoid: lambda m: (0.01, 0.99),          # sigma' = y(1-y) < 0.0099: 4 % of its max 0.25
    nn.Tanh: lambda m: (-0.99, 0.99),            # tanh' = 1-y^2 < 0.0199: 2 % of its max 1
    nn.Hardtanh: _hardtanh_bounds,               # covers ReLU6: both clamps
    nn.Hardsigmoid: lambda m: (1e-6, 1 - 1e-6),  # clamped at 0 and 1
    nn.Softsign: lambda m: (-0.9, 0.9),          # softsign' = (1-|y|)^2 < 0.01
    nn.ELU: lambda m: (-0.99 * m.alpha, None),   # ELU' = y + alpha < 0.01 alpha (negative side)
    nn.CELU: lambda m: (-0.99 * m.alpha, None),
    nn.SELU: lambda m: (-0.99 * 1.0507009873554805 * 1.6732632423543772, None),
}


def register_saturation(cls: type[nn.Module], bounds: Callable[[nn.Module], Bounds], *, overwrite: bool = False) -> None:
    """Declare the saturated output region of an activation module type (e.g. a custom one)."""
    if cls in SATURATION and not overwrite:
        raise ConfigError(f"{cls.__name__} already has saturation bounds; pass overwrite=True to replace them.")
    SATURATION[cls] = bounds


def saturation_bounds(module: nn.Module) -> Bounds | None:
    for cls in type(module).__mro__:
        if cls in SATURATION:
            return SATURATION[cls](module)
    return None


@dataclasses.dataclass(frozen=True)
class LayerPlan:
    """One probed layer: what to read from it, fixed when `watch` attaches."""

    name: str
    module: nn.Module = dataclasses.field(repr=False, compare=False)
    type_name: str
    params: tuple[nn.Parameter, ...] = dataclasses.field(repr=False, compare=False)
    param_shapes: dict[str, list[int]] = dataclasses.field(repr=False, compare=False)
    n_params: int
    is_activation: bool
    saturation: Bounds | None
    nonnegative: bool
    counts_zeros: bool   # act_zero_frac and dead_frac are computed for its output
    layout: bool | None  # see `layout`
    attention: bool = False  # an attention site: its attention logits are read (probes.intercept)
    role: Role = Role.OTHER  # what the layer is (probes.roles), stored with it

    @property
    def kind(self) -> str:
        if self.attention and not self.params and not self.is_activation:
            return "attention"  # a container (GPT2Attention): only its attention statistics are read
        return "activation" if self.is_activation else "param"


def plan_layers(model: nn.Module, include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> list[LayerPlan]:
    """Resolve the layers of `model` to probe, in `named_modules()` order."""
    seen: set[int] = set()
    layers = []
    for name, module in model.named_modules():
        own, shapes, tied = [], {}, False
        for pname, p in module.named_parameters(recurse=False):
            if p.requires_grad and id(p) not in seen:  # tied parameters: first owner only
                seen.add(id(p))
                own.append(p)
                shapes[pname] = list(p.shape)
            tied = tied or p.requires_grad  # a tied lm_head owns no parameter but is still a layer
        is_act = isinstance(module, ACTIVATIONS) or is_library_activation(module)
        attention = is_attention_site(module)
        if not own and not is_act and not attention and not tied:
            continue
        if not _selected(name, include, exclude):
            continue
        layers.append(LayerPlan(
            name=name,
            module=module,
            type_name=type(module).__name__,
            params=tuple(own),
            param_shapes=shapes,
            n_params=sum(p.numel() for p in own),
            is_activation=is_act,
            saturation=saturation_bounds(module) if is_act else None,
            nonnegative=isinstance(module, NONNEGATIVE),
            counts_zeros=is_act or not (isinstance(module, NO_ZERO_COUNTS) or is_affine(module)),
            layout=layout(module),
            attention=attention,
            role=role_of(module, is_activation=is_act, owns_params=bool(own) or tied),
        ))
    return layers


def layout(module: nn.Module) -> bool | None:
    """Where the units of this module's output are: True for dim 1 (channels), False for the last
    dim (features), None when it does not decide (containers, pooling, activations, reshapes).

    An activation's units follow the last deciding module that ran before it, watched or not.
    """
    if isinstance(module, CHANNELS_FIRST):
        return True
    if next(module.children(), None) is None and next(module.parameters(recurse=False), None) is not None:
        return False  # a leaf with weights that is not conv-like: Linear, LayerNorm, Embedding, LSTM...
    return None


def layout_modules(model: nn.Module, plan: list[LayerPlan]) -> list[tuple[nn.Module, bool]]:
    """Modules outside the plan (excluded, frozen) that still decide where units are."""
    planned = {id(layer.module) for layer in plan}
    found = []
    for module in model.modules():
        flag = layout(module)
        if flag is not None and id(module) not in planned:
            found.append((module, flag))
    return found


def _selected(name: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> bool:
    if include and not any(fnmatch.fnmatchcase(name, pat) for pat in include):
        return False
    return not any(fnmatch.fnmatchcase(name, pat) for pat in exclude)


def trainable_params(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def first_float_tensor(output: object) -> torch.Tensor | None:
    """The module's primary output: the first floating-point tensor in it (tuples, lists, dicts)."""
    if isinstance(output, torch.Tensor):
        return output if output.is_floating_point() else None
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        for item in output:
            found = first_float_tensor(item)
            if found is not None:
                return found
    return None
