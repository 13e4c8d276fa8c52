"""Batched STL (Cleveland et al. 1990) on the CPU with Numba.

One call decomposes a whole ``(n_ctx, n_time)`` batch.  The contexts are cut
into blocks of :data:`LANES` series; a block is transposed to ``(time, lane)``
so that every step of the algorithm -- each LOESS fit, moving average and
robustness weight -- runs for the whole block at once, with the lanes as the
innermost, vectorised dimension (SIMD across contexts).  The blocks are shared
out among ``numba.get_num_threads()`` threads (the compiled kernel releases the
GIL).  The GPU kernel uses the same layout -- one thread per context,
consecutive contexts at consecutive addresses -- and the same arithmetic,
written for one context in ``cuda_kernels/stl.cuh``.

The algorithm is statsmodels' port of the NETLIB Fortran
(``statsmodels/tsa/stl/_stl.pyx``) step for step -- same windows, tricube and
bisquare cut-offs, running-sum moving averages, median, and fall-backs when a
window has no weight -- so the components agree with
``statsmodels.tsa.seasonal.STL`` to rounding (about 1e-13 of the series'
scale).  Three things are organised differently, to save work:

* A LOESS fit at one point is linear in the data: ``ys = c0*T0 + c1*T1`` with
  ``T0 = sum_j K_j z_j`` and ``T1 = sum_j K_j d_j z_j`` over its window (``K``
  the tricube weights, ``d_j`` the offset from the fitted point, ``z = rw * y``
  the data times the robustness weights).  ``c0, c1`` -- normalisation and
  local-slope correction -- depend on the robustness weights only, so they are
  computed once per robustness iteration and reused by its inner passes;
  before the first re-weighting they are the same for every context and are
  computed once per call.
* The outputs whose window is the full window centred on them -- all but a
  half-window at each end of the series, and of each cycle-subseries -- share
  their weights, so the block's arrays are read as flat vectors and all of them
  are summed in one stencil loop (eight weights per sweep, bound by the FMA
  units); the cycle-subseries of all phases are smoothed together with a row
  stride of one period.
* The median of the absolute residuals is found by a branch-free quickselect
  whose first pivot is the previous iteration's median.

Validation happens in :mod:`tsanomaly.detectors.stl`; the functions here
expect C-contiguous float64 input without NaN (:func:`fill_gaps` makes it).
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit

__all__ = ["stl", "fill_gaps", "LANES"]

#: Contexts processed together by one thread, one SIMD lane each (a block's
#: working set is about 17 arrays of (n_time + 2*period) x LANES float64).
#: Measured on a 2-core Xeon: 16 beats 8 and 32 for 720-point series and 8 for
#: 2,016 points with a weekly period.
LANES = 16

# FMA contraction and re-association only change rounding (1e-16 relative);
# NaN and inf semantics are kept: the fall-backs rely on NaN tests.
_FAST = {"contract", "reassoc"}


# ---------------------------------------------------------------------------
# LOESS plans.  The windows and tricube weights of a LOESS pass depend only on
# the sequence length, the window length and the degree: they are built once
# per call and shared by every context and iteration.
# ---------------------------------------------------------------------------
@njit(cache=True)
def _tricube(r, h):
    """Tricube weight at distance ``r`` for half-width ``h``, with statsmodels' cut-offs."""
    if r <= 0.999 * h:
        if r <= 0.001 * h:
            return 1.0
        q = r / h
        q = 1.0 - q * q * q
        return q * q * q
    return 0.0


@njit(cache=True)
def _ess_window(i, n, length):
    """1-based window ``(nleft, nright)`` of point ``i`` (0-based) in statsmodels' ``_ess`` (jump 1)."""
    if length >= n:
        return 1, n
    nsh = (length + 2) // 2
    shift = min(max(i + 1 - nsh, 0), n - length)
    return 1 + shift, length + shift


@njit(cache=True, error_model="numpy")
def _coef(s0, s1, s2, h, deg, rng):
    """Fit coefficients ``(c0, c1)`` of one window from its weighted moments
    ``s_k = sum_j w_j d_j**k`` (``d_j``: offset of input ``j`` from the fitted point).

    statsmodels' ``_est`` returns ``sum_j w_j/s0 * (1 + b (d_j - abar)) y_j``
    with ``abar = s1/s0``, ``var = s2/s0 - abar**2`` and ``b = -abar/var`` -- a
    local linear fit, used when ``deg > 0``, ``h > 0`` and the weighted spread
    ``sqrt(var)`` exceeds ``0.001 * rng`` -- else the weighted mean.  Both are
    ``c0 * sum w y + c1 * sum w d y``: ``(s2, -s1) / (s0*s2 - s1**2)`` for the
    line, ``(1/s0, 0)`` for the mean.  An empty window (``s0 <= 0``) gives
    ``c0 = NaN``: the caller falls back.  The kernels' branch-free versions
    (:func:`_coefs_lanes`, :func:`_flat_coefs`) compute the same expressions.
    """
    if s0 <= 0.0:
        return np.nan, 0.0
    thr = 0.001 * rng
    det = s0 * s2 - s1 * s1  # s0**2 * var
    if h > 0.0 and deg > 0 and det > thr * thr * (s0 * s0):
        inv = 1.0 / det
        return s2 * inv, -s1 * inv
    return 1.0 / s0, 0.0


@njit(cache=True)
def _build_plan(k, length, deg, extrapolate):
    """Windows and weights of one LOESS pass over a sequence of ``k`` points.

    Output ``m`` is fitted at 1-based abscissa ``xs`` from the inputs
    ``lo[m] .. lo[m] + cnt[m] - 1`` (0-based) that carry a non-zero tricube
    weight.  Without extrapolation the ``k`` outputs are the ``k`` inputs
    (statsmodels' ``_ess``); with it (the cycle-subseries of ``_ss``) there
    are ``k + 2`` outputs, output ``m`` at input ``m - 1``, the first and the
    last extrapolated one step beyond the data.

    Returns
    -------
    tuple ``(lo, cnt, h, K, KD, KDD, c0, c1, deg, rng, ia, ib)``
        ``K/KD/KDD[m, e]``: tricube weight of input ``lo[m] + e``, times its
        offset ``d`` from ``xs``, times ``d**2``.  ``c0/c1[m]``: the fit
        coefficients with unit robustness weights (``c0`` NaN when the window
        has no weight).  ``rng = k - 1`` scales statsmodels' test of whether a
        local slope can be fitted.  Outputs ``[ia, ib)`` (maybe none) have the
        full window centred on their own input, with the weights of row ``ia``.
    """
    m_count = k + 2 if extrapolate else k
    width = min(length, k) + 1
    lo = np.zeros(m_count, np.int64)
    cnt = np.zeros(m_count, np.int64)
    hs = np.zeros(m_count)
    K = np.zeros((m_count, width))
    KD = np.zeros((m_count, width))
    KDD = np.zeros((m_count, width))
    c0 = np.zeros(m_count)
    c1 = np.zeros(m_count)
    rng = k - 1.0
    for m in range(m_count):
        if extrapolate and m == 0:
            xs, nleft, nright = 0, 1, min(length, k)
        elif extrapolate and m == k + 1:
            xs, nleft, nright = k + 1, max(1, k - length + 1), k
        elif extrapolate:
            xs = m
            nleft, nright = _ess_window(m - 1, k, length)
        else:
            xs = m + 1
            nleft, nright = _ess_window(m, k, length)
        h = float(max(xs - nleft, nright - xs))
        if length > k:
            h += (length - k) // 2
        hs[m] = h
        # keep the inputs with a non-zero weight (the tricube weight falls
        # with the distance, so the zeros are at the ends of the window)
        first = -1
        c = 0
        for j in range(nleft, nright + 1):
            d = float(j - xs)
            w = _tricube(abs(d), h)
            if w == 0.0:
                continue
            if first < 0:
                first = j
            K[m, c] = w
            KD[m, c] = w * d
            KDD[m, c] = w * d * d
            c += 1
        lo[m] = (first if first >= 0 else nleft) - 1
        cnt[m] = c
        # sum from both ends inwards: a symmetric window gets s1 == 0 exactly,
        # hence c1 == 0, and the passes skip its T1 sums
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        a = 0
        z = c - 1
        while a < z:
            s0 += K[m, a] + K[m, z]
            s1 += KD[m, a] + KD[m, z]
            s2 += KDD[m, a] + KDD[m, z]
            a += 1
            z -= 1
        if a == z:
            s0 += K[m, a]
            s1 += KD[m, a]
            s2 += KDD[m, a]
        c0[m], c1[m] = _coef(s0, s1, s2, h, deg, rng)
    # outputs fitted at their own input from the full, centred window all
    # share the weights of row ia: they are summed as one stencil
    ia, ib = 0, 0
    if length < k and length % 2 == 1:
        half = (length - 1) // 2
        off = 1 if extrapolate else 0
        ia = half + off
        ib = k - half + off
    return lo, cnt, hs, K, KD, KDD, c0, c1, deg, rng, ia, ib


# ---------------------------------------------------------------------------
# Block kernels.  Arrays are (rows, LANES): row r of lane b is X[r, b].  A
# LOESS sequence starts at row ``base`` with a row stride ``rs`` (1 for the
# whole series, the period for a cycle-subseries).  ``nb`` lanes are live.
# ---------------------------------------------------------------------------
@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _window_sums(Z, base, rs, K, KD, m, cnt, t0, t1, nb, need_t1):
    """``t0[b] = sum_e K[m,e] Z[base + rs*e, b]`` and ``t1`` likewise with ``KD``.

    Four offsets per sweep over the lanes, so that each load and store of the
    sums carries four multiply-adds.
    """
    for b in range(nb):
        t0[b] = 0.0
        t1[b] = 0.0
    e = 0
    while e + 3 < cnt:
        k0 = K[m, e]
        k1 = K[m, e + 1]
        k2 = K[m, e + 2]
        k3 = K[m, e + 3]
        r0 = base + rs * e
        r1 = r0 + rs
        r2 = r1 + rs
        r3 = r2 + rs
        if need_t1:
            d0 = KD[m, e]
            d1 = KD[m, e + 1]
            d2 = KD[m, e + 2]
            d3 = KD[m, e + 3]
            for b in range(nb):
                v0 = Z[r0, b]
                v1 = Z[r1, b]
                v2 = Z[r2, b]
                v3 = Z[r3, b]
                t0[b] += (k0 * v0 + k1 * v1) + (k2 * v2 + k3 * v3)
                t1[b] += (d0 * v0 + d1 * v1) + (d2 * v2 + d3 * v3)
        else:
            for b in range(nb):
                t0[b] += (k0 * Z[r0, b] + k1 * Z[r1, b]) + (k2 * Z[r2, b] + k3 * Z[r3, b])
        e += 4
    while e < cnt:
        k0 = K[m, e]
        d0 = KD[m, e]
        r0 = base + rs * e
        for b in range(nb):
            v0 = Z[r0, b]
            t0[b] += k0 * v0
            t1[b] += d0 * v0
        e += 1


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _window_moments(RW, base, rs, K, KD, KDD, m, cnt, s0, s1, s2, nb):
    """Weighted moments of a window under robustness weights, as :func:`_window_sums`:
    ``s0[b] = sum_e K[m,e] RW[base + rs*e, b]``, ``s1`` with ``KD``, ``s2`` with ``KDD``."""
    for b in range(nb):
        s0[b] = 0.0
        s1[b] = 0.0
        s2[b] = 0.0
    e = 0
    while e + 1 < cnt:
        k0 = K[m, e]
        k1 = K[m, e + 1]
        d0 = KD[m, e]
        d1 = KD[m, e + 1]
        q0 = KDD[m, e]
        q1 = KDD[m, e + 1]
        r0 = base + rs * e
        r1 = r0 + rs
        for b in range(nb):
            v0 = RW[r0, b]
            v1 = RW[r1, b]
            s0[b] += k0 * v0 + k1 * v1
            s1[b] += d0 * v0 + d1 * v1
            s2[b] += q0 * v0 + q1 * v1
        e += 2
    if e < cnt:
        k0 = K[m, e]
        d0 = KD[m, e]
        q0 = KDD[m, e]
        r0 = base + rs * e
        for b in range(nb):
            v0 = RW[r0, b]
            s0[b] += k0 * v0
            s1[b] += d0 * v0
            s2[b] += q0 * v0


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _coefs_lanes(s0, s1, s2, h, deg, rng, C0, C1, row, nb):
    """:func:`_coef` for every lane, branch-free so that it vectorises."""
    fit_slope = h > 0.0 and deg > 0
    thr2 = (0.001 * rng) * (0.001 * rng)
    for b in range(nb):
        w = s0[b]
        det = w * s2[b] - s1[b] * s1[b]
        line = fit_slope and det > thr2 * (w * w)
        inv = 1.0 / (det if line else w)
        empty = w <= 0.0
        C0[row, b] = np.nan if empty else (s2[b] * inv if line else inv)
        C1[row, b] = 0.0 if (empty or not line) else -s1[b] * inv


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _fit_lanes(robust, C0, C1, crow, a, bcoef, t0, t1, src, srow, out, orow, fallback, nb):
    """``out[orow] = c0*t0 + c1*t1`` per lane; where ``c0`` is NaN (no weight in
    the window) ``src[srow]`` if ``fallback`` else left as is."""
    if robust:
        for b in range(nb):
            c = C0[crow, b]
            v = c * t0[b] + C1[crow, b] * t1[b]
            if c == c:
                out[orow, b] = v
            elif fallback:
                out[orow, b] = src[srow, b]
    elif a == a:
        for b in range(nb):
            out[orow, b] = a * t0[b] + bcoef * t1[b]
    elif fallback:
        for b in range(nb):
            out[orow, b] = src[srow, b]


# ---------------------------------------------------------------------------
# Interior outputs.  Outputs with the full centred window share its weights,
# so for them the block's arrays are treated as flat: output q = row*LANES +
# lane takes x[q + xoff + step*e], and one long loop over q does all of them
# (vectorised, set-up costs paid once per offset instead of once per row).
# Indices are unsigned: they are never negative here, and this spares Numba's
# negative-index test, which would stop the vectorisation.
# ---------------------------------------------------------------------------
_u = numba.uint64


@njit(cache=True, error_model="numpy")
def _tap(K, row, e, cnt, base, step, first):
    """Weight row ``row`` at offset ``e`` and its input offset; past ``cnt``: weight 0 on input ``first``."""
    if e < cnt:
        return K[row, e], _u(base + step * e)
    return 0.0, first


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _flat_sums(x, xoff, step, K, KD, row, cnt, qa, qb, T0, T1, need_t1):
    """``T0[q] = sum_{e<cnt} K[row,e] x[q + xoff + step*e]`` (and ``T1`` with
    ``KD``) for ``q`` in ``[qa, qb)``.

    Eight offsets per sweep over ``q``, so that each load and store of the
    sums carries eight multiply-adds (the sweep is then bound by the FMA
    units, not by memory); the last group is padded with zero weights on a
    valid input rather than given sweeps of its own.
    """
    nq = qb - qa
    if nq <= 0:
        return
    ua = _u(qa)
    for i in range(nq):
        T0[_u(i) + ua] = 0.0
    if need_t1:
        for i in range(nq):
            T1[_u(i) + ua] = 0.0
    base = qa + xoff
    e = 0
    while e < cnt:
        s0 = _u(base + step * e)
        k0, _ = _tap(K, row, e, cnt, base, step, s0)
        k1, s1 = _tap(K, row, e + 1, cnt, base, step, s0)
        k2, s2 = _tap(K, row, e + 2, cnt, base, step, s0)
        k3, s3 = _tap(K, row, e + 3, cnt, base, step, s0)
        k4, s4 = _tap(K, row, e + 4, cnt, base, step, s0)
        k5, s5 = _tap(K, row, e + 5, cnt, base, step, s0)
        k6, s6 = _tap(K, row, e + 6, cnt, base, step, s0)
        k7, s7 = _tap(K, row, e + 7, cnt, base, step, s0)
        if need_t1:
            d0, _ = _tap(KD, row, e, cnt, base, step, s0)
            d1, _ = _tap(KD, row, e + 1, cnt, base, step, s0)
            d2, _ = _tap(KD, row, e + 2, cnt, base, step, s0)
            d3, _ = _tap(KD, row, e + 3, cnt, base, step, s0)
            d4, _ = _tap(KD, row, e + 4, cnt, base, step, s0)
            d5, _ = _tap(KD, row, e + 5, cnt, base, step, s0)
            d6, _ = _tap(KD, row, e + 6, cnt, base, step, s0)
            d7, _ = _tap(KD, row, e + 7, cnt, base, step, s0)
            for i in range(nq):
                u = _u(i)
                v0 = x[u + s0]
                v1 = x[u + s1]
                v2 = x[u + s2]
                v3 = x[u + s3]
                v4 = x[u + s4]
                v5 = x[u + s5]
                v6 = x[u + s6]
                v7 = x[u + s7]
                T0[u + ua] += ((k0 * v0 + k1 * v1) + (k2 * v2 + k3 * v3)) + ((k4 * v4 + k5 * v5) + (k6 * v6 + k7 * v7))
                T1[u + ua] += ((d0 * v0 + d1 * v1) + (d2 * v2 + d3 * v3)) + ((d4 * v4 + d5 * v5) + (d6 * v6 + d7 * v7))
        else:
            for i in range(nq):
                u = _u(i)
                T0[u + ua] += (((k0 * x[u + s0] + k1 * x[u + s1]) + (k2 * x[u + s2] + k3 * x[u + s3]))
                               + ((k4 * x[u + s4] + k5 * x[u + s5]) + (k6 * x[u + s6] + k7 * x[u + s7])))
        e += 8


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _flat_moments(rw, xoff, step, K, KD, KDD, row, cnt, qa, qb, S0, S1, S2):
    """Weighted moments of outputs ``[qa, qb)``, as :func:`_flat_sums` with ``K, KD, KDD``
    (four offsets per sweep: three sums already give twelve multiply-adds per store)."""
    nq = qb - qa
    if nq <= 0:
        return
    ua = _u(qa)
    for i in range(nq):
        S0[_u(i) + ua] = 0.0
        S1[_u(i) + ua] = 0.0
        S2[_u(i) + ua] = 0.0
    base = qa + xoff
    e = 0
    while e < cnt:
        s0 = _u(base + step * e)
        k0, _ = _tap(K, row, e, cnt, base, step, s0)
        k1, s1 = _tap(K, row, e + 1, cnt, base, step, s0)
        k2, s2 = _tap(K, row, e + 2, cnt, base, step, s0)
        k3, s3 = _tap(K, row, e + 3, cnt, base, step, s0)
        d0, _ = _tap(KD, row, e, cnt, base, step, s0)
        d1, _ = _tap(KD, row, e + 1, cnt, base, step, s0)
        d2, _ = _tap(KD, row, e + 2, cnt, base, step, s0)
        d3, _ = _tap(KD, row, e + 3, cnt, base, step, s0)
        q0, _ = _tap(KDD, row, e, cnt, base, step, s0)
        q1, _ = _tap(KDD, row, e + 1, cnt, base, step, s0)
        q2, _ = _tap(KDD, row, e + 2, cnt, base, step, s0)
        q3, _ = _tap(KDD, row, e + 3, cnt, base, step, s0)
        for i in range(nq):
            u = _u(i)
            v0 = rw[u + s0]
            v1 = rw[u + s1]
            v2 = rw[u + s2]
            v3 = rw[u + s3]
            S0[u + ua] += (k0 * v0 + k1 * v1) + (k2 * v2 + k3 * v3)
            S1[u + ua] += (d0 * v0 + d1 * v1) + (d2 * v2 + d3 * v3)
            S2[u + ua] += (q0 * v0 + q1 * v1) + (q2 * v2 + q3 * v3)
        e += 4


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _flat_fit(robust, C0, C1, a, bcoef, T0, T1, src, soff, out, qa, qb, need_t1, fallback):
    """``out[q] = c0*T0 + c1*T1`` for ``q`` in ``[qa, qb)``, with the block's own
    coefficients (``robust``) or the plan's ``a, bcoef``.  Where ``c0`` is NaN
    (no weight in the window): ``src[q + soff]`` if ``fallback``, else ``out``
    is left as it is (an extrapolated end, copied from its neighbour later)."""
    ua = _u(qa)
    nq = qb - qa
    if robust:
        us = _u(qa + soff)
        if fallback:
            for i in range(nq):
                u = _u(i)
                c = C0[u + ua]
                v = c * T0[u + ua] + C1[u + ua] * T1[u + ua]
                out[u + ua] = v if c == c else src[u + us]
        else:
            for i in range(nq):
                u = _u(i)
                c = C0[u + ua]
                v = c * T0[u + ua] + C1[u + ua] * T1[u + ua]
                out[u + ua] = v if c == c else out[u + ua]
    elif a != a:
        if fallback:
            us = _u(qa + soff)
            for i in range(nq):
                out[_u(i) + ua] = src[_u(i) + us]
    elif need_t1:
        for i in range(nq):
            u = _u(i) + ua
            out[u] = a * T0[u] + bcoef * T1[u]
    else:
        for i in range(nq):
            u = _u(i) + ua
            out[u] = a * T0[u]


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _flat_coefs(S0, S1, S2, qa, qb, h, deg, rng, C0, C1):
    """:func:`_coef` for flat outputs ``[qa, qb)`` sharing ``h`` and ``rng``, branch-free."""
    fit_slope = h > 0.0 and deg > 0
    thr2 = (0.001 * rng) * (0.001 * rng)
    ua = _u(qa)
    for i in range(qb - qa):
        u = _u(i) + ua
        w = S0[u]
        s1 = S1[u]
        s2 = S2[u]
        det = w * s2 - s1 * s1
        line = fit_slope and det > thr2 * (w * w)
        inv = 1.0 / (det if line else w)
        empty = w <= 0.0
        C0[u] = np.nan if empty else (s2 * inv if line else inv)
        C1[u] = 0.0 if (empty or not line) else -s1 * inv


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _ess_pass(Z, src, plan, robust, C0, C1, out, t0, t1, T0, T1, nb):
    """LOESS of a whole series at every point (trend, low-pass): statsmodels' ``_ess``.

    ``Z`` is the data times the robustness weights, ``src`` the data (kept
    where a window has no weight); ``robust`` picks the block's own
    coefficients ``C0/C1`` over the plan's unit-weight ones.  ``T0/T1`` are
    flat scratch of the block's size, ``t0/t1`` of ``LANES``.
    """
    lo, cnt, hs, K, KD, KDD, pc0, pc1, deg, rng, ia, ib = plan
    L = Z.shape[1]
    if ib > ia:
        need_t1 = robust or pc1[ia] != 0.0
        qa = ia * L
        qb = ib * L
        _flat_sums(Z.reshape(-1), (lo[ia] - ia) * L, L, K, KD, ia, cnt[ia], qa, qb,
                   T0, T1, need_t1)
        _flat_fit(robust, C0.reshape(-1), C1.reshape(-1), pc0[ia], pc1[ia], T0, T1,
                  src.reshape(-1), 0, out.reshape(-1), qa, qb, need_t1, True)
    for m in range(lo.shape[0]):
        if ia <= m < ib:
            continue
        need_t1 = robust or pc1[m] != 0.0
        _window_sums(Z, lo[m], 1, K, KD, m, cnt[m], t0, t1, nb, need_t1)
        _fit_lanes(robust, C0, C1, m, pc0[m], pc1[m], t0, t1, src, m, out, m, True, nb)


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _ess_coefs(RW, plan, C0, C1, s0, s1, s2, S0, S1, S2, nb):
    """The block's coefficients of an ``_ess`` pass under robustness weights ``RW``."""
    lo, cnt, hs, K, KD, KDD, pc0, pc1, deg, rng, ia, ib = plan
    L = RW.shape[1]
    if ib > ia:
        qa = ia * L
        qb = ib * L
        _flat_moments(RW.reshape(-1), (lo[ia] - ia) * L, L, K, KD, KDD, ia, cnt[ia], qa, qb,
                      S0, S1, S2)
        _flat_coefs(S0, S1, S2, qa, qb, hs[ia], deg, rng, C0.reshape(-1), C1.reshape(-1))
    for m in range(lo.shape[0]):
        if ia <= m < ib:
            continue
        _window_moments(RW, lo[m], 1, K, KD, KDD, m, cnt[m], s0, s1, s2, nb)
        _coefs_lanes(s0, s1, s2, hs[m], deg, rng, C0, C1, m, nb)


@njit(cache=True)
def _seasonal_interior(n, p, plan_a, plan_b):
    """Outputs ``[ia, ib)`` whose window is centred in every cycle-subseries (maybe none)."""
    k_a = plan_a[0].shape[0] - 2
    n_a = n - (k_a - 1) * p  # phases with k_a points; the others have k_a - 1
    ia, ib = plan_a[10], plan_a[11]
    if n_a < p:
        ib = min(ib, plan_b[11]) if plan_b[11] > plan_b[10] else ia
    if ib <= ia:
        return 0, 0
    return ia, ib


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _seasonal_pass(Z, src, p, n, plan_a, plan_b, robust, C0, C1, out, T0, T1):
    """Cycle-subseries smoothing (statsmodels' ``_ss``) of the ``p`` phases.

    Phase ``j`` is rows ``j, j + p, ...`` of ``src`` (``n`` rows); its output
    ``m`` goes to row ``m*p + j`` of ``out`` (``n + 2p`` rows: each subseries
    smooth extended by one cycle at both ends).  Phases ``j < n_a`` have
    ``ceil(n/p)`` points (``plan_a``), the others one fewer (``plan_b``).
    Output ``m`` has the same weights in every phase of a group, and the rows
    ``m*p + j`` of a group are consecutive: each output ``m`` of a group is
    one flat stencil, and the outputs centred in every phase one more.
    """
    L = Z.shape[1]
    k_a = plan_a[0].shape[0] - 2
    n_a = n - (k_a - 1) * p
    zf = Z.reshape(-1)
    sf = src.reshape(-1)
    of = out.reshape(-1)
    c0f = C0.reshape(-1)
    c1f = C1.reshape(-1)
    ia, ib = _seasonal_interior(n, p, plan_a, plan_b)
    if ib > ia:
        lo, cnt, hs, K, KD, KDD, pc0, pc1, deg, rng, _, _ = plan_a
        need_t1 = robust or pc1[ia] != 0.0
        qa = ia * p * L
        qb = ib * p * L
        # output row m*p + j reads rows (lo[m] + e)*p + j, and keeps row (m - 1)*p + j
        _flat_sums(zf, (lo[ia] - ia) * p * L, p * L, K, KD, ia, cnt[ia], qa, qb, T0, T1, need_t1)
        _flat_fit(robust, c0f, c1f, pc0[ia], pc1[ia], T0, T1, sf, -p * L, of, qa, qb, need_t1, True)
    for g in range(2):
        plan = plan_a if g == 0 else plan_b
        j0 = 0 if g == 0 else n_a
        j1 = n_a if g == 0 else p
        if j1 <= j0:
            continue
        lo, cnt, hs, K, KD, KDD, pc0, pc1, deg, rng, _, _ = plan
        k = lo.shape[0] - 2
        for m in range(k + 2):
            if ia <= m < ib:
                continue
            need_t1 = robust or pc1[m] != 0.0
            qa = (m * p + j0) * L
            qb = (m * p + j1) * L
            _flat_sums(zf, (lo[m] - m) * p * L, p * L, K, KD, m, cnt[m], qa, qb, T0, T1, need_t1)
            # an empty window keeps the data inside the subseries; at the
            # extrapolated ends it takes the neighbouring fit (below, once final)
            _flat_fit(robust, c0f, c1f, pc0[m], pc1[m], T0, T1, sf, -p * L, of, qa, qb, need_t1,
                      1 <= m <= k)
        for j in range(j0, j1):
            r0 = j
            rk = k * p + j
            rk1 = (k + 1) * p + j
            for b in range(L):
                if not (C0[r0, b] == C0[r0, b] if robust else pc0[0] == pc0[0]):
                    out[r0, b] = out[p + j, b]
                if not (C0[rk1, b] == C0[rk1, b] if robust else pc0[k + 1] == pc0[k + 1]):
                    out[rk1, b] = out[rk, b]


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _seasonal_coefs(RW, p, n, plan_a, plan_b, C0, C1, S0, S1, S2):
    """The block's coefficients of the cycle-subseries pass under ``RW`` (layout of :func:`_seasonal_pass`)."""
    L = RW.shape[1]
    k_a = plan_a[0].shape[0] - 2
    n_a = n - (k_a - 1) * p
    rf = RW.reshape(-1)
    c0f = C0.reshape(-1)
    c1f = C1.reshape(-1)
    ia, ib = _seasonal_interior(n, p, plan_a, plan_b)
    if ib > ia:
        lo, cnt, hs, K, KD, KDD, pc0, pc1, deg, rng, _, _ = plan_a
        _flat_moments(rf, (lo[ia] - ia) * p * L, p * L, K, KD, KDD, ia, cnt[ia], ia * p * L, ib * p * L,
                      S0, S1, S2)
        for m in range(ia, ib):
            # the slope test scales with the subseries length: k_a or k_a - 1
            _flat_coefs(S0, S1, S2, m * p * L, (m * p + n_a) * L, hs[ia], deg, plan_a[9], c0f, c1f)
            _flat_coefs(S0, S1, S2, (m * p + n_a) * L, (m + 1) * p * L, hs[ia], deg, plan_b[9], c0f, c1f)
    for g in range(2):
        plan = plan_a if g == 0 else plan_b
        j0 = 0 if g == 0 else n_a
        j1 = n_a if g == 0 else p
        if j1 <= j0:
            continue
        lo, cnt, hs, K, KD, KDD, pc0, pc1, deg, rng, _, _ = plan
        for m in range(lo.shape[0]):
            if ia <= m < ib:
                continue
            qa = (m * p + j0) * L
            qb = (m * p + j1) * L
            _flat_moments(rf, (lo[m] - m) * p * L, p * L, K, KD, KDD, m, cnt[m], qa, qb, S0, S1, S2)
            _flat_coefs(S0, S1, S2, qa, qb, hs[m], deg, rng, c0f, c1f)


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _moving_average(X, n, length, A):
    """statsmodels' ``_ma`` per lane: running means of ``length`` rows of ``X[:n]`` into ``A[:n-length+1]``.

    The running sums are kept raw in ``A`` -- row ``j`` is row ``j - 1`` plus
    the row entering minus the row leaving, a recurrence at a distance of
    one row (``LANES`` values), which vectorises over the lanes -- and scaled
    at the end.  Multiplying by ``1/length`` rather than dividing differs from
    statsmodels by at most an ulp.
    """
    L = LANES  # a compile-time constant: the recurrence distance is known to LLVM
    newn = n - length + 1
    x = X.reshape(-1)
    a = A.reshape(-1)
    for b in range(L):
        a[b] = 0.0
    for i in range(length):
        for b in range(L):
            a[b] += x[i * L + b]
    # a[q] = a[q - L] + x[q + (length - 1) L] - x[q - L] for rows 1 .. newn - 1
    enter = _u((length - 1) * L)
    for i in range(L, newn * L):
        u = _u(i)
        a[u] = a[u - _u(LANES)] + (x[u + enter] - x[u - _u(LANES)])
    rlen = 1.0 / float(length)
    for i in range(newn * L):
        a[_u(i)] *= rlen


@njit(cache=True, error_model="numpy")
def _select(a, n, k, buf0, buf1):
    """The ``k``-th smallest (0-based) of ``a[:n]``; ``a`` is left as it is.

    Quickselect with a branch-free three-way partition: each value is written
    to the next free slot at both ends of a buffer and only the cursor of its
    side moves, so values equal to the pivot are dropped (they are all the
    pivot) and no branch depends on the data -- several times faster than a
    swapping partition on noisy residuals, where half the branches mispredict.
    ``buf0`` and ``buf1`` (at least ``n`` long) take turns as the buffer.
    """
    which = 0  # where the candidates are: 0 in a, 1 in buf0, 2 in buf1
    base = 0
    m = n
    while m > 12:
        src = a if which == 0 else (buf0 if which == 1 else buf1)
        dst = buf1 if which == 1 else buf0
        x0 = src[base]
        x1 = src[base + m // 2]
        x2 = src[base + m - 1]
        pivot = max(min(x0, x1), min(max(x0, x1), x2))  # median of three
        f = _u(0)
        g = _u(m - 1)
        ub = _u(base)
        for i in range(m):
            v = src[_u(i) + ub]
            dst[f] = v
            dst[g] = v
            f += _u(v < pivot)
            g -= _u(v > pivot)
        f = numba.int64(f)
        n_gt = m - 1 - numba.int64(g)
        if k < f:
            m = f
            base = 0
        elif k >= m - n_gt:
            k -= m - n_gt
            base = m - n_gt
            m = n_gt
        else:
            return pivot
        which = 2 if which == 1 else 1
    # a few candidates left: selection sort up to position k, in the free buffer
    src = a if which == 0 else (buf0 if which == 1 else buf1)
    tmp = buf1 if which == 1 else buf0
    for i in range(m):
        tmp[i] = src[base + i]
    for i in range(k + 1):
        j_min = i
        for j in range(i + 1, m):
            if tmp[j] < tmp[j_min]:
                j_min = j
        t = tmp[i]
        tmp[i] = tmp[j_min]
        tmp[j_min] = t
    return tmp[k]


@njit(cache=True, error_model="numpy")
def _median_pair(a, n, buf0, buf1, guess):
    """Values of order ``n - n//2 - 1`` and ``n//2`` of ``a[:n]`` (one value twice when ``n`` is odd).

    ``guess`` is the previous robustness iteration's median (NaN at first):
    the median moves little between iterations, so one branch-free pass keeps
    the values within 5 % of it and counts those below; when both orders fall
    among the kept values, sorting those few gives them.  Otherwise (or
    without a guess) :func:`_select` finds the upper one and one more pass the
    largest value below it.
    """
    k1 = n // 2
    k0 = n - k1 - 1
    if math.isfinite(guess) and guess > 0.0:
        lo = 0.95 * guess
        hi = 1.05 * guess
        below = 0
        c = 0
        for i in range(n):
            v = a[i]
            buf0[c] = v
            below += 1 if v < lo else 0
            c += 1 if (v >= lo and v <= hi) else 0
        if below <= k0 and k1 < below + c:
            # insertion sort of the few kept values
            for i in range(1, c):
                v = buf0[i]
                j = i - 1
                while j >= 0 and buf0[j] > v:
                    buf0[j + 1] = buf0[j]
                    j -= 1
                buf0[j + 1] = v
            return buf0[k0 - below], buf0[k1 - below]
    top_value = _select(a, n, k1, buf0, buf1)
    if k0 == k1:
        return top_value, top_value
    # order k1 - 1: the largest value below the upper one, unless that is tied there
    count = 0
    top = -np.inf
    for i in range(n):
        v = a[i]
        is_below = v < top_value
        count += 1 if is_below else 0
        top = max(top, v if is_below else -np.inf)
    return (top if count == k1 else top_value), top_value


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _robustness_weights(Y, S, T, RW, n, scratch, cmad, nb):
    """statsmodels' ``_rwts`` per lane: bisquare weights of the residuals, scaled by 6 x their median.

    The median of the ``n`` absolute residuals is the mean of the values of
    order ``n//2`` and ``n - n//2 - 1`` (one value when ``n`` is odd), as in
    the corrected NETLIB code; every weight is 1 when it is 0.  ``cmad``
    holds each lane's previous ``6 x median`` (NaN at first), a pivot guess
    for the selection, and receives the new one.  ``scratch``: ``3 n`` values.
    """
    for i in range(n):
        for b in range(nb):
            RW[i, b] = abs(Y[i, b] - (T[i, b] + S[i, b]))
    col = scratch[:n]
    buf0 = scratch[n:2 * n]
    buf1 = scratch[2 * n:3 * n]
    for b in range(nb):
        for i in range(n):
            col[i] = RW[i, b]
        lo, hi = _median_pair(col, n, buf0, buf1, cmad[b] / 6.0)
        cmad[b] = 3.0 * (hi + lo)
    for b in range(nb):
        scratch[b] = 1.0 / cmad[b]  # multiplying by it differs from dividing by at most an ulp
    for i in range(n):
        for b in range(nb):
            c = cmad[b]
            r = RW[i, b]
            q = r * scratch[b]
            q = 1.0 - q * q
            w = q * q
            w = 1.0 if r <= 0.001 * c else w
            w = 0.0 if r > 0.999 * c else w
            RW[i, b] = 1.0 if c == 0.0 else w


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _stl_block(Y, S, T, RW, n, p, inner_iter, outer_iter, plans, work, nb):
    """Robust STL of the ``nb`` lanes of a block: statsmodels' ``STL.fit`` / ``_onestp``.

    ``Y`` (n, LANES) holds the series; writes the seasonal ``S`` and trend
    ``T`` components and the final robustness weights ``RW``.
    """
    plan_a, plan_b, trend_plan, low_plan = plans
    D, Z, C, A, B, LP, C0s, C1s, C0t, C1t, v0, v1, v2, cmad, scratch, F0, F1, F2 = work
    for i in range(n):
        for b in range(nb):
            S[i, b] = 0.0
            T[i, b] = 0.0
            RW[i, b] = 1.0
    for b in range(nb):
        cmad[b] = np.nan  # no median yet: the first selection picks its own pivots
    userw = False
    it = 0
    while True:
        for _ in range(inner_iter):
            # cycle-subseries smoothing of the detrended series -> C (n + 2p rows)
            for i in range(n):
                for b in range(nb):
                    d = Y[i, b] - T[i, b]
                    D[i, b] = d
                    Z[i, b] = RW[i, b] * d if userw else d
            _seasonal_pass(Z, D, p, n, plan_a, plan_b, userw, C0s, C1s, C, F0, F1)
            # low-pass filter of C: moving averages of p, p and 3, then LOESS
            _moving_average(C, n + 2 * p, p, A)
            _moving_average(A, n + p + 1, p, B)
            _moving_average(B, n + 2, 3, A)
            _ess_pass(A, A, low_plan, False, C0t, C1t, LP, v0, v1, F0, F1, nb)
            for i in range(n):
                for b in range(nb):
                    s = C[p + i, b] - LP[i, b]
                    S[i, b] = s
                    d = Y[i, b] - s
                    D[i, b] = d
                    Z[i, b] = RW[i, b] * d if userw else d
            # trend: LOESS of the deseasonalised series
            _ess_pass(Z, D, trend_plan, userw, C0t, C1t, T, v0, v1, F0, F1, nb)
        it += 1
        if it > outer_iter:
            break
        _robustness_weights(Y, S, T, RW, n, scratch, cmad, nb)
        userw = True
        # the fit coefficients depend on the weights only: once per outer iteration
        _seasonal_coefs(RW, p, n, plan_a, plan_b, C0s, C1s, F0, F1, F2)
        _ess_coefs(RW, trend_plan, C0t, C1t, v0, v1, v2, F0, F1, F2, nb)


@njit(cache=True, fastmath=_FAST, error_model="numpy", nogil=True)
def _stl_chunk(y, season, trend, rw, start, stop, p, seasonal, trend_len, low_pass,
               seasonal_deg, trend_deg, low_pass_deg, inner_iter, outer_iter):
    """STL of rows ``start .. stop-1`` of ``y``, block by block, on one thread."""
    n = y.shape[1]
    L = LANES
    k_a = (n - 1) // p + 1  # cycle-subseries have k_a or k_a - 1 points
    plans = (_build_plan(k_a, seasonal, seasonal_deg, True),
             _build_plan(max(k_a - 1, 1), seasonal, seasonal_deg, True),
             _build_plan(n, trend_len, trend_deg, False),
             _build_plan(n, low_pass, low_pass_deg, False))
    m = n + 2 * p
    work = (np.empty((n, L)), np.empty((n, L)), np.empty((m, L)), np.empty((m, L)),
            np.empty((m, L)), np.empty((n, L)), np.empty((m, L)), np.empty((m, L)),
            np.empty((n, L)), np.empty((n, L)), np.empty(L), np.empty(L), np.empty(L), np.empty(L),
            np.empty(3 * n), np.empty(m * L), np.empty(m * L), np.empty(m * L))
    Y = np.empty((n, L))
    S = np.empty((n, L))
    T = np.empty((n, L))
    RW = np.empty((n, L))
    for c0 in range(start, stop, L):
        nb = min(L, stop - c0)
        for i in range(n):
            for b in range(nb):
                Y[i, b] = y[c0 + b, i]
        _stl_block(Y, S, T, RW, n, p, inner_iter, outer_iter, plans, work, nb)
        for b in range(nb):
            for i in range(n):
                season[c0 + b, i] = S[i, b]
                trend[c0 + b, i] = T[i, b]
                rw[c0 + b, i] = RW[i, b]


def stl(y, period, seasonal, trend, low_pass, seasonal_deg, trend_deg, low_pass_deg,
        inner_iter, outer_iter):
    """Robust STL of every row of ``y`` for one period, as ``statsmodels.tsa.seasonal.STL``.

    Parameters
    ----------
    y : numpy.ndarray, float64, shape (n_ctx, n_time)
        Complete series (no NaN), one per row.
    period : int
        Period of the seasonal component (``2 <= period``, ``2*period <= n_time``).
    seasonal, trend, low_pass : int
        Odd lengths (>= 3) of the seasonal, trend and low-pass LOESS windows.
    seasonal_deg, trend_deg, low_pass_deg : {0, 1}
        Degrees of the local polynomials.
    inner_iter : int
        Inner-loop passes per robustness iteration (>= 1).
    outer_iter : int
        Robustness (bisquare re-weighting) iterations (>= 0).

    Returns
    -------
    season, trend, weights : numpy.ndarray, float64, shape (n_ctx, n_time)
        Seasonal and trend components and the final robustness weights.
    """
    y = np.ascontiguousarray(y, dtype=np.float64)
    season = np.empty_like(y)
    trend_out = np.empty_like(y)
    rw = np.empty_like(y)
    n_ctx = y.shape[0]
    args = (int(period), int(seasonal), int(trend), int(low_pass), int(seasonal_deg),
            int(trend_deg), int(low_pass_deg), int(inner_iter), int(outer_iter))
    # The kernel releases the GIL: plain threads, one contiguous chunk of whole
    # blocks each, run it in parallel (cheaper to compile than a prange loop).
    n_blocks = (n_ctx + LANES - 1) // LANES
    n_threads = max(1, min(numba.get_num_threads(), n_blocks))
    bounds = [min(n_ctx, (t * n_blocks // n_threads) * LANES) for t in range(n_threads + 1)]
    if n_threads == 1:
        if n_ctx:
            _stl_chunk(y, season, trend_out, rw, 0, n_ctx, *args)
        return season, trend_out, rw
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        jobs = [pool.submit(_stl_chunk, y, season, trend_out, rw, bounds[t], bounds[t + 1], *args)
                for t in range(n_threads) if bounds[t + 1] > bounds[t]]
        for job in jobs:
            job.result()
    return season, trend_out, rw


@njit(cache=True, nogil=True)
def _fill_gaps_batch(x, out, n_obs):
    n_ctx, n = x.shape
    for c in range(n_ctx):
        row = x[c]
        o = out[c]
        prev = -1
        count = 0
        for t in range(n):
            v = row[t]
            if math.isnan(v):
                continue
            count += 1
            o[t] = v
            if prev < 0:
                for u in range(t):  # before the first observation: hold it
                    o[u] = v
            elif t - prev > 1:
                # linear interpolation, with numpy.interp's arithmetic
                slope = (v - row[prev]) / (t - prev)
                for u in range(prev + 1, t):
                    o[u] = slope * (u - prev) + row[prev]
            prev = t
        n_obs[c] = count
        if count == 0:
            for t in range(n):
                o[t] = np.nan
        else:
            for u in range(prev + 1, n):  # after the last observation: hold it
                o[u] = row[prev]


def fill_gaps(x):
    """Fill the NaN of every row: linear interpolation in time between observations,
    the first / last observation held before / after them (``numpy.interp`` per row).

    Parameters
    ----------
    x : numpy.ndarray, float64, shape (n_ctx, n_time)

    Returns
    -------
    filled : numpy.ndarray, float64, shape (n_ctx, n_time)
        Rows without any observation stay all-NaN.
    n_obs : numpy.ndarray, int64, shape (n_ctx,)
        Observed (non-NaN) points per row.
    """
    x = np.ascontiguousarray(x, dtype=np.float64)
    out = np.empty_like(x)
    n_obs = np.zeros(x.shape[0], np.int64)
    if x.size:
        _fill_gaps_batch(x, out, n_obs)
    return out, n_obs
