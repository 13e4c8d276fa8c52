"""RollingZScoreDetector against hand-computed values, thresholds, and the device errors."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import tsanomaly
from tsanomaly import Panel, RollingZScoreDetector
from tsanomaly.backend import GPUUnavailableError, resolve_device
from tsanomaly.detectors.baseline import rolling_robust_zscore
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


def test_new_data_before_the_fit_end_is_refused():
    index = pd.date_range("2024-01-01", periods=60, freq="1h")
    panel = Panel(np.random.default_rng(2).normal(size=(1, 60)), ["a"], index)
    det = RollingZScoreDetector(window=4, seasonal_period=None).fit(panel)
    with pytest.raises(ValueError, match="must start after the fitted history"):
        det.score(panel)
    with pytest.raises(ValueError, match="frequency"):
        det.score(Panel(np.ones((1, 3)), ["a"], pd.date_range("2024-02-01", periods=3, freq="15min")))


@pytest.mark.parametrize("bad", [dict(window=1), dict(direction="sideways"), dict(seasonal_period=0), dict(contamination=0.7), dict(threshold="magic")])
def test_bad_parameters_are_refused_at_fit(bad):
    with pytest.raises(ValueError):
        RollingZScoreDetector(**bad).fit(np.ones((1, 50)))


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


def test_cuda_request_without_gpu_says_why():
    if tsanomaly.gpu_available():
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
    per_ctx = RollingZScoreDetector(window=20, seasonal_period=None, threshold="pot", per_context=True).fit(x)
    assert per_ctx.threshold_.shape == (30,) and np.isfinite(per_ctx.threshold_).all()
    assert len(set(np.round(per_ctx.threshold_, 9))) > 1
