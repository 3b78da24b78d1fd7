"""The table of partial codes (probes/partials.py) is what aggregate, the rank packing and the statistics obey."""

from __future__ import annotations

import math

import numpy as np
import pytest
from torch import nn

from graddoctor.config import Stat
from graddoctor.probes import partials
from graddoctor.probes._dist_pack import Layout, combine, pack
from graddoctor.probes.derive import derive
from graddoctor.probes.partials import PARTIALS, REDUCED, SQUARES_OF, STATISTICS, Combine, Ranks
from graddoctor.probes.record import aggregate
from graddoctor.probes.select import plan_layers

# one layer's two partial values of a code, and what `aggregate` makes of them, per rule
RULES = [
    (Combine.SUM, "nz", [2.0, 3.0], 5.0),
    (Combine.NORM_SQUARES, "gn", [3.0, 4.0], 25.0),
    (Combine.MAX, "lmax", [2.0, math.nan], math.nan),
    (Combine.MAX, "amax", [2.0, 5.0], 5.0),
    (Combine.PER_CALL, "ss", [2.0, 3.0], [2.0, 3.0]),
    (Combine.FIRST, "hist_act", [np.array([1.0, 2.0]), np.array([7.0, 8.0])], np.array([1.0, 2.0])),
    (Combine.UNIT_MAX, "unit", [np.array([0.0, 2.0]), np.array([1.0, 0.0])], np.array([1.0, 2.0])),
    (Combine.UNIT_MAX, "unit", [np.array([0.0, 2.0]), np.array([1.0, 0.0, 3.0])], np.array([0.0, 2.0])),
]


@pytest.mark.parametrize("rule, code, values, want", RULES, ids=[f"{r[0].value}-{r[1]}" for r in RULES])
def test_aggregate_combines_each_code_by_its_declared_rule(rule, code, values, want):
    assert PARTIALS[code].combine is rule
    got = aggregate([(0, code)] * len(values), [np.float64(v) if np.isscalar(v) else v for v in values])
    np.testing.assert_array_equal(np.asarray(got[(0, code)], dtype=float), np.asarray(want, dtype=float))


def test_squares_add_into_their_norm_codes_sum_of_squares():
    got = aggregate([(1, "wn"), (1, "wsq"), (1, "wsq")], [np.float64(3.0), np.float64(16.0), np.float64(1.0)])
    assert got == {(1, "wn"): 26.0}
    assert SQUARES_OF == {"gn": "gsq", "wn": "wsq", "un": "usq"}


def test_every_code_is_declared_once_with_a_meaning():
    codes = [v for k, v in vars(partials).items() if k.isupper() and isinstance(v, str)]
    assert sorted(codes) == sorted(PARTIALS)
    assert all(p.meaning and (p.into is not None) == (p.combine is Combine.SQUARES_INTO) for p in PARTIALS.values())


def test_the_ranks_exchange_exactly_the_codes_not_declared_local():
    plan = plan_layers(nn.Sequential(nn.Linear(3, 4), nn.Tanh()))
    keys = [(0, "gn"), (0, "gn"), (0, "wsq"), (0, "wsq"), (0, "usq"), (0, "usq"), (0, "s"), (0, "sd"), (0, "ss"),
            (0, "og"), (0, "ogs"), (0, "gpre"), (0, "lse"), (0, "lrows"), (0, "lmax"), (0, "hist_act"), (0, "hist_grad"),
            (1, "s"), (1, "sd"), (1, "ss"), (1, "nz"), (1, "sat"), (1, "unit"), (1, "og"), (1, "hist_act")]
    hist = np.concatenate([[0.0, 1.0, 0.0], np.ones(64)])
    host = [np.float64(v) for v in (1, 2, 3, 4, 5, 6, 0.5, 0.1, 0.2, 1.0, 1.0, 2.0, 3.0, 2.0, 9.0)] + [hist, hist]
    host += [np.float64(v) for v in (0.1, 0.0, 0.3, 5.0, 1.0)] + [np.array([0.0, 1.0, 2.0, 0.5]), np.float64(2.0), hist]
    keys, host = keys + [(0, "ue")], host + [np.float64(0.7)]  # update_ratio_est's sampled sum of squares
    layout = Layout(plan, {1: 4}, hist=True)
    gathered = np.stack([pack(layout, 0, keys, host, {0: [4], 1: [4]}, {}, [False, False])] * 2)
    exchanged = {code for _, code in combine(layout, gathered, fired0=[0, 1]).keys}
    declared = {SQUARES_OF.get(code, code) for code in REDUCED}
    assert exchanged == declared
    assert {c for c, p in PARTIALS.items() if p.ranks is Ranks.LOCAL} == {"ogs", "gpre", "lse", "lrows", "lmax", "amax",
                                                                         "aent", "arows"}


def test_each_derived_statistic_is_declared_with_the_codes_it_reads():
    plan = plan_layers(nn.Sequential(nn.Linear(3, 4), nn.Tanh()))
    keys = [(0, "gn"), (0, "wn"), (0, "un"), (0, "gpre"), (0, "og"), (0, "ogs"), (0, "s"), (0, "sd"), (0, "ss"),
            (1, "s"), (1, "sd"), (1, "ss"), (1, "nz"), (1, "sat"), (1, "unit"), (1, "lse"), (1, "lrows"), (1, "lmax"),
            (1, "amax"), (1, "aent"), (1, "arows")]
    host = [np.float64(v) for v in (1, 2, 0.1, 1.5, 1, 1, 0.5, 0.1, 0.2, 0.1, 0.0, 0.3, 3, 1, 0, 8, 4, 3, 2)]
    host[14:15] = [np.array([0.0, 1.0, 2.0, 0.5])]
    host += [np.array([1.0, 2.0]), np.array([2.0, 2.0])]
    keys, host = keys + [(0, "ue")], host + [np.float64(0.01)]  # update_ratio_est's sampled sum of squares
    derived = {stat for _, stat in derive(plan, aggregate(keys, host), {0: [4], 1: [4]}, {}, None)}
    assert derived == set(STATISTICS)  # every statistic derive makes (no overflow here) has its declaration
    assert set(STATISTICS) == set(Stat) - {Stat.NORM_OVERFLOW}
    for s in STATISTICS.values():
        assert s.formula and set(s.codes) <= set(PARTIALS), s.stat
