"""The pure reductions of probes/stats.py against obvious numpy computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from graddoctor.probes import stats


def test_moments_match_numpy_for_contiguous_strided_and_half():
    x = torch.randn(33, 17, dtype=torch.float64)
    for t in (x, x.t(), x.float()[:, ::2], x.half()):
        shift, shifted, squares = stats.moments(t)
        ref = t.double().numpy().reshape(-1)
        d = ref - ref[0]
        assert shift.item() == ref[0]
        assert shifted.item() == pytest.approx(d.sum(), rel=1e-3, abs=1e-3)
        assert squares.item() == pytest.approx((d**2).sum(), rel=1e-3)


def test_moments_keep_the_variance_of_a_large_mean_output():
    from graddoctor.probes.derive import moments

    y = (50 + 0.03 * torch.randn(64, 16)).float()
    calls = [y[:40], y[40:]]
    parts = [stats.moments(c) for c in calls]
    mean, var = moments([c.numel() for c in calls], *([p[k].item() for p in parts] for k in range(3)))
    ref = y.double().numpy()
    assert mean == pytest.approx(ref.mean(), rel=1e-6)
    assert var ** 0.5 == pytest.approx(ref.std(), rel=1e-4)
    const = torch.full((8, 4), 0.3)
    assert moments([32], *([v.item()] for v in stats.moments(const)))[1] == 0.0


def test_zero_counts_are_exact_zeros_only():
    x = torch.tensor([[0.0, -0.0, 1e-30], [-2.0, 0.0, 3.0]])
    assert stats.activation_counts(x, -1)[0].item() == 3
    assert stats.activation_counts(torch.relu(x), -1, nonnegative=True)[0].item() == 2


def test_outside_count_two_sided_one_sided_and_centred():
    y = torch.tensor([-1.0, -0.995, -0.5, 0.0, 0.98, 0.991, 1.0])
    assert stats.outside_count(y, -0.99, 0.99).item() == 4
    s = torch.tensor([0.001, 0.009, 0.5, 0.99, 0.995])
    assert stats.outside_count(s, 0.01, 0.99).item() == 3  # 0.99 itself is not saturated
    assert stats.outside_count(y, -0.99, None).item() == 2
    assert stats.outside_count(y, None, 0.99).item() == 2
    assert stats.outside_count(y, None, None).item() == 0


def test_activation_counts_over_features_and_channels():
    x = torch.randn(4, 3, 5, 6)
    x[:, 1] = 0.0
    x[0, 0, 0, 0] = 0.0
    nonzero, fired, saturated = stats.activation_counts(x, 1, saturation=(-0.5, 0.5))
    assert nonzero.item() == x.numel() - 4 * 30 - 1
    assert fired.shape == (3,) and fired[1].item() == 0 and (fired[[0, 2]] > 0).all()
    assert saturated.item() == (x.abs() > 0.5).sum().item()
    feats = torch.relu(torch.randn(8, 5))
    feats[:, 2] = 0
    nonzero, fired, saturated = stats.activation_counts(feats, -1, nonnegative=True)
    assert fired.shape == (5,) and fired[2].item() == 0 and saturated is None
    assert nonzero.item() == (feats != 0).sum().item()
    sig = torch.sigmoid(4 * torch.randn(100, 3))
    _, _, saturated = stats.activation_counts(sig, -1, nonnegative=True, saturation=(0.01, 0.99))
    assert saturated.item() == ((sig < 0.01) | (sig > 0.99)).sum().item()
    assert stats.activation_counts(torch.randn(5), -1)[1] is None


def test_norms_group_dtypes_and_handle_sparse():
    ts = [torch.randn(3, 4), torch.randn(5, dtype=torch.float64), torch.randn(7).half(), torch.randn(2, 2).to_sparse()]
    got = [n.item() for n in stats.norms(ts)]
    ref = [np.linalg.norm(t.to_dense().double().numpy()) for t in ts]
    np.testing.assert_allclose(got, ref, rtol=1e-3)


def test_nonfinite_count():
    a = torch.tensor([1.0, float("nan"), float("inf")])
    b = torch.tensor([-float("inf"), 2.0])
    assert stats.nonfinite_count([a, b]).item() == 3
    assert stats.nonfinite_count([]) is None


def test_histogram_bins_its_own_range_and_counts_nonfinite_apart():
    x = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, float("nan"), float("inf")])
    h = stats.histogram(x, bins=4).numpy()
    lo, hi, nonfinite, counts = h[0], h[1], h[2], h[3:]
    assert (lo, hi, nonfinite) == (0.0, 4.0, 2.0)
    np.testing.assert_array_equal(counts, [1, 1, 1, 2])  # the max falls in the last bin
    ref, _ = np.histogram(np.random.default_rng(0).normal(size=1000), bins=64)
    data = torch.tensor(np.random.default_rng(0).normal(size=1000))
    np.testing.assert_array_equal(stats.histogram(data).numpy()[3:], ref)


def test_histogram_of_constant_tensor_puts_everything_in_first_bin():
    h = stats.histogram(torch.full((10,), 2.5)).numpy()
    assert h[0] == h[1] == 2.5 and h[3] == 10 and h[4:].sum() == 0


def test_snapshot_and_update_sums_of_squares():
    params = [torch.randn(5, 3), torch.randn(7), torch.randn(4, 4).t()]  # one non-contiguous
    snap = [torch.empty_like(p) for p in params]
    before = [p.clone() for p in params]
    got = [v.item() for v in stats.snapshot_sumsq(snap, params)]
    np.testing.assert_allclose(got, [(p.double() ** 2).sum().item() for p in params], rtol=1e-6)
    with torch.no_grad():
        for p in params:
            p.add_(0.01 * torch.randn_like(p))
    scratch = stats.Scratch()
    got = [v.item() for v in stats.update_sumsq(snap, params, scratch)]
    want = [((b.double() - p.double()) ** 2).sum().item() for b, p in zip(before, params)]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # the snapshot now holds w_before - w_after (it is released after the step: no buffer outlives it)
    assert all(torch.equal(s, b - p) for s, b, p in zip(snap[:2], before[:2], params[:2]))  # contiguous ones


def test_flat_snapshot_is_one_allocation_of_the_parameters_shape():
    params = [torch.randn(5, 3), torch.randn(7), torch.randn(2, dtype=torch.float64)]
    snap = stats.flat_snapshot(params)
    assert [s.numel() for s in snap] == [15, 7, 2] and [s.dtype for s in snap] == [p.dtype for p in params]
    assert snap[0].untyped_storage().data_ptr() == snap[1].untyped_storage().data_ptr()  # one buffer per dtype
    got = [v.item() for v in stats.snapshot_sumsq(snap, params)]
    np.testing.assert_allclose(got, [(p.double() ** 2).sum().item() for p in params], rtol=1e-6)
    assert all(torch.equal(s.view(p.shape), p) for s, p in zip(snap, params))


def test_scratch_reuses_and_grows_buffers():
    scratch = stats.Scratch()
    small = scratch.get(torch.empty(10), 0)
    assert scratch.get(torch.empty(10), 0).data_ptr() == small.data_ptr()
    big = scratch.get(torch.empty(100), 0)
    assert big.numel() == 100 and scratch.get(torch.empty(10), 0).data_ptr() == big.data_ptr()
    assert scratch.get(torch.empty(10), 1).data_ptr() != big.data_ptr()
