"""RollingZScoreDetector against hand-computed values, thresholds, and the device errors."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import tsanomaly
from count_panels import busy_and_sparse_counts
from tsanomaly import Panel, RollingZScoreDetector
from tsanomaly.backend import GPUUnavailableError, resolve_device
from tsanomaly.detectors.baseline import COUNT_SCALE_FLOOR, rolling_robust_zscore
from tsanomaly.thresholds import calibrate


def test_score_is_the_robust_zscore_of_the_preceding_points():
    # Past of the last point: [1, 2, 3, 4] -> median 2.5, |dev| = [1.5, .5, .5, 1.5] -> MAD 1.0.
    x = np.array([[1.0, 2.0, 3.0, 4.0, 100.0]])
    det = RollingZScoreDetector(window=4, seasonal_period=None, min_periods=4, floor_fraction=0.0)
    scores = det.fit_score(x).values
    assert np.isnan(scores[0, :4]).all()  # fewer than min_periods past points
    assert scores[0, 4] == pytest.approx((100.0 - 2.5) / (1.4826 * 1.0))


def test_seasonal_past_uses_the_same_phase():
    # Period 3: the last point (phase 2) is compared with x[5] = 7 and x[2] = 3 -> median 5, MAD 2.
    x = np.array([[0.0, 0.0, 3.0, 0.0, 0.0, 7.0, 0.0, 0.0, 11.0]])
    det = RollingZScoreDetector(window=2, seasonal_period=3, min_periods=2, floor_fraction=0.0)
    scores = det.fit_score(x).values
    assert scores[0, 8] == pytest.approx((11.0 - 5.0) / (1.4826 * 2.0))


def test_direction_up_and_down():
    x = np.array([[5.0, 6.0, 5.0, 6.0, 0.0]])
    up = RollingZScoreDetector(window=4, seasonal_period=None, min_periods=4, direction="up", floor_fraction=0)
    down = RollingZScoreDetector(window=4, seasonal_period=None, min_periods=4, direction="down", floor_fraction=0)
    assert up.fit_score(x).values[0, 4] < 0 < down.fit_score(x).values[0, 4]


def test_score_continues_from_the_kept_history():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 200))
    det = RollingZScoreDetector(window=6, seasonal_period=5)
    full = det.fit_score(x).values
    det.fit(x[:, :150])
    np.testing.assert_allclose(det.score(x[:, 150:]).values, full[:, 150:], rtol=1e-12)


def test_gap_after_fit_counts_as_missing():
    index = pd.date_range("2024-01-01", periods=100, freq="1h")
    x = np.random.default_rng(1).normal(size=(2, 100))
    det = RollingZScoreDetector(window=4, seasonal_period=None, min_periods=4).fit(
        Panel(x[:, :50], ["a", "b"], index[:50])
    )
    later = Panel(x[:, 52:], ["a", "b"], index[52:])  # two buckets missing in between
    assert det.steps_after_fit(later) == 3
    with_gap = np.c_[x[:, :50], np.full((2, 2), np.nan), x[:, 52:]]
    expected = np.abs(rolling_robust_zscore(with_gap, 48, 1, 4, 4, det.scale_floor_))
    np.testing.assert_allclose(det.score(later).values, expected, rtol=1e-12, equal_nan=True)


@pytest.mark.parametrize("params", [{"seasonal_period": None}, {"seasonal_period": 6, "level_window": 12}])
def test_a_context_without_data_at_fit_starts_cold_like_an_unseen_one(params):
    """A fitted context that was all NaN at fit kept the 1e-12 placeholder floor, so its sparse
    new counts (a quiet ASN: 0 or 1 event an hour) scored about 1e12; it scores as an unseen one."""
    rng = np.random.default_rng(3)
    x = np.vstack([rng.poisson(20, size=(1, 90)), (rng.random((1, 90)) < 0.2)]).astype(float)
    x[1, :60] = np.nan  # no data for the quiet context in the history
    index = pd.date_range("2024-01-01", periods=90, freq="1h")
    det = RollingZScoreDetector(window=4, **params).fit(Panel(x[:, :60], ["busy", "quiet"], index[:60]))
    assert det.fitted_without_data().tolist() == [False, True]
    seen = det.score(Panel(x[:, 60:], ["busy", "quiet"], index[60:])).values[1]
    unseen = det.score(Panel(x[1:, 60:], ["new"], index[60:])).values[0]
    np.testing.assert_array_equal(seen, unseen)
    assert np.isfinite(seen).any() and np.nanmax(seen) < 100


def test_new_data_before_the_fit_end_is_refused():
    index = pd.date_range("2024-01-01", periods=60, freq="1h")
    panel = Panel(np.random.default_rng(2).normal(size=(1, 60)), ["a"], index)
    det = RollingZScoreDetector(window=4, seasonal_period=None).fit(panel)
    with pytest.raises(ValueError, match="must start after the fitted history"):
        det.score(panel)
    with pytest.raises(ValueError, match="frequency"):
        det.score(Panel(np.ones((1, 3)), ["a"], pd.date_range("2024-02-01", periods=3, freq="15min")))


def test_level_window_adds_the_long_comparison_in_training_units():
    # Short level window (< 64 points): the level median and MAD are recomputed at every point,
    # so the level part is the plain rolling z-score over the preceding `level_window` points.
    rng = np.random.default_rng(5)
    x = rng.poisson(20, size=(2, 300)).astype(float)
    x[1, 250] = 90.0
    det = RollingZScoreDetector(window=4, seasonal_period=6, min_periods=2, level_window=60, contamination=0.01)
    scores = det.fit_score(x).values
    floor = det.scale_floor_
    seasonal = np.abs(rolling_robust_zscore(x, 300, 6, 4, 2, floor))
    level = np.abs(rolling_robust_zscore(x, 300, 1, 60, 2, floor))
    units = [np.quantile(part[np.isfinite(part)], 0.99) for part in (seasonal, level)]
    np.testing.assert_allclose(det.component_units_, units, rtol=1e-12)
    expected = np.nansum([seasonal / units[0], level / units[1]], axis=0)
    expected[np.isnan(seasonal) & np.isnan(level)] = np.nan
    np.testing.assert_allclose(scores, expected, rtol=1e-12, equal_nan=True)
    # The burst stands out in both comparisons, so the sum beats either part alone.
    assert scores[1, 250] > max(seasonal[1, 250] / units[0], level[1, 250] / units[1])


def test_component_units_are_never_below_the_gaussian_quantile():
    # An exactly periodic history: every seasonal z-score is 0, so its training quantile is 0 and
    # the unit falls back to the Gaussian quantile of |z| for the tail (two-sided: 1 - 0.01 / 2).
    from statistics import NormalDist

    x = np.tile(np.array([3.0, 9.0, 4.0, 12.0, 5.0, 7.0]), 40)[None, :] + np.linspace(0, 1e-9, 240)
    for direction, tail in (("both", 0.005), ("up", 0.01)):
        det = RollingZScoreDetector(window=4, seasonal_period=6, level_window=30, contamination=0.01, direction=direction)
        det.fit(x)
        assert det.component_units_[0] == pytest.approx(NormalDist().inv_cdf(1 - tail))


def test_rolling_robust_zscore_equals_a_point_by_point_reference_with_missing_points():
    # Missing points, pasts that reach before the first column (fewer points than the window)
    # and too few finite points for a score, against each point's past taken one by one.
    rng = np.random.default_rng(12)
    x = rng.poisson(5.0, size=(4, 70)).astype(float)
    x[rng.random(x.shape) < 0.2] = np.nan
    x[3, :40] = np.nan
    lag, window, min_periods, n_out = 3, 6, 3, 66
    floor = np.array([0.5, 1e-12, 2.0, 0.5])
    z = rolling_robust_zscore(x, n_out, lag, window, min_periods, floor)
    expected = np.full((4, n_out), np.nan)
    for r in range(4):
        for k, column in enumerate(range(70 - n_out, 70)):
            past = np.array([x[r, column - lag * j] for j in range(1, window + 1) if column - lag * j >= 0])
            past = past[np.isfinite(past)]
            if len(past) >= min_periods:
                median = np.median(past)
                scale = max(1.4826 * np.median(np.abs(past - median)), floor[r])
                expected[r, k] = (x[r, column] - median) / scale
    np.testing.assert_array_equal(np.isnan(z), np.isnan(expected))
    np.testing.assert_allclose(z, expected, rtol=1e-14, atol=0)


def test_refresh_compares_each_point_with_its_anchors_past():
    # refresh=4, origin=1: anchors are the columns c with (1 + c) % 4 == 0, i.e. 3, 7, 11, ...
    x = np.arange(20.0)[None, :] ** 1.5
    z = rolling_robust_zscore(x, 10, 1, 5, 5, np.array([1e-12]), refresh=4, origin=1)
    for k, column in enumerate(range(10, 20)):
        anchor = column - (1 + column) % 4
        past = x[0, anchor - 5 : anchor]
        median = np.median(past)
        expected = (x[0, column] - median) / (1.4826 * np.median(np.abs(past - median)))
        assert z[0, k] == pytest.approx(expected, rel=1e-12)


def test_long_level_window_refreshes_on_the_fits_clock():
    # level_window 2048: statistics refreshed every 32 points, at positions 0, 32, 64, ... counted
    # from the first fitted time, wherever the fit ends; the kept history covers the window.
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2, 3000))
    for split in (2500, 2501, 2517):
        det = RollingZScoreDetector(window=3, seasonal_period=24, level_window=2048).fit(x[:, :split])
        n_new = x.shape[1] - split
        seasonal = np.abs(rolling_robust_zscore(x, n_new, 24, 3, 3, det.scale_floor_))
        level = np.abs(rolling_robust_zscore(x, n_new, 1, 2048, 3, det.scale_floor_, refresh=32, origin=0))
        expected = seasonal / det.component_units_[0] + level / det.component_units_[1]
        np.testing.assert_allclose(det.score(x[:, split:]).values, expected, rtol=1e-12)


def test_window_of_two_defaults_min_periods_to_the_window():
    # The default min_periods is capped at the window: window=2 is allowed and gets 2
    # (max(3, window // 2) alone would be 3, and fit used to refuse it).
    x = np.array([[1.0, 3.0, 10.0]])
    det = RollingZScoreDetector(window=2, seasonal_period=None, floor_fraction=0.0)
    scores = det.fit_score(x).values
    assert det._min_periods() == 2
    assert np.isnan(scores[0, :2]).all()  # fewer than 2 past points
    # Past [1, 3]: median 2, |dev| = [1, 1] -> MAD 1.
    assert scores[0, 2] == pytest.approx((10.0 - 2.0) / (1.4826 * 1.0))
    # Defaults of larger windows are unchanged.
    assert [RollingZScoreDetector(window=w)._min_periods() for w in (3, 5, 6, 14)] == [3, 3, 3, 7]
    # An out-of-range value is reported as resolved.
    with pytest.raises(ValueError, match=r"min_periods must lie in \[1, window=4\], got 5$"):
        RollingZScoreDetector(window=4, min_periods=5).fit(np.ones((1, 50)))


@pytest.mark.parametrize("bad", [
    dict(window=1), dict(direction="sideways"), dict(seasonal_period=0), dict(contamination=0.7), dict(threshold="magic"),
    dict(level_window=2, min_periods=3), dict(level_window=10.0),
])
def test_bad_parameters_are_refused_at_fit(bad):
    with pytest.raises(ValueError):
        RollingZScoreDetector(**bad).fit(np.ones((1, 50)))


@pytest.mark.parametrize("bad", ["nan", float("nan"), float("inf"), -float("inf"), -0.1, True, None])
def test_floor_fraction_must_be_a_finite_number_at_least_zero(bad):
    # "nan" (from a command line) used to fail with a TypeError; NaN silently dropped every
    # floor to 1e-12 (a threshold near 6e12 that missed spikes), inf made every score ~0.
    with pytest.raises(ValueError, match=r"floor_fraction must be a finite number >= 0, got "):
        RollingZScoreDetector(floor_fraction=bad).fit(np.ones((1, 50)))


def test_floor_fraction_accepts_any_finite_number_at_least_zero():
    x = np.random.default_rng(5).normal(size=(2, 60))
    for good in (0, 0.0, np.float32(0.5), 2):
        assert np.isfinite(RollingZScoreDetector(window=4, seasonal_period=None, floor_fraction=good).fit_score(x).values[:, 4:]).all()


@pytest.mark.parametrize("params, message", [
    (dict(seasonal_period=True), "seasonal_period must be a positive integer or None, got True"),
    (dict(seasonal_period=np.True_), "seasonal_period must be a positive integer or None"),
    (dict(seasonal_period=24.0), "seasonal_period must be a positive integer or None"),
    (dict(min_periods=True), "min_periods must be None or an integer, got True"),
    (dict(min_periods="3"), "min_periods must be None or an integer, got '3'"),
    (dict(min_periods=2.5), "min_periods must be None or an integer"),
    (dict(window=True), "window must be an integer >= 2"),
])
def test_integer_parameters_refuse_bools_and_non_integers(params, message):
    # True used to pass as period 1 / min_periods 1 (both are ints to isinstance), and
    # min_periods went through int(), which also read "3" and 2.5.
    with pytest.raises(ValueError, match=message):
        RollingZScoreDetector(**params).fit(np.ones((1, 50)))


def test_quantile_threshold_global_and_per_context():
    rng = np.random.default_rng(3)
    scores = np.vstack([rng.normal(0, 1, 10_000), rng.normal(0, 5, 10_000)])
    per_ctx, global_value = calibrate(scores, "quantile", contamination=0.01, per_context=True)
    assert global_value == pytest.approx(np.quantile(scores, 0.99))
    assert per_ctx[0] == pytest.approx(np.quantile(scores[0], 0.99))
    assert per_ctx[1] == pytest.approx(np.quantile(scores[1], 0.99))
    fixed, value = calibrate(scores, 3.5)
    assert value == 3.5 and (fixed == 3.5).all()


def test_predict_flags_scores_above_the_threshold():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(4, 400))
    det = RollingZScoreDetector(window=10, seasonal_period=None, threshold=2.5).fit(x[:, :300])
    scores = det.score(x[:, 300:]).values
    flags = det.predict(x[:, 300:]).values
    np.testing.assert_array_equal(flags, np.nan_to_num(scores, nan=-np.inf) >= 2.5)


def test_cuda_request_without_gpu_says_why(gpu_visible):
    if gpu_visible:
        pytest.skip("a GPU is visible")
    with pytest.raises(GPUUnavailableError, match=r"tsanomaly\[gpu\]|no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_device("tpu")
    assert resolve_device("auto") == "cpu"


def test_import_needs_neither_cupy_nor_torch():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['cupy'] = None; sys.modules['torch'] = None; "
        "import tsanomaly, tsanomaly.detectors, tsanomaly.datasets; "
        "print(tsanomaly.resolve_device('auto'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "cpu"


def test_pot_threshold_is_an_option_of_every_detector():
    rng = np.random.default_rng(5)
    x = rng.standard_t(df=4, size=(30, 600))
    det = RollingZScoreDetector(window=20, seasonal_period=None, threshold="pot", contamination=0.001).fit(x)
    quantile = RollingZScoreDetector(window=20, seasonal_period=None, contamination=0.001).fit(x)
    assert np.isfinite(det.global_threshold_)
    # Both estimate the same 0.999 quantile of the training scores; POT extrapolates a fitted tail.
    assert 0.5 * quantile.global_threshold_ < det.global_threshold_ < 2.0 * quantile.global_threshold_
    # calibrate's "pot": tsanomaly.pot fitted to every finite training score (all contexts
    # pooled), risk = contamination, initial quantile min(0.98, 1 - 2 * contamination) = 0.98.
    from tsanomaly.pot import pot_fit, pot_thresholds

    train = quantile.fit_score(x).values  # the same detector parameters, so the same scores
    finite = train[np.isfinite(train)]
    fitted = pot_fit(finite, risk=0.001, initial_quantile=0.98)
    assert not fitted.fallback  # a real GPD tail, not the quantile rule in disguise
    assert det.global_threshold_ == pytest.approx(fitted.threshold, rel=1e-12)
    assert np.all(det.threshold_ == det.global_threshold_)  # one threshold for all contexts
    # ...which is not the quantile rule's 0.999 quantile of the same scores.
    assert quantile.global_threshold_ == pytest.approx(np.quantile(finite, 0.999), rel=1e-12)
    assert det.global_threshold_ != pytest.approx(quantile.global_threshold_, rel=1e-3)  # about half a percent apart here
    per_ctx = RollingZScoreDetector(window=20, seasonal_period=None, threshold="pot", per_context=True).fit(x)
    assert per_ctx.threshold_.shape == (30,) and np.isfinite(per_ctx.threshold_).all()
    assert len(set(np.round(per_ctx.threshold_, 9))) > 1
    # Per context: each row's own POT fit (its own quantile where too few excesses), every row
    # having the 50 finite scores a context needs for its own threshold.
    assert (np.isfinite(train).sum(axis=1) >= 50).all()
    own = pot_thresholds(train, risk=0.001, initial_quantile=0.98)
    np.testing.assert_allclose(per_ctx.threshold_, own.thresholds, rtol=1e-12)
    assert per_ctx.global_threshold_ == pytest.approx(fitted.threshold, rel=1e-12)
    # Where the GPD was fitted, that differs from the row's 0.999 quantile.
    row_quantiles = np.nanquantile(train, 0.999, axis=1)
    gpd_rows = ~own.fallback
    assert gpd_rows.sum() >= 5
    assert (np.abs(per_ctx.threshold_[gpd_rows] - row_quantiles[gpd_rows]) > 1e-6).all()


@pytest.mark.gpu
def test_gpu_scores_equal_cpu_scores_with_a_level_window():
    from tsanomaly import backend

    rng = np.random.default_rng(7)
    x = rng.poisson(30, size=(5, 2000)).astype(float)
    x[2, 1900] = 200.0
    x[4, 100:110] = np.nan
    cpu = RollingZScoreDetector(window=5, seasonal_period=24, level_window=1024, device="cpu").fit(x[:, :1500])
    gpu = RollingZScoreDetector(window=5, seasonal_period=24, level_window=1024, device="cuda").fit(x[:, :1500])
    np.testing.assert_allclose(gpu.component_units_, cpu.component_units_, rtol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(gpu.score(x[:, 1500:]).values), cpu.score(x[:, 1500:]).values,
                               rtol=1e-12, equal_nan=True)


def test_scores_do_not_depend_on_the_block_of_contexts(monkeypatch):
    """rolling_robust_zscore gathers its past windows a block of contexts at a time
    (_MAX_BLOCK_ELEMENTS); blocks of one context give the same scores, bit for bit."""
    from tsanomaly.detectors import baseline as baseline_module

    rng = np.random.default_rng(11)
    x = rng.poisson(30, size=(7, 24 * 20)).astype(float)
    x[2, 100:140] = np.nan

    def fit_and_score():
        det = RollingZScoreDetector(window=5, seasonal_period=24, level_window=96, device="cpu").fit(x[:, :400])
        return det.component_units_, det.score(x[:, 400:]).values

    units, scores = fit_and_score()
    monkeypatch.setattr(baseline_module, "_MAX_BLOCK_ELEMENTS", {"cpu": 1, "gpu": 1})
    block_units, block_scores = fit_and_score()
    np.testing.assert_array_equal(block_units, units)
    np.testing.assert_array_equal(block_scores, scores)
    assert np.isfinite(scores).mean() > 0.9


@pytest.mark.parametrize("level", [0.0, 1e6 + 0.1])
def test_a_context_flat_for_the_whole_fit_is_floored_like_one_with_a_single_event(level):
    """A context with no spread at all in the fit had the 1e-12 fallback floor, so one extra
    event scored 1e12 (and a constant 1e6 + 0.1, whose float standard deviation is 2e-10, about
    4e10). It is now floored as if it had had one event of one unit (the unit tsanomaly.scaling
    gives a constant row: 1 for zeros, 1e-3 x |value| otherwise): its first events score exactly
    like those of a context that had a single such event (a floor of a whole unit made it need
    seven events to alert where the other needed one)."""
    rng = np.random.default_rng(0)
    unit = 1.0 if level == 0 else 1e-3 * level
    x = rng.poisson(5, size=(3, 504)).astype(float)
    x[1] = level  # never an event
    x[2] = level
    x[2, 100] = level + unit  # one event of one unit
    new = np.full((3, 24), level)
    new[0] = 5.0
    new[0, 5] = 15.0
    new[1:, 5] = level + 3 * unit  # three events
    det = RollingZScoreDetector(device="cpu").fit(x)
    scores = det.score(new).values[:, 5]
    if level == 0:
        # Counts: both floored at half a count (COUNT_SCALE_FLOOR), so three events score 6 in both.
        assert det.scale_floor_[1] == det.scale_floor_[2] == 0.5
        assert scores[1] == scores[2] == 6.0
    else:
        assert det.scale_floor_[1] == pytest.approx(0.1 * unit * np.sqrt(503) / 504, rel=1e-12)
        assert det.scale_floor_[1] == pytest.approx(det.scale_floor_[2], rel=1e-6)
        assert scores[1] == pytest.approx(scores[2], rel=1e-6) and scores[1] > 100
        assert len(det.alerts(new)) >= 2  # the first events of both quiet contexts alert
    # The fit's threshold is calibrated on the same floors.
    assert det.global_threshold_ < 10
    # A context with spread keeps floor_fraction x its spread (counts: at least half a count).
    spread = max(1.4826 * np.median(np.abs(x[0] - np.median(x[0]))), x[0].std())
    assert det.scale_floor_[0] == pytest.approx(max(0.1 * spread, COUNT_SCALE_FLOOR))
    assert scores[0] == pytest.approx(4.4966, abs=1e-4)  # unchanged
    # floor_fraction = 0 leaves only the past's own MAD and the minimum: half a count for counts,
    # 1e-12 otherwise, as documented.
    assert RollingZScoreDetector(floor_fraction=0.0, device="cpu").fit(x).scale_floor_[1] == (0.5 if level == 0 else 1e-12)


@pytest.mark.gpu
def test_gpu_floors_of_flat_contexts_equal_cpu_floors():
    from tsanomaly import backend

    x = np.random.default_rng(8).poisson(5, size=(4, 200)).astype(float)
    x[1], x[2], x[3] = 0.0, 7.0, np.nan
    cpu = RollingZScoreDetector(device="cpu").fit(x[:, :150])
    gpu = RollingZScoreDetector(device="cuda").fit(x[:, :150])
    # CuPy's nanstd sums in another order than NumPy's: the last bits may differ where it sets the floor.
    np.testing.assert_allclose(backend.to_numpy(gpu.scale_floor_), cpu.scale_floor_, rtol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(gpu.score(x[:, 150:]).values), cpu.score(x[:, 150:]).values,
                               rtol=1e-12, equal_nan=True)


class _DeviceArray:
    """Stands in for a CuPy array kept by a fit on the GPU: CuPy refuses np.asarray (implicit copies)."""

    __module__ = "cupy._core.core"  # how tsanomaly.backend tells a device array

    def __init__(self, array):
        self._array = np.asarray(array)

    shape = property(lambda self: self._array.shape)
    ndim = property(lambda self: self._array.ndim)

    def __getitem__(self, key):
        return _DeviceArray(self._array[key])

    def get(self):
        return self._array.copy()

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()`")


def test_alerts_explain_on_the_host_with_a_history_kept_on_the_gpu():
    """alerts() explains on the host; a fit on the GPU keeps history_ there, and np.asarray of it
    raised CuPy's TypeError: a detector fitted on the GPU could not list its alerts."""
    rng = np.random.default_rng(0)
    x = rng.poisson(20, size=(3, 24 * 15)).astype(float)
    det = RollingZScoreDetector(device="cpu").fit(x[:, : 24 * 14])
    new = x[:, 24 * 14 :].copy()
    new[1, 5] = 400.0
    scores = det.score(new)
    expected = det.alerts(new, scores=scores)
    det.history_ = _DeviceArray(det.history_)
    got = det.alerts(new, scores=scores)
    assert len(got) >= 1
    pd.testing.assert_frame_equal(got, expected)


def test_sparse_count_contexts_do_not_lift_the_global_threshold_above_the_others_anomalies():
    # Floored at a tenth of their spread, the single events of sparse contexts (0.03 an hour) scored
    # about 58 and set the one global threshold (6.4 -> 65.6): a 6-hour outage (16.2) was missed.
    n, n_fit = 24 * 21, 24 * 14
    x = busy_and_sparse_counts(n)
    dense = x[:16].copy()
    x[1, n_fit + 60 : n_fit + 66] = 0  # an outage
    alone = RollingZScoreDetector(device="cpu").fit(dense[:, :n_fit])
    det = RollingZScoreDetector(device="cpu").fit(x[:, :n_fit])
    assert det.global_threshold_ < 1.1 * alone.global_threshold_
    assert (det.scale_floor_[16:] == COUNT_SCALE_FLOOR).all()
    flags = det.predict(x[:, n_fit:]).values
    assert flags[1, 60:66].any() and not flags[16:].any()


def test_an_alert_is_explained_by_the_history_its_score_used_when_labels_mix_numbers_and_text():
    """Fitted on 1, 2, 3, 4; scored on 1, 2, "3", 4 (one level of numbers and text): "3" is unseen
    there and scored cold. Its explanation matched the labels again on the alerting contexts alone,
    all text, where "3" reads as the fitted 3: expected 1042 (3's history) instead of 50."""
    rng = np.random.default_rng(0)
    hist_idx = pd.date_range("2024-01-01", periods=200, freq="h")
    new_idx = pd.date_range(hist_idx[-1] + pd.Timedelta("1h"), periods=24, freq="h")
    x = rng.poisson(50, (4, 224)).astype(float)
    x[2, :200] += 1000  # the fitted 3 lives around 1050
    det = RollingZScoreDetector(seasonal_period=None, window=5, min_periods=1, device="cpu").fit(
        Panel(x[:, :200], pd.Index([1, 2, 3, 4], name="asn"), hist_idx))
    new_values = x[:, 200:].copy()
    new_values[2, 1] = 400.0
    new = Panel(new_values, pd.Index([1, 2, "3", 4], dtype=object, name="asn"), new_idx)
    assert det.context_rows(new)[2] == -1
    alerts = det.alerts(new)
    peak = alerts[alerts["asn"] == "3"].iloc[0]
    assert peak["observed"] == 400.0 and peak["expected"] < 100  # its own batch's values, as scored


def test_rolling_robust_zscore_takes_integer_and_boolean_arrays():
    # The gathered blocks took x's type and could not hold NaN or deviations (UFuncTypeError).
    counts = np.random.default_rng(1).poisson(30, (3, 72))
    floor = np.full(3, 0.5)
    expected = rolling_robust_zscore(counts.astype(float), 24, 1, 12, 2, floor)
    np.testing.assert_array_equal(rolling_robust_zscore(counts, 24, 1, 12, 2, floor), expected)
    flags = counts > 30
    np.testing.assert_array_equal(rolling_robust_zscore(flags, 24, 1, 12, 2, floor),
                                  rolling_robust_zscore(flags.astype(float), 24, 1, 12, 2, floor))


def test_an_update_writes_the_kept_history_once():
    # update rolled the history forward through a gather, a mask, a concatenation and a slice: four
    # copies of it at once (1.5 GB more and 4.7 s at 200,000 contexts x 14 days hourly).
    import tracemalloc

    rng = np.random.default_rng(0)
    index = pd.date_range("2024-01-01", periods=24 * 16, freq="h")
    values = rng.poisson(3, (2000, len(index))).astype(float)
    contexts = [f"c{i}" for i in range(2000)]
    det = RollingZScoreDetector().fit(Panel(values[:, :-24], contexts, index[:-24]))
    new = Panel(values[:, -24:], contexts, index[-24:])
    expected = np.concatenate([det.history_, new.values], axis=1)[:, -det.history_.shape[1]:]
    tracemalloc.start()
    try:
        det.update(new)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(det.history_, expected)
    # The new history and the batch's rows for every fitted context, and little else.
    assert peak < 1.3 * det.history_.nbytes + 2 * new.values.nbytes
