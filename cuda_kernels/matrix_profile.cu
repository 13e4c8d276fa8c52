// Matrix profile kernels, compiled at run time by CuPy (tsanomaly/kernels/mp_gpu.py).
//
// The arithmetic of one tile (recurrence, distances, keys, window statistics) is in
// matrix_profile.cuh and is tested on the CPU through a host harness; this file holds the
// parallel scaffolding only.
//
// Work decomposition. The (row i, diagonal k = j - i) plane of one context is cut into tiles
// of MP_TILE_ROWS rows by MP_TILE_DIAGS diagonals; gridDim.x walks the row tiles, gridDim.y
// the diagonal tiles and gridDim.z the contexts of a batch, so 10,000 short series are one
// launch. A launch covers the diagonals [k_begin, k_end); mp_gpu.py cuts ranges of more than
// 65,535 tiles (gridDim.y's limit) into several launches at tile boundaries, which leaves every
// tile, and so the result, as it is: tiles share nothing but the atomicMin'd keys. Tiles
// outside the valid parallelogram exit at once. In a tile, thread t owns the
// MP_DPT = 4 adjacent diagonals k0 + 4t .. k0 + 4t + 3 and walks them down the tile's rows in
// 4 x 4 register micro-tiles, restarting the mean-centred recurrence exactly at the tile's
// first row (so float32 rounding never accumulates over more than MP_TILE_ROWS steps) and at
// restart windows (after bursts; see the header).
//
// Reductions. Every micro-tile's row minima and its completed column minima (columns that
// the next micro-tile continues stay in registers) go to the tile's shared-memory minima,
// one 64-bit key per row and per column (the value's bits over the index, see the header),
// with a plain read first so that the atomic runs only on an improvement. After the tile,
// each shared entry that holds a candidate is merged into the global profile with one
// 64-bit atomicMin: value and index change together, and ties (equal keys) go to the smaller index.
//
// Launches per batch (mp_gpu.py): mp_stats_* (window terms, a thread per window),
// mp_flags_* (restart windows, a thread per context; z-normalised distances only),
// mp_join_* (the tiles), mp_finalize_* (keys to indices, and distances recomputed from the
// windows, a thread per entry).
#include "matrix_profile.cuh"

namespace mp {

template <typename Real>
struct SharedSink {
    Key* rows;
    Key* cols;
    int row_base;
    int col_base;
    int idx_bits;
    bool want_cols;

    __device__ __forceinline__ void row(int i, Real u, int j) {
        const Key key = pack_key(u, (unsigned int)j, idx_bits);
        Key* slot = rows + (i - row_base);
        if (key < *(volatile Key*)slot) atomicMin(slot, key);
    }
    __device__ __forceinline__ void col(int j, Real u, int i) {
        if (!want_cols) return;
        const Key key = pack_key(u, (unsigned int)i, idx_bits);
        Key* slot = cols + (j - col_base);
        if (key < *(volatile Key*)slot) atomicMin(slot, key);
    }
};

template <typename Real>
__device__ SeriesView<Real> series_view(const WinStats<Real>* st, const Real* x_hi, const Real* x_lo,
                                        const Real* mu_hi, const Real* mu_lo, long long ctx,
                                        long long w_stride, long long x_stride, int n_windows, bool split) {
    SeriesView<Real> v;
    v.st = st + ctx * w_stride;
    v.x_hi = x_hi + ctx * x_stride;
    v.x_lo = split ? x_lo + ctx * x_stride : nullptr;
    v.mu_hi = mu_hi + ctx * w_stride;
    v.mu_lo = split ? mu_lo + ctx * w_stride : nullptr;
    v.n_windows = n_windows;
    return v;
}

template <typename Real>
__device__ void join_tiles(const WinStats<Real>* stA, const Real* xA_hi, const Real* xA_lo, const Real* muA_hi,
                           const Real* muA_lo, const WinStats<Real>* stB, const Real* xB_hi, const Real* xB_lo,
                           const Real* muB_hi, const Real* muB_lo, long long w_stride_A, long long x_stride_A,
                           long long w_stride_B, long long x_stride_B, int nA, int nB, int m, int k_begin,
                           int k_end, int col_start, int idx_bits, Key* row_keys, Key* col_keys, int want_cols,
                           int ctx_offset) {
    __shared__ Key s_rows[MP_TILE_ROWS];
    __shared__ Key s_cols[MP_TILE_ROWS + MP_TILE_DIAGS];

    // int sums below (i0 + MP_TILE_ROWS, k0 + MP_TILE_DIAGS, k0 + MP_DPT * t, and i + MP_DPT in
    // process_strip) stay below INT_MAX: mp_gpu.join refuses series of more than
    // 2^31 - 1 - 4096 points, and tiles have at most 4,096 rows or diagonals.
    const long long ctx = (long long)blockIdx.z + ctx_offset;
    const int i0 = blockIdx.x * MP_TILE_ROWS;
    const int k0 = k_begin + blockIdx.y * MP_TILE_DIAGS;
    const int k1 = min(k0 + MP_TILE_DIAGS, k_end);
    // Rows that any diagonal of this tile reaches (lo and hi do not increase with k).
    const int lo = max(i0, diag_row_lo(k1 - 1, col_start));
    const int hi = min(i0 + MP_TILE_ROWS, diag_row_hi(k0, nA, nB));
    if (lo >= hi) return;  // uniform over the block, before any barrier

    for (int r = threadIdx.x; r < MP_TILE_ROWS; r += blockDim.x) s_rows[r] = EMPTY_KEY;
    for (int c = threadIdx.x; c < MP_TILE_ROWS + MP_TILE_DIAGS; c += blockDim.x) s_cols[c] = EMPTY_KEY;
    __syncthreads();

    const bool split = sizeof(Real) == sizeof(float);
    const SeriesView<Real> A = series_view(stA, xA_hi, xA_lo, muA_hi, muA_lo, ctx, w_stride_A, x_stride_A, nA, split);
    const SeriesView<Real> B = series_view(stB, xB_hi, xB_lo, muB_hi, muB_lo, ctx, w_stride_B, x_stride_B, nB, split);
    SharedSink<Real> sink{s_rows, s_cols, i0, i0 + k0, idx_bits, want_cols != 0};
    process_strip<Real>(A, B, m, k0 + MP_DPT * (int)threadIdx.x, k1, i0, i0 + MP_TILE_ROWS, col_start, sink);
    __syncthreads();

    Key* rk = row_keys + ctx * nA;
    for (int r = threadIdx.x; r < MP_TILE_ROWS; r += blockDim.x) {
        const Key key = s_rows[r];
        if (key != EMPTY_KEY) atomicMin(rk + i0 + r, key);
    }
    if (want_cols) {
        Key* ck = col_keys + ctx * nB;
        for (int c = threadIdx.x; c < MP_TILE_ROWS + MP_TILE_DIAGS; c += blockDim.x) {
            const Key key = s_cols[c];
            if (key != EMPTY_KEY) atomicMin(ck + i0 + k0 + c, key);
        }
    }
}

// Window statistics: one thread per (window, context).
template <typename Real>
__device__ void stats_impl(const double* x, const double* raw, long long x_stride, int n_windows, int m,
                           bool normalize, WinStats<Real>* st, double* mu, double* norm, long long w_stride,
                           int ctx_offset) {
    const int w = blockIdx.x * blockDim.x + threadIdx.x;
    if (w >= n_windows) return;
    const long long ctx = (long long)blockIdx.y + ctx_offset;
    const long long at = ctx * w_stride + w;
    window_stats<Real>(x + ctx * x_stride, raw + ctx * x_stride, m, w, normalize, st[at], mu[at], norm[at]);
}

// Restart windows: one thread per context, a sequential scan (restart_flags). For a single
// long series this is one thread's O(n) loop; for a batch, one thread per context.
template <typename Real>
__device__ void flags_impl(const double* norm, int n_windows, WinStats<Real>* st, long long w_stride, int n_ctx) {
    const long long ctx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (ctx >= n_ctx) return;
    restart_flags<Real>(norm + ctx * w_stride, n_windows, st + ctx * w_stride);
}

// Keys to distances and indices: one thread per profile entry (mp::finalize_entry).
template <typename Real>
__device__ void finalize_impl(const Key* keys, int n_entries, int m, int idx_bits, double* dist, long long* index,
                              const SeriesView<Real>& A, const SeriesView<Real>& B, bool keys_are_columns,
                              long long ctx) {
    const int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= n_entries) return;
    const long long at = ctx * n_entries + e;
    finalize_entry<Real>(keys[at], e, m, idx_bits, A, B, keys_are_columns, dist[at], index[at]);
}

}  // namespace mp

using mp::Key;
using mp::WinStats;

#define MP_JOIN_KERNEL(NAME, REAL)                                                                              \
    extern "C" __global__ void __launch_bounds__(MP_THREADS) NAME(                                              \
        const WinStats<REAL>* stA, const REAL* xA_hi, const REAL* xA_lo, const REAL* muA_hi, const REAL* muA_lo, \
        const WinStats<REAL>* stB, const REAL* xB_hi, const REAL* xB_lo, const REAL* muB_hi, const REAL* muB_lo, \
        long long w_stride_A, long long x_stride_A, long long w_stride_B, long long x_stride_B, int nA, int nB,  \
        int m, int k_begin, int k_end, int col_start, int idx_bits, Key* row_keys, Key* col_keys,               \
        int want_cols, int ctx_offset) {                                                                        \
        mp::join_tiles<REAL>(stA, xA_hi, xA_lo, muA_hi, muA_lo, stB, xB_hi, xB_lo, muB_hi, muB_lo, w_stride_A,   \
                             x_stride_A, w_stride_B, x_stride_B, nA, nB, m, k_begin, k_end, col_start, idx_bits, \
                             row_keys, col_keys, want_cols, ctx_offset);                                        \
    }

MP_JOIN_KERNEL(mp_join_f64, double)
MP_JOIN_KERNEL(mp_join_f32, float)

#define MP_STATS_KERNEL(NAME, FLAGS, REAL)                                                                 \
    extern "C" __global__ void NAME(const double* x, const double* raw, long long x_stride, int n_windows,   \
                                    int m, int normalize, WinStats<REAL>* st, double* mu, double* norm,      \
                                    long long w_stride, int ctx_offset) {                                    \
        mp::stats_impl<REAL>(x, raw, x_stride, n_windows, m, normalize != 0, st, mu, norm, w_stride,         \
                             ctx_offset);                                                                    \
    }                                                                                                        \
    extern "C" __global__ void FLAGS(const double* norm, int n_windows, WinStats<REAL>* st, long long w_stride, \
                                     int n_ctx) {                                                            \
        mp::flags_impl<REAL>(norm, n_windows, st, w_stride, n_ctx);                                          \
    }

MP_STATS_KERNEL(mp_stats_f64, mp_flags_f64, double)
MP_STATS_KERNEL(mp_stats_f32, mp_flags_f32, float)

#define MP_FINALIZE_KERNEL(NAME, REAL)                                                                          \
    extern "C" __global__ void NAME(const Key* keys, int n_entries, int m, int idx_bits, double* dist,          \
                                    long long* index, const WinStats<REAL>* stA, const REAL* xA_hi,             \
                                    const REAL* xA_lo, const REAL* muA_hi, const REAL* muA_lo,                  \
                                    long long w_stride_A, long long x_stride_A, int nA, const WinStats<REAL>* stB, \
                                    const REAL* xB_hi, const REAL* xB_lo, const REAL* muB_hi, const REAL* muB_lo, \
                                    long long w_stride_B, long long x_stride_B, int nB, int keys_are_columns,   \
                                    int ctx_offset) {                                                           \
        const long long ctx = (long long)blockIdx.y + ctx_offset;                                               \
        const bool split = sizeof(REAL) == sizeof(float);                                                       \
        const mp::SeriesView<REAL> A = mp::series_view<REAL>(stA, xA_hi, xA_lo, muA_hi, muA_lo, ctx, w_stride_A, \
                                                             x_stride_A, nA, split);                            \
        const mp::SeriesView<REAL> B = mp::series_view<REAL>(stB, xB_hi, xB_lo, muB_hi, muB_lo, ctx, w_stride_B, \
                                                             x_stride_B, nB, split);                            \
        mp::finalize_impl<REAL>(keys, n_entries, m, idx_bits, dist, index, A, B, keys_are_columns != 0, ctx);  \
    }

MP_FINALIZE_KERNEL(mp_finalize_f64, double)
MP_FINALIZE_KERNEL(mp_finalize_f32, float)
