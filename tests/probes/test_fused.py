"""The fused activation partials (probes/fused.py) against the reference kernels, partial by partial.

Every zoo model trains watched while each layer output and each dL/d output read by the run is
also handed to the reference path; every partial (shift, sums, counts, per-unit maxima, output
gradient sums) must be equal. The fused path does the same float operations element by element
in the same order (only fewer ops around them), so the tolerance is explicit and zero:
bit-identical, NaN where the reference has NaN. Edge tensors (non-finite values, a large mean,
one-sided bounds, channels first, layouts the fused path leaves to the reference) follow.
"""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import graddoctor
from graddoctor.config import WatchConfig
from graddoctor.errors import ConfigError
from graddoctor.probes import activations, fused
from graddoctor.probes.select import plan_layers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models import CASES  # noqa: E402
from probes.test_oracle import compare, record_both, train  # noqa: E402


def _same(a: list, b: list, what: str) -> None:
    assert [code for code, _ in a] == [code for code, _ in b], what
    for (code, x), (_, y) in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape, f"{what}: {code}"
        torch.testing.assert_close(x, y, rtol=0, atol=0, equal_nan=True, msg=lambda m: f"{what}, {code}: {m}")


class Twin(fused.OutputReader):
    """The run's reader on the fused path, checking each read against the reference path."""

    checked: list[tuple[str, str]] = []

    def __init__(self, path: str = "fused") -> None:
        super().__init__(path)
        self.reference = fused.OutputReader("reference")

    def output(self, y, layer, channel_dim):
        got = super().output(y, layer, channel_dim)
        _same(got, self.reference.output(y, layer, channel_dim), f"output of {layer.name}")
        Twin.checked.append(("output", layer.name))
        return got

    def out_grad(self, g):
        got = super().out_grad(g)
        _same(got, self.reference.out_grad(g), "dL/d output")
        Twin.checked.append(("out_grad", ""))
        return got


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fused_partials_equal_the_reference_on_every_zoo_layer(case, monkeypatch):
    monkeypatch.setattr(activations, "OutputReader", Twin)
    Twin.checked = []
    model = case.build()
    ran = set()
    for layer in plan_layers(model):
        layer.module.register_forward_hook(lambda m, i, o, name=layer.name: ran.add(name) if torch.is_grad_enabled() else None)
    opt = case.optimizer(model.parameters())
    with graddoctor.watch(model, opt, hist_every=0, full_every=1):
        train(model, opt, case, case.batches())
    read = [name for what, name in Twin.checked if what == "output"]
    assert ran and {n for n in ran if any(p.dtype.is_floating_point for p in [torch.zeros(1)])} <= set(read)
    assert len(read) >= case.steps * len(set(read))  # every layer that ran, at every step
    assert any(what == "out_grad" for what, _ in Twin.checked)


@pytest.mark.parametrize("case", [c for c in CASES if c.name in ("mlp", "activation_zoo", "conv_accum", "reused")],
                         ids=lambda c: c.name)
def test_the_reference_path_still_matches_the_oracle(case):
    view, ref = record_both(case, config=WatchConfig(hist_every=0, stats="reference"))
    assert compare(view, ref) > 0


def test_fused_and_reference_runs_store_the_same_numbers():
    case = next(c for c in CASES if c.name == "dead_and_saturated")
    model = case.build()
    views = []
    for path in ("fused", "reference"):
        twin = copy.deepcopy(model)
        opt = case.optimizer(twin.parameters())
        with graddoctor.watch(twin, opt, config=WatchConfig(hist_every=0, stats=path)) as run:
            train(twin, opt, case, case.batches())
        views.append(graddoctor.load(run))
    for stat in ("act_mean", "act_std", "act_zero_frac", "dead_frac", "saturated_frac", "out_grad_norm"):
        for layer in views[0].layers:
            a, b = views[0].stat(stat, layer), views[1].stat(stat, layer)
            assert a.tolist() == b.tolist() or (torch.tensor(a).isnan() == torch.tensor(b).isnan()).all(), (stat, layer)


# -- edge tensors ---------------------------------------------------------------------------------


class _Layer:
    def __init__(self, saturation=None, nonnegative=False, counts_zeros=True, name="edge"):
        self.saturation, self.nonnegative, self.counts_zeros, self.name = saturation, nonnegative, counts_zeros, name


def _both(y, layer, channel_dim=-1):
    a = fused.OutputReader("fused").output(y, layer, channel_dim)
    b = fused.OutputReader("reference").output(y, layer, channel_dim)
    _same(a, b, "edge")
    return dict(a)


EDGES = {
    "first_nan": lambda: torch.tensor([[math.nan, 1.0], [0.0, 2.0]]),
    "first_inf": lambda: torch.tensor([[math.inf, 1.0], [0.0, 2.0]]),
    "inf_inside": lambda: torch.tensor([[1.0, math.inf], [0.0, -0.995]]),
    "minus_inf": lambda: torch.tensor([[-math.inf, 1.0], [0.0, 0.5]]),
    "large_mean": lambda: 50.0 + 0.03 * torch.randn(64, 8, generator=torch.Generator().manual_seed(0)),
    "constant": lambda: torch.full((4, 3), 7.0),
    "float64": lambda: torch.randn(5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).tanh(),
    "one_dim": lambda: torch.tensor([0.0, 0.5, -1.0]),
    "zeros_and_bounds": lambda: torch.tensor([[0.0, 0.99, -0.99, 0.991], [1.0, -1.0, 0.0, 0.5]]),
}
BOUNDS = {"tanh": (-0.99, 0.99), "sigmoid": (0.01, 0.99), "elu": (-0.495, None), "upper": (None, 0.99), "none": None}


@pytest.mark.parametrize("edge", list(EDGES))
@pytest.mark.parametrize("bounds", list(BOUNDS))
def test_fused_equals_reference_on_edge_tensors(edge, bounds):
    y = EDGES[edge]()
    _both(y, _Layer(BOUNDS[bounds]))
    _both(y.abs(), _Layer(BOUNDS[bounds], nonnegative=True))
    _both(y, _Layer(counts_zeros=False))


def test_the_shift_is_the_first_element_or_zero_and_a_nan_is_not_counted():
    got = _both(torch.tensor([[math.inf, 1.0], [0.0, 2.0]]), _Layer(BOUNDS["tanh"]))
    assert got["s"].item() == 0.0 and got["sd"].item() == math.inf  # act_mean +Inf (issue 17)
    got = _both(torch.tensor([[3.0, math.nan], [0.0, 2.0]]) * torch.tensor([1.0, 0.25]), _Layer(BOUNDS["tanh"]))
    # torch.sign(NaN) is 0 on CPU: a NaN counts as neither nonzero nor saturated, on both paths
    assert got["s"].item() == 3.0 and got["nz"].item() == 2.0 and got["sat"].item() == 1.0


def test_channels_first_units_and_the_reference_fallbacks():
    gen = torch.Generator().manual_seed(2)
    y = torch.relu(torch.randn(4, 3, 5, 5, generator=gen))
    y[:, 1] = 0.0  # a dead channel
    got = _both(y, _Layer(nonnegative=True), channel_dim=1)
    assert got["unit"].tolist()[1] == 0.0 and got["unit"].shape == (3,)
    _both(y.transpose(2, 3), _Layer(), channel_dim=1)          # not contiguous: the reference path
    _both(y.half(), _Layer(BOUNDS["tanh"]), channel_dim=1)     # half precision: the reference path
    _both(torch.zeros(0, 3), _Layer(counts_zeros=False))       # empty: moments only (amax of nothing raises)


def test_the_fused_path_reuses_its_buffers_and_follows_a_grown_one():
    reader = fused.OutputReader("fused")
    small, big = torch.randn(4, 8), torch.randn(16, 8)
    first = reader._buffer(small, 0)[0]
    assert reader._buffer(small, 0)[0] is first
    reader._buffer(big, 0)  # the buffer grows: the kept view of the old one must not be handed out
    assert reader._buffer(small, 0)[0].data_ptr() == reader.scratch.get(small, 0).data_ptr()
    _same(reader.output(small, _Layer(BOUNDS["tanh"]), -1),
          fused.OutputReader("reference").output(small, _Layer(BOUNDS["tanh"]), -1), "grown")


def test_stats_path_is_checked():
    with pytest.raises(ConfigError, match="reference"):
        WatchConfig(stats="compiled")


def test_seeded_training_is_identical_with_the_fused_path_and_without_watch():
    def losses(watched: bool) -> list[float]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        out = []
        ctx = graddoctor.watch(model, opt, full_every=1) if watched else None
        if ctx is not None:
            ctx.__enter__()
        for _ in range(4):
            loss = model(torch.randn(8, 6)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            out.append(loss.item())
        if ctx is not None:
            ctx.__exit__(None, None, None)
        return out
    assert losses(True) == losses(False)


def test_the_fused_stats_benchmark_runs(capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import fused_stats

    assert fused_stats.main(["--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "tanh 256x512" in out and "12 ops" in out and "17 ops" in out  # the counts docs/overhead.md quotes
