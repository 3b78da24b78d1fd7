"""Layer specs: what the mean-field theory needs to know about a model, and what it does not cover.

A `ModelSpec` is a list of `LayerSpec` in forward order, each naming the positions of the specs it
reads (a graph: residual blocks are an ADD with two inputs). Specs come from a real model
(`read_model`, via torch.fx in `_fx`) or are written directly (`mlp_spec`, for the model-free CLI).
Everything here is data; the theory runs in `propagate`.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from ..errors import ConfigError
from .activations import Activation, resolve


class Op(str, enum.Enum):
    """What one op does to the signal. UNCOVERED ops stop the prediction (see `LayerSpec.reason`)."""

    INPUT = "input"
    DENSE = "dense"             # Linear / Conv: h = W x + b, W zero-mean with variance sigma_w2 / fan_in
    ACTIVATION = "activation"   # elementwise phi
    BATCHNORM = "batchnorm"     # BatchNorm1d over (batch, features), batch statistics
    LAYERNORM = "layernorm"     # LayerNorm over the last dimension
    ADD = "add"                 # x + y (residual connection)
    SCALE = "scale"             # multiplies second moments (dropout, a constant factor)
    PASS = "pass"               # reshapes: flatten, view, identity
    OUTPUT = "output"
    UNCOVERED = "uncovered"


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One op of the model, with the numbers the mean-field theory reads from its tensors.

    sigma_w2 = fan_in * mean(W^2) and sigma_b2 = mean(b^2) are the *actual* values of this
    layer's tensors (not the init scheme's nominal ones). `border` is the mean fraction of a
    convolution's kernel taps that land inside the zero-padded input (1 for a Linear).
    """

    name: str
    kind: Op
    type: str
    inputs: tuple[int, ...] = ()
    sigma_w2: float = 0.0
    sigma_b2: float = 0.0
    fan_in: int = 0
    border: float = 1.0
    activation: Activation | None = None
    gain: float = 1.0           # norm layers: the (uniform) weight gamma
    shift: float = 0.0          # norm layers: the (uniform) bias beta
    eps: float = 0.0
    features: int = 0           # LayerNorm: size of the normalised dimension
    forward: float = 1.0        # SCALE: factor on the per-sample second moment q
    cross: float = 1.0          # SCALE: factor on the cross-sample second moment k
    backward: float = 1.0       # SCALE: factor on ||dL/d output||^2
    keeps_gaussian: bool = True  # SCALE: False for dropout (a Bernoulli mask)
    reason: str = ""            # UNCOVERED: why the theory says nothing here


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A model as the theory sees it: specs in forward order, the per-sample input shape, notes."""

    layers: tuple[LayerSpec, ...]
    input_shape: tuple[int, ...] | None = None
    notes: tuple[str, ...] = ()

    @property
    def uncovered(self) -> list[LayerSpec]:
        """The ops the theory does not cover, with their `reason`."""
        return [s for s in self.layers if s.kind == Op.UNCOVERED]

    @property
    def dense(self) -> list[int]:
        """Positions of the Linear/Conv ops, input side first."""
        return [i for i, s in enumerate(self.layers) if s.kind == Op.DENSE]


def mlp_spec(activation: Any, sigma_w2: float, sigma_b2: float, depth: int, batchnorm: bool = False) -> ModelSpec:
    """A plain MLP of `depth` Linear layers with one activation after each but the last.

    Named like `nn.Sequential(Linear, act, Linear, act, ..., Linear)`: Linear layers "0", "2", ...
    With batchnorm=True each hidden block is Linear, BatchNorm1d, act.
    """
    act = resolve(activation)
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise ConfigError(f"depth must be a positive integer (number of Linear layers), got {depth!r}.")
    layers = [LayerSpec("input", Op.INPUT, "input")]
    block = 3 if batchnorm else 2
    for i in range(depth):
        layers.append(LayerSpec(str(block * i), Op.DENSE, "Linear", (len(layers) - 1,), sigma_w2, sigma_b2))
        if i == depth - 1:
            break
        if batchnorm:
            layers.append(LayerSpec(str(block * i + 1), Op.BATCHNORM, "BatchNorm1d", (len(layers) - 1,), eps=1e-5))
        layers.append(LayerSpec(str(block * i + block - 1), Op.ACTIVATION, act.name, (len(layers) - 1,),
                                activation=act))
    layers.append(LayerSpec("output", Op.OUTPUT, "output", (len(layers) - 1,)))
    return ModelSpec(tuple(layers))
