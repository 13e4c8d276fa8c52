"""Batched STL (Cleveland et al. 1990) on the GPU: CuPy launching ``cuda_kernels/stl.cu``.

Same signature as :mod:`tsanomaly.kernels.stl_cpu`, on CuPy arrays.  One
thread runs the whole STL of one context and one launch covers the batch
(contexts are chunked only to bound the memory of the work arrays).  Inside
the kernel the arrays are time-major -- element ``t`` of context ``c`` at
``t * n_ctx + c`` -- so that the threads of a warp read consecutive
addresses; this module transposes in and out.  The arithmetic is in
``cuda_kernels/stl.cuh`` (``__host__ __device__``), the same as the CPU
kernel's, and is checked on the CPU by a host harness in the tests.

Importing this module needs neither CuPy nor a GPU; calling it does.
"""
from __future__ import annotations

import functools

import numpy as np

from tsanomaly import backend

__all__ = ["stl", "fill_gaps"]

_THREADS = 128
# Fraction of the free device memory the work arrays of one chunk may take.
_MEMORY_FRACTION = 0.5


def _plan_size(k: int, length: int, extrapolate: bool) -> int:
    """Doubles in a packed plan: mirrors ``stl_plan_size`` in stl.cuh."""
    m = k + 2 if extrapolate else k
    w = min(length, k) + 1
    return 4 + 5 * m + 3 * m * w


def _work_rows(n: int, p: int) -> int:
    """Rows of per-context work area: mirrors ``stl_work_rows`` in stl.cuh."""
    return 6 * n + 5 * (n + 2 * p) + 2 * n


def _plan_layout(n: int, p: int, seasonal: int, trend: int, low_pass: int):
    """Sizes and offsets (in doubles, Python ints) of the four packed plans, in the order
    seasonal (ceil(n/p) points), seasonal (one point fewer), trend, low-pass.

    The offsets pass 2**31 for long series (minute data with a daily period: the low-pass
    plan's from n ~ 262,800 points on), so the kernels take them as 64-bit integers.
    """
    k_a = (n - 1) // p + 1
    sizes = (
        _plan_size(k_a, seasonal, True),
        _plan_size(max(k_a - 1, 1), seasonal, True),
        _plan_size(n, trend, False),
        _plan_size(n, low_pass, False),
    )
    offsets = (0, sizes[0], sizes[0] + sizes[1], sizes[0] + sizes[1] + sizes[2])
    return sizes, offsets


# A few plans, not 64: a plan lives on the device while cached, and one for a long series is large
# (n = 262,800 with a trend window of 2,751: about 2.2e9 doubles, 17 GB). A job needs one per shape.
@functools.lru_cache(maxsize=4)
def _plans(device_id: int, n, p, seasonal, trend, low_pass, seasonal_deg, trend_deg, low_pass_deg):
    """The four LOESS plans on the device, built by the ``stl_build_plans`` kernel."""
    cp = backend.array_module("cuda")
    sizes, offsets = _plan_layout(n, p, seasonal, trend, low_pass)
    with cp.cuda.Device(device_id):
        plans = cp.zeros(sum(sizes), dtype=cp.float64)
        kernel = backend.load_cuda_module("stl.cu").get_function("stl_build_plans")
        args = [n, p, seasonal, trend, low_pass, seasonal_deg, trend_deg, low_pass_deg]
        kernel((1,), (1,), (plans, *[np.int32(a) for a in args], *[np.int64(o) for o in offsets]))
    return plans, offsets


def _chunk_size(n_ctx: int, bytes_per_context: int) -> int:
    free = backend.free_device_bytes()
    return max(1, min(n_ctx, int(free * _MEMORY_FRACTION) // max(1, bytes_per_context)))


def stl(y, period, seasonal, trend, low_pass, seasonal_deg, trend_deg, low_pass_deg,
        inner_iter, outer_iter):
    """Robust STL of every row of ``y`` for one period, as ``statsmodels.tsa.seasonal.STL``.

    Parameters
    ----------
    y : cupy.ndarray, float64, shape (n_ctx, n_time)
        Complete series (no NaN), one per row.
    period, seasonal, trend, low_pass, seasonal_deg, trend_deg, low_pass_deg, inner_iter, outer_iter
        As :func:`tsanomaly.kernels.stl_cpu.stl`.

    Returns
    -------
    season, trend, weights : cupy.ndarray, float64, shape (n_ctx, n_time)

    Notes
    -----
    A chunk of contexts that does not fit in device memory is halved and
    retried, so large batches run in several launches rather than failing.
    """
    cp = backend.array_module("cuda")
    y = cp.ascontiguousarray(cp.asarray(y, dtype=cp.float64))  # cp.ascontiguousarray refuses a NumPy array
    n_ctx, n = y.shape
    season = cp.empty_like(y)
    trend_out = cp.empty_like(y)
    rw = cp.empty_like(y)
    if n_ctx == 0:
        return season, trend_out, rw
    p = int(period)
    plans, (off_a, off_b, off_t, off_l) = _plans(
        cp.cuda.Device().id, n, p, int(seasonal), int(trend), int(low_pass),
        int(seasonal_deg), int(trend_deg), int(low_pass_deg),
    )
    kernel = backend.load_cuda_module("stl.cu").get_function("stl_batch")
    per_context = 8 * (_work_rows(n, p) + 5 * n)
    chunk = _chunk_size(n_ctx, per_context)
    start = 0
    while start < n_ctx:
        stop = min(n_ctx, start + chunk)
        m = stop - start
        try:
            yt = cp.ascontiguousarray(y[start:stop].T)  # (n, m): time-major
            st = cp.empty_like(yt)
            tt = cp.empty_like(yt)
            wt = cp.empty_like(yt)
            work = cp.empty((_work_rows(n, p), m), dtype=cp.float64)
        except cp.cuda.memory.OutOfMemoryError:
            if chunk == 1:
                raise
            cp.get_default_memory_pool().free_all_blocks()  # as the matrix profile does before retrying
            chunk = max(1, chunk // 2)
            continue
        blocks = (m + _THREADS - 1) // _THREADS
        kernel(
            (blocks,), (_THREADS,),
            (yt, st, tt, wt, work, plans, np.int64(off_a), np.int64(off_b), np.int64(off_t),
             np.int64(off_l), np.int32(m), np.int32(n), np.int32(p), np.int32(inner_iter),
             np.int32(outer_iter)),
        )
        season[start:stop] = st.T
        trend_out[start:stop] = tt.T
        rw[start:stop] = wt.T
        del yt, st, tt, wt, work
        start = stop
    return season, trend_out, rw


def fill_gaps(x):
    """Fill the NaN of every row (linear interpolation, ends held), as :func:`tsanomaly.kernels.stl_cpu.fill_gaps`.

    Parameters
    ----------
    x : cupy.ndarray, float64, shape (n_ctx, n_time)

    Returns
    -------
    filled : cupy.ndarray, float64, shape (n_ctx, n_time)
    n_obs : cupy.ndarray, int64, shape (n_ctx,)
    """
    cp = backend.array_module("cuda")
    x = cp.ascontiguousarray(cp.asarray(x, dtype=cp.float64))  # cp.ascontiguousarray refuses a NumPy array
    n_ctx, n = x.shape
    n_obs = cp.zeros(n_ctx, dtype=cp.int64)
    if x.size == 0:
        return cp.empty_like(x), n_obs
    xt = cp.ascontiguousarray(x.T)
    out = cp.empty_like(xt)
    kernel = backend.load_cuda_module("stl.cu").get_function("stl_fill_gaps_batch")
    blocks = (n_ctx + _THREADS - 1) // _THREADS
    kernel((blocks,), (_THREADS,), (xt, out, n_obs, np.int32(n_ctx), np.int32(n)))
    return cp.ascontiguousarray(out.T), n_obs
