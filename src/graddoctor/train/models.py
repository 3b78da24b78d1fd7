"""Build an `nn.Module` from a `NetSpec` (layout: graddoctor.train.spec)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError
from ..remedies._residual import Residual
from .spec import NetSpec

_ACTS = {
    "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "softsign": nn.Softsign, "gelu": nn.GELU,
    "elu": nn.ELU, "selu": nn.SELU, "linear": nn.Identity,
}
_GAIN = {"relu": "relu", "leaky_relu": "leaky_relu", "sigmoid": "sigmoid", "tanh": "tanh", "selu": "selu"}


def activation(spec: NetSpec) -> nn.Module:
    if spec.activation == "leaky_relu":
        return nn.LeakyReLU(spec.negative_slope)
    return _ACTS[spec.activation]()


def build(spec: NetSpec, in_shape: tuple[int, ...], n_out: int, image_shape: tuple[int, ...] | None = None) -> nn.Sequential:
    """The network of `spec` for inputs of shape `in_shape` (per sample) and `n_out` outputs.

    Seed torch before calling for a reproducible init. `image_shape` (C, H, W) or (C, L) is needed
    for kind="conv" when the inputs are flat.

    Raises:
        ConfigError: a conv net without an image shape, or one that does not match the inputs.
    """
    layers = _conv_layers(spec, in_shape, n_out, image_shape) if spec.kind == "conv" else _mlp_layers(spec, in_shape, n_out)
    model = nn.Sequential(*layers)
    _init(model, spec)
    return model


def _mlp_layers(spec: NetSpec, in_shape: tuple[int, ...], n_out: int) -> list[nn.Module]:
    d_in = math.prod(in_shape)
    layers: list[nn.Module] = [nn.Flatten()] if len(in_shape) > 1 else []
    for i in range(spec.depth - 1):
        block = [nn.Linear(d_in, spec.width, bias=spec.bias)]
        block += [nn.BatchNorm1d(spec.width)] if spec.norm == "batch" else []
        block += [nn.LayerNorm(spec.width)] if spec.norm == "layer" else []
        block += [activation(spec)]
        layers += [Residual(nn.Sequential(*block))] if spec.residual and i > 0 else block
        d_in = spec.width
    return layers + [nn.Linear(d_in, n_out, bias=spec.bias)]


def _conv_layers(spec: NetSpec, in_shape: tuple[int, ...], n_out: int, image_shape: tuple[int, ...] | None) -> list[nn.Module]:
    shape = tuple(in_shape) if len(in_shape) in (2, 3) else image_shape
    if shape is None or len(shape) not in (2, 3) or math.prod(shape) != math.prod(in_shape):
        raise ConfigError(f"a conv net needs image-shaped inputs (C, H, W) or (C, L); the inputs are {tuple(in_shape)} "
                          f"and the dataset's image shape is {image_shape}. Use kind='mlp' or a dataset with an image shape.")
    conv, bn, pool = (nn.Conv2d, nn.BatchNorm2d, nn.AdaptiveAvgPool2d) if len(shape) == 3 else (nn.Conv1d, nn.BatchNorm1d, nn.AdaptiveAvgPool1d)
    layers: list[nn.Module] = [nn.Unflatten(1, shape)] if len(in_shape) == 1 else []
    c_in = shape[0]
    for i in range(spec.depth - 1):
        block = [conv(c_in, spec.width, 3, padding=1, bias=spec.bias)]
        block += [bn(spec.width)] if spec.norm == "batch" else []
        block += [nn.GroupNorm(1, spec.width)] if spec.norm == "layer" else []
        block += [activation(spec)]
        layers += [Residual(nn.Sequential(*block))] if spec.residual and i > 0 else block
        c_in = spec.width
    return layers + [pool(1), nn.Flatten(), nn.Linear(c_in, n_out, bias=spec.bias)]


def _init(model: nn.Module, spec: NetSpec) -> None:
    weights = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
    with torch.no_grad():
        for m in weights:
            fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(m.weight)
            if spec.init == "glorot":
                bound = math.sqrt(6.0 / (fan_in + fan_out))  # variance bound^2 / 3 = 2 / (fan_in + fan_out)
                nn.init.uniform_(m.weight, -bound, bound)
            elif spec.init != "default":
                nn.init.normal_(m.weight, 0.0, math.sqrt(_weight_var(spec, fan_in, fan_out)))
            if spec.init != "default" and m.bias is not None:
                nn.init.normal_(m.bias, 0.0, math.sqrt(spec.sigma_b2)) if spec.sigma_b2 else nn.init.zeros_(m.bias)
        for m in weights[:-1]:
            if spec.bias_shift and m.bias is not None:
                m.bias.add_(spec.bias_shift)


def _weight_var(spec: NetSpec, fan_in: int, fan_out: int) -> float:
    if spec.init == "he":
        slope = spec.negative_slope if spec.activation == "leaky_relu" else 0.0
        return 2.0 / (1.0 + slope**2) / fan_in
    if spec.init == "xavier":
        name = _GAIN.get(spec.activation, "linear")
        gain = nn.init.calculate_gain(name, spec.negative_slope) if name == "leaky_relu" else nn.init.calculate_gain(name)
        return gain**2 * 2.0 / (fan_in + fan_out)
    return spec.sigma_w2 / fan_in
