"""Read a torch model into a `ModelSpec` with torch.fx: one spec per graph node that carries a tensor.

torch is used here only to read the model: its graph, its tensors' statistics and its shapes.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import ConfigError
from .activations import from_module, from_name
from .spec import Op, LayerSpec, ModelSpec

_ADD = {operator.add, operator.iadd, operator.sub, operator.isub, torch.add, torch.sub}
_MUL = {operator.mul, operator.imul, torch.mul}
_DIV = {operator.truediv, operator.itruediv, torch.div}
_PASS_FUNCTIONS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.permute, torch.transpose}
_PASS_METHODS = {"view", "reshape", "flatten", "contiguous", "squeeze", "unsqueeze", "permute", "transpose", "view_as"}
_SIMPLE_FUNCTIONS = {F.relu: "relu", torch.relu: "relu", torch.tanh: "tanh", F.tanh: "tanh", torch.sigmoid: "sigmoid",
                     F.sigmoid: "sigmoid", F.silu: "silu", F.selu: "selu", torch.selu: "selu", F.relu6: "relu6",
                     F.softsign: "softsign", torch.erf: "erf", torch.special.erf: "erf"}
# function -> (canonical name, [(argument position, keyword, default)]) for parameterised activations
_PARAM_FUNCTIONS = {F.leaky_relu: ("leaky_relu", [(1, "negative_slope", 0.01)]), F.elu: ("elu", [(1, "alpha", 1.0)]),
                    F.celu: ("celu", [(1, "alpha", 1.0)]), F.softplus: ("softplus", [(1, "beta", 1.0)]),
                    F.hardtanh: ("hardtanh", [(1, "min_val", -1.0), (2, "max_val", 1.0)])}
_METHOD_ACTIVATIONS = {"relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid", "erf": "erf"}
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class _Tracer(fx.Tracer):
    """Keeps custom activation modules (class attribute graddoctor_activation) as leaves."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return hasattr(m, "graddoctor_activation") or super().is_leaf_module(m, qualname)


def _uncovered(name: str, type_: str, reason: str) -> LayerSpec:
    return LayerSpec(name, Op.UNCOVERED, type_, reason=reason)


def read_model(model: Any, input_shape: tuple[int, ...] | None = None) -> ModelSpec:
    """The `ModelSpec` of an nn.Module, traced with torch.fx (see `trace`).

    Leaves no trace: training modes, parameters, buffers (BatchNorm running statistics) and the
    RNG stream are as before. Ops the theory does not cover become UNCOVERED specs with a reason;
    a model torch.fx cannot trace becomes a single UNCOVERED spec.
    """
    return trace(model, input_shape)


def trace(model: Any, input_shape: tuple[int, ...] | None) -> ModelSpec:
    """Trace `model` and turn its graph into specs (see read_model)."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"predict() needs an nn.Module, got {type(model).__name__}.")
    if input_shape is not None and not (isinstance(input_shape, (tuple, list, torch.Size))
                                        and all(isinstance(n, int) and n > 0 for n in input_shape)):
        raise ConfigError(f"input_shape must be the shape of one sample as positive integers, e.g. (3, 32, 32); "
                          f"got {input_shape!r}.")
    try:
        graph = _Tracer().trace(model)
    except Exception as err:  # torch.fx raises many types for untraceable Python
        reason = f"torch.fx cannot trace this model ({type(err).__name__}: {err}); the theory reads models made of modules and simple functions"
        return ModelSpec((_uncovered("", type(model).__name__, reason),))
    gm = fx.GraphModule(model, graph)
    nodes = list(graph.nodes)
    if input_shape is None:
        input_shape = _infer_input_shape(model, nodes)
    shapes = _shapes(model, gm, tuple(input_shape))
    calls: dict[str, int] = {}
    for node in nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    index: dict[fx.Node, int] = {}
    layers: list[LayerSpec] = []
    for node in nodes:
        if node.op != "output" and node not in shapes:
            continue  # not a tensor (x.size(0), a shape, a parameter read by get_attr is handled by its user)
        inputs = tuple(index[a] for a in node.all_input_nodes if a in index)
        spec = _convert(model, node, shapes, calls)
        index[node] = len(layers)
        layers.append(_with_inputs(spec, inputs, node))
    layers = _mark_shared_weights(model, layers)
    return ModelSpec(tuple(layers), tuple(input_shape), ())


def _with_inputs(spec: LayerSpec, inputs: tuple[int, ...], node: fx.Node) -> LayerSpec:
    import dataclasses

    if spec.kind == Op.OUTPUT and len(inputs) != 1:
        spec = _uncovered("output", "output", "the model returns several tensors (or none); the theory follows one output")
    if spec.kind not in (Op.INPUT, Op.ADD, Op.UNCOVERED) and len(inputs) != 1:
        spec = _uncovered(spec.name, spec.type, f"{node.name} reads {len(inputs)} tensors; expected one")
    return dataclasses.replace(spec, inputs=inputs)


def _infer_input_shape(model: nn.Module, nodes: list[fx.Node]) -> tuple[int, ...]:
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if len(placeholders) == 1:
        for user in placeholders[0].users:
            if user.op == "call_module" and isinstance(model.get_submodule(user.target), nn.Linear):
                return (model.get_submodule(user.target).in_features,)
    raise ConfigError(
        "cannot tell the input shape of this model (its first layer is not a Linear): pass the shape of one "
        "sample without the batch dimension, e.g. input_shape=(3, 32, 32) (CLI: --input-shape 3,32,32)."
    )


def _shapes(model: nn.Module, gm: fx.GraphModule, input_shape: tuple[int, ...]) -> dict[fx.Node, tuple[int, ...]]:
    """Output shape of every tensor node, from one forward of a zero batch of 2 in eval mode.

    Modes, BatchNorm statistics and the RNG stream are left as they were (eval mode updates no
    running statistics; the training flags are restored one by one).
    """
    modes = {m: m.training for m in model.modules()}
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            model.eval()
            param = next(model.parameters(), None)
            kw = {"dtype": param.dtype, "device": param.device} if param is not None and param.is_floating_point() else {}
            ShapeProp(gm).propagate(*[torch.zeros((2, *input_shape), **kw) for _ in placeholders])
    except Exception as err:
        raise ConfigError(f"the model does not run on an input of shape (batch, {', '.join(map(str, input_shape))}): "
                          f"{type(err).__name__}: {err}. Pass input_shape= the shape of one sample.") from None
    finally:
        for m, mode in modes.items():
            m.training = mode
    shapes: dict[fx.Node, tuple[int, ...] | None] = {}
    for n in gm.graph.nodes:
        meta = n.meta.get("tensor_meta")
        if meta is not None:  # a tensor (its shape) or a tuple/dict holding tensors (None)
            shapes[n] = tuple(meta.shape) if isinstance(meta, torch.fx.passes.shape_prop.TensorMetadata) else None
    return shapes


def _convert(model: nn.Module, node: fx.Node, shapes: dict, calls: dict[str, int]) -> LayerSpec:
    name = node.target if node.op == "call_module" else node.name
    if node.op == "placeholder":
        return LayerSpec("input", Op.INPUT, "input") if _only_placeholder(node) else _uncovered(
            node.name, "input", "the model takes several inputs; the theory follows one")
    if node.op == "output":
        return LayerSpec("output", Op.OUTPUT, "output")
    if node.op == "call_module":
        module = model.get_submodule(node.target)
        if calls[node.target] > 1 and any(True for _ in module.parameters()):
            return _uncovered(name, type(module).__name__, "called more than once: the reused weights are not independent")
        in_shape = shapes.get(node.all_input_nodes[0]) if node.all_input_nodes else None
        return _from_module(name, module, in_shape)
    if node.op == "call_function":
        return _from_function(node)
    if node.op == "call_method":
        return _from_method(node)
    return _uncovered(name, node.op, "a tensor read directly from the model (get_attr): its statistics are not modelled")


def _only_placeholder(node: fx.Node) -> bool:
    return sum(1 for n in node.graph.nodes if n.op == "placeholder") == 1


def _weights(name: str, module: nn.Module, fan_in: int, border: float = 1.0) -> LayerSpec:
    w = module.weight
    if isinstance(w, nn.parameter.UninitializedParameter):
        return _uncovered(name, type(module).__name__, "lazy module not initialised yet: run one forward first")
    w = w.detach().double()
    if not bool(torch.isfinite(w).all()):
        return _uncovered(name, type(module).__name__, "the weights contain NaN or Inf")
    second = float(w.pow(2).mean())
    mean = float(w.mean())
    if second > 0 and abs(mean) * math.sqrt(w.numel()) > 6 * math.sqrt(max(second - mean * mean, 1e-300)):
        return _uncovered(name, type(module).__name__,
                          f"the weights are not centred (mean {mean:.3g}, rms {math.sqrt(second):.3g}): the theory "
                          "assumes zero-mean i.i.d. weights, as at initialization")
    b = module.bias
    sigma_b2 = float(b.detach().double().pow(2).mean()) if b is not None else 0.0
    return LayerSpec(name, Op.DENSE, type(module).__name__, sigma_w2=fan_in * second, sigma_b2=sigma_b2,
                     fan_in=fan_in, border=border)


def _from_module(name: str, module: nn.Module, in_shape: tuple[int, ...] | None) -> LayerSpec:
    type_ = type(module).__name__
    act = from_module(module)
    if act is not None:
        return LayerSpec(name, Op.ACTIVATION, type_, activation=act)
    if type(module) is nn.Linear:
        return _weights(name, module, module.in_features)
    if type(module) in _CONV:
        return _conv(name, module, in_shape)
    if type(module) in (nn.Flatten, nn.Unflatten):
        return LayerSpec(name, Op.PASS, type_)
    if type(module) in (nn.Dropout, nn.AlphaDropout) and module.p == 0:
        return LayerSpec(name, Op.PASS, type_)
    if type(module) is nn.Dropout:
        p = module.p
        return LayerSpec(name, Op.SCALE, type_, forward=1 / (1 - p), backward=1 / (1 - p), keeps_gaussian=False)
    if type(module) is nn.BatchNorm1d:
        return _batchnorm(name, module, in_shape)
    if type(module) is nn.LayerNorm:
        return _layernorm(name, module)
    return _uncovered(name, type_, _why_not(module))


def _why_not(module: nn.Module) -> str:
    if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)):
        return ("normalisation over spatial positions or groups: the finite-batch theory (Yang et al. 2019) covers "
                "BatchNorm1d on (batch, features) and LayerNorm over the last dimension")
    if isinstance(module, (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
                           nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd)):
        return "pooling mixes positions whose correlations the theory does not track"
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return "transposed convolutions are not covered"
    return f"{type(module).__name__} is not covered: the theory reads Linear/Conv, elementwise activations, " \
           "BatchNorm1d, LayerNorm, dropout, residual additions and reshapes"


def _conv(name: str, conv: nn.Module, in_shape: tuple[int, ...] | None) -> LayerSpec:
    if conv.padding_mode == "zeros" and in_shape is not None:
        border = _border(conv, in_shape[2:])
    else:
        border = 1.0  # circular padding wraps around; reflect/replicate pad with real values
    fan_in = conv.in_channels // conv.groups * math.prod(conv.kernel_size)
    return _weights(name, conv, fan_in, border)


def _border(conv: nn.Module, spatial: tuple[int, ...]) -> float:
    """Mean fraction of kernel taps inside the input, over output positions (zero padding)."""
    frac = 1.0
    for d, size in enumerate(spatial):
        k, s, dil = conv.kernel_size[d], conv.stride[d], conv.dilation[d]
        if conv.padding == "same":
            pad = dil * (k - 1) // 2
        else:
            pad = 0 if conv.padding == "valid" else conv.padding[d]
        out = (size + 2 * pad - dil * (k - 1) - 1) // s + 1
        inside = sum(1 for o in range(out) for j in range(k) if 0 <= o * s - pad + j * dil < size)
        frac *= inside / max(out * k, 1)
    return frac


def _uniform(t: torch.Tensor | None, default: float) -> float | None:
    if t is None:
        return default
    t = t.detach().double()
    return float(t[0]) if t.numel() and bool(torch.allclose(t, t[0].expand_as(t), rtol=1e-6, atol=1e-12)) else None


def _affine(name: str, module: nn.Module) -> tuple[float, float] | LayerSpec:
    gain, shift = _uniform(getattr(module, "weight", None), 1.0), _uniform(getattr(module, "bias", None), 0.0)
    if gain is None or shift is None:
        return _uncovered(name, type(module).__name__, "its weight/bias differ across features (trained?); the theory "
                          "folds a uniform affine map only, as at initialization")
    return gain, shift


def _batchnorm(name: str, bn: nn.BatchNorm1d, in_shape: tuple[int, ...] | None) -> LayerSpec:
    if in_shape is None or len(in_shape) != 2:
        return _uncovered(name, "BatchNorm1d", "BatchNorm1d over (batch, channels, length) also normalises over "
                          "positions; the theory covers (batch, features) inputs")
    affine = _affine(name, bn)
    if isinstance(affine, LayerSpec):
        return affine
    return LayerSpec(name, Op.BATCHNORM, "BatchNorm1d", gain=affine[0], shift=affine[1], eps=bn.eps)


def _layernorm(name: str, ln: nn.LayerNorm) -> LayerSpec:
    if len(ln.normalized_shape) != 1 or ln.normalized_shape[0] < 4:
        return _uncovered(name, "LayerNorm", "LayerNorm over several dimensions (or fewer than 4 features) is not covered")
    affine = _affine(name, ln)
    if isinstance(affine, LayerSpec):
        return affine
    return LayerSpec(name, Op.LAYERNORM, "LayerNorm", gain=affine[0], shift=affine[1], eps=ln.eps,
                     features=ln.normalized_shape[0])


def _arg(node: fx.Node, pos: int, key: str, default: Any) -> Any:
    if len(node.args) > pos:
        return node.args[pos]
    return node.kwargs.get(key, default)


def _from_function(node: fx.Node) -> LayerSpec:
    fn, name = node.target, node.name
    tensors = len(node.all_input_nodes)
    if fn in _SIMPLE_FUNCTIONS:
        return LayerSpec(name, Op.ACTIVATION, fn.__name__, activation=from_name(_SIMPLE_FUNCTIONS[fn]))
    if fn is F.gelu:
        approx = "gelu:tanh" if node.kwargs.get("approximate", "none") == "tanh" else "gelu"
        return LayerSpec(name, Op.ACTIVATION, "gelu", activation=from_name(approx))
    if fn in _PARAM_FUNCTIONS:
        key, params = _PARAM_FUNCTIONS[fn]
        values = ":".join(repr(float(_arg(node, p, k, d))) for p, k, d in params)
        return LayerSpec(name, Op.ACTIVATION, fn.__name__, activation=from_name(f"{key}:{values}"))
    if fn in _ADD and tensors == 2:
        return LayerSpec(name, Op.ADD, getattr(fn, "__name__", "add"))
    if fn in _ADD | _MUL | _DIV and tensors == 1:
        return _constant(node)
    if fn in _PASS_FUNCTIONS:
        return LayerSpec(name, Op.PASS, fn.__name__)
    if fn is F.dropout:
        p, training = float(_arg(node, 1, "p", 0.5)), bool(_arg(node, 2, "training", True))
        if not training or p == 0:
            return LayerSpec(name, Op.PASS, "dropout")
        return LayerSpec(name, Op.SCALE, "dropout", forward=1 / (1 - p), backward=1 / (1 - p), keeps_gaussian=False)
    return _uncovered(name, getattr(fn, "__name__", str(fn)), f"the function {getattr(fn, '__name__', fn)} is not covered")


def _constant(node: fx.Node) -> LayerSpec:
    """x + c, x * c, x / c with a Python number c."""
    fn, name = node.target, node.name
    number = next((a for a in node.args if isinstance(a, (int, float))), None)
    if number is None:
        return _uncovered(name, getattr(fn, "__name__", "op"), "an operation with a non-number constant")
    if fn in _ADD:
        if number == 0:
            return LayerSpec(name, Op.PASS, "add0")
        return _uncovered(name, "add", f"adds the constant {number}: a shifted signal is not covered")
    if fn in _DIV:
        if node.args[0] is not next(iter(node.all_input_nodes)) or number == 0:
            return _uncovered(name, "div", "divides a number by a tensor")
        number = 1.0 / number
    f = float(number) ** 2
    return LayerSpec(name, Op.SCALE, getattr(fn, "__name__", "mul"), forward=f, cross=f, backward=f)


def _from_method(node: fx.Node) -> LayerSpec:
    method, name = node.target, node.name
    if method in _METHOD_ACTIVATIONS:
        return LayerSpec(name, Op.ACTIVATION, method, activation=from_name(_METHOD_ACTIVATIONS[method]))
    if method in _PASS_METHODS:
        return LayerSpec(name, Op.PASS, method)
    if method in ("add", "sub", "add_", "sub_") and len(node.all_input_nodes) == 2:
        return LayerSpec(name, Op.ADD, method)
    return _uncovered(name, method, f"the tensor method .{method}() is not covered")


def _mark_shared_weights(model: nn.Module, layers: list[LayerSpec]) -> list[LayerSpec]:
    """Dense layers whose weight tensor is also another module's: not independent, so uncovered."""
    import dataclasses

    owners: dict[int, list[int]] = {}
    for i, spec in enumerate(layers):
        if spec.kind == Op.DENSE:
            owners.setdefault(id(model.get_submodule(spec.name).weight), []).append(i)
    for group in owners.values():
        if len(group) > 1:
            for i in group:
                layers[i] = dataclasses.replace(layers[i], kind=Op.UNCOVERED, reason="its weight is tied to another layer's")
    return layers
