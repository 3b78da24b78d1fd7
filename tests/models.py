"""A zoo of small, awkward models for the probe tests (torchinfo's tests/fixtures/models.py idea).

Each `Case` bundles a model builder with the data, loss and optimizer to train it for a few
steps. The models are built to exercise what a naive hook-based monitor gets wrong: tied weights,
a module called twice, nesting, frozen parts, tuple and dict outputs, in-place activations,
BatchNorm in train mode, a branch that gets no gradient, conv units in dim 1, dead and saturated
units, gradient accumulation.

Everything is tiny and seeded: a case trains in milliseconds on a CPU.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

Batch = tuple[Any, Any]  # (model input, target)


# -- models --------------------------------------------------------------------------------------


def mlp(width: int = 16) -> nn.Sequential:
    """Linear/Tanh/Linear/Sigmoid/Linear/ReLU/Linear: the plain case, one of each classic activation."""
    return nn.Sequential(
        nn.Linear(6, width), nn.Tanh(),
        nn.Linear(width, width), nn.Sigmoid(),
        nn.Linear(width, 12), nn.ReLU(),
        nn.Linear(12, 3),
    )


def dead_and_saturated() -> nn.Sequential:
    """Units built to be dead or saturated at step 0, so those fractions are far from 0 and 1.

    - "1" (ReLU): units 0..3 of "0" have bias -50 while |w.x| < 10: exactly 4 of 16 dead.
    - "3" (Tanh): weights x40, so about half the |y| > 0.99; unit 0 has a zero weight row and zero bias,
      so its output is exactly 0 for every sample: 1 of 16 dead (a signed activation).
    - "5" (Sigmoid): weights x40: most outputs below 0.01 or above 0.99.
    """
    model = nn.Sequential(
        nn.Linear(8, 16), nn.ReLU(),
        nn.Linear(16, 16), nn.Tanh(),
        nn.Linear(16, 16), nn.Sigmoid(),
        nn.Linear(16, 2),
    )
    with torch.no_grad():
        model[0].weight.mul_(0.5)
        model[0].bias[:4] = -50.0
        model[2].weight.mul_(40.0)
        model[2].weight[0].zero_()
        model[2].bias[0] = 0.0
        model[4].weight.mul_(40.0)
    return model


def activation_zoo() -> nn.Sequential:
    """The other saturating activations (ReLU6, Hardtanh, Softsign, ELU with alpha != 1) and PReLU,
    an activation module that owns a parameter; weights scaled so that each saturates in part."""
    model = nn.Sequential(
        nn.Linear(6, 16), nn.ReLU6(),
        nn.Linear(16, 16), nn.Hardtanh(-0.5, 0.75),
        nn.Linear(16, 16), nn.Softsign(),
        nn.Linear(16, 16), nn.ELU(alpha=0.5),
        nn.Linear(16, 16), nn.PReLU(16),
        nn.Linear(16, 16), nn.LeakyReLU(0.1),
        nn.Linear(16, 2),
    )
    with torch.no_grad():
        for i, scale in ((0, 8.0), (2, 0.3), (4, 64.0), (6, 64.0)):
            model[i].weight.mul_(scale)
    return model


class TiedLM(nn.Module):
    """Embedding and output projection share one weight. `emb` comes first in named_modules, so it
    owns the shared weight; `decoder` keeps only its bias."""

    def __init__(self, vocab: int = 20, dim: int = 8) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.act = nn.Tanh()
        self.proj = nn.Linear(dim, dim)
        self.decoder = nn.Linear(dim, vocab)
        self.decoder.weight = self.emb.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.proj(self.act(self.emb(tokens))))


class TiedDecoderFirst(nn.Module):
    """The same tie, declared the other way round: `decoder` owns the weight, `emb` owns nothing
    trainable of its own and is no layer at all."""

    def __init__(self, vocab: int = 20, dim: int = 8) -> None:
        super().__init__()
        self.decoder = nn.Linear(dim, vocab, bias=False)
        self.emb = nn.Embedding(vocab, dim)
        self.emb.weight = self.decoder.weight
        self.act = nn.Tanh()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.act(self.emb(tokens)))


class Reused(nn.Module):
    """`fc` and `act` are each called twice in one forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(5, 8)
        self.fc = nn.Linear(8, 8)
        self.act = nn.Tanh()
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        x = self.act(self.fc(x))
        x = self.act(self.fc(x))
        return self.head(x)


class Block(nn.Module):
    """A custom module with a parameter of its own (`gain`) and children: both it and its children
    are layers. Its forward hook fires after its children's."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.linspace(0.5, 1.5, dim))
        self.fc = nn.Linear(dim, dim)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(x)) * self.gain + x


class Nested(nn.Module):
    def __init__(self, dim: int = 10) -> None:
        super().__init__()
        self.stem = nn.Linear(4, dim)
        self.body = nn.Sequential(nn.ModuleList([Block(dim), Block(dim)]))  # a container in a container
        self.head = nn.Linear(dim, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.body[0]:
            x = block(x)
        return self.head(x)


class Frozen(nn.Module):
    """`stem` entirely frozen (no layer); `mid` has a frozen weight and a trainable bias (a layer of
    12 parameters); `head` trainable."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(6, 12)
        self.mid = nn.Linear(12, 12)
        self.act = nn.Tanh()
        self.head = nn.Linear(12, 2)
        self.stem.requires_grad_(False)
        self.mid.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.mid(self.stem(x))))


class LSTMNet(nn.Module):
    """nn.LSTM returns (output, (h_n, c_n)): its statistics are those of `output`."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 8, batch_first=True)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


class Heads(nn.Module):
    """Owns two weights directly and returns a dict whose first value is an integer tensor: the
    first *floating* tensor, "logits", is the module's output."""

    def __init__(self, dim: int = 10) -> None:
        super().__init__()
        self.w_main = nn.Parameter(torch.randn(dim, 3) / dim**0.5)
        self.w_aux = nn.Parameter(torch.randn(dim, 2) / dim**0.5)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = x @ self.w_main
        return {"pred": logits.argmax(-1), "logits": logits, "aux": torch.tanh(x @ self.w_aux)}


class DictOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Linear(6, 10)
        self.act = nn.ReLU()
        self.heads = Heads(10)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.heads(self.act(self.trunk(x)))


def inplace_relu() -> nn.Sequential:
    """ReLU(inplace=True) overwrites the Linear output it is given."""
    return nn.Sequential(
        nn.Linear(6, 16), nn.ReLU(inplace=True),
        nn.Linear(16, 16), nn.ReLU(inplace=True),
        nn.Linear(16, 2),
    )


def batchnorm_mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2))


class NoGradBranch(nn.Module):
    """`aux` and `aux_act` run, but only a detached copy of their output leaves the model; `unused`
    never runs. Neither gets a gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Linear(6, 8)
        self.act = nn.Tanh()
        self.main = nn.Linear(8, 2)
        self.aux = nn.Linear(8, 3)
        self.aux_act = nn.Sigmoid()
        self.unused = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.act(self.trunk(x))
        return self.main(h), self.aux_act(self.aux(h)).detach()


def conv_net(dead_channels: int = 3) -> nn.Sequential:
    """Conv2d+BN+ReLU, Conv2d+ReLU, pool, Linear+ReLU. BN bias -30 on the first `dead_channels`
    channels: those ReLU channels are 0 at every sample and position (|x_hat| stays far below 30),
    while no column of width 10 is. Units of the ReLUs after convs are channels (dim 1)."""
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 6, 3), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(6, 5), nn.ReLU(),
        nn.Linear(5, 2),
    )
    with torch.no_grad():
        model[1].bias[:dead_channels] = -30.0
    return model


def frozen_conv_stem() -> nn.Sequential:
    """A frozen conv stem (fine-tuning) whose ReLU units are still channels: bias -30 on the first
    3 of its 8 channels kills them."""
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 10 * 10, 2),
    )
    with torch.no_grad():
        model[0].bias[:3] = -30.0
    model[0].requires_grad_(False)
    return model


def offset_output() -> nn.Sequential:
    """A Linear whose outputs sit near 50 with a spread of about 0.05 (large mean, small std)."""
    model = nn.Sequential(nn.Linear(6, 16), nn.Linear(16, 2))
    with torch.no_grad():
        model[0].weight.mul_(0.05)
        model[0].bias.fill_(50.0)
    return model


class SqrtGain(nn.Module):
    """y = x * sqrt(p) + q: p has 3 exact zeros, so dL/dp is +-inf there (3 of 16 elements)."""

    def __init__(self) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor([0.0, 0.0, 0.0, 1.0, 2.0, 0.5, 1.5, 1.0, 1.0, 1.0]))
        self.q = nn.Parameter(torch.zeros(6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x * self.p.sqrt(), torch.zeros(x.shape[0], 6) + self.q], dim=1)


def nonfinite_grad() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 10), SqrtGain(), nn.Linear(16, 2))


# -- cases ---------------------------------------------------------------------------------------


def _regression(in_shape: tuple[int, ...], out_dim: int, dtype: torch.dtype = torch.float32) -> Callable[[torch.Generator, int], Batch]:
    def make(gen: torch.Generator, n: int) -> Batch:
        return (torch.randn(n, *in_shape, generator=gen, dtype=dtype),
                torch.randn(n, out_dim, generator=gen, dtype=dtype))
    return make


def _tokens(vocab: int, length: int) -> Callable[[torch.Generator, int], Batch]:
    def make(gen: torch.Generator, n: int) -> Batch:
        return (torch.randint(0, vocab, (n, length), generator=gen),
                torch.randint(0, vocab, (n, length), generator=gen))
    return make


def _mse(out: Any, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(out, target)


def _lm_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), target.reshape(-1))


def _dict_loss(out: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(out["logits"], target[:, :3]) + out["aux"].pow(2).mean()


def _first_mse(out: tuple[torch.Tensor, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(out[0], target) + 0.0 * out[1].sum()  # the detached aux output: no gradient


def _sgd(params: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.05, momentum=0.9)


def _adam(params: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=1e-2)


@dataclasses.dataclass(frozen=True)
class Case:
    """A model with the data, loss and optimizer to train it for `steps` steps.

    micro: batch size of each micro-batch of a step (gradient accumulation when more than one).
    clip: clip_grad_norm_ to this before each step (statistics are read after clipping).
    side_forwards: a no_grad forward and an eval-mode forward each step, which must not count.
    """

    name: str
    build: Callable[[], nn.Module]
    data: Callable[[torch.Generator, int], Batch]
    loss: Callable[[Any, Any], torch.Tensor] = _mse
    optimizer: Callable[[Any], torch.optim.Optimizer] = _adam
    steps: int = 3
    micro: tuple[int, ...] = (16,)
    clip: float | None = None
    side_forwards: bool = False

    def batches(self, seed: int = 1) -> list[list[Batch]]:
        """Every step's micro-batches, drawn from a private generator (same data every call)."""
        gen = torch.Generator().manual_seed(seed)
        return [[self.data(gen, n) for n in self.micro] for _ in range(self.steps)]


CASES: list[Case] = [
    Case("mlp", mlp, _regression((6,), 3), optimizer=_sgd, clip=0.1, side_forwards=True),
    Case("dead_and_saturated", dead_and_saturated, _regression((8,), 2), micro=(32,)),
    Case("activation_zoo", activation_zoo, _regression((6,), 2), micro=(24,)),
    Case("tied", TiedLM, _tokens(20, 5), loss=_lm_loss),
    Case("tied_decoder_first", TiedDecoderFirst, _tokens(20, 5), loss=_lm_loss, optimizer=_sgd),
    Case("reused", Reused, _regression((5,), 2)),
    Case("nested", Nested, _regression((4,), 2)),
    Case("frozen", Frozen, _regression((6,), 2), optimizer=_sgd),
    Case("lstm", LSTMNet, _regression((7, 4), 2)),
    Case("dict_out", DictOut, _regression((6,), 3), loss=_dict_loss),
    Case("inplace_relu", inplace_relu, _regression((6,), 2)),
    Case("batchnorm", batchnorm_mlp, _regression((6,), 2), side_forwards=True),
    Case("no_grad_branch", NoGradBranch, _regression((6,), 2), loss=_first_mse, optimizer=_sgd),
    Case("conv", conv_net, _regression((3, 10, 10), 2), micro=(4,)),
    Case("conv_accum", conv_net, _regression((3, 10, 10), 2), micro=(3, 2)),
    Case("mlp_accum", mlp, _regression((6,), 3), micro=(8, 5), optimizer=_sgd),
    Case("mlp_float64", lambda: mlp().double(), _regression((6,), 3, torch.float64)),
]
CASE = {case.name: case for case in CASES}
