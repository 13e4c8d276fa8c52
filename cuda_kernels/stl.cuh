// Robust STL (Cleveland et al. 1990) for one context: the arithmetic of the
// GPU kernel in stl.cu, written as __host__ __device__ functions so that a host
// harness compiled with nvcc runs exactly this code on the CPU (tests/test_stl.py).
//
// It follows statsmodels' port of the NETLIB Fortran (statsmodels/tsa/stl/_stl.pyx)
// step for step and computes what tsanomaly/kernels/stl_cpu.py computes: the
// same plans (windows, tricube weights), the same fit coefficients (a fit is
// c0*T0 + c1*T1, c0/c1 computed once per robustness iteration, see that
// module's docstring) and the same exact median.  The CPU kernel only adds
// layout tricks (SIMD across contexts, stencils for the centred windows, a
// median guessed from the previous iteration) that change the summation
// order, hence the rounding, not the result.
//
// Layout: every per-context array is strided.  Element i of the context's array
// X is X[i * ld] (the kernel passes X + ctx with ld = number of contexts, so
// that the threads of a warp read consecutive addresses); the harness may pass
// ld = 1 for one contiguous series.
#pragma once

#if !defined(__CUDACC_RTC__)
#include <cmath>
#endif

#if defined(__CUDACC__)
#define STL_HD __host__ __device__ inline
#else
#define STL_HD inline
#endif

typedef long long stl_idx;

STL_HD double stl_nan() {
#if defined(__CUDA_ARCH__)
    return __longlong_as_double(0x7ff8000000000000LL);
#else
    return __builtin_nan("");
#endif
}

STL_HD bool stl_isnan(double x) { return x != x; }

// a * b + c with both roundings, as the CPU (Numba, without fastmath) computes it: nvcc and
// NVRTC contract a * b + c into one fma by default (--fmad=true), which rounds once, and the
// gaps filled on a GPU differed from the CPU's in the last bit (59 of 2,852 values).
STL_HD double stl_mul_add(double a, double b, double c) {
#if defined(__CUDA_ARCH__)
    return __dadd_rn(__dmul_rn(a, b), c);
#else
    return a * b + c;
#endif
}
STL_HD int stl_imin(int a, int b) { return a < b ? a : b; }
STL_HD int stl_imax(int a, int b) { return a > b ? a : b; }

// ---------------------------------------------------------------------------
// LOESS plans: windows and tricube weights of one LOESS pass, shared by every
// context.  Packed in a double array (small integers are exact in a double):
//   [m, w, deg, rng, lo[m], cnt[m], h[m], c0[m], c1[m], K[m*w], KD[m*w], KDD[m*w]]
// Sizes and offsets are 64-bit (stl_idx): m * w passes 2**31 for long series
// (a trend plan of 262,800 minutes with window 2751 is 2.2e9 doubles).
// ---------------------------------------------------------------------------
struct StlPlan {
    int m;       // number of outputs
    int w;       // row width of the weight tables
    int deg;     // degree of the local polynomial (0 or 1)
    double rng;  // k - 1: scale of statsmodels' "can a slope be fitted" test
    const double* lo;   // first input (0-based) of output m's window
    const double* cnt;  // inputs with a non-zero weight
    const double* h;    // half-width of the window
    const double* c0;   // fit coefficients with unit robustness weights (NaN: no weight)
    const double* c1;
    const double* K;    // tricube weights, row m
    const double* KD;   // ... times the offset d from the fitted point
    const double* KDD;  // ... times d*d
};

STL_HD stl_idx stl_plan_size(int k, int length, bool extrapolate) {
    stl_idx m = extrapolate ? k + 2 : k;
    stl_idx w = stl_imin(length, k) + 1;
    return 4 + 5 * m + 3 * m * w;
}

STL_HD StlPlan stl_plan_view(const double* p) {
    StlPlan P;
    P.m = (int)p[0];
    P.w = (int)p[1];
    P.deg = (int)p[2];
    P.rng = p[3];
    const double* q = p + 4;
    P.lo = q; q += P.m;
    P.cnt = q; q += P.m;
    P.h = q; q += P.m;
    P.c0 = q; q += P.m;
    P.c1 = q; q += P.m;
    P.K = q; q += (stl_idx)P.m * P.w;
    P.KD = q; q += (stl_idx)P.m * P.w;
    P.KDD = q;
    return P;
}

// Tricube weight at distance r for half-width h, with statsmodels' cut-offs.
STL_HD double stl_tricube(double r, double h) {
    if (r <= 0.999 * h) {
        if (r <= 0.001 * h) return 1.0;
        double q = r / h;
        q = 1.0 - q * q * q;
        return q * q * q;
    }
    return 0.0;
}

// 1-based window (nleft, nright) of point i (0-based) in statsmodels' _ess, jump 1.
STL_HD void stl_ess_window(int i, int n, int length, int* nleft, int* nright) {
    if (length >= n) {
        *nleft = 1;
        *nright = n;
        return;
    }
    int nsh = (length + 2) / 2;
    int shift = stl_imin(stl_imax(i + 1 - nsh, 0), n - length);
    *nleft = 1 + shift;
    *nright = length + shift;
}

// Fit coefficients of one window from its weighted moments s_k = sum w d^k:
// statsmodels' _est is sum_j w_j/s0 (1 + b (d_j - abar)) y_j with abar = s1/s0,
// var = s2/s0 - abar^2, b = -abar/var (a local line, used when deg > 0, h > 0
// and sqrt(var) > 0.001 rng), else the weighted mean.  Both are
// c0 * sum w y + c1 * sum w d y: (s2, -s1) / (s0 s2 - s1^2) for the line,
// (1/s0, 0) for the mean.  An empty window gives c0 = NaN (caller falls back).
STL_HD void stl_coef(double s0, double s1, double s2, double h, int deg, double rng,
                     double* c0, double* c1) {
    if (s0 <= 0.0) {
        *c0 = stl_nan();
        *c1 = 0.0;
        return;
    }
    double thr = 0.001 * rng;
    double det = s0 * s2 - s1 * s1;  // s0^2 * var
    if (h > 0.0 && deg > 0 && det > thr * thr * (s0 * s0)) {
        double inv = 1.0 / det;
        *c0 = s2 * inv;
        *c1 = -s1 * inv;
        return;
    }
    *c0 = 1.0 / s0;
    *c1 = 0.0;
}

// Plan of a LOESS pass over k points with window `length` (odd) and degree deg.
// Without extrapolation the k outputs are the k inputs (_ess); with it (the
// cycle-subseries of _ss) there are k + 2 outputs, output m at input m - 1, the
// first and last extrapolated one step beyond the data.  Only inputs with a
// non-zero weight are kept (the zeros are at the ends of the window).
STL_HD void stl_build_plan(double* out, int k, int length, int deg, bool extrapolate) {
    int m_count = extrapolate ? k + 2 : k;
    int w = stl_imin(length, k) + 1;
    out[0] = m_count;
    out[1] = w;
    out[2] = deg;
    out[3] = k - 1.0;
    double rng = k - 1.0;
    double* lo = out + 4;
    double* cnt = lo + m_count;
    double* hs = cnt + m_count;
    double* c0 = hs + m_count;
    double* c1 = c0 + m_count;
    double* K = c1 + m_count;
    double* KD = K + (stl_idx)m_count * w;
    double* KDD = KD + (stl_idx)m_count * w;
    for (stl_idx i = 0; i < 3 * (stl_idx)m_count * w; ++i) K[i] = 0.0;
    for (int m = 0; m < m_count; ++m) {
        int xs, nleft, nright;
        if (extrapolate && m == 0) {
            xs = 0;
            nleft = 1;
            nright = stl_imin(length, k);
        } else if (extrapolate && m == k + 1) {
            xs = k + 1;
            nleft = stl_imax(1, k - length + 1);
            nright = k;
        } else if (extrapolate) {
            xs = m;
            stl_ess_window(m - 1, k, length, &nleft, &nright);
        } else {
            xs = m + 1;
            stl_ess_window(m, k, length, &nleft, &nright);
        }
        double h = (double)stl_imax(xs - nleft, nright - xs);
        if (length > k) h += (length - k) / 2;
        hs[m] = h;
        int first = -1;
        int c = 0;
        double* Km = K + (stl_idx)m * w;
        double* KDm = KD + (stl_idx)m * w;
        double* KDDm = KDD + (stl_idx)m * w;
        for (int j = nleft; j <= nright; ++j) {
            double d = (double)(j - xs);
            double wt = stl_tricube(d < 0 ? -d : d, h);
            if (wt == 0.0) continue;
            if (first < 0) first = j;
            Km[c] = wt;
            KDm[c] = wt * d;
            KDDm[c] = wt * d * d;
            ++c;
        }
        lo[m] = (first >= 0 ? first : nleft) - 1;
        cnt[m] = c;
        // from both ends inwards: a symmetric window gets s1 == 0 exactly
        double s0 = 0.0, s1 = 0.0, s2 = 0.0;
        int a = 0, z = c - 1;
        while (a < z) {
            s0 += Km[a] + Km[z];
            s1 += KDm[a] + KDm[z];
            s2 += KDDm[a] + KDDm[z];
            ++a;
            --z;
        }
        if (a == z) {
            s0 += Km[a];
            s1 += KDm[a];
            s2 += KDDm[a];
        }
        stl_coef(s0, s1, s2, h, deg, rng, &c0[m], &c1[m]);
    }
}

// ---------------------------------------------------------------------------
// One context's passes.  A LOESS sequence starts at row `base` with row stride
// `rs` (1: the whole series; the period: a cycle-subseries).
// ---------------------------------------------------------------------------

// t0 = sum_e K[m,e] z[base + rs e], t1 likewise with KD (skipped unless need_t1).
STL_HD void stl_window_sums(const double* z, stl_idx ld, int base, int rs, const StlPlan& P,
                            int m, bool need_t1, double* t0, double* t1) {
    const double* K = P.K + (stl_idx)m * P.w;
    const double* KD = P.KD + (stl_idx)m * P.w;
    int cnt = (int)P.cnt[m];
    double a = 0.0, b = 0.0;
    for (int e = 0; e < cnt; ++e) {
        double v = z[(stl_idx)(base + rs * e) * ld];
        a += K[e] * v;
        if (need_t1) b += KD[e] * v;
    }
    *t0 = a;
    *t1 = b;
}

// Weighted moments of output m's window under robustness weights rw.
STL_HD void stl_window_moments(const double* rw, stl_idx ld, int base, int rs, const StlPlan& P,
                               int m, double* s0, double* s1, double* s2) {
    const double* K = P.K + (stl_idx)m * P.w;
    const double* KD = P.KD + (stl_idx)m * P.w;
    const double* KDD = P.KDD + (stl_idx)m * P.w;
    int cnt = (int)P.cnt[m];
    double a = 0.0, b = 0.0, c = 0.0;
    for (int e = 0; e < cnt; ++e) {
        double v = rw[(stl_idx)(base + rs * e) * ld];
        a += K[e] * v;
        b += KD[e] * v;
        c += KDD[e] * v;
    }
    *s0 = a;
    *s1 = b;
    *s2 = c;
}

// LOESS of a whole series at every point (trend, low-pass): statsmodels' _ess.
// z: data times robustness weights, src: data (kept where a window has no
// weight); robust selects the context's coefficients C0/C1 over the plan's.
STL_HD void stl_ess_pass(const double* z, const double* src, stl_idx ld, const StlPlan& P,
                         bool robust, const double* C0, const double* C1, double* out) {
    for (int m = 0; m < P.m; ++m) {
        bool need_t1 = robust || P.c1[m] != 0.0;
        double t0, t1;
        stl_window_sums(z, ld, (int)P.lo[m], 1, P, m, need_t1, &t0, &t1);
        double a = robust ? C0[(stl_idx)m * ld] : P.c0[m];
        double b = robust ? C1[(stl_idx)m * ld] : P.c1[m];
        out[(stl_idx)m * ld] = stl_isnan(a) ? src[(stl_idx)m * ld] : a * t0 + b * t1;
    }
}

// Coefficients of an _ess pass under robustness weights rw.
STL_HD void stl_ess_coefs(const double* rw, stl_idx ld, const StlPlan& P, double* C0, double* C1) {
    for (int m = 0; m < P.m; ++m) {
        double s0, s1, s2;
        stl_window_moments(rw, ld, (int)P.lo[m], 1, P, m, &s0, &s1, &s2);
        stl_coef(s0, s1, s2, P.h[m], P.deg, P.rng, &C0[(stl_idx)m * ld], &C1[(stl_idx)m * ld]);
    }
}

// Cycle-subseries smoothing (statsmodels' _ss).  Phase j is rows j, j+p, ...
// of src (n rows); its output m goes to row m*p + j of out (n + 2p rows: each
// subseries smooth extended by one cycle at both ends).  Phases with
// ceil(n/p) points use Pa, the others Pb.
STL_HD void stl_seasonal_pass(const double* z, const double* src, stl_idx ld, int n, int p,
                              const StlPlan& Pa, const StlPlan& Pb, bool robust,
                              const double* C0, const double* C1, double* out) {
    int k_a = Pa.m - 2;
    for (int j = 0; j < p; ++j) {
        int k = (n - (j + 1)) / p + 1;
        const StlPlan& P = (k == k_a) ? Pa : Pb;
        for (int m = 0; m < k + 2; ++m) {
            bool need_t1 = robust || P.c1[m] != 0.0;
            double t0, t1;
            stl_window_sums(z, ld, (int)P.lo[m] * p + j, p, P, m, need_t1, &t0, &t1);
            stl_idx r = (stl_idx)(m * p + j);
            double a = robust ? C0[r * ld] : P.c0[m];
            double b = robust ? C1[r * ld] : P.c1[m];
            if (!stl_isnan(a)) {
                out[r * ld] = a * t0 + b * t1;
            } else if (m >= 1 && m <= k) {
                out[r * ld] = src[(r - p) * ld];  // no weight: keep the data
            }
        }
        // an extrapolated end without weight copies its neighbouring fit
        stl_idx r0 = j, r1 = p + j, rk = (stl_idx)k * p + j, rk1 = (stl_idx)(k + 1) * p + j;
        if (stl_isnan(robust ? C0[r0 * ld] : P.c0[0])) out[r0 * ld] = out[r1 * ld];
        if (stl_isnan(robust ? C0[rk1 * ld] : P.c0[k + 1])) out[rk1 * ld] = out[rk * ld];
    }
}

// Coefficients of the cycle-subseries pass under rw (rows as in stl_seasonal_pass).
STL_HD void stl_seasonal_coefs(const double* rw, stl_idx ld, int n, int p, const StlPlan& Pa,
                               const StlPlan& Pb, double* C0, double* C1) {
    int k_a = Pa.m - 2;
    for (int j = 0; j < p; ++j) {
        int k = (n - (j + 1)) / p + 1;
        const StlPlan& P = (k == k_a) ? Pa : Pb;
        for (int m = 0; m < k + 2; ++m) {
            double s0, s1, s2;
            stl_window_moments(rw, ld, (int)P.lo[m] * p + j, p, P, m, &s0, &s1, &s2);
            stl_idx r = (stl_idx)(m * p + j);
            stl_coef(s0, s1, s2, P.h[m], P.deg, P.rng, &C0[r * ld], &C1[r * ld]);
        }
    }
}

// statsmodels' _ma: running means of `length` rows of x[0..n) into ave[0..n-length].
// (Multiplying by 1/length rather than dividing, as the CPU kernel does: at
// most an ulp from statsmodels.)
STL_HD void stl_moving_average(const double* x, stl_idx ld, int n, int length, double* ave) {
    double rlen = 1.0 / (double)length;
    double v = 0.0;
    for (int i = 0; i < length; ++i) v += x[(stl_idx)i * ld];
    ave[0] = v * rlen;
    for (int j = 1; j < n - length + 1; ++j) {
        v += x[(stl_idx)(j + length - 1) * ld] - x[(stl_idx)(j - 1) * ld];
        ave[(stl_idx)j * ld] = v * rlen;
    }
}

// The k-th smallest (0-based) of a[0..n) (strided; a is not modified).
// Quickselect with a branch-free three-way partition: each value is written to
// the next free slot at both ends of a buffer and only the cursor of its side
// moves, so values equal to the pivot are dropped (they are all the pivot).
// buf0 and buf1 (n values each, strided) take turns as the buffer.
STL_HD double stl_select(const double* a, double* buf0, double* buf1, stl_idx ld, int n, int k) {
    int which = 0;  // candidates in 0: a, 1: buf0, 2: buf1
    int base = 0;
    int m = n;
    while (m > 12) {
        const double* src = which == 0 ? a : (which == 1 ? buf0 : buf1);
        double* dst = which == 1 ? buf1 : buf0;
        double x0 = src[(stl_idx)base * ld];
        double x1 = src[(stl_idx)(base + m / 2) * ld];
        double x2 = src[(stl_idx)(base + m - 1) * ld];
        double lo01 = x0 < x1 ? x0 : x1, hi01 = x0 < x1 ? x1 : x0;
        double mid = hi01 < x2 ? hi01 : x2;
        double pivot = lo01 > mid ? lo01 : mid;  // median of three
        int f = 0, g = m - 1;
        for (int i = 0; i < m; ++i) {
            double v = src[(stl_idx)(base + i) * ld];
            dst[(stl_idx)f * ld] = v;
            dst[(stl_idx)g * ld] = v;
            f += (v < pivot);
            g -= (v > pivot);
        }
        int n_gt = m - 1 - g;
        if (k < f) {
            m = f;
            base = 0;
        } else if (k >= m - n_gt) {
            k -= m - n_gt;
            base = m - n_gt;
            m = n_gt;
        } else {
            return pivot;
        }
        which = which == 1 ? 2 : 1;
    }
    // a few candidates left: selection sort up to position k, in the free buffer
    const double* src = which == 0 ? a : (which == 1 ? buf0 : buf1);
    double* tmp = which == 1 ? buf1 : buf0;
    for (int i = 0; i < m; ++i) tmp[(stl_idx)i * ld] = src[(stl_idx)(base + i) * ld];
    for (int i = 0; i <= k; ++i) {
        int jm = i;
        for (int j = i + 1; j < m; ++j)
            if (tmp[(stl_idx)j * ld] < tmp[(stl_idx)jm * ld]) jm = j;
        double t = tmp[(stl_idx)i * ld];
        tmp[(stl_idx)i * ld] = tmp[(stl_idx)jm * ld];
        tmp[(stl_idx)jm * ld] = t;
    }
    return tmp[(stl_idx)k * ld];
}

// statsmodels' _rwts: bisquare weights of the residuals y - (trend + season),
// scaled by 6 x their median (mean of the values of order n/2 and n - n/2 - 1);
// all weights are 1 when that is 0.  scratch: 2n strided values.
STL_HD void stl_robustness_weights(const double* y, const double* season, const double* trend,
                                   double* rw, double* scratch, stl_idx ld, int n) {
    for (int i = 0; i < n; ++i) {
        stl_idx r = (stl_idx)i * ld;
        rw[r] = fabs(y[r] - (trend[r] + season[r]));
    }
    int k1 = n / 2;
    int k0 = n - k1 - 1;
    double hi = stl_select(rw, scratch, scratch + (stl_idx)n * ld, ld, n, k1);
    double lo = hi;
    if (k0 != k1) {
        // order k1 - 1: the largest value below hi, unless hi is tied there
        int below = 0;
        double top = -1.0;
        for (int i = 0; i < n; ++i) {
            double v = rw[(stl_idx)i * ld];
            if (v < hi) {
                ++below;
                top = v > top ? v : top;
            }
        }
        lo = below == k1 ? top : hi;
    }
    double cmad = 3.0 * (hi + lo);
    for (int i = 0; i < n; ++i) {
        stl_idx r = (stl_idx)i * ld;
        double v = rw[r];
        double w;
        if (cmad == 0.0) {
            w = 1.0;
        } else if (v <= 0.001 * cmad) {
            w = 1.0;
        } else if (v <= 0.999 * cmad) {
            double q = v / cmad;
            q = 1.0 - q * q;
            w = q * q;
        } else {
            w = 0.0;
        }
        rw[r] = w;
    }
}

// Rows of the per-context work area used by stl_one (times ld doubles).
STL_HD stl_idx stl_work_rows(int n, int p) { return 6 * (stl_idx)n + 5 * (stl_idx)(n + 2 * p) + 2 * (stl_idx)n; }

// Robust STL of one context: statsmodels' STL.fit / _onestp.  Writes the
// seasonal and trend components and the final robustness weights.
// work: stl_work_rows(n, p) strided rows.
STL_HD void stl_one(const double* y, double* season, double* trend, double* rw, double* work,
                    stl_idx ld, int n, int p, int inner_iter, int outer_iter, const StlPlan& Pa,
                    const StlPlan& Pb, const StlPlan& Pt, const StlPlan& Pl) {
    stl_idx M = n + 2 * p;
    double* D = work;
    double* Z = D + n * ld;
    double* LP = Z + n * ld;
    double* C0t = LP + n * ld;
    double* C1t = C0t + n * ld;
    double* C = C1t + n * ld;
    double* A = C + M * ld;
    double* B = A + M * ld;
    double* C0s = B + M * ld;
    double* C1s = C0s + M * ld;
    double* scratch = C1s + M * ld;  // 2n rows
    for (int i = 0; i < n; ++i) {
        season[(stl_idx)i * ld] = 0.0;
        trend[(stl_idx)i * ld] = 0.0;
        rw[(stl_idx)i * ld] = 1.0;
    }
    bool userw = false;
    int it = 0;
    while (true) {
        for (int pass = 0; pass < inner_iter; ++pass) {
            // cycle-subseries smoothing of the detrended series -> C (n + 2p rows)
            for (int i = 0; i < n; ++i) {
                stl_idx r = (stl_idx)i * ld;
                double d = y[r] - trend[r];
                D[r] = d;
                Z[r] = userw ? rw[r] * d : d;
            }
            stl_seasonal_pass(Z, D, ld, n, p, Pa, Pb, userw, C0s, C1s, C);
            // low-pass filter of C: moving averages of p, p and 3, then LOESS
            stl_moving_average(C, ld, n + 2 * p, p, A);
            stl_moving_average(A, ld, n + p + 1, p, B);
            stl_moving_average(B, ld, n + 2, 3, A);
            stl_ess_pass(A, A, ld, Pl, false, C0t, C1t, LP);
            for (int i = 0; i < n; ++i) {
                stl_idx r = (stl_idx)i * ld;
                double s = C[(stl_idx)(p + i) * ld] - LP[r];
                season[r] = s;
                double d = y[r] - s;
                D[r] = d;
                Z[r] = userw ? rw[r] * d : d;
            }
            // trend: LOESS of the deseasonalised series
            stl_ess_pass(Z, D, ld, Pt, userw, C0t, C1t, trend);
        }
        ++it;
        if (it > outer_iter) break;
        stl_robustness_weights(y, season, trend, rw, scratch, ld, n);
        userw = true;
        // the fit coefficients depend on the weights only: once per outer iteration
        stl_seasonal_coefs(rw, ld, n, p, Pa, Pb, C0s, C1s);
        stl_ess_coefs(rw, ld, Pt, C0t, C1t);
    }
}

// Missing points (NaN) of one context: linear interpolation in time between
// observations (numpy.interp's arithmetic), the first / last observation held
// before / after them.  Returns the number of observations; a context without
// any stays all-NaN.
STL_HD int stl_fill_gaps(const double* x, double* out, stl_idx ld, int n) {
    int prev = -1;
    int count = 0;
    for (int t = 0; t < n; ++t) {
        double v = x[(stl_idx)t * ld];
        if (stl_isnan(v)) continue;
        ++count;
        out[(stl_idx)t * ld] = v;
        if (prev < 0) {
            for (int u = 0; u < t; ++u) out[(stl_idx)u * ld] = v;
        } else if (t - prev > 1) {
            double xp = x[(stl_idx)prev * ld];
            double slope = (v - xp) / (double)(t - prev);
            for (int u = prev + 1; u < t; ++u) out[(stl_idx)u * ld] = stl_mul_add(slope, (double)(u - prev), xp);
        }
        prev = t;
    }
    if (count == 0) {
        for (int t = 0; t < n; ++t) out[(stl_idx)t * ld] = stl_nan();
    } else {
        double last = x[(stl_idx)prev * ld];
        for (int u = prev + 1; u < n; ++u) out[(stl_idx)u * ld] = last;
    }
    return count;
}
