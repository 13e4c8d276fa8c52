"""tsanomaly.scaling: the shared NaN-ignoring median and the per-context robust scale."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from tsanomaly.scaling import nanmedian, robust_center_scale


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


def test_robust_center_scale_hand_worked():
    # Row 0: median 3, absolute deviations 1 1 0 1 1 -> 1.4826 x MAD 1 (the mean-deviation
    # floor is 1.2533 x 0.8). Row 1: deviations 2 1 0 1 97 -> MAD 1, but the floor
    # 1.2533 x 20.2 (the mean deviation sees the burst) is larger. Row 2: zeros -> 1.
    center, scale = robust_center_scale(np.array([
        [2.0, 4.0, 3.0, 2.0, 4.0], [1.0, 2.0, 3.0, 4.0, 100.0], [0.0, 0.0, 0.0, 0.0, np.nan],
    ]))
    np.testing.assert_array_equal(center, [3.0, 3.0, 0.0])
    np.testing.assert_allclose(scale, [1.4826, 1.2533 * 101 / 5, 1.0])


@pytest.mark.gpu
def test_nanmedian_on_cupy_equals_numpy():
    import cupy

    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 24, 7))
    x[rng.random(x.shape) < 0.2] = np.nan
    np.testing.assert_array_equal(cupy.asnumpy(nanmedian(cupy.asarray(x), axis=1)), nanmedian(x, axis=1))
