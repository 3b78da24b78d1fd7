"""What input a model expects, read from its first layer: for `check`'s error messages and random inputs."""

from __future__ import annotations

import torch
from torch import nn


def first_layer(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The first module, in definition order, that owns parameters (where inputs usually enter)."""
    for name, module in model.named_modules():
        if next(module.parameters(recurse=False), None) is not None:
            return name, module
    return None


def expected_input(model: nn.Module) -> str | None:
    """A description of the input shape the model's first layer expects, when it can be read."""
    found = first_layer(model)
    if found is None:
        return None
    name, m = found
    where = f"its first layer, {name!r} ({type(m).__name__}),"
    if isinstance(m, nn.Embedding):
        return f"{where} takes integer token ids in [0, {m.num_embeddings}), shape (N, T)"
    if isinstance(m, (nn.RNNBase,)):
        order = "(N, T, {})" if m.batch_first else "(T, N, {})"
        return f"{where} expects inputs of shape {order.format(m.input_size)}"
    if hasattr(m, "in_channels") and isinstance(m.in_channels, int):
        spatial = {nn.Conv1d: ", L", nn.Conv2d: ", H, W", nn.Conv3d: ", D, H, W"}.get(type(m), ", ...")
        return f"{where} expects inputs of shape (N, {m.in_channels}{spatial})"
    if hasattr(m, "in_features") and isinstance(m.in_features, int):
        return f"{where} expects inputs of shape (N, ..., {m.in_features})"
    if hasattr(m, "normalized_shape"):
        return f"{where} expects inputs whose last dimensions are {tuple(m.normalized_shape)}"
    return None


def random_inputs(model: nn.Module, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Random inputs for `model`: N(0, 1) floats, or token ids when its first layer is an Embedding."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    found = first_layer(model)
    if found is not None and isinstance(found[1], nn.Embedding):
        return torch.randint(0, found[1].num_embeddings, shape, generator=generator).to(device)
    return torch.randn(shape, generator=generator).to(device)


def sequence_inputs(model: nn.Module, shape: tuple[int, ...], vocab: int | None, gen: torch.Generator) -> torch.Tensor:
    """`random_inputs`, or token ids in [0, vocab) when `vocab` is given, or (N, T, input_size) features
    for a model whose first layer is a recurrent one and a shape of (N, T) (docs/through-time.md)."""
    from ..errors import ConfigError

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    if vocab is not None:
        if vocab < 2:
            raise ConfigError(f"--vocab must be at least 2 (token ids in [0, vocab)), got {vocab}.")
        return torch.randint(0, vocab, shape, generator=gen).to(device)
    found = first_layer(model)
    if found is not None and isinstance(found[1], nn.RNNBase) and len(shape) == 2:
        shape = (*shape, found[1].input_size)
        if not found[1].batch_first:
            shape = (shape[1], shape[0], shape[2])  # (T, N, F)
    return random_inputs(model, shape, gen)
