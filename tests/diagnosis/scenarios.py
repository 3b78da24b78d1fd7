"""Labelled scenarios: small models trained briefly, each with the findings a correct diagnosis names.

Every case is plain data (BackPACK-style settings table): how to build the model, how to train it,
which kinds must be found on which layers, and which kinds must not appear. Data is scikit-learn's
digits (real 8x8 images shipped inside scikit-learn) or small synthetic tensors: nothing is downloaded.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

import graddoctor

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@functools.lru_cache(maxsize=1)
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 digits, standardised per pixel."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0).clamp_min(1e-6)
    return x, torch.tensor(data.target, dtype=torch.long)


def synthetic(n: int = 512, d: int = 32, classes: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian inputs labelled by a random linear teacher: learnable, and no files involved."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen)
    y = (x @ torch.randn(d, classes, generator=gen)).argmax(1)
    return x, y


def train(model: nn.Module, *, data: Callable[[], tuple[torch.Tensor, torch.Tensor]] = digits, steps: int = 20,
          opt: str = "adam", lr: float = 1e-3, batch: int = 64, seed: int = 0,
          tiers: dict | None = None) -> graddoctor.store.RunView:
    """Train `model` with cross-entropy under graddoctor.watch (in memory) and return the recorded run.

    The rules are calibrated on these runs with the full tier at every step (`tiers`: other watch
    schedules, e.g. {} for watch's defaults; tests/diagnosis/test_tier_rules.py)."""
    x, y = data()
    gen = torch.Generator().manual_seed(seed)
    optimizer = (torch.optim.Adam if opt == "adam" else torch.optim.SGD)(model.parameters(), lr=lr)
    with graddoctor.watch(model, optimizer, hist_every=0, **({"full_every": 1} if tiers is None else tiers)) as run:
        for _ in range(steps):
            idx = torch.randint(0, len(x), (batch,), generator=gen)
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.log(loss=loss)
    return graddoctor.load(run)


# -- models ----------------------------------------------------------------------------------


def he(linear: nn.Linear, slope: float = 0.0) -> None:
    nn.init.kaiming_normal_(linear.weight, a=slope, nonlinearity="leaky_relu" if slope else "relu")
    nn.init.zeros_(linear.bias)


def mlp(depth: int, width: int, act: Callable[[], nn.Module], *, d_in: int = 64, d_out: int = 10,
        init: Callable[[nn.Linear], Any] | None = None, batch_norm: bool = False) -> nn.Sequential:
    """`depth` Linear layers (input side first), `act` after each but the last, optional BatchNorm before it."""
    dims = [d_in] + [width] * (depth - 1) + [d_out]
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        linear = nn.Linear(a, b)
        if init is not None:
            init(linear)
        layers.append(linear)
        if k < depth - 1:
            layers += [nn.BatchNorm1d(b), act()] if batch_norm else [act()]
    return nn.Sequential(*layers)


def example(name: str) -> nn.Module:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build()


def bias_shift(layer: int = 4, shift: float = -10.0) -> nn.Sequential:
    """He-init ReLU MLP whose third Linear has bias -10: every unit of the ReLU after it is off."""
    model = mlp(6, 64, nn.ReLU, init=he)
    with torch.no_grad():
        model[layer].bias.fill_(shift)
    return model


class Block(nn.Module):
    """Pre-norm residual block: x + fc2(relu(fc1(norm(x))))."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1, self.act, self.fc2 = nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width)
        he(self.fc1)
        he(self.fc2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.act(self.fc1(self.norm(x))))


class ResMLP(nn.Module):
    """Nested residual MLP: an input layer, `blocks` pre-norm residual blocks, a classifier."""

    def __init__(self, blocks: int = 8, width: int = 64, d_in: int = 64, d_out: int = 10) -> None:
        super().__init__()
        self.stem = nn.Linear(d_in, width)
        self.blocks = nn.Sequential(*[Block(width) for _ in range(blocks)])
        self.head = nn.Linear(width, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def large_tanh(linear: nn.Linear) -> None:
    nn.init.normal_(linear.weight, std=3.0 / linear.in_features ** 0.5)  # sigma_w = 3: chaotic, saturating


# -- the table ---------------------------------------------------------------------------------
# expect: kind -> layers that must be among the finding's layers; forbid: kinds that must not appear.
# healthy: no finding may be an error.

SCENARIOS: list[dict[str, Any]] = [
    dict(id="deep_sigmoid", build=lambda: example("deep_sigmoid"), train=dict(steps=20),
         expect={"vanishing_gradient": ["0", "2", "4"], "saturated_units": ["1"]}),
    dict(id="deep_sigmoid_default_init", build=lambda: mlp(10, 64, nn.Sigmoid), train=dict(steps=20),
         expect={"vanishing_gradient": ["0", "2", "4", "6"]}, forbid=["saturated_units", "exploding_gradient"]),
    dict(id="deep_relu_default_init", build=lambda: mlp(10, 64, nn.ReLU), train=dict(steps=20),
         expect={"vanishing_gradient": ["0", "2", "4"]}, forbid=["exploding_gradient"]),
    dict(id="deep_relu_he_adam", build=lambda: mlp(10, 64, nn.ReLU, init=he), train=dict(steps=30), healthy=True,
         forbid=["vanishing_gradient", "exploding_gradient", "dead_units", "nonfinite", "stalled_updates"]),
    dict(id="leaky_relu_he", build=lambda: mlp(10, 64, lambda: nn.LeakyReLU(0.01), init=lambda m: he(m, 0.01)),
         train=dict(steps=30), healthy=True,
         forbid=["vanishing_gradient", "exploding_gradient", "dead_units", "nonfinite", "stalled_updates"]),
    dict(id="relu_lr_too_high", build=lambda: mlp(6, 64, nn.ReLU, init=he), train=dict(steps=30, lr=0.1),
         expect={"dead_units": ["3", "5", "7"]}, forbid=["nonfinite"]),
    dict(id="negative_bias_kills_layer", build=bias_shift, train=dict(steps=20),
         expect={"dead_units": ["5"]}, severity={"dead_units": "error"}),
    dict(id="tanh_large_init", build=lambda: mlp(8, 64, nn.Tanh, init=large_tanh), train=dict(steps=20),
         expect={"saturated_units": ["1", "3", "5", "7", "9", "11", "13"]}, forbid=["dead_units", "nonfinite"]),
    dict(id="relu_he_sgd_diverges", build=lambda: mlp(6, 64, nn.ReLU, init=he), train=dict(steps=15, opt="sgd", lr=2.0),
         expect={"exploding_gradient": [], "nonfinite": []}, severity={"nonfinite": "error"}),
    dict(id="bn_relu_30_no_skips_at_init", build=lambda: mlp(30, 64, nn.ReLU, init=he, batch_norm=True),
         train=dict(steps=3), expect={"exploding_gradient": ["0", "3", "6"]}, forbid=["vanishing_gradient"]),
    dict(id="residual_prenorm", build=ResMLP, train=dict(steps=30), healthy=True,
         forbid=["vanishing_gradient", "exploding_gradient", "dead_units", "nonfinite", "stalled_updates"]),
    dict(id="small_mlp", build=lambda: mlp(3, 32, nn.Tanh, d_in=32, d_out=4),
         train=dict(steps=60, lr=1e-2, data=synthetic), healthy=True,
         forbid=["vanishing_gradient", "exploding_gradient", "dead_units", "nonfinite", "stalled_updates",
                 "saturated_units"]),
]
