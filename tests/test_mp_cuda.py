"""The CUDA matrix-profile kernels without a GPU: nvcc compiles them, and a host harness runs
the header's tile arithmetic on the CPU.

``cuda_kernels/matrix_profile.cuh`` holds the per-element arithmetic of the kernels (window
terms, restart flags, one thread's strip of diagonals with its 4 x 4 micro-tiles and exact
restarts, the 64-bit keys, the final distances) as ``__host__ __device__`` functions. The
harness below, compiled by nvcc as host code, runs those very functions tile by tile and
thread by thread as the GPU grid would (sequentially, so the shared-memory atomics become
plain minima) and checks every index it is handed against the tile's bounds. Comparing it
with the brute-force reference checks the GPU's arithmetic and indexing on every CI run, and
the launches of tsanomaly/kernels/mp_gpu.py are checked against the kernels' PTX parameter
lists with a NumPy stand-in for CuPy; only the parallel scaffolding of matrix_profile.cu
(blocks, shared memory, atomics) and the speed wait for a GPU.
"""
from __future__ import annotations

import math
import shutil
import struct
import subprocess

import numpy as np
import pytest

from naive_mp import distance_matrix, naive_matrix_profile
from tsanomaly.backend import cuda_kernels_dir
from tsanomaly.detectors.matrix_profile import SINGLE_PRECISION_RHO_BOUND
from tsanomaly.kernels import mp_cpu

NVCC = shutil.which("nvcc")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc (CUDA toolkit) not on PATH")

HARNESS = r"""// Host harness: runs matrix_profile.cuh's tile code on the CPU, tile by tile, thread by thread.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include "matrix_profile.cuh"

using namespace mp;

// __host__ __device__ only so that the tile code (which is) may call the sinks; runs on the host.
__host__ __device__ static void fail(const char* what, long long a, long long b) {
#ifndef __CUDA_ARCH__
    std::fprintf(stderr, "harness: %s (%lld, %lld)\n", what, a, b);
    std::exit(3);
#endif
}

template <typename Real>
struct HostSink {
    Key* rows; Key* cols; int row_base; int col_base; int idx_bits; bool want_cols; int nA; int nB;
    __host__ __device__ void row(int i, Real u, int j) {
        if (i - row_base < 0 || i - row_base >= MP_TILE_ROWS || i < 0 || i >= nA || j < 0 || j >= nB)
            fail("row out of tile", i, j);
        if (!(u >= Real(0))) fail("row u not >= 0", i, j);
        const Key k = pack_key(u, (unsigned)j, idx_bits);
        Key& s = rows[i - row_base];
        if (k < s) s = k;
    }
    __host__ __device__ void col(int j, Real u, int i) {
        if (j - col_base < 0 || j - col_base >= MP_TILE_ROWS + MP_TILE_DIAGS || j < 0 || j >= nB || i < 0 || i >= nA)
            fail("col out of tile", j, i);
        if (!want_cols) return;
        const Key k = pack_key(u, (unsigned)i, idx_bits);
        Key& s = cols[j - col_base];
        if (k < s) s = k;
    }
};

struct Input { std::vector<double> x, raw; };

template <typename Real>
struct Prepared {
    std::vector<WinStats<Real>> st; std::vector<double> mu;
    std::vector<Real> x_hi, x_lo, mu_hi, mu_lo;
    SeriesView<Real> view(int nw) {
        SeriesView<Real> v; v.st = st.data(); v.x_hi = x_hi.data(); v.mu_hi = mu_hi.data();
        v.x_lo = sizeof(Real) == 4 ? x_lo.data() : nullptr; v.mu_lo = sizeof(Real) == 4 ? mu_lo.data() : nullptr;
        v.n_windows = nw; return v;
    }
};

template <typename Real>
static Prepared<Real> prepare(const Input& in, int m, bool normalize) {
    const int n = (int)in.x.size(), nw = n - m + 1;
    Prepared<Real> p; p.st.resize(nw); p.mu.resize(nw);
    std::vector<double> norm(nw);
    for (int w = 0; w < nw; ++w)
        window_stats<Real>(in.x.data(), in.raw.data(), m, w, normalize, p.st[w], p.mu[w], norm[w]);
    if (normalize) restart_flags<Real>(norm.data(), nw, p.st.data());  // as mp_gpu.py launches them
    p.x_hi.resize(n); p.x_lo.resize(n); p.mu_hi.resize(nw); p.mu_lo.resize(nw);
    for (int t = 0; t < n; ++t) { p.x_hi[t] = (Real)in.x[t]; p.x_lo[t] = (Real)(in.x[t] - (double)p.x_hi[t]); }
    for (int w = 0; w < nw; ++w) { p.mu_hi[w] = (Real)p.mu[w]; p.mu_lo[w] = (Real)(p.mu[w] - (double)p.mu_hi[w]); }
    return p;
}

template <typename Real>
static int run(FILE* out, const Input& a, const Input& b, bool self_join, int m, int col_start, int k_begin,
               int k_end, bool normalize) {
    Prepared<Real> pa = prepare<Real>(a, m, normalize);
    Prepared<Real> pb = self_join ? pa : prepare<Real>(b, m, normalize);
    const int nA = (int)a.x.size() - m + 1, nB = (int)(self_join ? a : b).x.size() - m + 1;
    SeriesView<Real> A = pa.view(nA), B = pb.view(nB);
    const int idx_bits = sizeof(Real) == 4 ? 32 : index_bits_for(nA > nB ? nA : nB);
    std::vector<Key> row_keys(nA, EMPTY_KEY), col_keys(nB, EMPTY_KEY);
    std::vector<Key> s_rows(MP_TILE_ROWS), s_cols(MP_TILE_ROWS + MP_TILE_DIAGS);
    const int n_row_tiles = (nA + MP_TILE_ROWS - 1) / MP_TILE_ROWS;
    const int n_diag_tiles = (k_end - k_begin + MP_TILE_DIAGS - 1) / MP_TILE_DIAGS;
    long long tiles_run = 0;
    for (int ty = 0; ty < n_diag_tiles; ++ty) {
        for (int tx = 0; tx < n_row_tiles; ++tx) {
            const int i0 = tx * MP_TILE_ROWS, k0 = k_begin + ty * MP_TILE_DIAGS;
            const int k1 = k0 + MP_TILE_DIAGS < k_end ? k0 + MP_TILE_DIAGS : k_end;
            int lo = diag_row_lo(k1 - 1, col_start); if (lo < i0) lo = i0;
            int hi = diag_row_hi(k0, nA, nB); if (hi > i0 + MP_TILE_ROWS) hi = i0 + MP_TILE_ROWS;
            if (lo >= hi) continue;
            ++tiles_run;
            for (auto& k : s_rows) k = EMPTY_KEY;
            for (auto& k : s_cols) k = EMPTY_KEY;
            HostSink<Real> sink{s_rows.data(), s_cols.data(), i0, i0 + k0, idx_bits, self_join, nA, nB};
            for (int t = 0; t < MP_THREADS; ++t)
                process_strip<Real>(A, B, m, k0 + MP_DPT * t, k1, i0, i0 + MP_TILE_ROWS, col_start, sink);
            for (int r = 0; r < MP_TILE_ROWS; ++r)
                if (s_rows[r] != EMPTY_KEY && s_rows[r] < row_keys[i0 + r]) row_keys[i0 + r] = s_rows[r];
            if (self_join)
                for (int c = 0; c < MP_TILE_ROWS + MP_TILE_DIAGS; ++c)
                    if (s_cols[c] != EMPTY_KEY && s_cols[c] < col_keys[i0 + k0 + c]) col_keys[i0 + k0 + c] = s_cols[c];
        }
    }
    std::vector<double> dist(nA); std::vector<long long> idx(nA);
    for (int e = 0; e < nA; ++e) finalize_entry<Real>(row_keys[e], e, m, idx_bits, A, B, false, dist[e], idx[e]);
    std::fwrite(dist.data(), 8, nA, out); std::fwrite(idx.data(), 8, nA, out);
    if (self_join) {
        std::vector<double> cd(nB); std::vector<long long> ci(nB);
        for (int e = 0; e < nB; ++e) finalize_entry<Real>(col_keys[e], e, m, idx_bits, A, B, true, cd[e], ci[e]);
        std::fwrite(cd.data(), 8, nB, out); std::fwrite(ci.data(), 8, nB, out);
    }
    std::fprintf(stderr, "tiles %lld\n", tiles_run);
    return 0;
}

static Input read_series(FILE* f, int n) {
    Input in; in.x.resize(n); in.raw.resize(n);
    if (std::fread(in.x.data(), 8, n, f) != (size_t)n || std::fread(in.raw.data(), 8, n, f) != (size_t)n)
        fail("short input", n, 0);
    return in;
}

int main(int argc, char** argv) {
    if (argc != 3) { std::fprintf(stderr, "usage: harness in.bin out.bin\n"); return 2; }
    FILE* f = std::fopen(argv[1], "rb");
    int hdr[9];
    if (!f || std::fread(hdr, 4, 9, f) != 9) fail("cannot read header", 0, 0);
    const int single = hdr[0], self_join = hdr[1], m = hdr[2], nA = hdr[3], nB = hdr[4];
    const int col_start = hdr[5], k_begin = hdr[6], k_end = hdr[7], normalize = hdr[8];
    Input a = read_series(f, nA);
    Input b = self_join ? a : read_series(f, nB);
    std::fclose(f);
    FILE* out = std::fopen(argv[2], "wb");
    const int rc = single ? run<float>(out, a, b, self_join, m, col_start, k_begin, k_end, normalize != 0)
                          : run<double>(out, a, b, self_join, m, col_start, k_begin, k_end, normalize != 0);
    std::fclose(out);
    return rc;
}
"""


def _nvcc(*args, cwd):
    result = subprocess.run([NVCC, *args], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"nvcc {' '.join(args)} failed:\n{result.stderr}"
    return result


@needs_nvcc
def test_matrix_profile_cu_compiles_to_ptx(tmp_path):
    source = cuda_kernels_dir() / "matrix_profile.cu"
    for options in ([], ["-DMP_TILE_ROWS=16", "-DMP_THREADS=2"]):  # default tiles and the tests' tiny ones
        ptx = tmp_path / "matrix_profile.ptx"
        _nvcc("-std=c++17", "-arch=sm_90", "--ptx", *options, f"-I{source.parent}", str(source), "-o", str(ptx),
              cwd=tmp_path)
        text = ptx.read_text()
        for kernel in ("mp_join_f64", "mp_join_f32", "mp_stats_f64", "mp_stats_f32", "mp_flags_f64",
                       "mp_flags_f32", "mp_finalize_f64", "mp_finalize_f32"):
            assert f".entry {kernel}(" in text, kernel


def _elf_sections(data: bytes) -> dict:
    """Name -> bytes of each section of a 64-bit little-endian ELF file (a cubin)."""
    shoff, = struct.unpack_from("<Q", data, 0x28)
    entsize, count, names_at = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + k * entsize) for k in range(count)]
    names = headers[names_at]
    sections = {}
    for name, _kind, _flags, _addr, offset, size in headers:
        start = names[4] + name
        sections[data[start:data.index(b"\0", start)].decode()] = data[offset:offset + size]
    return sections


@needs_nvcc
@pytest.mark.parametrize("source, kernels", [
    ("matrix_profile.cu", None),  # every kernel
    ("stl.cu", ("stl_fill_gaps_batch",)),  # stl_batch is compared with the CPU's (contracting) Numba to 1e-9
])
def test_kernels_compare_with_the_cpu_without_implicit_fma(tmp_path, source, kernels):
    """nvcc and NVRTC contract a * b + c into one fma by default (--fmad=true), which the CPU
    (Numba without fastmath, gcc on x86-64) never does: the gaps STL filled on a GPU differed
    from the CPU's in the last bit, and two identical windows had a distance of 2e-16. Each
    kernel's machine code must be the same with and without contraction (explicit fma() calls
    stay fused either way)."""
    path = cuda_kernels_dir() / source
    code = {}
    for fmad in ("true", "false"):
        cubin = tmp_path / f"{fmad}.cubin"
        _nvcc("-std=c++17", "-arch=sm_90", "-cubin", f"-fmad={fmad}", f"-I{path.parent}", str(path),
              "-o", str(cubin), cwd=tmp_path)
        code[fmad] = {name.removeprefix(".text."): body
                      for name, body in _elf_sections(cubin.read_bytes()).items() if name.startswith(".text.")}
    assert code["true"].keys() == code["false"].keys() and code["true"]
    for kernel in kernels or code["true"]:
        assert code["true"][kernel] == code["false"][kernel], kernel


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    """Harness binaries: tiny tiles (4 threads x 4 diagonals, 16 rows) and the default tiles."""
    if NVCC is None:
        pytest.skip("nvcc (CUDA toolkit) not on PATH")
    folder = tmp_path_factory.mktemp("mp_harness")
    (folder / "harness.cu").write_text(HARNESS)
    binaries = {}
    for name, options in (("tiny", ["-DMP_THREADS=4", "-DMP_TILE_ROWS=16"]), ("default", [])):
        _nvcc("-x", "cu", "-std=c++17", "-O2", "-Xcompiler", "-ffp-contract=off", *options,
              f"-I{cuda_kernels_dir()}", "harness.cu", "-o", name, cwd=folder)
        binaries[name] = folder / name
    return folder, binaries


def _fill(x):
    """Previous finite value (first finite one before any), as the kernels' preparation does."""
    return mp_cpu._fill_nonfinite(np.asarray(x, dtype=np.float64)[None])[0]


def run_harness(harness, which, a, m, b=None, single=False, exclusion=None, col_start=0, max_lag=None,
                normalize=True):
    """Run the harness; returns (row_dist, row_index, col_dist, col_index) (cols: self-joins)."""
    folder, binaries = harness
    self_join = b is None
    n_a, n_b = len(a) - m + 1, (len(a) if self_join else len(b)) - m + 1
    if self_join:
        excl = math.ceil(m / 4) if exclusion is None else exclusion
        k_begin, k_end = excl + 1, n_b if max_lag is None else min(n_b, max_lag + 1)
    else:
        k_begin, k_end = -(n_a - 1), n_b
    header = np.array([single, self_join, m, len(a), len(a) if self_join else len(b), col_start, k_begin, k_end,
                       normalize], dtype=np.int32)
    parts = [header.tobytes(), _fill(a).tobytes(), np.asarray(a, dtype=np.float64).tobytes()]
    if not self_join:
        parts += [_fill(b).tobytes(), np.asarray(b, dtype=np.float64).tobytes()]
    (folder / "in.bin").write_bytes(b"".join(parts))
    result = subprocess.run([str(binaries[which]), "in.bin", "out.bin"], cwd=folder, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    raw = np.frombuffer((folder / "out.bin").read_bytes(), dtype=np.uint8)
    sizes = [n_a, n_a] + ([n_b, n_b] if self_join else [])
    out, at = [], 0
    for k, size in enumerate(sizes):
        out.append(raw[at : at + 8 * size].view(np.float64 if k % 2 == 0 else np.int64))
        at += 8 * size
    return tuple(out) + ((None, None) if not self_join else ())


def series(rng, n, level=0.0):
    """Random walk with NaN, inf, constant stretches and a large jump (a burst)."""
    x = level + np.cumsum(rng.standard_normal(n))
    x[n // 7] = np.nan
    x[n // 3] = np.inf
    x[n // 2 : n // 2 + 4] = np.nan
    x[n // 5 : n // 5 + 30] = x[n // 5]
    x[3 * n // 4 : 3 * n // 4 + 25] = level + 5e3  # a plateau far above the walk
    return x


def check_double(dist, index, ref_dist, ref_index, D):
    """1e-8 on distances; indices equal, or tied to 1e-8 (identical shapes exist in these series)."""
    np.testing.assert_array_equal(np.isinf(dist), np.isinf(ref_dist))
    finite = np.isfinite(ref_dist)
    np.testing.assert_allclose(dist[finite], ref_dist[finite], rtol=0, atol=1e-8)
    differ = np.flatnonzero(index != ref_index)
    assert np.all(index[differ] >= 0)
    np.testing.assert_allclose(D[differ, index[differ]], ref_dist[differ], rtol=0, atol=1e-8)


def check_single(dist, index, ref_dist, D, m):
    bound = 2 * m * SINGLE_PRECISION_RHO_BOUND
    finite = np.isfinite(ref_dist)
    np.testing.assert_array_equal(np.isfinite(dist), finite)
    assert np.all(np.abs(dist[finite] ** 2 - ref_dist[finite] ** 2) <= bound)
    rows = np.flatnonzero(finite)
    assert np.all(D[rows, index[rows]] ** 2 - ref_dist[rows] ** 2 <= bound)


@pytest.mark.parametrize("single", [False, True])
@pytest.mark.parametrize("level", [0.0, 1e4])
def test_harness_self_join_matches_brute_force(harness, single, level):
    rng = np.random.default_rng(31)
    x = series(rng, 330, level)
    m, excl = 12, 3
    ref = naive_matrix_profile(x, m, exclusion=excl)
    rd, ri, ld, li = run_harness(harness, "tiny", x, m, single=single, exclusion=excl)
    D = distance_matrix(x, m)
    i, j = np.indices(D.shape)
    right, left = np.where(j - i > excl, D, np.inf), np.where(i - j > excl, D, np.inf)
    if single:
        check_single(rd, ri, ref["right_profile"], right, m)
        check_single(ld, li, ref["left_profile"], left, m)
    else:
        check_double(rd, ri, ref["right_profile"], ref["right_index"], right)
        check_double(ld, li, ref["left_profile"], ref["left_index"], left)


@pytest.mark.parametrize("single", [False, True])
@pytest.mark.parametrize("n_b", [90, 420])
def test_harness_ab_join_matches_brute_force(harness, single, n_b):
    rng = np.random.default_rng(32)
    a, b = series(rng, 260), series(rng, n_b)
    m = 10
    ref = naive_matrix_profile(a, m, T_B=b)
    rd, ri, ld, li = run_harness(harness, "tiny", a, m, b=b, single=single)
    assert ld is None and li is None
    D = distance_matrix(a, m, b)
    if single:
        check_single(rd, ri, ref["profile"], D, m)
    else:
        check_double(rd, ri, ref["profile"], ref["index"], D)


def test_harness_left_profile_from_a_column_with_bounded_lag(harness):
    rng = np.random.default_rng(33)
    x = series(rng, 300)
    m, excl, col_start, max_lag = 12, 3, 170, 60
    D = distance_matrix(x, m)
    i, j = np.indices(D.shape)
    allowed = np.where((i - j > excl) & (i - j <= max_lag), D, np.inf)  # row i: the profiled window
    best = allowed.min(axis=1)
    _, _, ld, li = run_harness(harness, "tiny", x, m, exclusion=excl, col_start=col_start, max_lag=max_lag)
    assert np.all(np.isinf(ld[:col_start])) and np.all(li[:col_start] == -1)
    ref_index = np.where(np.isfinite(best), allowed.argmin(axis=1), -1)
    check_double(ld[col_start:], li[col_start:], best[col_start:], ref_index[col_start:], allowed[col_start:])


def test_harness_default_tiles_match_brute_force(harness):
    """The production tile shape: 2,600 points span two row tiles and three diagonal tiles."""
    rng = np.random.default_rng(34)
    x = series(rng, 2600, level=100.0)
    m = 16
    ref = naive_matrix_profile(x, m)
    rd, ri, ld, li = run_harness(harness, "default", x, m)
    D = distance_matrix(x, m)
    i, j = np.indices(D.shape)
    excl = math.ceil(m / 4)
    check_double(rd, ri, ref["right_profile"], ref["right_index"], np.where(j - i > excl, D, np.inf))
    check_double(ld, li, ref["left_profile"], ref["left_index"], np.where(i - j > excl, D, np.inf))


def _standardised(x):
    """What the caller hands the kernels for plain distances: centred and scaled by the finite values."""
    finite = x[np.isfinite(x)]
    return (x - finite.mean()) / finite.std()


@pytest.mark.parametrize("single", [False, True])
def test_harness_plain_distances_match_brute_force(harness, single):
    """normalize=False: the same tiles on raw dot products (window means 0), self- and AB-joins."""
    rng = np.random.default_rng(37)
    x, b = _standardised(series(rng, 330, 50.0)), _standardised(series(rng, 200))
    m, excl = 12, 3
    D = distance_matrix(x, m, normalize=False)
    i, j = np.indices(D.shape)
    right, left = np.where(j - i > excl, D, np.inf), np.where(i - j > excl, D, np.inf)
    ref = naive_matrix_profile(x, m, exclusion=excl, normalize=False)
    rd, ri, ld, li = run_harness(harness, "tiny", x, m, single=single, exclusion=excl, normalize=False)
    ab = naive_matrix_profile(x, m, T_B=b, normalize=False)
    abd, abi, _, _ = run_harness(harness, "tiny", x, m, b=b, single=single, normalize=False)
    D_ab = distance_matrix(x, m, b, normalize=False)
    checks = ((rd, ri, ref["right_profile"], ref["right_index"], right),
              (ld, li, ref["left_profile"], ref["left_index"], left),
              (abd, abi, ab["profile"], ab["index"], D_ab))
    for dist, index, want, want_index, side in checks:
        if single:  # standardised series: the bound of the z-normalised case, in units of the variance
            check_single(dist, index, want, side, m)
        else:
            check_double(dist, index, want, want_index, side)


@pytest.mark.parametrize("normalize", [True, False])
def test_harness_agrees_with_the_cpu_kernel(harness, normalize):
    """Same method on both devices: the CPU (Numba) path and the GPU arithmetic agree."""
    rng = np.random.default_rng(35)
    x = series(rng, 400, level=20.0)
    if not normalize:
        x = _standardised(x)
    D = distance_matrix(x, 14, normalize=normalize)
    for single in (False, True):
        precision = "single" if single else "double"
        rd, ri, ld, li = run_harness(harness, "tiny", x, 14, single=single, normalize=normalize)
        cpu = mp_cpu.join(x[None], None, 14, math.ceil(14 / 4), precision, normalize=normalize, tile_rows=16,
                          tile_diags=16)
        tol = 1e-10 if not single else 1e-3
        for got, want in ((rd, cpu[0][0]), (ld, cpu[2][0])):
            np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
            finite = np.isfinite(want)
            np.testing.assert_allclose(got[finite], want[finite], rtol=0, atol=tol)
        # Near-ties (plain: the constant stretches are at distance 0 from one another) may be
        # broken either way by rounding (fused multiply-adds on one side); the two chosen
        # neighbours must then be equally near.
        for got, want in ((ri, cpu[1][0]), (li, cpu[3][0])):
            assert np.mean(got == want) > (0.99 if normalize else 0.9)
            differ = np.flatnonzero(got != want)
            np.testing.assert_allclose(D[differ, got[differ]], D[differ, want[differ]], rtol=0, atol=tol)


# ---------------------------------------------------------------------------- launch arguments
class _FakeKernel:
    """Records a launch and checks it against the kernel's PTX parameter list."""

    def __init__(self, name, params, launches):
        self.name, self.params, self.launches = name, params, launches

    def __call__(self, grid, block, args):
        assert len(args) == len(self.params), f"{self.name}: {len(args)} arguments for {len(self.params)} parameters"
        for k, (arg, param) in enumerate(zip(args, self.params)):
            if isinstance(arg, np.ndarray):
                assert param == 8, f"{self.name} argument {k}: an array for a {param}-byte parameter"
                assert arg.flags.c_contiguous, f"{self.name} argument {k}: not contiguous"
            else:
                what = f"{self.name} argument {k}"
                assert isinstance(arg, np.generic), f"{what}: {type(arg).__name__}, not a NumPy scalar"
                assert arg.dtype.itemsize == param, f"{what}: {arg.dtype} for a {param}-byte parameter"
        assert len(grid) in (1, 2, 3) and all(0 < g for g in grid) and all(g <= 65535 for g in grid[1:])
        self.launches.append((self.name, tuple(grid), tuple(block), args))


def _ptx_params(ptx_text):
    """{kernel: [parameter sizes in bytes]} from PTX ``.entry`` declarations."""
    import re

    params = {}
    for name, body in re.findall(r"\.entry (\w+)\(\s*(.*?)\)", ptx_text, flags=re.S):
        params[name] = [int(width) // 8 for width in re.findall(r"\.param \.[us](\d+)", body)]
    return params


@needs_nvcc
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("precision", ["double", "single"])
def test_gpu_driver_launches_match_the_kernels(tmp_path, monkeypatch, precision, normalize):
    """mp_gpu.join's launches (argument count, sizes, grids, block shape) against the PTX, with
    a NumPy stand-in for CuPy: the kernels do not run, the driver's bookkeeping is checked."""
    import types

    from tsanomaly import backend
    from tsanomaly.kernels import mp_gpu

    source = cuda_kernels_dir() / "matrix_profile.cu"
    options = mp_gpu.kernel_options(16, 8)
    ptx = tmp_path / "mp.ptx"
    _nvcc("-std=c++17", "-arch=sm_90", "--ptx", *options, f"-I{source.parent}", str(source), "-o", str(ptx),
          cwd=tmp_path)
    params = _ptx_params(ptx.read_text())
    launches = []

    class OutOfMemoryError(Exception):
        pass

    fake = types.SimpleNamespace(**{name: getattr(np, name) for name in dir(np) if not name.startswith("_")})
    fake.empty = np.zeros  # the kernels that would fill these buffers do not run: no garbage to cast
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(memGetInfo=lambda: (8 << 30, 16 << 30)),
                                      memory=types.SimpleNamespace(OutOfMemoryError=OutOfMemoryError))
    fake.get_default_memory_pool = lambda: types.SimpleNamespace(free_bytes=lambda: 0, free_all_blocks=lambda: None)
    module = types.SimpleNamespace(get_function=lambda name: _FakeKernel(name, params[name], launches))
    monkeypatch.setattr(backend, "array_module", lambda device: fake)
    monkeypatch.setattr(backend, "load_cuda_module", lambda filename, opts=(): module)
    rng = np.random.default_rng(36)
    a = series(rng, 300)[None].repeat(3, axis=0)
    b = series(rng, 200)[None].repeat(3, axis=0)
    out = mp_gpu.join(a, None, 12, 3, precision, 40, 100, normalize=normalize, tile_rows=16, tile_diags=8)
    assert out[0].shape == (3, 289) and out[2].shape == (3, 289)
    out = mp_gpu.join(a, b, 12, 3, precision, normalize=normalize, tile_rows=16, tile_diags=8)
    assert out[0].shape == (3, 289) and out[2] is None
    suffix = "f32" if precision == "single" else "f64"
    names = [name for name, *_ in launches]
    stats = [f"mp_stats_{suffix}"] + ([f"mp_flags_{suffix}"] if normalize else [])  # no restart windows when plain
    assert names == stats + [f"mp_join_{suffix}", f"mp_finalize_{suffix}", f"mp_finalize_{suffix}"] + stats + stats + [
        f"mp_join_{suffix}", f"mp_finalize_{suffix}"]
    real = np.float32 if precision == "single" else np.float64
    for name, grid, block, args in launches:
        if name.startswith("mp_join"):
            assert block == (2,)  # tile_diags 8 = 2 threads x 4 diagonals, as compiled
            assert all(arg.dtype == real for arg in args[:10])  # terms in the working precision
            assert grid[2] == 3  # one grid slice per context: the batch is one launch
            assert args[21].dtype == np.uint64 and args[21].shape == (3, 289)
        if name.startswith("mp_finalize"):
            assert grid[1] == 3
        if name.startswith("mp_stats"):
            assert args[5] == np.int32(normalize)
    # rows=False (the detector's left profile): the row minima are not finalised
    launches.clear()
    out = mp_gpu.join(a, None, 12, 3, precision, 40, 100, normalize=normalize, rows=False, tile_rows=16,
                      tile_diags=8)
    assert out[0] is None and out[1] is None and out[2].shape == (3, 289)
    finalised = [args[-2] for name, _, _, args in launches if name.startswith("mp_finalize")]
    assert [name for name, *_ in launches] == stats + [f"mp_join_{suffix}", f"mp_finalize_{suffix}"]
    assert finalised == [np.int32(True)]  # the column minima's pass


@pytest.fixture(scope="module")
def ptx_params(tmp_path_factory):
    """{kernel: [parameter sizes]} of matrix_profile.cu (the parameter lists do not depend on the tile shape)."""
    if NVCC is None:
        pytest.skip("nvcc (CUDA toolkit) not on PATH")
    folder = tmp_path_factory.mktemp("mp_ptx")
    source = cuda_kernels_dir() / "matrix_profile.cu"
    _nvcc("-std=c++17", "-arch=sm_90", "--ptx", f"-I{source.parent}", str(source), "-o", "mp.ptx", cwd=folder)
    return _ptx_params((folder / "mp.ptx").read_text())


def _fake_cupy_and_module(monkeypatch, params, launches):
    """A NumPy stand-in for CuPy and a module of recording kernels, patched into tsanomaly.backend."""
    import types

    from tsanomaly import backend

    class OutOfMemoryError(Exception):
        pass

    fake = types.SimpleNamespace(**{name: getattr(np, name) for name in dir(np) if not name.startswith("_")})
    fake.empty = np.zeros
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(memGetInfo=lambda: (8 << 30, 16 << 30)),
                                      memory=types.SimpleNamespace(OutOfMemoryError=OutOfMemoryError))
    fake.get_default_memory_pool = lambda: types.SimpleNamespace(free_bytes=lambda: 0, free_all_blocks=lambda: None)
    module = types.SimpleNamespace(get_function=lambda name: _FakeKernel(name, params[name], launches))
    monkeypatch.setattr(backend, "array_module", lambda device: fake)
    monkeypatch.setattr(backend, "load_cuda_module", lambda filename, opts=(): module)


@pytest.mark.parametrize("self_join", [True, False])
def test_join_slices_a_diagonal_range_beyond_the_grid_limit(monkeypatch, ptx_params, self_join):
    """More diagonal tiles than gridDim.y allows (65,535): the join is launched in slices of
    whole tiles (each grid_y <= 65,535) whose [k_begin, k_end) cover the range exactly once,
    cut at multiples of tile_diags from k_begin so that every tile is the one of an unsliced
    launch (same k0, same k1) and the results cannot change."""
    from tsanomaly.kernels import mp_gpu

    launches = []
    _fake_cupy_and_module(monkeypatch, ptx_params, launches)
    tile_diags, m, excl = 4, 16, 4
    rng = np.random.default_rng(38)
    a = rng.standard_normal((1, 300_000))
    b = None if self_join else rng.standard_normal((1, 20_000))
    mp_gpu.join(a, b, m, excl, "double", tile_rows=2048, tile_diags=tile_diags)  # _FakeKernel: grid_y <= 65535
    n_a = a.shape[1] - m + 1
    n_b = (a if self_join else b).shape[1] - m + 1
    k_begin, k_end = (excl + 1, n_b) if self_join else (-(n_a - 1), n_b)
    assert (k_end - k_begin + tile_diags - 1) // tile_diags > 65535  # the case: one launch could not hold it
    joins = [(grid, args) for name, grid, _, args in launches if name == "mp_join_f64"]
    assert len(joins) >= 2
    slices = sorted((int(args[17]), int(args[18]), grid[1]) for grid, args in joins)
    assert slices[0][0] == k_begin and slices[-1][1] == k_end
    for (lo, hi, grid_y), nxt in zip(slices, slices[1:] + [None]):
        assert lo < hi and grid_y == (hi - lo + tile_diags - 1) // tile_diags <= 65535
        assert (lo - k_begin) % tile_diags == 0  # whole tiles of the unsliced grid
        if nxt is not None:
            assert nxt[0] == hi  # contiguous, no overlap
    for grid, args in joins:
        assert grid[0] == (n_a + 2047) // 2048 and grid[2] == 1


DIAG_BOUNDS = r"""// diag_row_lo / diag_row_hi of matrix_profile.cuh near INT_MAX, on the host.
#include <cstdio>
#include <cstdlib>
#include "matrix_profile.cuh"
int main(int argc, char** argv) {
    if (argc != 4) return 2;
    const int nA = std::atoi(argv[1]), nB = std::atoi(argv[2]), k = std::atoi(argv[3]);
    std::printf("%d %d\n", mp::diag_row_lo(k, 0), mp::diag_row_hi(k, nA, nB));
    return 0;
}
"""


@needs_nvcc
def test_diagonal_bounds_of_an_ab_join_near_int_max(tmp_path):
    """An AB-join's first diagonals (k ~ -nA) have nB - k > INT_MAX once nA + nB passes 2^31:
    diag_row_hi forms that difference in 64 bits. (-fwrapv: the host wraps int sums as the
    GPU's 32-bit adds do, instead of leaving them undefined.)"""
    (tmp_path / "bounds.cu").write_text(DIAG_BOUNDS)
    _nvcc("-x", "cu", "-std=c++17", "-O2", "-Xcompiler", "-fwrapv", f"-I{cuda_kernels_dir()}", "bounds.cu", "-o",
          "bounds", cwd=tmp_path)
    int_max = 2**31 - 1
    for n_a, n_b, k in ((int_max - 8, 100, -(int_max - 9)), (int_max - 8, 100, -5), (300, 200, -299), (300, 200, 150),
                        (2**30 + 5, 2**30 + 7, -(2**30 + 4))):
        out = subprocess.run([str(tmp_path / "bounds"), str(n_a), str(n_b), str(k)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        lo, hi = map(int, out.stdout.split())
        assert (lo, hi) == (max(0, -k), min(n_a, n_b - k)), (n_a, n_b, k)


def test_diagonal_slices_cover_the_range_in_whole_tiles():
    from tsanomaly.kernels import mp_gpu

    assert mp_gpu.diagonal_slices(5, 5, 4) == [] and mp_gpu.diagonal_slices(9, 5, 4) == []
    assert mp_gpu.diagonal_slices(-10, 7, 4) == [(-10, 7)]
    assert mp_gpu.diagonal_slices(5, 5 + 2 * 65535 * 4 + 3, 4) == [
        (5, 5 + 65535 * 4), (5 + 65535 * 4, 5 + 2 * 65535 * 4), (5 + 2 * 65535 * 4, 5 + 2 * 65535 * 4 + 3)]
    k_begin, k_end, tile = -(70_000_000 - 1), 70_000_000, 1024  # an AB-join of 70M windows each, default tiles
    slices = mp_gpu.diagonal_slices(k_begin, k_end, tile)
    assert slices[0][0] == k_begin and slices[-1][1] == k_end
    assert all(a[1] == b[0] for a, b in zip(slices, slices[1:]))
    assert all((hi - lo + tile - 1) // tile <= 65535 and (lo - k_begin) % tile == 0 for lo, hi in slices)


def test_series_past_int_max_points_are_refused_clearly():
    """The kernels index points with int and add a tile's size (<= 4,096) to indices: longer
    series get a clear error, not a wrapped index (checked before CuPy is asked for, so it runs
    here without a GPU)."""
    import types

    from tsanomaly.kernels import mp_gpu

    assert mp_gpu._MAX_POINTS + 4096 == 2**31 - 1
    assert 8 * (2 * 3070 + 4) <= 48 * 1024 < 8 * (2 * 3071 + 4) and mp_gpu.kernel_options(3070, 4)  # rows <= 3,070
    with pytest.raises(ValueError, match="at most 2,147,479,551 points, got 2,147,479,552"):
        mp_gpu.join(types.SimpleNamespace(shape=(1, 2**31 - 4096)), None, 16, 4, "double")
    with pytest.raises(ValueError, match="got 2,147,483,648"):
        mp_gpu.join(types.SimpleNamespace(shape=(1, 1000)), types.SimpleNamespace(shape=(1, 2**31)), 16, 4, "double")
