"""RollingZScoreDetector: the baseline every other detector must beat.

Each point is compared with the points just before it (or, with
``seasonal_period``, with the same phase of the preceding cycles — the same
hour of the previous days) through a robust z-score: the deviation from their
median in units of their median absolute deviation. Written once against the
array module, so it runs on NumPy and CuPy alike.
"""
from __future__ import annotations

import warnings

import numpy as np

from tsanomaly import backend
from tsanomaly.base import BaseDetector
from tsanomaly.panel import Panel

__all__ = ["RollingZScoreDetector", "rolling_robust_zscore", "MAD_TO_SIGMA", "score_direction"]

#: Scale factor that makes the MAD of Gaussian data estimate its standard deviation.
MAD_TO_SIGMA = 1.4826

# Bound on the gathered (contexts x times x window) block, in elements, so memory stays
# near 0.5 GB however many contexts a panel has.
_MAX_BLOCK_ELEMENTS = 64_000_000


def score_direction(z, direction: str):
    """Signed robust z-scores turned into anomaly scores (higher = more anomalous).

    ``"up"`` keeps rises, ``"down"`` keeps drops (sign flipped), ``"both"`` takes |z|.
    """
    if direction == "both":
        return abs(z)
    if direction == "up":
        return z
    if direction == "down":
        return -z
    raise ValueError(f"direction must be 'up', 'down' or 'both', got {direction!r}")


def rolling_robust_zscore(x, n_out: int, lag: int, window: int, min_periods: int, scale_floor):
    """Robust z-score of the last ``n_out`` points of each row against its past.

    Parameters
    ----------
    x : array, shape (n_contexts, n_times)
        Values (NumPy or CuPy); NaN = missing.
    n_out : int
        Score the last ``n_out`` columns; earlier columns only serve as past.
    lag : int
        Distance between the past points used: 1 for the preceding points,
        the seasonal period for the same phase of previous cycles.
    window : int
        Number of past points (t - lag, t - 2 lag, ..., t - window lag).
    min_periods : int
        Fewest finite past points for a score; below it the score is NaN.
    scale_floor : array, shape (n_contexts,)
        Lower bound of the scale of each row (keeps a flat past from turning a
        tiny change into an enormous score).

    Returns
    -------
    array, shape (n_contexts, n_out)
        ``(x - median(past)) / max(1.4826 * MAD(past), scale_floor)``, signed;
        NaN where the point is missing or has too little past.
    """
    xp = backend.array_module(x)
    n_ctx, n_times = x.shape
    offsets = lag * xp.arange(1, window + 1)
    past_pos = xp.arange(n_times - n_out, n_times)[:, None] - offsets[None, :]  # (n_out, window)
    valid = past_pos >= 0
    past_pos = xp.where(valid, past_pos, 0)
    out = xp.empty((n_ctx, n_out), dtype=xp.float64)
    rows_per_block = max(1, _MAX_BLOCK_ELEMENTS // max(1, n_out * window))
    for lo in range(0, n_ctx, rows_per_block):
        hi = min(n_ctx, lo + rows_per_block)
        past = x[lo:hi][:, past_pos]  # (rows, n_out, window)
        past = xp.where(valid[None], past, xp.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows give NaN, as intended
            median = xp.nanmedian(past, axis=2)
            mad = xp.nanmedian(xp.abs(past - median[..., None]), axis=2)
        count = xp.isfinite(past).sum(axis=2)
        scale = xp.maximum(MAD_TO_SIGMA * mad, scale_floor[lo:hi, None])
        z = (x[lo:hi, n_times - n_out :] - median) / scale
        out[lo:hi] = xp.where(count >= min_periods, z, xp.nan)
    return out


def robust_scale(x, axis=-1):
    """1.4826 x median absolute deviation along ``axis``, ignoring NaN (NumPy or CuPy)."""
    xp = backend.array_module(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        median = xp.nanmedian(x, axis=axis, keepdims=True)
        return MAD_TO_SIGMA * xp.nanmedian(xp.abs(x - median), axis=axis)


class RollingZScoreDetector(BaseDetector):
    """Robust z-score of each point against a rolling median and MAD of the preceding points.

    Parameters
    ----------
    window : int, default 14
        Number of past points compared with each point.
    seasonal_period : int or None, default 24
        When set, the past points are the same phase of the preceding
        ``window`` cycles (with hourly data and 24: the same hour of the
        previous ``window`` days), so a diurnal cycle is not itself an anomaly.
        None compares with the ``window`` points just before.
    min_periods : int or None, default None
        Fewest finite past points for a score (NaN below); None means
        ``max(3, window // 2)``.
    direction : {"both", "up", "down"}, default "both"
        Which deviations count: both, rises only (credential stuffing, bot
        bursts) or drops only (outages).
    floor_fraction : float, default 0.1
        The scale of each point's past is at least this fraction of the
        context's overall spread in the training data (the larger of its
        robust scale and its standard deviation), so a context that was flat
        for a while does not turn one extra event into an alert.
    threshold, contamination, per_context, device
        See :class:`tsanomaly.base.BaseDetector`.

    Notes
    -----
    Score: ``(x_t - median(past_t)) / max(1.4826 * MAD(past_t), floor)``, a robust
    z-score, so scores are comparable across contexts of any size. Higher =
    more anomalous. The detector keeps the last ``window * seasonal_period``
    points of the history, so that ``score`` needs only the new points.

    Examples
    --------
    >>> from tsanomaly import RollingZScoreDetector, make_security_panel
    >>> data = make_security_panel(n_contexts=20, n_days=28, seed=0)
    >>> history, new = data.split("2024-01-22")
    >>> det = RollingZScoreDetector().fit(history.panels["logins"])
    >>> alerts = det.alerts(new.panels["logins"])
    """

    explanation_columns = ("expected", "observed")

    def __init__(
        self,
        window=14,
        seasonal_period=24,
        min_periods=None,
        direction="both",
        floor_fraction=0.1,
        threshold="quantile",
        contamination=0.001,
        per_context=False,
        device="auto",
    ):
        self.window = window
        self.seasonal_period = seasonal_period
        self.min_periods = min_periods
        self.direction = direction
        self.floor_fraction = floor_fraction
        self.threshold = threshold
        self.contamination = contamination
        self.per_context = per_context
        self.device = device

    # -------------------------------------------------------------- parameters
    def _lag(self) -> int:
        return 1 if self.seasonal_period is None else int(self.seasonal_period)

    def _min_periods(self) -> int:
        return max(3, self.window // 2) if self.min_periods is None else int(self.min_periods)

    def _validate(self) -> None:
        if not isinstance(self.window, (int, np.integer)) or self.window < 2:
            raise ValueError(f"window must be an integer >= 2, got {self.window!r}")
        if self.seasonal_period is not None and (
            not isinstance(self.seasonal_period, (int, np.integer)) or self.seasonal_period < 1
        ):
            raise ValueError(f"seasonal_period must be a positive integer or None, got {self.seasonal_period!r}")
        if not 1 <= self._min_periods() <= self.window:
            raise ValueError(f"min_periods must lie in [1, window={self.window}], got {self.min_periods!r}")
        if self.floor_fraction < 0:
            raise ValueError(f"floor_fraction must be >= 0, got {self.floor_fraction!r}")
        score_direction(0.0, self.direction)

    def _scale_floor(self, x):
        xp = backend.array_module(x)
        # Sparse counts (an ASN with a failed login now and then) have a MAD of 0: the
        # standard deviation then sets the floor, so one extra event is not a huge score.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            spread = xp.fmax(robust_scale(x, axis=1), xp.nanstd(x, axis=1))
        floor = self.floor_fraction * spread
        # A context with no spread at all still needs a positive scale.
        return xp.maximum(xp.nan_to_num(floor, nan=0.0), 1e-12)

    # -------------------------------------------------------------- fit / score
    def _fit(self, values, panel: Panel):
        self._validate()
        self.scale_floor_ = self._scale_floor(values)
        keep = self.window * self._lag()
        self.history_ = values[:, -keep:].copy()
        z = rolling_robust_zscore(
            values, values.shape[1], self._lag(), self.window, self._min_periods(), self.scale_floor_
        )
        return score_direction(z, self.direction)

    def _score(self, values, panel: Panel, rows: np.ndarray):
        self._validate()
        xp = backend.array_module(values)
        x = self.with_kept_history(values, panel, rows, self.history_)
        seen = xp.asarray(rows >= 0)
        # Unseen contexts start cold: their scale floor comes from the new data itself.
        floor = xp.where(seen, xp.asarray(self.scale_floor_)[xp.asarray(np.maximum(rows, 0))], self._scale_floor(values))
        z = rolling_robust_zscore(x, values.shape[1], self._lag(), self.window, self._min_periods(), floor)
        return score_direction(z, self.direction)

    def _explain(self, panel, scores, ctx_rows, peak_pos):
        """Expected value (median of the past points) and observed value at each alert's peak."""
        values = panel.to_numpy()
        x = backend.to_numpy(self.with_kept_history(values, panel, self.context_rows(panel), self.history_))
        n_kept = x.shape[1] - values.shape[1]
        past_pos = (n_kept + peak_pos)[:, None] - self._lag() * np.arange(1, self.window + 1)[None, :]
        past = np.where(past_pos >= 0, x[ctx_rows[:, None], np.maximum(past_pos, 0)], np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            expected = np.nanmedian(past, axis=1)
        return {"expected": expected, "observed": values[ctx_rows, peak_pos]}
