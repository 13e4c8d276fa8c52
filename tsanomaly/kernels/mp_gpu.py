"""Matrix profile on the GPU: CuPy driving the kernels of ``cuda_kernels/matrix_profile.cu``.

Three launches per batch of series (each covers every context at once; a grid
dimension indexes the context, so 10,000 short series are one launch, not a
loop):

1. ``mp_stats_*``: per-window terms (df, dg, 1/norm, edge-case flag) and means,
   one thread per window; ``mp_flags_*`` then marks the restart windows, one
   thread per context (a sequential scan; z-normalised distances only);
2. ``mp_join_*``: the diagonal tiles with the mean-centred recurrence, minima
   reduced in shared memory, then one 64-bit ``atomicMin`` per row/column of a
   tile on (distance bits, index) keys (a range of more than 65,535 diagonal
   tiles, gridDim.y's limit, is launched in slices: :func:`diagonal_slices`);
3. ``mp_finalize_*``: keys to indices, and the distance to each chosen
   neighbour recomputed from the z-normalised windows' differences (accurate
   even for near-identical shapes, where ``sqrt(2 m (1 - rho))`` is not).

Contexts are processed in chunks sized to the free GPU memory, and a chunk that
still runs out of memory is split again, so a large batch is slower, not fatal.

Importing this module never needs CuPy; :func:`join` does. It has the same
signature as :func:`tsanomaly.kernels.mp_cpu.join`.
"""
from __future__ import annotations

import numpy as np

from tsanomaly import backend

__all__ = ["join", "fill_nonfinite", "TILE_ROWS", "TILE_DIAGS", "kernel_options", "diagonal_slices"]

#: Rows per tile, the restart period of the recurrence (MP_TILE_ROWS).
TILE_ROWS = 2048
#: Diagonals per tile: 256 threads x 4 diagonals (MP_THREADS * MP_DPT).
TILE_DIAGS = 1024
_DPT = 4
_BLOCK_1D = 256
_MAX_GRID_YZ = 65535
#: Most points of one series. The kernels index points and windows with int and form sums of
#: an index and a tile's size (i0 + MP_TILE_ROWS, k0 + MP_TILE_DIAGS, k0 + 4 t, i + 4; tiles
#: have at most 4,096 rows or diagonals), so every series stays 4,096 below INT_MAX. (An
#: AB-join's nB - k, up to nA + nB, is formed in 64 bits in diag_row_hi.)
_MAX_POINTS = 2**31 - 1 - 4096
_EMPTY_KEY = np.uint64(0xFFFFFFFFFFFFFFFF)
_SHARED_LIMIT = 48 * 1024  # static shared memory available without opting in


def kernel_options(tile_rows=None, tile_diags=None) -> tuple[str, ...]:
    """NVRTC ``-D`` options for a tile shape (empty for the default one).

    Raises
    ------
    ValueError
        When the shape is not a multiple of 4 diagonals, needs more than 1024
        threads, or more shared memory than a block has without opting in.
    """
    rows = TILE_ROWS if tile_rows is None else int(tile_rows)
    diags = TILE_DIAGS if tile_diags is None else int(tile_diags)
    threads = diags // _DPT
    if rows < 1 or diags < _DPT or diags % _DPT or threads > 1024:
        raise ValueError(
            f"GPU tiles need tile_rows >= 1 and tile_diags a multiple of {_DPT} up to {4 * 1024}; "
            f"got tile_rows={rows}, tile_diags={diags}"
        )
    if 8 * (2 * rows + diags) > _SHARED_LIMIT:
        raise ValueError(
            f"a {rows} x {diags} tile needs {8 * (2 * rows + diags)} bytes of shared memory, "
            f"more than {_SHARED_LIMIT}; use smaller tiles"
        )
    options = []
    if rows != TILE_ROWS:
        options.append(f"-DMP_TILE_ROWS={rows}")
    if threads != TILE_DIAGS // _DPT:
        options.append(f"-DMP_THREADS={threads}")
    return tuple(options)


def fill_nonfinite(xp, raw):
    """Each NaN/inf replaced by the previous finite value of its row (the first finite one before any).

    The same rule as ``mp_cpu._fill_nonfinite``, written with cumulative sums and
    gathers so it runs in parallel on NumPy or CuPy (``xp``); rows without any
    finite value become 0.

    Parameters
    ----------
    raw : array, shape (n_contexts, n), float64

    Returns
    -------
    array, same shape
    """
    finite = xp.isfinite(raw)
    if bool(finite.all()):
        return raw
    n_ctx, n = raw.shape
    flat = raw.ravel()
    fin = finite.ravel()
    positions = xp.flatnonzero(fin)
    if positions.size == 0:
        return xp.zeros_like(raw)
    seen = xp.cumsum(fin)  # finite values at or before each flat position
    here = xp.arange(flat.size)
    row_start = (here // n) * n
    prev = positions[xp.maximum(seen - 1, 0)]  # last finite at or before, if any
    nxt = positions[xp.minimum(seen, positions.size - 1)]  # first finite after a gap
    use_prev = (seen >= 1) & (prev >= row_start)
    use_next = ~use_prev & (nxt >= row_start) & (nxt < row_start + n)
    source = xp.where(use_prev, prev, nxt)
    filled = xp.where(fin, flat, xp.where(use_prev | use_next, flat[source], 0.0))
    return filled.reshape(n_ctx, n)


class _Prepared:
    """Per-window terms of a chunk of series on the GPU, in the working precision."""

    def __init__(self, cp, module, T, m, single, normalize=True):
        raw = cp.ascontiguousarray(cp.asarray(T, dtype=cp.float64))  # cp.ascontiguousarray refuses a NumPy array
        x = cp.ascontiguousarray(fill_nonfinite(cp, raw))
        n_ctx, n = raw.shape
        nw = n - m + 1
        real = cp.float32 if single else cp.float64
        self.st = cp.empty((n_ctx, nw, 4), dtype=real)  # WinStats<Real> {df, dg, inv, h}
        mu = cp.empty((n_ctx, nw), dtype=cp.float64)
        norm = cp.empty((n_ctx, nw), dtype=cp.float64)
        suffix = "f32" if single else "f64"
        kernel = module.get_function(f"mp_stats_{suffix}")
        for off in range(0, n_ctx, _MAX_GRID_YZ):
            count = min(_MAX_GRID_YZ, n_ctx - off)
            grid = ((nw + _BLOCK_1D - 1) // _BLOCK_1D, count)
            kernel(grid, (_BLOCK_1D,), (x, raw, np.int64(n), np.int32(nw), np.int32(m), np.int32(normalize), self.st,
                                        mu, norm, np.int64(nw), np.int32(off)))
        if normalize:  # plain distances have no restart windows (see the header)
            flags = module.get_function(f"mp_flags_{suffix}")
            flags(((n_ctx + _BLOCK_1D - 1) // _BLOCK_1D,), (_BLOCK_1D,),
                  (norm, np.int32(nw), self.st, np.int64(nw), np.int32(n_ctx)))
        if single:
            # hi + lo split: the exact restarts centre values in float32 without losing the
            # bits that a large level would otherwise cost (see qt_direct in the header).
            self.x_hi = x.astype(cp.float32)
            self.x_lo = (x - self.x_hi.astype(cp.float64)).astype(cp.float32)
            self.mu_hi = mu.astype(cp.float32)
            self.mu_lo = (mu - self.mu_hi.astype(cp.float64)).astype(cp.float32)
        else:
            self.x_hi, self.x_lo, self.mu_hi, self.mu_lo = x, x, mu, mu  # lo parts unused in double
        self.n, self.n_windows = n, nw

    def args(self):
        return (self.st, self.x_hi, self.x_lo, self.mu_hi, self.mu_lo)

    def strides(self):
        return (np.int64(self.n_windows), np.int64(self.n))


def _index_bits(n_windows: int) -> int:
    bits = 1
    while (1 << bits) < n_windows:
        bits += 1
    return bits


def diagonal_slices(k_begin, k_end, tile_diags, max_tiles=_MAX_GRID_YZ):
    """The diagonals [k_begin, k_end) cut into launches of at most ``max_tiles`` tiles (gridDim.y).

    Cuts fall at multiples of ``tile_diags`` from ``k_begin``, so each tile of a slice is the
    tile of the unsliced grid (same first diagonal k0, same end min(k0 + tile_diags, k_end)):
    a tile's work depends only on its own k0 and k1, and its results reach the profile through
    atomicMin, so the slicing cannot change them.

    Returns
    -------
    list of (int, int)
        Contiguous [k_lo, k_hi) pairs covering [k_begin, k_end) once (empty if k_end <= k_begin).
    """
    step = max_tiles * tile_diags
    return [(k, min(k + step, k_end)) for k in range(k_begin, k_end, step)]


def _join_chunk(cp, module, TA, TB, m, exclusion, single, col_start, max_lag, tile_rows, tile_diags, normalize,
                rows):
    prep_a = _Prepared(cp, module, TA, m, single, normalize)
    self_join = TB is None
    prep_b = prep_a if self_join else _Prepared(cp, module, TB, m, single, normalize)
    n_ctx, n_a, n_b = TA.shape[0], prep_a.n_windows, prep_b.n_windows
    if self_join:
        k_begin, k_end = exclusion + 1, n_b if max_lag is None else min(n_b, max_lag + 1)
    else:
        k_begin, k_end = -(n_a - 1), n_b
    idx_bits = 32 if single else _index_bits(max(n_a, n_b))
    row_keys = cp.full((n_ctx, n_a), _EMPTY_KEY, dtype=cp.uint64)
    col_keys = cp.full((n_ctx, n_b) if self_join else (1,), _EMPTY_KEY, dtype=cp.uint64)
    suffix = "f32" if single else "f64"
    if k_end > k_begin:
        join_kernel = module.get_function(f"mp_join_{suffix}")
        grid_x = (n_a + tile_rows - 1) // tile_rows
        for off in range(0, n_ctx, _MAX_GRID_YZ):
            count = min(_MAX_GRID_YZ, n_ctx - off)
            for k_lo, k_hi in diagonal_slices(k_begin, k_end, tile_diags):
                join_kernel(
                    (grid_x, (k_hi - k_lo + tile_diags - 1) // tile_diags, count),
                    (tile_diags // _DPT,),
                    prep_a.args() + prep_b.args() + prep_a.strides() + prep_b.strides()
                    + (np.int32(n_a), np.int32(n_b), np.int32(m), np.int32(k_lo), np.int32(k_hi),
                       np.int32(col_start), np.int32(idx_bits), row_keys, col_keys, np.int32(self_join),
                       np.int32(off)),
                )
    finalize = module.get_function(f"mp_finalize_{suffix}")

    def unpack(keys, n_entries, columns):
        dist = cp.empty((n_ctx, n_entries), dtype=cp.float64)
        index = cp.empty((n_ctx, n_entries), dtype=cp.int64)
        for off in range(0, n_ctx, _MAX_GRID_YZ):
            count = min(_MAX_GRID_YZ, n_ctx - off)
            finalize(
                ((n_entries + _BLOCK_1D - 1) // _BLOCK_1D, count),
                (_BLOCK_1D,),
                (keys, np.int32(n_entries), np.int32(m), np.int32(idx_bits), dist, index)
                + prep_a.args() + prep_a.strides() + (np.int32(n_a),)
                + prep_b.args() + prep_b.strides() + (np.int32(n_b), np.int32(columns), np.int32(off)),
            )
        return dist, index

    row = unpack(row_keys, n_a, False) if rows or not self_join else (None, None)
    col = unpack(col_keys, n_b, True) if self_join else (None, None)
    return row + col


def _bytes_per_context(n_a, n_b, m, single):
    """Rough device memory of one context (inputs, fills, terms, keys, outputs)."""
    real = 4 if single else 8
    per_point = 8 * 3 + (2 * 4 if single else 0)
    per_window = 4 * real + 8 + (2 * 4 if single else 0) + 8 + 8 + 8 + 8
    return (n_a + n_b) * per_point + (n_a + n_b) * per_window


def join(TA, TB, m, exclusion, precision, col_start=0, max_lag=None, *, normalize=True, rows=True, tile_rows=None,
         tile_diags=None):
    """Row and column minima of the z-normalised (or plain) distance matrix of a batch of series, on the GPU.

    Same parameters and results as :func:`tsanomaly.kernels.mp_cpu.join`, with
    CuPy arrays in and out. ``tile_rows``/``tile_diags`` compile a kernel with
    that tile shape (tests shrink it so small inputs span many tiles).
    """
    n_points = max(TA.shape[1], TA.shape[1] if TB is None else TB.shape[1])
    if n_points > _MAX_POINTS:
        raise ValueError(f"the GPU matrix profile indexes a series with 32-bit integers: at most {_MAX_POINTS:,} "
                         f"points, got {n_points:,}")
    cp = backend.array_module("cuda")
    options = kernel_options(tile_rows, tile_diags)
    module = backend.load_cuda_module("matrix_profile.cu", options)
    tile_rows = TILE_ROWS if tile_rows is None else int(tile_rows)
    tile_diags = TILE_DIAGS if tile_diags is None else int(tile_diags)
    single = precision == "single"
    n_ctx = TA.shape[0]
    n_a = TA.shape[1] - m + 1
    n_b = (TA if TB is None else TB).shape[1] - m + 1
    budget = max(backend.free_device_bytes() // 2, 1)
    chunk = int(max(1, min(n_ctx, budget // max(1, _bytes_per_context(n_a, n_b, m, single)))))
    parts = []
    start = 0
    while start < n_ctx:
        stop = min(n_ctx, start + chunk)
        try:
            parts.append(_join_chunk(cp, module, TA[start:stop], None if TB is None else TB[start:stop], m,
                                     exclusion, single, col_start, max_lag, tile_rows, tile_diags, normalize,
                                     rows))
        except cp.cuda.memory.OutOfMemoryError:
            if chunk == 1:
                raise
            cp.get_default_memory_pool().free_all_blocks()
            chunk = max(1, chunk // 2)  # split the chunk and try again
            continue
        start = stop
    if len(parts) == 1:
        return parts[0]
    return tuple(None if parts[0][k] is None else cp.concatenate([p[k] for p in parts]) for k in range(4))
