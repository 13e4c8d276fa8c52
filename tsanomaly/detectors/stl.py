"""Seasonal-trend decomposition of whole panels (STL / MSTL) and the STL detector.

:func:`decompose` splits every context of a panel into trend, seasonal
component(s) and remainder in one call -- robust STL (Cleveland et al. 1990)
for one period, MSTL (Bandara, Hyndman & Bergmeir 2021) for several -- on the
CPU (Numba, :mod:`tsanomaly.kernels.stl_cpu`) or the GPU (CuPy,
:mod:`tsanomaly.kernels.stl_gpu`).  Parameters, defaults and results follow
statsmodels' ``STL`` and ``MSTL``: for the same parameters the components agree
with statsmodels' to about 1e-12 relative to the series' scale.

References
----------
R. B. Cleveland, W. S. Cleveland, J. E. McRae and I. Terpenning (1990).
STL: A Seasonal-Trend Decomposition Procedure Based on Loess.
Journal of Official Statistics 6(1), 3-73.

K. Bandara, R. J. Hyndman and C. Bergmeir (2021). MSTL: A Seasonal-Trend
Decomposition Algorithm for Time Series with Multiple Seasonal Patterns.
arXiv:2107.13462.
"""
from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tsanomaly import backend
from tsanomaly.base import BaseDetector
from tsanomaly.detectors.baseline import MAD_TO_SIGMA, score_direction

__all__ = ["decompose", "Decomposition", "STLDetector"]


# ---------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _StlConfig:
    """Fully resolved parameters of one decomposition (statsmodels' defaults applied)."""

    periods: tuple  # sorted ascending when several (MSTL)
    seasonal: tuple  # one window per period
    trend: tuple  # one trend window per period
    low_pass: tuple  # one low-pass window per period
    seasonal_deg: int
    trend_deg: int
    low_pass_deg: int
    inner_iter: int
    outer_iter: int
    iterate: int  # MSTL refinement rounds (1 for a single period)
    robust: bool

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _as_int_tuple(value, name: str) -> tuple:
    if _is_int(value):
        return (int(value),)
    try:
        items = tuple(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer or a sequence of integers, got {value!r}") from None
    if not items or not all(_is_int(v) for v in items):
        raise ValueError(f"{name} must be an integer or a non-empty sequence of integers, got {value!r}")
    return tuple(int(v) for v in items)


def _odd_window(value, name: str, period: int | None = None) -> int:
    if not _is_int(value) or value < 3 or value % 2 == 0:
        raise ValueError(f"{name} must be an odd integer >= 3, got {value!r}")
    if period is not None and value <= period:
        raise ValueError(f"{name} must be larger than the period it smooths ({period}), got {value}")
    return int(value)


def _resolve_config(n_time, periods, robust, seasonal, trend, low_pass, seasonal_deg, trend_deg,
                    low_pass_deg, inner_iter, outer_iter, iterate, warn=True) -> _StlConfig:
    """Validate the parameters and apply statsmodels' defaults (``STL`` for one period, ``MSTL`` for several)."""
    periods = _as_int_tuple(periods, "periods")
    for p in periods:
        if p < 2:
            raise ValueError(f"every period must be an integer >= 2, got {periods}")
    if len(set(periods)) != len(periods):
        raise ValueError(f"periods must be distinct, got {periods}")
    if not isinstance(robust, (bool, np.bool_)):
        raise ValueError(f"robust must be True or False, got {robust!r}")
    for name, deg in (("seasonal_deg", seasonal_deg), ("trend_deg", trend_deg), ("low_pass_deg", low_pass_deg)):
        if not _is_int(deg) or deg not in (0, 1):
            raise ValueError(f"{name} must be 0 or 1, got {deg!r}")
    if inner_iter is not None and (not _is_int(inner_iter) or inner_iter < 1):
        raise ValueError(f"inner_iter must be a positive integer or None, got {inner_iter!r}")
    if outer_iter is not None and (not _is_int(outer_iter) or outer_iter < 0):
        raise ValueError(f"outer_iter must be a non-negative integer or None, got {outer_iter!r}")
    if not _is_int(iterate) or iterate < 1:
        raise ValueError(f"iterate must be a positive integer, got {iterate!r}")

    several = len(periods) > 1
    if seasonal is None:
        # statsmodels: STL's seasonal=7; MSTL's windows 7 + 4*i, i = 1..n_periods
        windows = (7,) if not several else tuple(7 + 4 * i for i in range(1, len(periods) + 1))
    elif _is_int(seasonal):
        windows = (int(seasonal),) * len(periods)
    else:
        windows = _as_int_tuple(seasonal, "seasonal")
        if len(windows) != len(periods):
            raise ValueError(
                f"seasonal must give one window per period: {len(windows)} windows for periods {periods}"
            )
    windows = tuple(_odd_window(w, "seasonal") for w in windows)

    if several:
        # MSTL sorts the periods (with their windows) and drops those of at
        # least half the series' length, with a warning
        pairs = sorted(zip(periods, windows))
        kept = [(p, w) for p, w in pairs if p < n_time / 2]
        if len(kept) < len(pairs):
            dropped = [p for p, _ in pairs if p >= n_time / 2]
            if not kept:
                raise ValueError(
                    f"every period {periods} is at least half the series' length ({n_time} points); "
                    "MSTL needs two full cycles: use longer series or shorter periods"
                )
            if warn:
                warnings.warn(
                    f"periods {dropped} are at least half the series' length ({n_time} points) and are "
                    "dropped from the decomposition, as MSTL does",
                    UserWarning,
                    stacklevel=4,
                )
        periods = tuple(p for p, _ in kept)
        windows = tuple(w for _, w in kept)
    elif n_time < 2 * periods[0]:
        raise ValueError(
            f"STL needs at least two full cycles: the series have {n_time} points, "
            f"the period is {periods[0]} (at least {2 * periods[0]} points)"
        )

    trends = []
    low_passes = []
    for p, w in zip(periods, windows):
        if trend is None:
            t = int(math.ceil(1.5 * p / (1 - 1.5 / w)))
            t += t % 2 == 0
        else:
            t = _odd_window(trend, "trend", p)
        if low_pass is None:
            lp = p + 1
            lp += lp % 2 == 0
        else:
            lp = _odd_window(low_pass, "low_pass", p)
        trends.append(t)
        low_passes.append(lp)
    return _StlConfig(
        periods=periods,
        seasonal=windows,
        trend=tuple(trends),
        low_pass=tuple(low_passes),
        seasonal_deg=int(seasonal_deg),
        trend_deg=int(trend_deg),
        low_pass_deg=int(low_pass_deg),
        inner_iter=int(inner_iter) if inner_iter is not None else (2 if robust else 5),
        outer_iter=int(outer_iter) if outer_iter is not None else (15 if robust else 0),
        iterate=int(iterate) if len(periods) > 1 else 1,
        robust=bool(robust),
    )


def _kernels(device: str):
    if device == "cuda":
        from tsanomaly.kernels import stl_gpu

        return stl_gpu
    from tsanomaly.kernels import stl_cpu

    return stl_cpu


def _min_observations(cfg: _StlConfig, n_time: int) -> int:
    """Observed points a context needs: two full cycles of its longest period."""
    return min(n_time, 2 * max(cfg.periods))


def _decompose_filled(y, cfg: _StlConfig, kern):
    """MSTL / STL of complete series ``y`` (n_ctx, n_time) on the kernel's device.

    Returns ``(trend, seasonal (n_periods, n_ctx, n_time), remainder, weights)``
    computed with statsmodels' arithmetic: ``resid = y - season - trend`` for
    STL, MSTL's ``deseas`` bookkeeping for several periods.
    """
    xp = backend.array_module(y)
    n_per = len(cfg.periods)

    def one(series, i):
        return kern.stl(series, cfg.periods[i], cfg.seasonal[i], cfg.trend[i], cfg.low_pass[i],
                        cfg.seasonal_deg, cfg.trend_deg, cfg.low_pass_deg, cfg.inner_iter,
                        cfg.outer_iter)

    if n_per == 1:
        season, trend, weights = one(y, 0)
        remainder = y - season
        remainder -= trend
        return trend, season[None], remainder, weights
    seasonal = xp.zeros((n_per,) + y.shape, dtype=xp.float64)
    deseas = y
    for _ in range(cfg.iterate):
        for i in range(n_per):
            deseas = deseas + seasonal[i]
            season, trend, weights = one(deseas, i)
            seasonal[i] = season
            deseas = deseas - seasonal[i]
    return trend, seasonal, deseas - trend, weights


# ---------------------------------------------------------------------------
# Public decomposition
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Decomposition:
    """Result of :func:`decompose`: ``observed = trend + seasonal.sum(0) + remainder``.

    Arrays live where the input lived (NumPy for NumPy input, CuPy for CuPy).

    Attributes
    ----------
    trend : array, shape (n_ctx, n_time)
    seasonal : array, shape (n_periods, n_ctx, n_time)
        One component per period, in the order of :attr:`periods` (ascending
        when there are several, as in MSTL).  ``seasonal[k]`` is the component
        of ``periods[k]``; :meth:`seasonal_of` looks one up by period.
    remainder : array, shape (n_ctx, n_time)
        NaN at missing observations (they were filled only to run the
        decomposition) and on skipped contexts.
    weights : array, shape (n_ctx, n_time)
        Final robustness weights of the (last) STL pass, in [0, 1]; all 1
        when ``robust=False``.
    periods : tuple of int
        The periods decomposed (MSTL drops those of at least half the length).
    missing : bool array, shape (n_ctx, n_time)
        Points that were NaN in the input.
    skipped : bool array, shape (n_ctx,)
        Contexts with too few observations (fewer than two full cycles of the
        longest period); all their components are NaN.
    contexts, index : pandas.Index or None
        The panel's axes when the input was a Panel.
    config : dict
        The parameters used, defaults resolved (windows per period, iterations).
    """

    trend: object
    seasonal: object
    remainder: object
    weights: object
    periods: tuple
    missing: object
    skipped: object
    contexts: object = None
    index: object = None
    config: dict = field(default_factory=dict)

    def seasonal_of(self, period: int):
        """The seasonal component of ``period``, shape (n_ctx, n_time)."""
        if period not in self.periods:
            raise KeyError(f"period {period} was not decomposed; periods are {self.periods}")
        return self.seasonal[self.periods.index(period)]


def _values_of(x):
    """2-D float64 values of a Panel (anything with ``.values``) or an array, with its axes."""
    contexts = index = None
    if hasattr(x, "values") and not isinstance(x, (np.ndarray, pd.DataFrame)) and not backend.is_device_array(x):
        contexts = getattr(x, "contexts", None)
        index = getattr(x, "index", None)
        x = x.values
    if isinstance(x, pd.DataFrame):
        x = x.to_numpy()
    xp = backend.array_module(x)
    values = xp.asarray(x)
    if values.ndim != 2:
        raise ValueError(f"decompose expects a 2-D array (contexts x times) or a Panel, got shape {values.shape}")
    if values.dtype.kind not in "biuf":
        raise ValueError(f"decompose expects numeric values, got dtype {values.dtype}")
    values = values.astype(xp.float64, copy=False)
    if values.shape[1] == 0:
        raise ValueError("decompose needs at least one time point per context, got 0")
    if bool(xp.isinf(values).any()):
        row, col = (int(v) for v in xp.argwhere(xp.isinf(values))[0])
        label = contexts[row] if contexts is not None else row
        raise ValueError(f"the series hold an infinite value at context {label!r}, time position {col}")
    return values, contexts, index


def _run(values, cfg: _StlConfig, device: str):
    """Fill gaps, skip short contexts, decompose the others.

    Returns the components on ``device`` (NaN rows for skipped contexts,
    NaN remainder at missing points), the missing mask and the skipped mask.
    """
    kern = _kernels(device)
    xp = backend.array_module(device)
    values = backend.to_device(values, device)
    n_ctx, n_time = values.shape
    missing = xp.isnan(values)
    filled, n_obs = kern.fill_gaps(values)
    skipped = n_obs < _min_observations(cfg, n_time)
    if not bool(skipped.any()):
        trend, seasonal, remainder, weights = _decompose_filled(filled, cfg, kern)
        if bool(missing.any()):
            remainder = xp.where(missing, xp.nan, remainder)
        return trend, seasonal, remainder, weights, missing, skipped
    n_per = len(cfg.periods)
    trend = xp.full((n_ctx, n_time), xp.nan)
    seasonal = xp.full((n_per, n_ctx, n_time), xp.nan)
    remainder = xp.full((n_ctx, n_time), xp.nan)
    weights = xp.full((n_ctx, n_time), xp.nan)
    rows = xp.flatnonzero(~skipped)
    if rows.size:
        # decompose only the contexts that have enough data
        t, s, r, w = _decompose_filled(xp.ascontiguousarray(filled[rows]), cfg, kern)
        trend[rows] = t
        seasonal[:, rows] = s
        remainder[rows] = xp.where(missing[rows], xp.nan, r)
        weights[rows] = w
    return trend, seasonal, remainder, weights, missing, skipped


def _skip_message(n_skipped: int, n_ctx: int, cfg: _StlConfig, n_time: int) -> str:
    need = _min_observations(cfg, n_time)
    return (
        f"{n_skipped} of {n_ctx} contexts have fewer than {need} observed points (two full cycles of "
        f"the longest period, {max(cfg.periods)}): they are skipped and their results are NaN"
    )


def decompose(x, periods=24, robust=True, seasonal=None, trend=None, low_pass=None, seasonal_deg=1,
              trend_deg=1, low_pass_deg=1, inner_iter=None, outer_iter=None, iterate=2,
              device="auto") -> Decomposition:
    """Robust seasonal-trend decomposition of every context of a panel, in one call.

    One period: STL (Cleveland et al. 1990), as ``statsmodels.tsa.seasonal.STL(y,
    period, seasonal, trend, low_pass, ..., robust).fit(inner_iter, outer_iter)``.
    Several periods (e.g. ``(24, 168)``: daily and weekly): MSTL (Bandara et al.
    2021), as ``statsmodels.tsa.seasonal.MSTL(y, periods, windows=seasonal,
    iterate, stl_kwargs=...)`` without a Box-Cox transform (``lmbda=None``).
    For the same parameters every component agrees with statsmodels' to
    about 1e-12 relative to the series' scale (float64), on every context.

    Parameters
    ----------
    x : Panel or array_like, shape (n_ctx, n_time)
        One series per row (anything with a ``.values`` attribute is read as a
        Panel).  NaN marks a missing point: it is filled by linear
        interpolation between the neighbouring observations of its context
        (the first / last observation is held before / after them) to run the
        decomposition, and its remainder is NaN.
    periods : int or sequence of int, default 24
        Period(s) in time steps, each >= 2.  One period needs
        ``n_time >= 2 * period``; with several, MSTL sorts them and drops
        (with a warning) those of at least half the series' length.
    robust : bool, default True
        Bisquare re-weighting of the fit against outliers (statsmodels'
        ``robust``; its default is False).
    seasonal : odd int >= 3, sequence of them, or None
        Length of the seasonal LOESS (per period when a sequence).  None:
        statsmodels' defaults -- 7 for STL, ``7 + 4*i`` for the i-th
        (ascending) period of MSTL (11, 15, ...).
    trend : odd int or None
        Trend LOESS length, larger than the period; None: the smallest odd
        integer >= ``1.5 * period / (1 - 1.5 / seasonal)`` (per period).
    low_pass : odd int or None
        Low-pass LOESS length, larger than the period; None: the smallest odd
        integer > ``period``.
    seasonal_deg, trend_deg, low_pass_deg : {0, 1}, default 1
        Degrees of the local polynomials.
    inner_iter : int or None
        Inner-loop passes; None: 2 when robust, else 5.
    outer_iter : int or None
        Robustness iterations; None: 15 when robust, else 0.
    iterate : int, default 2
        MSTL's refinement rounds over the periods (ignored for one period).
    device : {"auto", "cpu", "cuda"}, default "auto"
        Where the arithmetic runs; CPU and GPU agree to about 1e-12 relative.

    Returns
    -------
    Decomposition
        ``trend`` and ``remainder`` of shape (n_ctx, n_time), ``seasonal`` of
        shape (n_periods, n_ctx, n_time), plus the missing and skipped masks.
        A context with fewer than two full cycles of observations (of the
        longest period) does not fail the batch: it is marked ``skipped``,
        its components are NaN, and one warning says how many were skipped.

    Raises
    ------
    ValueError
        For input that is not 2-D numeric, holds infinities, or is too short
        for the periods, and for invalid parameters (the message names them).

    Notes
    -----
    statsmodels' ``seasonal_jump``, ``trend_jump`` and ``low_pass_jump`` are 1
    (their default): every point is fitted.

    Robust STL of series with very few cycles of a period (say three weeks
    with a weekly period) can be ill-conditioned: the bisquare iterations
    amplify rounding, and statsmodels' own components move by up to 1e-6 of
    the scale when its input moves by one ulp.  There the agreement is of
    that order, as for any two implementations that round differently.

    Examples
    --------
    >>> import numpy as np
    >>> from tsanomaly.detectors.stl import decompose
    >>> t = np.arange(24 * 14)
    >>> y = 100 + 10 * np.sin(2 * np.pi * t / 24) + np.random.default_rng(0).normal(size=(3, t.size))
    >>> res = decompose(y, periods=24, device="cpu")
    >>> res.seasonal.shape, res.trend.shape
    ((1, 3, 336), (3, 336))
    """
    values, contexts, index = _values_of(x)
    out_module = backend.array_module(values)
    device_ = backend.resolve_device(device)
    cfg = _resolve_config(values.shape[1], periods, robust, seasonal, trend, low_pass, seasonal_deg,
                          trend_deg, low_pass_deg, inner_iter, outer_iter, iterate)
    trend_, seasonal_, remainder, weights, missing, skipped = _run(values, cfg, device_)
    n_skipped = int(skipped.sum())
    if n_skipped:
        warnings.warn(_skip_message(n_skipped, values.shape[0], cfg, values.shape[1]), UserWarning, stacklevel=2)

    def out(a):
        return backend.to_numpy(a) if out_module is np else backend.to_device(a, "cuda")

    return Decomposition(
        trend=out(trend_),
        seasonal=out(seasonal_),
        remainder=out(remainder),
        weights=out(weights),
        periods=cfg.periods,
        missing=out(missing),
        skipped=out(skipped),
        contexts=contexts,
        index=index,
        config=cfg.as_dict(),
    )


# ---------------------------------------------------------------------------
# Detector
# ---------------------------------------------------------------------------
TRANSFORMS = ("log1p", "sqrt", None)
# Scale floors per transform, in transformed units: below them the noise of a
# count near zero (one event more or less) would look like a huge deviation.
_MIN_SCALE = {"log1p": 0.05, "sqrt": 0.25, None: 0.0}
# Pseudo-observations of the context-wide scale mixed into each phase's scale.
_SHRINK = 8.0
# Floor of a window's dispersion, as a share of the context's fitted scale: a
# perfectly flat window has a finite log-dispersion, not minus infinity.
_MIN_DISPERSION = 0.1
# Floor of the spread of the log-dispersion across the fit's windows.
_MIN_LOG_SPREAD = 0.1


def _forward(z, transform, xp):
    if transform == "log1p":
        return xp.log1p(z)
    if transform == "sqrt":
        return xp.sqrt(z)
    return z


def _inverse(z, transform, xp):
    if transform == "log1p":
        return xp.expm1(z)
    if transform == "sqrt":
        return xp.where(z > 0, z, 0.0) ** 2
    return z


def _nanmedian_rows(x, xp):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows give NaN, as intended
        return xp.nanmedian(x, axis=-1)


def _robust_scale(x, xp):
    """1.4826 x MAD along the last axis, ignoring NaN; NaN where nothing is finite."""
    med = _nanmedian_rows(x, xp)
    return MAD_TO_SIGMA * _nanmedian_rows(xp.abs(x - med[..., None]), xp)


def _by_phase(x, period, xp):
    """(n_ctx, period, n_cycles) view of (n_ctx, n) values by phase ``t mod period``, NaN-padded."""
    n_ctx, n = x.shape
    n_cycles = -(-n // period)
    padded = xp.full((n_ctx, n_cycles * period), xp.nan)
    padded[:, :n] = x
    return padded.reshape(n_ctx, n_cycles, period).transpose(0, 2, 1)


# Bound on the (contexts x times x window) block gathered for rolling windows,
# in elements, so memory stays near 0.5 GB however many contexts there are.
_MAX_BLOCK_ELEMENTS = 64_000_000


def _rolling_std(x, window, xp):
    """Standard deviation of the ``window`` values ending at each column, NaN ignored.

    NaN before a full window or where fewer than half of it is finite.
    Windows are gathered in blocks and reduced directly (two passes), which
    stays exact for large levels where running sums of squares would cancel.
    """
    n_ctx, n = x.shape
    out = xp.full((n_ctx, n), xp.nan)
    if n < window:
        return out
    pos = xp.arange(window - 1, n)[:, None] - xp.arange(window)[None, :]
    rows = max(1, _MAX_BLOCK_ELEMENTS // max(1, pos.size))
    for lo in range(0, n_ctx, rows):
        block = x[lo:lo + rows][:, pos]
        count = xp.isfinite(block).sum(axis=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # windows without data give NaN
            sd = xp.nanstd(block, axis=2)
        out[lo:lo + rows, window - 1:] = xp.where(count >= max(2, window / 2), sd, xp.nan)
    return out


class STLDetector(BaseDetector):
    """Seasonal-trend anomaly detector: deviations from the fitted seasonal shape and slow trend,
    and stretches of unnaturally low variance.

    ``fit`` decomposes each context's history (robust STL for one period, MSTL
    for several, on a variance-stabilised scale; see :func:`decompose`) and
    keeps, per context: the seasonal shape (one value per phase of each
    period), the trend's level and slope at the end, the remainder's robust
    scale per phase of the shortest period (hour of day), the typical
    dispersion of the observations over a rolling window per phase, and the
    last window of observations.

    ``score`` does **not** decompose the history and the new points again:
    that would let a slow rise over days move into the trend and a bot's
    night-time activity into the seasonal shape -- the attack would be
    absorbed.  Each new point is compared with the expectation carried from
    the fit: the fitted seasonal shape at its phase plus a trend that starts
    at the fitted level, continues the fitted slope (damped) and may only
    move slowly and robustly (by at most ``trend_alpha * trend_clip`` scales
    per step, whatever the data do).  Two scores follow:

    * **deviation**: the robust z-score ``(x - expected) / scale(phase)``,
      signed by ``direction``;
    * **low variance**: the standard deviation of the (transformed)
      observations over the last ``variance_window`` points -- with the
      default window of one shortest period, the daily swing plus the noise
      -- against the same statistic for the fit's windows ending at the same
      phase, as a robust z-score of its logarithm (positive = more regular
      than the history ever was).  A scripted registration farm posts a
      near-constant count around the clock: neither the daily swing nor the
      noise is there.

    The detector's score is the larger of the two (both are robust z-scores,
    comparable across contexts); alerts say which one fired.  Higher = more
    anomalous.

    Parameters
    ----------
    periods : int or sequence of int, default 24
        Seasonal period(s) in time steps: 24 for a daily cycle of hourly data,
        ``(24, 168)`` for daily and weekly.
    robust : bool, default True
        Robust STL (bisquare re-weighting), so past attacks in the history
        do not bend the fitted shape.
    seasonal, trend, low_pass, seasonal_deg, trend_deg, low_pass_deg, inner_iter, outer_iter, iterate
        Decomposition parameters, as :func:`decompose` (statsmodels' defaults).
    transform : {"log1p", "sqrt", None}, default "log1p"
        Variance-stabilising transform applied before decomposing and
        scoring.  Security counts are over-dispersed (the noise of a country
        with 10,000 logins an hour is far larger than that of an ASN with 10,
        and grows with the daily level): on the log scale the noise of
        negative-binomial counts is nearly constant for large counts and a
        rise of x percent has the same size at every level, so one scale per
        phase fits all hours and contexts; ``log1p`` also keeps zero counts
        finite.  ``"sqrt"`` stabilises Poisson (not over-dispersed) counts;
        ``None`` scores the raw values (any sign).  Values must be >= 0 with
        a transform.
    direction : {"both", "up", "down"}, default "both"
        Which deviations count: rises (credential stuffing, bots), drops
        (outages) or both.
    variance_window : int or None, default None
        Points in the rolling window of the low-variance score; None: the
        shortest period (a day of hourly data).  0 disables that score.
    trend_alpha : float, default 0.01
        Share of each (clipped) standardised deviation that moves the tracked
        trend level -- how fast the expectation may follow a real change.
    trend_clip : float, default 1.0
        Deviations are clipped to this many scales before moving the level, so
        one burst barely moves it and a sustained attack moves it by at most
        ``trend_alpha * trend_clip`` scales per step.
    shape_seasons : int, default 3
        The seasonal shape is the median of the fitted seasonal component over
        the last ``shape_seasons`` cycles of each period (fewer if the history
        is shorter), robust to an odd last day.
    min_scale : float or None, default None
        Lower bound of the scale (transformed units); None: 0.05 for log1p,
        0.25 for sqrt, a millionth of the typical level without a transform.
    threshold, contamination, per_context, device
        See :class:`tsanomaly.base.BaseDetector`.

    Attributes
    ----------
    skipped_contexts_ : pandas.Index
        Contexts with fewer than two full cycles of the longest period observed
        in the history; their scores are NaN (one warning at fit says how many).
    level_, slope_ : array, shape (n_contexts,)
        Trend level (transformed units) at the end of the history, and its
        slope per step over the last cycle of the shortest period.
    seasonal_shape_ : dict of str to array, shape (n_contexts, period)
        Per period, the seasonal value of each phase ``t mod period`` (``t``
        counted from the first fitted point).
    scale_ : array, shape (n_contexts, shortest period)
        Robust scale of the remainder per phase.
    dispersion_center_, dispersion_spread_ : array, shape (n_contexts, shortest period)
        Median and robust spread of the log standard deviation of the
        (transformed) observations over the fit's rolling windows, per phase
        of the window's last point.
    dispersion_floor_ : array, shape (n_contexts,)
        Lower bound of a window's standard deviation (a tenth of the typical
        scale), so that a flat window has a finite log-dispersion.
    recent_values_ : array, shape (n_contexts, variance_window - 1)
        The last transformed observations of the history (the end of the last
        season), which complete the first windows of new data.

    Notes
    -----
    Training scores (for the threshold) are the in-sample remainders
    standardised by the same scales, and the low-variance score of the
    history's own windows.  Points missing in the new data score NaN and do
    not move the tracked trend.

    References
    ----------
    Cleveland et al. (1990), Journal of Official Statistics 6(1), 3-73 (STL);
    Bandara, Hyndman & Bergmeir (2021), arXiv:2107.13462 (MSTL).

    Examples
    --------
    >>> from tsanomaly.datasets import make_security_panel
    >>> from tsanomaly.detectors.stl import STLDetector
    >>> data = make_security_panel(n_contexts=20, n_days=28, seed=0)
    >>> history, new = data.split("2024-01-22")
    >>> det = STLDetector(periods=24, device="cpu").fit(history.panels["registrations"])
    >>> alerts = det.alerts(new.panels["registrations"])
    """

    explanation_columns = ("expected", "observed", "trend", "seasonal", "fired")

    def __init__(
        self,
        periods=24,
        robust=True,
        seasonal=None,
        trend=None,
        low_pass=None,
        seasonal_deg=1,
        trend_deg=1,
        low_pass_deg=1,
        inner_iter=None,
        outer_iter=None,
        iterate=2,
        transform="log1p",
        direction="both",
        variance_window=None,
        trend_alpha=0.01,
        trend_clip=1.0,
        shape_seasons=3,
        min_scale=None,
        threshold="quantile",
        contamination=0.001,
        per_context=False,
        device="auto",
    ):
        self.periods = periods
        self.robust = robust
        self.seasonal = seasonal
        self.trend = trend
        self.low_pass = low_pass
        self.seasonal_deg = seasonal_deg
        self.trend_deg = trend_deg
        self.low_pass_deg = low_pass_deg
        self.inner_iter = inner_iter
        self.outer_iter = outer_iter
        self.iterate = iterate
        self.transform = transform
        self.direction = direction
        self.variance_window = variance_window
        self.trend_alpha = trend_alpha
        self.trend_clip = trend_clip
        self.shape_seasons = shape_seasons
        self.min_scale = min_scale
        self.threshold = threshold
        self.contamination = contamination
        self.per_context = per_context
        self.device = device

    # -------------------------------------------------------------- parameters
    def _validate(self) -> None:
        if self.transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {TRANSFORMS}, got {self.transform!r}")
        score_direction(0.0, self.direction)
        if self.variance_window is not None and (not _is_int(self.variance_window) or self.variance_window < 0
                                                 or self.variance_window == 1):
            raise ValueError(f"variance_window must be None, 0 (off) or an integer >= 2, got {self.variance_window!r}")
        if not isinstance(self.trend_alpha, numbers.Real) or not 0.0 <= self.trend_alpha <= 1.0:
            raise ValueError(f"trend_alpha must lie in [0, 1], got {self.trend_alpha!r}")
        if not isinstance(self.trend_clip, numbers.Real) or not self.trend_clip > 0:
            raise ValueError(f"trend_clip must be > 0, got {self.trend_clip!r}")
        if not _is_int(self.shape_seasons) or self.shape_seasons < 1:
            raise ValueError(f"shape_seasons must be a positive integer, got {self.shape_seasons!r}")
        if self.min_scale is not None and (not isinstance(self.min_scale, numbers.Real) or self.min_scale < 0):
            raise ValueError(f"min_scale must be None or >= 0, got {self.min_scale!r}")

    def _window(self) -> int:
        if self.variance_window is None:
            return int(min(self.periods_))
        return int(self.variance_window)

    def _transformed(self, values):
        xp = backend.array_module(values)
        if self.transform is not None:
            negative = values < 0
            if bool(negative.any()):
                row, col = (int(v) for v in xp.argwhere(negative)[0])
                raise ValueError(
                    f"transform={self.transform!r} needs counts >= 0, got {float(values[row, col])} "
                    f"(row {row}, time position {col}); use transform=None for signed data"
                )
        return _forward(values, self.transform, xp)

    # -------------------------------------------------------------- fit
    def _fit(self, values, panel):
        self._validate()
        xp = backend.array_module(values)
        n_ctx, n = values.shape
        cfg = _resolve_config(n, self.periods, self.robust, self.seasonal, self.trend, self.low_pass,
                              self.seasonal_deg, self.trend_deg, self.low_pass_deg, self.inner_iter,
                              self.outer_iter, self.iterate)
        z = self._transformed(values)
        trend, seasonal, remainder, _, _, skipped = _run(z, cfg, self.device_)
        self.periods_ = list(cfg.periods)
        self.decomposition_ = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.as_dict().items()}
        p_min = min(cfg.periods)
        n_skipped = int(skipped.sum())
        self.skipped_contexts_ = panel.contexts[backend.to_numpy(skipped)]
        if n_skipped:
            warnings.warn("STLDetector: " + _skip_message(n_skipped, n_ctx, cfg, n), UserWarning, stacklevel=3)

        # trend level and slope at the end of the history
        self.level_ = trend[:, -1].copy()
        self.slope_ = (trend[:, -1] - trend[:, -1 - p_min]) / p_min
        # seasonal shape per period: median of the last few cycles, by phase t mod period
        shape = {}
        for k, period in enumerate(cfg.periods):
            n_cyc = max(1, min(int(self.shape_seasons), n // period))
            tail = seasonal[k][:, n - n_cyc * period:]
            by_phase = _by_phase(tail, period, xp)  # phases of the tail start at (n - n_cyc*period) mod period
            values_by_phase = _nanmedian_rows(by_phase, xp)
            shape[str(period)] = xp.roll(values_by_phase, (n - n_cyc * period) % period, axis=1)
        self.seasonal_shape_ = shape
        # remainder scale per phase of the shortest period, shrunk towards the context's scale
        by_phase = _by_phase(remainder, p_min, xp)
        overall = _robust_scale(remainder, xp)
        phase_scale = _robust_scale(by_phase, xp)
        count = xp.isfinite(by_phase).sum(axis=2)
        blended = xp.sqrt((count * phase_scale**2 + _SHRINK * overall[:, None] ** 2) / (count + _SHRINK))
        floor = _MIN_SCALE[self.transform] if self.min_scale is None else float(self.min_scale)
        self.scale_ = xp.maximum(xp.maximum(blended, 0.25 * overall[:, None]), floor)
        if floor == 0.0:
            # without a transform a flat history still needs a positive scale: a
            # millionth of its level, far above the rounding of the decomposition
            level = xp.nan_to_num(_nanmedian_rows(xp.abs(z), xp), nan=0.0)
            self.scale_ = xp.maximum(self.scale_, 1e-6 * xp.maximum(level, 1.0)[:, None])
        u = remainder / self._phase_values(self.scale_, 0, n, xp)
        deviation = score_direction(u, self.direction)
        # dispersion of the observations over rolling windows, per phase of the window's end
        w = self._window()
        if w:
            self.dispersion_floor_ = _MIN_DISPERSION * xp.nan_to_num(_nanmedian_rows(self.scale_, xp), nan=1.0)
            log_disp = self._log_dispersion(z, w, xp, self.dispersion_floor_)
            by_phase = _by_phase(log_disp, p_min, xp)
            center = _nanmedian_rows(by_phase, xp)
            spread = _robust_scale(by_phase - center[..., None], xp)
            self.dispersion_center_ = center
            self.dispersion_spread_ = xp.maximum(xp.nan_to_num(spread, nan=_MIN_LOG_SPREAD), _MIN_LOG_SPREAD)
            self.recent_values_ = z[:, n - (w - 1):].copy()
            regular = self._low_variance(log_disp, 0, xp)
            scores = xp.fmax(deviation, regular)
        else:
            scores = deviation
        return xp.where(xp.isnan(u), xp.nan, scores)

    # -------------------------------------------------------------- helpers
    def _phase_values(self, table, start, length, xp):
        """``table[:, (start + j) mod period]`` for ``j < length``: per-phase values laid along time."""
        period = table.shape[1]
        phases = (start + xp.arange(length)) % period
        return table[:, phases]

    def _log_dispersion(self, z, window, xp, floor):
        return xp.log(xp.maximum(_rolling_std(z, window, xp), floor[:, None]))

    def _low_variance(self, log_disp, start, xp):
        """Robust z-score of too little dispersion: positive when a window is more regular than the fit's."""
        center = self._phase_values(xp.asarray(self.dispersion_center_), start, log_disp.shape[1], xp)
        spread = self._phase_values(xp.asarray(self.dispersion_spread_), start, log_disp.shape[1], xp)
        return (center - log_disp) / spread

    def _track(self, values, panel, rows):
        """Expected values of new data from the fitted state, and the two scores.

        Returns a dict of (n_ctx, n_new) arrays (transformed units): ``expected``,
        ``trend``, ``seasonal``, ``deviation`` (directional z-score) and
        ``low_variance`` (NaN when that score is off); rows of unseen contexts are NaN.
        """
        xp = backend.array_module(values)
        steps = self.steps_after_fit(panel)
        if steps < 1:
            raise ValueError(
                f"new data must start after the fitted history, which ends at {self.fit_end_}; "
                f"it starts at {panel.index[0]}"
            )
        n_ctx, n_new = values.shape
        seen = xp.asarray(rows >= 0)
        take = xp.asarray(np.maximum(rows, 0))

        def state(a):
            # fitted state lives where the fit ran; alerts explain on the host
            a = (backend.to_numpy(a) if xp is np else xp.asarray(a))[take]
            return xp.where(seen.reshape((-1,) + (1,) * (a.ndim - 1)), a, xp.nan)

        z = self._transformed(values)
        start = self.n_fit_times_ - 1 + steps  # position of the first new point, from the fit's start
        seasonal = xp.zeros((n_ctx, n_new))
        for period, table in self.seasonal_shape_.items():
            seasonal = seasonal + self._phase_values(state(table), start, n_new, xp)
        scale = self._phase_values(state(self.scale_), start, n_new, xp)
        level = state(self.level_)
        slope = state(self.slope_)
        # damped slope: the fitted slope fades over about one shortest period
        damping = 1.0 - 1.0 / min(self.periods_)
        for _ in range(steps - 1):  # points between the fit's end and the new data
            slope = slope * damping
            level = level + slope
        trend = xp.empty((n_ctx, n_new))
        alpha = float(self.trend_alpha)
        clip = float(self.trend_clip)
        for j in range(n_new):
            slope = slope * damping
            level = level + slope
            trend[:, j] = level
            u = (z[:, j] - (level + seasonal[:, j])) / scale[:, j]
            # the level may only move slowly and robustly: clipped, small steps; missing points do not move it
            step = alpha * xp.clip(u, -clip, clip) * scale[:, j]
            level = level + xp.where(xp.isnan(step), 0.0, step)
        expected = trend + seasonal
        u = (z - expected) / scale
        out = {"expected": expected, "trend": trend, "seasonal": seasonal,
               "deviation": score_direction(u, self.direction)}
        w = self._window()
        if w:
            # the first windows reach back into the history's last values (NaN for skipped steps)
            past = state(self.recent_values_)
            gap = xp.full((n_ctx, min(steps - 1, past.shape[1])), xp.nan)
            floor = state(self.dispersion_floor_)
            joined = xp.concatenate([past, gap, z], axis=1)
            log_disp = self._log_dispersion(joined, w, xp, floor)[:, joined.shape[1] - n_new:]
            center = self._phase_values(state(self.dispersion_center_), start, n_new, xp)
            spread = self._phase_values(state(self.dispersion_spread_), start, n_new, xp)
            out["low_variance"] = (center - log_disp) / spread
        else:
            out["low_variance"] = xp.full((n_ctx, n_new), xp.nan)
        return out

    # -------------------------------------------------------------- score / explain
    def _score(self, values, panel, rows):
        self._validate()
        xp = backend.array_module(values)
        parts = self._track(values, panel, rows)
        scores = xp.fmax(parts["deviation"], parts["low_variance"])
        return xp.where(xp.isnan(values) | xp.isnan(parts["deviation"]), xp.nan, scores)

    def _explain(self, panel, scores, ctx_rows, peak_pos):
        """Expected and observed value, trend and seasonal part (original units) at each alert's peak,
        and which score fired (``"deviation"`` or ``"low_variance"``)."""
        values = panel.to_numpy()
        parts = self._track(values, panel, self.context_rows(panel))
        parts = {k: backend.to_numpy(v)[ctx_rows, peak_pos] for k, v in parts.items()}
        expected = _inverse(parts["expected"], self.transform, np)
        trend = _inverse(parts["trend"], self.transform, np)
        fired = np.where(np.nan_to_num(parts["low_variance"], nan=-np.inf) > parts["deviation"],
                         "low_variance", "deviation")
        return {
            "expected": expected,
            "observed": values[ctx_rows, peak_pos],
            "trend": trend,
            "seasonal": expected - trend,
            "fired": fired,
        }
