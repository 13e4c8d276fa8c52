// Matrix profile: the per-element arithmetic shared by the GPU kernels and the host test harness.
//
// Everything here is `__host__ __device__` (or plain inline C++ on the host), so that
// tests/test_mp_cuda.py can compile a small host program with nvcc that runs these very
// functions tile by tile on the CPU and compares the result with a brute-force reference.
// Only the parallel scaffolding (blocks, shared memory, atomics) lives in
// matrix_profile.cu and waits for a GPU run.
//
// Method (Zimmerman et al. 2019, "Matrix Profile XIV: scaling time series motif discovery
// with GPUs to break a quintillion pairwise comparisons a day and beyond", SoCC; building on
// Yeh et al. 2016, Matrix Profile I, and Zhu et al. 2016, Matrix Profile II / STOMP):
//
//   * windows of length m; mu_i, ||x_i - mu_i|| of window i; the distance matrix is walked
//     along its diagonals k = j - i;
//   * mean-centred covariance QT[i][j] = sum_p (x[i+p] - mu_i) (x[j+p] - mu_j), advanced down a
//     diagonal by QT[i][j] = QT[i-1][j-1] + df[i] dg[j] + df[j] dg[i] with
//       df[i] = (x[i+m-1] - x[i-1]) / 2,
//       dg[i] = (x[i+m-1] - mu_i) + (x[i-1] - mu_{i-1})       (df[0] = dg[0] = 0).
//     Every term is of the size of the data's local variation, so nothing cancels, unlike the
//     raw form QT_raw - m mu_i mu_j, which loses all precision in float32 once |mu| >> sigma;
//   * the recurrence restarts from an exact dot product at every tile's first row (rows that
//     are multiples of MP_TILE_ROWS) and where a diagonal enters its valid range, so rounding
//     cannot accumulate over more than MP_TILE_ROWS steps;
//   * it also restarts at the row and at the column of every *restart window*: an ordinary
//     window whose norm ||x_r - mu_r|| is below 1/MP_KAPPA of the largest norm since the
//     previous restart window (restart_flags below). While a burst or a jump is inside the
//     windows, QT is huge and rounds at that scale; once it has left, that absolute error would
//     be amplified by the ratio of norms. With the flags, every stretch of a diagonal without a
//     restart keeps each window's norm within MP_KAPPA of the largest one it has seen, so the
//     relative error is amplified at most MP_KAPPA^2 times. Flags are rare in practice (below
//     0.2% of windows for m >= 24 on random walks, Poisson counts and bursty counts).
//
// Each cell (i, j) yields u = 1 - rho, rho the Pearson correlation of the two windows;
// the z-normalised Euclidean distance is d = sqrt(2 m u). Per-window terms fold in the
// edge-case rules without branches in the inner loop:
//   h = 0    ordinary window             inv = 1 / ||x_i - mu_i||
//   h = 0.5  constant window             inv = 0   (all m values equal)
//   h = -inf window with a NaN or inf    inv = 0
//   h = -0   ordinary window that is a restart window (the sign of zero is the flag; the
//            arithmetic below cannot tell -0 from 0)
//   u = (1 - h_i - h_j) - QT inv_i inv_j
// so two constant windows are at distance 0, a constant and a non-constant window at
// sqrt(m) (u = 0.5, the rule STUMPY uses), and any pair touching a non-finite window has
// u = +inf: it is never anyone's neighbour.
//
// Plain (non-normalised) Euclidean distance, window_stats(normalize = false), reuses all of
// the above unchanged: every window mean is taken as 0 (QT becomes the raw dot product, and
// df, dg still step it: df[i] dg[j] + df[j] dg[i] = x[i+m-1] x[j+m-1] - x[i-1] x[j-1]),
// inv = 1 / sqrt(m) and h = 1/2 - ||x_i||^2 / (2 m) for every finite window, so that
//   u = (1 - h_i - h_j) - QT / m = (||x_i||^2 + ||x_j||^2 - 2 QT) / (2 m) = d^2 / (2 m)
// and d = sqrt(2 m u) as before; pair_distance gives sum_p (x_i[p] - x_j[p])^2. Constant
// windows are ordinary there, and there are no restart windows (h is not 0, and the raw
// form has no norms ||x - mu|| to compare), so only the tiles' restarts bound the drift; the
// caller centres and scales each series first (tsanomaly.detectors.matrix_profile), which
// keeps the raw terms of the data's own size.
//
// Minima are kept as one 64-bit key per profile entry, the value's bits above the index
// bits, so that atomicMin updates value and index together and ties go to the smaller
// index -- ties of u as computed: two windows at exactly the same true distance can get u a
// few ulps apart, and then the nearer by rounding wins, which can differ from the CPU's choice
// (mp_cpu.py rounds without fused multiply-adds). The key orders by u = 1 - rho >= 0 (a non-negative float's bits order like
// unsigned integers), i.e. by distance, smallest first.
//   float:  key = bits32(u) << 32 | index                 (u exact as computed)
//   double: key = (bits64(u) & ~(2^b - 1)) | index         b = index bits (b = bit length of
//           the largest window index, 20 bits for a million windows), so u keeps 52 - b
//           mantissa bits in the key; the exact double distance is recomputed for the winning
//           index afterwards (finalize_entry below, run by mp_finalize_f64/_f32 in
//           matrix_profile.cu).
#pragma once

#ifndef MP_THREADS
#define MP_THREADS 256     // threads per block
#endif
#ifndef MP_TILE_ROWS
#define MP_TILE_ROWS 2048  // rows per tile; also the restart period of the recurrence
#endif
#define MP_DPT 4           // diagonals per thread (the 4x4 register micro-tile below is written for 4)
#define MP_KAPPA 8.0       // restart where a window's norm is below 1/MP_KAPPA of the recent largest
#define MP_TILE_DIAGS (MP_THREADS * MP_DPT)

#if defined(__CUDACC__)
#define MP_HD __host__ __device__ __forceinline__
#else
#define MP_HD inline
#endif

namespace mp {

typedef unsigned long long Key;
const Key EMPTY_KEY = ~0ull;  // no neighbour yet; above every key of a finite u

// ------------------------------------------------------------------------------ bit casts
MP_HD unsigned int float_bits(float v) {
#ifdef __CUDA_ARCH__
    return __float_as_uint(v);
#else
    unsigned int b;
    __builtin_memcpy(&b, &v, sizeof b);
    return b;
#endif
}
MP_HD float bits_float(unsigned int b) {
#ifdef __CUDA_ARCH__
    return __uint_as_float(b);
#else
    float v;
    __builtin_memcpy(&v, &b, sizeof v);
    return v;
#endif
}
MP_HD Key double_bits(double v) {
#ifdef __CUDA_ARCH__
    return (Key)__double_as_longlong(v);
#else
    Key b;
    __builtin_memcpy(&b, &v, sizeof b);
    return b;
#endif
}
MP_HD double bits_double(Key b) {
#ifdef __CUDA_ARCH__
    return __longlong_as_double((long long)b);
#else
    double v;
    __builtin_memcpy(&v, &b, sizeof v);
    return v;
#endif
}

template <typename Real> MP_HD Real infinity();
template <> MP_HD float infinity<float>() { return bits_float(0x7f800000u); }
template <> MP_HD double infinity<double>() { return bits_double(0x7ff0000000000000ull); }

MP_HD float fused(float a, float b, float c) { return fmaf(a, b, c); }
MP_HD double fused(double a, double b, double c) { return fma(a, b, c); }

// a * b - c * d with every rounding, as written: nvcc and NVRTC contract it into
// fma(a, b, -(c * d)) by default (--fmad=true), so that two identical windows, whose products
// are equal, differed by the rounding error of one product (a distance of 2e-16, not 0).
MP_HD float product_difference(float a, float b, float c, float d) {
#ifdef __CUDA_ARCH__
    return __fsub_rn(__fmul_rn(a, b), __fmul_rn(c, d));
#else
    return a * b - c * d;
#endif
}
MP_HD double product_difference(double a, double b, double c, double d) {
#ifdef __CUDA_ARCH__
    return __dsub_rn(__dmul_rn(a, b), __dmul_rn(c, d));
#else
    return a * b - c * d;
#endif
}

// ------------------------------------------------------------------------------ per-window data
// One window's terms, 4 x sizeof(Real) bytes, aligned so the GPU fetches it in one
// (float) or two (double) 128-bit loads.
template <typename Real>
struct alignas(4 * sizeof(Real)) WinStats {
    Real df;   // (x[i+m-1] - x[i-1]) / 2
    Real dg;   // (x[i+m-1] - mu_i) + (x[i-1] - mu_{i-1})
    Real inv;  // 1 / ||x_i - mu_i||, 0 for constant and non-finite windows
    Real h;    // 0, -0 (restart window), 0.5 (constant) or -inf (non-finite)
};

// Restart windows carry h = -0: one integer comparison of its bits.
MP_HD bool is_restart(const WinStats<float>& w) { return float_bits(w.h) == 0x80000000u; }
MP_HD bool is_restart(const WinStats<double>& w) { return double_bits(w.h) == 0x8000000000000000ull; }

// One context's series as the tile code reads it. In float32 the series and the window means
// are split into hi + lo parts (hi = float(v), lo = float(v - hi)) so that the exact restart
// can centre each value without losing the bits that |x| >> sigma would otherwise cost; in
// double, lo pointers are null and unused.
template <typename Real>
struct SeriesView {
    const WinStats<Real>* st;  // n_windows entries
    const Real* x_hi;          // n_windows + m - 1 points (non-finite values already replaced)
    const Real* x_lo;
    const Real* mu_hi;         // n_windows window means
    const Real* mu_lo;
    int n_windows;
};

// x[i + p] - mu_i, centred exactly enough in either precision (see qt_direct).
MP_HD double centred(const SeriesView<double>& A, int i, int p) { return A.x_hi[i + p] - A.mu_hi[i]; }
MP_HD float centred(const SeriesView<float>& A, int i, int p) {
    return (A.x_hi[i + p] - A.mu_hi[i]) + (A.x_lo[i + p] - A.mu_lo[i]);
}

// Exact mean-centred dot product QT[i][j] (the restart of the recurrence), sequential in p.
MP_HD double qt_direct(const SeriesView<double>& A, const SeriesView<double>& B, int i, int j, int m) {
    const double mi = A.mu_hi[i], mj = B.mu_hi[j];
    double s = 0.0;
    for (int p = 0; p < m; ++p) s = fma(A.x_hi[i + p] - mi, B.x_hi[j + p] - mj, s);
    return s;
}
MP_HD float qt_direct(const SeriesView<float>& A, const SeriesView<float>& B, int i, int j, int m) {
    const float mih = A.mu_hi[i], mil = A.mu_lo[i], mjh = B.mu_hi[j], mjl = B.mu_lo[j];
    float s = 0.0f;
    for (int p = 0; p < m; ++p) {
        // hi - mu_hi is exact when the two are within a factor 2 (Sterbenz), the usual case for
        // a value and its window mean; adding the lo parts then recovers the centred value to
        // float precision of itself, not of |x|.
        const float a = (A.x_hi[i + p] - mih) + (A.x_lo[i + p] - mil);
        const float b = (B.x_hi[j + p] - mjh) + (B.x_lo[j + p] - mjl);
        s = fmaf(a, b, s);
    }
    return s;
}

// One step down a diagonal: QT[i][j] from QT[i-1][j-1].
template <typename Real>
MP_HD Real qt_step(Real qt, const WinStats<Real>& a, const WinStats<Real>& b) {
    return fused(a.df, b.dg, fused(b.df, a.dg, qt));
}

// u = 1 - rho of a cell, clamped at 0 (rho may exceed 1 by rounding); +inf when either window
// is non-finite. H_i = 1 - h_i is hoisted per row. `u > 0 ? u : 0` also maps -0 to +0, which
// the integer ordering of keys needs.
template <typename Real>
MP_HD Real cell_u(Real qt, Real inv_i, Real H_i, const WinStats<Real>& b) {
    const Real u = fused(-(qt * inv_i), b.inv, H_i - b.h);
    return u > Real(0) ? u : Real(0);
}

// z-normalised Euclidean distance from u = 1 - rho.
MP_HD double distance_from_u(double u, int m) { return sqrt(2.0 * m * (u > 0.0 ? u : 0.0)); }

// The reported distance of a chosen pair, from the differences of the z-normalised windows:
// d^2 = m * sum_p ((x_i[p] - mu_i) inv_i - (x_j[p] - mu_j) inv_j)^2. Unlike sqrt(2 m (1 - rho)),
// which cannot resolve distances below about sqrt(2 m eps) (3e-7 in double for m = 24), this is
// accurate to rounding for near-identical shapes. Constant (and non-finite) windows follow the
// rules through h.
template <typename Real>
MP_HD double pair_distance(const SeriesView<Real>& A, const SeriesView<Real>& B, int i, int j, int m) {
    const WinStats<Real> a = A.st[i], b = B.st[j];
    if (a.inv == Real(0) || b.inv == Real(0)) return distance_from_u((double)((Real(1) - a.h) - b.h), m);
    Real s = Real(0);
    for (int p = 0; p < m; ++p) {
        const Real d = product_difference(centred(A, i, p), a.inv, centred(B, j, p), b.inv);
        s = fused(d, d, s);
    }
    return sqrt((double)m * (double)s);
}

// ------------------------------------------------------------------------------ keys
MP_HD int index_bits_for(long long n_windows) {
    int b = 1;
    while ((1ll << b) < n_windows) ++b;
    return b;
}
MP_HD Key pack_key(float u, unsigned int idx, int /*idx_bits*/) {
    return ((Key)float_bits(u) << 32) | (Key)idx;
}
MP_HD Key pack_key(double u, unsigned int idx, int idx_bits) {
    const Key low = (1ull << idx_bits) - 1ull;
    return (double_bits(u) & ~low) | (Key)idx;
}
template <typename Real> MP_HD Real key_u(Key key, int idx_bits);
template <> MP_HD float key_u<float>(Key key, int) { return bits_float((unsigned int)(key >> 32)); }
template <> MP_HD double key_u<double>(Key key, int idx_bits) {
    return bits_double(key & ~((1ull << idx_bits) - 1ull));
}
template <typename Real> MP_HD long long key_index(Key key, int idx_bits);
template <> MP_HD long long key_index<float>(Key key, int) { return (long long)(key & 0xffffffffull); }
template <> MP_HD long long key_index<double>(Key key, int idx_bits) {
    return (long long)(key & ((1ull << idx_bits) - 1ull));
}

// ------------------------------------------------------------------------------ window statistics
// The terms of window w of one context. `x` is the series with non-finite values replaced (by
// the previous finite value, see the Python side), `raw` the original; both n points long.
// Sequential sums, so the host (Numba) code that mirrors this gets the same values up to the
// fused multiply-adds.
template <typename Real>
MP_HD void window_stats(const double* x, const double* raw, int m, int w, bool normalize, WinStats<Real>& st,
                        double& mu_out, double& norm_out) {
    bool finite = true, constant = true;
    const double first = raw[w];
    double s = 0.0;
    for (int p = 0; p < m; ++p) {
        const double v = raw[w + p];
        finite = finite && (v - v == 0.0);  // false for NaN and +-inf
        constant = constant && (v == first);
        s += x[w + p];
    }
    const double mu = normalize ? s / m : 0.0;
    double ss = 0.0;
    for (int p = 0; p < m; ++p) {
        const double c = x[w + p] - mu;
        ss = fma(c, c, ss);
    }
    double df = 0.0, dg = 0.0;
    if (w > 0) {
        double s0 = 0.0;  // mean of window w-1, by the same sequential sum as its own thread's
        for (int p = 0; p < m; ++p) s0 += x[w - 1 + p];
        const double mu0 = normalize ? s0 / m : 0.0;
        df = (x[w + m - 1] - x[w - 1]) * 0.5;
        dg = (x[w + m - 1] - mu) + (x[w - 1] - mu0);
    }
    const bool ordinary = finite && !constant && ss > 0.0;
    st.df = (Real)df;
    st.dg = (Real)dg;
    if (normalize) {
        st.inv = ordinary ? (Real)(1.0 / sqrt(ss)) : Real(0);
        st.h = !finite ? -infinity<Real>() : (ordinary ? Real(0) : Real(0.5));
    } else {
        st.inv = finite ? (Real)(1.0 / sqrt((double)m)) : Real(0);
        st.h = finite ? (Real)(0.5 - ss / (2.0 * m)) : -infinity<Real>();
    }
    mu_out = mu;
    norm_out = sqrt(ss);
}

// Marks the restart windows of one series (h = -0), sequentially: window r is one when it is
// ordinary and max(norm[last .. r-1]) > MP_KAPPA * norm[r], `last` being the previous restart
// window (0 at first). Norms of every window count, constant (0) and non-finite (norm of the
// filled values) ones included.
template <typename Real>
MP_HD void restart_flags(const double* norm, int n_windows, WinStats<Real>* st) {
    double largest = 0.0;
    for (int r = 1; r < n_windows; ++r) {
        largest = norm[r - 1] > largest ? norm[r - 1] : largest;
        if (st[r].h == Real(0) && largest > MP_KAPPA * norm[r]) {
            st[r].h = -Real(0);
            largest = 0.0;  // the next stretch starts at r
        }
    }
}

// ------------------------------------------------------------------------------ one thread's strip
// Valid rows of diagonal k: window i of A against window j = i + k of B, with
// 0 <= i < nA, 0 <= j < nB and j >= col_start.
MP_HD int diag_row_lo(int k, int col_start) {
    int lo = 0;
    if (-k > lo) lo = -k;
    if (col_start - k > lo) lo = col_start - k;
    return lo;
}
// (nB - k is formed in 64 bits: for k < 0, an AB-join's, it can pass INT_MAX; it is returned
// only when below nA.)
MP_HD int diag_row_hi(int k, int nA, int nB) { return nA < (long long)nB - k ? nA : nB - k; }

// Runs the diagonals k_first .. k_first + MP_DPT - 1 (those below k_end) over the rows
// [row_begin, row_end) of a tile and reports every cell's u to `sink`:
//   sink.row(i, u, j): candidate neighbour j for window i of A   (row minimum)
//   sink.col(j, u, i): candidate neighbour i for window j of B   (column minimum)
// Candidates are already reduced within the thread's 4 x 4 micro-tile; only finite u are
// reported. Ties inside the thread go to the smaller index, as the keys do across threads.
// The recurrence restarts exactly at max(row_begin, lo(k)) for every diagonal, and at the rows
// and columns of restart windows.
template <typename Real, class Sink>
MP_HD void process_strip(const SeriesView<Real>& A, const SeriesView<Real>& B, int m, int k_first, int k_end,
                         int row_begin, int row_end, int col_start, Sink& sink) {
    const Real INF = infinity<Real>();
    int nd = k_end - k_first;
    if (nd <= 0) return;
    if (nd > MP_DPT) nd = MP_DPT;
    int s[MP_DPT], e[MP_DPT];
    int rs = row_end, re = row_begin, S = row_begin, E = row_end, n_active = 0;
    for (int b = 0; b < MP_DPT; ++b) {
        s[b] = 0;
        e[b] = 0;
        if (b >= nd) continue;
        const int k = k_first + b;
        int lo = diag_row_lo(k, col_start), hi = diag_row_hi(k, A.n_windows, B.n_windows);
        s[b] = lo > row_begin ? lo : row_begin;
        e[b] = hi < row_end ? hi : row_end;
        if (s[b] >= e[b]) { s[b] = e[b] = 0; continue; }
        ++n_active;
        if (s[b] < rs) rs = s[b];
        if (e[b] > re) re = e[b];
        if (s[b] > S) S = s[b];
        if (e[b] < E) E = e[b];
    }
    if (rs >= re) return;  // no valid cell
    Real qt[MP_DPT];
    for (int b = 0; b < MP_DPT; ++b) qt[b] = Real(0);

    // Generic row: any subset of the diagonals active, restarts where a diagonal begins.
    auto generic_row = [&](int i) {
        const WinStats<Real> a = A.st[i];
        const Real Hi = Real(1) - a.h;
        const bool restart_row = is_restart(a);
        Real best = INF;
        int best_j = -1;
        for (int b = 0; b < nd; ++b) {
            if (i < s[b] || i >= e[b]) continue;
            const int j = i + k_first + b;
            const WinStats<Real> c = B.st[j];
            const bool restart = i == s[b] || restart_row || is_restart(c);
            qt[b] = restart ? qt_direct(A, B, i, j, m) : qt_step(qt[b], a, c);
            const Real u = cell_u(qt[b], a.inv, Hi, c);
            if (u < best) { best = u; best_j = j; }
            if (u < INF) sink.col(j, u, i);
        }
        if (best_j >= 0) sink.row(i, best, best_j);
    };

    // Fast region: all MP_DPT diagonals valid on every row. Row S initialises every diagonal
    // (each begins at or before S), so the 4-row steps start at S + 1.
    const bool fast = (n_active == MP_DPT) && (S < E);
    const int fast_begin = fast ? S + 1 : re;
    int i = rs;
    for (; i < fast_begin && i < re; ++i) generic_row(i);
    if (fast) {
        // Column statistics for columns i + k_first + 0..6 roll through registers: each 4-row
        // step reuses three and loads four. Likewise the minima of columns 4..6, which the next
        // step continues (as its columns 0..2), stay in registers: a step reports only the
        // four columns it completes.
        WinStats<Real> cs[2 * MP_DPT - 1];
        Real carry_u[MP_DPT - 1];
        int carry_i[MP_DPT - 1];
        for (int c = 0; c < MP_DPT - 1; ++c) {
            cs[c] = B.st[i + k_first + c];
            carry_u[c] = INF;
            carry_i[c] = -1;
        }
        auto flush_carry = [&](int j0) {  // columns j0 .. j0 + 2 carry earlier rows' minima
            for (int c = 0; c < MP_DPT - 1; ++c) {
                if (carry_i[c] >= 0) sink.col(j0 + c, carry_u[c], carry_i[c]);
                carry_u[c] = INF;
                carry_i[c] = -1;
            }
        };
        for (; i + MP_DPT <= E; i += MP_DPT) {
            const int j0 = i + k_first;
            for (int c = MP_DPT - 1; c < 2 * MP_DPT - 1; ++c) cs[c] = B.st[j0 + c];
            WinStats<Real> rs4[MP_DPT];
            bool flagged = false;  // a restart window among the micro-tile's rows or columns
            for (int a = 0; a < MP_DPT; ++a) {
                rs4[a] = A.st[i + a];
                flagged = flagged || is_restart(rs4[a]);
            }
            for (int c = 0; c < 2 * MP_DPT - 1; ++c) flagged = flagged || is_restart(cs[c]);
            if (flagged) {  // rare: the generic rows restart the affected cells
                flush_carry(j0);
                for (int a = 0; a < MP_DPT; ++a) generic_row(i + a);
                for (int c = 0; c < MP_DPT - 1; ++c) cs[c] = cs[c + MP_DPT];
                continue;
            }
            Real u[MP_DPT][MP_DPT];  // [row a][diagonal b], column a + b
            for (int a = 0; a < MP_DPT; ++a) {
                const WinStats<Real> ra = rs4[a];
                const Real Hi = Real(1) - ra.h;
                for (int b = 0; b < MP_DPT; ++b) {
                    qt[b] = qt_step(qt[b], ra, cs[a + b]);
                    u[a][b] = cell_u(qt[b], ra.inv, Hi, cs[a + b]);
                }
            }
            for (int a = 0; a < MP_DPT; ++a) {  // row minima: smallest b (smallest j) wins ties
                Real best = u[a][0];
                int bb = 0;
                for (int b = 1; b < MP_DPT; ++b)
                    if (u[a][b] < best) { best = u[a][b]; bb = b; }
                if (best < INF) sink.row(i + a, best, j0 + a + bb);
            }
            for (int c = 0; c < 2 * MP_DPT - 1; ++c) {  // column minima: smallest a (smallest i) wins ties
                Real best = INF;
                int bi = -1;
                for (int a = 0; a < MP_DPT; ++a) {
                    const int b = c - a;
                    if (b < 0 || b >= MP_DPT) continue;
                    if (u[a][b] < best) { best = u[a][b]; bi = i + a; }
                }
                if (c < MP_DPT - 1 && carry_i[c] >= 0 && !(best < carry_u[c])) {
                    best = carry_u[c];  // the earlier rows: they win ties
                    bi = carry_i[c];
                }
                if (c < MP_DPT) {
                    if (bi >= 0) sink.col(j0 + c, best, bi);
                } else {
                    carry_u[c - MP_DPT] = best;
                    carry_i[c - MP_DPT] = bi;
                }
            }
            for (int c = 0; c < MP_DPT - 1; ++c) cs[c] = cs[c + MP_DPT];
        }
        flush_carry(i + k_first);
    }
    for (; i < re; ++i) generic_row(i);
}

// ------------------------------------------------------------------------------ keys to results
// Profile entry e's key to (distance, index); no neighbour gives (+inf, -1). The key chose the
// neighbour; the distance to it is recomputed by pair_distance, so the reported value has the
// working precision's full accuracy although a double key keeps only 52 - idx_bits bits of u.
// `keys_are_columns`: e is a window of B and the key's index one of A (the left profile of a
// self-join), else the reverse.
template <typename Real>
MP_HD void finalize_entry(Key key, int e, int m, int idx_bits, const SeriesView<Real>& A, const SeriesView<Real>& B,
                          bool keys_are_columns, double& dist, long long& index) {
    if (key == EMPTY_KEY) {
        dist = infinity<double>();
        index = -1;
        return;
    }
    const long long nb = key_index<Real>(key, idx_bits);
    const int i = keys_are_columns ? (int)nb : e;  // window of A
    const int j = keys_are_columns ? e : (int)nb;  // window of B
    dist = pair_distance<Real>(A, B, i, j, m);
    index = nb;
}

}  // namespace mp
