"""Matrix profile: every window's distance to its most similar other window, and a detector on it.

The matrix profile of a series (Yeh et al. 2016, "Matrix Profile I", ICDM) holds,
for each window of ``m`` points, the z-normalised Euclidean distance to its
nearest non-trivial neighbour and where that neighbour is. A window unlike any
other — a bot's scripted rhythm, a burst with a new shape — has a large value
(a *discord*) without any model of normal behaviour. tsanomaly computes it with
the diagonal-order, mean-centred recurrence of STOMP/SCAMP (Zhu et al. 2016,
"Matrix Profile II", ICDM; Zimmerman et al. 2019, "Matrix Profile XIV", SoCC):
Numba on the CPU (:mod:`tsanomaly.kernels.mp_cpu`), CUDA through CuPy on the GPU
(:mod:`tsanomaly.kernels.mp_gpu`, ``cuda_kernels/matrix_profile.cu``), for one
long series or a whole batch of short per-context series in one call.

Rules shared by both devices
----------------------------
* Distance: ``d(a, b) = || (a - mean a)/std a - (b - mean b)/std b ||`` (population
  std), ``= sqrt(2 m (1 - rho))`` with ``rho`` the Pearson correlation; or, with
  ``normalize=False``, the plain Euclidean ``|| a - b ||`` (STUMPY's ``aamp``), which
  also sees a change of amplitude or level that z-normalising removes.
* Windows containing NaN or +-inf are nobody's neighbour: their own profile is
  inf with index -1, and they never appear as another window's index.
* Constant windows (all ``m`` values equal): two constant windows are at
  distance 0, a constant and a non-constant window at ``sqrt(m)`` (STUMPY's rule;
  z-normalised distances only: plain distances need no rule).
* Trivial matches: a self-join skips pairs with ``|i - j| <= exclusion``
  (default ``ceil(m / 4)``); an AB-join compares everything.
* Ties go to the smaller index up to rounding: neighbours are chosen on ``1 - rho``
  as the recurrence computes it (kept to ``52 - log2(n_windows)`` bits in double,
  see ``precision``), so the smaller index wins among windows whose *computed* values
  are equal, and among windows at exactly the same true distance the one that
  rounding put a few ulps nearer wins (``T = [1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 2, 0,
  0, 0, 0, 0, 0, 1]``, ``m = 3``: window 16's left neighbour is 9, though 6 is at
  distance 0 too). For the same reason the CPU and the GPU (which rounds differently:
  fused multiply-adds) may pick different neighbours among near-equal distances;
  the reported distances agree. The full profile takes the left neighbour when left
  and right are equally near.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tsanomaly import backend
from tsanomaly.base import BaseDetector, refuse_frame_or_path
from tsanomaly.panel import Panel
from tsanomaly.scaling import COUNT_SCALE_FLOOR, count_rows, nanmedian, robust_center_scale
from tsanomaly.validation import check_flag, is_int

__all__ = ["MatrixProfile", "matrix_profile", "MatrixProfileDetector", "SINGLE_PRECISION_RHO_BOUND"]

#: Documented bound on ``|rho_single - rho_double|`` (correlation of the reported neighbour):
#: ``|P_single**2 - P_double**2| <= 2 m * SINGLE_PRECISION_RHO_BOUND``. Measured (n = 2**14,
#: m = 24 and 100): at most 1e-5 on random walks (offsets up to 1e6, scales 1e-6 to 1),
#: white noise, sine + noise, Poisson counts (sparse, seasonal, with bursts of 5,000) and
#: walks with jumps of 1e4, with the default tiles of 2048 rows between exact restarts.
SINGLE_PRECISION_RHO_BOUND = 1e-4

_PRECISIONS = ("double", "single")


@dataclass(frozen=True)
class MatrixProfile:
    """Result of :func:`matrix_profile`.

    Arrays have shape ``(n_windows,)`` for a 1-D input and ``(n_contexts, n_windows)``
    for a batch, with ``n_windows = n - m + 1``; window ``i`` covers points
    ``i .. i + m - 1``. Distances are z-normalised Euclidean (0 .. ``2 sqrt(m)``), or
    with ``normalize=False`` plain Euclidean in the data's units (unbounded);
    ``inf`` where a window has no neighbour; indices are window starts, ``-1``
    where there is none. Arrays are NumPy, or CuPy when the input was CuPy.

    Attributes
    ----------
    profile, index
        Nearest neighbour on either side (self-join) or in ``T_B`` (AB-join).
    left_profile, left_index
        Nearest neighbour that starts earlier (self-joins; inf/-1 for AB-joins).
    right_profile, right_index
        Nearest neighbour that starts later (self-joins; inf/-1 for AB-joins).
    m : int
    exclusion : int
        Half-width of the trivial-match zone used (self-joins).
    precision : str
    device : str
        Where it was computed ("cpu" or "cuda").
    normalize : bool
        Whether distances are z-normalised (else plain Euclidean, in the data's units).
    """

    profile: object
    index: object
    left_profile: object
    left_index: object
    right_profile: object
    right_index: object
    m: int
    exclusion: int
    precision: str
    device: str
    normalize: bool = True


# ---------------------------------------------------------------------------- validation
def _batch(T, name):
    """A float64 (n_contexts, n) array of T's array module, whether T was 1-D; ragged
    sequences are padded with NaN. Returns (values, was_1d, lengths).

    A Panel gives its values (2-D); a pandas DataFrame or Series and a path are refused
    with a TypeError, as by the detectors (:func:`tsanomaly.base.refuse_frame_or_path`)."""
    if isinstance(T, Panel):
        T = T.values
    refuse_frame_or_path(
        T, f"matrix_profile's {name}", "a NumPy/CuPy array of shape (n,) or (n_contexts, n), a sequence of "
        "1-D arrays, or a tsanomaly Panel"
    )
    if backend.is_device_array(T):
        xp = backend.array_module(T)
        if T.dtype.kind not in "biuf":
            raise ValueError(f"{name} must hold real numbers, got dtype {T.dtype}")
        values = T.astype(xp.float64, copy=False)
        ragged_lengths = None
    elif isinstance(T, (list, tuple)) and len(T) and all(np.ndim(row) == 1 for row in T):
        rows = [_real_array(row, f"{name}[{c}]") for c, row in enumerate(T)]
        ragged_lengths = [len(row) for row in rows]  # kept so that errors can name the context
        values = np.full((len(rows), max(ragged_lengths)), np.nan)
        for c, row in enumerate(rows):
            values[c, : len(row)] = row
    else:
        values = _real_array(T, name)
        ragged_lengths = None
    if values.ndim not in (1, 2):
        raise ValueError(f"{name} must be 1-D (one series) or 2-D (contexts x times), got shape {values.shape}")
    was_1d = values.ndim == 1
    if was_1d:
        values = values[None, :]
    if values.shape[0] == 0:
        raise ValueError(f"{name} has no series (shape {values.shape})")
    return values, was_1d, ragged_lengths


def _real_array(x, name):
    try:
        arr = np.asarray(x)
    except Exception as exc:  # noqa: BLE001 - ragged nested lists and the like
        raise ValueError(f"{name} could not be read as an array: {exc}") from exc
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def _check_lengths(values, lengths, m, name):
    n = values.shape[1]
    if lengths is None:
        if n < m:
            where = "the series" if values.shape[0] == 1 else f"every context (from context 0 to {values.shape[0] - 1})"
            # m is at least 3 (_check_window): a series shorter than that has no window to offer
            fix = f"use m <= {n} or a longer series" if n >= 3 else "give a series of at least 3 points"
            raise ValueError(f"{name} has {n} points in {where}, fewer than the window m={m}: no window fits; {fix}")
        return
    for c, length in enumerate(lengths):
        if length < m:
            raise ValueError(
                f"context {c} of {name} ({name}[{c}]) has {length} points, fewer than the window m={m}; "
                "drop it or use a smaller m"
            )


def _check_window(m, name="m"):
    if not is_int(m):
        raise ValueError(f"{name} must be an integer window length, got {m!r}")
    if m < 3:
        # Two points z-normalise to (-1, 1) or (1, -1) whatever they are: no shape to compare.
        raise ValueError(f"{name} must be at least 3, got {m}")
    return int(m)


def _check_exclusion(exclusion, m):
    if exclusion is None:
        return math.ceil(m / 4)
    if not is_int(exclusion) or exclusion < 0:
        raise ValueError(f"exclusion must be None or an integer >= 0, got {exclusion!r}")
    return int(exclusion)


def _check_precision(precision):
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {_PRECISIONS}, got {precision!r}")
    return precision


def _kernel(device):
    if device == "cuda":
        from tsanomaly.kernels import mp_gpu

        return mp_gpu
    from tsanomaly.kernels import mp_cpu

    return mp_cpu


def _centre_and_scale(x):
    """Mean and population std of each row's finite values, shape (n_contexts,) each.

    The std is 1 where it is 0 or undefined (a constant row, or one without finite values),
    so that dividing by it is always safe.
    """
    xp = backend.array_module(x)
    finite = xp.isfinite(x)
    count = finite.sum(axis=1)
    safe = xp.maximum(count, 1)
    centre = xp.where(finite, x, 0.0).sum(axis=1) / safe
    spread = xp.sqrt(xp.where(finite, (x - centre[:, None]) ** 2, 0.0).sum(axis=1) / safe)
    return centre, xp.where(spread > 0, spread, 1.0)


def _level_removed(x):
    """Each row of ``x`` less the median of its finite values (rows without any unchanged).

    A shift leaves z-normalised distances as they are, but the kernels take window means and
    recurrence terms of the values as given, so a level far above the variation lost the
    variation to their rounding (1e6 plus noise of 1e-6: profiles 1e-3 off brute force, and
    detector scores 1e-3 apart after an update or a gap, as the rounding moved with the stretch
    scored; 0.9 apart where the noise lay in the level's last bits). Near the level the
    subtraction is exact. The median, unlike a mean, does not depend on the order of a sum: a
    row padded with NaN, or scaled by a power of two, is shifted alike, so results stay bit for
    bit. It costs about 0.08 s per 20,000 contexts x 360 points on the CPU, a fifth of scoring
    one new point; a cheaper shift (the first value, the minimum) would lie far from the level
    where a spike or an outage comes first.
    """
    xp = backend.array_module(x)
    level = nanmedian(xp.where(xp.isfinite(x), x, xp.nan), axis=1)
    return x - xp.nan_to_num(level, nan=0.0)[:, None]


def _power_of_two_scaled(x):
    """Each row of ``x`` divided by the power of two at or above its largest finite ``|value|``
    (rows without a non-zero finite value unchanged), a contiguous array of ``x``'s module.

    Exact (no rounding; NaN and inf stay as they are), and the kernels' arithmetic commutes with
    it, so z-normalised results are bit for bit those of ``x`` wherever ``x``'s window sums of
    squares and products neither overflow nor underflow -- which, on the scaled series, they
    then do not (at 1e20 or 1e-25 in single precision, 1e155 or 1e-160 in double, they did).
    """
    xp = backend.array_module(x)
    peak = xp.max(xp.where(xp.isfinite(x), xp.abs(x), 0.0), axis=1)
    _, exponent = xp.frexp(peak)  # peak = f * 2**exponent with f in [0.5, 1); exponent 0 for 0
    return xp.ascontiguousarray(xp.ldexp(x, -exponent[:, None]))


def _join(device, a, b, m, exclusion, precision, col_start=0, max_lag=None, normalize=True, rows=True):
    """The device kernel's join (see :func:`tsanomaly.kernels.mp_cpu.join`), z-normalised or plain.

    z-normalised distances are computed on each series (of ``a``, and of ``b`` on its own)
    less its median (:func:`_level_removed`) and scaled by a power of two to at most 1 in
    absolute value (:func:`_power_of_two_scaled`): they do not change, the recurrence works
    on the data's variation rather than its level, and the window sums of squares cannot
    overflow or underflow.
    Plain distances (``normalize=False``) are computed on each context's series shifted
    by its mean and divided by its std (those of ``a`` and ``b`` together, so that both
    get the same map): a shift does not change a plain distance, and the recurrence's raw
    products then stay of the data's own size rather than of its level. They are scaled
    back, so they come out in the data's units. ``rows=False`` (self-joins): the row minima
    (right profile) come back as None, their distances not computed.
    """
    kernel = _kernel(device)
    if normalize:
        def prepared(v):
            return _power_of_two_scaled(_level_removed(v))

        return kernel.join(prepared(a), None if b is None else prepared(b), m, exclusion, precision, col_start,
                           max_lag, rows=rows)
    xp = backend.array_module(a)
    centre, spread = _centre_and_scale(a if b is None else xp.concatenate([a, b], axis=1))

    def standardised(v):
        return xp.ascontiguousarray((v - centre[:, None]) / spread[:, None])

    row_d, row_i, col_d, col_i = kernel.join(
        standardised(a), None if b is None else standardised(b), m, exclusion, precision, col_start, max_lag,
        normalize=False, rows=rows,
    )
    return (None if row_d is None else row_d * spread[:, None], row_i,
            None if col_d is None else col_d * spread[:, None], col_i)


# ---------------------------------------------------------------------------- public function
def _nearer_side(left_d, left_i, right_d, right_i):
    """The full profile from the left and right ones: (distance, index) of the nearer neighbour;
    ties go to the left neighbour, which has the smaller index."""
    xp = backend.array_module(left_d)
    use_left = left_d <= right_d
    return xp.where(use_left, left_d, right_d), xp.where(use_left, left_i, right_i)


def matrix_profile(T, m, T_B=None, exclusion=None, device="auto", precision="double", normalize=True) -> MatrixProfile:
    """Matrix profile of one series or of every series of a batch, in one call.

    Parameters
    ----------
    T : array_like, shape (n,) or (n_contexts, n), or a sequence of 1-D arrays
        The series (NumPy or CuPy). A 2-D array is a batch of contexts computed
        together (one GPU launch, not a loop); a sequence of 1-D arrays of
        different lengths is padded with NaN, and windows past a context's end
        get inf / -1. NaN and inf mark missing points. A Panel is read as its
        ``values``; a pandas DataFrame or Series is refused (TypeError), as it is
        by the detectors: build a Panel with ``Panel.from_frame``.
    m : int
        Window length in points, ``3 <= m <= n``.
    T_B : array_like or Panel, optional
        For an AB-join: each window of ``T`` is matched against the windows of
        ``T_B`` (context by context for a batch; a 1-D ``T_B`` serves every
        context). None (default) for a self-join of ``T``.
    exclusion : int, optional
        Self-joins skip pairs with ``|i - j| <= exclusion`` (trivial matches);
        default ``ceil(m / 4)``. Ignored by AB-joins, which compare every pair.
    device : {"auto", "cpu", "cuda"}, default "auto"
        See :func:`tsanomaly.backend.resolve_device`.
    precision : {"double", "single"}, default "double"
        ``"double"`` agrees with a brute-force float64 computation to about
        1e-10: neighbours are chosen on ``1 - rho`` kept to ``52 - log2(n_windows)``
        bits (the 64-bit key that holds value and index together), and the
        distance to the chosen one is recomputed from the windows themselves.
        ``"single"`` runs the recurrence in float32 (the mean-centred form stays
        accurate there; exact restarts every 2048 rows and after bursts bound the
        drift) and is accurate to ``|P_single**2 - P_double**2| <= 2 m * 1e-4``
        (:data:`SINGLE_PRECISION_RHO_BOUND`), so
        ``|P_single - P_double| <= min(sqrt(2 m 1e-4), 2 m 1e-4 / P)``; where two
        neighbours are that close, the indices may differ.
    normalize : bool, default True
        True: z-normalised distances (shape only). False: plain Euclidean distances
        ``||a - b||`` in the data's units (STUMPY's ``aamp``): a window of the usual shape
        but twice the usual amplitude, or at a new level, is then a discord too.
        Computed on each context's standardised series and scaled back. In
        ``"single"`` precision squared distances are accurate to ``2 m 1e-4`` times the
        context's variance (measured at n = 2**14, m = 24 and 100: at most 3.2e-5 of it
        on random walks at a level of 1e6 or a scale of 1e-6, white noise, Poisson
        counts, sparse or with bursts of 5,000, and walks with jumps of 1e4). The bound
        is relative to the whole series' variance: where level shifts dwarf the local
        variation (the walks with jumps), single precision blurs the local detail and
        most neighbours differ from double's; use ``"double"`` there.
        Double precision has the same limit further out: the recurrence's terms are
        the windows' squared norms about the context's mean, and a distance between two
        windows is their difference, so a level shift ``J`` over noise of standard
        deviation ``s`` costs the squared distances of the order of ``eps (J / s)**2``
        of their precision. The reported distance is accurate for the neighbour chosen (recomputed
        from the windows); the choice is what goes wrong. Measured (double, ``m = 8``,
        three series of 1,000 points of unit Gaussian noise with one jump half-way,
        against brute force): a jump of 1e6 leaves 0.3% of the windows with a
        neighbour that is not the nearest, at most 0.3% farther; 1e7, 28%, up to 1.8
        times farther; 1e8, 98%, up to 7.5 times. A constant level of any size is
        harmless (the centring removes it: a level of 1e8 gives results exact to
        rounding), a shift is not: no shift of the whole series centres both sides of
        it. Differencing the series first turns the shift into one large step (1e8:
        0.8% of neighbours not the nearest); z-normalised distances are not affected.

    Returns
    -------
    MatrixProfile
        ``profile``, ``index``, ``left_profile``, ``left_index``,
        ``right_profile``, ``right_index`` (see the class), NumPy unless ``T``
        was a CuPy array.

    Raises
    ------
    ValueError
        For a non-integer ``m`` or ``m < 3``; a series shorter than ``m`` (the
        message names the context); non-numeric input; mismatched batches; an
        unknown ``precision``.

    Notes
    -----
    Edge cases (same on CPU and GPU): windows with NaN/inf are never anyone's
    neighbour and get inf / -1; two constant windows are at distance 0, a
    constant and a non-constant one at ``sqrt(m)``; ties go to the smaller
    index up to rounding (among near-equal distances, CPU and GPU may choose
    different neighbours: see the module docstring). z-normalised results do not depend on the data's scale: each
    series is first divided by a power of two (exact), so values of 1e-160 or
    1e155 (1e-25 or 1e20 in single precision) neither underflow nor overflow
    the window sums. Cost: about ``n_windows**2 / 2`` window pairs per context for a
    self-join.

    References
    ----------
    Yeh et al. 2016, "Matrix Profile I: All Pairs Similarity Joins for Time Series", ICDM.
    Zhu et al. 2016, "Matrix Profile II: Exploiting a Novel Algorithm and GPUs to Break the
    One Hundred Million Barrier for Time Series Motifs and Joins", ICDM.
    Zimmerman et al. 2019, "Matrix Profile XIV: Scaling Time Series Motif Discovery with GPUs
    to Break a Quintillion Pairwise Comparisons a Day and Beyond", SoCC.

    Examples
    --------
    >>> import numpy as np
    >>> from tsanomaly.detectors.matrix_profile import matrix_profile
    >>> x = np.sin(np.arange(500) * 2 * np.pi / 24)
    >>> x[300:312] += 1.0                         # a burst with a new shape
    >>> mp = matrix_profile(x, m=24, device="cpu")
    >>> 280 <= int(np.argmax(mp.profile)) <= 312
    True
    """
    m = _check_window(m)
    precision = _check_precision(precision)
    check_flag(normalize, "normalize")
    normalize = bool(normalize)
    values, was_1d, lengths = _batch(T, "T")
    on_device_input = backend.is_device_array(values)
    exclusion = _check_exclusion(exclusion, m)
    _check_lengths(values, lengths, m, "T")
    values_b = None
    if T_B is not None:
        values_b, b_was_1d, lengths_b = _batch(T_B, "T_B")
        _check_lengths(values_b, lengths_b, m, "T_B")
        if b_was_1d and not was_1d:
            # One 1-D series serves every context of a batch, a batch of one included;
            # the result keeps T's shape (was_1d comes from T alone).
            xp_b = backend.array_module(values_b)
            values_b = xp_b.ascontiguousarray(xp_b.broadcast_to(values_b, (values.shape[0], values_b.shape[1])))
        elif values_b.shape[0] != values.shape[0] or b_was_1d != was_1d:
            # Shapes as the caller passed them, not the (1, n) that _batch makes of a 1-D series.
            shape_b = values_b.shape[1:] if b_was_1d else values_b.shape
            shape_a = values.shape[1:] if was_1d else values.shape
            raise ValueError(
                f"T_B must have one series per context of T ({values.shape[0]}), or be one 1-D series "
                f"for all of them; got shape {tuple(shape_b)} for T of shape {tuple(shape_a)}"
            )
    if max(values.shape[1], 0 if values_b is None else values_b.shape[1]) >= 2**31:
        raise ValueError("series longer than 2**31 - 1 points are not supported")
    resolved = backend.resolve_device(device)
    a = backend.to_device(values, resolved)
    b = None if values_b is None else backend.to_device(values_b, resolved)
    row_d, row_i, col_d, col_i = _join(resolved, a, b, m, exclusion, precision, normalize=normalize)
    xp = backend.array_module(row_d)
    if b is None:
        right_d, right_i, left_d, left_i = row_d, row_i, col_d, col_i
        profile, index = _nearer_side(left_d, left_i, right_d, right_i)
    else:
        profile, index = row_d, row_i
        left_d = right_d = xp.full(profile.shape, xp.inf)
        left_i = right_i = xp.full(profile.shape, -1, dtype=xp.int64)

    def out(arr):  # results follow the input: CuPy in, CuPy out; otherwise NumPy
        arr = arr[0] if was_1d else arr
        return backend.to_device(arr, "cuda") if on_device_input else backend.to_numpy(arr)

    return MatrixProfile(
        profile=out(profile), index=out(index), left_profile=out(left_d), left_index=out(left_i),
        right_profile=out(right_d), right_index=out(right_i), m=m, exclusion=exclusion,
        precision=precision, device=resolved, normalize=normalize,
    )


def left_profile(x, m, exclusion, precision, device, col_start=0, max_lag=None, normalize=True):
    """Left matrix profile of a batch (no validation: for detectors that checked their input).

    Parameters
    ----------
    x : array, shape (n_contexts, n), on ``device``
    col_start : int
        Only windows ``j >= col_start`` are computed (earlier ones get inf / -1).
    max_lag : int, optional
        Neighbours start at most ``max_lag`` points before the window.

    Returns
    -------
    dist, index : arrays, shape (n_contexts, n - m + 1), on ``device``
    """
    # rows=False: the right profile's distances, which this discards, are not computed
    _, _, dist, index = _join(device, x, None, m, exclusion, precision, col_start, max_lag, normalize, rows=False)
    return dist, index


# ---------------------------------------------------------------------------- detector
#: Where :class:`MatrixProfileDetector` seeks a window's neighbour: earlier windows, or all.
NEIGHBOURS = ("past", "all")


class MatrixProfileDetector(BaseDetector):
    """Anomaly score = distance of the latest window to its nearest neighbour in the past.

    Each point ``t`` is scored by the window of ``window`` points ending at ``t``:
    its z-normalised Euclidean distance to the most similar earlier window that
    starts at most ``history`` points before it (the left matrix profile), divided
    by ``sqrt(2 * window)`` so that contexts of any size and windows of any length
    share one scale (0 = a shape seen before; 1 = uncorrelated with everything in
    the past; at most sqrt(2)). Higher = more anomalous. Scoring is causal by
    default: it uses the history kept from :meth:`fit` and the earlier points of the
    new data (``neighbours="all"`` also looks at the later points of the batch).

    Parameters
    ----------
    window : int, default 24
        Window length in points (24: one day of hourly counts), at least 3.
    history : int, default 672
        Look-back in points (672: four weeks of hourly data). A window's
        neighbours start at most ``history`` points earlier; the fitted state keeps
        the last ``history + window - 1 + smoothing - 1`` points of each context,
        nothing more.
    min_history : int, optional
        Points of past (since the context's first observation) a window needs
        before it is scored; earlier windows score NaN. With only a few windows to
        compare with, almost every shape looks new (a daily cycle shifted by a few
        hours is anti-correlated with itself), and such scores would also inflate
        the calibrated threshold. Default ``max(history // 4, exclusion + 1)``:
        one week with the default four-week history.
    exclusion : int, optional
        Neighbours closer than ``exclusion + 1`` points are trivial matches and
        skipped; default ``ceil(window / 4)``.
    precision : {"double", "single"}, default "double"
        See :func:`matrix_profile` (single: float32, bound ``2 window 1e-4`` on
        squared distances, i.e. ``1e-4`` on the correlation).
    neighbours : {"past", "all"}, default "past"
        Where a window's nearest neighbour is sought. ``"past"``: earlier windows only
        (the left matrix profile), so a score never changes once computed -- for
        streaming and for alerts raised as data arrive. ``"all"``: earlier and later
        windows within ``history`` points, of the kept history and of the whole batch
        being scored (the full matrix profile) -- for offline batch scoring (a T+1 job
        scoring yesterday, a search for the one anomaly in a recording), where a shape
        seen for the first time in the batch but repeated later in it is not a
        discord. With ``"all"`` a point's score depends on the rest of its batch.
    difference : bool, default False
        Compare windows of the first difference (the step from each point to the next)
        instead of the values: the profile then sees a change of slope or a one-point
        spike inside an otherwise familiar shape, which z-normalising a window of smooth
        values can hide. A window ending at ``t`` then spans the ``window + 1`` values
        from ``t - window`` to ``t``.
    normalize : bool, default True
        True: z-normalised distances, which compare shapes only. False: plain Euclidean
        distances (see :func:`matrix_profile`), which also see a familiar shape at an
        unfamiliar amplitude or level (a daily cycle twice as high, a plateau). The
        score is then divided by ``sqrt(2 * window)`` and by the context's robust
        standard deviation in the fitted data (``1.4826 MAD``, floored for sparse counts:
        :func:`tsanomaly.scaling.robust_center_scale`, and at half a count for a context
        of counts, :data:`tsanomaly.scaling.COUNT_SCALE_FLOOR`; of the first difference with
        ``difference=True``; for a context first seen when scoring, or without any
        observation in the fitted data, of its own scored data, and for one with fewer
        observed values than a window in the fitted data, of those kept and the scored
        data), so it stays
        comparable across contexts and a burst in the history shrinks later scores
        far less than with the standard deviation: about 1 between two unrelated
        windows of Gaussian data. Where a level shift is 1e7 or more times the local
        noise, the neighbours chosen lose their accuracy, in double precision too (see
        :func:`matrix_profile`'s ``normalize``); ``difference=True`` avoids that.
    smoothing : int, default 1
        Score each point by the mean distance of the last ``smoothing`` windows (an
        anomaly raises every window that overlaps it; a window unusual only by its
        alignment stands alone).
    threshold, contamination, per_context, device
        See :class:`tsanomaly.base.BaseDetector`.

    Notes
    -----
    A window with a missing point has no distance and scores NaN, and so does a
    missing point, as with every detector (with ``smoothing > 1`` an observed point's
    score is the mean over those of its last ``smoothing`` windows that have no
    missing point, NaN if none), as do points with no complete window or less than
    ``min_history`` points of past (so a context seen for the first time is scored
    from its ``min_history + window``-th point on: a cold start). A constant window (all counts equal,
    e.g. zeros at night) scores 0 against an earlier constant window and
    ``1/sqrt(2)`` against non-constant ones only. Alerts carry
    ``neighbour_start`` / ``neighbour_time``: start and end of the nearest window (an
    earlier one unless ``neighbours="all"``) to the alerted one (the score's own
    timestamps are window ends); with ``difference=True`` the window's ``window + 1``
    values, from the one its first step starts at.

    References
    ----------
    Yeh et al. 2016 (Matrix Profile I), Zhu et al. 2016 (Matrix Profile II),
    Zimmerman et al. 2019 (Matrix Profile XIV); see :func:`matrix_profile`.

    Examples
    --------
    >>> from tsanomaly import Panel
    >>> from tsanomaly.detectors.matrix_profile import MatrixProfileDetector
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.poisson(50 * (1 + np.sin(np.arange(24 * 21) * 2 * np.pi / 24)), size=(3, 24 * 21)).astype(float)
    >>> det = MatrixProfileDetector(window=24, device="cpu").fit(x[:, : 24 * 14])
    >>> det.score(x[:, 24 * 14 :]).shape
    (3, 168)
    """

    explanation_columns = ("neighbour_start", "neighbour_time")
    explanation_types = {"neighbour_start": "timestamp", "neighbour_time": "timestamp"}

    def __init__(
        self,
        window=24,
        history=672,
        min_history=None,
        exclusion=None,
        precision="double",
        neighbours="past",
        difference=False,
        normalize=True,
        smoothing=1,
        threshold="quantile",
        contamination=0.001,
        per_context=False,
        device="auto",
    ):
        self.window = window
        self.history = history
        self.min_history = min_history
        self.exclusion = exclusion
        self.precision = precision
        self.neighbours = neighbours
        self.difference = difference
        self.normalize = normalize
        self.smoothing = smoothing
        self.threshold = threshold
        self.contamination = contamination
        self.per_context = per_context
        self.device = device

    # -------------------------------------------------------------- parameters
    def _validate(self):
        m = _check_window(self.window, "window")
        if not is_int(self.history) or self.history < m:
            raise ValueError(f"history must be an integer >= window ({m}), got {self.history!r}")
        _check_precision(self.precision)
        if self.neighbours not in NEIGHBOURS:
            raise ValueError(f"neighbours must be one of {NEIGHBOURS}, got {self.neighbours!r}")
        check_flag(self.difference, "difference")
        check_flag(self.normalize, "normalize")
        if not is_int(self.smoothing) or self.smoothing < 1:
            raise ValueError(f"smoothing must be an integer >= 1, got {self.smoothing!r}")
        exclusion = _check_exclusion(self.exclusion, m)
        if self.min_history is not None and (
            not is_int(self.min_history)
            or not 0 <= self.min_history <= self.history
        ):
            raise ValueError(f"min_history must be None or an integer in [0, history], got {self.min_history!r}")
        return m, exclusion

    def _min_history(self):
        m, exclusion = self._validate()
        if self.min_history is None:
            return max(int(self.history) // 4, exclusion + 1)
        return int(self.min_history)

    def min_fit_times(self) -> int | None:
        """Fewest time steps for a finite training score (see :meth:`BaseDetector.min_fit_times`):
        the first scored window starts ``min_history`` points after the first observation and
        needs a neighbour more than ``exclusion`` points away (so it starts at least
        ``exclusion + 1`` points in, ``exclusion + 2`` with ``difference``, whose first window
        holds the undefined first difference). None when ``exclusion >= history``: no window
        then has a neighbour within reach."""
        m, exclusion = self._validate()
        if exclusion >= int(self.history):
            return None
        return max(self._min_history(), exclusion + 1 + int(bool(self.difference))) + m

    def kept_width(self) -> int:
        """The kept history's full width (see :meth:`BaseDetector.kept_width`): :meth:`_keep`."""
        return self._keep()

    def _keep(self):
        # The last window's look-back, plus the smoothing-1 windows before it that its score averages,
        # plus, for first differences, the value before the oldest: the kept history's first
        # difference is NaN (see _compared), which lost the neighbour window exactly `history`
        # points back and made the first score after a fit differ from the same data in one batch.
        return int(self.history) + int(self.window) - 1 + int(self.smoothing) - 1 + int(bool(self.difference))

    def _compared(self, x):
        """The series whose windows are compared: x, or its first difference (same length, so
        window positions and scores stay aligned with the values)."""
        if not self.difference:
            return x
        xp = backend.array_module(x)
        return xp.concatenate([xp.full((x.shape[0], 1), xp.nan), xp.diff(x, axis=1)], axis=1)

    def _unit(self, values, compared=None):
        """Robust spread of each context's compared series (NumPy, shape (n_contexts,)): the unit of
        plain-distance scores. ``compared``: ``self._compared(values)`` when the caller has it."""
        x = self._compared(values) if compared is None else compared
        xp = backend.array_module(x)
        unit = robust_center_scale(xp.where(xp.isfinite(x), x, xp.nan))[1]
        # Counts: at least half a count (see tsanomaly.scaling.COUNT_SCALE_FLOOR), so that a sparse
        # context's single events do not set the one global threshold (0.31 -> 6.45 beside four).
        return backend.to_numpy(xp.where(count_rows(values), xp.maximum(unit, COUNT_SCALE_FLOOR), unit))

    def _profile(self, x, col_start, scale=None):
        """Profile (distance, index) of every window of x from col_start on, on self.device_:
        the left profile, or with ``neighbours="all"`` the nearer of the left and right ones.
        Plain distances (``normalize=False``) are divided by ``scale`` (n_contexts,)."""
        m, exclusion = self._validate()
        x = self._compared(x)
        normalize = bool(self.normalize)
        if self.neighbours == "past":
            dist, index = left_profile(x, m, exclusion, self.precision, self.device_, col_start, int(self.history),
                                       normalize)
        else:
            # Both sides need every diagonal of the band, so the join covers all columns
            # (col_start only limits the left profile's columns).
            right_d, right_i, left_d, left_i = _join(self.device_, x, None, m, exclusion, self.precision, 0,
                                                     int(self.history), normalize)
            dist, index = _nearer_side(left_d, left_i, right_d, right_i)
        if not normalize and scale is not None:
            dist = dist / backend.array_module(dist).asarray(scale)[:, None]
        return dist, index

    def _scores_from(self, dist, first_window, n_out, data_start):
        """Scores of the n_out windows from first_window on (window ends = scored times).

        ``data_start`` (n_contexts,): position of each context's first observation;
        windows starting less than ``min_history`` points after it score NaN. With
        ``smoothing > 1`` the ``smoothing - 1`` windows before first_window enter the
        first scores' averages (``dist`` must hold them where they exist).
        """
        xp = backend.array_module(dist)
        m, lag = int(self.window), int(self.smoothing) - 1
        first = first_window - lag
        n_all = n_out + lag
        scores = xp.full((dist.shape[0], n_all), xp.nan)
        lo = max(0, -first)  # times whose window would start before the series: NaN
        if lo < n_all:
            d = dist[:, first + lo : first + n_all]
            scores[:, lo : lo + d.shape[1]] = xp.where(xp.isfinite(d), d / math.sqrt(2.0 * m), xp.nan)
        window_start = first + xp.arange(n_all)
        young = window_start[None, :] < xp.asarray(data_start)[:, None] + self._min_history()
        scores = xp.where(young, xp.nan, scores)
        if lag == 0:
            return scores
        return _trailing_nanmean(scores, lag + 1)[:, lag:]

    def _blocked_scores(self, x, col_start, first_window, n_out, data_start, scale):
        """:meth:`_scores_from` the profile of ``x`` (n_contexts, n) from ``col_start`` on, computed
        for blocks of contexts on the CPU (:func:`backend.context_blocks`; contexts are independent,
        so the scores are those of the whole panel at once, with a fraction of its working memory)
        and for the whole panel on the GPU. ``data_start`` (n_contexts,) and ``scale``
        (n_contexts,) or None are per context, as in those methods. A scored time whose own
        point is missing scores NaN, as with every detector: with ``smoothing > 1`` the windows
        ending before it would otherwise give it their mean."""
        xp = backend.array_module(x)
        scores = xp.empty((x.shape[0], n_out))
        for rows in backend.context_blocks(x.shape[0], x.shape[1], xp):
            dist, _ = self._profile(x[rows], col_start, None if scale is None else scale[rows])
            scores[rows] = self._scores_from(dist, first_window, n_out, data_start[rows])
        end = first_window + int(self.window) - 1  # the scored times: the windows' last points
        return xp.where(xp.isfinite(x[:, end : end + n_out]), scores, xp.nan)

    def _fitted_state_kinds(self) -> dict:
        """Checked at load (see BaseDetector._fitted_state_kinds); ``scale_`` is None when z-normalised."""
        kinds = {"history_": "matrix", "past_points_": "vector"}
        if not self.normalize:
            kinds["scale_"] = "vector"
        return kinds

    # -------------------------------------------------------------- fit / score
    def _fit(self, values, panel: Panel):
        m, _ = self._validate()
        xp = backend.array_module(values)
        self.history_ = values[:, -self._keep():].copy()
        start = _first_observation(values)
        # Points of past each context has at the end of the fit (per-context state).
        self.past_points_ = backend.to_numpy(values.shape[1] - start).astype(np.int64)
        # Unit of plain distances per context (see the class docstring); None when z-normalised.
        # NaN for a context with fewer compared values than a window: it has no unit of its own
        # (see _score). One or two points gave a unit of 1e-3 x their level, or the placeholder
        # 1 with first differences: counts of 300 then alerted 116 hours of 168.
        self.scale_ = None
        if not self.normalize:
            compared = self._compared(values)
            observed = backend.to_numpy(xp.isfinite(compared).sum(axis=1))
            self.scale_ = np.where(observed >= m, self._unit(values, compared), np.nan)
        if values.shape[1] < m:
            return xp.full(values.shape, xp.nan)
        return self._blocked_scores(values, 0, -(m - 1), values.shape[1], start, self.scale_)

    def _score(self, values, panel: Panel, rows: np.ndarray):
        m, _ = self._validate()
        xp = backend.array_module(values)
        x = self.with_kept_history(values, panel, rows, self.history_)
        n_new = values.shape[1]
        offset = x.shape[1] - n_new  # position of the first new point
        first_window = offset - (m - 1)  # the window that ends on it
        # No new time step: nothing to score (and _first_observation has no column to look at).
        if n_new == 0 or x.shape[1] < m:
            return xp.full(values.shape, xp.nan)
        # First observation: before the kept history for fitted contexts, in the new data otherwise.
        kept = self.history_.shape[1]  # history_ is a CuPy array after a fit on the GPU: no np.asarray
        past_points = np.asarray(self.past_points_)[np.maximum(rows, 0)]
        # A fitted context without any observation at fit starts cold in the new data, as an unseen
        # one does: its past_points_ of 0 put its start at the fit's end (skipping min_history), and
        # its scale_ of 1 (robust_center_scale of an all-NaN row) read plain distances as units.
        cold = (rows < 0) | (past_points == 0)
        seen_start = kept - past_points
        new_start = offset + backend.to_numpy(_first_observation(values))
        data_start = xp.asarray(np.where(cold, new_start, seen_start))
        scale = None
        if not self.normalize:
            scale = np.asarray(self.scale_, dtype=np.float64)[np.maximum(rows, 0)]
            if cold.any():  # in units of their own scored data
                scale[cold] = self._unit(values[xp.asarray(np.flatnonzero(cold))])
            # Fitted with fewer compared values than a window (none, or a few) and observed since,
            # through update: in units of what the model holds of it now, its kept history and
            # the scored data. (The unit of 1 a row without data had at fit read plain distances
            # of counts in the hundreds as units: every hour alerted once it started reporting.)
            unfitted = ~cold & np.isnan(scale)
            if unfitted.any():
                scale[unfitted] = self._unit(x[xp.asarray(np.flatnonzero(unfitted))])
        col_start = max(0, first_window - (int(self.smoothing) - 1))
        return self._blocked_scores(x, col_start, first_window, n_new, data_start, scale)

    def _update(self, values, panel: Panel, rows: np.ndarray, steps: int) -> None:
        """Move ``history_`` and ``past_points_`` on over new data (see :meth:`BaseDetector.update`).

        Within rounding: after ``update(new)``, ``score(next)`` gives the scores of
        ``next``'s points in ``score(concat(new, next))`` from the same windows, but over
        another stretch of series (the kernels' exact power-of-two scaling and a plain
        distance's centring and scaling are taken over it), so they agree within the
        accuracy of ``precision="double"`` (about 1e-10; measured: z-normalised scores bit for
        bit, plain ones within 3e-15 relative; single precision: within its stated bound). A
        fitted context without any observation at fit starts counting its past at its first
        observation in the update; with ``normalize=False`` a context fitted with fewer compared
        values than a window has no fitted unit (NaN), and
        :meth:`score` measures it in units of its kept history and the scored data, a unit
        that grows with what updates bring (a unit fixed from the first update's values was,
        in an hour-by-hour loop, that of a single point: scores of 268 where one call gave
        0.6; the fitted placeholder of 1 read counts in the hundreds as units). The history
        kept grows to the full look-back over updates after a fit on fewer points.
        """
        self._validate()
        n_new = values.shape[1]
        past = np.asarray(self.past_points_, dtype=np.int64)
        first = backend.to_numpy(_first_observation(values)).astype(np.int64)
        cold = past == 0
        # Points since each context's first observation, at the end of the new data: the
        # skipped steps and the new ones; for a context without past, from its first new one.
        moved = np.where(cold, n_new - first, past + (steps - 1) + n_new)
        self.history_ = self.with_updated_history(values, panel, rows, self.history_)
        self.past_points_ = moved

    def _explain(self, panel, scores, ctx_rows, peak_pos):
        """Start and end time of each alert peak's nearest window (earlier unless ``neighbours="all"``):
        its first and last value (``window + 1`` values with ``difference``). With ``smoothing``,
        the neighbour of the latest window averaged into the peak's score that has one."""
        m = int(self.window)
        unique, inverse = np.unique(ctx_rows, return_inverse=True)
        sub = panel.take(unique)
        values = backend.to_device(sub.values, self.device_)
        x = self.with_kept_history(values, sub, self.context_rows(sub), self.history_)
        offset = x.shape[1] - sub.n_times
        averaged = int(self.smoothing)
        col_start = max(0, offset - (m - 1) - (averaged - 1))
        _, index = self._profile(x, col_start)
        index = backend.to_numpy(index)
        # The peak's own window first; a smoothed score is finite with any of its windows' distances,
        # and the window ending on a point just after a missing one has no neighbour (it was NaT).
        own = offset - (m - 1) + peak_pos
        neighbour = np.full(len(peak_pos), -1, dtype=np.int64)
        for back in range(averaged):
            pos = own - back
            todo = np.flatnonzero((neighbour < 0) & (pos >= col_start))
            neighbour[todo] = index[inverse[todo], pos[todo]]
        times = _times_before(panel.index, offset, self.freq_)
        valid = neighbour >= 0
        # A window of first differences starts one value earlier, at the value its first step
        # comes from (its first step is never the undefined one: that window is nobody's neighbour).
        start_pos = np.where(valid, neighbour - int(bool(self.difference)), 0)
        end_pos = np.where(valid, neighbour + m - 1, 0)
        start = np.asarray(times)[start_pos]
        end = np.asarray(times)[end_pos]
        if not valid.all():  # cannot happen for a finite peak score (one of its windows has a neighbour)
            missing = np.array(pd.NaT if isinstance(panel.index, pd.DatetimeIndex) else -1)
            start = np.where(valid, start, missing)
            end = np.where(valid, end, missing)
        return {"neighbour_start": start, "neighbour_time": end}


def _trailing_nanmean(x, width):
    """Mean of the finite values among each row's last ``width`` entries (NaN where none).

    ``x`` : array (NumPy or CuPy), shape (n_contexts, n); returns the same shape.
    """
    xp = backend.array_module(x)
    finite = xp.isfinite(x)
    zero = xp.zeros((x.shape[0], 1))
    total = xp.concatenate([zero, xp.cumsum(xp.where(finite, x, 0.0), axis=1)], axis=1)
    count = xp.concatenate([zero, xp.cumsum(finite, axis=1, dtype=xp.float64)], axis=1)
    start = xp.maximum(xp.arange(1, x.shape[1] + 1) - width, 0)
    window_total = total[:, 1:] - total[:, start]
    window_count = count[:, 1:] - count[:, start]
    # Dividing by at least 1 keeps empty windows free of 0/0; they are NaN anyway.
    return xp.where(window_count > 0, window_total / xp.maximum(window_count, 1.0), xp.nan)


def _first_observation(values):
    """Position of each row's first finite value (the row length when there is none)."""
    xp = backend.array_module(values)
    finite = xp.isfinite(values)
    return xp.where(finite.any(axis=1), xp.argmax(finite, axis=1), values.shape[1])


def _times_before(index, n_before, freq):
    """``index`` preceded by ``n_before`` earlier points of the same grid."""
    if not isinstance(index, pd.DatetimeIndex):
        first = int(index[0])
        return pd.RangeIndex(first - n_before, first + len(index))
    before = pd.date_range(end=index[0], periods=n_before + 1, freq=freq or index.freq)[:-1]
    return before.append(index)
