"""RollingZScoreDetector: the baseline every other detector must beat.

Each point is compared with the points just before it (or, with
``seasonal_period``, with the same phase of the preceding cycles — the same
hour of the previous days) through a robust z-score: the deviation from their
median in units of their median absolute deviation. Written once against the
array module, so it runs on NumPy and CuPy alike.
"""
from __future__ import annotations

import warnings
from statistics import NormalDist

import numpy as np

from tsanomaly import backend, thresholds
from tsanomaly.base import BaseDetector, alerting_contexts
from tsanomaly.panel import Panel
from tsanomaly.scaling import (
    COUNT_SCALE_FLOOR, MAD_TO_SIGMA, constant_row_scale, count_rows, nanmedian, sorted_median,
)
from tsanomaly.validation import is_finite_real, is_int

__all__ = [
    "RollingZScoreDetector", "rolling_robust_zscore", "MAD_TO_SIGMA", "LEVEL_REFRESHES_PER_WINDOW", "COUNT_SCALE_FLOOR",
    "score_direction",
]

#: With ``level_window``, the level median and MAD are recomputed this many times per window
#: length (every ``level_window // 64`` points), so a point costs at most ~128 past values
#: however long the window. Measured on the 41 NAB files (level window 30 periods, standard
#: score): 64.4 at 64 refreshes per window, 64.2-64.4 at 128-512, 61.6 at 32; recomputing at
#: every point runs out of memory on 50,000-point UCR files.
LEVEL_REFRESHES_PER_WINDOW = 64

# Bound on the gathered (contexts x times x window) block, in elements, so memory stays
# bounded however many contexts a panel has: 0.5 GB per gathered array on a GPU, 32 MB on the
# CPU, where smaller blocks are also faster (their temporaries are reused rather than freshly
# mapped). Measured on 2 cores, 10,000 contexts x 504 hours: fit 5.0 s and 2.05 GB peak with
# 64M elements, 1.9 s and 0.94 GB (the data's own) with 4M; with level_window=504 17.4 s and
# 13.9 s.
_MAX_BLOCK_ELEMENTS = {"gpu": 64_000_000, "cpu": 4_000_000}


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


def rolling_robust_zscore(
    x, n_out: int, lag: int, window: int, min_periods: int, scale_floor, refresh: int = 1, origin: int = 0
):
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
    refresh : int, default 1
        Recompute the past's median and MAD only every ``refresh`` points: a point
        is compared with the past of the latest *anchor* at or before it, anchors
        being the positions ``a`` with ``(origin + a) % refresh == 0``. 1: every
        point has its own past. A long window costs ``refresh`` times less.
    origin : int, default 0
        Position of ``x``'s first column on the detector's own clock (0 = the first
        fitted time), so that anchors do not depend on how the data was batched.

    Returns
    -------
    array, shape (n_contexts, n_out)
        ``(x - median(past)) / max(1.4826 * MAD(past), scale_floor)``, signed;
        NaN where the point is missing or has too little past.
    """
    xp = backend.array_module(x)
    if x.dtype.kind != "f":
        # Integers and booleans: the gathered blocks, which take x's type, hold NaN and deviations.
        x = x.astype(xp.float64)
    n_ctx, n_times = x.shape
    columns = xp.arange(n_times - n_out, n_times)
    anchors = columns - (origin + columns) % refresh
    # Each distinct anchor's past is gathered once; `which` maps a column to its anchor.
    anchors, which = xp.unique(anchors, return_inverse=True)
    which = which.ravel()
    offsets = lag * xp.arange(1, window + 1)
    past_pos = anchors[:, None] - offsets[None, :]  # (n_anchors, window)
    valid = past_pos >= 0
    past_pos = xp.where(valid, past_pos, 0)
    out = xp.empty((n_ctx, n_out), dtype=xp.float64)
    max_elements = _MAX_BLOCK_ELEMENTS["cpu" if xp is np else "gpu"]
    rows_per_block = max(1, max_elements // max(1, anchors.size * window))
    for lo in range(0, n_ctx, rows_per_block):
        hi = min(n_ctx, lo + rows_per_block)
        past = x[lo:hi][:, past_pos]  # (rows, n_anchors, window)
        median, mad, count = _median_mad_count(past, valid, xp)
        scale = xp.maximum(MAD_TO_SIGMA * mad, scale_floor[lo:hi, None])
        z = (x[lo:hi, n_times - n_out :] - median[:, which]) / scale[:, which]
        out[lo:hi] = xp.where(count[:, which] >= min_periods, z, xp.nan)
    return out


def _median_mad_count(past, valid, xp):
    """Median, MAD and number of finite values of each window of ``past`` (rows, anchors, window).

    ``valid`` (anchors, window) marks the positions inside the series; the others, and NaN,
    are missing. All-NaN windows give NaN.  On the host ``past`` (a gathered block that the
    caller owns) is masked and sorted in place, then turned into the deviations from the
    median and sorted again, where ``nanmedian`` would sort a copy of each and ``where`` and
    ``abs`` make three more: the same values enter the same medians, bit for bit.
    """
    if xp is not np:
        past = xp.where(valid[None], past, xp.nan)
        median = nanmedian(past, axis=2)
        mad = nanmedian(xp.abs(past - median[..., None]), axis=2)
        return median, mad, xp.isfinite(past).sum(axis=2)
    if not valid.all():
        past[:, ~valid] = np.nan
    window = past.shape[2]
    count = np.isfinite(past).sum(axis=2)
    past.sort(axis=2)  # NaN last, as nanmedian's sort leaves them
    median = sorted_median(past, window - np.isnan(past).sum(axis=2))
    deviation = np.abs(np.subtract(past, median[..., None], out=past), out=past)
    deviation.sort(axis=2)
    return median, sorted_median(deviation, window - np.isnan(deviation).sum(axis=2)), count


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
        ``min(window, max(3, window // 2))`` (at least 3 points where the window
        has them: a median and MAD of fewer say little).
    level_window : int or None, default None
        When set, each point is also compared with the ``level_window`` points just
        before it (all phases: with hourly data and 720, the last 30 days), and the
        score is the sum of the two robust z-scores. The seasonal comparison judges a
        point by a handful of same-phase neighbours, whose MAD can be wide; the level
        comparison asks whether the value lies outside what the context showed over a
        long stretch, which a spike or an outage does at once. Each of the two
        scores is first divided by its own ``1 - contamination`` quantile over the
        training data (``component_units_``), so that both count equally whatever
        their tails, then they are added; a unit is never below the Gaussian
        quantile of the same tail (3.29 for |z| at contamination 0.001), which a
        short history would otherwise undercut. None: seasonal only.
    direction : {"both", "up", "down"}, default "both"
        Which deviations count: both, rises only (credential stuffing, bot
        bursts) or drops only (outages).
    floor_fraction : float, default 0.1
        The scale of each point's past is at least this fraction of the
        context's overall spread in the training data (the larger of its
        robust scale and its standard deviation), so a context that was flat
        for a while does not turn one extra event into an alert. A context
        with no spread at all in the training data (constant: all zero, say)
        is given the spread it would have with one event of one unit among
        its points (the unit :func:`tsanomaly.scaling.constant_row_scale`
        gives: 1 for zeros, ``1e-3 * |value|`` otherwise), so its first event
        scores like one in a context that had a single event before. A
        context of counts (every observed value a whole number >= 0) is
        floored at half a count at least (:data:`COUNT_SCALE_FLOOR`): one
        event more than its past's median is then at most 2 sigma, so sparse
        contexts (a failed login now and then) do not lift the one global
        threshold above the other contexts' anomalies. A finite number >= 0:
        0 leaves only the past's own MAD (and, for counts, half a count; for
        other values 1e-12); above 1 the floor exceeds the context's whole
        spread.
    threshold, contamination, per_context, device
        See :class:`tsanomaly.base.BaseDetector`.

    Notes
    -----
    Score: ``(x_t - median(past_t)) / max(1.4826 * MAD(past_t), floor)``, a robust
    z-score, so scores are comparable across contexts of any size (with
    ``level_window``, the sum of the seasonal and the level z-scores, each taken in
    the chosen ``direction``). Higher = more anomalous. The level comparison's median
    and MAD are recomputed every ``r = level_window // 64`` points (at least every
    point; :data:`LEVEL_REFRESHES_PER_WINDOW`), which keeps a long window cheap. The
    detector keeps the last ``max(window * seasonal_period, level_window + r - 1)``
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
    explanation_types = {"expected": "double", "observed": "double"}
    #: Fitted state kept per context (tsanomaly.spark); ``component_units_`` is shared.
    per_context_attributes = ("scale_floor_", "history_")

    def __init__(
        self,
        window=14,
        seasonal_period=24,
        min_periods=None,
        level_window=None,
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
        self.level_window = level_window
        self.direction = direction
        self.floor_fraction = floor_fraction
        self.threshold = threshold
        self.contamination = contamination
        self.per_context = per_context
        self.device = device

    @property
    def fit_is_per_context(self) -> bool:
        """Whether ``fit`` treats each context on its own (tsanomaly.spark fits shards apart):
        yes, unless ``level_window`` adds the shared ``component_units_``."""
        return self.level_window is None

    # -------------------------------------------------------------- parameters
    def _lag(self) -> int:
        return 1 if self.seasonal_period is None else int(self.seasonal_period)

    def _min_periods(self) -> int:
        # Capped at the window: a window of 2 cannot supply the 3 points asked otherwise.
        return min(self.window, max(3, self.window // 2)) if self.min_periods is None else int(self.min_periods)

    def _validate(self) -> None:
        if not is_int(self.window) or self.window < 2:
            raise ValueError(f"window must be an integer >= 2, got {self.window!r}")
        if self.seasonal_period is not None and not (is_int(self.seasonal_period) and self.seasonal_period >= 1):
            raise ValueError(f"seasonal_period must be a positive integer or None, got {self.seasonal_period!r}")
        # Checked before _min_periods() reads it through int(): True would become 1, "3" 3.
        if self.min_periods is not None and not is_int(self.min_periods):
            raise ValueError(f"min_periods must be None or an integer, got {self.min_periods!r}")
        min_periods = self._min_periods()
        if not 1 <= min_periods <= self.window:
            # The resolved value, which is what was checked (None would say nothing).
            raise ValueError(f"min_periods must lie in [1, window={self.window}], got {min_periods}")
        if self.level_window is not None and not (is_int(self.level_window) and self.level_window >= self._min_periods()):
            raise ValueError(
                f"level_window must be None or an integer >= min_periods ({self._min_periods()}), got {self.level_window!r}"
            )
        # Silently wrong otherwise: NaN drops every floor to 1e-12 (a flat context then turns
        # one event into a huge score), inf makes every score about 0.
        if not is_finite_real(self.floor_fraction) or self.floor_fraction < 0:
            raise ValueError(f"floor_fraction must be a finite number >= 0, got {self.floor_fraction!r}")
        score_direction(0.0, self.direction)

    def min_fit_times(self) -> int:
        """Fewest time steps for a finite training score (see :meth:`BaseDetector.min_fit_times`):
        a point needs ``min_periods`` past points at its phase (``min_periods * seasonal_period + 1``
        steps); with ``level_window``, the level comparison scores from the first refresh anchor
        with ``min_periods`` points before it, whichever comes first."""
        self._validate()
        min_periods = self._min_periods()
        need = min_periods * self._lag() + 1
        if self.level_window is not None:
            refresh = self._level_refresh()
            need = min(need, -(-min_periods // refresh) * refresh + 1)
        return need

    def kept_width(self) -> int:
        """The kept history's full width (see :meth:`BaseDetector.kept_width`): :meth:`_n_kept`."""
        return self._n_kept()

    def _n_kept(self) -> int:
        """History points that ``score`` needs: the seasonal past, and the level window
        before the latest refresh."""
        level = 0 if self.level_window is None else int(self.level_window) + self._level_refresh() - 1
        return max(self.window * self._lag(), level)

    def _level_refresh(self) -> int:
        """Points between recomputations of the level window's median and MAD."""
        return max(1, int(self.level_window or 0) // LEVEL_REFRESHES_PER_WINDOW)

    def _scale_floor(self, x):
        xp = backend.array_module(x)
        # Sparse counts (an ASN with a failed login now and then) have a MAD of 0: the
        # standard deviation then sets the floor, so one extra event is not a huge score.
        median = nanmedian(x, axis=1)
        deviation = xp.abs(x - median[:, None])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            # 1.4826 x MAD, from the deviations the flat test below needs too
            spread = xp.fmax(MAD_TO_SIGMA * nanmedian(deviation, axis=1), xp.nanstd(x, axis=1))
        # Constant (or all missing, or no point at all): tested exactly, as a constant row's
        # float standard deviation need not be 0 (2e-10 for 1e6 + 0.1).
        flat = ~(xp.nansum(deviation, axis=1) > 0)
        # A context with no spread at all is given the spread it would have with one event of one
        # unit -- the scale robust_center_scale gives a constant row (the matrix profile's unit of
        # plain distances): 1 for zeros, 1e-3 x |value| otherwise -- among its n observed points,
        # whose standard deviation is unit x sqrt(n - 1) / n. So a context that never had an event
        # is floored exactly like one that had a single event (1e-12 made its first event score
        # 1e12; a floor of a whole unit made it the least sensitive context of all).
        n = xp.maximum(xp.sum(xp.isfinite(x), axis=1), 2)
        spread = xp.where(flat, constant_row_scale(median) * xp.sqrt(n - 1.0) / n, spread)
        floor = self.floor_fraction * spread
        # Counts: at least half a count, so that one event more than the past's median is at
        # most 2 sigma whatever the context's spread (see tsanomaly.scaling.COUNT_SCALE_FLOOR).
        floor = xp.where(count_rows(x), xp.maximum(floor, COUNT_SCALE_FLOOR), floor)
        # floor_fraction = 0 leaves the past's own MAD, which still needs a positive floor.
        return xp.maximum(xp.nan_to_num(floor, nan=0.0), 1e-12)

    # -------------------------------------------------------------- fit / score
    def _components(self, x, n_out: int, floor, origin: int) -> list:
        """Scores of the last ``n_out`` columns of ``x`` (history first, its first column at
        ``origin`` on the fit's clock): the seasonal robust z-score, and the level one when
        ``level_window`` is set, each in ``direction``."""
        min_periods = self._min_periods()
        components = [rolling_robust_zscore(x, n_out, self._lag(), self.window, min_periods, floor)]
        if self.level_window is not None:
            components.append(
                rolling_robust_zscore(
                    x, n_out, 1, int(self.level_window), min_periods, floor, refresh=self._level_refresh(), origin=origin
                )
            )
        return [score_direction(z, self.direction) for z in components]

    def _combine(self, components: list):
        """The seasonal score alone, or the sum of the components in their training units."""
        if len(components) == 1:
            return components[0]
        xp = backend.array_module(components[0])
        units = xp.asarray(self.component_units_)
        parts = xp.stack(components) / units[:, None, None]
        total = xp.nansum(parts, axis=0)
        # A point neither comparison could score (too little past) stays unscored.
        return xp.where(xp.isnan(parts).all(axis=0), xp.nan, total)

    def _threshold_settings_in_scores(self) -> tuple:
        """``contamination`` with a ``level_window``: it sets ``component_units_``, which the scores are in."""
        return () if self.level_window is None else ("contamination",)

    def _fitted_state_kinds(self) -> dict:
        """Checked at load (see BaseDetector._fitted_state_kinds)."""
        kinds = {"scale_floor_": "vector", "history_": "matrix"}
        if self.level_window is not None:
            kinds["component_units_"] = ("vector", 2)  # the seasonal and the level comparison
        return kinds

    def _fit(self, values, panel: Panel):
        # The same two steps as tsanomaly.spark.fit takes with a level window.
        self._fit_global(values, panel)
        return self._fit_contexts(values, panel)

    def _fit_global(self, values, panel: Panel) -> None:
        """The state shared by all contexts: ``component_units_``, each comparison's
        ``1 - contamination`` quantile over the training scores of every context (only
        with ``level_window``; ``tsanomaly.spark`` learns it once, on a sample of contexts)."""
        self._validate()
        self.__dict__.pop("component_units_", None)
        if self.level_window is None:
            return
        floor = self._scale_floor(values)
        components = self._components(values, values.shape[1], floor, origin=0)
        # A robust z-score is in sigma units: a unit below what Gaussian noise exceeds once in
        # 1 / contamination points only reflects too few training scores (a training part of two
        # cycles gives the seasonal comparison a few dozen), and would turn ordinary noise after
        # the fit into alerts. 41 NAB files, standard score: 62.5 without this floor, 64.4 with it.
        tail = self.contamination / 2.0 if self.direction == "both" else self.contamination
        gaussian_unit = NormalDist().inv_cdf(1.0 - tail)
        # The quantile rule's global value (inf when a component has no finite training score).
        quantiles = [thresholds.calibrate(component, "quantile", self.contamination)[1] for component in components]
        self.component_units_ = np.asarray([max(q, gaussian_unit) if np.isfinite(q) else gaussian_unit for q in quantiles])
        self._fit_cache = (values, floor, components)

    def _fit_contexts(self, values, panel: Panel):
        """Each context's scale floor and kept history; returns the training scores."""
        self._validate()
        cache = self.__dict__.pop("_fit_cache", None)
        self.history_ = values[:, -self._n_kept() :].copy()
        if cache is not None and cache[0] is values:  # _fit_global just computed them
            _, floor, components = cache
        else:
            floor = self._scale_floor(values)
            components = self._components(values, values.shape[1], floor, origin=0)
        # NaN for a context without any observation: it has no spread of its own, and score takes
        # its floor from what the model holds of it then (see _score).
        xp = backend.array_module(values)
        self.scale_floor_ = xp.where(xp.isfinite(values).any(axis=1), floor, xp.nan)
        return self._combine(components)

    def _score(self, values, panel: Panel, rows: np.ndarray):
        self._validate()
        xp = backend.array_module(values)
        x = self.with_kept_history(values, panel, rows, self.history_)
        # Unseen contexts start cold: their scale floor comes from the data the model has of them,
        # the new data itself. So does a fitted context whose kept history is all missing, and one
        # without any observation at fit (NaN floor) whose kept history updates have filled since:
        # from that history and the new data. (Its fitted floor, a placeholder, had been 1e-12,
        # which made its new data score about 1e12, then that of one event, 0.05: counts in the
        # hundreds alerted every hour of an hour-by-hour loop.)
        safe_rows = np.maximum(rows, 0)
        fitted_floor = xp.asarray(self.scale_floor_)[xp.asarray(safe_rows)]
        seen = xp.asarray((rows >= 0) & ~self.fitted_without_data()[safe_rows]) & xp.isfinite(fitted_floor)
        floor = fitted_floor
        if not bool(seen.all()):
            # Only those rows: a row's floor is its own, and x holds the whole kept history (the
            # medians of 121 points per context, every hour, where one new point is scored).
            cold = xp.flatnonzero(~seen)
            floor = fitted_floor.copy()
            floor[cold] = self._scale_floor(x[cold])
        # x's first column on the fit's clock: the first new point lies at n_fit_times_ - 1 + steps.
        origin = self.n_fit_times_ - 1 + self.steps_after_fit(panel) - (x.shape[1] - values.shape[1])
        return self._combine(self._components(x, values.shape[1], floor, origin))

    def _update(self, values, panel: Panel, rows: np.ndarray, steps: int) -> None:
        """Move ``history_`` on over new data (see :meth:`BaseDetector.update`).

        Exact: after ``update(new)``, ``score(next)`` equals the scores of ``next``'s points
        in ``score(concat(new, next))`` bit for bit (the same values enter the same medians;
        the level window's refresh anchors are counted from the fit's start), for every
        context with an observation in its kept history. The fitted floors never change: a
        context without any observation at fit has none (NaN), and :meth:`score` floors it
        from its kept history and the scored data, so once updates bring it observations its
        floor grows with them. A context whose kept history holds no observation (none at
        fit, or silent for longer than the history kept) is scored from a cold start, its
        floor from the scored data, as :meth:`score` scores it: the first points after such
        a silence, scored alone, can score high. (Storing the floor of the first update's
        values instead made an hour-by-hour loop floor such a context on a single point, and
        replaced the fitted floor of a context back from a long silence for good: scores of
        5,000 where one call gave 8.)
        """
        self._validate()
        self.history_ = self.with_updated_history(values, panel, rows, self.history_)

    def _explain(self, panel, scores, ctx_rows, peak_pos):
        """Expected value (median of the past points) and observed value at each alert's peak."""
        # Only their kept history is needed.
        panel, ctx_rows, fitted_rows = alerting_contexts(panel, ctx_rows, self.context_rows(panel))
        values = panel.to_numpy()
        x = backend.to_numpy(self.with_kept_history(values, panel, fitted_rows, self.history_))
        n_kept = x.shape[1] - values.shape[1]
        past_pos = (n_kept + peak_pos)[:, None] - self._lag() * np.arange(1, self.window + 1)[None, :]
        past = np.where(past_pos >= 0, x[ctx_rows[:, None], np.maximum(past_pos, 0)], np.nan)
        expected = nanmedian(past, axis=1)
        return {"expected": expected, "observed": values[ctx_rows, peak_pos]}
