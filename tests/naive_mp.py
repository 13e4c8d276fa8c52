"""Brute-force matrix profile: the full distance matrix, for testing the fast implementations.

Deliberately simple and independent of the kernels' formulation: every window is
z-normalised on its own and distances are Euclidean norms of differences (no
correlations, no recurrences), so cancellation cannot hide in both places at once.
The edge-case rules are the documented ones of
:func:`tsanomaly.detectors.matrix_profile.matrix_profile`:

* a window with a NaN or inf is nobody's neighbour (distance inf, index -1);
* two constant windows are at distance 0, a constant and a non-constant one at sqrt(m);
* self-joins exclude ``|i - j| <= exclusion``; AB-joins exclude nothing;
* ties go to the smallest index; left/right profiles exist for self-joins only.

``normalize=False`` gives plain Euclidean distances between the raw windows (no
constant-window rule; windows with NaN/inf are still nobody's neighbour).

``walk_with_gaps`` makes the test series: a random walk with NaN, inf and constant stretches.
"""
from __future__ import annotations

import math

import numpy as np


def _windows(T, m):
    W = np.lib.stride_tricks.sliding_window_view(np.asarray(T, dtype=np.float64), m)
    finite = np.isfinite(W).all(axis=1)
    constant = finite & (W == W[:, :1]).all(axis=1)
    ordinary = finite & ~constant
    Z = np.zeros_like(W)
    Wo = W[ordinary]
    mu = Wo.mean(axis=1, keepdims=True)
    sigma = np.sqrt(((Wo - mu) ** 2).mean(axis=1, keepdims=True))
    Z[ordinary] = (Wo - mu) / sigma
    return Z, finite, constant, ordinary


def distance_matrix(T, m, T_B=None, normalize=True):
    """z-normalised (or plain) Euclidean distances between every window of T (rows) and of T_B (columns)."""
    ZA, finA, conA, ordA = _windows(T, m)
    ZB, finB, conB, ordB = _windows(T if T_B is None else T_B, m)
    if not normalize:  # the raw windows, and no constant-window rule
        ZA = _raw_windows(T, m, finA)
        ZB = _raw_windows(T if T_B is None else T_B, m, finB)
    D = np.empty((len(ZA), len(ZB)))
    for start in range(0, len(ZA), 256):  # rows in chunks: the (rows, nB, m) block stays small
        block = ZA[start : start + 256, None, :] - ZB[None, :, :]
        D[start : start + 256] = np.sqrt((block * block).sum(axis=2))
    if normalize:
        D[np.ix_(conA, conB)] = 0.0
        D[np.ix_(conA, ordB)] = math.sqrt(m)
        D[np.ix_(ordA, conB)] = math.sqrt(m)
    D[~finA, :] = np.inf
    D[:, ~finB] = np.inf
    return D


def _raw_windows(T, m, finite):
    W = np.lib.stride_tricks.sliding_window_view(np.asarray(T, dtype=np.float64), m)
    return np.where(finite[:, None], W, 0.0)  # non-finite windows are set to inf afterwards


def _argmin_rows(D):
    idx = np.argmin(D, axis=1)  # the first minimum: ties go to the smallest index
    best = D[np.arange(len(D)), idx]
    idx = np.where(np.isfinite(best), idx, -1)
    return best, idx.astype(np.int64)


def naive_matrix_profile(T, m, T_B=None, exclusion=None, normalize=True):
    """Profile, index and (self-join) left/right profiles and indices from the full matrix.

    Returns
    -------
    dict of numpy arrays
        ``profile``, ``index``, ``left_profile``, ``left_index``, ``right_profile``, ``right_index``.
    """
    D = distance_matrix(T, m, T_B, normalize)
    n_a, n_b = D.shape
    out = {}
    if T_B is None:
        excl = math.ceil(m / 4) if exclusion is None else exclusion
        i, j = np.indices(D.shape)
        D = np.where(np.abs(i - j) <= excl, np.inf, D)
        out["left_profile"], out["left_index"] = _argmin_rows(np.where(j < i, D, np.inf))
        out["right_profile"], out["right_index"] = _argmin_rows(np.where(j > i, D, np.inf))
    else:
        out["left_profile"] = out["right_profile"] = np.full(n_a, np.inf)
        out["left_index"] = out["right_index"] = np.full(n_a, -1, dtype=np.int64)
    out["profile"], out["index"] = _argmin_rows(D)
    return out


def walk_with_gaps(rng, n, level=0.0):
    """A random walk with a NaN, an inf, a run of NaN and two constant stretches."""
    x = level + np.cumsum(rng.standard_normal(n))
    x[n // 7] = np.nan
    x[n // 3] = np.inf
    x[n // 2 : n // 2 + 5] = np.nan
    x[n // 5 : n // 5 + 40] = x[n // 5]  # constant stretches, longer than the windows used
    x[2 * n // 3 : 2 * n // 3 + 35] = 7.0
    return x
