"""A deep sigmoid MLP that cannot train well: its gradient vanishes toward the input and its units saturate.

    graddoctor check examples/deep_sigmoid.py:build --input-shape 64,64 --classes 10

20 Linear layers (64 wide) with a sigmoid after each but the last, initialised the way much
from-scratch code does: every weight drawn from N(0, 0.75^2) and every bias from N(0, 1), a fixed
scale that ignores the layer's fan-in. The pre-activations then have a standard deviation near 3:
about a quarter to a half of each layer's sigmoids sit where sigma'(z) < 0.01, and each layer
multiplies the back-propagated gradient by about 0.7 (sigma' is at most 1/4 even where it is not
saturated). `graddoctor check` names both, with the remedies to try first.
"""

from __future__ import annotations

import torch
from torch import nn

DEPTH, WIDTH, INPUTS, CLASSES = 20, 64, 64, 10


def build(seed: int = 0) -> nn.Sequential:
    """The deep sigmoid MLP, seeded so that every run shows the same numbers."""
    gen = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    width_in = INPUTS
    for k in range(DEPTH):
        width_out = CLASSES if k == DEPTH - 1 else WIDTH
        linear = nn.Linear(width_in, width_out)
        with torch.no_grad():
            linear.weight.copy_(torch.randn(linear.weight.shape, generator=gen) * 0.75)
            linear.bias.copy_(torch.randn(linear.bias.shape, generator=gen))
        layers.append(linear)
        if k < DEPTH - 1:
            layers.append(nn.Sigmoid())
        width_in = width_out
    return nn.Sequential(*layers)
