"""Peaks-over-threshold calibration: known tails, scipy's GPD fit, fallback and NaN handling."""
import numpy as np
import pytest
from scipy import optimize, stats

from tsanomaly.pot import (
    _RTOL, _bracket_xtol, _brent, _grimshaw, _root_grids, _scan, fit_gpd, gpd_quantile, pot_fit, pot_threshold,
    pot_thresholds,
)


def _gpd_quantile(c, scale, risk):
    """Score exceeded with probability ``risk`` under GPD(c, scale) (exponential when c = 0)."""
    return -scale * np.log(risk) if c == 0 else scale * (risk ** (-c) - 1) / c


@pytest.mark.parametrize(
    "c, rel_tol",
    [
        (0.0, 0.05),  # exponential: true quantile at 1 - 1e-4 is log(1e4) = 9.21
        (0.2, 0.10),  # heavy tail: (1e4 ** 0.2 - 1) / 0.2 = 26.5
        (-0.3, 0.03),  # bounded tail (end point 3.33): (1 - 1e-4 ** 0.3) / 0.3 = 3.12
    ],
)
def test_pot_threshold_recovers_the_true_quantile(c, rel_tol):
    rng = np.random.default_rng(42)
    scores = stats.genpareto.rvs(c, scale=1.0, size=200_000, random_state=rng)
    truth = _gpd_quantile(c, 1.0, 1e-4)
    # the empirical 1 - 1e-4 quantile rests on 20 points; POT extrapolates from 4000 excesses
    assert pot_threshold(scores, risk=1e-4) == pytest.approx(truth, rel=rel_tol)


def test_pot_extrapolates_beyond_the_sample():
    # 20 000 exponential scores, risk 1e-6: the true quantile log(1e6) = 13.8 lies far beyond the
    # sample maximum (about log(20 000) = 9.9), which the quantile rule cannot exceed
    rng = np.random.default_rng(3)
    scores = rng.exponential(1.0, 20_000)
    z = pot_threshold(scores, risk=1e-6)
    assert z > scores.max()
    assert z == pytest.approx(np.log(1e6), rel=0.15)


@pytest.mark.parametrize("c", [-0.4, -0.1, 0.0, 0.15, 0.5])
def test_fit_gpd_likelihood_is_at_least_scipys(c):
    rng = np.random.default_rng(int(100 * (c + 1)))
    y = stats.genpareto.rvs(c, scale=2.0, size=3000, random_state=rng)
    gamma, sigma = fit_gpd(y)
    c_ref, _, scale_ref = stats.genpareto.fit(y, floc=0)
    ours = stats.genpareto.logpdf(y, gamma, 0, sigma).sum()
    ref = stats.genpareto.logpdf(y, c_ref, 0, scale_ref).sum()
    assert ours >= ref - 1e-6 * abs(ref)
    assert gamma == pytest.approx(c_ref, abs=2e-3)
    assert sigma == pytest.approx(scale_ref, rel=2e-3)


@pytest.mark.parametrize(
    "c, seed, extra",
    [
        (0.3, 0, 1e-11),  # one excess just above the initial threshold
        (1.5, 5, None),  # heavy tail: the smallest normalised excess is about 1e-7
    ],
)
def test_fit_gpd_converges_when_the_root_interval_is_long(c, seed, extra):
    """A tiny smallest excess makes the interval of the positive root 2 (1 - y_min) / y_min**2
    long (2e22 for an excess of 1e-11). Brent's tolerance was a share of that length, so it
    stopped at the first step, far from the root: gamma 0.266 for scipy's 0.298, the threshold
    25.5 for 28.9 (heavy tail: log-likelihood 0.56 below scipy's)."""
    y = stats.genpareto.rvs(c, scale=1.0, size=2000, random_state=np.random.default_rng(seed))
    if extra is not None:
        y = np.append(y, extra)
    gamma, sigma = fit_gpd(y)
    c_ref, _, scale_ref = stats.genpareto.fit(y, c, floc=0, scale=1.0)
    ours = stats.genpareto.logpdf(y, gamma, 0, sigma).sum()
    ref = stats.genpareto.logpdf(y, c_ref, 0, scale_ref).sum()
    assert ours >= ref - 1e-9 * abs(ref)
    n = 100 * y.size  # the excesses of 2% of the scores
    assert gpd_quantile(0.0, gamma, sigma, 1e-5, n, y.size) == pytest.approx(
        gpd_quantile(0.0, c_ref, scale_ref, 1e-5, n, y.size), rel=1e-3)


def test_brent_on_arrays_takes_brentqs_steps_bit_for_bit():
    """_brent refines many brackets at once; each root must be scipy.optimize.brentq's, bit for
    bit, on Grimshaw's equation for excesses of light, heavy, bounded and tied tails."""
    rng = np.random.default_rng(7)
    samples = [rng.exponential(1.0, 25), rng.pareto(1.5, 25) + 1e-3, rng.uniform(size=25) + 1e-6,
               np.round(rng.exponential(3.0, 25)) + 1.0, rng.beta(0.5, 3.0, 25) + 1e-4]
    yn = np.array([y / y.mean() for y in samples for _ in range(8)])
    ends = np.where(np.arange(yn.shape[0]) % 2 == 0, -1.0 / yn.max(axis=1),
                    2.0 * (1.0 - yn.min(axis=1)) / yn.min(axis=1) ** 2)
    grids = _root_grids(ends)
    scans = _scan(grids, yn)
    row, k = np.nonzero(np.sign(scans[:, :-1]) * np.sign(scans[:, 1:]) < 0)
    assert row.size >= 10  # several rows have roots to refine
    lo, hi = grids[row, k], grids[row, k + 1]
    xtol = _bracket_xtol(lo, hi)  # the tolerances of _fit_gpd_rows
    roots = _brent(lambda x, active: _grimshaw(x, yn[row[active]]), lo, hi, xtol, _RTOL)
    for i in range(row.size):
        def w(x, y=yn[row[i]]):
            return float(_grimshaw(np.array([x]), y[None, :])[0])
        assert roots[i] == optimize.brentq(w, lo[i], hi[i], xtol=xtol[i], rtol=_RTOL), i


def test_brent_returns_a_bracket_end_where_f_is_zero_and_rejects_brackets_without_a_sign_change():
    def f(x, active):
        return x - 1.0

    roots = _brent(f, np.array([1.0, 0.0, -3.0]), np.array([2.0, 1.0, 4.0]), np.full(3, 1e-15), 1e-12)
    assert roots[0] == 1.0 and roots[1] == 1.0  # exact zeros at the lower and upper end
    assert roots[2] == pytest.approx(1.0, abs=1e-11)
    with pytest.raises(ValueError, match="different signs"):
        _brent(f, np.array([2.0]), np.array([3.0]), np.array([1e-15]), 1e-12)


def test_fit_gpd_is_scale_equivariant():
    rng = np.random.default_rng(5)
    y = stats.genpareto.rvs(0.25, scale=1.0, size=2000, random_state=rng)
    g1, s1 = fit_gpd(y)
    g2, s2 = fit_gpd(1000.0 * y)
    assert g2 == pytest.approx(g1, abs=1e-6)
    assert s2 == pytest.approx(1000.0 * s1, rel=1e-6)


def test_fit_gpd_rejects_bad_excesses():
    with pytest.raises(ValueError, match="at least 2"):
        fit_gpd([1.0])
    with pytest.raises(ValueError, match="> 0"):
        fit_gpd([1.0, 0.0, 2.0])


def test_pot_fit_reports_its_parts():
    rng = np.random.default_rng(11)
    scores = rng.exponential(2.0, 50_000)
    fit = pot_fit(scores, risk=1e-4, initial_quantile=0.98)
    assert not fit.fallback
    assert fit.n_obs == 50_000
    assert fit.n_excesses == 1000  # 2% of 50 000 lie strictly above the 0.98 quantile
    assert fit.initial_threshold == np.quantile(scores, 0.98, method="lower")  # an order statistic
    assert fit.sigma == pytest.approx(2.0, rel=0.1)  # memoryless: excesses are Exp(scale 2)
    assert abs(fit.gamma) < 0.1


def test_nan_scores_are_ignored():
    rng = np.random.default_rng(8)
    scores = rng.exponential(1.0, 30_000)
    with_nan = np.concatenate([scores, np.full(5000, np.nan)])
    rng.shuffle(with_nan)
    # same scores in another order: equal up to the root finder's tolerance
    assert pot_threshold(with_nan) == pytest.approx(pot_threshold(scores), rel=1e-8)


def test_per_context_thresholds_and_fallback():
    rng = np.random.default_rng(9)
    n = 5000
    x = np.full((4, n), np.nan)
    x[0] = rng.exponential(1.0, n)  # enough excesses: GPD fit
    x[1, :30] = rng.normal(size=30)  # 30 finite scores: at most 1 excess over the 0.98 quantile
    # row 2: all NaN -> no threshold
    x[3] = 7.0  # constant: no score strictly above the 0.98 quantile
    thresholds, fallback = pot_thresholds(x, risk=1e-3)
    assert fallback.tolist() == [False, True, True, True]
    assert thresholds[0] == pytest.approx(pot_threshold(x[0], risk=1e-3))
    assert thresholds[1] == pytest.approx(np.quantile(x[1, :30], 1 - 1e-3))
    assert np.isnan(thresholds[2])
    assert thresholds[3] == 7.0


def test_per_context_rows_are_calibrated_separately():
    rng = np.random.default_rng(10)
    x = np.vstack([rng.exponential(1.0, 20_000), 10.0 * rng.exponential(1.0, 20_000)])
    x[1, ::7] = np.nan
    thresholds, fallback = pot_thresholds(x, risk=1e-4)
    assert not fallback.any()
    assert thresholds[0] == pytest.approx(np.log(1e4), rel=0.1)
    assert thresholds[1] == pytest.approx(10 * np.log(1e4), rel=0.1)
    assert thresholds[1] == pytest.approx(pot_threshold(x[1][~np.isnan(x[1])], risk=1e-4))


@pytest.mark.parametrize("initial_quantile, risk", [(0.98, 1e-3), (0.9, 1e-2)])
def test_per_context_thresholds_are_pot_fit_of_each_row_bit_for_bit(initial_quantile, risk):
    """pot_thresholds fits rows with as many excesses together (_fit_gpd_rows): each row's
    threshold must still be exactly pot_fit's on its own finite scores."""
    rng = np.random.default_rng(12)
    x = np.vstack([
        rng.normal(size=(40, 1000)),                     # light tails
        rng.standard_t(2, size=(40, 1000)),              # heavy tails
        rng.poisson(3, size=(40, 1000)).astype(float),   # ties at the initial quantile
        rng.uniform(size=(10, 1000)),                    # bounded: gamma near -1
    ])
    x[rng.random(x.shape) < 0.1] = np.nan
    x[5, 20:] = np.nan  # too few scores: the quantile fallback
    x[6] = np.nan  # none
    thresholds, fallback = pot_thresholds(x, risk=risk, initial_quantile=initial_quantile)
    for row, (threshold, fell_back) in enumerate(zip(thresholds, fallback)):
        finite = x[row][~np.isnan(x[row])]
        if finite.size == 0:
            assert np.isnan(threshold) and fell_back
            continue
        fit = pot_fit(finite, risk=risk, initial_quantile=initial_quantile)
        assert (threshold, fell_back) == (fit.threshold, fit.fallback), row
    assert fallback[5] and fallback[6] and (~fallback).sum() > 80  # most rows get a GPD fit


def test_global_fallback_warns_and_uses_the_quantile():
    scores = np.arange(100.0)  # 2 excesses over the 0.98 quantile < min_excesses=10
    with pytest.warns(RuntimeWarning, match="fell back"):
        z = pot_threshold(scores, risk=1e-3)
    assert z == pytest.approx(np.quantile(scores, 1 - 1e-3))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"risk": 0.05}, "smaller than 1 - initial_quantile"),
        ({"risk": 0.0}, "risk"),
        ({"initial_quantile": 1.0}, "initial_quantile"),
        ({"min_excesses": 1}, "min_excesses"),
        # not numbers, or not finite: a TypeError or OverflowError from the comparisons before
        ({"risk": None}, "risk"),
        ({"risk": "0.001"}, "risk"),
        ({"risk": np.nan}, "risk"),
        ({"initial_quantile": None}, "initial_quantile"),
        ({"min_excesses": None}, "min_excesses"),
        ({"min_excesses": np.inf}, "min_excesses"),
        ({"min_excesses": np.nan}, "min_excesses"),
        ({"min_excesses": 10.5}, "min_excesses"),
        ({"min_excesses": True}, "min_excesses"),
    ],
)
def test_bad_parameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pot_threshold(np.arange(1000.0), **kwargs)
    with pytest.raises(ValueError, match=match):
        pot_fit(np.arange(1000.0), **kwargs)
    with pytest.raises(ValueError, match=match):
        pot_thresholds(np.arange(1000.0)[None, :], **kwargs)


def test_min_excesses_may_be_an_integral_float():
    assert pot_fit(np.arange(1000.0), min_excesses=10.0) == pot_fit(np.arange(1000.0), min_excesses=10)


def test_bad_scores_raise():
    with pytest.raises(ValueError, match="infinite"):
        pot_threshold(np.array([1.0, np.inf, 2.0]))
    with pytest.raises(ValueError, match="no finite"):
        pot_threshold(np.full(10, np.nan))
    with pytest.raises(ValueError, match="2-D"):
        pot_thresholds(np.arange(10.0))
    with pytest.raises(ValueError, match="row 1"):
        pot_thresholds(np.array([[1.0, 2.0], [np.inf, 1.0]]))


def test_scores_tied_with_the_initial_quantile_up_to_their_last_bits_are_not_excesses():
    """A detector's scores of sparse counts repeat one value up to rounding. Those "excesses" of
    2e-16 made the GPD fit gamma 19 and sigma 5e-16, and the threshold 4e8: nothing could alert.
    They are ties now, and the fit is that of the real tail alone."""
    tail = np.random.default_rng(0).exponential(0.3, 100) + 1.0
    bulk = np.r_[np.zeros(9000), np.full(800, 1.0)]
    tied = pot_fit(np.r_[bulk, np.full(100, 1.0 + 2e-16), tail])
    exact = pot_fit(np.r_[bulk, np.full(100, 1.0), tail])  # the same scores, ties exact
    assert not tied.fallback and tied.n_excesses == 100
    assert (tied.gamma, tied.sigma, tied.threshold) == (exact.gamma, exact.sigma, exact.threshold)
    assert tied.threshold < 5.0
    per_row = pot_thresholds(np.r_[bulk, np.full(100, 1.0 + 2e-16), tail][None, :])
    assert per_row.thresholds[0] == tied.threshold


def test_fewer_excesses_than_the_risk_asks_for_fall_back_to_the_quantile():
    """With ties at the initial quantile, less than the target risk lies above it: the GPD
    quantile extrapolated below every score (-50 for scores >= 0), and every point alerted."""
    scores = np.zeros(10_000)
    scores[:50] = np.arange(1.0, 51.0)  # 50 excesses, fewer than risk x n = 100
    with pytest.warns(RuntimeWarning, match="or than the 100 that risk=0.01 asks for"):
        assert pot_threshold(scores, risk=0.01, initial_quantile=0.98) == np.quantile(scores, 0.99) == 0.0
    per_row = pot_thresholds(scores[None, :], risk=0.01, initial_quantile=0.98)
    assert per_row.fallback[0] and per_row.thresholds[0] == 0.0


def test_parameters_given_as_0d_arrays_are_their_values():
    scores = np.abs(np.random.default_rng(0).standard_t(3, 2000))
    expected = pot_threshold(scores, risk=1e-4, initial_quantile=0.98, min_excesses=10)
    got = pot_threshold(scores, risk=np.array(1e-4), initial_quantile=np.array(0.98), min_excesses=np.array(10))
    assert got == expected


def _counts_lattice(seed=4):
    """502 scores of a sparse count context: a continuous bulk below 4.1, then the scores of
    1 to 5 events, repeated (made after a failed-logins context of make_security_panel)."""
    rng = np.random.default_rng(seed)
    tail = np.repeat([6.1139, 12.2278, 18.3417, 24.4556, 30.5695], [62, 5, 3, 1, 2])
    return rng.permutation(np.concatenate([rng.uniform(0.0, 4.1, 429), tail]))


def test_the_initial_threshold_is_a_score_so_a_lattice_of_counts_fits_no_heavy_tail():
    # An interpolated initial threshold (12.1055) lay just below the scores of 2 events: five
    # excesses of 0.12 beside steps of 6.1 made gamma 2.3 and the threshold 288, over 9x the
    # largest score, where the context could never alert.
    x = _counts_lattice()
    fit = pot_fit(x, risk=1e-3)
    assert fit.initial_threshold == 6.1139
    assert not fit.fallback and fit.gamma < 0.5
    assert x.max() - 2.0 < fit.threshold < x.max()  # above all but the two 5-event scores
    assert pot_thresholds(x[None, :], risk=1e-3).thresholds[0] == fit.threshold


def test_a_fit_contradicted_by_its_own_scores_falls_back_to_the_quantile():
    # Ten tied excesses fit a uniform law whose 1 - risk quantile (0.95) lay below the tied value:
    # 2% of the training points, and every later score of 1, alerted with risk=1e-3.
    x = np.zeros(502)  # as long as _counts_lattice(), to stack them
    x[:10] = 1.0
    fit = pot_fit(x, risk=1e-3)
    assert fit.fallback and fit.n_excesses == 10
    assert fit.threshold == np.quantile(x, 1 - 1e-3) == 1.0
    with pytest.warns(RuntimeWarning, match="exceeded by more of them than risk=0.001 allows"):
        assert pot_threshold(x, risk=1e-3) == 1.0
    rows = pot_thresholds(np.stack([x, _counts_lattice()]), risk=1e-3)
    assert rows.thresholds[0] == 1.0 and rows.fallback.tolist() == [True, False]


def test_the_fit_does_not_depend_on_the_order_of_the_scores():
    # The excesses were fitted in the scores' order, and their sums rounded differently: 15
    # thresholds from 20 orders of the same scores (a global threshold then depended on the order
    # of the contexts, and Spark had to rebuild a single machine's order).
    y = np.random.default_rng(5).standard_normal(5000)
    orders = [np.random.default_rng(k).permutation(y) for k in range(20)]
    assert len({pot_fit(z, risk=1e-3).threshold for z in orders}) == 1
    assert len(set(pot_thresholds(np.stack(orders), risk=1e-3).thresholds.tolist())) == 1


@pytest.mark.parametrize("tiny", [1e-160, 1e-300])
def test_fit_gpd_finds_the_maximum_beside_an_excess_far_below_the_others(tiny):
    # The positive root's interval ends at 2 (1 - y_min) / y_min**2, infinite once y_min**2
    # underflows: the scan found no root and the exponential (gamma 0) won against gamma ~0.5.
    rng = np.random.default_rng(5)
    y = np.sort(np.r_[tiny, stats.genpareto.rvs(0.5, size=200, random_state=rng)])
    gamma, sigma = fit_gpd(y)
    c, _, scale = stats.genpareto.fit(y, floc=0)
    ours = stats.genpareto.logpdf(y, gamma, scale=sigma).sum()
    assert gamma > 0.3 and ours >= stats.genpareto.logpdf(y, c, scale=scale).sum() - 1e-6


@pytest.mark.gpu
def test_pot_of_scores_on_the_gpu_is_the_pot_of_their_host_copy():
    # np.asarray of a CuPy array is a TypeError: pot_fit, pot_threshold and pot_thresholds refused device scores,
    # which calibrate moves to the host itself but callers of these public functions need not.
    import cupy as cp

    scores = np.random.default_rng(5).exponential(1.0, 20_000)
    assert pot_threshold(cp.asarray(scores), risk=1e-4) == pot_threshold(scores, risk=1e-4)
    assert pot_fit(cp.asarray(scores)) == pot_fit(scores)
    per_context = scores.reshape(4, -1)
    for on_gpu, on_host in zip(pot_thresholds(cp.asarray(per_context)), pot_thresholds(per_context)):
        np.testing.assert_array_equal(on_gpu, on_host)
