"""Matrix profile against STUMPY (``stumpy.stump``), the reference CPU implementation.

A separate file because STUMPY compiles its Numba functions afresh in every process
(about 30 s on two cores); ``tests/test_matrix_profile.py`` holds the brute-force checks.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from naive_mp import walk_with_gaps
from tsanomaly.detectors.matrix_profile import SINGLE_PRECISION_RHO_BOUND, matrix_profile


def assert_close_to_stumpy(ours, theirs, m):
    """Equal to 1e-8, except near 0: STUMPY reports sqrt(2 m (1 - rho)), which cannot resolve
    distances below about sqrt(2 m eps) (1.6e-6 where ours, from the windows' differences,
    is 3e-14 and the brute force agrees); there both must be below that floor."""
    floor = math.sqrt(2 * m * 1e-13)
    tiny = theirs < floor
    np.testing.assert_allclose(ours[~tiny], theirs[~tiny], rtol=0, atol=1e-8)
    assert np.all(ours[tiny] < floor)


def test_self_join_matches_stumpy():
    stumpy = pytest.importorskip("stumpy")
    rng = np.random.default_rng(18)
    x = walk_with_gaps(rng, 3000)
    m = 50
    ours = matrix_profile(x, m, device="cpu")
    theirs = stumpy.stump(x, m)
    p = theirs[:, 0].astype(float)
    np.testing.assert_array_equal(np.isinf(ours.profile), np.isinf(p))
    finite = np.isfinite(p)
    assert_close_to_stumpy(ours.profile[finite], p[finite], m)
    # Indices agree wherever the neighbour is unique (constant windows tie at 0; STUMPY
    # breaks those ties its own way).
    unique = finite & (p > 1e-6)
    np.testing.assert_array_equal(ours.index[unique], theirs[unique, 1].astype(np.int64))
    left_ok = unique & np.isfinite(ours.left_profile) & (ours.left_profile > 1e-6)
    np.testing.assert_array_equal(ours.left_index[left_ok], theirs[left_ok, 2].astype(np.int64))
    single = matrix_profile(x, m, device="cpu", precision="single")
    assert np.all(np.abs(single.profile[finite] ** 2 - p[finite] ** 2) <= 2 * m * SINGLE_PRECISION_RHO_BOUND)


def test_ab_join_matches_stumpy():
    stumpy = pytest.importorskip("stumpy")
    rng = np.random.default_rng(19)
    a, b = walk_with_gaps(rng, 1200), walk_with_gaps(rng, 700)
    ours = matrix_profile(a, 30, T_B=b, device="cpu")
    theirs = stumpy.stump(a, 30, b, ignore_trivial=False)
    p = theirs[:, 0].astype(float)
    finite = np.isfinite(p)
    np.testing.assert_array_equal(np.isfinite(ours.profile), finite)
    assert_close_to_stumpy(ours.profile[finite], p[finite], 30)
    unique = finite & (p > 1e-6)
    np.testing.assert_array_equal(ours.index[unique], theirs[unique, 1].astype(np.int64))


def test_plain_self_join_matches_stumpy_aamp():
    """normalize=False against STUMPY's non-normalised matrix profile (``stumpy.aamp``)."""
    stumpy = pytest.importorskip("stumpy")
    rng = np.random.default_rng(20)
    x = walk_with_gaps(rng, 3000, level=100.0)
    m = 50
    ours = matrix_profile(x, m, device="cpu", normalize=False)
    theirs = stumpy.aamp(x, m)
    p = theirs[:, 0].astype(float)
    np.testing.assert_array_equal(np.isinf(ours.profile), np.isinf(p))
    finite = np.isfinite(p)
    # STUMPY computes sqrt(max(0, |a|^2 + |b|^2 - 2 a.b)) at the level of 100: near-equal windows
    # cancel to ~1e-5 there, where ours (from the windows' differences) is exact.
    floor = 1e-4
    far = finite & (p > floor)
    np.testing.assert_allclose(ours.profile[far], p[far], rtol=1e-8, atol=1e-7)
    assert np.all(ours.profile[finite & ~far] < 2 * floor)
    np.testing.assert_array_equal(ours.index[far], theirs[far, 1].astype(np.int64))
