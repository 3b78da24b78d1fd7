"""The packing and combining of ranks' partial statistics (integrations._dist_pack), without processes.

Oracle: the statistics of one process over the concatenated outputs (probes.derive on one record).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from graddoctor.config import Stat
from graddoctor.errors import ProbeError
from graddoctor.probes._dist_pack import Layout, agreed_units, combine, local_units, pack, sum_histograms
from graddoctor.probes import stats
from graddoctor.probes.derive import derive
from graddoctor.probes.record import GN, NZ, OG, SAT, SD, SS, UE, UNIT, USQ, WN, WSQ, S, aggregate
from graddoctor.probes.select import plan_layers


def _record(ys: list[torch.Tensor], grads: list[torch.Tensor]):
    """keys, host values and numel of a Tanh layer (index 0) that ran once per y."""
    keys, host, numel = [], [], {0: []}
    for y, g in zip(ys, grads):
        for code, value in zip((S, SD, SS), stats.moments(y)):
            keys.append((0, code))
            host.append(np.float64(value))
        nonzero, fired, saturated = stats.activation_counts(y, -1, saturation=(-0.99, 0.99))
        keys += [(0, NZ), (0, UNIT), (0, SAT), (0, OG)]
        host += [np.float64(nonzero), fired.double().numpy(), np.float64(saturated), np.float64(stats.sumsq(g))]
        numel[0].append(y.numel())
    return keys, host, numel


@pytest.mark.parametrize("offset", [0.0, 1e4])  # 1e4: a mean far above the spread (no cancellation)
def test_ranks_combined_equal_one_process_on_the_concatenated_outputs(offset):
    plan = plan_layers(nn.Sequential(nn.Tanh()))
    torch.manual_seed(0)
    y = torch.randn(12, 5, dtype=torch.float64) * 0.1 + offset
    y[:, 3] = 0.0                   # dead everywhere
    y[:6, 4] = 0.0                  # silent on rank 0 only: alive
    g = torch.randn(12, 5, dtype=torch.float64)
    parts = [(y[:6], g[:6] * 2), (y[6:9], g[6:9] * 2), (y[9:], g[9:] * 2)]  # rank 1 runs the layer twice
    layout = Layout(plan, {0: 5}, hist=False)
    ranks = [_record([parts[0][0]], [parts[0][1]]), _record([p[0] for p in parts[1:]], [p[1] for p in parts[1:]])]
    assert local_units(aggregate(*ranks[0][:2])) == {0: 5}
    gathered = np.stack([pack(layout, 3, k, h, n, {}, [False]) for k, h, n in ranks])
    c = combine(layout, gathered, fired0=[0])
    got = derive(plan, aggregate(c.keys, c.values), c.numel, c.nonfinite, None)
    # one process on the whole batch, its loss the mean of the two ranks' losses: dL/dy halves
    keys, host, numel = _record([y], [g])
    want = derive(plan, aggregate(keys, host), numel, {}, None)
    assert set(got) == set(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-9, atol=1e-12, err_msg=str(key[1]))
    assert got[(0, Stat.DEAD_FRAC)] == 1 / 5
    assert c.fired == [0]


def test_histograms_on_one_range_add_exactly():
    a = np.concatenate([[0.0, 1.0, 2.0], np.arange(64.0)])
    b = np.concatenate([[0.0, 1.0, 1.0], np.ones(64)])
    out = sum_histograms([a, b])
    np.testing.assert_allclose(out[:3], [0.0, 1.0, 3.0])
    np.testing.assert_allclose(out[3:], a[3:] + b[3:])


def test_histograms_on_different_ranges_keep_range_total_and_nonfinite():
    def hist(x):
        return stats.histogram(torch.tensor(x)).double().numpy()

    a, b, point = hist([0.0, 0.5, 1.0, float("nan")]), hist([2.0, 3.0, 2.5]), hist([7.0, 7.0])
    out = sum_histograms([a, b, point])
    assert (out[0], out[1], out[2]) == (0.0, 7.0, 1.0)
    assert out[3:].sum() == pytest.approx(8.0)
    assert out[-1] == pytest.approx(2.0)  # the point mass at the top lands in the last bin
    assert out[3:][np.arange(64) * 7 / 64 > 3.2].sum() == pytest.approx(2.0)  # nothing between 3 and 7 but 7


def test_replicated_parameters_count_once_and_shards_add_up():
    """DDP: only rank 0 sends a replicated layer's sums; FSDP2: every rank's shard sums are added."""
    plan = plan_layers(nn.Sequential(nn.Linear(3, 2)))
    keys = [(0, GN), (0, WSQ), (0, GN), (0, WSQ)]  # weight and bias
    host = [np.float64(3.0), np.float64(4.0), np.float64(0.0), np.float64(1.0)]
    layout = Layout(plan, {}, hist=False)
    for replicated, want_g, want_w in ((True, 9.0, 5.0), (False, 18.0, 10.0)):
        ranks = [pack(layout, 0, keys, host, {}, {0: 2.0}, [replicated and r != 0]) for r in range(2)]
        c = combine(layout, np.stack(ranks), fired0=[])
        values = aggregate(c.keys, c.values)
        assert values[(0, GN)] == want_g and values[(0, WN)] == want_w  # sums of squares
        assert c.nonfinite == {0: 2.0 if replicated else 4.0}


def test_update_and_its_estimate_travel_apart_and_shards_add_up():
    """update_ratio (USQ) and update_ratio_est (UE: each shard's estimated ||dw||^2) each reach
    rank 0 as their own sum; a layer with neither records neither."""
    plan = plan_layers(nn.Sequential(nn.Linear(3, 2)))
    layout = Layout(plan, {}, hist=False)
    for code in (USQ, UE):
        keys = [(0, GN), (0, WN), (0, code)]
        host = [np.float64(1.0), np.float64(2.0), np.float64(0.25)]
        for replicated, want in ((True, 0.25), (False, 0.5)):
            ranks = [pack(layout, 0, keys, host, {}, {}, [replicated and r != 0]) for r in range(2)]
            c = combine(layout, np.stack(ranks), fired0=[])
            other = UE if code == USQ else USQ
            assert (0, other) not in c.keys
            stats_ = derive(plan, aggregate(c.keys, c.values), {}, {}, None)
            stat = Stat.UPDATE_RATIO if code == USQ else Stat.UPDATE_RATIO_EST
            assert stats_[(0, stat)] == pytest.approx(np.sqrt(want) / np.sqrt(4.0 * (1 if replicated else 2)))
            assert (0, Stat.UPDATE_RATIO_EST if code == USQ else Stat.UPDATE_RATIO) not in stats_


def test_unit_counts_travel_in_the_header_and_every_rank_agrees_alike():
    """The layout is agreed from the gathered headers: no exchange of its own, the same decision everywhere."""
    plan = plan_layers(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2), nn.ReLU()))
    relu1, relu2 = (i for i, layer in enumerate(plan) if layer.type_name == "ReLU")

    def packed(layout, counts):  # one rank's vector: a ReLU layer measured `n` units (None: did not fire)
        keys, host = [], []
        for i, n in counts.items():
            if n is not None:
                keys.append((i, UNIT))
                host.append(np.ones(n))
        return pack(layout, 5, keys, host, {}, {}, [False] * len(plan))

    empty = Layout(plan, {}, hist=False)
    gathered = np.stack([packed(empty, {relu1: 4, relu2: 2}), packed(empty, {relu1: 4, relu2: None})])
    units = agreed_units(empty, gathered)
    assert units == {relu1: 4, relu2: 2}  # a layer silent on one rank is not a disagreement
    layout = Layout(plan, units, hist=False)
    gathered = np.stack([packed(layout, {relu1: 4, relu2: 2}), packed(layout, {relu1: 4, relu2: None})])
    assert agreed_units(layout, gathered) is None  # steady state: the first gather was the only one
    c = combine(layout, gathered, fired0=[])
    assert [k for k in c.keys if k[1] == UNIT] == [(relu1, UNIT), (relu2, UNIT)]
    changed = np.stack([packed(layout, {relu1: 6, relu2: 2}), packed(layout, {relu1: 6, relu2: 2})])
    assert agreed_units(layout, changed) == {relu1: 6, relu2: 2}
    differ = np.stack([packed(layout, {relu1: 4, relu2: 2}), packed(layout, {relu1: 6, relu2: 2})])
    with pytest.raises(ProbeError, match=r"rank 0: 4, rank 1: 6.*exclude=\['1'\]"):
        agreed_units(layout, differ)


def test_a_unit_that_is_nan_on_one_rank_and_zero_on_the_other_is_not_dead():
    """One process on the concatenated outputs sees max |y| = NaN for that unit, not 0: not dead."""
    plan = plan_layers(nn.Sequential(nn.Tanh()))
    y = torch.ones(4, 3, dtype=torch.float64)
    y[:2, 0] = 0.0
    y[2, 0] = float("nan")
    y[:, 2] = 0.0  # dead everywhere
    g = torch.ones(4, 3, dtype=torch.float64)
    layout = Layout(plan, {0: 3}, hist=False)
    ranks = [_record([y[:2]], [g[:2] * 2]), _record([y[2:]], [g[2:] * 2])]
    c = combine(layout, np.stack([pack(layout, 0, k, h, n, {}, [False]) for k, h, n in ranks]), fired0=[0])
    got = derive(plan, aggregate(c.keys, c.values), c.numel, c.nonfinite, None)
    keys, host, numel = _record([y], [g])
    want = derive(plan, aggregate(keys, host), numel, {}, None)
    assert got[(0, Stat.DEAD_FRAC)] == want[(0, Stat.DEAD_FRAC)] == 1 / 3
    # the same across two calls of the layer on one process
    keys, host, numel = _record([y[:2], y[2:]], [g[:2], g[2:]])
    assert derive(plan, aggregate(keys, host), numel, {}, None)[(0, Stat.DEAD_FRAC)] == 1 / 3
