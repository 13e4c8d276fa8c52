"""Peaks-over-threshold (POT) calibration of anomaly scores.

Siffer, Fouque, Termier, Largouet, "Anomaly Detection in Streams with Extreme Value Theory",
KDD 2017. By the Pickands-Balkema-de Haan theorem, the excesses of a score over a high
threshold ``t`` follow approximately a generalised Pareto distribution (GPD)

    P(X - t > y | X > t) = (1 + gamma * y / sigma) ** (-1 / gamma)     (exp(-y / sigma) if gamma = 0)

so the score exceeded with probability ``q`` (the *risk*) is

    z_q = t + sigma / gamma * ((q * n / N_t) ** (-gamma) - 1)            (t - sigma * log(q n / N_t))

with ``n`` observations of which ``N_t`` exceed ``t``. ``t`` is a high empirical quantile of the
training scores (``initial_quantile``, 0.98 as in the paper) and ``(gamma, sigma)`` are the
maximum-likelihood estimates on the excesses.

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
of contexts; the tests check that its likelihood is never below scipy's fit.

Score direction: higher = more anomalous. NaN scores are ignored; infinite scores are rejected.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.optimize import brentq

__all__ = ["POTFit", "POTThresholds", "fit_gpd", "pot_fit", "pot_threshold", "pot_thresholds"]

_X_MIN = 1e-4  # |x| below this (in units of 1 / mean excess) is indistinguishable from gamma = 0


def _root_grid(end: float) -> np.ndarray:
    """Increasing-|x| scan points in the open interval between 0 and ``end``: geometric from
    ``_X_MIN`` (many decades when the interval is long) and dense near ``end`` (where the
    likelihood equation changes fast)."""
    a = abs(end)
    if a <= _X_MIN:
        return np.zeros(0)
    far = np.geomspace(_X_MIN, a * (1.0 - 1e-9), 240)
    near = a * (1.0 - np.geomspace(0.5, 1e-9, 60))
    return np.sign(end) * np.unique(np.concatenate((far, near)))


def _log_likelihood(y: np.ndarray, gamma: float, sigma: float) -> float:
    """GPD log-likelihood of excesses ``y`` (all > 0)."""
    if sigma <= 0:
        return -np.inf
    if gamma == 0.0:
        return float(-y.shape[0] * np.log(sigma) - y.sum() / sigma)
    if gamma == -1.0:  # uniform on [0, sigma]
        return float(-y.shape[0] * np.log(sigma)) if y.max() <= sigma else -np.inf
    z = 1.0 + gamma * y / sigma
    if (z <= 0).any():
        return -np.inf
    return float(-y.shape[0] * np.log(sigma) - (1.0 + 1.0 / gamma) * np.log(z).sum())


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
    scale = y.mean()
    yn = y / scale  # the fit is scale-equivariant: gamma is unchanged, sigma scales
    y_min, y_max = yn.min(), yn.max()

    def w(x: float) -> float:
        xy = 1.0 + x * yn
        return float(np.mean(1.0 / xy) * (1.0 + np.mean(np.log(xy))) - 1.0)

    ends = [-1.0 / y_max]  # far end of each root interval; its near end is 0
    upper = 2.0 * (1.0 - y_min) / y_min**2
    if upper > 0:
        ends.append(upper)
    # (gamma, sigma) in normalised units: the exponential, and the uniform on [0, max Y] --
    # the boundary gamma = -1 beyond which the likelihood is unbounded (very short tails)
    candidates = [(0.0, 1.0), (-1.0, y_max)]
    for end in ends:
        xs = _root_grid(end)
        if xs.shape[0] < 2:
            continue
        vals = np.empty(xs.shape[0])
        step = max(1, 2_000_000 // yn.shape[0])  # bound the (grid x excesses) temporary
        for i in range(0, xs.shape[0], step):
            xy = 1.0 + xs[i : i + step, None] * yn[None, :]
            vals[i : i + step] = np.mean(1.0 / xy, axis=1) * (1.0 + np.mean(np.log(xy), axis=1)) - 1.0
        change = np.flatnonzero(np.sign(vals[:-1]) * np.sign(vals[1:]) < 0)
        for k in change:
            root = brentq(w, xs[k], xs[k + 1], xtol=1e-14 * abs(end), rtol=1e-12)
            gamma = float(np.mean(np.log1p(root * yn)))
            if gamma != 0.0:
                candidates.append((gamma, gamma / root))
    best = max(candidates, key=lambda gs: _log_likelihood(yn, gs[0], gs[1]))
    return float(best[0]), float(best[1] * scale)


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
        True when there were fewer than ``min_excesses`` excesses and ``threshold`` is the
        plain empirical quantile ``1 - risk`` instead.
    """

    threshold: float
    initial_threshold: float
    gamma: float
    sigma: float
    n_obs: int
    n_excesses: int
    fallback: bool


def _check_params(risk, initial_quantile, min_excesses):
    if not 0.0 < risk < 1.0:
        raise ValueError(f"risk must lie in (0, 1), got {risk!r}")
    if not 0.0 < initial_quantile < 1.0:
        raise ValueError(f"initial_quantile must lie in (0, 1), got {initial_quantile!r}")
    if risk >= 1.0 - initial_quantile:
        raise ValueError(
            f"risk={risk!r} must be smaller than 1 - initial_quantile = {1.0 - initial_quantile:.6g}: "
            "POT extrapolates beyond the initial quantile; lower risk or initial_quantile"
        )
    if int(min_excesses) != min_excesses or min_excesses < 2:
        raise ValueError(f"min_excesses must be an integer >= 2, got {min_excesses!r}")


def _fit_finite(x: np.ndarray, risk: float, initial_quantile: float, min_excesses: int) -> POTFit:
    """POT on a 1-D array of finite scores (may be empty)."""
    n = x.shape[0]
    if n == 0:
        return POTFit(np.nan, np.nan, np.nan, np.nan, 0, 0, True)
    t = float(np.quantile(x, initial_quantile))
    peaks = x[x > t] - t
    n_t = peaks.shape[0]
    if n_t < min_excesses:
        return POTFit(float(np.quantile(x, 1.0 - risk)), t, np.nan, np.nan, n, n_t, True)
    gamma, sigma = fit_gpd(peaks)
    r = risk * n / n_t
    if gamma == 0.0:
        z = t - sigma * np.log(r)
    else:
        z = t + sigma / gamma * (r ** (-gamma) - 1.0)
    return POTFit(float(z), t, gamma, sigma, n, n_t, False)


def _finite(scores, name="scores") -> np.ndarray:
    a = np.asarray(scores, dtype=np.float64)
    if np.isinf(a).any():
        raise ValueError(f"{name} contain infinite values; replace or clip them before calibration")
    return a


def pot_fit(scores, risk: float = 1e-4, initial_quantile: float = 0.98, min_excesses: int = 10) -> POTFit:
    """Peaks-over-threshold fit on one set of scores (Siffer et al., KDD 2017).

    Parameters
    ----------
    scores : array-like of float, any shape
        Training scores, higher = more anomalous; flattened; NaN ignored.
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


def pot_threshold(scores, risk: float = 1e-4, initial_quantile: float = 0.98, min_excesses: int = 10) -> float:
    """One POT threshold for all scores (Siffer et al., KDD 2017).

    Fits a generalised Pareto distribution to the excesses of ``scores`` over their
    ``initial_quantile`` and returns the score exceeded with probability ``risk``.
    See :func:`pot_fit` for the parameters.

    Returns
    -------
    float
        The threshold; flag ``score > threshold``. When there are fewer than
        ``min_excesses`` excesses, the empirical quantile ``1 - risk`` is returned and a
        ``RuntimeWarning`` says so.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> z = pot_threshold(rng.exponential(1.0, 100_000), risk=1e-4)
    >>> bool(abs(z - np.log(1e4)) < 0.5)        # true quantile of Exp(1) at 1 - 1e-4: 9.21
    True
    """
    fit = pot_fit(scores, risk=risk, initial_quantile=initial_quantile, min_excesses=min_excesses)
    if fit.fallback:
        warnings.warn(
            f"POT fell back to the {1 - risk} quantile: {fit.n_excesses} excesses over the "
            f"{initial_quantile} quantile of {fit.n_obs} scores, min_excesses={min_excesses}",
            RuntimeWarning,
            stacklevel=2,
        )
    return fit.threshold


class POTThresholds(NamedTuple):
    """Per-context thresholds: ``thresholds`` (n_contexts,) float and ``fallback``
    (n_contexts,) bool, True where the quantile rule replaced the GPD fit."""

    thresholds: np.ndarray
    fallback: np.ndarray


def pot_thresholds(
    scores, risk: float = 1e-4, initial_quantile: float = 0.98, min_excesses: int = 10
) -> POTThresholds:
    """POT thresholds per context (one row of ``scores`` per context).

    Each row is calibrated on its own as in :func:`pot_threshold`. A row with fewer than
    ``min_excesses`` excesses over its ``initial_quantile`` falls back to its empirical
    quantile ``1 - risk``; a row with no finite score gets a NaN threshold. Both are reported
    in ``fallback``.

    Parameters
    ----------
    scores : array-like of float, shape (n_contexts, n_times)
        Training scores, higher = more anomalous; NaN ignored. NumPy array (move device
        arrays to the host first).
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
    a = np.asarray(scores, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"scores must be 2-D (n_contexts, n_times), got shape {a.shape}")
    bad = np.isinf(a).any(axis=1)
    if bad.any():
        raise ValueError(f"scores of context row {int(np.flatnonzero(bad)[0])} contain infinite values")
    thresholds = np.empty(a.shape[0])
    fallback = np.empty(a.shape[0], dtype=bool)
    for i, row in enumerate(a):
        fit = _fit_finite(row[~np.isnan(row)], risk, initial_quantile, int(min_excesses))
        thresholds[i] = fit.threshold
        fallback[i] = fit.fallback
    return POTThresholds(thresholds, fallback)
