"""tsanomaly.scaling: the shared NaN-ignoring median and the per-context robust scale."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from tsanomaly.scaling import (
    count_rows, lerp, linear_quantile_positions, nanmedian, nanquantile, robust_center_scale, robust_sigma,
)


def test_nanmedian_hand_worked_rows():
    x = np.array([
        [1.0, np.nan, 3.0, 10.0],     # odd count of finite values: the middle one
        [4.0, 1.0, np.nan, 2.0],      # 1 2 4: 2
        [1.0, 2.0, 3.0, 4.0],         # even count: the mean of the two middle values
        [np.nan, np.nan, np.nan, 7.0],
        [np.nan] * 4,                 # nothing finite: NaN
    ])
    np.testing.assert_array_equal(nanmedian(x), [3.0, 2.0, 2.5, 7.0, np.nan])


@pytest.mark.parametrize("shape", [(5, 7), (3, 4, 6), (100, 1), (2, 168), (2, 3, 5)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64])
def test_nanmedian_equals_numpys_on_every_axis(shape, dtype):
    rng = np.random.default_rng(sum(shape))
    x = (rng.normal(size=shape) * 10).astype(dtype)
    if dtype != np.int64:
        x[rng.random(shape) < 0.3] = np.nan
        x.flat[0], x.flat[-1] = np.inf, -np.inf
        x[0] = np.nan
    for axis in range(x.ndim):
        for keepdims in (False, True):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                expected = np.nanmedian(x, axis=axis, keepdims=keepdims)
            got = nanmedian(x, axis=axis, keepdims=keepdims)
            assert got.dtype == expected.dtype and got.shape == expected.shape
            np.testing.assert_array_equal(got, expected)


def test_nanmedian_of_empty_slices_and_all_nan_rows_warns_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(nanmedian(np.empty((3, 0))), [np.nan] * 3)
        np.testing.assert_array_equal(nanmedian(np.full((2, 4), np.nan)), [np.nan, np.nan])


@pytest.mark.parametrize("n", [1, 2, 3, 10, 997, 1000, 12345])
@pytest.mark.parametrize("q", [0.0, 0.001, 0.5, 0.98, 0.999, 0.9999, 1.0])
def test_quantile_from_order_statistics_is_numpys(n, q):
    # What the Spark driver does: two order statistics, interpolated.
    x = np.random.default_rng(n).standard_normal(n) * 10
    ordered = np.sort(x)
    lower, upper, gamma = linear_quantile_positions(n, q)
    assert isinstance(lower, int) and isinstance(gamma, float)
    assert lerp(ordered[lower], ordered[upper], gamma) == float(np.quantile(x, q))


def test_nanquantile_hand_worked_rows():
    x = np.array([
        [1.0, np.nan, 3.0, 10.0, 2.0],   # 1 2 3 10: position 0.75 x 3 = 2.25 -> 3 + 0.25 x 7
        [5.0, np.nan, np.nan, np.nan, np.nan],
        [np.nan] * 5,
    ])
    np.testing.assert_array_equal(nanquantile(x, 0.75), [4.75, 5.0, np.nan])


@pytest.mark.parametrize("q", [0.0, 0.001, 0.5, 0.98, 0.999, 1.0])
def test_nanquantile_equals_numpys(q):
    rng = np.random.default_rng(7)
    for trial in range(50):
        shape = (int(rng.integers(1, 6)), int(rng.integers(1, 60)))
        x = rng.standard_cauchy(shape) * rng.choice([1e-3, 1.0, 1e6])
        x[rng.random(shape) < rng.random()] = np.nan
        if trial % 5 == 0:
            x[rng.random(shape) < 0.1] = np.inf
        if trial % 7 == 0:
            x[rng.random(shape) < 0.1] = -np.inf
        for axis in (0, 1):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                expected = np.nanquantile(x, q, axis=axis)
            np.testing.assert_array_equal(nanquantile(x, q, axis=axis), expected)


def test_robust_center_scale_hand_worked():
    # Row 0: median 3, absolute deviations 1 1 0 1 1 -> 1.4826 x MAD 1 (the mean-deviation
    # floor is 1.2533 x 0.8). Row 1: deviations 2 1 0 1 97 -> MAD 1, but the floor
    # 1.2533 x 20.2 (the mean deviation sees the burst) is larger. Row 2: zeros -> 1.
    center, scale = robust_center_scale(np.array([
        [2.0, 4.0, 3.0, 2.0, 4.0], [1.0, 2.0, 3.0, 4.0, 100.0], [0.0, 0.0, 0.0, 0.0, np.nan],
    ]))
    np.testing.assert_array_equal(center, [3.0, 3.0, 0.0])
    np.testing.assert_allclose(scale, [1.4826, 1.2533 * 101 / 5, 1.0])


def test_robust_sigma_is_robust_center_scales_spread_rule():
    # Deviations 0 0 0 0 1 (one event in a flat row): MAD 0, floor 1.2533 x 0.2. Deviations
    # 1 1 0 1 1: MAD wins. An all-NaN slice gives NaN, a constant one 0; along any axis.
    dev = np.array([[0.0, 0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 0.0, 1.0, 1.0], [np.nan] * 5, [2.0, 2.0, 2.0, 2.0, np.nan]])
    np.testing.assert_allclose(robust_sigma(dev, axis=1), [1.2533 * 0.2, 1.4826, np.nan, 2 * 1.4826])
    np.testing.assert_allclose(robust_sigma(dev.T[:, :2], axis=0), [1.2533 * 0.2, 1.4826])
    np.testing.assert_allclose(robust_sigma(np.zeros((1, 3)), axis=1), [0.0])
    values = np.random.default_rng(0).poisson(0.3, (4, 50)).astype(float)
    center, scale = robust_center_scale(values)
    np.testing.assert_array_equal(scale, robust_sigma(np.abs(values - center[:, None]), axis=1))


@pytest.mark.gpu
def test_nanmedian_on_cupy_equals_numpy():
    import cupy

    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 24, 7))
    x[rng.random(x.shape) < 0.2] = np.nan
    np.testing.assert_array_equal(cupy.asnumpy(nanmedian(cupy.asarray(x), axis=1)), nanmedian(x, axis=1))


def test_constant_row_scale_is_robust_center_scales_rule_for_rows_without_spread():
    from tsanomaly.scaling import constant_row_scale

    rows = np.array([[0.0] * 4, [5.0] * 4, [-2e6] * 4, [np.nan] * 4, [np.nan, 3.0, 3.0, np.nan]])
    center, scale = robust_center_scale(rows)
    np.testing.assert_array_equal(constant_row_scale(center), scale)
    np.testing.assert_array_equal(scale, [1.0, 5e-3, 2e3, 1.0, 3e-3])
    np.testing.assert_array_equal(constant_row_scale(np.array([np.nan, 0.0])), [1.0, 1.0])


def test_count_rows_are_whole_numbers_at_least_zero_with_one_observed():
    x = np.array([
        [0.0, 1.0, np.nan, 30.0],  # counts, a missing bucket
        [0.0, 1.5, 2.0, 3.0],  # a fraction
        [0.0, -1.0, 2.0, 3.0],  # a negative value
        [np.nan] * 4,  # nothing observed
        [7.0] * 4,  # a constant count
    ])
    np.testing.assert_array_equal(count_rows(x), [True, False, False, False, True])
