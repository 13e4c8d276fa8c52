"""Per-context location and scale that detectors share: median and a floored robust sigma.

Scores that must be comparable across contexts (a country with a million logins an hour
and an ASN with ten) are expressed in units of each context's own spread. The spread is
robust (a burst in the history must not make every later burst look small) and floored
(a mostly-zero count series has a MAD of 0).

The NaN-ignoring median and quantile every detector and threshold computes live here too
(:func:`nanmedian`, :func:`nanquantile`): equal to NumPy's bit for bit, one sort of a whole
block instead of NumPy's per-slice paths, which dominated fitting many short series.
"""
from __future__ import annotations

import warnings

import numpy as np

from tsanomaly import backend

__all__ = [
    "MAD_TO_SIGMA", "MEAN_ABS_TO_SIGMA", "linear_quantile_positions", "lerp", "nanmedian", "nanquantile", "sorted_median",
    "constant_row_scale", "robust_center_scale", "robust_sigma", "COUNT_SCALE_FLOOR", "count_rows",
]

#: 1.4826 x MAD estimates the standard deviation of Gaussian data.
MAD_TO_SIGMA = 1.4826

#: sqrt(pi / 2) x the mean absolute deviation estimates the standard deviation of Gaussian data.
MEAN_ABS_TO_SIGMA = 1.2533

# Floors of the per-context scale (see robust_center_scale).  The mean-deviation floor
# matters for sparse counts (a context with mostly zero registrations has MAD 0): with
# half this floor the LSTM autoencoder's scaled values reached 5-10 and dominated its
# training loss, and on make_security_panel data the AUC-ROC of its newest-point error fell
# from 0.86 to 0.72.
_MEAN_DEV_FLOOR = 1.0
_REL_SCALE_FLOOR = 1e-3

#: Least scale of a series of counts (:func:`count_rows`), in counts: half a count, the floor STL's
#: deviation takes too (``0.5 * step``), so that one event more than expected is at most 2 sigma.
#: A sparse context (a failed login now and then: 0.03 an hour) otherwise has a robust scale of a
#: few hundredths, each of its single events scores tens of sigmas, and a few such contexts set the
#: one global threshold for all. 16 hourly contexts of about 50 events and 4 of 0.03 (a burst x6 and
#: a 6-hour outage among the 16): the baseline's threshold went from 6.4 (the 16 alone) to 65.6
#: and missed the outage, the plain matrix profile's from 0.31 to 6.45 and missed everything; with
#: the floor 6.4 and the outage alerts, and 0.31. ``tsanomaly demo --detector baseline``: precision
#: 0.58 -> 0.60, recall 0.60 -> 0.73. No NAB or UCR figure moved (no sparse counts there).
COUNT_SCALE_FLOOR = 0.5


def nanmedian(x, axis=-1, keepdims=False):
    """Median along ``axis`` ignoring NaN, without a warning: NaN where a slice has no finite value.

    Equal to ``numpy.nanmedian`` (the mean of the two middle values of an even count), and
    what every detector's robust statistics call.  Why not ``numpy.nanmedian`` itself: on
    slices shorter than 600 values -- the rows of a panel of short series, the past windows
    of the baseline -- it sorts through masked arrays, 5-10 times slower than one sort of the
    whole block.
    On 20,000 contexts x 360 hours that was 18 of the baseline's 20 s of fitting.  CuPy
    arrays go to ``cupy.nanmedian``, which equals NumPy's for finite values and NaN (what the
    detectors pass: Panels refuse infinities) but not for +inf beside a NaN (it sorts NaN as the
    largest finite float, below +inf).

    Parameters
    ----------
    x : array (NumPy or CuPy)
        Values; NaN = missing.
    axis : int, default -1
        The axis to reduce.
    keepdims : bool, default False
        Keep ``axis`` with length 1.

    Returns
    -------
    array of ``x``'s shape without ``axis`` (or with it of length 1), of ``x``'s float dtype
        (float64 for integers), of ``x``'s module.
    """
    xp = backend.array_module(x)
    if xp is not np:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN, as intended
            return xp.nanmedian(x, axis=axis, keepdims=keepdims)
    moved = np.moveaxis(np.asarray(x), axis, -1)
    if not np.issubdtype(moved.dtype, np.floating):
        moved = moved.astype(np.float64)
    if moved.shape[-1] == 0:
        median = np.full(moved.shape[:-1], np.nan, dtype=moved.dtype)
    else:
        median = sorted_median(*_sorted_slices(moved))
    return np.expand_dims(median, axis) if keepdims else median


def sorted_median(ordered: np.ndarray, n_finite: np.ndarray) -> np.ndarray:
    """:func:`nanmedian` along the last axis of slices already sorted, NaN last (as ``numpy.sort`` leaves them).

    For callers that sort a block they own in place (and may reuse it), instead of
    :func:`nanmedian`'s sorted copy.

    Parameters
    ----------
    ordered : numpy.ndarray, shape (..., n)
        Each slice along the last axis sorted ascending, NaN last; ``n >= 1``.
    n_finite : numpy.ndarray of int, shape (...)
        Values in each slice that are not NaN.

    Returns
    -------
    numpy.ndarray of shape (...): the median of each slice's first ``n_finite`` values, NaN where there are none.
    """
    low = _at(ordered, np.maximum((n_finite - 1) // 2, 0))
    high = _at(ordered, n_finite // 2)
    with np.errstate(invalid="ignore", over="ignore"):  # -inf and inf in the middle: NaN, as NumPy's
        median = np.where(n_finite % 2 == 1, low, (low + high) / 2)
    return np.where(n_finite > 0, median, np.nan)


def linear_quantile_positions(n, q: float):
    """The order statistics NumPy's default ("linear") quantile interpolates, for ``n`` values.

    Virtual index ``(n - 1) * q`` as NumPy computes it, clipped to the array, so that
    :func:`lerp` of the two order statistics is bit for bit ``numpy.quantile``.

    Parameters
    ----------
    n : int or integer array
        Number of values (per slice); at least 1 where the result is used.
    q : float
        The quantile, in [0, 1].

    Returns
    -------
    lower, upper : int64 arrays of ``n``'s shape (ints for a scalar ``n``)
        0-based ascending positions.
    gamma : float64 array of ``n``'s shape (a float for a scalar ``n``)
        Weight of ``upper``, in [0, 1).
    """
    scalar = np.ndim(n) == 0
    n = np.asarray(n, dtype=np.int64)
    virtual = (n - 1) * np.float64(q)
    inside = (virtual >= 0) & (virtual < n - 1)
    lower = np.where(inside, np.floor(virtual), np.where(virtual < 0, 0, n - 1)).astype(np.int64)
    upper = np.where(inside, lower + 1, lower)
    gamma = np.where(inside, virtual - lower, 0.0)
    if scalar:  # plain numbers for one count (the Spark driver indexes and hashes them)
        return int(lower), int(upper), float(gamma)
    return lower, upper, gamma


def lerp(a, b, gamma):
    """NumPy's quantile interpolation: ``a + (b - a) gamma``, computed from ``b`` when ``gamma >= 0.5``."""
    a, b, gamma = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), np.asarray(gamma)
    with np.errstate(invalid="ignore"):  # inf - inf: NaN, as NumPy's
        diff = b - a
        return np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)[()]  # 0-d: a NumPy float


def nanquantile(x, q: float, axis: int = -1, method: str = "linear"):
    """Quantile ``q`` along ``axis`` ignoring NaN (NumPy's "linear" or "lower" method), NaN where nothing is finite.

    Equal to ``numpy.nanquantile`` bit for bit. Why not ``numpy.nanquantile`` itself: with a
    NaN anywhere it computes each slice in a Python-level loop, 4.0 s for the per-context
    thresholds of 100,000 contexts x 504 training scores, against 1.5 s for one sort of the
    block here. NumPy arrays only (thresholds are calibrated on the host).

    Parameters
    ----------
    x : numpy.ndarray
    q : float
        In [0, 1].
    axis : int, default -1
    method : {"linear", "lower"}, default "linear"
        NumPy's method of the same name: interpolate between the two order statistics
        around ``(n - 1) * q``, or take the lower one (a value of the slice).

    Returns
    -------
    numpy.ndarray of float64, ``x``'s shape without ``axis``.
    """
    if method not in ("linear", "lower"):
        raise ValueError(f"method must be 'linear' or 'lower', got {method!r}")
    moved = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    if moved.shape[-1] == 0:
        return np.full(moved.shape[:-1], np.nan)
    ordered, n_finite = _sorted_slices(moved)
    lower, upper, gamma = linear_quantile_positions(np.maximum(n_finite, 1), q)
    value = _at(ordered, lower) if method == "lower" else lerp(_at(ordered, lower), _at(ordered, upper), gamma)
    return np.where(n_finite > 0, value, np.nan)


def _sorted_slices(moved: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each slice along the last axis sorted, and its count of values that are not NaN: NaN
    sorts last, so the ``k`` finite values of a slice are its first ``k``."""
    return np.sort(moved, axis=-1), moved.shape[-1] - np.isnan(moved).sum(axis=-1)


def _at(ordered: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``ordered[..., positions]`` slice by slice (``positions`` has ``ordered``'s shape minus its last axis)."""
    return np.take_along_axis(ordered, positions[..., None], axis=-1)[..., 0]


def robust_center_scale(values):
    """Median and robust scale of each row, ignoring NaN.

    The scale is ``1.4826 * MAD``, floored so that sparse and flat rows still
    get a positive value that scales with the data: at least ``1.2533 *`` the
    mean absolute deviation from the median (the same estimate of sigma for
    Gaussian data; non-zero unless the row is constant, whereas the MAD of a
    mostly-zero count series is 0), at least ``1e-3 * |median|`` (a constant
    row), and 1 for a row of zeros (or of NaN): :func:`constant_row_scale`.

    Parameters
    ----------
    values : array, shape (n_contexts, n_times), NumPy or CuPy
        NaN marks a missing value (replace inf by NaN first).

    Returns
    -------
    center, scale : arrays of shape (n_contexts,), of the same array module.
    """
    xp = backend.array_module(values)
    center = nanmedian(values, axis=1)  # all-NaN rows give NaN, replaced below
    scale = xp.nan_to_num(robust_sigma(xp.abs(values - center[:, None]), axis=1), nan=0.0)
    center = xp.nan_to_num(center, nan=0.0)
    scale = xp.where(scale > 0, xp.maximum(scale, _REL_SCALE_FLOOR * xp.abs(center)), constant_row_scale(center))
    return center, scale


def robust_sigma(deviations, axis=-1):
    """Robust sigma from absolute deviations from the median: ``1.4826 * MAD``, floored at
    ``1.2533 *`` the mean absolute deviation, ignoring NaN.

    The two agree for Gaussian data; the floor keeps the scale of a mostly-constant series
    (sparse counts, whose MAD is 0, or errors that are nearly all alike) at the size of its
    occasional departures, so that each of them is not read as many sigmas. The rule of
    :func:`robust_center_scale`, shared with the statistics of other quantities (the LSTM
    autoencoder's reconstruction errors).

    Parameters
    ----------
    deviations : array (NumPy or CuPy)
        ``|x - median(x)|`` along ``axis``; NaN = missing.
    axis : int, default -1

    Returns
    -------
    array of ``deviations``' shape without ``axis``, of its module
        NaN where a slice has no finite value; 0 for a constant slice.
    """
    xp = backend.array_module(deviations)
    mad = MAD_TO_SIGMA * nanmedian(deviations, axis=axis)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN, as intended
        mean_dev = MEAN_ABS_TO_SIGMA * xp.nanmean(deviations, axis=axis)
    return xp.maximum(mad, _MEAN_DEV_FLOOR * mean_dev)


def constant_row_scale(value):
    """The scale of a row without any spread (constant, or without finite values): ``1e-3 * |value|``,
    and 1 where that is 0 (a row of zeros) or ``value`` is NaN (no finite value).

    :func:`robust_center_scale`'s rule for such rows, shared with the detectors whose own
    spread estimate is 0 there (the baseline's scale floor), so that one extra event in a
    context that was flat scores the same, in its units, whichever detector sees it.

    Parameters
    ----------
    value : array, shape (n_contexts,), NumPy or CuPy
        The row's value (its median).

    Returns
    -------
    array of ``value``'s shape and array module, positive.
    """
    xp = backend.array_module(value)
    scale = _REL_SCALE_FLOOR * xp.abs(xp.nan_to_num(value, nan=0.0))
    return xp.where(scale > 0, scale, 1.0)


def count_rows(values):
    """Whether each row is a series of counts: it has an observed value, and every observed value
    is a whole number >= 0 (its scale is then floored at :data:`COUNT_SCALE_FLOOR` where a
    detector says so).

    Parameters
    ----------
    values : array, shape (n_contexts, n_times), NumPy or CuPy
        NaN marks a missing value.

    Returns
    -------
    array of bool, shape (n_contexts,), of the same array module.
    """
    xp = backend.array_module(values)
    finite = xp.isfinite(values)
    fractional = finite & ((values < 0) | (values != xp.round(values)))
    return finite.any(axis=1) & ~fractional.any(axis=1)
