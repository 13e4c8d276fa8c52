"""Matrix profile: CPU (Numba) and GPU (CuPy) kernels and the detector against a brute-force reference.

Also: tests/test_mp_stumpy.py (against STUMPY, whose JIT compile alone takes ~30 s) and
tests/test_mp_cuda.py (the CUDA tile arithmetic without a GPU, through a host harness built
with nvcc). GPU tests carry the ``gpu`` marker and are skipped where no device is visible
(conftest.py).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from count_panels import busy_and_sparse_counts
from naive_mp import distance_matrix, naive_matrix_profile, walk_with_gaps
from tsanomaly import Panel
from tsanomaly.detectors.matrix_profile import (
    SINGLE_PRECISION_RHO_BOUND,
    MatrixProfileDetector,
    matrix_profile,
)
from tsanomaly.kernels import mp_cpu, mp_gpu

FIELDS = ("profile", "index", "left_profile", "left_index", "right_profile", "right_index")


def assert_profile_equal(result, reference, D=None, exclusion=None, atol=1e-8):
    """Distances to atol (inf exactly where the reference has inf) and the same indices.

    With the distance matrix D, an index may differ from the reference's where the two
    neighbours are tied to atol (say two windows of 15 equal values and one step, which
    z-normalise to the same shape): it must then be a legal neighbour at the same distance.
    """
    for name in FIELDS:
        got = np.asarray(getattr(result, name) if not isinstance(result, dict) else result[name])
        want = reference[name]
        if name.endswith("index"):
            differ = np.flatnonzero(got != want)
            if len(differ) and D is not None:
                side = name.split("_")[0]
                profile = reference[name.replace("index", "profile")]
                nb = got[differ]
                legal = (nb >= 0) & (np.abs(nb - differ) > (-1 if exclusion is None else exclusion))
                legal &= (nb < differ) if side == "left" else (nb > differ) if side == "right" else True
                assert legal.all(), f"{name}: illegal neighbours at {differ[~legal]}"
                np.testing.assert_allclose(D[differ, nb], profile[differ], rtol=0, atol=atol, err_msg=name)
            else:
                np.testing.assert_array_equal(got, want, err_msg=name)
        else:
            np.testing.assert_array_equal(np.isinf(got), np.isinf(want), err_msg=f"{name}: where inf")
            finite = np.isfinite(want)
            np.testing.assert_allclose(got[finite], want[finite], rtol=0, atol=atol, err_msg=name)


def assert_neighbours(dist, index, ref_dist, ref_index, D_side, atol=1e-8):
    """One side (left, right or AB) of a profile: distances to atol, indices equal or tied."""
    np.testing.assert_array_equal(np.isinf(dist), np.isinf(ref_dist))
    finite = np.isfinite(ref_dist)
    np.testing.assert_allclose(dist[finite], ref_dist[finite], rtol=0, atol=atol)
    differ = np.flatnonzero(index != ref_index)
    assert np.all(index[differ] >= 0)
    np.testing.assert_allclose(D_side[differ, index[differ]], ref_dist[differ], rtol=0, atol=atol)


def assert_within_single_bound(profile, index, reference, D, m):
    """Single precision: squared distances within 2 m eps of float64, and each reported
    neighbour is within the same bound of the true nearest one."""
    bound = 2 * m * SINGLE_PRECISION_RHO_BOUND
    finite = np.isfinite(reference)
    np.testing.assert_array_equal(np.isfinite(profile), finite)
    assert np.all(np.abs(profile[finite] ** 2 - reference[finite] ** 2) <= bound)
    rows = np.flatnonzero(finite)
    chosen = D[rows, index[rows]]
    assert np.all(chosen**2 - reference[rows] ** 2 <= bound)


# ---------------------------------------------------------------------------- CPU vs brute force
@pytest.mark.parametrize("level", [0.0, 1e4])
def test_self_join_matches_brute_force_across_restart_tiles(level):
    """Default tiles; 2,600 points cross a restart of the recurrence (every 2,048 rows)."""
    rng = np.random.default_rng(11)
    x = walk_with_gaps(rng, 2600, level)
    got = matrix_profile(x, 16, device="cpu")
    assert_profile_equal(got, naive_matrix_profile(x, 16), distance_matrix(x, 16), got.exclusion)


def test_single_precision_is_within_the_documented_bound():
    rng = np.random.default_rng(12)
    x = walk_with_gaps(rng, 2600, level=1e3)
    m = 16
    ref = naive_matrix_profile(x, m)
    D = distance_matrix(x, m)
    i, j = np.indices(D.shape)
    D[np.abs(i - j) <= math.ceil(m / 4)] = np.inf
    got = matrix_profile(x, m, device="cpu", precision="single")
    assert_within_single_bound(got.profile, got.index, ref["profile"], D, m)
    assert_within_single_bound(got.left_profile, got.left_index, ref["left_profile"], np.where(j < i, D, np.inf), m)
    # Edge cases are exact in float32 too: NaN windows, constant windows.
    np.testing.assert_array_equal(got.index == -1, ref["index"] == -1)
    constant_pairs = ref["profile"] == 0
    np.testing.assert_array_equal(got.profile[constant_pairs], 0.0)


@pytest.mark.parametrize("precision", ["double", "single"])
@pytest.mark.parametrize("tiles", [(7, 5), (16, 32)])
def test_small_tiles_and_blocks_match_brute_force(precision, tiles):
    """Tiny tiles make 300 points span dozens of restart tiles and diagonal blocks."""
    rng = np.random.default_rng(13)
    x = walk_with_gaps(rng, 300)
    m, excl = 12, 3
    ref = naive_matrix_profile(x, m, exclusion=excl)
    rd, ri, ld, li = mp_cpu.join(x[None], None, m, excl, precision, tile_rows=tiles[0], tile_diags=tiles[1])
    D = distance_matrix(x, m)
    if precision == "double":
        got = {"profile": ref["profile"], "index": ref["index"], "right_profile": rd[0], "right_index": ri[0],
               "left_profile": ld[0], "left_index": li[0]}
        assert_profile_equal(got, ref, D, excl)
    else:
        i, j = np.indices(D.shape)
        assert_within_single_bound(rd[0], ri[0], ref["right_profile"], np.where(j - i > excl, D, np.inf), m)
        assert_within_single_bound(ld[0], li[0], ref["left_profile"], np.where(i - j > excl, D, np.inf), m)


@pytest.mark.parametrize("exclusion", [0, 1, 30])
def test_exclusion_zone(exclusion):
    rng = np.random.default_rng(14)
    x = walk_with_gaps(rng, 400)
    got = matrix_profile(x, 10, exclusion=exclusion, device="cpu")
    assert got.exclusion == exclusion
    assert_profile_equal(got, naive_matrix_profile(x, 10, exclusion=exclusion), distance_matrix(x, 10), exclusion)
    valid = got.index >= 0
    assert np.all(np.abs(got.index[valid] - np.flatnonzero(valid)) > exclusion)


@pytest.mark.parametrize("n_b", [150, 900])
def test_ab_join_matches_brute_force(n_b):
    rng = np.random.default_rng(15)
    a = walk_with_gaps(rng, 500)
    b = walk_with_gaps(rng, n_b)
    got = matrix_profile(a, 20, T_B=b, device="cpu")
    ref = naive_matrix_profile(a, 20, T_B=b)
    assert_profile_equal(got, ref, distance_matrix(a, 20, b))
    assert np.all(np.isinf(got.left_profile)) and np.all(got.left_index == -1)  # self-joins only


def test_ab_join_small_tiles_both_precisions():
    rng = np.random.default_rng(16)
    a, b = walk_with_gaps(rng, 260), walk_with_gaps(rng, 180)
    m = 12
    ref = naive_matrix_profile(a, m, T_B=b)
    rd, ri, ld, li = mp_cpu.join(a[None], b[None], m, 0, "double", tile_rows=9, tile_diags=7)
    assert ld is None and li is None
    assert_profile_equal({**ref, "profile": rd[0], "index": ri[0]}, ref, distance_matrix(a, m, b))
    rd, ri, _, _ = mp_cpu.join(a[None], b[None], m, 0, "single", tile_rows=9, tile_diags=7)
    assert_within_single_bound(rd[0], ri[0], ref["profile"], distance_matrix(a, m, b), m)


def test_left_profile_from_a_column_onwards_and_bounded_lag():
    """The detector's restricted join: only windows j >= col_start, neighbours within max_lag."""
    rng = np.random.default_rng(17)
    x = walk_with_gaps(rng, 500)
    m, excl, col_start, max_lag = 16, 4, 300, 120
    D = distance_matrix(x, m)
    i, j = np.indices(D.shape)
    allowed = (j - i > excl) & (j - i <= max_lag)  # i: earlier window, j: the profiled one
    expected = np.where(allowed, D, np.inf).min(axis=0)
    expected_idx = np.where(np.isfinite(expected), np.where(allowed, D, np.inf).argmin(axis=0), -1)
    for tiles in ({}, {"tile_rows": 11, "tile_diags": 13}):
        _, _, ld, li = mp_cpu.join(x[None], None, m, excl, "double", col_start, max_lag, **tiles)
        assert np.all(np.isinf(ld[0, :col_start]))
        finite = np.isfinite(expected[col_start:])
        np.testing.assert_array_equal(np.isfinite(ld[0, col_start:]), finite)
        np.testing.assert_allclose(ld[0, col_start:][finite], expected[col_start:][finite], atol=1e-8, rtol=0)
        np.testing.assert_array_equal(li[0, col_start:], expected_idx[col_start:])


@pytest.mark.parametrize("precision", ["double", "single"])
@pytest.mark.parametrize("normalize", [True, False])
def test_entry_restarts_of_a_block_equal_a_restart_on_each_entry_row(precision, normalize):
    """The walk takes each diagonal's first cell from one vectorised pass over the block; it must
    be the exact restart of that cell on its own row, bit for bit (self-join from a column on,
    as in scoring, and an AB-join, whose diagonals enter at row 0 or column 0)."""
    rng = np.random.default_rng(19)
    x = walk_with_gaps(rng, 300)
    m = 12
    dtype = np.float64 if precision == "double" else np.float32
    zero, use_lo = dtype(0), precision == "single"
    A = mp_cpu._Prepared(x[None], m, dtype, normalize).context(0)
    B = mp_cpu._Prepared(x[None, 100:], m, dtype, normalize).context(0)
    n_a, n_ab = A[0].shape[0], B[0].shape[0]
    cases = [(A, n_a, k0, 32, col_start) for k0 in (1, 40, 250) for col_start in (0, 1, 200, n_a - 1)]
    cases += [(B, n_ab, k0, 32, 0) for k0 in (-(n_a - 1), -20, 100)]
    checked = 0
    for Bc, n_b, k0, nb, col_start in cases:
        entries = np.full(nb, np.nan, dtype=dtype)
        mp_cpu._restart_entries(entries, A, Bc, n_a, n_b, k0, nb, col_start, m, use_lo, zero)
        for b in range(nb):
            k = k0 + b
            i = max(0, -k, col_start - k)
            if i >= min(n_a, n_b - k):  # no cell on this diagonal
                continue
            one = np.full(nb, np.nan, dtype=dtype)
            mp_cpu._restart(one, A, Bc, i, i + k0, b, b + 1, m, use_lo, zero)
            assert one[b].tobytes() == entries[b].tobytes(), (k0, col_start, b)
            checked += 1
    assert checked > 400


@pytest.mark.parametrize("precision", ["double", "single"])
@pytest.mark.parametrize("n_ctx", [1, 6])  # threads over diagonal blocks, then over contexts
def test_join_without_rows_gives_the_same_left_profile(precision, n_ctx):
    """rows=False (the detector's left profile) skips the right profile's distances only."""
    rng = np.random.default_rng(18)
    x = np.stack([walk_with_gaps(rng, 400) for _ in range(n_ctx)])
    for normalize in (True, False):
        full = mp_cpu.join(x, None, 16, 4, precision, 250, 120, normalize=normalize)
        left = mp_cpu.join(x, None, 16, 4, precision, 250, 120, normalize=normalize, rows=False)
        assert left[0] is None and left[1] is None
        np.testing.assert_array_equal(left[2], full[2])
        np.testing.assert_array_equal(left[3], full[3])
    ab = mp_cpu.join(x[:, :200], x[:, 200:], 16, 4, precision, rows=False)  # AB-joins keep their profile
    assert ab[0] is not None and ab[2] is None


@pytest.mark.gpu
def test_gpu_join_without_rows_gives_the_same_left_profile():
    import cupy as cp

    rng = np.random.default_rng(18)
    x = cp.asarray(np.stack([walk_with_gaps(rng, 400) for _ in range(6)]))
    full = mp_gpu.join(x, None, 16, 4, "double", 250, 120)
    left = mp_gpu.join(x, None, 16, 4, "double", 250, 120, rows=False)
    assert left[0] is None and left[1] is None
    np.testing.assert_array_equal(cp.asnumpy(left[2]), cp.asnumpy(full[2]))
    np.testing.assert_array_equal(cp.asnumpy(left[3]), cp.asnumpy(full[3]))


# ---------------------------------------------------------------------------- batches
def test_batch_equals_per_context_results():
    """Threads over contexts (batch) and over diagonal blocks (one series) give identical bits."""
    rng = np.random.default_rng(20)
    batch = np.stack([walk_with_gaps(rng, 700, level) for level in (0, 10, -5, 1e3, 2)])
    batch[3] = rng.poisson(2.0, 700)  # sparse counts: many constant windows
    for precision in ("double", "single"):
        together = matrix_profile(batch, 24, device="cpu", precision=precision)
        for c in range(batch.shape[0]):
            alone = matrix_profile(batch[c], 24, device="cpu", precision=precision)
            for name in FIELDS:
                np.testing.assert_array_equal(getattr(together, name)[c], getattr(alone, name), err_msg=name)


def test_results_do_not_depend_on_block_size_or_threads():
    import numba

    rng = np.random.default_rng(29)
    x = walk_with_gaps(rng, 900)[None]
    reference = mp_cpu.join(x, None, 20, 5, "double")
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one_thread = mp_cpu.join(x, None, 20, 5, "double", tile_diags=7)
    finally:
        numba.set_num_threads(threads)
    for got, want in zip(one_thread, reference):
        np.testing.assert_array_equal(got, want)


def test_ragged_batch_pads_with_nan():
    rng = np.random.default_rng(21)
    series = [np.cumsum(rng.standard_normal(n)) for n in (90, 150, 60)]
    got = matrix_profile(series, 12, device="cpu")
    assert got.profile.shape == (3, 150 - 12 + 1)
    for c, x in enumerate(series):
        alone = matrix_profile(x, 12, device="cpu")
        n_w = len(x) - 12 + 1
        np.testing.assert_array_equal(got.profile[c, :n_w], alone.profile)
        np.testing.assert_array_equal(got.index[c, :n_w], alone.index)
        assert np.all(np.isinf(got.profile[c, n_w:])) and np.all(got.index[c, n_w:] == -1)


def test_a_panel_is_read_as_its_values_and_frames_and_paths_are_refused():
    # matrix_profile(panel, 24) raised "T must hold real numbers, got dtype object", while decompose
    # took a Panel; a DataFrame was read as a bare array.
    values = np.cumsum(np.random.default_rng(23).standard_normal((2, 120)), axis=1)
    panel = Panel(values, pd.Index(["a", "b"], name="asn"), pd.date_range("2024-01-01", periods=120, freq="h"))
    got = matrix_profile(panel, 12, T_B=panel, device="cpu")
    want = matrix_profile(values, 12, T_B=values, device="cpu")
    np.testing.assert_array_equal(got.profile, want.profile)
    np.testing.assert_array_equal(got.index, want.index)
    with pytest.raises(TypeError, match=r"matrix_profile's T takes .* not a pandas DataFrame: .*Panel\.from_frame"):
        matrix_profile(pd.DataFrame(values), 12, device="cpu")
    with pytest.raises(TypeError, match=r"matrix_profile's T_B takes .* not a pandas Series"):
        matrix_profile(values, 12, T_B=pd.Series(values[0]), device="cpu")
    with pytest.raises(TypeError, match=r"not a path or a string \('history\.parquet'\)"):
        matrix_profile("history.parquet", 12, device="cpu")


def test_ab_join_batch_with_one_reference_series():
    rng = np.random.default_rng(22)
    batch = np.cumsum(rng.standard_normal((3, 200)), axis=1)
    reference = np.cumsum(rng.standard_normal(120))
    got = matrix_profile(batch, 16, T_B=reference, device="cpu")
    for c in range(3):
        np.testing.assert_array_equal(got.profile[c], matrix_profile(batch[c], 16, T_B=reference, device="cpu").profile)


def test_ab_join_batch_of_one_with_a_1d_reference_keeps_the_batch_shape():
    # A 1-D T_B serves every context of a 2-D T, a batch of one included; the result
    # follows T's shape: (1, n_windows), not (n_windows,).
    rng = np.random.default_rng(23)
    batch = np.cumsum(rng.standard_normal((1, 200)), axis=1)
    reference = np.cumsum(rng.standard_normal(120))
    got = matrix_profile(batch, 16, T_B=reference, device="cpu")
    alone = matrix_profile(batch[0], 16, T_B=reference, device="cpu")
    assert got.profile.shape == got.index.shape == (1, 200 - 16 + 1)
    np.testing.assert_array_equal(got.profile[0], alone.profile)
    np.testing.assert_array_equal(got.index[0], alone.index)
    assert alone.profile.shape == (200 - 16 + 1,)


def test_ab_join_shape_mismatch_reports_the_shapes_as_given():
    # A 2-D T_B against a 1-D T is still refused; the message shows the shapes passed,
    # not the (1, n) made of a 1-D series internally.
    with pytest.raises(ValueError, match=r"got shape \(1, 50\) for T of shape \(60,\)"):
        matrix_profile(np.zeros(60), 4, T_B=np.zeros((1, 50)))
    with pytest.raises(ValueError, match=r"got shape \(2, 50\) for T of shape \(3, 60\)"):
        matrix_profile(np.zeros((3, 60)), 4, T_B=np.zeros((2, 50)))


# ---------------------------------------------------------------------------- edge-case rules
def test_constant_and_non_finite_rules_by_hand():
    m = 4
    ramp = np.array([1.0, 2.0, 3.0, 5.0])
    # A constant and a non-constant window: sqrt(m); two constant windows: 0.
    against_constant = matrix_profile(ramp, m, T_B=np.full(m, 3.0), device="cpu")
    assert against_constant.profile[0] == pytest.approx(math.sqrt(m), abs=1e-12)
    assert matrix_profile(np.full(m, 2.0), m, T_B=np.full(m, -9.0), device="cpu").profile[0] == 0.0
    # Self-join: windows inside the constant runs find each other at 0, ties to the smallest index;
    # windows touching the NaN are nobody's neighbour.
    x = np.array([5.0] * 8 + [1.0, 4.0, np.nan, 2.0, 0.0] + [5.0] * 8)
    got = matrix_profile(x, m, exclusion=1, device="cpu")
    assert got.profile[0] == 0.0 and got.index[0] == 2  # 1 is a trivial match
    assert got.profile[17] == 0.0 and got.index[17] == 0
    nan_windows = np.arange(7, 11)  # windows 7..10 contain point 10
    assert np.all(np.isinf(got.profile[nan_windows])) and np.all(got.index[nan_windows] == -1)
    assert not np.isin(got.index, nan_windows).any()
    for precision in ("double", "single"):
        all_nan = matrix_profile(np.full(30, np.nan), 5, device="cpu", precision=precision)
        assert np.all(np.isinf(all_nan.profile)) and np.all(all_nan.index == -1)


@pytest.mark.parametrize("scale, precision", [(1e20, "single"), (1e-25, "single"), (1e155, "double"),
                                              (1e-160, "double"), (2.0**-60, "double")])
def test_z_normalised_join_is_unaffected_by_the_datas_scale(scale, precision):
    """z-normalised distances do not depend on the data's scale; the kernels' window sums of
    squares and products did: at 1e20 or 1e-25 in single precision, 1e155 or 1e-160 in double,
    they overflowed or underflowed, every neighbour was wrong and distances were off by ~4.
    Each series is scaled by a power of two before the join (exact), so a power-of-two scale
    gives the very same results, and any other one results within the precision's bound."""
    rng = np.random.default_rng(0)
    x = walk_with_gaps(rng, 400)
    m = 8
    ref = naive_matrix_profile(x, m)
    D = distance_matrix(x, m)
    got = matrix_profile(x * scale, m, device="cpu", precision=precision)
    same_scale = matrix_profile(x, m, device="cpu", precision=precision)
    if math.frexp(scale)[0] == 0.5:  # a power of two
        for name in FIELDS:
            np.testing.assert_array_equal(getattr(got, name), getattr(same_scale, name), err_msg=name)
    if precision == "double":
        assert_profile_equal(got, ref, D, got.exclusion)
    else:
        i, j = np.indices(D.shape)
        D[np.abs(i - j) <= got.exclusion] = np.inf
        assert_within_single_bound(got.profile, got.index, ref["profile"], D, m)
        assert np.mean(got.index == same_scale.index) > 0.95
    # AB-joins too, each series at its own scale.
    b = walk_with_gaps(rng, 150)
    ab = matrix_profile(x * scale, m, T_B=b / scale, device="cpu", precision=precision)
    ref_ab = naive_matrix_profile(x, m, T_B=b)
    if precision == "double":
        assert_neighbours(ab.profile, ab.index, ref_ab["profile"], ref_ab["index"], distance_matrix(x, m, b))
    else:
        assert_within_single_bound(ab.profile, ab.index, ref_ab["profile"], distance_matrix(x, m, b), m)


def test_z_normalised_join_is_unaffected_by_a_level_far_above_the_variation():
    """A level shifts every window and leaves z-normalised distances as they are; the kernels
    took window means of the values as given, whose rounding at a level of 1e6 swamped noise of
    1e-6: profiles were 1.7e-6 off those of the same series without the level (1e-3 off brute
    force on another draw), and matrix profile scores of such series after an update or a gap
    differed from one call's by up to 0.9."""
    rng = np.random.default_rng(5)
    x = 1e6 + 1e-6 * rng.standard_normal((2, 300))
    without_level = x - 1e6  # exact: every value lies within a factor 2 of 1e6
    got, expected = matrix_profile(x, 12, device="cpu"), matrix_profile(without_level, 12, device="cpu")
    np.testing.assert_allclose(got.profile, expected.profile, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(got.index, expected.index)


def test_ties_go_to_the_smaller_index_up_to_rounding():
    """Documented behaviour (no fix): neighbours are chosen on 1 - rho as the recurrence computes
    it, so windows at exactly the same true distance are tied only where rounding agrees. Here
    windows 6 and 9 are both at distance 0 from window 16 (all three are [0, 0, 1]); rounding
    puts 9 nearer, and the reported distance is exact. Equal computed values (constant windows,
    through the rule) do go to the smaller index."""
    T = np.array([1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 1], float)
    D = distance_matrix(T, 3)
    for precision in ("double", "single"):
        mp = matrix_profile(T, 3, device="cpu", precision=precision)
        assert D[16, 6] == D[16, 9] == 0.0 and mp.left_profile[16] == 0.0
        assert mp.left_index[16] in (6, 9)
        assert mp.left_index[14] == 1  # window 14 = [0, 0, 0]: constant, like 1..5 and 12..13


# ---------------------------------------------------------------------------- validation
def test_validation_errors_name_the_problem():
    x = np.arange(20.0)
    with pytest.raises(ValueError, match="at least 3"):
        matrix_profile(x, 2)
    with pytest.raises(ValueError, match="integer window"):
        matrix_profile(x, 4.5)
    with pytest.raises(ValueError, match="20 points in the series, fewer than the window m=21"):
        matrix_profile(x, 21)
    with pytest.raises(ValueError, match="every context"):
        matrix_profile(np.zeros((3, 10)), 12)
    with pytest.raises(ValueError, match=r"context 1 of T \(T\[1\]\) has 5 points, fewer than the window m=6"):
        matrix_profile([np.arange(10.0), np.arange(5.0)], 6)
    with pytest.raises(ValueError, match=r"context 0 of T_B"):
        matrix_profile([np.arange(10.0)], 6, T_B=[np.arange(4.0)])
    with pytest.raises(ValueError, match="precision"):
        matrix_profile(x, 4, precision="half")
    with pytest.raises(ValueError, match="real numbers"):
        matrix_profile(np.array(["a"] * 10), 4)
    with pytest.raises(ValueError, match="one series per context"):
        matrix_profile(np.zeros((3, 30)), 4, T_B=np.zeros((2, 30)))
    with pytest.raises(ValueError, match="exclusion"):
        matrix_profile(x, 4, exclusion=-1)
    with pytest.raises(ValueError, match="device"):
        matrix_profile(x, 4, device="tpu")


def test_gpu_tile_shapes_are_checked_without_a_gpu():
    assert mp_gpu.kernel_options() == ()
    assert mp_gpu.kernel_options(16, 8) == ("-DMP_TILE_ROWS=16", "-DMP_THREADS=2")
    with pytest.raises(ValueError, match="multiple of 4"):
        mp_gpu.kernel_options(16, 6)
    with pytest.raises(ValueError, match="shared memory"):
        mp_gpu.kernel_options(4096, 1024)


def test_gpu_fill_rule_equals_cpu_fill_rule():
    """The GPU's gather-based NaN fill (run here with NumPy) equals the CPU's sequential one."""
    rng = np.random.default_rng(23)
    for _ in range(50):
        x = rng.standard_normal((4, 15))
        x[rng.random(x.shape) < rng.random()] = np.nan
        x[rng.random(x.shape) < 0.1] = -np.inf
        np.testing.assert_array_equal(mp_gpu.fill_nonfinite(np, x), mp_cpu._fill_nonfinite(x))


# ---------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["double", "single"])
def test_gpu_matches_brute_force_with_small_and_default_tiles(precision):
    import cupy

    rng = np.random.default_rng(24)
    x = walk_with_gaps(rng, 2600, level=50.0)
    m = 16
    ref = naive_matrix_profile(x, m)
    got = matrix_profile(x, m, device="cuda", precision=precision)
    on_device = matrix_profile(cupy.asarray(x), m, device="cuda", precision=precision)
    assert isinstance(on_device.profile, cupy.ndarray)
    D = distance_matrix(x, m)
    i, j = np.indices(D.shape)
    D[np.abs(i - j) <= math.ceil(m / 4)] = np.inf
    if precision == "double":
        assert_profile_equal(got, ref, distance_matrix(x, m), got.exclusion)
    else:
        assert_within_single_bound(got.profile, got.index, ref["profile"], D, m)
    # Tiny tiles: 2 threads x 4 diagonals, 16 rows; 400 points span hundreds of tiles.
    rd, ri, ld, li = mp_gpu.join(cupy.asarray(x[None, :400]), None, m, 4, precision, tile_rows=16, tile_diags=8)
    small = naive_matrix_profile(x[:400], m, exclusion=4)
    D = distance_matrix(x[:400], m)
    i, j = np.indices(D.shape)
    right, left = np.where(j - i > 4, D, np.inf), np.where(i - j > 4, D, np.inf)
    rd, ri, ld, li = (cupy.asnumpy(a)[0] for a in (rd, ri, ld, li))
    if precision == "double":
        assert_neighbours(rd, ri, small["right_profile"], small["right_index"], right)
        assert_neighbours(ld, li, small["left_profile"], small["left_index"], left)
    else:
        assert_within_single_bound(rd, ri, small["right_profile"], right, m)
        assert_within_single_bound(ld, li, small["left_profile"], left, m)


@pytest.mark.gpu
def test_gpu_batch_of_short_series_equals_cpu():
    rng = np.random.default_rng(25)
    batch = np.cumsum(rng.standard_normal((300, 500)), axis=1)
    batch[::7, 100:130] = 3.0
    batch[::11, 250] = np.nan
    gpu = matrix_profile(batch, 24, device="cuda")
    cpu = matrix_profile(batch, 24, device="cpu")
    for name in FIELDS:
        a, b = getattr(gpu, name), getattr(cpu, name)
        if name.endswith("index"):
            assert np.mean(a == b) > 0.999  # near-ties may differ between devices
        else:
            np.testing.assert_allclose(a, b, atol=1e-8, rtol=0)
    gpu_ab = matrix_profile(batch[:, :300], 24, T_B=batch[:, 300:], device="cuda", precision="single")
    cpu_ab = matrix_profile(batch[:, :300], 24, T_B=batch[:, 300:], device="cpu", precision="double")
    # Windows over the NaN are inf on both devices (inf - inf is NaN): compared as such, not by value.
    finite = np.isfinite(cpu_ab.profile)
    np.testing.assert_array_equal(np.isfinite(gpu_ab.profile), finite)
    assert np.all(np.abs(gpu_ab.profile[finite] ** 2 - cpu_ab.profile[finite] ** 2) <= 2 * 24 * SINGLE_PRECISION_RHO_BOUND)


@pytest.mark.gpu
@pytest.mark.parametrize("scale, precision", [(1e20, "single"), (1e155, "double")])
def test_gpu_z_normalised_join_is_unaffected_by_the_datas_scale(scale, precision):
    rng = np.random.default_rng(0)
    x = np.stack([walk_with_gaps(rng, 400) for _ in range(3)])
    gpu = matrix_profile(x * scale, 8, device="cuda", precision=precision)
    cpu = matrix_profile(x, 8, device="cpu", precision="double")
    bound = 2 * 8 * SINGLE_PRECISION_RHO_BOUND if precision == "single" else 1e-8
    finite = np.isfinite(cpu.profile)
    np.testing.assert_array_equal(np.isfinite(gpu.profile), finite)
    assert np.all(np.abs(gpu.profile[finite] ** 2 - cpu.profile[finite] ** 2) <= bound)


# ---------------------------------------------------------------------------- detector
def _hourly_panel(values, start="2024-01-01"):
    index = pd.date_range(start, periods=values.shape[1], freq="1h", name="ts")
    return Panel(values, pd.Index([f"c{k}" for k in range(values.shape[0])], name="ctx"), index)


def test_detector_scores_are_the_bounded_left_profile():
    """score(t) = min distance of the window ending at t to earlier windows starting at most
    `history` points before it, over the kept history and the new data, / sqrt(2 window)."""
    rng = np.random.default_rng(26)
    m, hist, excl = 12, 100, 3
    values = np.cumsum(rng.standard_normal((2, 400)), axis=1)
    values[1, 330] = np.nan
    panel = _hourly_panel(values)
    history, new = panel.time_slice(end=panel.index[299]), panel.time_slice(start=panel.index[300])
    det = MatrixProfileDetector(window=m, history=hist, min_history=0, exclusion=excl, device="cpu").fit(history)
    assert det.history_.shape == (2, hist + m - 1)
    scores = det.score(new).to_numpy()
    for c in range(2):
        x = values[c, 300 - (hist + m - 1) :]
        D = distance_matrix(x, m)
        i, j = np.indices(D.shape)
        D = np.where((j - i > excl) & (j - i <= hist), D, np.inf)  # row j: the scored window
        best = D.T.min(axis=1)
        expected = np.where(np.isfinite(best), best, np.nan)[-100:] / math.sqrt(2 * m)
        np.testing.assert_allclose(scores[c], expected, atol=1e-9, rtol=0, equal_nan=True)
    assert np.isnan(scores[1, 30 : 30 + m]).all()  # windows holding the missing hour


def test_detector_all_neighbours_is_the_banded_full_profile():
    """neighbours="all": min distance to windows up to `history` points earlier *or later*, over the
    kept history and the whole scored batch; a shape that recurs later in the batch is no discord."""
    rng = np.random.default_rng(30)
    m, hist, excl = 12, 100, 3
    values = np.cumsum(rng.standard_normal((2, 400)), axis=1)
    panel = _hourly_panel(values)
    history, new = panel.time_slice(end=panel.index[299]), panel.time_slice(start=panel.index[300])
    det = MatrixProfileDetector(window=m, history=hist, min_history=0, exclusion=excl, neighbours="all", device="cpu")
    scores = det.fit(history).score(new).to_numpy()
    for c in range(2):
        x = values[c, 300 - (hist + m - 1) :]
        D = distance_matrix(x, m)
        i, j = np.indices(D.shape)
        D = np.where((np.abs(j - i) > excl) & (np.abs(j - i) <= hist), D, np.inf)
        expected = D.min(axis=1)[-100:] / math.sqrt(2 * m)
        np.testing.assert_allclose(scores[c], expected, atol=1e-9, rtol=0)
    # A burst that happens twice in the new data is new to "past" the first time, not to "all".
    t = np.arange(600)
    wave = np.sin(2 * np.pi * t / 24) + 0.05 * rng.standard_normal(600)
    burst = np.hanning(12) * 3
    wave[400:412] += burst
    wave[496:508] += burst  # four days later, at the same hour
    twice = _hourly_panel(wave[None, :])
    fit_part, scored = twice.time_slice(end=twice.index[299]), twice.time_slice(start=twice.index[300])
    past = MatrixProfileDetector(window=24, history=600, device="cpu").fit(fit_part).score(scored).to_numpy()[0]
    every = MatrixProfileDetector(window=24, history=600, neighbours="all", device="cpu").fit(fit_part).score(scored).to_numpy()[0]
    first = slice(100, 100 + 12 + 23)  # windows that hold the first burst
    assert np.nanmax(past[first]) > 2 * np.nanmax(every[first])


def test_detector_difference_profiles_the_first_difference():
    """difference=True: the window ending at t compares the steps x[t-m+1]-x[t-m] .. x[t]-x[t-1]."""
    rng = np.random.default_rng(31)
    x = np.sin(2 * np.pi * np.arange(700) / 40) + 0.002 * rng.standard_normal(700)
    x[600] += 0.05
    panel = _hourly_panel(x[None, :])
    fit_part, scored = panel.time_slice(end=panel.index[399]), panel.time_slice(start=panel.index[400])
    det = MatrixProfileDetector(window=20, history=700, min_history=0, neighbours="all", difference=True, device="cpu")
    scores = det.fit(fit_part).score(scored).to_numpy()[0]
    steps = np.diff(x)  # steps[k] = x[k+1] - x[k]: the window of steps ending at t ends at steps[t-1]
    reference = matrix_profile(steps, 20, device="cpu").profile / math.sqrt(2 * 20)
    np.testing.assert_allclose(scores, reference[400 - 20 : 700 - 20], atol=1e-9, rtol=0)
    assert 200 <= int(np.nanargmax(scores)) <= 220  # a window holding the step into or out of x[600]
    with pytest.raises(ValueError, match="difference"):
        MatrixProfileDetector(window=5, history=20, difference="yes").fit(fit_part)


def test_detector_smoothing_is_a_trailing_mean_of_window_distances():
    """smoothing=s: the score at t is the mean distance of the windows ending at t-s+1..t,
    the same whether the data arrive in one batch or after a fit."""
    rng = np.random.default_rng(41)
    x = np.sin(2 * np.pi * np.arange(900) / 24)[None, :] + 0.1 * rng.standard_normal((2, 900))
    x[1, 700] = np.nan  # windows holding it have no distance and drop out of the means
    panel = _hourly_panel(x)
    plain = MatrixProfileDetector(window=24, history=300, device="cpu").fit_score(panel).to_numpy()
    smooth = MatrixProfileDetector(window=24, history=300, smoothing=7, device="cpu")
    expected = pd.DataFrame(plain.T).rolling(7, min_periods=1).mean().to_numpy().T.copy()
    expected[1, 700] = np.nan  # the missing point itself scores NaN, as with every detector
    np.testing.assert_allclose(smooth.fit_score(panel).to_numpy(), expected, atol=1e-12, rtol=0, equal_nan=True)
    fit_part, scored = panel.time_slice(end=panel.index[499]), panel.time_slice(start=panel.index[500])
    chunked = smooth.fit(fit_part).score(scored).to_numpy()
    np.testing.assert_allclose(chunked, expected[:, 500:], atol=1e-12, rtol=0, equal_nan=True)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="smoothing"):
            MatrixProfileDetector(window=24, history=300, smoothing=bad).fit(fit_part)


@pytest.mark.parametrize("neighbours, difference", [("past", False), ("all", False), ("past", True)])
def test_smoothed_score_of_a_missing_point_is_nan(neighbours, difference):
    """A missing point scores NaN, as with the other detectors (BaseDetector.score); with
    smoothing > 1 it got the mean of the earlier windows' distances, which do not hold it.
    The observed points after it keep their trailing means of the windows that have no gap."""
    rng = np.random.default_rng(43)
    x = np.sin(2 * np.pi * np.arange(600) / 24)[None, :] + 0.1 * rng.standard_normal((2, 600))
    x[0, 450] = np.nan
    x[1, 200] = np.nan  # in the fitted part
    panel = _hourly_panel(x)
    params = dict(window=12, history=200, smoothing=6, neighbours=neighbours, difference=difference, device="cpu")
    plain = MatrixProfileDetector(**{**params, "smoothing": 1}).fit_score(panel).to_numpy()
    expected = pd.DataFrame(plain.T).rolling(6, min_periods=1).mean().to_numpy().T.copy()
    expected[np.isnan(x)] = np.nan
    det = MatrixProfileDetector(**params)
    np.testing.assert_allclose(det.fit_score(panel).to_numpy(), expected, atol=1e-12, rtol=0, equal_nan=True)
    chunked = det.fit(panel.time_slice(end=panel.index[399])).score(panel.time_slice(start=panel.index[400]))
    scores = chunked.to_numpy()
    assert np.isnan(scores[0, 50]) and np.isfinite(scores[0, [49, 51]]).all()
    if neighbours == "past":  # "all" looks at the rest of the batch, which differs here
        np.testing.assert_allclose(scores, expected[:, 400:], atol=1e-12, rtol=0, equal_nan=True)


@pytest.mark.gpu
def test_gpu_detector_smoothing_equals_cpu():
    """The trailing mean runs on CuPy arrays on the GPU path: same scores as on the CPU."""
    rng = np.random.default_rng(42)
    x = np.sin(2 * np.pi * np.arange(900) / 24)[None, :] + 0.1 * rng.standard_normal((3, 900))
    x[2, 600] = np.nan
    panel = _hourly_panel(x)
    fit_part, scored = panel.time_slice(end=panel.index[499]), panel.time_slice(start=panel.index[500])
    for neighbours in ("past", "all"):
        scores = [
            MatrixProfileDetector(window=24, history=300, smoothing=24, neighbours=neighbours, device=device)
            .fit(fit_part).score(scored).to_numpy()
            for device in ("cpu", "cuda")
        ]
        np.testing.assert_allclose(scores[1], scores[0], atol=1e-8, rtol=0, equal_nan=True)


def test_detector_training_scores_and_planted_discord():
    rng = np.random.default_rng(27)
    t = np.arange(24 * 28)
    values = rng.poisson(200 * (1.2 + np.sin(2 * np.pi * t / 24)), size=(4, t.size)).astype(float)
    values[2, 24 * 25 + 3 : 24 * 25 + 9] = 5.0  # a new shape: logins collapse for six hours
    panel = _hourly_panel(values)
    history, new = panel.time_slice(end=panel.index[24 * 21 - 1]), panel.time_slice(start=panel.index[24 * 21])
    det = MatrixProfileDetector(window=24, device="cpu")
    train = det.fit_score(history).to_numpy()
    # Scored from min_history = 672 // 4 points of past on (the window starting there ends 23 later).
    assert np.isnan(train[:, : 168 + 23]).all() and np.isfinite(train[:, 168 + 23 :]).all()
    assert np.nanmax(train) <= math.sqrt(2) + 1e-12
    scores = det.score(new).to_numpy()
    peak_ctx, peak_t = np.unravel_index(np.nanargmax(scores), scores.shape)
    assert peak_ctx == 2 and 24 * 4 <= peak_t <= 24 * 4 + 9 + 24
    alerts = det.alerts(new)
    top = alerts.iloc[0]
    assert top["ctx"] == "c2"
    # The explanation names the earlier window the alerted one is least unlike.
    x = np.concatenate([det.history_[2], values[2, 24 * 21 :]])
    offset = det.history_.shape[1]
    w = offset + new.index.get_loc(top["peak_time"]) - 23
    d = distance_matrix(x, 24)[w, : w - math.ceil(24 / 4)]
    neighbour = int(np.argmin(d[max(0, w - det.history) :])) + max(0, w - det.history)
    assert top["neighbour_start"] == new.index[0] - (offset - neighbour) * pd.Timedelta("1h")
    assert top["neighbour_time"] == top["neighbour_start"] + 23 * pd.Timedelta("1h")


def test_difference_alert_neighbour_window_spans_the_values_its_steps_come_from():
    """With difference=True a window of `window` steps spans window + 1 values, the neighbour's as
    the alerted one's; neighbour_start was one step late (the neighbour's second value)."""
    rng = np.random.default_rng(0)
    n, m = 480, 12
    x = rng.poisson(30 * (1 + np.sin(np.arange(n) * 2 * np.pi / 24)), size=(1, n)).astype(float)
    x[0, 411:417] += 80
    panel = _hourly_panel(x)
    det = MatrixProfileDetector(window=m, history=168, difference=True, device="cpu", contamination=0.05)
    det.fit(panel.time_slice(end=panel.index[335]))
    new = panel.time_slice(start=panel.index[336])
    alert = det.alerts(new).iloc[0]
    # The neighbour from the profile of the steps, by brute force: step k = x[k] - x[k-1] (NaN for k = 0).
    steps = np.r_[np.nan, np.diff(x[0])]
    t = panel.index.get_loc(alert["peak_time"])
    w = t - (m - 1)  # the alerted window of steps starts at step w, its values at point w - 1
    excl = math.ceil(m / 4)
    d = distance_matrix(steps, m)[w]
    candidates = np.arange(max(0, w - det.history), w - excl)
    neighbour = candidates[np.argmin(d[candidates])]
    assert alert["neighbour_start"] == panel.index[neighbour - 1]
    assert alert["neighbour_time"] == panel.index[neighbour + m - 1]
    assert alert["neighbour_time"] - alert["neighbour_start"] == m * pd.Timedelta("1h")


def test_detector_unseen_context_starts_cold():
    rng = np.random.default_rng(28)
    values = np.cumsum(rng.standard_normal((3, 300)), axis=1)
    panel = _hourly_panel(values)
    history, new = panel.time_slice(end=panel.index[199]), panel.time_slice(start=panel.index[200])
    det = MatrixProfileDetector(window=10, history=50, min_history=20, device="cpu").fit(history.take([0, 1]))
    scores = det.score(new).to_numpy()
    first = 20 + 10 - 1  # the first window with 20 points of past ends here
    assert np.isnan(scores[2, :first]).all() and np.isfinite(scores[2, first:]).all()
    assert np.isfinite(scores[:2]).all()
    # A context that starts late in the history is scored once it has min_history points of past.
    late = values.copy()
    late[1, :190] = np.nan
    det.fit(_hourly_panel(late).time_slice(end=panel.index[199]))
    scores = det.score(new).to_numpy()
    first = 20 - 10 + 10 - 1  # 10 points of past at the fit's end: 10 more, then a full window
    assert np.isnan(scores[1, :first]).all() and np.isfinite(scores[1, first:]).all()


@pytest.mark.parametrize("normalize", [True, False])
def test_a_context_without_data_at_fit_starts_cold_like_an_unseen_one(normalize):
    """Its past_points_ of 0 put its first observation at the fit's end, so it was scored one
    point after its first observation in the new data, with inflated scores, not min_history on;
    with plain distances, its scale_ of 1 (no data to take a spread from) stood for the unit of
    its new data, so a large context alerted everywhere and a quiet one nowhere."""
    rng = np.random.default_rng(29)
    values = np.cumsum(rng.standard_normal((2, 300)), axis=1)
    values[1] *= 50.0  # a spread far from 1
    values[1, :210] = np.nan  # no data at fit; observed from the new data's 11th point
    panel = _hourly_panel(values)
    history, new = panel.time_slice(end=panel.index[199]), panel.time_slice(start=panel.index[200])
    det = MatrixProfileDetector(window=10, history=50, min_history=20, normalize=normalize, device="cpu").fit(history)
    seen = det.score(new).to_numpy()[1]
    unseen = det.score(Panel(new.values[[1]], pd.Index(["new"]), new.index)).to_numpy()[0]
    np.testing.assert_array_equal(seen, unseen)
    assert np.flatnonzero(np.isfinite(seen))[0] == 10 + 20 + 10 - 1


@pytest.mark.parametrize("smoothing", [1, 3])
def test_first_differences_score_the_same_after_a_fit_as_in_one_batch(smoothing):
    """The kept history's first difference is NaN, so the neighbour window `history` points back
    was lost and the first scores after a fit differed from the same data scored in one batch
    (past neighbours only: a score never changes once computed)."""
    values = np.random.default_rng(30).standard_normal((20, 40))
    panel = Panel(values, pd.Index([f"c{k}" for k in range(20)]), pd.RangeIndex(0, 40))
    params = dict(window=4, history=10, min_history=0, difference=True, smoothing=smoothing, device="cpu", threshold=1.0)
    batch = MatrixProfileDetector(**params).fit_score(panel).to_numpy()[:, 30:]
    stream = MatrixProfileDetector(**params).fit(panel.time_slice(end=29)).score(panel.time_slice(start=30)).to_numpy()
    np.testing.assert_allclose(stream, batch, rtol=1e-12, atol=1e-12)


def test_a_series_shorter_than_any_window_is_not_told_to_use_an_impossible_one():
    with pytest.raises(ValueError, match="no window fits; give a series of at least 3 points"):
        matrix_profile(np.zeros(2), 4)
    with pytest.raises(ValueError, match="no window fits; use m <= 3 or a longer series"):
        matrix_profile(np.zeros(3), 4)


def test_detector_rejects_bad_parameters():
    panel = _hourly_panel(np.zeros((1, 50)))
    with pytest.raises(ValueError, match="history must be"):
        MatrixProfileDetector(window=24, history=10).fit(panel)
    with pytest.raises(ValueError, match="at least 3"):
        MatrixProfileDetector(window=2).fit(panel)
    with pytest.raises(ValueError, match="precision"):
        MatrixProfileDetector(window=5, precision="fp16").fit(panel)
    with pytest.raises(ValueError, match="min_history"):
        MatrixProfileDetector(window=5, history=20, min_history=21).fit(panel)
    with pytest.raises(ValueError, match="neighbours must be one of"):
        MatrixProfileDetector(window=5, history=20, neighbours="future").fit(panel)


# ---------------------------------------------------------------------------- plain distances
def _plain_single_bound(x, m):
    """normalize=False, single precision: squared distances within 2 m 1e-4 of the context's variance."""
    finite = x[np.isfinite(x)]
    return 2 * m * SINGLE_PRECISION_RHO_BOUND * finite.var()


@pytest.mark.parametrize("level", [0.0, 1e6])
def test_plain_distances_match_brute_force(level):
    """normalize=False: plain Euclidean distances in the data's units, at any level (each
    series is standardised before the recurrence and the distances scaled back)."""
    rng = np.random.default_rng(40)
    x = walk_with_gaps(rng, 2600, level)
    m = 16
    got = matrix_profile(x, m, device="cpu", normalize=False)
    assert got.normalize is False
    D = distance_matrix(x, m, normalize=False)
    # Distances of up to ~1e6 (the constant stretch of 7.0 against the walk): 1e-14 of them.
    assert_profile_equal(got, naive_matrix_profile(x, m, normalize=False), D, got.exclusion, atol=1e-8 + 1e-14 * level)
    single = matrix_profile(x, m, device="cpu", normalize=False, precision="single")
    ref = naive_matrix_profile(x, m, normalize=False)
    finite = np.isfinite(ref["profile"])
    np.testing.assert_array_equal(np.isfinite(single.profile), finite)
    bound = _plain_single_bound(x, m)
    assert np.all(np.abs(single.profile[finite] ** 2 - ref["profile"][finite] ** 2) <= bound)


def test_plain_single_precision_bound_holds_on_bursty_counts():
    """Bursts 100 times the usual level: no restart windows in plain mode, only the tiles' restarts."""
    rng = np.random.default_rng(46)
    t = np.arange(2**13)
    x = rng.poisson(50 * (1 + np.sin(2 * np.pi * t / 24))).astype(float)
    for start in rng.integers(0, t.size - 40, 6):
        x[start : start + 30] += 5000
    for m in (24, 100):
        double = matrix_profile(x, m, device="cpu", normalize=False)
        single = matrix_profile(x, m, device="cpu", normalize=False, precision="single")
        assert np.all(np.abs(single.profile**2 - double.profile**2) <= _plain_single_bound(x, m))


@pytest.mark.parametrize("precision", ["double", "single"])
def test_plain_small_tiles_match_brute_force(precision):
    """The kernel's plain mode on a standardised series, with tiles small enough for dozens of restarts."""
    rng = np.random.default_rng(41)
    x = walk_with_gaps(rng, 300)
    x = (x - np.nanmean(x[np.isfinite(x)])) / np.std(x[np.isfinite(x)])
    m, excl = 12, 3
    ref = naive_matrix_profile(x, m, exclusion=excl, normalize=False)
    D = distance_matrix(x, m, normalize=False)
    i, j = np.indices(D.shape)
    right, left = np.where(j - i > excl, D, np.inf), np.where(i - j > excl, D, np.inf)
    for tiles in ((7, 5), (16, 32)):
        rd, ri, ld, li = mp_cpu.join(x[None], None, m, excl, precision, normalize=False, tile_rows=tiles[0],
                                     tile_diags=tiles[1])
        if precision == "double":
            assert_neighbours(rd[0], ri[0], ref["right_profile"], ref["right_index"], right)
            assert_neighbours(ld[0], li[0], ref["left_profile"], ref["left_index"], left)
        else:
            bound = _plain_single_bound(x, m)
            for dist, index, want, side in ((rd[0], ri[0], ref["right_profile"], right),
                                            (ld[0], li[0], ref["left_profile"], left)):
                finite = np.isfinite(want)
                np.testing.assert_array_equal(np.isfinite(dist), finite)
                assert np.all(np.abs(dist[finite] ** 2 - want[finite] ** 2) <= bound)
                rows = np.flatnonzero(finite)
                assert np.all(side[rows, index[rows]] ** 2 - want[rows] ** 2 <= bound)


def test_plain_ab_join_and_batch_match_brute_force():
    rng = np.random.default_rng(42)
    a, b = walk_with_gaps(rng, 500, 30.0), walk_with_gaps(rng, 300, -10.0)
    got = matrix_profile(a, 10, T_B=b, device="cpu", normalize=False)
    ref = naive_matrix_profile(a, 10, T_B=b, normalize=False)
    assert_profile_equal(got, ref, distance_matrix(a, 10, b, normalize=False))
    # A batch: every context on its own scale, as computed one by one.
    batch = np.stack([walk_with_gaps(rng, 400, level) * scale for level, scale in ((0, 1), (1e3, 1e-3), (-5, 40))])
    together = matrix_profile(batch, 12, device="cpu", normalize=False)
    for c in range(3):
        alone = naive_matrix_profile(batch[c], 12, normalize=False)
        np.testing.assert_allclose(together.profile[c], alone["profile"], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("level, jump", [(1e8, 0.0), (0.0, 1e5)])
def test_plain_distances_are_exact_at_any_level_and_below_the_documented_shift_limit(level, jump):
    """Documented limit of normalize=False (double): a constant level of any size is removed by the
    centring; a level shift J over unit noise costs the squared distances ~eps J**2 of their
    precision, harmless at 1e5 (neighbours wrong from about 1e6 on: see matrix_profile)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(400) + level
    x[200:] += jump
    got = matrix_profile(x, 8, device="cpu", normalize=False)
    ref = naive_matrix_profile(x, 8, normalize=False)
    assert_profile_equal(got, ref, distance_matrix(x, 8, normalize=False), got.exclusion, atol=1e-6)


def test_plain_distances_see_amplitude_that_z_normalising_removes():
    """One cycle at twice the amplitude is the same shape: invisible z-normalised, the top discord plain."""
    t = np.arange(24 * 30)
    x = np.sin(2 * np.pi * t / 24) + 0.01 * np.random.default_rng(43).standard_normal(t.size)
    x[24 * 20 : 24 * 21] *= 2.0
    shape_only = matrix_profile(x, 24, device="cpu")
    plain = matrix_profile(x, 24, device="cpu", normalize=False)
    assert 24 * 19 <= int(np.argmax(plain.profile)) <= 24 * 21
    # The window that is exactly the doubled cycle: a familiar shape, at an unfamiliar amplitude.
    doubled = 24 * 20
    assert shape_only.profile[doubled] < 2 * np.median(shape_only.profile)
    assert plain.profile[doubled] > 10 * np.median(plain.profile)
    with pytest.raises(ValueError, match="normalize"):
        matrix_profile(x, 24, device="cpu", normalize="no")


def _banded_left_minimum(x, m, exclusion, history):
    """Brute-force plain distance of each window to its nearest earlier window at most ``history`` back."""
    D = distance_matrix(x, m, normalize=False)
    i, j = np.indices(D.shape)
    return np.where((j - i > exclusion) & (j - i <= history), D, np.inf).min(axis=0)


def _robust_sigma(x):
    """The documented unit of plain scores: 1.4826 MAD, at least 1.2533 x the mean absolute deviation."""
    deviation = np.abs(x - np.median(x))
    return max(1.4826 * np.median(deviation), 1.2533 * deviation.mean(), 1e-3 * abs(np.median(x)))


def test_detector_plain_scores_in_units_of_the_fitted_spread():
    """normalize=False: score = plain left-profile distance / (sqrt(2 window) * the context's robust
    fitted spread), so a context that is another one times 1000 plus a level scores the same, and a
    burst in the history does not shrink the unit."""
    rng = np.random.default_rng(44)
    m, hist, excl = 12, 100, 3
    base = np.cumsum(rng.standard_normal(400))
    values = np.stack([base, 1000 * base + 5e4])
    panel = _hourly_panel(values)
    history, new = panel.time_slice(end=panel.index[299]), panel.time_slice(start=panel.index[300])
    det = MatrixProfileDetector(window=m, history=hist, min_history=0, exclusion=excl, normalize=False, device="cpu")
    scores = det.fit(history).score(new).to_numpy()
    unit = _robust_sigma(base[:300])
    np.testing.assert_allclose(det.scale_, [unit, 1000 * unit], rtol=1e-9)
    expected = _banded_left_minimum(values[0, 300 - (hist + m - 1) :], m, excl, hist)[-100:] / (math.sqrt(2 * m) * unit)
    np.testing.assert_allclose(scores[0], expected, atol=1e-9, rtol=0)
    np.testing.assert_allclose(scores[1], scores[0], atol=1e-9, rtol=0)
    # A context first seen when scoring is measured by the spread of its own scored data.
    fresh = Panel(values[:1, 300:] * 3, pd.Index(["new"], name="ctx"), new.index)
    fresh_scores = det.score(fresh).to_numpy()[0]
    own = _robust_sigma(values[0, 300:])
    assert np.nanmax(fresh_scores) > 0 and np.isfinite(fresh_scores).any()
    best = _banded_left_minimum(values[0, 300:] * 3, m, excl, hist)
    want = np.where(np.isfinite(best), best, np.nan) / (math.sqrt(2 * m) * 3 * own)
    np.testing.assert_allclose(fresh_scores[m - 1 :], want, atol=1e-9, rtol=0, equal_nan=True)
    with pytest.raises(ValueError, match="normalize"):
        MatrixProfileDetector(window=5, history=20, normalize=1).fit(history)
    # A burst in the history (5 of 300 points at +1e3) inflates the unit far less than it would the std.
    burst = values[:1, :300].copy()
    burst[0, 100:105] += 1e3
    bursty = MatrixProfileDetector(window=m, history=hist, normalize=False, device="cpu").fit(burst)
    np.testing.assert_allclose(bursty.scale_[0], _robust_sigma(burst[0]), rtol=1e-9)
    assert bursty.scale_[0] < np.std(burst) / 3


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["double", "single"])
def test_gpu_plain_distances_equal_cpu(precision):
    rng = np.random.default_rng(45)
    batch = np.cumsum(rng.standard_normal((200, 500)), axis=1) + 1e3
    batch[::7, 100:130] = 3.0
    batch[::11, 250] = np.nan
    gpu = matrix_profile(batch, 24, device="cuda", precision=precision, normalize=False)
    cpu = matrix_profile(batch, 24, device="cpu", normalize=False)
    finite = np.isfinite(cpu.profile)
    np.testing.assert_array_equal(np.isfinite(gpu.profile), finite)
    if precision == "double":
        np.testing.assert_allclose(gpu.profile[finite], cpu.profile[finite], rtol=1e-10, atol=1e-8)
        assert np.mean(gpu.index == cpu.index) > 0.999
    else:
        bound = 2 * 24 * SINGLE_PRECISION_RHO_BOUND * np.nanvar(np.where(np.isfinite(batch), batch, np.nan), axis=1)
        assert np.all(np.abs(gpu.profile**2 - cpu.profile**2)[finite] <= np.broadcast_to(bound[:, None], finite.shape)[finite])


@pytest.mark.parametrize("options", [
    {},
    {"normalize": False},
    {"neighbours": "all", "smoothing": 3},
    {"difference": True, "normalize": False, "smoothing": 2},
])
def test_detector_in_blocks_of_contexts_equals_the_whole_panel(monkeypatch, options):
    """On the CPU the profile is computed for blocks of contexts (backend.CPU_BLOCK_POINTS): blocks
    of 2 give the fit's state, thresholds, training scores and new scores, bit for bit, of one
    block -- with a late-starting context, a gappy one and a context unseen at fit."""
    from tsanomaly import backend

    rng = np.random.default_rng(46)
    values = np.cumsum(rng.standard_normal((7, 400)), axis=1) + 50.0
    values[2, :250] = np.nan  # starts late
    values[4, ::9] = np.nan  # gaps
    panel = _hourly_panel(values)
    history, new = panel.time_slice(end=panel.index[299]), panel.time_slice(start=panel.index[300])
    fresh = Panel(values[:1, 300:] * 2.0, pd.Index(["unseen"], name="ctx"), new.index)
    new = Panel(np.vstack([new.to_numpy(), fresh.to_numpy()]), new.contexts.append(fresh.contexts), new.index)

    def run():
        det = MatrixProfileDetector(window=12, history=100, device="cpu", threshold="quantile", per_context=True,
                                    **options)
        train = det.fit_score(history).to_numpy()
        return det, train, det.score(new).to_numpy()

    whole, whole_train, whole_scores = run()
    monkeypatch.setattr(backend, "CPU_BLOCK_POINTS", 2 * history.n_times)
    assert len(backend.context_blocks(history.n_contexts, history.n_times, np)) == 4
    blocks, block_train, block_scores = run()
    assert np.isfinite(whole_scores[-1]).any() and np.isfinite(whole_train[2]).any()
    np.testing.assert_array_equal(block_train, whole_train)
    np.testing.assert_array_equal(block_scores, whole_scores)
    np.testing.assert_array_equal(blocks.threshold_, whole.threshold_)
    for name in whole._fitted_state_kinds():
        np.testing.assert_array_equal(getattr(blocks, name), getattr(whole, name))


def test_a_smoothed_peak_after_a_missing_point_is_explained_by_a_window_that_has_a_neighbour():
    # The window ending on the point after a missing one has no neighbour, yet the smoothed score is
    # the mean of the windows before it: the alert's explanation was NaT.
    rng = np.random.default_rng(4)
    n, m = 300, 8
    x = rng.poisson(30 * (1 + np.sin(np.arange(n) * 2 * np.pi / 24)), size=(1, n)).astype(float)
    x[0, 248:252] += 300
    x[0, 253] = np.nan
    index = pd.date_range("2024-01-01", periods=n, freq="h")
    panel = Panel(x, pd.Index(["DE"], name="country"), index)
    det = MatrixProfileDetector(window=m, history=150, smoothing=4, device="cpu", threshold=0.229)
    det.fit(panel.loc[: index[199]])
    new = panel.loc[index[200]:]
    scores = det.score(new).to_numpy()[0]
    assert np.isfinite(scores[254 - 200])  # the point after the missing one still scores
    alerts = det.alerts(new, scores=det.score(new))
    assert len(alerts) and alerts["neighbour_start"].notna().all() and alerts["neighbour_time"].notna().all()
    # each explanation is the neighbour of one of the windows the peak's score averages
    for _, alert in alerts.iterrows():
        assert alert["neighbour_time"] - alert["neighbour_start"] == pd.Timedelta(hours=m - 1)


def test_plain_distances_of_sparse_count_contexts_do_not_lift_the_global_threshold():
    # Their unit, a robust scale of a few hundredths, made each single event many units: beside 16
    # hourly contexts of about 50 events, four of 0.03 an hour lifted the threshold from 0.31 to 6.45.
    n, n_fit = 24 * 21, 24 * 14
    x = busy_and_sparse_counts(n)
    dense = x[:16]
    alone = MatrixProfileDetector(normalize=False, device="cpu").fit(dense[:, :n_fit])
    det = MatrixProfileDetector(normalize=False, device="cpu").fit(x[:, :n_fit])
    assert (det.scale_[16:] == 0.5).all()
    assert det.global_threshold_ < 1.2 * alone.global_threshold_
