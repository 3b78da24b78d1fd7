"""Sequence models as data (`SeqNetSpec`): recurrent classifiers and a small causal character transformer.

A `SeqNetSpec` stands where a `NetSpec` does in a `RunSpec`; the trainer calls its `build(data)`.

    rnn/lstm/gru:  Embedding(vocab, embed) -> nn.RNN/LSTM/GRU(embed, hidden, batch_first) ["rnn"]
                   -> Linear(hidden, n_out) ["head"] on the last step's output: the loss sees only step T
    transformer:   Embedding(vocab, width) + learned positions -> `depth` blocks ["blocks.i": ln1, attn
                   (qkv, q_norm, k_norm, proj; causal SDPA), ln2, fc1, GELU, fc2 = 4 x width MLP; no
                   dropout] -> [final LayerNorm "norm" if pre-LN] -> Linear(width, vocab) ["head"];
                   every Linear Xavier-uniform with zero bias, the embedding N(0, 1), positions N(0, 0.02^2)

Post-LN (`norm_first=False`) is x <- LN(x + f(x)) (Vaswani et al. 2017); pre-LN is
x <- x + f(LN(x)) with a final LayerNorm (Xiong et al. 2020). `qk_norm` adds a LayerNorm over each head's
dimension to the queries and keys (Dehghani et al. 2023); `sigma_reparam` replaces every Linear
(attention, MLP, head) by a `SigmaReparamLinear`, W -> (gamma / sigma(W)) W (Zhai et al. 2023). The attention is a module of its own
(`CausalSelfAttention`, an attention site for the watch's statistics; nn.MultiheadAttention
wrapped by the qk_layernorm remedy records none: its inner module never runs its forward). Recurrent inits: "default" (PyTorch's
uniform +-1/sqrt(H)), "orthogonal" (W_hh blocks orthogonal), "identity" (W_hh = I, biases 0: Le
et al. 2015's IRNN, with `nonlinearity="relu"`); `radius` rescales every W_hh block to that
spectral radius after the init (radius > 1: the exploding regime of Pascanu et al. 2013);
`forget_bias` sets an LSTM's forget-gate bias (1: Gers et al. 2000, Jozefowicz et al. 2015); init
"chrono" gives an LSTM the chrono init (Tallec & Ollivier 2018) for the task's length, as the
swap_cell remedy does (remedies/_recurrent.py): forget bias log(u), input bias -log(u), u ~ U[1, T - 1].
"""

from __future__ import annotations

import dataclasses
import torch
from torch import nn

from ..data import Dataset
from ..errors import ConfigError
from ..remedies._recurrent import _lstm_gate_biases
from ..remedies._sigma_reparam import sigma_reparam

CELLS = ("rnn", "lstm", "gru")
KINDS = (*CELLS, "transformer")
RNN_INITS = ("default", "orthogonal", "identity", "chrono")


@dataclasses.dataclass(frozen=True)
class SeqNetSpec:
    """A sequence model as data. Defaults: a tanh RNN of 32 units."""

    kind: str = "rnn"                 # "rnn", "lstm", "gru" or "transformer"
    hidden: int = 32                  # recurrent units
    embed: int = 16                   # token embedding width (recurrent kinds)
    nonlinearity: str = "tanh"        # kind="rnn": "tanh" or "relu"
    init: str = "default"             # recurrent W_hh (or, "chrono", an LSTM's gate biases): one of RNN_INITS
    radius: float | None = None       # rescale each W_hh block to this spectral radius (None: keep the init's)
    forget_bias: float | None = None  # kind="lstm": the forget gate's bias_ih block (bias_hh's set to 0); None: PyTorch's
    depth: int = 2                    # transformer blocks
    width: int = 64                   # transformer model width
    heads: int = 4                    # attention heads
    norm_first: bool = True           # pre-LN (True) or post-LN (False)
    qk_norm: bool = False             # LayerNorm on queries and keys per head
    sigma_reparam: bool = False       # every Linear W -> (gamma / sigma(W)) W (Zhai et al. 2023)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"kind must be one of {', '.join(KINDS)}; got {self.kind!r}.")
        if self.init not in RNN_INITS or self.nonlinearity not in ("tanh", "relu"):
            raise ConfigError(f"init must be one of {', '.join(RNN_INITS)} and nonlinearity tanh or relu; got "
                              f"{self.init!r}, {self.nonlinearity!r}.")
        for name in ("hidden", "embed", "depth", "width", "heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}.")
        if self.width % self.heads:
            raise ConfigError(f"width {self.width} must be a multiple of heads {self.heads}.")
        if self.init == "chrono" and self.kind != "lstm":
            raise ConfigError(f"init='chrono' sets an LSTM's gate biases; got kind={self.kind!r}.")
        if self.radius is not None and not self.radius > 0:
            raise ConfigError(f"radius must be > 0 or None, got {self.radius!r}.")

    def label(self) -> str:
        """'rnn-tanh-default', 'lstm', 'transformer6-post-ln', 'transformer2-pre-ln-qknorm'."""
        if self.kind == "transformer":
            return (f"transformer{self.depth}-{'pre' if self.norm_first else 'post'}-ln" + ("-qknorm" if self.qk_norm else "")
                    + ("-sigmareparam" if self.sigma_reparam else ""))
        parts = [self.kind] + ([self.nonlinearity] if self.kind == "rnn" else []) + [self.init]
        parts += [f"radius{self.radius:g}"] if self.radius else []
        return "-".join(parts + ([f"forget{self.forget_bias:g}"] if self.forget_bias is not None else []))

    def build(self, data: Dataset) -> nn.Module:
        """The model for `data` (token ids in; classes or next tokens out). Seed torch first."""
        vocab = int(max(data.x_train.max(), data.x_test.max())) + 1
        if self.kind == "transformer":
            n_out = max(vocab, data.n_classes)
            return CharTransformer(self, vocab, n_out, context=int(data.x_train.shape[1]))
        return RecurrentClassifier(self, vocab, data.n_classes, length=int(data.x_train.shape[1]))


class RecurrentClassifier(nn.Module):
    """Embedding -> one recurrent layer -> a classifier of the last step's output."""

    def __init__(self, spec: SeqNetSpec, vocab: int, n_out: int, length: int | None = None) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, spec.embed)
        if spec.kind == "rnn":
            self.rnn: nn.RNNBase = nn.RNN(spec.embed, spec.hidden, nonlinearity=spec.nonlinearity, batch_first=True)
        else:
            self.rnn = (nn.LSTM if spec.kind == "lstm" else nn.GRU)(spec.embed, spec.hidden, batch_first=True)
        self.head = nn.Linear(spec.hidden, n_out)
        init_recurrent(self.rnn, spec, length)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(self.emb(tokens))
        return self.head(y[:, -1])


def init_recurrent(rnn: nn.RNNBase, spec: SeqNetSpec, length: int | None = None) -> None:
    """W_hh per gate block: the spec's init, then rescaled to `spec.radius` (if given); an LSTM's gate biases.

    "chrono": swap_cell's chrono init for sequences of `length` steps (forget bias 1 when unknown or < 3).
    """
    w = rnn.weight_hh_l0
    h = rnn.hidden_size
    with torch.no_grad():
        for block in w.split(h, dim=0):
            if spec.init == "orthogonal":
                nn.init.orthogonal_(block)
            elif spec.init == "identity":
                block.copy_(torch.eye(h))
            if spec.radius is not None:
                block.mul_(spec.radius / torch.linalg.eigvals(block).abs().max())
        if spec.init == "identity":
            for bias in (rnn.bias_ih_l0, rnn.bias_hh_l0):
                bias.zero_()
        if spec.init == "chrono":
            _lstm_gate_biases(rnn, length)
        if spec.forget_bias is not None and isinstance(rnn, nn.LSTM):  # gate order i, f, g, o
            rnn.bias_ih_l0[h:2 * h].fill_(spec.forget_bias)
            rnn.bias_hh_l0[h:2 * h].zero_()


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention through F.scaled_dot_product_attention; optional LayerNorm on q and k per head."""

    def __init__(self, width: int, heads: int, qk_norm: bool) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        head_dim = width // heads
        self.q_norm = nn.LayerNorm(head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(head_dim) if qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, e = x.shape
        q, k, v = (z.reshape(b, t, self.heads, e // self.heads).transpose(1, 2) for z in self.qkv(x).split(e, dim=-1))
        y = nn.functional.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, e))


class Block(nn.Module):
    """One transformer block: post-LN x <- LN(x + f(x)) or pre-LN x <- x + f(LN(x)), for attention then the MLP."""

    def __init__(self, spec: SeqNetSpec) -> None:
        super().__init__()
        w = spec.width
        self.norm_first = spec.norm_first
        self.ln1, self.ln2 = nn.LayerNorm(w), nn.LayerNorm(w)
        self.attn = CausalSelfAttention(w, spec.heads, spec.qk_norm)
        self.fc1, self.act, self.fc2 = nn.Linear(w, 4 * w), nn.GELU(), nn.Linear(4 * w, w)

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm_first:
            x = x + self.attn(self.ln1(x))
            return x + self.mlp(self.ln2(x))
        x = self.ln1(x + self.attn(x))
        return self.ln2(x + self.mlp(x))


class CharTransformer(nn.Module):
    """A causal transformer over token ids: logits [batch, T, n_out] for the next token at every position."""

    def __init__(self, spec: SeqNetSpec, vocab: int, n_out: int, context: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, spec.width)
        self.pos = nn.Parameter(torch.randn(context, spec.width) * 0.02)
        self.blocks = nn.ModuleList(Block(spec) for _ in range(spec.depth))
        self.norm = nn.LayerNorm(spec.width) if spec.norm_first else nn.Identity()
        self.head = nn.Linear(spec.width, n_out)
        for module in self.modules():  # the usual transformer init (Vaswani et al.'s code; Xiong et al.'s analysis)
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        if spec.sigma_reparam:  # after the init: sigma is estimated from the initial weights
            sigma_reparam(self, inplace=True)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.emb(tokens) + self.pos[: tokens.shape[1]]
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h))
