"""Seasonal-trend decomposition of whole panels (STL / MSTL) and the STL detector.

:func:`decompose` splits every context of a panel into trend, seasonal
component(s) and remainder in one call -- robust STL (Cleveland et al. 1990)
for one period, MSTL (Bandara, Hyndman & Bergmeir 2021) for several -- on the
CPU (Numba, :mod:`tsanomaly.kernels.stl_cpu`) or the GPU (CuPy,
:mod:`tsanomaly.kernels.stl_gpu`).  Parameters, defaults and results follow
statsmodels' ``STL`` and ``MSTL``: for the same parameters the components agree
with statsmodels' to about 1e-12 relative to the series' scale (robust fits of
series of two or three cycles excepted, where statsmodels' own result hangs on
its rounding: see :func:`decompose`).

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
import warnings
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np
import pandas as pd

from tsanomaly import backend
from tsanomaly.base import BaseDetector, CalibrationWarning, alerting_contexts, min_observed, refuse_frame_or_path
from tsanomaly.detectors.baseline import score_direction
from tsanomaly.scaling import MAD_TO_SIGMA, MEAN_ABS_TO_SIGMA, nanmedian
from tsanomaly.validation import check_flag, is_finite_real, is_int

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


def _as_int_tuple(value, name: str) -> tuple:
    if is_int(value):
        return (int(value),)
    try:
        items = tuple(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer or a sequence of integers, got {value!r}") from None
    if not items or not all(is_int(v) for v in items):
        raise ValueError(f"{name} must be an integer or a non-empty sequence of integers, got {value!r}")
    return tuple(int(v) for v in items)


def _odd_window(value, name: str, period: int | None = None) -> int:
    if not is_int(value) or value < 3 or value % 2 == 0:
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
    check_flag(robust, "robust")
    for name, deg in (("seasonal_deg", seasonal_deg), ("trend_deg", trend_deg), ("low_pass_deg", low_pass_deg)):
        if not is_int(deg) or deg not in (0, 1):
            raise ValueError(f"{name} must be 0 or 1, got {deg!r}")
    if inner_iter is not None and (not is_int(inner_iter) or inner_iter < 1):
        raise ValueError(f"inner_iter must be a positive integer or None, got {inner_iter!r}")
    if outer_iter is not None and (not is_int(outer_iter) or outer_iter < 0):
        raise ValueError(f"outer_iter must be a non-negative integer or None, got {outer_iter!r}")
    if not is_int(iterate) or iterate < 1:
        raise ValueError(f"iterate must be a positive integer, got {iterate!r}")

    several = len(periods) > 1
    if seasonal is None:
        # statsmodels: STL's seasonal=7; MSTL's windows 7 + 4*i for the i-th period in ascending
        # order (i = 1..n_periods). Sorted first, as MSTL does: paired in the order given,
        # periods=(168, 24) gave the week 11 and the day 15, other scores than (24, 168).
        periods = tuple(sorted(periods))
        windows = (7,) if not several else tuple(7 + 4 * i for i in range(1, len(periods) + 1))
    elif is_int(seasonal):
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


def _length_keeping(period: int, several: bool) -> int:
    """Shortest history whose decomposition keeps ``period``: two full cycles for STL; MSTL
    (``several`` periods) keeps a period only below half the history's length, one point more."""
    return 2 * period + (1 if several else 0)


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
    """2-D float64 values of a Panel (anything with ``.values``) or an array, with its axes.

    Raises TypeError for a pandas DataFrame or Series and for a path, as the detectors do
    (:func:`tsanomaly.base.refuse_frame_or_path`), and ValueError for a 1-D array (one series
    is ``x[None, :]``) or a ragged sequence.
    """
    refuse_frame_or_path(x, "decompose")
    contexts = index = None
    if hasattr(x, "values") and not isinstance(x, np.ndarray) and not backend.is_device_array(x):
        contexts = getattr(x, "contexts", None)
        index = getattr(x, "index", None)
        x = x.values
    xp = backend.array_module(x)
    try:
        values = xp.asarray(x)
    except ValueError as exc:  # NumPy's "inhomogeneous shape" for rows of several lengths
        lengths = sorted({np.size(row) for row in x}) if isinstance(x, (list, tuple)) else "several"
        raise ValueError(
            f"decompose expects series of one length (a 2-D array, contexts x times), got rows of "
            f"lengths {lengths}; pad the shorter series with NaN (missing points) to the longest one's length"
        ) from exc
    if values.ndim != 2:
        hint = "; for one series pass x[None, :]" if values.ndim == 1 else ""
        raise ValueError(f"decompose expects a 2-D array (contexts x times) or a Panel, got shape {values.shape}{hint}")
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
    about 1e-12 relative to the series' scale (float64), on every context --
    except robust fits of series of two or three cycles (see Notes).

    Parameters
    ----------
    x : Panel or array_like, shape (n_ctx, n_time)
        One series per row (anything with a ``.values`` attribute is read as a
        Panel); one series is ``x[None, :]``, since a 1-D array is refused, and
        so are rows of several lengths (pad them with NaN), a pandas DataFrame
        or Series (TypeError: build a Panel with ``Panel.from_frame``) and a
        path.  NaN marks a missing point: it is filled by linear
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

    Robust STL of series with very few cycles of a period is
    ill-conditioned: the bisquare iterations amplify rounding.  With two
    cycles (the shortest series accepted) the seasonal smoother nearly fits
    the two points of each cycle-subseries, the remainder is close to zero
    and the robustness weights rest on its rounding: statsmodels' own
    components move by up to twice the series' standard deviation when one
    input moves by one ulp, and ours differ from statsmodels' by as much
    (every one of 20 series of Poisson counts, period 24 or 168).  With
    three cycles they often differ by 1e-6 to about one standard deviation,
    again as much as statsmodels moves by itself: on so few cycles the
    robust components depend on rounding, as those of any two
    implementations that round differently do.  From four cycles on (in the
    same measurement), and without ``robust`` at any length, the agreement
    is about 1e-12.

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
# Pseudo-observations of the context-wide scale mixed into each phase's scale.
_SHRINK = 8.0
# Floor of a window's dispersion, as a share of the context's typical scale: a
# perfectly flat window has a finite log-dispersion, not minus infinity.
_MIN_DISPERSION = 0.1
# Floor of the spread of the log-dispersion across the fit's windows.
_MIN_LOG_SPREAD = 0.1
# statsmodels' bisquare robustness weights: weight 0 beyond 6 x median |remainder|.
_BISQUARE_SCALE = 6.0
# Contexts are fitted in blocks of backend.CPU_BLOCK_POINTS on the CPU (see STLDetector._fit). Measured
# on 2 cores, period 24, peak memory of the process: 100,000 contexts x 168 hours fit in 33.8 s and
# 3.15 GB at once, 21.6 s and 1.17 GB in blocks of 2^20 points (6,241 contexts); 10,000 x 504 hours
# in 10.0 s and 1.22 GB at once, 7.3 s and 0.54 GB in blocks (2,080 contexts).


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


def _poisson_deviance(count, mu, xp):
    """Signed Poisson deviance residual of ``count`` against the mean ``mu``: the count's distance from
    its expectation in units of count noise, ``sign(x - mu) sqrt(2 (x log(x / mu) - (x - mu)))``.

    Unlike a z-score on the log scale it is about as well calibrated for drops as for rises (a zero
    where 7 are expected is 3.7, Poisson p = 0.0009; 16 where 7 are expected 2.9, p = 0.002).  Rises
    are measured from at least one event: below one event per bucket the mean is not known well
    enough to call a single event a surprise.
    """
    x = xp.maximum(count, 0.0)
    m = xp.maximum(mu, 0.0)
    m = xp.where(x > m, xp.maximum(m, 1.0), m)
    with np.errstate(divide="ignore", invalid="ignore"):
        term = xp.where(x > 0, x * xp.log(x / m), 0.0) - (x - m)
    return xp.sign(x - m) * xp.sqrt(xp.maximum(2.0 * term, 0.0))


class _ContextsFit(NamedTuple):
    """What STLDetector fits on a block of contexts."""

    state: dict  # per-context arrays (see STLDetector._fit_state), out-of-sample inflation applied
    train: object  # (n_ctx, n) training scores
    skipped: object  # (n_ctx,) bool: too few observed points to decompose
    robust_fit: object  # (n_ctx,) bool: decomposed with robustness weights
    inflation: object  # (n_ctx,) out-of-sample widening of the scale, >= 1
    n_folds: int  # held-out folds (depends on n and the configuration only)


def _concatenate_rows(blocks, xp):
    """Blocks of per-context arrays (or dicts of them, nested) joined along their first axis."""
    if len(blocks) == 1:
        return blocks[0]
    if isinstance(blocks[0], dict):
        return {key: _concatenate_rows([block[key] for block in blocks], xp) for key in blocks[0]}
    return xp.concatenate(blocks, axis=0)


def _map_state(state, f):
    """``f`` applied to each array of a per-context state (a dict of arrays and of dicts of them, one level)."""
    return {name: {k: f(v) for k, v in value.items()} if isinstance(value, dict) else f(value)
            for name, value in state.items()}


def _nanmean_rows(x, xp):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows give NaN, as intended
        return xp.nanmean(x, axis=-1)


def _robust_scale(x, xp):
    """1.4826 x MAD along the last axis, ignoring NaN; NaN where nothing is finite."""
    med = nanmedian(x)
    return MAD_TO_SIGMA * nanmedian(xp.abs(x - med[..., None]))


def _by_phase(x, period, xp):
    """(n_ctx, period, n_cycles) view of (n_ctx, n) values by phase ``t mod period``, NaN-padded."""
    n_ctx, n = x.shape
    n_cycles = -(-n // period)
    padded = xp.full((n_ctx, n_cycles * period), xp.nan)
    padded[:, :n] = x
    return padded.reshape(n_ctx, n_cycles, period).transpose(0, 2, 1)


def _seasonal_shape(season, missing, period, n_cyc, hi, edge, xp):
    """One period's seasonal shape: per phase, the median of ``season`` over ``n_cyc`` cycles.

    Parameters
    ----------
    season : array, shape (n_ctx, n)
        The fitted seasonal component of the period.
    missing : bool array, shape (n_ctx, n)
        Points missing in the decomposed data (filled only to run it).
    period, n_cyc : int
        The period, and the cycles per phase (at most the history's whole cycles).
    hi : int
        End (exclusive) of the cycles preferred: those before the last ``seasonal // 2``
        cycles, whose cycle-subseries fits are one-sided; ``hi >= n_cyc * period``.
    edge : int
        Cycles of a cycle-subseries smoother's half-window (``seasonal // 2``).

    Returns
    -------
    array, shape (n_ctx, period)
        Column ``p`` for phase ``t mod period``. Each phase takes the ``n_cyc`` cycles
        nearest to ``hi`` where that phase was observed, in this order of preference: before
        ``hi`` and more than ``edge`` cycles from any missing point of the phase (backwards
        from ``hi``), before ``hi`` but nearer a gap (backwards), after ``hi`` (forwards).
        A context without missing points thus gets the median over
        ``[hi - n_cyc * period, hi)``, bit for bit as before. A phase never observed keeps
        that median.

    Notes
    -----
    Missing points are filled (interpolated, or the last observation held) before the
    decomposition, and the seasonal component there is a smooth of the fill, not of the
    context's cycle; the cycles beside a gap are pulled towards it too, as the last cycles
    are towards the end. Read from fixed cycles, a multi-day gap near the end of the history
    flattened the shape, and clean data then alerted. 28 days of hourly Poisson counts with
    a daily cycle (log amplitude 1.77 when complete), scored on the 2 clean days that
    follow, threshold 4.20: the last 4 / 6 / 8 days missing gave amplitudes 1.57 / 0.42 /
    0.004, clean scores up to 3.57 / 6.82 / 9.62 and 0 / 7 / 4 alerts; a 3-day gap on days
    22-24 an amplitude of 0.41 and clean scores up to 7.48 (threshold 5.24). Read where the
    phase was observed: amplitudes 1.75 / 1.57 / 1.66 and 1.59, scores up to 2.66 / 2.28 /
    2.30 (with the level read likewise, see ``STLDetector._fit_state``) and 1.84, no alert.
    Without the preference for cycles clear of a gap (the last observed cycles): 1.69 /
    1.33 / 1.57 and 1.44, scores up to 2.19 / 2.89 / 4.27.
    """
    n = season.shape[1]
    lo = hi - n_cyc * period
    fixed = xp.roll(nanmedian(_by_phase(season[:, lo:hi], period, xp)), lo % period, axis=1)
    if not bool(missing.any()):
        return fixed
    # Row c of the search order holds the positions of phase (hi - 1 - c) mod period: first
    # backwards from hi - 1 - c (inside the smoother's window, nearest first), then forwards
    # from hi + period - 1 - c (the one-sided cycles at the end, nearest first).
    anchor = hi - 1 - xp.arange(period)[:, None]
    back = anchor - period * xp.arange((hi - 1) // period + 1)[None, :]
    ahead = anchor + period * xp.arange(1, (n - hi) // period + 2)[None, :]
    order = xp.concatenate([back, ahead], axis=1)  # (period, cycles searched)
    inside = (order >= 0) & (order < n)
    order = xp.clip(order, 0, n - 1)
    observed = inside[None] & ~missing[:, order]
    # A cycle whose cycle-subseries smoother reaches a missing point of its phase (within
    # ``edge`` cycles) is pulled towards the fill, as the last cycles are towards the end.
    near_gap = xp.zeros_like(missing)
    for j in range(1, edge + 1):
        if j * period >= n:
            break
        near_gap[:, j * period:] |= missing[:, :n - j * period]
        near_gap[:, :n - j * period] |= missing[:, j * period:]
    before_hi = xp.zeros(order.shape, dtype=bool)
    before_hi[:, :back.shape[1]] = True
    clean = ~near_gap[:, order]
    taken = xp.zeros(observed.shape, dtype=bool)
    # preferred first: observed cycles before hi clear of gaps, then before hi near a gap, then after hi
    for tier in (before_hi[None] & clean, before_hi[None] & ~clean, ~before_hi[None]):
        room = n_cyc - taken.sum(axis=2, keepdims=True)
        candidates = observed & tier
        taken |= candidates & (xp.cumsum(candidates, axis=2) <= room)
    masked = nanmedian(xp.where(taken, season[:, order], xp.nan))
    count = taken.sum(axis=2)
    rows = (hi - 1 - xp.arange(period)) % period  # the row of each phase (its own inverse)
    return xp.where(count[:, rows] > 0, masked[:, rows], fixed)


def _last_columns(x, width, xp):
    """The last ``width`` columns of ``x`` (n_ctx, n), a copy; NaN-padded on the left when the
    history is shorter (the points before it were not observed). ``x[:, n - width:]`` would
    start at a negative column there, and wrap."""
    n_ctx, n = x.shape
    pad = xp.full((n_ctx, max(0, width - n)), xp.nan)
    return xp.concatenate([pad, x[:, max(0, n - width):]], axis=1)


def _phase_values(table, start, length, xp):
    """``table[:, (start + j) mod period]`` for ``j < length``: per-phase values laid along time."""
    period = table.shape[1]
    phases = (start + xp.arange(length)) % period
    return table[:, phases]


# Share of a rolling window that must be observed for its mean and spread (base.MIN_OBSERVED_SHARE,
# chosen here; the LSTM uses it too). The windowed scores compare a window with the fit's windows ending at the same phase, all of a whole cycle, so a
# window that sees only part of the cycle has another mean and spread even in clean data. At
# half (the former rule) a batch scored a day after the fit's end, whose first window reaches
# back over the missing day, alerted on all 20 clean contexts of a test panel at its 12th point
# (level shift, low variance); at 7/8 it gives 1 and 0 alerts, as a batch that follows the fit
# does (2), and the pooled AUC-ROC on make_security_panel (seeds 0-2) is unchanged: 0.943,
# 0.941, 0.951. Whole windows only (1.0) lose the windowed scores around every missing point:
# 0.937, 0.938, 0.929.

# Bound on the (contexts x times) block of running sums computed at once, in
# elements, so memory stays well under 1 GB however many contexts there are.
_MAX_BLOCK_ELEMENTS = 8_000_000


def _rolling_stats(x, window, xp):
    """Mean and standard deviation (``ddof=0``) of the ``window`` values ending at each column, NaN ignored.

    Both NaN before a full window or where less than ``base.MIN_OBSERVED_SHARE`` of it is finite.
    Computed from running sums of each row minus its median, so that a large
    level does not cancel the squares of small deviations; windows where the
    sums may still have cancelled most digits are recomputed from their values.
    """
    n_ctx, n = x.shape
    mean = xp.full((n_ctx, n), xp.nan)
    sd = xp.full((n_ctx, n), xp.nan)
    if n < window:
        return mean, sd
    rows = max(1, _MAX_BLOCK_ELEMENTS // max(1, n))
    for lo in range(0, n_ctx, rows):
        mean[lo:lo + rows, window - 1:], sd[lo:lo + rows, window - 1:] = _rolling_block(x[lo:lo + rows], window, xp)
    return mean, sd


def _rolling_block(x, window, xp):
    """:func:`_rolling_stats` of a block of rows, for the windows that end at columns ``window - 1`` on."""
    n_ctx = x.shape[0]
    finite = xp.isfinite(x)
    center = xp.nan_to_num(nanmedian(x), nan=0.0)
    y = xp.where(finite, x - center[:, None], 0.0)
    zero = xp.zeros((n_ctx, 1))

    def window_sums(a):
        c = xp.concatenate([zero, xp.cumsum(a, axis=1)], axis=1)
        return c[:, window:] - c[:, :-window]

    count = window_sums(finite.astype(xp.float64))
    s1 = window_sums(y)
    squares = y * y
    s2 = window_sums(squares)
    enough = count >= max(2, min_observed(window))
    with np.errstate(invalid="ignore", divide="ignore"):  # windows without data give NaN
        m = s1 / count
        var = xp.maximum(s2 / count - m * m, 0.0)
        # where the running sums may have cancelled most digits of the window's spread (a window
        # far from the row's median, nearly flat), recompute it directly from its values
        suspect = enough & (var * count < 1e-9 * squares.sum(axis=1, keepdims=True))
        suspect &= window_sums((y != 0).astype(xp.float64)) > 0  # a window at the median is exact
    m = m + center[:, None]
    sd = xp.sqrt(var)
    if bool(suspect.any()):
        r, c = xp.nonzero(suspect)
        block = x[r[:, None], c[:, None] + xp.arange(window)[None, :]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            m[r, c] = xp.nanmean(block, axis=1)
            sd[r, c] = xp.nanstd(block, axis=1)
    return xp.where(enough, m, xp.nan), xp.where(enough, sd, xp.nan)


class STLDetector(BaseDetector):
    """Seasonal-trend anomaly detector: deviations from the fitted seasonal shape and slow trend,
    shifts of a window's level, and stretches of unnaturally low variance.

    ``fit`` decomposes each context's history (robust STL for one period, MSTL
    for several, on a variance-stabilised scale; see :func:`decompose`) and
    keeps, per context: the seasonal shape (one value per phase of each
    period), the level and slope at the end of the history, the remainder's
    robust scale per phase of the shortest period (hour of day), the typical
    mean and dispersion of the observations over a rolling window per phase,
    and the last window of observations.

    ``score`` does **not** decompose the history and the new points again:
    that would let a slow rise over days move into the trend and a bot's
    night-time activity into the seasonal shape -- the attack would be
    absorbed.  Each new point is compared with the expectation carried from
    the fit: the fitted seasonal shape at its phase plus a level that starts
    at the fitted one, continues the fitted slope (damped) and may only move
    slowly and robustly (by at most ``trend_alpha * trend_clip`` scales per
    step, whatever the data do).  Three scores follow:

    * **deviation**: how far the point is from its expectation in units of
      noise, signed by ``direction``: the smaller of the z-score
      ``(x - expected) / scale`` (``scale``: the remainder's robust scale at
      that phase, widened to what held-out data showed) and the count's
      Poisson deviance residual against its expected mean (see ``min_scale``
      and Notes), so that both a context's own noise and the noise any count
      has must call it large;
    * **level shift**: the mean of the (transformed) observations over the
      last ``variance_window`` points against the means of the fit's windows
      ending at the same phase, as a z-score signed by ``direction``.  It adds
      up evidence a single point does not carry: a registration farm that
      posts a few registrations every hour where one a day is usual, a drip
      of failed logins tens of percent above normal for days;
    * **low variance**: the standard deviation of the (transformed)
      observations over the last ``variance_window`` points -- with the
      default window of one shortest period, the daily swing plus the noise
      -- against the same statistic for the fit's windows ending at the same
      phase, as a robust z-score of its logarithm (positive = more regular
      than the history ever was).  A scripted registration farm posts a
      near-constant count around the clock: neither the daily swing nor the
      noise is there.

    The detector's score is the largest of the three (all are z-scores on
    the same scale, and the threshold is calibrated on their maximum); alerts
    say which one fired.  Higher = more anomalous.

    Parameters
    ----------
    periods : int or sequence of int, default 24
        Seasonal period(s) in time steps: 24 for a daily cycle of hourly data,
        ``(24, 168)`` for daily and weekly (a list or array too).
    robust : bool, default True
        Robust STL (bisquare re-weighting), so past attacks in the history
        do not bend the fitted shape.  With a transform, contexts whose robust
        fit collapses (sparse counts, see Notes) are decomposed without it;
        without one (``transform=None``) every context keeps the robust fit.
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
        Which deviations and level shifts count: rises (credential stuffing,
        bots), drops (outages) or both.
    variance_window : int or None, default None
        Points in the rolling window of the two windowed scores (level shift
        and low variance); None: the shortest period (a day of hourly data).
        0 disables both. A window is scored where at least 7/8 of its points
        are observed: one that sees only part of the cycle (the first hours
        after a gap) would differ from the fit's windows without an anomaly.
    trend_alpha : float, default 0.01
        Share of each (clipped) standardised deviation that moves the tracked
        level -- how fast the expectation may follow a real change.  In [0, 1]
        (0: the level only follows the fitted slope).
    trend_clip : float, default 1.0
        Deviations are clipped to this many scales before moving the level, so
        one burst barely moves it and a sustained attack moves it by at most
        ``trend_alpha * trend_clip`` scales per step.  A finite number > 0.
    shape_seasons : int, default 3
        The seasonal shape is the median of the fitted seasonal component over
        ``shape_seasons`` cycles of each period: the last ones that lie
        inside the seasonal smoother's window (``seasonal // 2`` cycles before
        the end of the history), where the component is not an extrapolation
        of the last few points; when the history is too short for that, its
        first ``shape_seasons`` cycles (those furthest from its one-sided end).
        Each phase is read only where it was observed: where points of the
        history are missing, a phase takes the nearest cycles before those in
        which it was observed and that lie more than the smoother's half-window
        from a missing point of it (searching further back, then nearer gaps,
        then among the last cycles), since the seasonal component over a gap is
        a smooth of the filled values -- the last 8 of 28 days missing had
        flattened the daily shape to nothing and clean days then alerted. A
        context without missing points gets the fixed cycles' shape.
    level_seasons : int, default 7
        The level at the end of the history is the median of the
        deseasonalised observations over the last ``level_seasons`` cycles of
        the shortest period (7: a week of daily cycles, so that a weekly rhythm
        the periods do not model averages out), carried to the end by the slope;
        the slope is the change of that median from the ``level_seasons``
        cycles before (0 when the history is shorter than twice that). A
        context with no observation in those cycles takes the median over its
        last ``level_seasons`` cycles' worth of observed points, without slope.
    holdout_seasons : int, default 7
        Cycles of the shortest period in each held-out block that calibrates
        the threshold out of sample (see Notes); fewer when the history is
        short (at most half of it, and enough left to decompose).
    holdout_folds : int, default 2
        Held-out blocks (rolling origins): the last ``holdout_seasons`` cycles,
        the ones before them, ..., each scored from a fit on everything before
        it, as long as that fit keeps at least a block's length.  0: calibrate
        on the in-sample scores of the whole history.  A history too short to
        hold anything out (periods=24: under 3 days) is calibrated in sample
        too, with a :class:`~tsanomaly.CalibrationWarning`: in-sample scores are
        far smaller than new data's, so the threshold is too low (2 days of
        clean failed logins: 1.36, and 59% of the next clean week flagged).
    min_scale : float or None, default None
        None (the default): counts have at least Poisson noise, and the
        deviation is measured against it as well as against the context's
        scale.  With log1p: the Poisson deviance residual of the count against
        its expected mean (rises measured from at least one event: below one
        event per bucket a single event is no surprise); the ordinary noise
        scale of such counts on the log scale is the delta-method
        ``sqrt(m) / (1 + m)``, ``m = max(mu, 1)``, which also moves the tracked
        level and bounds the windowed scores.  With sqrt: the Poisson standard
        deviation of a square-rooted count, 1/2.  Without a transform: none
        (the scale is at least a millionth of the typical level).  So a zero
        where 6 events are expected scores about 3.5 (Poisson p = 0.0025), not
        38, and 30 events where 0-1 are usual about 7-12.  A finite number
        > 0: a fixed lower bound of ``scale`` on the transformed scale, no
        count model (0 is refused: a flat history's scale would be 0, and
        any deviation from it infinite).
    threshold, contamination, per_context, device
        See :class:`tsanomaly.base.BaseDetector`.

    Attributes
    ----------
    skipped_ : bool array, shape (n_contexts,)
        True for the contexts with fewer than two full cycles of the longest
        period observed in the history; their scores are NaN (one warning at fit
        says how many).
    skipped_contexts_ : pandas.Index
        Those contexts' labels (read from ``skipped_``).
    robust_fit_ : bool array, shape (n_contexts,)
        False where the robust decomposition collapsed and the context was
        decomposed without robustness weights (see Notes).
    level_, slope_ : array, shape (n_contexts,)
        Level (transformed units) at the end of the history, and its slope
        per step.
    seasonal_shape_ : dict of str to array, shape (n_contexts, period)
        Per period, the seasonal value of each phase ``t mod period`` (``t``
        counted from the first fitted point).
    scale_ : array, shape (n_contexts, shortest period)
        Robust scale of the remainder per phase, shrunk towards the context's
        overall scale (and equal to it at a phase never observed in the
        history), times ``scale_inflation_``.
    scale_inflation_ : array, shape (n_contexts,)
        Robust scale (>= 1) of the held-out standardised deviations: how much
        larger the out-of-sample deviations are than the in-sample remainder.
    holdout_, holdout_folds_ : int
        Points in each held-out block, and the number of blocks (0: the
        threshold was calibrated in sample).
    level_center_ : array, shape (n_contexts, shortest period)
        Median of the fit's rolling-window means, per phase of the window's last point.
    level_spread_ : array, shape (n_contexts,)
        Spread of the window means around those medians (mean absolute
        deviation, scaled to a standard deviation), at least the noise of a
        mean of ``variance_window`` points.
    dispersion_center_ : array, shape (n_contexts, shortest period)
        Median of the log standard deviation of the (transformed) observations
        over the fit's rolling windows, per phase of the window's last point.
    dispersion_spread_ : array, shape (n_contexts,)
        Robust spread of those log standard deviations around their medians.
    dispersion_floor_ : array, shape (n_contexts,)
        Lower bound of a window's standard deviation (a tenth of the typical
        scale), so that a flat window has a finite log-dispersion; with a
        transform a window's standard deviation is also floored at half an
        event's step at its mean count (counts cannot look more regular than
        they can resolve).
    recent_values_ : array, shape (n_contexts, variance_window - 1)
        The last transformed observations of the history (the end of the last
        season), which complete the first windows of new data; NaN before the
        history's first point when the window is longer than the history.

    Notes
    -----
    **Sparse counts.**  Robust STL weights each point by the bisquare of its
    remainder over ``6 x median |remainder|``.  On a context whose counts are
    mostly zero (failed logins of a small ASN: 0 or 1 an hour) the median
    remainder is about zero, every non-zero count gets weight zero, and the
    LOESS fits -- above all at the end of the series, where they are
    one-sided -- extrapolate from a handful of points: trend and seasonal
    component run away (a seasonal value of 3.2, an expectation of 12 events
    where 0 or 1 are ever seen).  The decomposition is right (statsmodels
    does the same); the robust fit is the wrong tool there.  With a
    transform, a context is refitted without robustness weights when the
    bisquare's cut-off, ``6 x median |remainder|``, is below one event at its
    median count (``log1p(c + 1) - log1p(c)``): the robust fit would then
    reject ordinary count noise.  And whatever the fit, the carried state is
    read where the decomposition is well determined: the seasonal shape from
    cycles inside the seasonal smoother's window (and, per phase, away from
    the points that were missing and filled), the level from a median of
    the deseasonalised observations (not from the last point of the trend),
    and the expectation is at least zero events.

    **Counts.**  On the log scale a drop to a few events looks far more
    extreme than a rise of the same probability, and a fitted scale of a
    quiet context can be tiny: a zero where 6 events are expected was a
    z-score of 38.  The deviation is therefore the smaller of the z-score and
    the Poisson deviance residual against the expected mean
    (``expm1(expected + scale**2 / 2)``: the carried expectation is a median
    on the log scale, below the mean of a skewed count).  The expectation is
    never below zero events.

    **Calibration.**  The threshold (``quantile`` / ``pot``) is calibrated on
    out-of-sample scores, produced exactly as :meth:`score` produces them
    (rolling origins): the per-context state is fitted on the history minus
    its last ``holdout_seasons`` cycles and those cycles are scored from it
    with the same carried expectation and windows; then the same for the
    block before, from a fit on what precedes it; ``holdout_folds`` blocks in
    all.  In-sample remainders are smaller and differently tailed than
    deviations from a carried expectation (a sparse context's remainder over
    a collapsed scale, the weekly rhythm a daily period does not model, the
    error of the carried level), so a threshold learnt on them did not match
    the scores of new data (thresholds of 26-32 above bursts scoring 15-20).
    Two blocks rather than one halve the variance of the estimated quantile,
    which clustered events (a country's holiday) make large; the earlier
    block's fit is shorter, which errs on the side of fewer alerts.  The
    robust scale of the held-out deviations also widens each context's scale
    (``scale_inflation_``) where its out-of-sample deviations are wider than
    its remainder.  The state used for scoring is then fitted on the whole
    history.  The training scores returned by :meth:`fit_score` are the
    held-out scores, NaN before them.  Fitting decomposes the history and
    each fold's shorter part (with 21 days and the defaults: 21 + 14 + 7
    days), about twice the cost of one decomposition.

    Points missing in the new data score NaN and do not move the tracked
    level.

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
    explanation_types = {"expected": "double", "observed": "double", "trend": "double", "seasonal": "double",
                         "fired": "string"}
    #: The fit raises ValueError on a history shorter than :meth:`min_fit_times`.
    _fit_raises_when_short = True
    #: The parts of the score, in the order ``fired`` reports them.
    score_parts = ("deviation", "level_shift", "low_variance")

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
        level_seasons=7,
        holdout_seasons=7,
        holdout_folds=2,
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
        self.level_seasons = level_seasons
        self.holdout_seasons = holdout_seasons
        self.holdout_folds = holdout_folds
        self.min_scale = min_scale
        self.threshold = threshold
        self.contamination = contamination
        self.per_context = per_context
        self.device = device

    # -------------------------------------------------------------- parameters
    def _validate(self, fitting: bool = True) -> None:
        for name in ("periods", "seasonal"):  # as _config reads them (the parameters stay as given)
            value = getattr(self, name)
            if value is not None and not is_int(value):
                _as_int_tuple(value, name)
        if self.transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {TRANSFORMS}, got {self.transform!r}")
        score_direction(0.0, self.direction)
        if self.variance_window is not None and (not is_int(self.variance_window) or self.variance_window < 0
                                                 or self.variance_window == 1):
            raise ValueError(f"variance_window must be None, 0 (off) or an integer >= 2, got {self.variance_window!r}")
        # Finite and not bools (True would read as 1.0): NaN min_scale made every score NaN,
        # inf every score about 0; an infinite trend_clip would drop the bound on how far the
        # level moves per step (trend_alpha * trend_clip scales) that the docs promise.
        if not is_finite_real(self.trend_alpha) or not 0.0 <= self.trend_alpha <= 1.0:
            raise ValueError(f"trend_alpha must be a number in [0, 1], got {self.trend_alpha!r}")
        if not is_finite_real(self.trend_clip) or not self.trend_clip > 0:
            raise ValueError(f"trend_clip must be a finite number > 0, got {self.trend_clip!r}")
        if not is_int(self.shape_seasons) or self.shape_seasons < 1:
            raise ValueError(f"shape_seasons must be a positive integer, got {self.shape_seasons!r}")
        if not is_int(self.level_seasons) or self.level_seasons < 1:
            raise ValueError(f"level_seasons must be a positive integer, got {self.level_seasons!r}")
        if not is_int(self.holdout_seasons) or self.holdout_seasons < 1:
            raise ValueError(f"holdout_seasons must be a positive integer, got {self.holdout_seasons!r}")
        if not is_int(self.holdout_folds) or self.holdout_folds < 0:
            raise ValueError(f"holdout_folds must be a non-negative integer, got {self.holdout_folds!r}")
        # A bound of 0 is no bound: a flat history's scale is 0, and its first event scores inf.
        # Refused for a fit only: a model fitted with 0 before the rule still scores as it did.
        if self.min_scale is not None and (not is_finite_real(self.min_scale) or self.min_scale < 0
                                           or (fitting and self.min_scale == 0)):
            raise ValueError(
                f"min_scale must be None or a finite number > 0, got {self.min_scale!r}: it bounds the "
                "scale from below, and with 0 a flat history's scale is 0 (use a small positive bound or None)"
            )

    def min_fit_times(self) -> int:
        """Fewest time steps for a finite training score (see :meth:`BaseDetector.min_fit_times`):
        the shortest history that keeps a period. STL needs two full cycles of its period; MSTL
        keeps a period only below half the history's length, so it needs one point more than two
        cycles of its shortest period (the longer ones are then dropped, with a warning). A
        history that long is calibrated in sample, with a CalibrationWarning: a held-out block
        needs one cycle of the shortest period more (see ``holdout_folds``)."""
        self._validate()
        # any length checks the other parameters; a huge one keeps every period
        periods = self._config(2**62, warn=False).periods
        return _length_keeping(min(periods), len(periods) > 1)

    def _window(self) -> int:
        if self.variance_window is None:
            return int(min(self.periods_))
        return int(self.variance_window)

    def _config(self, n_time: int, warn: bool = True) -> _StlConfig:
        return _resolve_config(n_time, self.periods, self.robust, self.seasonal, self.trend, self.low_pass,
                               self.seasonal_deg, self.trend_deg, self.low_pass_deg, self.inner_iter,
                               self.outer_iter, self.iterate, warn=warn)

    def _check_counts(self, values, panel) -> None:
        """ValueError naming the context and time of the first negative value, when a transform
        (which needs counts) is set; ``values`` are ``panel``'s, row for row."""
        if self.transform is None:
            return
        xp = backend.array_module(values)
        negative = values < 0
        if bool(negative.any()):
            row, col = (int(v) for v in xp.argwhere(negative)[0])
            raise ValueError(
                f"transform={self.transform!r} needs counts >= 0, got {float(values[row, col])} for context "
                f"{panel.contexts[row]!r} at {panel.index[col]}; use transform=None for signed data"
            )

    def _transformed(self, values):
        """The values on the transformed scale (checked by :meth:`_check_counts` first)."""
        return _forward(values, self.transform, backend.array_module(values))

    def _count_floor(self, expected, xp):
        """The noise a count has at least, on the transformed scale, at an expected (transformed) value.

        With log1p the delta-method standard deviation of log1p of a Poisson count, taken at one
        event at least (see ``min_scale``); it sizes the tracked level's steps and the noise floor
        of the level-shift score."""
        if self.min_scale is not None:
            return float(self.min_scale)
        if self.transform == "log1p":
            m = xp.maximum(xp.expm1(expected), 1.0)  # one event at least: see ``min_scale``
            return xp.sqrt(m) / (1.0 + m)
        if self.transform == "sqrt":
            return 0.5
        return 0.0

    def _standardise(self, z, expected, scale, xp):
        """Signed deviation of ``z`` from ``expected`` (transformed units) in units of noise.

        The smaller of two sizes, so that both noise models must call it large: the deviation over
        the context's scale at that phase (``scale``: the remainder's, out-of-sample inflated), and
        -- with a transform and ``min_scale=None`` -- the count's distance from its expected mean in
        units of count noise.  With log1p that is the Poisson deviance residual
        (:func:`_poisson_deviance`) against the mean of a count whose log1p is centred at
        ``expected`` with the phase's spread ``s`` (``expm1(expected + s**2 / 2)``: the carried
        expectation is a median on the log scale, below the mean of a skewed count): on the log
        scale a drop to a few events would otherwise look far more extreme than a rise of the same
        probability.  With sqrt it is the deviation over the Poisson standard deviation of a
        square-rooted count, 1/2.
        """
        d = z - expected
        if self.min_scale is not None:
            return d / xp.maximum(scale, float(self.min_scale))
        if self.transform is None:
            return d / scale
        with np.errstate(invalid="ignore", divide="ignore"):  # a zero scale: the count's noise decides
            u = d / scale
        if self.transform == "sqrt":
            g = d / 0.5
        else:
            g = _poisson_deviance(xp.expm1(z), xp.expm1(expected + 0.5 * xp.nan_to_num(scale) ** 2), xp)
        return xp.where(xp.abs(u) < xp.abs(g), u, g)

    def _log_dispersion(self, mean_w, sd_w, floor, xp):
        """Log of a window's standard deviation, floored: at ``floor`` (a flat window stays finite) and,
        with a transform, at half an event's step at the window's mean count ``c``
        (``(g(c + 1) - g(c)) / 2``, ``g`` the transform).  Counts cannot look more regular than they
        can resolve: a window of zeros in a context that sees an event a day is quiet, not scripted,
        while a farm posting 100 +- 1 an hour is far below the noise of its level."""
        if self.transform is None:
            return xp.log(xp.maximum(sd_w, floor[:, None]))
        c = xp.maximum(_inverse(xp.where(xp.isnan(mean_w), 0.0, mean_w), self.transform, xp), 0.0)
        step = _forward(c + 1.0, self.transform, xp) - _forward(c, self.transform, xp)
        return xp.log(xp.maximum(sd_w, xp.maximum(floor[:, None], 0.5 * step)))

    def _min_fit_length(self, cfg: _StlConfig) -> int:
        """Shortest history decomposed with the same periods (all of them kept). MSTL's rule (a
        period below half the length) holds whenever several periods were asked for, also when
        ``cfg`` kept only one of them: with periods=(24, 168), 72 and 96 points held out 24 and
        48 and left 48 to fit, where MSTL keeps no period, and the fit raised."""
        return _length_keeping(max(cfg.periods), len(_as_int_tuple(self.periods, "periods")) > 1)

    def _holdout_length(self, n: int, cfg: _StlConfig) -> int:
        """Points of one held-out block: whole cycles of the shortest period, at most half of the
        history, leaving enough to decompose with the same periods."""
        if not self.holdout_folds:
            return 0
        p_min = min(cfg.periods)
        for cycles in range(int(self.holdout_seasons), 0, -1):
            hold = cycles * p_min
            if 2 * hold <= n and n - hold >= self._min_fit_length(cfg):
                return hold
        return 0

    def _calibration_caveat(self, n_times: int) -> str | None:
        """The :class:`~tsanomaly.base.CalibrationWarning` message for a fit on ``n_times`` steps that
        asks for held-out folds (``holdout_folds > 0``, a calibrated threshold) but has room for none,
        else None. :mod:`tsanomaly.spark` asks it on the driver too (the shards fit out of sight).

        Why a warning: on so short a history the threshold is learnt on in-sample scores, which are
        far smaller than the scores of new data. periods=24, 2 days of 20 clean contexts of
        make_security_panel: thresholds of 1.36 (failed logins) and 1.38 (registrations), and 59% /
        38% of the next clean week's points above them; from 3 days, with one held-out day, 7.06 and
        4.34, and none. Not a refusal (``min_fit_times`` stays the shortest history that scores):
        ``holdout_folds=0`` and a fixed threshold ask for no held-out fold, and MSTL histories just
        long enough to keep the longest period (``2 * period + 1`` to ``2 * period + shortest``
        points) hold nothing out either, however long they are.
        """
        if not self.holdout_folds or not isinstance(self.threshold, str):
            return None
        cfg = self._config(n_times, warn=False)
        if self._holdout_length(n_times, cfg):
            return None
        p_min = min(cfg.periods)
        before = self._min_fit_length(cfg)
        need = max(2 * p_min, p_min + before)
        return (
            f"{type(self).__name__}: the history of {n_times} time steps is too short to hold out any data "
            f"for calibration (holdout_folds={self.holdout_folds}): a held-out fold needs at least one "
            f"cycle of the shortest period ({p_min} points) after a fit on at least {before} points "
            f"(periods {list(cfg.periods)}), {need} points in all. The threshold is learnt in sample, on "
            "scores far smaller than new data's, so it is too low and clean data will alert; fit on at "
            f"least {need} time steps, or set holdout_folds=0 (in-sample calibration) or a fixed "
            "threshold to accept it"
        )

    @staticmethod
    def _inflate(state, inflation, xp):
        """Widen a state's point scale by the out-of-sample inflation, and the level shift's noise floor with it."""
        state["scale"] = state["scale"] * inflation[:, None]
        if "level_noise" in state:
            state["level_spread"] = xp.maximum(state["level_spread"], inflation * state["level_noise"])

    def fitted_without_data(self) -> np.ndarray:
        """The contexts skipped at fit (too few observed points for two cycles of the longest
        period): their state is NaN, so they score nothing (see
        :meth:`tsanomaly.base.BaseDetector.fitted_without_data`)."""
        self.check_fitted("fitted_without_data")
        skipped = vars(self).get("skipped_")
        if skipped is None:  # a model saved before skipped_ existed: the labels it kept
            labels = vars(self).get("_saved_skipped_contexts", self.contexts_[:0])
            return np.asarray(self.contexts_.isin(labels), dtype=bool)
        return np.asarray(backend.to_numpy(skipped), dtype=bool)

    @property
    def skipped_contexts_(self) -> pd.Index:
        """The contexts skipped at fit (see ``skipped_``), as labels."""
        return self.contexts_[self.fitted_without_data()]

    @skipped_contexts_.setter
    def skipped_contexts_(self, contexts) -> None:
        # Earlier versions kept the skipped contexts' labels as a fitted attribute, which tsanomaly.spark
        # took for global state (it differed between shards); their model files still set it at load.
        # The labels are kept aside and matched against contexts_ when read (contexts_ may come later,
        # or change: a Spark shard's detector holds its own contexts); load turns them into skipped_.
        self._saved_skipped_contexts = contexts

    def _fitted_state_kinds(self) -> dict:
        """Checked at load (see BaseDetector._fitted_state_kinds)."""
        kinds = {
            "periods_": "int_list", "decomposition_": "dict", "skipped_": "vector", "robust_fit_": "vector",
            "holdout_": "int", "holdout_folds_": "int", "scale_inflation_": "vector", "level_": "vector",
            "slope_": "vector", "seasonal_shape_": "matrices", "scale_": "matrix",
        }
        if self.variance_window != 0:  # the windowed scores are on (_window() > 0)
            kinds.update(level_center_="matrix", level_spread_="vector", dispersion_center_="matrix",
                         dispersion_spread_="vector", dispersion_floor_="vector", recent_values_="matrix")
        return kinds

    def _check_fitted_state(self) -> None:
        """The base's checks of each attribute's kind, then the widths scoring indexes by: one
        seasonal shape per fitted period, as wide as its period; the per-phase tables as wide as
        the shortest period; the kept values one short of the window."""
        saved = vars(self).pop("_saved_skipped_contexts", None)
        if saved is not None and "skipped_" not in vars(self):  # a file saved before skipped_ existed
            if not isinstance(saved, pd.Index):
                raise ValueError(
                    f"STLDetector's fitted skipped_contexts_ is {saved!r}, not an index: the file is damaged"
                )
            self.skipped_ = np.asarray(self.contexts_.isin(saved), dtype=bool)
        super()._check_fitted_state()
        periods = [int(p) for p in self.periods_]
        if sorted(self.seasonal_shape_) != sorted(str(p) for p in periods):
            raise ValueError(
                f"STLDetector's fitted seasonal_shape_ has periods {sorted(self.seasonal_shape_)} but periods_ is "
                f"{periods}: the file is damaged"
            )
        widths = {f"seasonal_shape_['{p}']": (self.seasonal_shape_[str(p)], p) for p in periods}
        widths["scale_"] = (self.scale_, min(periods))
        if self.variance_window != 0:
            widths.update(level_center_=(self.level_center_, min(periods)),
                          dispersion_center_=(self.dispersion_center_, min(periods)),
                          recent_values_=(self.recent_values_, self._window() - 1))
        for name, (array, width) in widths.items():
            if array.shape[1] != width:
                raise ValueError(
                    f"STLDetector's fitted {name} has {array.shape[1]} columns, not {width}: the file is damaged"
                )

    # -------------------------------------------------------------- fit
    def _fit(self, values, panel):
        self._validate()
        self._check_counts(values, panel)
        xp = backend.array_module(values)
        n_ctx, n = values.shape
        cfg = self._config(n)
        self.periods_ = list(cfg.periods)
        self.decomposition_ = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.as_dict().items()}
        # Contexts are fitted independently, so on the CPU they are fitted in blocks: the working
        # arrays of a block stay small (a few dozen arrays of the panel's size otherwise: 3 GB at
        # 100,000 contexts x 168 hours), and freed temporaries are reused instead of fresh memory
        # being mapped for each. The GPU takes the whole panel at once.
        hold = self._holdout_length(n, cfg)
        caveat = None if hold else self._calibration_caveat(n)
        if caveat:
            warnings.warn(caveat, CalibrationWarning, stacklevel=3)
        fits = [self._fit_contexts(values[rows], cfg, hold, xp) for rows in backend.context_blocks(n_ctx, n, xp)]
        state, train, skipped, robust_fit, inflation = (
            _concatenate_rows([getattr(fit, part) for fit in fits], xp)
            for part in ("state", "train", "skipped", "robust_fit", "inflation")
        )
        n_skipped = int(skipped.sum())
        # One flag per context, not the skipped labels: per-context state, which tsanomaly.spark
        # splits by context (a list of labels would be global state, and differ between shards).
        self.skipped_ = np.asarray(backend.to_numpy(skipped), dtype=bool)
        if n_skipped:
            warnings.warn("STLDetector: " + _skip_message(n_skipped, n_ctx, cfg, n), UserWarning, stacklevel=3)
        self.robust_fit_ = robust_fit
        self.holdout_ = int(hold)
        self.holdout_folds_ = fits[0].n_folds  # the same for every block: it depends on n and cfg only
        self.scale_inflation_ = inflation
        self.level_ = state["level"]
        self.slope_ = state["slope"]
        self.seasonal_shape_ = state["shape"]
        self.scale_ = state["scale"]
        if self._window():
            for name in ("level_center", "level_spread", "dispersion_center", "dispersion_spread",
                         "dispersion_floor", "recent_values"):
                setattr(self, name + "_", state[name])
        return train

    def _fit_contexts(self, values, cfg, hold, xp) -> "_ContextsFit":
        """Fit a block of contexts (``values``: (n_ctx, n) raw) with held-out blocks of ``hold``
        points (0: none); see :class:`_ContextsFit`."""
        n_ctx, n = values.shape
        z = self._transformed(values)
        # With held-out blocks the training scores come from the folds: the in-sample parts are not needed.
        state, insample, skipped, robust_fit = self._fit_state(values, z, cfg, xp, insample_parts=not hold)
        inflation = xp.ones(n_ctx)
        n_folds = 0
        if hold:
            # rolling origins: each held-out block is scored from a fit on everything before it
            folds = []
            for k in range(1, int(self.holdout_folds) + 1):
                m = n - k * hold
                if k > 1 and m < max(hold, self._min_fit_length(cfg)):
                    break
                held, _, _, _ = self._fit_state(values[:, :m], z[:, :m], self._config(m, warn=False), xp,
                                                insample_parts=False)
                folds.append((m, held, self._track_state(z[:, m:m + hold], held, m, 1, xp)))
            # out-of-sample deviations wider than the in-sample remainder: inflate the context's scale
            spread = _robust_scale(xp.concatenate([parts["u"] for _, _, parts in folds], axis=1), xp)
            inflation = xp.maximum(xp.where(xp.isfinite(spread), spread, 1.0), 1.0)
            train = xp.full((n_ctx, n), xp.nan)
            for m, held, _ in folds:
                self._inflate(held, inflation, xp)
                parts = self._track_state(z[:, m:m + hold], held, m, 1, xp)
                train[:, m:m + hold] = self._combine(parts, z[:, m:m + hold], xp)
            n_folds = len(folds)
        else:
            train = self._combine(insample, z, xp)
        self._inflate(state, inflation, xp)
        state.pop("level_noise", None)
        return _ContextsFit(state, train, skipped, robust_fit, inflation, n_folds)

    def _fit_state(self, values, z, cfg, xp, insample_parts: bool = True):
        """Per-context state fitted on a history (``values`` raw, ``z`` transformed, same shape).

        Returns ``(state, insample, skipped, robust_fit)``: the state as a dict of
        arrays (``level``, ``slope``, ``shape`` -- a dict by period --, ``scale``
        and, with windows, ``level_center``, ``level_spread``,
        ``dispersion_center``, ``dispersion_spread``, ``dispersion_floor``,
        ``recent_values``), the in-sample parts of the score (as
        :meth:`_track_state` names them; None without ``insample_parts``, as for a
        fit whose training scores come from held-out blocks), and the skipped /
        robustly fitted masks.
        """
        n_ctx, n = z.shape
        p_min = min(cfg.periods)
        trend, seasonal, remainder, _, _, skipped = _run(z, cfg, self.device_)
        robust_fit = xp.full(n_ctx, bool(cfg.robust))
        if cfg.robust and self.transform is not None:
            # Sparse counts: the bisquare's cut-off (6 x median |remainder|) below one event at the
            # median count means the robust fit rejects ordinary count noise and its LOESS fits
            # extrapolate from a few points; decompose those contexts without robustness weights.
            cut = _BISQUARE_SCALE * nanmedian(xp.abs(remainder))
            typical = xp.floor(xp.nan_to_num(nanmedian(values), nan=0.0))
            one_event = _forward(typical + 1.0, self.transform, xp) - _forward(typical, self.transform, xp)
            collapsed = (cut < one_event) & ~skipped
            if bool(collapsed.any()):
                rows = xp.flatnonzero(collapsed)
                plain = replace(cfg, robust=False, outer_iter=0,
                                inner_iter=int(self.inner_iter) if self.inner_iter is not None else 5)
                t, s, r, _, _, _ = _run(xp.ascontiguousarray(z[rows]), plain, self.device_)
                trend[rows] = t
                seasonal[:, rows] = s
                remainder[rows] = r
                robust_fit[rows] = False

        # seasonal shape per period: median over cycles inside the seasonal LOESS window, per phase
        # over the cycles where that phase was observed (see _seasonal_shape)
        missing = xp.isnan(z)
        shape = {}
        for k, period in enumerate(cfg.periods):
            n_cyc = max(1, min(int(self.shape_seasons), n // period))
            edge = cfg.seasonal[k] // 2  # the last cycles of each cycle-subseries are one-sided fits
            hi = min(n, max(n - edge * period, n_cyc * period))
            shape[str(period)] = _seasonal_shape(seasonal[k], missing, period, n_cyc, hi, edge, xp)

        def seasonal_at(start, length):
            out = xp.zeros((n_ctx, length))
            for table in shape.values():
                out = out + _phase_values(table, start, length, xp)
            return out

        # level at the end: median of the deseasonalised observations over the last cycles, carried
        # to the end by the slope (the change of that median from the cycles before)
        deseasonalised = z - seasonal_at(0, n)
        span = min(n, int(self.level_seasons) * p_min)
        recent = nanmedian(deseasonalised[:, n - span:])
        if n >= 2 * span:
            slope = (recent - nanmedian(deseasonalised[:, n - 2 * span:n - span])) / span
            slope = xp.where(xp.isfinite(slope), slope, 0.0)
        else:
            slope = xp.zeros(n_ctx)
        level = recent + slope * (span - 1) / 2.0
        unseen = ~xp.isfinite(level)
        if bool(unseen.any()):
            # No observation in the span: the median of the last ``span`` observed points (no
            # slope across the gap). The former fallback, the trend's last point, is a smooth of
            # the fill -- the last observation held, at whatever phase it was: 3.99 and 4.34
            # where the observations' median is 4.20 (the last 8 / 12 days of 28 missing), clean
            # scores up to 4.01 and 3.46 at a threshold of 4.20 even with the seasonal shape read
            # where it was observed; from the observed points 4.19 and 4.20, scores up to 2.30
            # and 2.22. Contexts observed in the span are unchanged.
            observed = ~xp.isnan(deseasonalised)
            latest = xp.cumsum(observed[:, ::-1], axis=1)[:, ::-1] <= span  # among the last span observed
            last_seen = nanmedian(xp.where(observed & latest, deseasonalised, xp.nan))
            level = xp.where(unseen, last_seen, level)
        level = xp.where(xp.isfinite(level), level, trend[:, -1])  # nothing observed (a skipped context)

        # remainder scale per phase of the shortest period, shrunk towards the context's scale
        by_phase = _by_phase(remainder, p_min, xp)
        overall = _robust_scale(remainder, xp)
        phase_scale = _robust_scale(by_phase, xp)
        count = xp.isfinite(by_phase).sum(axis=2)
        # a phase never observed has no scale of its own (NaN, and 0 x NaN is NaN): it takes the
        # shrinkage target, the context's scale (a NaN scale scored nothing there without a transform)
        phase_var = xp.where(count > 0, phase_scale**2, 0.0)
        blended = xp.sqrt((count * phase_var + _SHRINK * overall[:, None] ** 2) / (count + _SHRINK))
        scale = xp.maximum(blended, 0.25 * overall[:, None])
        if self.min_scale is not None:
            scale = xp.maximum(scale, float(self.min_scale))
        elif self.transform is None:
            # without a transform a flat history still needs a positive scale: a
            # millionth of its level, far above the rounding of the decomposition
            size = xp.nan_to_num(nanmedian(xp.abs(z)), nan=0.0)
            scale = xp.maximum(scale, 1e-6 * xp.maximum(size, 1.0)[:, None])
        state = {"level": level, "slope": slope, "shape": shape, "scale": scale}

        # in-sample parts (the training scores when nothing can be held out)
        w = self._window()
        lower = 0.0 if self.transform is not None else -xp.inf
        if insample_parts or w:
            expected = xp.maximum(trend + seasonal.sum(axis=0), lower)
            phase_scale = _phase_values(scale, 0, n, xp)
        insample = None
        if insample_parts:
            u = self._standardise(xp.where(xp.isnan(remainder), xp.nan, z), expected, phase_scale, xp)
            insample = {"u": u, "deviation": score_direction(u, self.direction)}

        if w:
            point_scale = xp.maximum(phase_scale, self._count_floor(expected, xp))
            typical_scale = xp.nan_to_num(nanmedian(point_scale), nan=1.0)
            floor = _MIN_DISPERSION * typical_scale
            mean_w, sd_w = _rolling_stats(z, w, xp)
            # low variance: log dispersion per phase of the window's last point
            log_disp = self._log_dispersion(mean_w, sd_w, floor, xp)
            by_phase = _by_phase(log_disp, p_min, xp)
            center = nanmedian(by_phase)
            # one spread per context, over all its windows: a per-phase spread from a few dozen
            # windows is too noisy for a z-score's denominator
            spread = _robust_scale((by_phase - center[..., None]).reshape(n_ctx, -1), xp)
            spread = xp.maximum(xp.where(xp.isfinite(spread), spread, _MIN_LOG_SPREAD), _MIN_LOG_SPREAD)
            # level shift: window means per phase; one spread per context (mean absolute deviation,
            # which -- unlike the MAD -- sees a weekly minority of quieter days), at least the noise
            # of a mean of w points
            level_center = nanmedian(_by_phase(mean_w, p_min, xp))
            gap = mean_w - _phase_values(level_center, 0, n, xp)
            level_spread = MEAN_ABS_TO_SIGMA * _nanmean_rows(xp.abs(gap), xp)
            level_noise = typical_scale / math.sqrt(w)
            level_spread = xp.maximum(xp.where(xp.isfinite(level_spread), level_spread, 0.0), level_noise)
            state.update(level_center=level_center, level_spread=level_spread, level_noise=level_noise,
                         dispersion_center=center,
                         dispersion_spread=spread, dispersion_floor=floor,
                         recent_values=_last_columns(z, w - 1, xp))
            if insample_parts:
                insample["low_variance"] = (_phase_values(center, 0, n, xp) - log_disp) / spread[:, None]
                insample["level_shift"] = score_direction(gap / level_spread[:, None], self.direction)
        return state, insample, skipped, robust_fit

    # -------------------------------------------------------------- scoring
    def _track_state(self, z, st, start, steps, xp, end_only: bool = False):
        """Expected values of new (transformed) data ``z`` from a state, and the parts of the score.

        ``st`` is a state as :meth:`_fit_state` returns it, with one row per row
        of ``z`` (NaN rows for unseen contexts); ``start`` is the position of
        ``z``'s first point counted from the first fitted point; ``steps`` the
        grid steps from the fit's last point to it (1 = it follows at once).
        Returns a dict of (n_ctx, n_new) arrays (transformed units):
        ``expected``, ``trend``, ``seasonal``, ``u`` (signed deviation in units
        of noise, see :meth:`_standardise`), ``deviation``, ``level_shift`` and
        ``low_variance`` (NaN when the windowed scores are off).

        With ``end_only``, returns only the state after the last point of ``z``:
        ``level`` and ``slope`` as they would enter the point that follows it, and with
        windows ``recent_values`` (the last ``window - 1`` transformed values, NaN for
        skipped steps), from which the next point is tracked as it would be in one call
        over both (:meth:`_update`). The parts of the score are then not computed: the
        same operations as without it, in the same order, up to the end state.
        """
        n_ctx, n_new = z.shape
        seasonal = xp.zeros((n_ctx, n_new))
        for table in st["shape"].values():
            seasonal = seasonal + _phase_values(table, start, n_new, xp)
        base_scale = _phase_values(st["scale"], start, n_new, xp)
        level = st["level"]
        slope = st["slope"]
        # damped slope: the fitted slope fades over about one shortest period
        damping = 1.0 - 1.0 / min(self.periods_)
        for _ in range(steps - 1):  # points between the fit's end and the new data
            slope = slope * damping
            level = level + slope
        lower = 0.0 if self.transform is not None else -xp.inf  # no fewer than zero events
        trend = xp.empty((n_ctx, n_new))
        expected = xp.empty((n_ctx, n_new))
        alpha = float(self.trend_alpha)
        clip = float(self.trend_clip)
        for j in range(n_new):
            slope = slope * damping
            level = level + slope
            e = xp.maximum(level + seasonal[:, j], lower)
            trend[:, j] = level
            expected[:, j] = e
            u = self._standardise(z[:, j], e, base_scale[:, j], xp)
            # the level may only move slowly and robustly: clipped, small steps; missing points do not move it
            step = alpha * xp.clip(u, -clip, clip) * xp.maximum(base_scale[:, j], self._count_floor(e, xp))
            level = level + xp.where(xp.isnan(step), 0.0, step)
        end = {"level": level, "slope": slope}
        w = self._window()
        if w:
            # the first windows reach back into the history's last values (NaN for skipped steps)
            past = st["recent_values"]
            gap = xp.full((n_ctx, min(steps - 1, past.shape[1])), xp.nan)
            joined = xp.concatenate([past, gap, z], axis=1)
            end["recent_values"] = joined[:, joined.shape[1] - past.shape[1]:].copy()
        if end_only:
            # an update keeps the end state only: the scores' parts (the rolling statistics
            # above all) would be thrown away
            return end
        u = self._standardise(z, expected, base_scale, xp)
        out = {"expected": expected, "trend": trend, "seasonal": expected - trend, "u": u,
               "deviation": score_direction(u, self.direction)}
        if w:
            mean_w, sd_w = _rolling_stats(joined, w, xp)
            mean_w = mean_w[:, joined.shape[1] - n_new:]
            sd_w = sd_w[:, joined.shape[1] - n_new:]
            log_disp = self._log_dispersion(mean_w, sd_w, st["dispersion_floor"], xp)
            center = _phase_values(st["dispersion_center"], start, n_new, xp)
            out["low_variance"] = (center - log_disp) / st["dispersion_spread"][:, None]
            shift = (mean_w - _phase_values(st["level_center"], start, n_new, xp)) / st["level_spread"][:, None]
            out["level_shift"] = score_direction(shift, self.direction)
        else:
            out["low_variance"] = xp.full((n_ctx, n_new), xp.nan)
            out["level_shift"] = xp.full((n_ctx, n_new), xp.nan)
        return out

    def _combine(self, parts, z, xp):
        """The detector's score: the largest part, NaN where the point is missing or cannot be scored."""
        scores = parts["deviation"]
        for name in ("level_shift", "low_variance"):
            if name in parts:
                scores = xp.fmax(scores, parts[name])
        return xp.where(xp.isnan(z) | xp.isnan(parts["deviation"]), xp.nan, scores)

    def _fitted_state(self):
        """The fitted per-context state as :meth:`_track_state` takes it."""
        st = {"level": self.level_, "slope": self.slope_, "shape": dict(self.seasonal_shape_), "scale": self.scale_}
        if self._window():
            for name in ("level_center", "level_spread", "dispersion_center", "dispersion_spread",
                         "dispersion_floor", "recent_values"):
                st[name] = getattr(self, name + "_")
        return st

    def _tracked_blocks(self, values, panel, rows, end_only: bool = False):
        """:meth:`_track_state` of new data from the fitted state, block of contexts by block.

        ``values`` (n_ctx, n_new) raw, ``rows`` the fitted row of each (-1: unseen, whose
        state is NaN). Checks the data and returns an iterator over ``(block, tracked)``:
        ``block`` a slice of the contexts, ``tracked`` its parts of the score (or its end
        state, with ``end_only``), each computed as the block comes. A context's track
        depends on it alone, so on the CPU the blocks bound the working arrays (a few dozen
        of the block's size; at 200,000 contexts the whole panel's took more time mapping
        fresh memory than computing); the GPU takes the whole panel as one block.
        """
        xp = backend.array_module(values)
        self._check_counts(values, panel)
        steps = self.steps_after_fit(panel, require_new=True)
        start = self.n_fit_times_ - 1 + steps  # position of the first new point, from the fit's start
        seen = xp.asarray(rows >= 0)
        take = xp.asarray(np.maximum(rows, 0))
        # fitted state lives where the fit ran; alerts explain on the host
        fitted = _map_state(self._fitted_state(), lambda a: backend.to_numpy(a) if xp is np else xp.asarray(a))
        n_ctx, n_new = values.shape
        # the widest working arrays: the rolling windows over the kept and the new values, or a
        # seasonal shape's phases
        width = max(n_new + self._window(), max(int(p) for p in self.periods_))

        def track(block):
            known = seen[block]

            def state(a):
                a = a[take[block]]
                return xp.where(known.reshape((-1,) + (1,) * (a.ndim - 1)), a, xp.nan)

            z = self._transformed(values[block])
            return self._track_state(z, _map_state(fitted, state), start, steps, xp, end_only=end_only)

        blocks = backend.context_blocks(n_ctx, width, xp) or [slice(0, 0)]  # no context: one empty block
        return ((block, track(block)) for block in blocks)

    def _track(self, values, panel, rows):
        """Expected values of new data from the fitted state, and the parts of the score.

        Returns a dict of (n_ctx, n_new) arrays (transformed units): ``expected``,
        ``trend``, ``seasonal``, ``u``, ``deviation`` (directional), ``level_shift``
        and ``low_variance`` (NaN when the windowed scores are off); rows of
        unseen contexts are NaN.
        """
        xp = backend.array_module(values)
        return _concatenate_rows([parts for _, parts in self._tracked_blocks(values, panel, rows)], xp)

    def _update(self, values, panel, rows, steps) -> None:
        """Track ``level_``, ``slope_`` and ``recent_values_`` on over new data (see
        :meth:`BaseDetector.update`); the seasonal shapes, scales and spreads stay as fitted.

        The level and slope are tracked over the new data by the same operations, in the same
        order, as ``score(concat(new, next))`` tracks them, so the deviation score of ``next``
        after ``update(new)`` equals that of one call bit for bit (exact with
        ``variance_window=0``). The windowed scores (level shift, low variance) agree within
        rounding (measured: up to 2e-14 relative, 5e-13 for a context that drops to zero under
        ``log1p``): their rolling means and spreads are running sums
        around each row's median, taken over another stretch of values. Phases are counted
        from the fit's start (``n_fit_times_``, which the update moves on). Skipped contexts
        (no state) stay so.
        """
        self._validate(fitting=False)
        xp = backend.array_module(values)
        end = _concatenate_rows([end for _, end in self._tracked_blocks(values, panel, rows, end_only=True)], xp)
        self.level_ = end["level"]
        self.slope_ = end["slope"]
        if self._window():
            self.recent_values_ = end["recent_values"]

    # -------------------------------------------------------------- score / explain
    def _score(self, values, panel, rows):
        self._validate(fitting=False)
        xp = backend.array_module(values)
        # each block's parts are combined as they come: the whole panel's parts are never held
        return _concatenate_rows(
            [self._combine(parts, values[block], xp) for block, parts in self._tracked_blocks(values, panel, rows)], xp
        )

    def _explain(self, panel, scores, ctx_rows, peak_pos):
        """Expected and observed value, trend and seasonal part (original units) at each alert's peak,
        and which score fired (``"deviation"``, ``"level_shift"`` or ``"low_variance"``)."""
        # A panel the scores were given for is checked whole, as scoring it would be.
        self._check_counts(panel.to_numpy(), panel)
        # A context's track depends on it alone.
        panel, ctx_rows, fitted_rows = alerting_contexts(panel, ctx_rows, self.context_rows(panel))
        values = panel.to_numpy()
        parts = self._track(values, panel, fitted_rows)
        parts = {k: backend.to_numpy(v)[ctx_rows, peak_pos] for k, v in parts.items()}
        expected = _inverse(parts["expected"], self.transform, np)
        lower = 0.0 if self.transform is not None else -np.inf
        trend = _inverse(np.maximum(parts["trend"], lower), self.transform, np)
        stacked = np.vstack([np.nan_to_num(parts[name], nan=-np.inf) for name in self.score_parts])
        fired = np.asarray(self.score_parts)[np.argmax(stacked, axis=0)]
        return {
            "expected": expected,
            "observed": values[ctx_rows, peak_pos],
            "trend": trend,
            "seasonal": expected - trend,
            "fired": fired,
        }
