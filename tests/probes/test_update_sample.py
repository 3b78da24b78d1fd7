"""update_ratio_est: the sampled estimate of ||w_after - w_before|| against an oracle that keeps a full
copy, its memory bound, and the update_ratio option ("sample", the default, "exact", False)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import graddoctor
from graddoctor.config import WatchConfig, update_stat
from graddoctor.errors import ArgumentTypeError, ConfigError
from graddoctor.probes import stats


def _estimate(before: torch.Tensor, after: torch.Tensor) -> tuple[float, int]:
    """(estimated ||after - before||^2 through the sample functions, sample size)."""
    plan = stats.sample_plan([before.shape])
    p = before.clone()
    sample = stats.sample_snapshot([p], plan)
    p.copy_(after)
    est = stats.sample_update_sumsq(sample, [p], plan, stats.sample_scales([p.shape], plan))
    return float(est[0]), sample[0].numel()


def _exact(before: torch.Tensor, after: torch.Tensor) -> float:  # the oracle: a full copy, in float64
    return float(((after.double() - before.double()) ** 2).sum())


@pytest.mark.parametrize("shape", [(300, 200), (128, 64, 3, 3), (50, 4096), (100_000,)])
def test_estimate_of_an_iid_update_is_within_the_sampling_error(shape):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(shape, generator=g)
    dw = 1e-3 * torch.randn(shape, generator=g)
    est, m = _estimate(w, w + dw)
    # ||dw||^2 of m Gaussian elements scaled by n/m: relative std sqrt(2/m); 5 sigma
    assert abs(est / _exact(w, w + dw) - 1) < 5 * math.sqrt(2 / m)
    assert m <= max(math.prod(shape) / 60, stats.SAMPLE_FLOOR + 1)


def test_small_parameters_are_sampled_whole_so_exactly():
    g = torch.Generator().manual_seed(1)
    for shape in [(64,), (64, 64), (16, 3, 3, 3)]:
        w = torch.randn(shape, generator=g)
        after = w + torch.randn(shape, generator=g) ** 3  # heavy-tailed: no sample would get this exactly
        est, m = _estimate(w, after)
        assert m == w.numel()
        assert est == pytest.approx(_exact(w, after), rel=1e-5)


@pytest.mark.parametrize("width", [67, 71, 134])
def test_a_stride_that_divides_a_dimension_is_never_used(width):
    """An update in one column only (a Linear input feature that alone is nonzero): a stride that
    divides the row length would sample that column always or never (0 or ~67x the truth)."""
    shape = (1000, width)
    (off, stride), = stats.sample_plan([torch.Size(shape)])
    assert all(d % stride for d in shape)
    w = torch.zeros(shape)
    after = w.clone()
    after[:, 0] = 1.0
    est, m = _estimate(w, after)
    hits = m / width  # the sampled positions cycle through the columns: each gets m/width +- 1
    assert abs(est / _exact(w, after) - 1) <= 1.5 / hits


def test_the_estimate_is_unbiased_over_offsets():
    """Averaged over every offset, the strided sample covers each element once: exact."""
    g = torch.Generator().manual_seed(2)
    w, dw = torch.randn(300, 200, generator=g), torch.randn(300, 200, generator=g) ** 3
    (_, stride), = stats.sample_plan([w.shape])
    flat = dw.reshape(-1).double() ** 2
    estimates = [flat[off::stride].sum() * w.numel() / len(range(off, w.numel(), stride)) for off in range(stride)]
    assert float(sum(estimates) / stride) == pytest.approx(float(flat.sum()), rel=0.05)


def _train(update_ratio, steps: int = 3, width: int = 300, held: list | None = None):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 5))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.randn(64, 40), torch.randint(0, 5, (64,))
    exact = []
    with graddoctor.watch(model, opt, store=":memory:", update_ratio=update_ratio, full_every=1) as run:
        if held is not None:  # registered after watch's pre-hook: sees what it holds across the step
            opt.register_step_pre_hook(lambda *a: held.append(sum(t.numel() * t.element_size()
                                                                  for t in run._param_side.held())))
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            before = [p.detach().clone() for p in model[2].parameters()]
            opt.step()
            dw = math.sqrt(sum(_exact(b, p.detach()) for b, p in zip(before, model[2].parameters())))
            exact.append(dw / math.sqrt(sum(float((b.double() ** 2).sum()) for b in before)))
    return run.view(), exact, sum(p.numel() * p.element_size() for p in model.parameters())


def test_default_records_the_estimate_close_to_the_oracle_and_holds_under_2_percent():
    held: list[int] = []
    view, exact, param_bytes = _train(WatchConfig().update_ratio, held=held)
    assert "update_ratio_est" in view.stats and "update_ratio" not in view.stats
    assert update_stat(view.stats) == "update_ratio_est"
    est = view.stat("update_ratio_est", "2")
    m = 300 * 300 // 23  # the 300x300 weight's sample (stride 23: about n / 4096)
    np.testing.assert_allclose(est, exact, rtol=5 * math.sqrt(2 / m) / 2)  # the ratio's error: half the square's
    assert max(held) <= 0.02 * param_bytes + 4 * stats.SAMPLE_FLOOR * len(list(view.layers))


def test_exact_mode_keeps_a_full_copy_and_matches_the_oracle():
    held: list[int] = []
    view, exact, param_bytes = _train("exact", held=held)
    assert "update_ratio" in view.stats and "update_ratio_est" not in view.stats
    np.testing.assert_allclose(view.stat("update_ratio", "2"), exact, rtol=1e-4)  # float32 w_after - w_before
    assert max(held) == param_bytes  # one full copy, during the step


def test_update_ratio_option():
    assert WatchConfig().update_ratio == "sample"
    assert WatchConfig(update_ratio=True).update_ratio == "sample"  # True: the default, the estimate
    assert WatchConfig(update_ratio=False).update_ratio is False
    assert WatchConfig(update_ratio="exact").update_ratio == "exact"
    with pytest.raises(ConfigError, match="'full'.*\"sample\".*\"exact\".*False"):
        WatchConfig(update_ratio="full")
    with pytest.raises(ArgumentTypeError):
        WatchConfig(update_ratio=1)
    view, _, _ = _train(False, steps=1)
    assert not {"update_ratio", "update_ratio_est"} & set(view.stats)
