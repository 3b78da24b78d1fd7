"""Model surgery: the model-side remedies of the catalog, applied to a copy of the user's model.

Each function returns a `Surgery`: the edited model and the list of `Edit`s it made, printable.
What cannot be done safely is refused with a `RemedyError` that says why, never skipped silently.
Imports torch and graddoctor.theory (critical init) only.
"""

from __future__ import annotations

import copy
import dataclasses
from collections import Counter
from typing import Any, Callable, Iterator

import torch
from torch import nn

from .. import theory
from ..errors import ConfigError
from .catalog import CATALOG, get_remedy

WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)
TRAINING_SIDE = ("grad_clip", "lower_lr", "raise_lr", "warmup", "change_optimizer")
MODEL_SIDE = ("relu", "leaky_relu", "he_init", "xavier_init", "critical_init", "batch_norm", "layer_norm", "residual")
SCHEMES = ("he", "xavier", "critical", "lsuv")
LEAKY_SLOPE = 0.01  # the catalog's leaky_relu remedy: nn.LeakyReLU's own default slope


class RemedyError(ConfigError):
    """A remedy that cannot be applied safely to this model, or an id that is not a model change."""


@dataclasses.dataclass(frozen=True)
class Edit:
    """One change made to the model: `layer` is its name in the edited model."""

    layer: str
    action: str
    detail: str

    def __str__(self) -> str:
        return f"{self.layer or '<model>'}: {self.action} ({self.detail})"


@dataclasses.dataclass(frozen=True)
class Surgery:
    """The edited model and every edit made to it, in order."""

    model: nn.Module = dataclasses.field(repr=False)
    edits: tuple[Edit, ...]

    def __str__(self) -> str:
        lines = [f"{len(self.edits)} edit(s) to {type(self.model).__name__}:"]
        return "\n".join(lines + [f"  {edit}" for edit in self.edits])


class Residual(nn.Module):
    """x + branch(x): the identity path carries the gradient past the branch unchanged."""

    def __init__(self, branch: nn.Module) -> None:
        super().__init__()
        self.branch = branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


# -- helpers -------------------------------------------------------------------------------------


def _target(model: Any, inplace: bool) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise RemedyError(f"surgery works on an nn.Module, got {type(model).__name__}.")
    return model if inplace else copy.deepcopy(model)


def _set_child(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent), child, new)


def _weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Linear/Conv layers in definition order, each once (a module registered twice counts once)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS)]


def _dominant_activation(model: nn.Module) -> nn.Module | None:
    """The most common known activation module of `model` (ties: the first defined), or None."""
    found = [(m, theory.activations.from_module(m)) for m in model.modules() if not isinstance(m, nn.Identity)]
    known = [(m, act.name) for m, act in found if act is not None]
    if not known:
        return None
    top = Counter(name for _, name in known).most_common(1)[0][0]
    return next(m for m, name in known if name == top)


def _example_input(model: nn.Module) -> torch.Tensor | None:
    """4 random inputs shaped for the model's first weight layer, when it can be read. Drawn from a
    private generator: surgery does not move the caller's RNG stream."""
    first = next((m for m in model.modules() if next(m.parameters(recurse=False), None) is not None), None)
    param = next(model.parameters(), None)
    device, dtype = (param.device, param.dtype) if param is not None else (torch.device("cpu"), torch.float32)
    gen = torch.Generator().manual_seed(0)
    if isinstance(first, nn.Embedding):
        return torch.randint(0, first.num_embeddings, (4, 8), generator=gen).to(device)
    if isinstance(first, nn.Linear):
        return torch.randn(4, first.in_features, generator=gen, dtype=dtype).to(device)
    if isinstance(first, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        dims = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}[type(first)]
        return torch.randn(4, first.in_channels, *[32] * dims, generator=gen, dtype=dtype).to(device)
    return None


@torch.no_grad()
def _dry_forward(model: nn.Module, x: Any) -> Any:
    """One forward in eval mode (no BatchNorm statistics updated), training flags restored."""
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        return model(x)
    finally:
        for m, mode in modes.items():
            m.training = mode


def _rebuild(seq: nn.Sequential, items: list[tuple[str | None, nn.Module]]) -> None:
    """Refill `seq` with `items` (old key, or None for a new module).

    Digit keys (plain Sequentials) are renumbered; named keys are kept, new modules get `<prev>_norm`.
    """
    numbered = all(key.isdigit() for key in seq._modules)
    seq._modules.clear()
    prev = ""
    for i, (key, module) in enumerate(items):
        prev = str(i) if numbered else (key if key is not None else f"{prev}_norm")
        seq._modules[prev] = module


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


# -- swap activations ----------------------------------------------------------------------------


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


# -- re-initialisation ---------------------------------------------------------------------------


def reinit(model: nn.Module, scheme: str = "he", *, data: torch.Tensor | None = None, inplace: bool = False) -> Surgery:
    """Re-initialise the weights of every trainable Linear/Conv layer and zero their biases.

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
    if not layers:
        raise RemedyError(f"{type(model).__name__} has no trainable Linear/Conv layer to re-initialise.")
    act = _dominant_activation(model)
    with torch.no_grad():
        if scheme == "lsuv":
            return Surgery(model, _lsuv(model, layers, data))
        draw = _drawer(scheme, act)
        edits = tuple(Edit(name, f"re-init ({scheme})", draw(m)) for name, m in layers)
    return Surgery(model, edits)


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

    handles = [m.register_forward_hook(record) for m in modules]
    try:
        _dry_forward(model, data)
    except Exception as err:
        raise RemedyError(f"lsuv: the forward pass on data of shape {tuple(data.shape)} failed: {err}") from None
    finally:
        for h in handles:
            h.remove()
    return order


def _output_var(model: nn.Module, layer: nn.Module, data: torch.Tensor) -> float:
    seen: list[float] = []
    handle = layer.register_forward_hook(lambda mod, i, o: seen.append(float(o.float().var())) if not seen else None)
    try:
        _dry_forward(model, data)
    finally:
        handle.remove()
    return seen[0]


# -- normalisation -------------------------------------------------------------------------------


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

    handles = [m.register_forward_hook(record) for _, m in layers]
    try:
        result = _dry_forward(model, x)
    except Exception:  # noqa: BLE001 - a guessed input may not fit: then nothing is known
        return None
    finally:
        for h in handles:
            h.remove()
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


def _names(model: nn.Module) -> dict[int, str]:
    return {id(m): n for n, m in model.named_modules()}


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


# -- residual connections ------------------------------------------------------------------------


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

    handles = [child.register_forward_hook(record) for seq in seqs for child in seq.children()]
    try:
        _dry_forward(model, x)
    except Exception as err:
        raise RemedyError(f"the dry forward on an input of shape {tuple(x.shape)} failed ({err}); pass data=<a batch>.") from None
    finally:
        for h in handles:
            h.remove()
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


# -- remedies by catalog id ----------------------------------------------------------------------


def apply_remedy(model: nn.Module, remedy_id: str, *, data: torch.Tensor | None = None) -> Surgery:
    """Apply the model-side remedy `remedy_id` of the catalog to a copy of `model`.

    relu: Sigmoid/Tanh -> ReLU, then He init. leaky_relu: ReLU/Sigmoid/Tanh -> LeakyReLU(0.01), then
    He init for that slope. he_init, xavier_init, critical_init: `reinit`. batch_norm, layer_norm:
    `insert_norm`. residual: `add_residual` (`data` for its dry forward).

    Example:
        >>> s = apply_remedy(nn.Sequential(nn.Linear(4, 8), nn.Sigmoid(), nn.Linear(8, 1)), "relu")
        >>> [e.action for e in s.edits]
        ['swap activation', 're-init (he)', 're-init (he)']

    Raises:
        RemedyError: a training-side id (grad_clip, lower_lr, raise_lr, warmup, adam/change_optimizer:
            options of the trainer, not surgery), an unknown id, or a surgery that refuses.
    """
    try:
        key = get_remedy(remedy_id).id
    except (KeyError, TypeError):
        key = None
    if key in TRAINING_SIDE:
        raise RemedyError(f"{remedy_id!r} changes the training loop, not the model: it is an option of the trainer "
                          f"(compare's training-side remedies {', '.join(TRAINING_SIDE)}), not surgery.")
    if key not in MODEL_SIDE:
        what = "is not a model change" if key in CATALOG else "is unknown"
        raise RemedyError(f"remedy {remedy_id!r} {what}; model-side remedies: {', '.join(MODEL_SIDE)}; "
                          f"training-side (trainer options): {', '.join(TRAINING_SIDE)}.")
    if key in ("relu", "leaky_relu"):
        old = (nn.Sigmoid, nn.Tanh) if key == "relu" else (nn.ReLU, nn.Sigmoid, nn.Tanh)
        new = nn.ReLU if key == "relu" else (lambda: nn.LeakyReLU(LEAKY_SLOPE))
        swapped = swap_activation(model, old, new)
        init = reinit(swapped.model, "he", inplace=True)
        return Surgery(init.model, swapped.edits + init.edits)
    if key.endswith("_init"):
        return reinit(model, key.removesuffix("_init"))
    if key in ("batch_norm", "layer_norm"):
        return insert_norm(model, key.removesuffix("_norm"), data=data)
    return add_residual(model, data=data)
