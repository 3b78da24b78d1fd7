"""What a lab run is, as data: the network (`NetSpec`), the training (`TrainSpec`) and one run (`RunSpec`).

Studies and users describe models as data and `build` turns a `NetSpec` into an `nn.Module`.
A `RunSpec` is picklable (worker processes) and JSON-able (`to_dict`: the config stored with the run).

Network layout, input side first (names are `nn.Sequential` indices, so the store's layers read "0", "1", ...):

    mlp:  [Linear(d_in, width) -> norm -> act] x (depth - 1) -> Linear(width, n_out)
    conv: Unflatten(image) -> [Conv(c_in, width, 3, padding 1) -> norm -> act] x (depth - 1)
          -> global average pool -> Linear(width, n_out)

`residual=True` wraps every hidden block whose input and output shapes agree (all but the first)
as x + block(x). `depth` counts the weight layers (Linear/Conv), the output layer included.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import ConfigError

ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh", "softsign", "gelu", "elu", "selu", "linear")
NORMS = ("none", "batch", "layer")
INITS = ("default", "he", "xavier", "glorot", "normal")
OPTIMIZERS = ("sgd", "adam")
KINDS = ("mlp", "conv")


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}.")


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}.")


@dataclasses.dataclass(frozen=True)
class NetSpec:
    """A network as data. Defaults: a 10-layer ReLU MLP of width 128 with PyTorch's default init."""

    kind: str = "mlp"             # "mlp" or "conv" (a small conv net over the data's image shape)
    depth: int = 10               # weight layers (Linear/Conv), the output layer included; >= 1
    width: int = 128              # hidden units (mlp) or channels (conv)
    activation: str = "relu"      # one of ACTIVATIONS
    negative_slope: float = 0.01  # leaky_relu only: f(x) = x for x >= 0, negative_slope * x for x < 0
    norm: str = "none"            # "batch" (BatchNorm after each hidden weight layer), "layer" or "none"
    residual: bool = False        # x + block(x) around every hidden block of matching shape
    init: str = "default"         # "default" (PyTorch's: weight var 1/(3 fan_in)), "he" (normal, 2/fan_in),
                                  # "xavier" (normal, gain^2 2/(fan_in+fan_out)), "glorot" (Glorot & Bengio's
                                  # normalised init: U(+-sqrt(6/(fan_in+fan_out))), gain 1), "normal" (sigma_w2/fan_in);
                                  # every init but "default" starts the biases at 0 (or N(0, sigma_b2) under "normal")
    sigma_w2: float = 1.0         # init="normal": weight variance sigma_w2 / fan_in
    sigma_b2: float = 0.0         # init="normal": bias variance (biases ~ N(0, sigma_b2), not scaled by fan_in)
    bias: bool = True             # weight layers have a bias
    bias_shift: float = 0.0       # added to every hidden layer's bias after init (negative: dead-unit scenario)

    def __post_init__(self) -> None:
        _choice("kind", self.kind, KINDS)
        _choice("activation", self.activation, ACTIVATIONS)
        _choice("norm", self.norm, NORMS)
        _choice("init", self.init, INITS)
        _positive_int("depth", self.depth)
        _positive_int("width", self.width)
        if not self.sigma_w2 > 0:
            raise ConfigError(f"sigma_w2 must be > 0, got {self.sigma_w2!r}.")
        if not self.sigma_b2 >= 0:
            raise ConfigError(f"sigma_b2 must be >= 0, got {self.sigma_b2!r}.")
        if self.sigma_b2 and (self.init != "normal" or not self.bias):
            raise ConfigError(f"sigma_b2 = {self.sigma_b2!r} needs init='normal' and bias=True (got init={self.init!r}, "
                              f"bias={self.bias!r}): only the 'normal' init draws biases from N(0, sigma_b2).")
        if self.bias_shift and not self.bias:
            raise ConfigError("bias_shift needs bias=True: there is no bias to shift.")

    def label(self) -> str:
        """A short readable name: 'mlp20-sigmoid-default', 'mlp30-relu-batch-res-he'."""
        parts = [f"{self.kind}{self.depth}", self.activation]
        parts += [self.norm] if self.norm != "none" else []
        parts += ["res"] if self.residual else []
        parts += [self.init if self.init != "normal" else f"sw{self.sigma_w2:g}" + (f"-sb{self.sigma_b2:g}" if self.sigma_b2 else "")]
        parts += [f"shift{self.bias_shift:g}"] if self.bias_shift else []
        return "-".join(parts)


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    """How a run trains. Minibatches are drawn with replacement, seeded by the run's seed."""

    optimizer: str = "sgd"        # "sgd" (with `momentum`) or "adam"
    lr: float = 0.01
    momentum: float = 0.9         # sgd only
    batch: int = 64
    steps: int = 300              # optimizer steps; steps=1 measures the gradients at initialisation
    clip: float | None = None     # clip the global gradient norm to this (torch.nn.utils.clip_grad_norm_)
    warmup: int = 0               # linear warmup from lr/warmup to lr over this many steps
    every: int = 1                # graddoctor.watch: record one step in `every`
    hist_every: int | None = 0    # graddoctor.watch: histograms every this many steps (0: none; None: watch's default)
    attention_every: int | None = None  # graddoctor.watch: attention statistics every this many steps (None: its default)
    z_loss: float = 0.0           # add z_loss * mean (log Z)^2 of the outputs to the loss (0: none)

    def __post_init__(self) -> None:
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        for name in ("batch", "steps", "every"):
            _positive_int(name, getattr(self, name))
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr!r}.")
        if self.clip is not None and not self.clip > 0:
            raise ConfigError(f"clip must be > 0 or None, got {self.clip!r}.")
        if self.warmup < 0 or (self.hist_every or 0) < 0 or self.momentum < 0:
            raise ConfigError(f"warmup, hist_every and momentum must be >= 0, got {self.warmup!r}, {self.hist_every!r}, "
                              f"{self.momentum!r}.")
        if self.z_loss < 0 or (self.attention_every is not None and self.attention_every < 0):
            raise ConfigError(f"z_loss and attention_every must be >= 0, got {self.z_loss!r}, {self.attention_every!r}.")
        if self.hist_every and self.hist_every % self.every:
            raise ConfigError(f"hist_every={self.hist_every} must be a multiple of every={self.every}.")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: a network, its training, a dataset and a seed.

    `name` identifies the run in the store (unique within a study: resuming skips names already
    finished); `tags` are free-form labels a study's analysis selects runs by
    (e.g. {"claim": "C2", "variant": "deep"}).
    """

    name: str
    net: NetSpec = NetSpec()
    train: TrainSpec = TrainSpec()
    data: str = "digits"          # graddoctor.data.load_dataset: a name, a .npz path or "idx:IMAGES:LABELS"
    seed: int = 0
    tags: tuple[tuple[str, Any], ...] = ()

    def tag(self, key: str, default: Any = None) -> Any:
        return dict(self.tags).get(key, default)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["tags"] = dict(self.tags)
        return d


def run_spec(name: str, *, net: NetSpec, train: TrainSpec, seed: int, data: str = "digits", **tags: Any) -> RunSpec:
    """A `RunSpec` with keyword tags: run_spec("c2/deep/s0", net=..., train=..., seed=0, claim="C2")."""
    return RunSpec(name, net, train, data, seed, tuple(sorted(tags.items())))


def from_dict(d: dict[str, Any]) -> RunSpec:
    """The inverse of `RunSpec.to_dict` (a stored config back into a spec)."""
    return RunSpec(d["name"], NetSpec(**d["net"]), TrainSpec(**d["train"]), d["data"], d["seed"],
                   tuple(sorted(d.get("tags", {}).items())))

