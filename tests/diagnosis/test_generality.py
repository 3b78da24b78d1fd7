"""Beyond the labelled MLPs: conv nets, nested modules, recurrent and embedding models, other activations.

The thresholds are ratios within a run, so the same rules must hold here without retuning.
"""

from __future__ import annotations

import torch
from scenarios import digits, he, mlp, synthetic, train
from torch import nn

from graddoctor.diagnosis import diagnose

GRADIENT_FLOW = ("vanishing_gradient", "exploding_gradient", "nonfinite", "stalled_updates")


def images() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = digits()
    return x.reshape(-1, 1, 8, 8), y


def conv_net(act: type[nn.Module], depth: int, *, he_init: bool, batch_norm: bool = False) -> nn.Sequential:
    """`depth` 3x3 convs at 8x8 (16 channels), a 2x2 max-pool after the first half, global pooling, a classifier."""
    layers: list[nn.Module] = []
    channels = 1
    for k in range(depth):
        conv = nn.Conv2d(channels, 16, 3, padding=1)
        if he_init:
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        layers += [conv] + ([nn.BatchNorm2d(16)] if batch_norm else []) + [act()]
        if k == depth // 2:
            layers.append(nn.MaxPool2d(2))
        channels = 16
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def test_he_init_relu_conv_net_is_healthy():
    torch.manual_seed(0)
    d = diagnose(train(conv_net(nn.ReLU, 6, he_init=True), data=images, steps=15))
    assert not d.reaches("error") and not (d.kinds & set(GRADIENT_FLOW)), d.kinds


def test_deep_sigmoid_conv_net_vanishes_from_its_first_conv():
    torch.manual_seed(0)
    d = diagnose(train(conv_net(nn.Sigmoid, 8, he_init=False), data=images, steps=10))
    f = d.of_kind("vanishing_gradient")[0]
    assert f.layers[0] == "0" and f.evidence["factor_per_layer"] < 0.5
    assert f.remedies[0].id == "relu"


def test_conv_batchnorm_net_reads_channels_and_stays_healthy():
    torch.manual_seed(0)
    d = diagnose(train(conv_net(nn.ReLU, 4, he_init=True, batch_norm=True), data=images, steps=15))
    assert not d.reaches("error") and not (d.kinds & set(GRADIENT_FLOW)), d.kinds


def test_gelu_and_tanh_nets_at_their_critical_inits_are_healthy():
    torch.manual_seed(0)
    gelu = mlp(12, 64, nn.GELU, init=he)
    tanh = mlp(12, 64, nn.Tanh, init=lambda m: (nn.init.xavier_normal_(m.weight, gain=5 / 3), nn.init.zeros_(m.bias)))
    for model in (gelu, tanh):
        d = diagnose(train(model, steps=20))
        assert not d.reaches("error") and not (d.kinds & set(GRADIENT_FLOW)), d.kinds


def test_depth_decides_how_bad_default_init_relu_is():
    torch.manual_seed(0)
    shallow = diagnose(train(mlp(4, 64, nn.ReLU), steps=10))
    deep = diagnose(train(mlp(24, 64, nn.ReLU), steps=10))
    assert not shallow.of_kind("vanishing_gradient")
    assert str(deep.of_kind("vanishing_gradient")[0].severity) == "error"


class Recurrent(nn.Module):
    """Embedding -> LSTM -> Linear on token sequences: two weight layers and a sparse one."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.lstm = nn.LSTM(16, 32, batch_first=True)
        self.head = nn.Linear(32, 4)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(tokens))
        return self.head(out[:, -1])


def tokens() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 50, (256, 12), generator=gen)
    return x, x[:, 0] % 4


def test_recurrent_model_with_embedding_is_not_misread():
    torch.manual_seed(0)
    d = diagnose(train(Recurrent(), data=tokens, steps=15, opt="sgd", lr=0.1))
    # SGD touches only the embedding rows in the batch: its small update ratio is not "stalled".
    assert "embed" not in {layer for f in d.of_kind("stalled_updates") for layer in f.layers}
    assert not d.reaches("error")


def test_synthetic_regression_head_and_sgd_healthy_mlp():
    torch.manual_seed(0)
    d = diagnose(train(mlp(4, 32, nn.ReLU, init=he, d_in=32, d_out=4), data=synthetic, steps=30, opt="sgd", lr=0.05))
    assert not d.findings, [str(f.kind) for f in d.findings]


def test_units_silent_on_one_batch_by_chance_are_not_dead():
    # Issue 3's baseline: in a healthy He-init ReLU MLP of width 512, about a tenth of layer 10's units
    # are zero on a whole batch of 256. They are not reported; a narrow net's larger share neither.
    torch.manual_seed(0)
    wide = train(mlp(10, 512, nn.ReLU, init=he), steps=4, batch=256)
    assert max(wide.stat("dead_frac", name)[0] for name in ("13", "15", "17")) > 0.05
    assert not diagnose(wide).of_kind("dead_units")
    narrow = train(mlp(10, 16, nn.ReLU, init=he), steps=20, batch=16)
    assert not diagnose(narrow).of_kind("dead_units")
