// Batched robust STL on the GPU: one thread per context, the whole batch per
// launch.  The arithmetic is in stl.cuh (shared with the host test harness);
// this file only maps threads to contexts.
//
// Arrays are time-major: element t of context c is X[t * n_ctx + c], so the
// threads of a warp (consecutive contexts) read consecutive addresses.
#include "stl.cuh"

// Builds the four LOESS plans (seasonal for ceil(n/p) and ceil(n/p) - 1
// points, trend, low-pass) into `plans` at the given offsets (in doubles;
// 64-bit: they pass 2**31 for long series, see stl.cuh).  One thread.
extern "C" __global__ void stl_build_plans(double* plans, int n, int p, int seasonal, int trend,
                                           int low_pass, int seasonal_deg, int trend_deg,
                                           int low_pass_deg, long long off_a, long long off_b,
                                           long long off_t, long long off_l) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    int k_a = (n - 1) / p + 1;
    int k_b = k_a - 1 > 1 ? k_a - 1 : 1;
    stl_build_plan(plans + off_a, k_a, seasonal, seasonal_deg, true);
    stl_build_plan(plans + off_b, k_b, seasonal, seasonal_deg, true);
    stl_build_plan(plans + off_t, n, trend, trend_deg, false);
    stl_build_plan(plans + off_l, n, low_pass, low_pass_deg, false);
}

// STL of every context: y, season, trend, rw are (n, n_ctx) time-major;
// work holds stl_work_rows(n, p) rows of n_ctx values.
extern "C" __global__ void stl_batch(const double* __restrict__ y, double* season, double* trend,
                                     double* rw, double* work, const double* __restrict__ plans,
                                     long long off_a, long long off_b, long long off_t,
                                     long long off_l, int n_ctx, int n,
                                     int p, int inner_iter, int outer_iter) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= n_ctx) return;
    StlPlan Pa = stl_plan_view(plans + off_a);
    StlPlan Pb = stl_plan_view(plans + off_b);
    StlPlan Pt = stl_plan_view(plans + off_t);
    StlPlan Pl = stl_plan_view(plans + off_l);
    stl_one(y + c, season + c, trend + c, rw + c, work + c, (stl_idx)n_ctx, n, p, inner_iter,
            outer_iter, Pa, Pb, Pt, Pl);
}

// Gap filling of every context (time-major, as above); n_obs[c] receives the
// number of observed points of context c.
extern "C" __global__ void stl_fill_gaps_batch(const double* __restrict__ x, double* out,
                                               long long* n_obs, int n_ctx, int n) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= n_ctx) return;
    n_obs[c] = stl_fill_gaps(x + c, out + c, (stl_idx)n_ctx, n);
}
