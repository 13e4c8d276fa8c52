"""Peaks-over-threshold (POT) calibration of anomaly scores.

Siffer, Fouque, Termier, Largouet, "Anomaly Detection in Streams with Extreme Value Theory",
KDD 2017. By the Pickands-Balkema-de Haan theorem, the excesses of a score over a high
threshold ``t`` follow approximately a generalised Pareto distribution (GPD)

    P(X - t > y | X > t) = (1 + gamma * y / sigma) ** (-1 / gamma)     (exp(-y / sigma) if gamma = 0)

so the score exceeded with probability ``q`` (the *risk*) is

    z_q = t + sigma / gamma * ((q * n / N_t) ** (-gamma) - 1)            (t - sigma * log(q n / N_t))

with ``n`` observations of which ``N_t`` exceed ``t``. ``t`` is a high empirical quantile of the
training scores (``initial_quantile``, 0.98 as in the paper), taken as an order statistic (NumPy's
``method="lower"``) as in the extreme-value literature, and ``(gamma, sigma)`` are the
maximum-likelihood estimates on the excesses, in increasing order (so the fit does not depend
on the order of the scores).

Two guards for scores that are not continuous, such as a detector's scores of sparse counts,
which repeat a few values (1, 2, 3 events) many times:

- ``t`` is a score, so ties with it are no excesses. An interpolated ``t`` just below a repeated
  value made excesses of almost 0 beside whole steps of the lattice; the GPD read them as a
  heavy tail (``gamma`` 2.3) and put the threshold at 9x the largest training score, where the
  context could never alert (7 of 300 contexts of ``make_security_panel``'s failed logins).
- A fit whose threshold is exceeded by more training scores than ``risk`` allows (a
  Binomial(n, risk) count reaches as many with probability below ``_CONTRADICTED``) is
  contradicted by its own data and replaced by the empirical quantile. Ten tied excesses fit a
  uniform distribution whose quantile lies below the tied value itself, so every later score
  of that value alerted (2% of the training points, with ``risk=1e-3``).

Measured on ``make_security_panel(n_contexts=300, n_days=35, clean_days=28, seed=3)`` with the
baseline's per-context thresholds (``risk=1e-3``): contexts with more than 1% of their own
training scores above the threshold 7/6/0 -> 0/0/0 (registrations/failed logins/logins);
thresholds above 3x the training maximum 0/7/8 -> 0/0/0. On 1,000 continuous samples of 504
scores the median |log| error of the threshold against the true quantile moved from 0.131 to
0.125 (exponential), 0.089 to 0.087 (normal) and 0.319 to 0.299 (Pareto, shape 1/3).

The fit uses **Grimshaw's trick** (Grimshaw, "Computing maximum likelihood estimates for the
generalized Pareto distribution", Technometrics 1993), as Siffer et al. do: the two-parameter
likelihood equations reduce to one equation in ``x = gamma / sigma``,

    u(x) v(x) = 1,   u(x) = mean(1 / (1 + x Y)),   v(x) = 1 + mean(log(1 + x Y)),

whose roots lie in ``(-1 / max Y, 0)`` and ``(0, 2 (mean Y - min Y) / min Y**2)``; each root gives
``gamma = v(x) - 1``, ``sigma = gamma / x``, and the candidate with the largest likelihood wins,
the exponential (``gamma = 0``, ``sigma = mean Y``) and the uniform (``gamma = -1``,
``sigma = max Y``, the boundary of the region where the likelihood is bounded) included. We
find the roots by a sign scan on a fixed grid followed by Brent's method. This is chosen over ``scipy.stats.genpareto.fit``
because it is deterministic (no optimiser start point or tolerance to tune), it handles the
``gamma = 0`` boundary explicitly, and it is fast enough to run once per context on thousands
of contexts; the tests check that its likelihood is never below scipy's fit. Per context
(:func:`pot_thresholds`), every step -- the grid scans, Brent's refinements of the sign
changes, the candidates' likelihoods -- runs for all contexts with as many excesses in one
array operation: 100,000 contexts of 504 scores in 14 s on 2 cores, against 27 s with Brent's
method run context by context (052dc25), with the same thresholds bit for bit.

Score direction: higher = more anomalous. NaN scores are ignored; infinite scores are rejected.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.special

from tsanomaly.backend import to_numpy
from tsanomaly.scaling import nanquantile
from tsanomaly.validation import is_finite_real

__all__ = ["POTFit", "POTThresholds", "fit_gpd", "gpd_quantile", "pot_fit", "pot_threshold", "pot_thresholds"]

_X_MIN = 1e-4  # |x| below this (in units of 1 / mean excess) is indistinguishable from gamma = 0
# Scores within this share of the largest |score| above the initial threshold are ties with it,
# not excesses. Detectors' scores of sparse counts repeat one value up to its last bits; those
# "excesses" of 1e-16 made the GPD fit a mixture of a spike at 0 and the real tail (gamma 19,
# sigma 5e-16) and put the threshold at 1e8 to 1e23, where nothing could alert.
_TIE_TOLERANCE = 1e-9
# A fit is contradicted by its training scores when a Binomial(n, risk) count would reach the
# number of them above its threshold with a probability below this (see the module docstring).
_CONTRADICTED = 1e-3
# Fewest excesses for a GPD fit (two parameters from fewer than about ten points are noise).
DEFAULT_MIN_EXCESSES = 10
# Brent's relative tolerance on the roots of Grimshaw's equation (its absolute one: _bracket_xtol).
_RTOL = 1e-12
# Farthest end of the positive root interval that the scan takes (its bound is infinite for a tiny
# smallest excess).
_MAX_ROOT_END = 1e300
# Bound, in elements, of the (grid points x excesses) temporary of the root scan (16 MB).
_SCAN_ELEMENTS = 2_000_000


def _root_grids(ends: np.ndarray) -> np.ndarray:
    """Scan points between 0 and each of ``ends`` (n,), one row each (n, 300), by increasing |x|:
    geometric from ``_X_MIN`` (many decades when the interval is long) and dense near the end
    (where the likelihood equation changes fast). A row whose ``|end| <= _X_MIN`` is NaN: its
    interval holds no root distinguishable from ``gamma = 0``."""
    a = np.abs(ends)
    far = np.geomspace(_X_MIN, a * (1.0 - 1e-9), 240, axis=-1)
    near = a[:, None] * (1.0 - np.geomspace(0.5, 1e-9, 60))
    grids = np.sign(ends)[:, None] * np.sort(np.concatenate((far, near), axis=1), axis=1)
    grids[a <= _X_MIN] = np.nan
    return grids


def fit_gpd(excesses) -> tuple[float, float]:
    """Maximum-likelihood fit of a generalised Pareto distribution (location 0) to excesses.

    Grimshaw's reduction to a one-dimensional root search (see the module docstring).

    Parameters
    ----------
    excesses : array-like of float, shape (n_excesses,)
        Positive values ``X - t`` of the observations above the threshold ``t``.

    Returns
    -------
    (gamma, sigma) : tuple of float
        Shape (``gamma``; scipy's ``c``) and scale (``sigma > 0``). ``gamma = 0`` is the
        exponential distribution.

    Raises
    ------
    ValueError
        When there are fewer than 2 excesses, or any excess is not finite and positive.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> gamma, sigma = fit_gpd(rng.exponential(2.0, 5000))
    >>> abs(gamma) < 0.05 and abs(sigma - 2.0) < 0.15
    True
    """
    y = np.asarray(excesses, dtype=np.float64).ravel()
    if y.shape[0] < 2:
        raise ValueError(f"fit_gpd needs at least 2 excesses, got {y.shape[0]}")
    if not (np.isfinite(y).all() and (y > 0).all()):
        raise ValueError("excesses must be finite and > 0")
    gamma, sigma = _fit_gpd_rows(y[None, :])
    return float(gamma[0]), float(sigma[0])


def _root_interval_ends(y_min, y_max) -> list:
    """Far ends of the intervals holding the roots of Grimshaw's equation (near ends: 0), for
    excesses normalised to mean 1 with smallest ``y_min`` and largest ``y_max``."""
    ends = [-1.0 / y_max]
    with np.errstate(over="ignore", divide="ignore"):
        upper = 2.0 * (1.0 - y_min) / y_min**2
    # Infinite once y_min**2 underflows (an excess 1e-160 of the mean): the scan's grid then held
    # no finite point, the positive root was never found, and the exponential won (gamma 0 for 0.5).
    upper = min(upper, _MAX_ROOT_END)
    if upper > 0:
        ends.append(upper)
    return ends


def _scan(xs: np.ndarray, yn: np.ndarray) -> np.ndarray:
    """``u(x) v(x) - 1`` at each grid point ``xs`` (n_rows, n_grid) for the excesses ``yn``
    (n_rows, n_excesses) of the same row; NaN where ``xs`` is NaN. Computed in blocks of rows and
    grid points that bound the (grid x excesses) temporary at ``_SCAN_ELEMENTS``."""
    n_rows, n_grid = xs.shape
    n_excesses = yn.shape[1]
    cols = max(1, min(n_grid, _SCAN_ELEMENTS // n_excesses))
    rows = max(1, _SCAN_ELEMENTS // (cols * n_excesses))
    vals = np.empty(xs.shape)
    for i in range(0, n_rows, rows):
        for j in range(0, n_grid, cols):
            xy = 1.0 + xs[i : i + rows, j : j + cols, None] * yn[i : i + rows, None, :]
            vals[i : i + rows, j : j + cols] = np.mean(1.0 / xy, axis=2) * (1.0 + np.mean(np.log(xy), axis=2)) - 1.0
    return vals


def _grimshaw(x: np.ndarray, yn: np.ndarray) -> np.ndarray:
    """Grimshaw's ``u(x) v(x) - 1`` at one point ``x`` (k,) per row of excesses ``yn`` (k, n):
    np.mean's arithmetic (a pairwise sum per row, then / n) without its per-call overhead."""
    n = yn.shape[1]
    xy = 1.0 + x[:, None] * yn
    return np.add.reduce(1.0 / xy, axis=1) / n * (1.0 + np.add.reduce(np.log(xy), axis=1) / n) - 1.0


def _brent(f, lo: np.ndarray, hi: np.ndarray, xtol: np.ndarray, rtol: float, maxiter: int = 100) -> np.ndarray:
    """Roots of ``f`` in the brackets ``[lo, hi]`` (k,), all refined together by Brent's method.

    The steps are those of ``scipy.optimize.brentq`` (Brent 1973, in C. Harris's formulation:
    inverse quadratic extrapolation or secant interpolation while they shrink the bracket fast
    enough, bisection otherwise; converged when half the bracket is below
    ``(xtol + rtol * |x|) / 2``), written on arrays so that the brackets of every context move
    at once; tests/test_pot.py checks the roots against brentq's bit for bit.

    Parameters
    ----------
    f : callable
        ``f(x, active)``: the function at ``x`` (a,) for the brackets ``active`` (a,) int.
    lo, hi : numpy.ndarray, shape (k,)
        Bracket ends; ``f`` must not have the same sign at both.
    xtol : numpy.ndarray, shape (k,)
        Absolute tolerance of each bracket.
    rtol : float
        Relative tolerance.
    maxiter : int
        Iterations before a bracket counts as not converged (RuntimeError).
    """
    k = lo.shape[0]
    ids = np.arange(k)
    roots = np.full(k, np.nan)
    xpre, xcur = lo.astype(np.float64), hi.astype(np.float64)
    fpre, fcur = f(xpre, ids), f(xcur, ids)
    if (fpre * fcur > 0).any():
        raise ValueError("f(lo) and f(hi) must have different signs")
    # an end where f is exactly 0 is the root (the lower end first)
    at_end = (fpre == 0) | (fcur == 0)
    roots[at_end] = np.where(fpre[at_end] == 0, xpre[at_end], xcur[at_end])
    keep = ~at_end
    ids, xpre, xcur, fpre, fcur, xtol = ids[keep], xpre[keep], xcur[keep], fpre[keep], fcur[keep], xtol[keep]
    xblk, fblk = np.zeros(ids.shape[0]), np.zeros(ids.shape[0])
    spre, scur = np.zeros(ids.shape[0]), np.zeros(ids.shape[0])
    for _ in range(maxiter):
        if not ids.shape[0]:
            return roots
        # the root lies between xcur and xblk; when f changed sign, xpre becomes the far end
        changed = fpre * fcur < 0
        xblk, fblk = np.where(changed, xpre, xblk), np.where(changed, fpre, fblk)
        spre = np.where(changed, xcur - xpre, spre)
        scur = np.where(changed, xcur - xpre, scur)
        # keep the end with the smaller |f| as the current estimate
        swap = np.abs(fblk) < np.abs(fcur)
        xpre, xcur, xblk = np.where(swap, xcur, xpre), np.where(swap, xblk, xcur), np.where(swap, xcur, xblk)
        fpre, fcur, fblk = np.where(swap, fcur, fpre), np.where(swap, fblk, fcur), np.where(swap, fcur, fblk)
        delta = (xtol + rtol * np.abs(xcur)) / 2
        sbis = (xblk - xcur) / 2
        done = (fcur == 0) | (np.abs(sbis) < delta)
        roots[ids[done]] = xcur[done]
        go = ~done
        ids, xpre, xcur, xblk, fpre, fcur, fblk, spre, scur, delta, sbis, xtol = (
            v[go] for v in (ids, xpre, xcur, xblk, fpre, fcur, fblk, spre, scur, delta, sbis, xtol))
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # the branch not taken
            interpolated = -fcur * (xcur - xpre) / (fcur - fpre)
            dpre = (fpre - fcur) / (xpre - xcur)
            dblk = (fblk - fcur) / (xblk - xcur)
            extrapolated = -fcur * (fblk * dblk - fpre * dpre) / (dblk * dpre * (fblk - fpre))
            stry = np.where(xpre == xblk, interpolated, extrapolated)
            bound = np.where(np.abs(spre) < 3 * np.abs(sbis) - delta, np.abs(spre), 3 * np.abs(sbis) - delta)
            short = (np.abs(spre) > delta) & (np.abs(fcur) < np.abs(fpre)) & (2 * np.abs(stry) < bound)
        # a short interpolated step where it is fast enough, bisection otherwise
        spre, scur = np.where(short, scur, sbis), np.where(short, stry, sbis)
        xpre, fpre = xcur, fcur
        xcur = xcur + np.where(np.abs(scur) > delta, scur, np.where(sbis > 0, delta, -delta))
        fcur = f(xcur, ids)
    if ids.shape[0]:
        raise RuntimeError(f"Brent's method did not converge in {maxiter} iterations on {ids.shape[0]} brackets")
    return roots


def _log_likelihoods(yn: np.ndarray, gamma: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """GPD log-likelihood (c,) of candidate ``(gamma, sigma)`` (c,) on the excesses ``yn`` (c, n)
    of its row (all > 0); -inf where the candidate is not admissible, and for NaN."""
    n = yn.shape[1]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        z = 1.0 + gamma[:, None] * yn / sigma[:, None]
        general = -n * np.log(sigma) - (1.0 + 1.0 / gamma) * np.add.reduce(np.log(z), axis=1)
        general = np.where((z <= 0).any(axis=1), -np.inf, general)
        exponential = -n * np.log(sigma) - np.add.reduce(yn, axis=1) / sigma
        uniform = np.where(yn.max(axis=1) <= sigma, -n * np.log(sigma), -np.inf)
    ll = np.where(gamma == 0.0, exponential, np.where(gamma == -1.0, uniform, general))
    ll = np.where(sigma <= 0, -np.inf, ll)
    return np.where(np.isnan(ll), -np.inf, ll)


def _bracket_xtol(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Brent's absolute tolerance for the roots bracketed by grid points ``[lo, hi]`` (k,): a
    sliver of the bracket's end nearer 0, which the root exceeds in size, so that the root is
    found to ``_RTOL`` of itself whatever the length of its interval. (A share of the interval's
    far end instead, 2 (1 - y_min) / y_min**2, was 2e8 when one normalised excess was 1e-11:
    Brent stopped at its first step, gamma 0.266 for the likelihood's 0.298.)"""
    return 1e-14 * np.minimum(np.abs(lo), np.abs(hi))


def _fit_gpd_rows(excesses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`fit_gpd` of each row of ``excesses`` (n_rows, n_excesses), all positive.

    The root grids, their scans, Brent's refinements of every sign change and the likelihoods
    of the candidates are computed for all rows at once (in blocks that bound the temporaries);
    each row's result is what the row gives alone.
    """
    scale = excesses.mean(axis=1)
    yn = excesses / scale[:, None]
    n_rows, n = yn.shape
    y_min, y_max = yn.min(axis=1), yn.max(axis=1)
    # Per row, on NumPy scalars: there ``y_min**2`` is C's pow, which rounds differently from the
    # array square for about 1 value in 1,000 (3 of 100,000 thresholds then moved in their last bits).
    ends = [_root_interval_ends(y_min[i], y_max[i]) for i in range(n_rows)]
    block = max(1, _SCAN_ELEMENTS // n)  # rows per block of the (rows x excesses) temporaries below
    # candidates (row, gamma, sigma) in normalised units: the exponential, and the uniform on
    # [0, max Y] -- the boundary gamma = -1 beyond which the likelihood is unbounded
    rows = [np.arange(n_rows), np.arange(n_rows)]
    gammas, sigmas = [np.zeros(n_rows), np.full(n_rows, -1.0)], [np.ones(n_rows), y_max]
    for side in (0, 1):
        side_rows = np.array([i for i in range(n_rows) if len(ends[i]) > side], dtype=np.int64)
        side_ends = np.array([ends[i][side] for i in side_rows])
        grids = _root_grids(side_ends)
        scans = _scan(grids, yn[side_rows])
        # a sign change brackets a root (a NaN grid, for an interval too short, has none)
        with np.errstate(invalid="ignore"):
            bracket_row, k = np.nonzero(np.sign(scans[:, :-1]) * np.sign(scans[:, 1:]) < 0)
        row = side_rows[bracket_row]
        root = np.empty(row.shape[0])
        # Brent's method on blocks of brackets whose excesses fill at most _SCAN_ELEMENTS
        for b in range(0, row.shape[0], block):
            part = slice(b, b + block)
            part_yn = yn[row[part]]
            lo, hi = grids[bracket_row[part], k[part]], grids[bracket_row[part], k[part] + 1]
            root[part] = _brent(lambda x, active: _grimshaw(x, part_yn[active]), lo, hi,
                                _bracket_xtol(lo, hi), _RTOL)
        gamma = np.add.reduce(np.log1p(root[:, None] * yn[row]), axis=1) / n
        real = gamma != 0.0
        rows.append(row[real])
        gammas.append(gamma[real])
        sigmas.append(gamma[real] / root[real])
    row, gamma, sigma = np.concatenate(rows), np.concatenate(gammas), np.concatenate(sigmas)
    ll = np.empty(row.shape[0])
    for b in range(0, row.shape[0], block):
        part = slice(b, b + block)
        ll[part] = _log_likelihoods(yn[row[part]], gamma[part], sigma[part])
    # the candidate of largest likelihood in each row, the first listed on ties: candidates are
    # listed exponential, uniform, then the roots by interval and position
    order = np.lexsort((np.arange(row.shape[0]), -ll, row))
    first = order[np.r_[0, np.flatnonzero(np.diff(row[order])) + 1]]
    return gamma[first], sigma[first] * scale


@dataclass(frozen=True)
class POTFit:
    """Result of :func:`pot_fit`.

    Attributes
    ----------
    threshold : float
        Score exceeded with probability ``risk`` (NaN when there was no finite score).
    initial_threshold : float
        The ``initial_quantile`` of the scores (``t``).
    gamma, sigma : float
        Fitted GPD shape and scale (NaN when the fit fell back).
    n_obs : int
        Finite scores used.
    n_excesses : int
        Scores strictly above ``initial_threshold``.
    fallback : bool
        True when ``threshold`` is the plain empirical quantile ``1 - risk`` instead of the
        GPD's: there were fewer than ``min_excesses`` excesses, or the GPD's threshold was
        exceeded by more training scores than ``risk`` allows (see the module docstring).
    """

    threshold: float
    initial_threshold: float
    gamma: float
    sigma: float
    n_obs: int
    n_excesses: int
    fallback: bool


def _check_params(risk, initial_quantile, min_excesses):
    """ValueError for parameters :func:`pot_fit` cannot use. Each is checked to be a finite number
    (tsanomaly.validation) before its range: ``None < 1`` is a TypeError, ``int(inf)`` an
    OverflowError, and every comparison with NaN is False. A 0-d array counts as its value."""
    risk, initial_quantile, min_excesses = (
        v.item() if isinstance(v, np.ndarray) and v.ndim == 0 else v for v in (risk, initial_quantile, min_excesses))
    if not is_finite_real(risk) or not 0.0 < risk < 1.0:
        raise ValueError(f"risk must be a number in (0, 1), got {risk!r}")
    if not is_finite_real(initial_quantile) or not 0.0 < initial_quantile < 1.0:
        raise ValueError(f"initial_quantile must be a number in (0, 1), got {initial_quantile!r}")
    if risk >= 1.0 - initial_quantile:
        raise ValueError(
            f"risk={risk!r} must be smaller than 1 - initial_quantile = {1.0 - initial_quantile:.6g}: "
            "POT extrapolates beyond the initial quantile; lower risk or initial_quantile"
        )
    # an integral float (10.0) is accepted, as it always was
    if not is_finite_real(min_excesses) or int(min_excesses) != min_excesses or min_excesses < 2:
        raise ValueError(f"min_excesses must be an integer >= 2, got {min_excesses!r}")


def _tie_limit(initial, largest):
    """The score above which a score exceeds the initial threshold ``initial`` (not a tie with it),
    given the ``largest`` absolute score; arrays broadcast."""
    return initial + _TIE_TOLERANCE * largest


def _too_few(n_excesses, n, risk: float, min_excesses: int):
    """Where the GPD fit is not used (the quantile rule instead): fewer than ``min_excesses``
    excesses, or fewer than ``risk * n`` of them. In the latter case (ties at the initial
    quantile leave less than the target risk above it) the score exceeded with probability
    ``risk`` lies at or below the initial threshold, inside the bulk that the tail model does
    not describe; its formula would extrapolate below every score (a threshold of -354 for
    scores >= 0, and an alert at every point)."""
    return (n_excesses < min_excesses) | (n_excesses <= risk * n)


def _contradicted(n_above, n, risk: float):
    """Where a fitted threshold is exceeded by ``n_above`` of ``n`` training scores, more than a
    Binomial(n, risk) count reaches with probability ``_CONTRADICTED``; arrays broadcast."""
    n_above = np.asarray(n_above)
    # bdtrc(k, n, p) = P(X > k), so P(X >= n_above) = bdtrc(n_above - 1, n, p)
    tail = scipy.special.bdtrc(np.maximum(n_above - 1, 0), n, risk)
    return (n_above > 0) & (tail < _CONTRADICTED)


def _tail_threshold(excesses: np.ndarray, t: float, n: int, risk: float, min_excesses: int, count_above):
    """The GPD threshold from the ``excesses`` over ``t`` of ``n`` training scores, or ``None``
    where the quantile rule must replace it (:func:`_too_few`, :func:`_contradicted`);
    ``count_above(z)`` counts the training scores above ``z``. Returns ``(threshold, gamma, sigma)``.
    Shared with ``tsanomaly.spark``, which holds only the top of the scores."""
    n_t = excesses.shape[0]
    if _too_few(n_t, n, risk, min_excesses):
        return None, np.nan, np.nan
    gamma, sigma = fit_gpd(np.sort(excesses))
    z = gpd_quantile(t, gamma, sigma, risk, n, n_t)
    if _contradicted(count_above(z), n, risk):
        return None, np.nan, np.nan
    return z, gamma, sigma


def _fit_finite(x: np.ndarray, risk: float, initial_quantile: float, min_excesses: int) -> POTFit:
    """POT on a 1-D array of finite scores (may be empty)."""
    n = x.shape[0]
    if n == 0:
        return POTFit(np.nan, np.nan, np.nan, np.nan, 0, 0, True)
    t = float(np.quantile(x, initial_quantile, method="lower"))
    peaks = x[x > _tie_limit(t, float(np.abs(x).max()))] - t
    z, gamma, sigma = _tail_threshold(peaks, t, n, risk, min_excesses, lambda z: int((x > z).sum()))
    if z is None:
        return POTFit(float(np.quantile(x, 1.0 - risk)), t, np.nan, np.nan, n, peaks.shape[0], True)
    return POTFit(z, t, gamma, sigma, n, peaks.shape[0], False)


def gpd_quantile(t: float, gamma: float, sigma: float, risk: float, n: int, n_t: int) -> float:
    """The score exceeded with probability ``risk``: ``z_q`` of the module docstring, from the
    initial threshold ``t``, the GPD fit ``(gamma, sigma)`` of its excesses, ``n`` observations
    and ``n_t`` excesses."""
    r = risk * n / n_t
    if gamma == 0.0:
        return float(t - sigma * np.log(r))
    return float(t + sigma / gamma * (r ** (-gamma) - 1.0))


def _finite(scores, name="scores") -> np.ndarray:
    # POT fits on the host (Brent steps over a few thousand excesses); CuPy refuses np.asarray.
    a = np.asarray(to_numpy(scores), dtype=np.float64)
    if np.isinf(a).any():
        raise ValueError(f"{name} contain infinite values; replace or clip them before calibration")
    return a


def pot_fit(
    scores, risk: float = 1e-4, initial_quantile: float = 0.98, min_excesses: int = DEFAULT_MIN_EXCESSES
) -> POTFit:
    """Peaks-over-threshold fit on one set of scores (Siffer et al., KDD 2017).

    Parameters
    ----------
    scores : array-like of float, any shape
        Training scores, higher = more anomalous; flattened; NaN ignored. A CuPy array is
        copied to the host.
    risk : float, default 1e-4
        Target probability that a normal score exceeds the returned threshold.
    initial_quantile : float, default 0.98
        Quantile ``t`` over which the excesses are fitted; ``risk`` must be below
        ``1 - initial_quantile``.
    min_excesses : int, default 10
        Fewest excesses for a GPD fit; with fewer, the plain quantile ``1 - risk`` of the
        scores is used (``fallback=True``). Two parameters from fewer than about ten points
        are noise.

    Returns
    -------
    POTFit

    Raises
    ------
    ValueError
        On bad parameters, infinite scores, or when no score is finite.
    """
    _check_params(risk, initial_quantile, min_excesses)
    a = _finite(scores).ravel()
    a = a[~np.isnan(a)]
    if a.shape[0] == 0:
        raise ValueError("scores hold no finite value")
    return _fit_finite(a, risk, initial_quantile, int(min_excesses))


def pot_threshold(
    scores, risk: float = 1e-4, initial_quantile: float = 0.98, min_excesses: int = DEFAULT_MIN_EXCESSES
) -> float:
    """One POT threshold for all scores (Siffer et al., KDD 2017).

    Fits a generalised Pareto distribution to the excesses of ``scores`` over their
    ``initial_quantile`` and returns the score exceeded with probability ``risk``.
    See :func:`pot_fit` for the parameters.

    Returns
    -------
    float
        The threshold; flag ``score > threshold``. When there are fewer than
        ``min_excesses`` excesses, or no more than ``risk`` times the number of
        scores (ties at the initial quantile), or the GPD's threshold is exceeded
        by more training scores than ``risk`` allows, the empirical quantile
        ``1 - risk`` is returned and a ``RuntimeWarning`` says so. Scores within
        1e-9 of the largest |score| above the initial quantile count as ties with it.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> z = pot_threshold(rng.exponential(1.0, 100_000), risk=1e-4)
    >>> bool(abs(z - np.log(1e4)) < 0.5)        # true quantile of Exp(1) at 1 - 1e-4: 9.21
    True
    """
    fit = pot_fit(scores, risk=risk, initial_quantile=initial_quantile, min_excesses=min_excesses)
    if fit.fallback:
        warnings.warn(_fallback_message(fit.n_excesses, fit.n_obs, risk, initial_quantile, min_excesses),
                      RuntimeWarning, stacklevel=2)
    return fit.threshold


def _fallback_message(n_excesses: int, n: int, risk: float, initial_quantile: float, min_excesses: int) -> str:
    """The warning of :func:`pot_threshold` when it falls back to the quantile rule (also given
    by ``tsanomaly.spark``, which applies the same rules to the scores of all shards)."""
    if not _too_few(n_excesses, n, risk, min_excesses):
        return (
            f"POT fell back to the {1 - risk} quantile: the GPD fitted to {n_excesses} excesses over the "
            f"{initial_quantile} quantile of {n} scores gave a threshold exceeded by more of them than "
            f"risk={risk} allows (scores that repeat a few values, such as counts, fit no GPD)"
        )
    return (
        f"POT fell back to the {1 - risk} quantile: {n_excesses} excesses over the "
        f"{initial_quantile} quantile of {n} scores, fewer than min_excesses={min_excesses} "
        f"or than the {risk * n:g} that risk={risk} asks for (scores tied at the initial quantile)"
    )


class POTThresholds(NamedTuple):
    """Per-context thresholds: ``thresholds`` (n_contexts,) float and ``fallback``
    (n_contexts,) bool, True where the quantile rule replaced the GPD fit."""

    thresholds: np.ndarray
    fallback: np.ndarray


def pot_thresholds(
    scores, risk: float = 1e-4, initial_quantile: float = 0.98, min_excesses: int = DEFAULT_MIN_EXCESSES
) -> POTThresholds:
    """POT thresholds per context (one row of ``scores`` per context).

    Each row is calibrated on its own as in :func:`pot_threshold`. A row that
    :func:`pot_threshold` would send to the quantile rule (too few excesses over its
    ``initial_quantile``, or a GPD contradicted by its own scores) gets its empirical
    quantile ``1 - risk``; a row with no finite score gets a NaN threshold. Both are
    reported in ``fallback``.

    Parameters
    ----------
    scores : array-like of float, shape (n_contexts, n_times)
        Training scores, higher = more anomalous; NaN ignored. A CuPy array is copied to
        the host.
    risk, initial_quantile, min_excesses
        As in :func:`pot_fit`.

    Returns
    -------
    POTThresholds
        ``(thresholds, fallback)``, each of shape (n_contexts,).

    Raises
    ------
    ValueError
        On a non-2-D input, bad parameters, or infinite scores (the message names the row).
    """
    _check_params(risk, initial_quantile, min_excesses)
    a = np.asarray(to_numpy(scores), dtype=np.float64)  # on the host, as pot_fit's
    if a.ndim != 2:
        raise ValueError(f"scores must be 2-D (n_contexts, n_times), got shape {a.shape}")
    bad = np.isinf(a).any(axis=1)
    if bad.any():
        raise ValueError(f"scores of context row {int(np.flatnonzero(bad)[0])} contain infinite values")
    # Row by row this is pot_fit (tests/test_pot.py checks it bit for bit), computed for all rows
    # at once where it can be: the quantiles, and the GPD fits of the rows with as many excesses.
    n_obs = (~np.isnan(a)).sum(axis=1)
    initial = nanquantile(a, initial_quantile, axis=1, method="lower")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rows without a finite score: NaN
        largest = np.nanmax(np.abs(a), axis=1)
    with np.errstate(invalid="ignore"):  # NaN rows and scores compare False
        above = a > _tie_limit(initial, largest)[:, None]
    n_excesses = above.sum(axis=1)
    thresholds = np.full(a.shape[0], np.nan)
    fallback = np.ones(a.shape[0], dtype=bool)  # rows with no finite score stay NaN
    few = (n_obs > 0) & _too_few(n_excesses, n_obs, risk, min_excesses)
    thresholds[few] = nanquantile(a[few], 1.0 - risk, axis=1)
    fitted = (n_obs > 0) & ~few
    for count in np.unique(n_excesses[fitted]):
        rows = np.flatnonzero(fitted & (n_excesses == count))
        excesses = np.sort((a[rows] - initial[rows, None])[above[rows]].reshape(rows.shape[0], count), axis=1)
        gamma, sigma = _fit_gpd_rows(excesses)
        for row, row_gamma, row_sigma in zip(rows, gamma, sigma):
            thresholds[row] = gpd_quantile(
                float(initial[row]), float(row_gamma), float(row_sigma), risk, int(n_obs[row]), int(count)
            )
        fallback[rows] = False
    with np.errstate(invalid="ignore"):  # NaN scores compare False
        contradicted = ~fallback & _contradicted((a > thresholds[:, None]).sum(axis=1), n_obs, risk)
    thresholds[contradicted] = nanquantile(a[contradicted], 1.0 - risk, axis=1)
    fallback[contradicted] = True
    return POTThresholds(thresholds, fallback)
