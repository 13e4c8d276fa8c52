"""Matrix profile on the CPU: Numba, parallel over diagonal blocks (or over contexts).

The same numeric method as the CUDA kernels (``cuda_kernels/matrix_profile.cuh``):
the distance matrix is walked along its diagonals with the mean-centred
covariance recurrence of SCAMP (Zimmerman et al. 2019),

    QT[i, j] = QT[i-1, j-1] + df[i] dg[j] + df[j] dg[i],

restarted from an exact dot product every ``tile_rows`` rows, wherever a
diagonal enters its valid range, and at the rows and columns of *restart
windows* (where the windows' norm has fallen below 1/8 of its recent largest
value, e.g. after a burst: see the header), and each cell gives ``u = 1 - rho``
(``d = sqrt(2 m u)``) through precomputed inverse norms. Edge cases are folded
into per-window terms (``h``: 0, 0.5 for constant windows, -inf for windows
with NaN/inf) so the inner loop has no branches; see the header for the rules.
Plain Euclidean distances (``normalize=False``) only change those terms (window
means 0, ``inv = 1/sqrt(m)``, ``h = 1/2 - ||x||^2 / (2 m)``): the loops are shared.

Layout of the work: a block of ``tile_diags`` adjacent diagonals is walked row
by row; at each row one fused, vectorised loop advances every lane (diagonal),
folds each cell into the column minima (the left profile of the later window)
and reduces the row minimum (the right profile of the earlier one). Minima are
the GPU's 64-bit keys (``mp::pack_key``: u's bits over the index), so a minimum
is an argmin in one integer instruction, ties (equal keys) go to the smaller
index, and the CPU and GPU choose neighbours by the same rule -- on values that
each rounds its own way (the GPU fuses multiply-adds), so among windows at
near-equal (or exactly equal) true distances the two may choose differently. The distance to each chosen
neighbour is then recomputed from the windows' differences (``mp::pair_distance``).
One long series: threads take diagonal blocks (balanced by cell count) and keep
private minima merged at the end. Many series: threads take whole contexts.
Results do not depend on the number of threads or the block size.

All inputs are validated by :mod:`tsanomaly.detectors.matrix_profile`; this
module only computes. :func:`join` has the same signature as
:func:`tsanomaly.kernels.mp_gpu.join`.
"""
from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

__all__ = ["join", "TILE_ROWS", "TILE_DIAGS"]

#: Rows between exact restarts of the recurrence (the GPU's MP_TILE_ROWS).
TILE_ROWS = 2048
#: Diagonals walked together; their per-lane arrays stay in the L1 cache.
TILE_DIAGS = 512
#: Restart where a window's norm is below 1/KAPPA of the largest since the last restart (MP_KAPPA).
KAPPA = 8.0

_JIT = dict(cache=True, boundscheck=False, error_model="numpy")
_EMPTY = np.int64(0x7FFFFFFFFFFFFFFF)  # no candidate yet: above every key


@intrinsic
def _key_high(typingctx, u, keep):
    """The value part of a key (mp::pack_key) as an int64, before the index is or-ed in.

    float64: the bits of u with the index bits cleared (``& keep``); float32: the 32
    bits of u in the upper half. Typed per precision, so neither pays for the other's step.
    """
    if keep != types.int64:
        return None
    if u == types.float64:
        def codegen(context, builder, signature, args):
            return builder.and_(builder.bitcast(args[0], ir.IntType(64)), args[1])
    elif u == types.float32:
        def codegen(context, builder, signature, args):
            wide = builder.zext(builder.bitcast(args[0], ir.IntType(32)), ir.IntType(64))
            return builder.shl(wide, ir.Constant(ir.IntType(64), 32))
    else:
        return None
    return types.int64(u, keep), codegen


# ---------------------------------------------------------------------------- preparation
@njit(**_JIT)
def _fill_row(row, out):
    """Each NaN/inf replaced by the previous finite value (the first finite one before any).

    Windows that contain such points are flagged and never compared; the fill only
    keeps the recurrence terms (df, dg) of neighbouring windows of the data's own
    size, where a 0 in a series of large values would cost precision.
    """
    last = 0.0
    for t in range(row.shape[0]):  # the first finite value fills the leading gap
        if np.isfinite(row[t]):
            last = row[t]
            break
    for t in range(row.shape[0]):
        v = row[t]
        if np.isfinite(v):
            last = v
        out[t] = last


@njit(parallel=True, **_JIT)
def _fill_parallel(raw):
    out = np.empty_like(raw)
    for c in prange(raw.shape[0]):
        _fill_row(raw[c], out[c])
    return out


@njit(**_JIT)
def _fill_serial(raw):
    out = np.empty_like(raw)
    for c in range(raw.shape[0]):
        _fill_row(raw[c], out[c])
    return out


def _fill_nonfinite(raw):
    """Row-wise fill of NaN/inf (see _fill_row); threads only for several rows, as waking the
    thread pool costs more than one row's work."""
    return _fill_parallel(raw) if raw.shape[0] > 1 else _fill_serial(raw)


@njit(**_JIT)
def _context_stats(xr, rr, m, df, dg, inv, h, mu, flag, normalize):
    """Per-window terms of one series; mirrors ``mp::window_stats`` and ``mp::restart_flags``
    of the CUDA header. Restart windows get h = -0 as on the GPU, and flag = True.

    ``normalize=False`` (plain Euclidean distance): the same terms with every window mean
    taken as 0, ``inv = 1/sqrt(m)`` and ``h = 1/2 - ||x_w||^2 / (2 m)``, so that the
    unchanged cell formula gives ``u = d^2 / (2 m)``; no restart windows (see the header)."""
    n = xr.shape[0]
    nw = n - m + 1
    norm = np.empty(nw)
    # Runs of non-finite and of equal raw values, so validity and constancy cost O(1) per window.
    bad_before = np.zeros(n + 1, dtype=np.int64)
    for t in range(n):
        bad_before[t + 1] = bad_before[t] + (0 if np.isfinite(rr[t]) else 1)
    same_until = np.empty(n, dtype=np.int64)  # last index of the run of equal values starting at t
    same_until[n - 1] = n - 1
    for t in range(n - 2, -1, -1):
        same_until[t] = same_until[t + 1] if rr[t] == rr[t + 1] else t
    prev_mu = 0.0
    for w in range(nw):
        s = 0.0
        for p in range(m):
            s += xr[w + p]
        mean = s / m if normalize else 0.0
        ss = 0.0
        for p in range(m):
            d = xr[w + p] - mean
            ss += d * d
        finite = bad_before[w + m] == bad_before[w]
        constant = same_until[w] >= w + m - 1
        mu[w] = mean
        df[w] = 0.0
        dg[w] = 0.0
        if w > 0:
            df[w] = (xr[w + m - 1] - xr[w - 1]) * 0.5
            dg[w] = (xr[w + m - 1] - mean) + (xr[w - 1] - prev_mu)
        prev_mu = mean
        norm[w] = np.sqrt(ss)
        inv[w] = 0.0
        flag[w] = False
        if not finite:
            h[w] = -np.inf
        elif not normalize:
            h[w] = 0.5 - ss / (2.0 * m)
            inv[w] = 1.0 / np.sqrt(m)
        elif constant or ss <= 0.0:
            h[w] = 0.5
        else:
            h[w] = 0.0
            inv[w] = 1.0 / np.sqrt(ss)
    if not normalize:
        return
    largest = 0.0
    for r in range(1, nw):
        largest = max(largest, norm[r - 1])
        if h[r] == 0.0 and largest > KAPPA * norm[r]:
            flag[r] = True
            h[r] = -0.0
            largest = 0.0


@njit(parallel=True, **_JIT)
def _stats_parallel(x, raw, m, df, dg, inv, h, mu, flag, normalize):
    for c in prange(x.shape[0]):
        _context_stats(x[c], raw[c], m, df[c], dg[c], inv[c], h[c], mu[c], flag[c], normalize)


@njit(**_JIT)
def _stats_serial(x, raw, m, df, dg, inv, h, mu, flag, normalize):
    for c in range(x.shape[0]):
        _context_stats(x[c], raw[c], m, df[c], dg[c], inv[c], h[c], mu[c], flag[c], normalize)


def _window_stats(x, raw, m, normalize):
    """df, dg, inv, h, mu (float64) and the restart flags (bool), each (n_contexts, n_windows)."""
    n_ctx, nw = x.shape[0], x.shape[1] - m + 1
    df, dg, inv, h, mu = (np.empty((n_ctx, nw)) for _ in range(5))
    flag = np.empty((n_ctx, nw), dtype=np.bool_)
    (_stats_parallel if n_ctx > 1 else _stats_serial)(x, raw, m, df, dg, inv, h, mu, flag, bool(normalize))
    return df, dg, inv, h, mu, flag


class _Prepared:
    """Window terms of a batch of series in the working precision.

    ``terms``: df, dg, inv, h, x_hi, x_lo, mu_hi, mu_lo, each (n_contexts, length);
    in float32 the series and means are split into hi + lo parts for the exact
    restarts, in float64 the lo arrays are empty.
    """

    def __init__(self, T, m, dtype, normalize=True):
        raw = np.ascontiguousarray(T, dtype=np.float64)
        x = _fill_nonfinite(raw)
        df, dg, inv, h, mu, flag = _window_stats(x, raw, m, normalize)
        self.n_windows = df.shape[1]
        # flags: restart windows; next_flag[j]: first restart window >= j (n_windows if none).
        self.flags = (flag, _next_flag(flag))
        if dtype == np.float64:
            empty = np.zeros((raw.shape[0], 0))
            self.terms = (df, dg, inv, h, x, empty, mu, empty)
        else:
            x_hi = x.astype(np.float32)
            mu_hi = mu.astype(np.float32)
            self.terms = (
                df.astype(np.float32),
                dg.astype(np.float32),
                inv.astype(np.float32),
                h.astype(np.float32),
                x_hi,
                (x - x_hi).astype(np.float32),
                mu_hi,
                (mu - mu_hi).astype(np.float32),
            )

    def context(self, c):
        return tuple(np.ascontiguousarray(a[c]) for a in self.terms)


@njit(**_JIT)
def _next_flag(flag):
    n_ctx, nw = flag.shape
    out = np.empty((n_ctx, nw + 1), dtype=np.int64)
    for c in range(n_ctx):
        out[c, nw] = nw
        for j in range(nw - 1, -1, -1):
            out[c, j] = j if flag[c, j] else out[c, j + 1]
    return out


# ---------------------------------------------------------------------------- inner loops
# Array positions in the loops below are unsigned (np.uint64): with signed indices Numba
# must allow for negative (wrap-around) indexing, which turns contiguous loads into
# gathers and stops LLVM from vectorising.
@njit(**_JIT)
def _restart(qt, A, B, i, j0, b0, b1, m, use_lo, zero):
    """Exact QT (mp::qt_direct) for lanes b0 .. b1 - 1, whose column windows start at j0 + b."""
    Axh, Axl, Amh, Aml = A[4], A[5], A[6], A[7]
    Bxh, Bxl, Bmh, Bml = B[4], B[5], B[6], B[7]
    lo, hi = np.uint64(b0), np.uint64(b1)
    uj0 = np.uint64(j0)
    for b in range(lo, hi):
        qt[b] = zero
    mih = Amh[i]
    if use_lo:
        mil = Aml[i]
        for p in range(m):
            a = (Axh[i + p] - mih) + (Axl[i + p] - mil)
            up = np.uint64(p)
            for b in range(lo, hi):
                j = uj0 + b
                qt[b] += a * ((Bxh[j + up] - Bmh[j]) + (Bxl[j + up] - Bml[j]))
    else:
        for p in range(m):
            a = Axh[i + p] - mih
            up = np.uint64(p)
            for b in range(lo, hi):
                j = uj0 + b
                qt[b] += a * (Bxh[j + up] - Bmh[j])


@njit(**_JIT)
def _restart_column(qt, A, B, i0, j, b0, b1, m, use_lo, zero):
    """Exact QT (mp::qt_direct) for lanes b0 .. b1 - 1, whose row windows start at i0 - b and
    whose column window is j for all: :func:`_restart` with the roles of rows and columns
    swapped, the same operations in the same order for each cell."""
    Axh, Axl, Amh, Aml = A[4], A[5], A[6], A[7]
    Bxh, Bxl, Bmh, Bml = B[4], B[5], B[6], B[7]
    lo, hi = np.uint64(b0), np.uint64(b1)
    ui0 = np.uint64(i0)
    for b in range(lo, hi):
        qt[b] = zero
    mjh = Bmh[j]
    if use_lo:
        mjl = Bml[j]
        for p in range(m):
            bj = (Bxh[j + p] - mjh) + (Bxl[j + p] - mjl)
            up = np.uint64(p)
            for b in range(lo, hi):
                i = ui0 - b
                qt[b] += ((Axh[i + up] - Amh[i]) + (Axl[i + up] - Aml[i])) * bj
    else:
        for p in range(m):
            bj = Bxh[j + p] - mjh
            up = np.uint64(p)
            for b in range(lo, hi):
                i = ui0 - b
                qt[b] += (Axh[i + up] - Amh[i]) * bj


@njit(**_JIT)
def _restart_entries(qt, A, B, n_a, n_b, k0, nb, col_start, m, use_lo, zero):
    """Exact QT of the first cell of each of the lanes 0 .. nb - 1 (diagonal k = k0 + b), in
    two vectorised passes instead of one single-lane restart per row.

    Diagonal k enters at column j = k (row 0) when k >= col_start, else at column col_start
    (row col_start - k), which has cells if that row is below n_a and col_start below n_b. Each cell's sum is the one
    :func:`_restart` would form on its row (same terms, same order), so the result is the same
    to the bit.
    """
    split = min(max(col_start - k0, 0), nb)  # lanes below it enter at column col_start
    if split < nb:
        _restart(qt, A, B, 0, k0, split, nb, m, use_lo, zero)
    first = min(max(col_start - n_a + 1 - k0, 0), split)  # lanes below it have no cell
    if first < split and col_start < n_b:
        _restart_column(qt, A, B, col_start - k0, col_start, first, split, m, use_lo, zero)


@njit(**_JIT)
def _lanes(qt, B, col_keys, j0, b0, b1, i, dfi, dgi, invi, Hi, zero, key, step, want_cols, keep):
    """Lanes b0 .. b1 - 1 of row i: advance QT one step (if `step`), fold each cell's key
    into the column minima (if `want_cols`), and return min(key, the row's smallest key).

    A key is ``_key_high(u, keep) | index`` with u = 1 - rho >= 0 (mp::pack_key):
    integer order = distance order, equal keys to the smaller index, and a minimum over keys
    is an argmin, in one vectorised integer instruction. One fused pass; the same order
    of operations as mp::qt_step and mp::cell_u, without the fused multiply-adds.
    """
    Bdf, Bdg, Binv, Bh = B[0], B[1], B[2], B[3]
    uj0 = np.uint64(j0)
    row = np.int64(i)
    for b in range(np.uint64(b0), np.uint64(b1)):
        j = uj0 + b
        q = qt[b]
        if step:
            q = (q + Bdf[j] * dgi) + dfi * Bdg[j]
            qt[b] = q
        u = (Hi - Bh[j]) - (q * invi) * Binv[j]
        u = u if u > zero else zero
        high = _key_high(u, keep)
        if want_cols:
            col_keys[j] = min(col_keys[j], high | row)
        key = min(key, high | np.int64(j))
    return key


@njit(**_JIT)
def _walk_block(A, B, a_flag, b_next, m, n_a, n_b, k0, nb, col_start, tile_rows, use_lo, want_cols, row_keys,
                col_keys, qt, consts, keep):
    """Walk diagonals k0 .. k0 + nb - 1 over all their valid rows.

    Lane b is diagonal k0 + b; cell (i, j = i + k0 + b). At row i the valid
    lanes form one run [blo, bhi): both ends only decrease with i. A cell
    restarts (exact QT) where its diagonal enters (all of the block's entry cells at once,
    before the rows: :func:`_restart_entries`), on a tile's first row, on the
    row of a restart window (``a_flag``) and on the column of one (``b_next``:
    the next restart window at or after each column).
    """
    zero = consts[0]
    one = consts[1]
    Adf, Adg, Ainv, Ah = A[0], A[1], A[2], A[3]
    k_last = k0 + nb - 1
    i_first = max(0, -k_last, col_start - k_last)
    i_end = min(n_a, n_b - k0)
    if i_first >= i_end:
        return
    # Each lane's entry cell, computed for the whole block at once (with a single new column,
    # every cell is one); rows below only restart for tiles and restart windows.
    _restart_entries(qt, A, B, n_a, n_b, k0, nb, col_start, m, use_lo, zero)
    prev_blo = nb
    next_restart = i_first - i_first % tile_rows + tile_rows
    for i in range(i_first, i_end):
        tile_start = i == next_restart  # a division-free i % tile_rows == 0
        if tile_start:
            next_restart += tile_rows
        blo = max(0, -k0 - i, col_start - k0 - i)
        bhi = min(nb, n_b - k0 - i)
        if blo >= bhi:
            prev_blo = blo
            continue
        base = i + k0
        invi = Ainv[i]
        Hi = one - Ah[i]
        # Lanes that enter here (their QT is ready: _restart_entries), and all lanes on a
        # tile's first row or a restart window's row, restart exactly.
        full_restart = tile_start or a_flag[i]
        restart_to = bhi if full_restart else max(blo, min(prev_blo, bhi))
        prev_blo = blo
        key = row_keys[i]
        if restart_to > blo:
            if full_restart:
                _restart(qt, A, B, i, base, blo, restart_to, m, use_lo, zero)
            key = _lanes(qt, B, col_keys, base, blo, restart_to, i, zero, zero, invi, Hi, zero, key, False,
                         want_cols, keep)
        lo = restart_to
        while lo < bhi:
            # Runs of lanes between restart windows' columns step on; those columns restart.
            flagged = b_next[base + lo] - base
            hi = min(flagged, bhi)
            if hi > lo:
                key = _lanes(qt, B, col_keys, base, lo, hi, i, Adf[i], Adg[i], invi, Hi, zero, key, True, want_cols,
                             keep)
            if flagged >= bhi:
                break
            _restart(qt, A, B, i, base, flagged, flagged + 1, m, use_lo, zero)
            key = _lanes(qt, B, col_keys, base, flagged, flagged + 1, i, zero, zero, invi, Hi, zero, key, False,
                         want_cols, keep)
            lo = flagged + 1
        row_keys[i] = key


@njit(parallel=True, **_JIT)
def _join_diagonal_parallel(A, B, a_flag, b_next, m, n_a, n_b, block_k0, block_nb, order, offsets, col_start,
                            tile_rows, use_lo, want_cols, consts, keep):
    """One context; thread t walks blocks order[offsets[t]:offsets[t+1]] into private minima,
    merged at the end (keys: an elementwise minimum)."""
    n_threads = offsets.shape[0] - 1
    row_keys = np.full((n_threads, n_a), _EMPTY)
    col_keys = np.full((n_threads, n_b if want_cols else 0), _EMPTY)
    width = 1
    for b in range(block_nb.shape[0]):
        width = max(width, block_nb[b])
    for t in prange(n_threads):
        qt = np.full(width, consts[1])
        for o in range(offsets[t], offsets[t + 1]):
            blk = order[o]
            _walk_block(A, B, a_flag, b_next, m, n_a, n_b, block_k0[blk], block_nb[blk], col_start, tile_rows,
                        use_lo, want_cols, row_keys[t], col_keys[t], qt, consts, keep)
    out_rows = row_keys[0].copy()
    out_cols = col_keys[0].copy()
    for t in range(1, n_threads):
        for e in range(n_a):
            out_rows[e] = min(out_rows[e], row_keys[t, e])
        for e in range(out_cols.shape[0]):
            out_cols[e] = min(out_cols[e], col_keys[t, e])
    return out_rows, out_cols


@njit(parallel=True, **_JIT)
def _join_context_parallel(A, B, a_flag, b_next, m, n_a, n_b, k_begin, k_end, nb, col_start, tile_rows, use_lo,
                           want_cols, consts, keep, row_keys, col_keys):
    """Many contexts; each thread walks whole contexts, all diagonal blocks in turn."""
    n_ctx = row_keys.shape[0]
    for c in prange(n_ctx):
        qt = np.full(nb, consts[1])
        Ac = (A[0][c], A[1][c], A[2][c], A[3][c], A[4][c], A[5][c], A[6][c], A[7][c])
        Bc = (B[0][c], B[1][c], B[2][c], B[3][c], B[4][c], B[5][c], B[6][c], B[7][c])
        for k0 in range(k_begin, k_end, nb):
            _walk_block(Ac, Bc, a_flag[c], b_next[c], m, n_a, n_b, k0, min(nb, k_end - k0), col_start, tile_rows,
                        use_lo, want_cols, row_keys[c], col_keys[c], qt, consts, keep)


# ---------------------------------------------------------------------------- driver
def _block_schedule(k_begin, k_end, nb, n_a, n_b, col_start, n_threads):
    """Diagonal blocks and a longest-first greedy assignment of them to threads (by cell count)."""
    block_k0 = np.arange(k_begin, k_end, nb, dtype=np.int64)
    block_nb = np.minimum(nb, k_end - block_k0)
    k = np.arange(k_begin, k_end, dtype=np.int64)  # cells of diagonal k: hi(k) - lo(k)
    cells = np.minimum(n_a, n_b - k) - np.maximum(np.maximum(0, -k), col_start - k)
    cost = np.add.reduceat(np.maximum(cells, 0), block_k0 - k_begin).astype(np.float64)
    load = np.zeros(n_threads)
    owner = np.empty(len(block_k0), dtype=np.int64)
    for blk in np.argsort(-cost, kind="stable"):
        t = int(np.argmin(load))
        owner[blk] = t
        load[t] += cost[blk]
    order = np.argsort(owner, kind="stable").astype(np.int64)
    offsets = np.searchsorted(owner[order], np.arange(n_threads + 1)).astype(np.int64)
    return block_k0, block_nb, order, offsets


@njit(**_JIT)
def _pair_distance(A, B, c, i, j, m, use_lo):
    """Distance of windows i of A and j of B (context c) from the z-normalised windows'
    differences (``mp::pair_distance``): exact to rounding even for near-identical shapes,
    where ``sqrt(2 m (1 - rho))`` bottoms out near ``sqrt(2 m eps)``."""
    inv_i, inv_j = A[2][c, i], B[2][c, j]
    if inv_i == 0 or inv_j == 0:  # constant windows: the rule, through h
        u = (1.0 - A[3][c, i]) - B[3][c, j]
        return np.sqrt(2.0 * m * max(u, 0.0))
    s = inv_i - inv_i  # zero of the working precision
    mi, mj = A[6][c, i], B[6][c, j]
    if use_lo:
        mil, mjl = A[7][c, i], B[7][c, j]
        for p in range(m):
            da = ((A[4][c, i + p] - mi) + (A[5][c, i + p] - mil)) * inv_i
            db = ((B[4][c, j + p] - mj) + (B[5][c, j + p] - mjl)) * inv_j
            s += (da - db) * (da - db)
    else:
        for p in range(m):
            d = (A[4][c, i + p] - mi) * inv_i - (B[4][c, j + p] - mj) * inv_j
            s += d * d
    return np.sqrt(m * np.float64(s))


@njit(parallel=True, **_JIT)
def _pair_distances_parallel(A, B, index, m, use_lo, columns, out):
    n_e = index.shape[1]
    for flat in prange(index.size):
        c = flat // n_e
        e = flat - c * n_e
        nb = index[c, e]
        if nb >= 0:
            out[c, e] = _pair_distance(A, B, c, nb if columns else e, e if columns else nb, m, use_lo)


@njit(**_JIT)
def _pair_distances_serial(A, B, index, m, use_lo, columns, out):
    for c in range(index.shape[0]):
        for e in range(index.shape[1]):
            nb = index[c, e]
            if nb >= 0:
                out[c, e] = _pair_distance(A, B, c, nb if columns else e, e if columns else nb, m, use_lo)


def _pair_distances(A, B, index, m, use_lo, columns):
    """Distances to the chosen neighbours (inf where index is -1). ``columns``: entries are
    windows of B and indices windows of A (a left profile), else the reverse."""
    out = np.full(index.shape, np.inf)
    small = index.size * m < 4_000_000  # waking the thread pool would cost more
    (_pair_distances_serial if small else _pair_distances_parallel)(A, B, index, m, use_lo, columns, out)
    return out


def join(TA, TB, m, exclusion, precision, col_start=0, max_lag=None, *, normalize=True, rows=True, tile_rows=None,
         tile_diags=None):
    """Row and column minima of the z-normalised (or plain) distance matrix of a batch of series.

    Parameters
    ----------
    TA : numpy.ndarray, shape (n_contexts, n_a)
        Series whose windows are the rows; NaN/inf allowed.
    TB : numpy.ndarray, shape (n_contexts, n_b), or None
        Series whose windows are the columns (AB-join, context by context);
        None for a self-join of ``TA``.
    m : int
        Window length.
    exclusion : int
        Self-joins compare only windows with ``j - i > exclusion``; ignored for AB-joins.
    precision : {"double", "single"}
    col_start : int, default 0
        Only cells whose column window ``j >= col_start`` (the left profile of the
        windows from ``col_start`` on; row minima are then partial).
    max_lag : int, optional
        Self-joins only: compare only windows with ``j - i <= max_lag`` (a band of
        diagonals; the detector's bounded look-back).
    normalize : bool, default True
        False: plain Euclidean distances between the windows as they are. The
        recurrence then runs on raw products, so callers should centre and scale each
        series first (:func:`tsanomaly.detectors.matrix_profile.matrix_profile` does).
    rows : bool, default True
        Self-joins only: False skips the row minima's distances (the right profile), which
        a caller that wants only the left profile would discard; they are then None.
    tile_rows, tile_diags : int, optional
        Restart period of the recurrence and diagonals per block (tests shrink them).

    Returns
    -------
    row_dist, row_index : numpy.ndarray, shape (n_contexts, n_a - m + 1), or None
        Nearest column window of each row window (self-join: the right profile,
        AB-join: the profile); inf and -1 where there is none. None with ``rows=False``.
    col_dist, col_index : numpy.ndarray, shape (n_contexts, n_b - m + 1), or None
        Self-join only: nearest earlier window of each window (the left profile).
    """
    dtype = np.float64 if precision == "double" else np.float32
    tile_rows = TILE_ROWS if tile_rows is None else int(tile_rows)
    nb = TILE_DIAGS if tile_diags is None else int(tile_diags)
    self_join = TB is None
    prep_a = _Prepared(TA, m, dtype, normalize)
    prep_b = prep_a if self_join else _Prepared(TB, m, dtype, normalize)
    n_ctx, n_a, n_b = TA.shape[0], prep_a.n_windows, prep_b.n_windows
    if self_join:
        k_begin, k_end = exclusion + 1, n_b if max_lag is None else min(n_b, max_lag + 1)
    else:
        k_begin, k_end = -(n_a - 1), n_b
    consts = np.array([0.0, 1.0, np.inf], dtype=dtype)
    use_lo = dtype == np.float32
    # Keys as on the GPU (mp::pack_key): float32 u over a 32-bit index; double u with its
    # lowest idx_bits bits replaced by the index.
    idx_bits = 32 if use_lo else _index_bits(max(n_a, n_b))
    keep = np.int64(~((1 << idx_bits) - 1))
    row_keys = np.full((n_ctx, n_a), _EMPTY)
    col_keys = np.full((n_ctx, n_b if self_join else 0), _EMPTY)
    n_threads = numba.get_num_threads()
    if k_end > k_begin:
        if n_ctx >= n_threads:
            _join_context_parallel(prep_a.terms, prep_b.terms, prep_a.flags[0], prep_b.flags[1], m, n_a, n_b,
                                   k_begin, k_end, nb, col_start, tile_rows, use_lo, self_join, consts, keep,
                                   row_keys, col_keys)
        else:
            schedule = _block_schedule(k_begin, k_end, nb, n_a, n_b, col_start, n_threads)
            for c in range(n_ctx):
                row_keys[c], cols = _join_diagonal_parallel(
                    prep_a.context(c), prep_b.context(c), prep_a.flags[0][c], prep_b.flags[1][c], m, n_a, n_b,
                    *schedule, col_start, tile_rows, use_lo, self_join, consts, keep)
                if self_join:
                    col_keys[c] = cols
    # The keys chose the neighbours; the reported distances are recomputed for them.
    if rows or not self_join:
        ri = _key_index(row_keys, idx_bits, use_lo)
        row = (_pair_distances(prep_a.terms, prep_b.terms, ri, m, use_lo, False), ri)
    else:
        row = (None, None)
    if not self_join:
        return row + (None, None)
    ci = _key_index(col_keys, idx_bits, use_lo)
    return row + (_pair_distances(prep_a.terms, prep_b.terms, ci, m, use_lo, True), ci)


def _index_bits(n_windows):
    """Bits that hold every window index (mp::index_bits_for)."""
    return max(1, int(n_windows - 1).bit_length())


def _key_index(keys, idx_bits, single):
    """Indices from keys; -1 where there was no finite candidate (u = +inf or no key)."""
    inf_key = np.int64(0x7F800000) << 32 if single else np.int64(0x7FF0000000000000)
    index = keys & np.int64((1 << idx_bits) - 1)
    return np.where(keys >= inf_key, -1, index).astype(np.int64)
