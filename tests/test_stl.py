"""Batched STL / MSTL (tsanomaly.detectors.stl.decompose) against statsmodels, on CPU, GPU and the
CUDA arithmetic run on the host.

The reference is statsmodels' ``STL`` / ``MSTL``.  Components must agree to 1e-8 of the
series' scale.  Robust STL can be ill-conditioned -- with few cycles per subseries the
bisquare iterations amplify rounding, and statsmodels itself moves by 1e-6 when its input
moves by one ulp -- so each comparison allows the larger of 1e-8 and 100 times the change
statsmodels shows under such a perturbation (:func:`_sensitivity`); on well-conditioned
cases that is 1e-8.
"""
from __future__ import annotations

import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.tsa.seasonal import MSTL, STL

import tsanomaly
from tsanomaly import backend
from tsanomaly.detectors.stl import decompose
from tsanomaly.kernels import stl_cpu

KERNELS = Path(__file__).resolve().parents[1] / "cuda_kernels"
NVCC = shutil.which("nvcc")
TOL = 1e-8


# ---------------------------------------------------------------------------- helpers
def _series(rng, n_ctx, n, period, counts=False):
    """Seasonal noisy series with a few outliers; ``counts`` gives integers (ties in the median)."""
    t = np.arange(n)
    level = rng.uniform(-50, 200)
    y = level + rng.uniform(0.5, 10) * np.sin(2 * np.pi * t / period) + 0.02 * t
    y = y + rng.normal(0, rng.uniform(0.2, 3), size=(n_ctx, n))
    for row in y:
        row[rng.integers(0, n, 3)] += rng.uniform(10, 40)
    if counts:
        y = np.round(np.abs(y))
    return y


def _stl_ref(y, period, **kw):
    fit_kw = {k: kw.pop(k) for k in ("inner_iter", "outer_iter") if k in kw}
    return STL(y, period=period, **kw).fit(**fit_kw)


def _sensitivity(fit, y, seed=0):
    """How far statsmodels' own components move when ``y`` moves by ~1 ulp (its conditioning)."""
    rng = np.random.default_rng(seed)
    a = fit(y)
    b = fit(y * (1 + 2e-16 * rng.standard_normal(y.shape)))
    return max(np.max(np.abs(np.asarray(a.trend) - np.asarray(b.trend))),
               np.max(np.abs(np.asarray(a.seasonal) - np.asarray(b.seasonal))))


def _assert_close(ours, ref, scale, sens, what):
    bound = max(TOL * scale, 100 * sens)
    err = np.max(np.abs(np.asarray(ours) - np.asarray(ref)))
    assert err <= bound, f"{what}: max error {err:.3g} > {bound:.3g} (scale {scale:.3g})"


def _random_stl_case(rng):
    """Random STL parameters: short series, odd and even periods, both degrees, robust or not."""
    p = int(rng.integers(2, 30))
    n = int(rng.integers(2 * p, 6 * p + 6))
    ns = int(rng.choice([3, 5, 7, 9, 13, 25]))
    kw = dict(seasonal=ns, seasonal_deg=int(rng.integers(0, 2)), trend_deg=int(rng.integers(0, 2)),
              low_pass_deg=int(rng.integers(0, 2)), robust=bool(rng.integers(0, 2)))
    if rng.random() < 0.35:  # a trend window longer than the series (the len >= n branch)
        kw["trend"] = int(rng.choice([p + 1 + (p % 2), n + 1 - (n % 2) + 2]))
    if rng.random() < 0.3:
        kw["low_pass"] = p + 3 + (p % 2)
    if rng.random() < 0.5:
        kw["inner_iter"] = int(rng.integers(1, 4))
        kw["outer_iter"] = int(rng.integers(0, 6))
    return p, n, kw


# ---------------------------------------------------------------------------- STL vs statsmodels
@pytest.mark.parametrize("seed", range(6))
def test_stl_equals_statsmodels_on_random_parameters(seed):
    rng = np.random.default_rng(seed)
    for case in range(6):
        p, n, kw = _random_stl_case(rng)
        y = _series(rng, 3, n, p, counts=case % 3 == 0)
        res = decompose(y, periods=p, device="cpu", **kw)
        assert res.seasonal.shape == (1, 3, n) and not res.skipped.any()
        for c in range(3):
            ref = _stl_ref(y[c], p, **kw)
            sens = _sensitivity(lambda v: _stl_ref(v, p, **kw), y[c])
            scale = np.max(np.abs(y[c]))
            what = f"seed {seed} case {case} p={p} n={n} {kw} context {c}"
            _assert_close(res.trend[c], ref.trend, scale, sens, what + " trend")
            _assert_close(res.seasonal[0, c], ref.seasonal, scale, sens, what + " seasonal")
            _assert_close(res.remainder[c], ref.resid, scale, sens, what + " remainder")


def test_defaults_follow_statsmodels_robust_hourly():
    """The issue's case: hourly series, period 24, robust, every default left as is."""
    rng = np.random.default_rng(11)
    y = _series(rng, 4, 24 * 30, 24)
    res = decompose(y, periods=24)  # device="auto": the CPU here
    assert res.config["seasonal"] == (7,) and res.config["trend"] == (47,) and res.config["low_pass"] == (25,)
    assert res.config["inner_iter"] == 2 and res.config["outer_iter"] == 15
    for c in range(4):
        ref = STL(y[c], period=24, robust=True).fit()
        scale = np.max(np.abs(y[c]))
        _assert_close(res.trend[c], ref.trend, scale, 0.0, "trend")
        _assert_close(res.seasonal[0, c], ref.seasonal, scale, 0.0, "seasonal")
        _assert_close(res.weights[c], ref.weights, 1.0, 0.0, "weights")
        np.testing.assert_allclose(res.trend[c] + res.seasonal[0, c] + res.remainder[c], y[c], rtol=0, atol=1e-12 * scale)


def test_batch_spanning_several_lane_blocks_equals_one_at_a_time():
    """Contexts are processed in SIMD blocks of LANES: a ragged batch gives each row its own result."""
    rng = np.random.default_rng(5)
    n_ctx = 2 * stl_cpu.LANES + 5
    y = _series(rng, n_ctx, 120, 12)
    batch = decompose(y, periods=12, device="cpu")
    for c in (0, stl_cpu.LANES - 1, stl_cpu.LANES, n_ctx - 1):
        alone = decompose(y[c:c + 1], periods=12, device="cpu")
        # equal up to the rounding of the vectorised sums (a lane may take another code path)
        np.testing.assert_allclose(batch.trend[c], alone.trend[0], rtol=1e-13)
        np.testing.assert_allclose(batch.remainder[c], alone.remainder[0], rtol=0, atol=1e-12 * np.abs(y[c]).max())


# ---------------------------------------------------------------------------- MSTL vs statsmodels
@pytest.mark.parametrize(
    "periods, n, kw",
    [
        ((12, 30), 180, dict(robust=True)),
        ((30, 12, 5), 200, dict(robust=False, seasonal=(9, 13, 7))),  # unsorted, windows given
        # unsorted, default windows: statsmodels hands them out in ascending order of period
        ((30, 12), 180, dict(robust=True)),
        ((7, 24), 150, dict(robust=True, seasonal_deg=0, trend_deg=0, inner_iter=1, outer_iter=3)),
    ],
)
def test_mstl_equals_statsmodels(periods, n, kw):
    rng = np.random.default_rng(len(periods) * n)
    t = np.arange(n)
    y = _series(rng, 3, n, periods[0]) + 4 * np.sin(2 * np.pi * t / periods[-1])
    res = decompose(y, periods=periods, device="cpu", **kw)
    assert res.periods == tuple(sorted(periods))
    stl_kwargs = {k: v for k, v in kw.items() if k != "seasonal"}
    windows = None if "seasonal" not in kw else kw["seasonal"]

    def fit(v):
        return MSTL(v, periods=periods, windows=windows, stl_kwargs=dict(stl_kwargs)).fit()

    for c in range(3):
        ref = fit(y[c])
        sens = _sensitivity(fit, y[c])
        scale = np.max(np.abs(y[c]))
        _assert_close(res.trend[c], ref.trend, scale, sens, "trend")
        _assert_close(res.seasonal[:, c].T, np.asarray(ref.seasonal), scale, sens, "seasonal")
        _assert_close(res.remainder[c], ref.resid, scale, sens, "remainder")
        # seasonal_of(p) is the component of period p, whatever order the periods were given
        # in: statsmodels names its columns by period when given a pandas Series.
        named = MSTL(pd.Series(y[c]), periods=periods, windows=windows, stl_kwargs=dict(stl_kwargs)).fit().seasonal
        assert sorted(named.columns) == sorted(f"seasonal_{p}" for p in periods)
        for p in periods:
            assert res.seasonal_of(p).shape == (3, n)
            _assert_close(res.seasonal_of(p)[c], named[f"seasonal_{p}"].to_numpy(), scale, sens, f"seasonal_{p}")


def test_mstl_daily_and_weekly_on_five_weeks():
    """MSTL(24, 168) with statsmodels' defaults (windows 11 and 15), robust."""
    rng = np.random.default_rng(3)
    n = 24 * 7 * 5
    t = np.arange(n)
    y = _series(rng, 1, n, 24) + 8 * np.sin(2 * np.pi * t / 168)
    res = decompose(y, periods=(24, 168), device="cpu")
    assert res.config["seasonal"] == (11, 15)
    ref = MSTL(y[0], periods=(24, 168), stl_kwargs={"robust": True}).fit()
    scale = np.max(np.abs(y))
    _assert_close(res.trend[0], ref.trend, scale, 0.0, "trend")
    _assert_close(res.seasonal[:, 0].T, np.asarray(ref.seasonal), scale, 0.0, "seasonal")
    _assert_close(res.remainder[0], ref.resid, scale, 0.0, "remainder")


def test_mstl_drops_periods_of_half_the_length_like_statsmodels():
    rng = np.random.default_rng(8)
    y = _series(rng, 2, 300, 24)
    with pytest.warns(UserWarning, match=r"\[168\].*dropped"):
        res = decompose(y, periods=(24, 168), robust=False, device="cpu")
    assert res.periods == (24,) and res.seasonal.shape == (1, 2, 300)
    assert res.config["seasonal"] == (11,)  # MSTL keeps its default window of the first period
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ref = MSTL(y[1], periods=(24, 168)).fit()
    _assert_close(res.trend[1], ref.trend, np.max(np.abs(y[1])), 0.0, "trend")


# ---------------------------------------------------------------------------- gaps, constants, skips
def test_gaps_are_interpolated_and_their_remainder_is_nan():
    rng = np.random.default_rng(21)
    n, p = 168, 12
    y = _series(rng, 4, n, p)
    x = y.copy()
    x[0, :5] = np.nan  # leading gap: the first observation is held
    x[1, 40:47] = np.nan  # inner gap: linear interpolation
    x[2, -9:] = np.nan  # trailing gap
    x[3, rng.choice(n, 30, replace=False)] = np.nan  # scattered
    res = decompose(x, periods=p, device="cpu")
    filled, n_obs = stl_cpu.fill_gaps(x)
    t = np.arange(n)
    for c in range(4):
        ok = ~np.isnan(x[c])
        np.testing.assert_array_equal(filled[c], np.interp(t, t[ok], x[c, ok]))
        assert n_obs[c] == ok.sum()
        np.testing.assert_array_equal(np.isnan(res.remainder[c]), ~ok)
        np.testing.assert_array_equal(res.missing[c], ~ok)
        ref = STL(filled[c], period=p, robust=True).fit()
        scale = np.max(np.abs(y[c]))
        _assert_close(res.trend[c], ref.trend, scale, 0.0, "trend")
        _assert_close(res.remainder[c][ok], ref.resid[ok], scale, 0.0, "remainder")


@pytest.mark.parametrize("periods", [24, (24, 72)])
def test_constant_series_have_zero_remainder_and_no_nan(periods):
    y = np.vstack([np.full(24 * 10, 7.0), np.zeros(24 * 10), np.full(24 * 10, 1e6)])
    res = decompose(y, periods=periods, device="cpu")
    for name in ("trend", "seasonal", "remainder", "weights"):
        assert np.isfinite(getattr(res, name)).all(), name
    # zero up to rounding of the level (1e-12 of it; 1e-12 for the zero series)
    scale = np.maximum(np.abs(y[:, :1]), 1.0)
    assert np.all(np.abs(res.remainder) <= 1e-12 * scale)
    assert np.all(np.abs(res.seasonal) <= 1e-12 * scale)
    assert np.all(np.abs(res.trend - y) <= 1e-12 * scale)
    assert ((res.weights >= 0) & (res.weights <= 1)).all()


def test_contexts_with_too_few_observations_are_skipped_not_failed():
    rng = np.random.default_rng(4)
    y = _series(rng, 4, 240, 24)
    x = y.copy()
    x[1] = np.nan  # nothing observed
    x[2, 30:] = np.nan  # 30 points < two cycles (48)
    with pytest.warns(UserWarning, match="2 of 4 contexts have fewer than 48 observed points") as record:
        res = decompose(x, periods=24, device="cpu")
    assert len([w for w in record if "contexts have fewer" in str(w.message)]) == 1
    np.testing.assert_array_equal(res.skipped, [False, True, True, False])
    assert np.isnan(res.trend[[1, 2]]).all() and np.isnan(res.remainder[[1, 2]]).all()
    alone = decompose(y[[0, 3]], periods=24, device="cpu")
    np.testing.assert_allclose(res.trend[[0, 3]], alone.trend, rtol=1e-13)


def test_panel_input_keeps_its_axes():
    rng = np.random.default_rng(2)
    values = _series(rng, 3, 96, 24)
    index = pd.date_range("2024-01-01", periods=96, freq="1h")
    panel = tsanomaly.Panel(values, pd.Index(["a", "b", "c"], name="asn"), index)
    res = decompose(panel, periods=24, device="cpu")
    assert list(res.contexts) == ["a", "b", "c"] and res.index.equals(index)
    np.testing.assert_array_equal(res.trend, decompose(values, periods=24, device="cpu").trend)  # same input, same call


def test_input_decompose_cannot_read_is_refused_saying_what_to_pass():
    values = _series(np.random.default_rng(2), 2, 96, 24)
    # One series: refused as the docstring says (2-D only), with the way to pass it.
    with pytest.raises(ValueError, match=r"got shape \(96,\); for one series pass x\[None, :\]"):
        decompose(values[0], periods=24, device="cpu")
    # Rows of several lengths: NumPy's "inhomogeneous shape" error, now the lengths and the fix.
    with pytest.raises(ValueError, match=r"series of one length .* got rows of lengths \[60, 96\]; pad the shorter"):
        decompose([values[0], values[1][:60]], periods=24, device="cpu")
    # A DataFrame was read as a bare array (its axes lost), a path as a device name.
    frame = pd.DataFrame(values)
    with pytest.raises(TypeError, match=r"decompose takes a tsanomaly Panel .* not a pandas DataFrame: .*from_frame"):
        decompose(frame, periods=24, device="cpu")
    with pytest.raises(TypeError, match=r"decompose takes .* not a path or a string \('abc'\)"):
        decompose("abc", periods=24, device="cpu")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(periods=1), "period must be an integer >= 2"),
        (dict(periods=2.5), "periods must be an integer"),
        (dict(periods=(24, 24)), "distinct"),
        (dict(seasonal=8), "seasonal must be an odd integer >= 3"),
        (dict(seasonal=(7, 9)), "one window per period"),
        (dict(trend=23), "trend must be larger than the period it smooths"),
        (dict(low_pass=4), "low_pass must be an odd integer"),
        (dict(trend_deg=2), "trend_deg must be 0 or 1"),
        (dict(inner_iter=0), "inner_iter must be a positive integer"),
        (dict(outer_iter=-1), "outer_iter must be a non-negative integer"),
        (dict(robust="yes"), "robust must be True or False"),
        (dict(periods=100), "at least two full cycles"),
        (dict(device="tpu"), "device must be one of"),
    ],
)
def test_bad_parameters_raise_clear_errors(kwargs, message):
    y = np.random.default_rng(0).normal(size=(2, 120))
    with pytest.raises(ValueError, match=message):
        decompose(y, **{"periods": 24, **kwargs})


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="2-D"):
        decompose(np.zeros((2, 3, 4)), periods=2)
    y = np.zeros((2, 100))
    y[1, 7] = np.inf
    with pytest.raises(ValueError, match="infinite value at context 1, time position 7"):
        decompose(y, periods=12)


# ---------------------------------------------------------------------------- CUDA source
def _ptx_params(ptx_text):
    """{kernel: [parameter sizes in bytes]} from PTX ``.entry`` declarations."""
    import re

    params = {}
    for name, body in re.findall(r"\.entry (\w+)\(\s*(.*?)\)", ptx_text, flags=re.S):
        params[name] = [int(width) // 8 for width in re.findall(r"\.param \.[us](\d+)", body)]
    return params


@pytest.fixture(scope="module")
def stl_ptx(tmp_path_factory):
    """PTX text of stl.cu, compiled once."""
    if NVCC is None:
        pytest.skip("nvcc not on PATH")
    out = tmp_path_factory.mktemp("stl_ptx") / "stl.ptx"
    subprocess.run(["nvcc", "-std=c++17", "-arch=sm_90", "--ptx", str(KERNELS / "stl.cu"), "-o", str(out)],
                   check=True, capture_output=True, timeout=300)
    return out.read_text()


def test_cuda_source_compiles_with_nvcc(stl_ptx):
    for entry in ("stl_batch", "stl_build_plans", "stl_fill_gaps_batch"):
        assert f".entry {entry}(" in stl_ptx
    params = _ptx_params(stl_ptx)
    # plan offsets are 64-bit: the low-pass plan of a minute series with a daily period starts
    # past 2**31 doubles from n ~ 262,800 points on
    assert params["stl_build_plans"][-4:] == [8, 8, 8, 8]
    assert params["stl_batch"][6:10] == [8, 8, 8, 8]


HARNESS = r"""
#include <cstdio>
#include <cstdlib>
#include <vector>
#include "stl.cuh"
// Runs stl.cuh on the CPU exactly as the kernel does: time-major arrays, one
// context per column (ld = n_ctx), plans from stl_build_plan, gaps filled first.
// usage: harness in.bin out.bin n_ctx n p ns nt nl sdeg tdeg ldeg inner outer
int main(int argc, char** argv) {
    if (argc != 14) return 2;
    int n_ctx = atoi(argv[3]), n = atoi(argv[4]), p = atoi(argv[5]);
    int ns = atoi(argv[6]), nt = atoi(argv[7]), nl = atoi(argv[8]);
    int sd = atoi(argv[9]), td = atoi(argv[10]), ldg = atoi(argv[11]);
    int inner = atoi(argv[12]), outer = atoi(argv[13]);
    size_t N = (size_t)n * n_ctx;
    std::vector<double> x(N), y(N), s(N), t(N), w(N), work(stl_work_rows(n, p) * n_ctx);
    FILE* f = fopen(argv[1], "rb");
    if (!f || fread(x.data(), sizeof(double), N, f) != N) return 3;
    fclose(f);
    int k_a = (n - 1) / p + 1, k_b = k_a - 1 > 1 ? k_a - 1 : 1;
    std::vector<double> pa(stl_plan_size(k_a, ns, true)), pb(stl_plan_size(k_b, ns, true)),
        pt(stl_plan_size(n, nt, false)), pl(stl_plan_size(n, nl, false));
    stl_build_plan(pa.data(), k_a, ns, sd, true);
    stl_build_plan(pb.data(), k_b, ns, sd, true);
    stl_build_plan(pt.data(), n, nt, td, false);
    stl_build_plan(pl.data(), n, nl, ldg, false);
    StlPlan Pa = stl_plan_view(pa.data()), Pb = stl_plan_view(pb.data());
    StlPlan Pt = stl_plan_view(pt.data()), Pl = stl_plan_view(pl.data());
    for (int c = 0; c < n_ctx; ++c) stl_fill_gaps(x.data() + c, y.data() + c, n_ctx, n);
    for (int c = 0; c < n_ctx; ++c)
        stl_one(y.data() + c, s.data() + c, t.data() + c, w.data() + c, work.data() + c, n_ctx, n, p,
                inner, outer, Pa, Pb, Pt, Pl);
    f = fopen(argv[2], "wb");
    fwrite(y.data(), sizeof(double), N, f);
    fwrite(s.data(), sizeof(double), N, f);
    fwrite(t.data(), sizeof(double), N, f);
    fwrite(w.data(), sizeof(double), N, f);
    fclose(f);
    return 0;
}
"""


PLAN_LAYOUT = r"""
#include <cstdio>
#include <sys/mman.h>
#include "stl.cuh"
// stl_plan_size and stl_plan_view's pointers for plans past 2**31 doubles. The plan's
// address range is reserved (PROT_NONE: no memory is committed) so that the pointer
// arithmetic stays inside one object; only the header page is made writable.
int main() {
    const int k = 600000, length = 3599;  // m = 600,000 outputs, w = 3,600: m * w > 2**31
    const long long size = stl_plan_size(k, length, false);
    void* base = mmap(nullptr, (size_t)size * sizeof(double), PROT_NONE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED || mprotect(base, 4096, PROT_READ | PROT_WRITE) != 0) return 4;
    double* plan = (double*)base;
    plan[0] = k;  // the header as stl_build_plan writes it
    plan[1] = (length < k ? length : k) + 1;
    plan[2] = 1;
    plan[3] = k - 1.0;
    StlPlan P = stl_plan_view(plan);
    std::printf("%lld %lld %lld %lld %lld\n", size, (long long)(P.c1 - plan), (long long)(P.K - plan),
                (long long)(P.KD - plan), (long long)(P.KDD - plan));
    return 0;
}
"""


@pytest.mark.skipif(NVCC is None, reason="nvcc not on PATH")
def test_plan_sizes_and_views_past_2_31_doubles(tmp_path):
    """stl.cuh's plan arithmetic in 64 bits (a plan's m * w passes 2**31 here)."""
    from tsanomaly.kernels import stl_gpu

    (tmp_path / "layout.cu").write_text(PLAN_LAYOUT)
    subprocess.run(["nvcc", "-std=c++17", "-O2", "-x", "cu", f"-I{KERNELS}", str(tmp_path / "layout.cu"),
                    "-o", str(tmp_path / "layout")], check=True, capture_output=True, timeout=300)
    result = subprocess.run([str(tmp_path / "layout")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    size, c1, K, KD, KDD = map(int, result.stdout.split())
    m, w = 600_000, 3600
    assert m * w > 2**31
    assert size == stl_gpu._plan_size(m, 3599, False) == 4 + 5 * m + 3 * m * w
    assert (c1, K, KD, KDD) == (4 + 4 * m, 4 + 5 * m, 4 + 5 * m + m * w, 4 + 5 * m + 2 * m * w)


def _fake_cupy_for_stl(monkeypatch, params, launches, allocations):
    """A NumPy stand-in for CuPy whose ``zeros`` records sizes but never allocates more than a
    few values (the kernels do not run), and a module of kernels that check each launch's
    arguments against the PTX parameter sizes."""
    import types

    class OutOfMemoryError(Exception):
        pass

    class Device:
        def __init__(self, device_id=0):
            self.id = device_id

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def zeros(shape, dtype=np.float64):
        allocations.append(int(np.prod(shape)))
        return np.zeros(min(int(np.prod(shape)), 16), dtype=dtype)

    def kernel(name):
        def launch(grid, block, args):
            assert len(args) == len(params[name]), name
            for k, (arg, size) in enumerate(zip(args, params[name])):
                if isinstance(arg, np.ndarray):
                    assert size == 8, f"{name} argument {k}: an array for a {size}-byte parameter"
                else:
                    assert isinstance(arg, np.generic), f"{name} argument {k}: {type(arg).__name__}"
                    assert arg.dtype.itemsize == size, f"{name} argument {k}: {arg.dtype} for {size} bytes"
            launches.append((name, grid, block, args))
        return launch

    fake = types.SimpleNamespace(**{name: getattr(np, name) for name in dir(np) if not name.startswith("_")})
    fake.empty = np.zeros
    fake.zeros = zeros
    fake.cuda = types.SimpleNamespace(
        Device=Device, runtime=types.SimpleNamespace(memGetInfo=lambda: (8 << 30, 16 << 30)),
        memory=types.SimpleNamespace(OutOfMemoryError=OutOfMemoryError))
    fake.get_default_memory_pool = lambda: types.SimpleNamespace(free_bytes=lambda: 0, free_all_blocks=lambda: None)
    module = types.SimpleNamespace(get_function=kernel)
    monkeypatch.setattr(backend, "array_module", lambda device: fake)
    monkeypatch.setattr(backend, "load_cuda_module", lambda filename, opts=(): module)


def test_gpu_launches_pass_64_bit_plan_offsets(monkeypatch, stl_ptx):
    """Minute data with a daily period (p = 1440, statsmodels' default trend 2751): from
    n ~ 262,800 points on the low-pass plan starts past 2**31 doubles (26 GB of plans, which
    fits an 80 GB GPU). The launches must hand the offsets over as 64-bit values, unwrapped."""
    from tsanomaly.kernels import stl_gpu

    n, p, ns, nt, nl = 262_800, 1440, 7, 2751, 1441
    launches, allocations = [], []
    _fake_cupy_for_stl(monkeypatch, _ptx_params(stl_ptx), launches, allocations)
    stl_gpu._plans.cache_clear()
    try:
        y = np.zeros((1, n))
        stl_gpu.stl(y, p, ns, nt, nl, 1, 1, 1, 2, 15)
    finally:
        stl_gpu._plans.cache_clear()  # it holds the stand-in's arrays
    k_a = (n - 1) // p + 1
    sizes = [stl_gpu._plan_size(k_a, ns, True), stl_gpu._plan_size(k_a - 1, ns, True),
             stl_gpu._plan_size(n, nt, False), stl_gpu._plan_size(n, nl, False)]
    offsets = [0, sizes[0], sizes[0] + sizes[1], sizes[0] + sizes[1] + sizes[2]]
    assert offsets[3] > 2**31 - 1  # the case
    assert allocations[0] == sum(sizes)
    names = [name for name, *_ in launches]
    assert names == ["stl_build_plans", "stl_batch"]
    build, batch = launches[0][3], launches[1][3]
    assert [a.dtype for a in build[-4:]] == [np.int64] * 4 and [int(a) for a in build[-4:]] == offsets
    assert [a.dtype for a in batch[6:10]] == [np.int64] * 4 and [int(a) for a in batch[6:10]] == offsets
    assert [int(a) for a in build[1:4]] == [n, p, ns] and int(batch[11]) == n


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    if NVCC is None:
        pytest.skip("nvcc not on PATH")
    folder = tmp_path_factory.mktemp("stl_harness")
    (folder / "harness.cu").write_text(HARNESS)
    exe = folder / "harness"
    subprocess.run(["nvcc", "-std=c++17", "-O2", "-x", "cu", f"-I{KERNELS}", str(folder / "harness.cu"),
                    "-o", str(exe)], check=True, capture_output=True, timeout=300)
    return exe


@pytest.mark.parametrize(
    "p, n, ns, degs, robust",
    [(12, 100, 7, (1, 1, 1), True), (7, 45, 5, (0, 1, 0), False), (24, 170, 11, (1, 0, 1), True),
     (5, 12, 9, (1, 1, 1), True)],
)
def test_cuda_arithmetic_on_the_host_equals_statsmodels(harness, tmp_path, p, n, ns, degs, robust):
    """The kernel's per-context functions (stl.cuh), run on the CPU over a strided batch with gaps."""
    rng = np.random.default_rng(p * n)
    n_ctx = 3
    x = _series(rng, n_ctx, n, p)
    x[1, 3] = np.nan
    x[1, 10:14] = np.nan
    x[2, -2:] = np.nan
    nt = int(np.ceil(1.5 * p / (1 - 1.5 / ns)))
    nt += nt % 2 == 0
    nl = p + 1 + (p % 2 == 1)  # smallest odd integer > p
    inner, outer = (2, 15) if robust else (5, 0)
    np.ascontiguousarray(x.T).tofile(tmp_path / "in.bin")
    args = [n_ctx, n, p, ns, nt, nl, *degs, inner, outer]
    subprocess.run([str(harness), str(tmp_path / "in.bin"), str(tmp_path / "out.bin"), *map(str, args)],
                   check=True, timeout=60)
    filled, season, trend, weights = np.fromfile(tmp_path / "out.bin").reshape(4, n, n_ctx).transpose(0, 2, 1)
    np.testing.assert_array_equal(filled, stl_cpu.fill_gaps(x)[0])
    cpu_season, cpu_trend, _ = stl_cpu.stl(filled, p, ns, nt, nl, *degs, inner, outer)
    kw = dict(seasonal=ns, trend=nt, low_pass=nl, seasonal_deg=degs[0], trend_deg=degs[1],
              low_pass_deg=degs[2], robust=robust)
    for c in range(n_ctx):
        ref = STL(filled[c], period=p, **kw).fit(inner_iter=inner, outer_iter=outer)
        sens = _sensitivity(lambda v: STL(v, period=p, **kw).fit(inner_iter=inner, outer_iter=outer), filled[c])
        scale = np.max(np.abs(filled[c]))
        _assert_close(trend[c], ref.trend, scale, sens, "host-run CUDA trend")
        _assert_close(season[c], ref.seasonal, scale, sens, "host-run CUDA seasonal")
        # same algorithm, same order of operations up to summation grouping: CPU kernel and CUDA agree closely
        _assert_close(trend[c], cpu_trend[c], scale, sens / 100, "CUDA vs CPU kernel trend")


# ---------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.parametrize("periods", [24, (24, 168)])
def test_gpu_equals_cpu(periods):
    rng = np.random.default_rng(9)
    n = 24 * 7 * 5
    y = _series(rng, 300, n, 24)  # several thread blocks of 128 contexts
    y[5, 100:120] = np.nan
    y[7] = np.nan
    kwargs = dict(periods=periods)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        cpu = decompose(y, device="cpu", **kwargs)
        gpu = decompose(y, device="cuda", **kwargs)
        gpu_in = decompose(backend.to_device(y, "cuda"), device="cuda", **kwargs)
    assert backend.is_device_array(gpu_in.trend)
    for name in ("trend", "seasonal", "remainder"):
        np.testing.assert_allclose(getattr(gpu, name), getattr(cpu, name), rtol=0, atol=1e-10 * np.nanmax(np.abs(y)),
                                   equal_nan=True, err_msg=name)
    np.testing.assert_array_equal(gpu.skipped, cpu.skipped)
    np.testing.assert_array_equal(backend.to_numpy(gpu_in.remainder), gpu.remainder)


@pytest.mark.gpu
def test_gpu_fill_gaps_equals_cpu():
    from tsanomaly.kernels import stl_gpu

    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 50))
    x[rng.random(x.shape) < 0.3] = np.nan
    x[3] = np.nan
    filled, n_obs = stl_gpu.fill_gaps(backend.to_device(x, "cuda"))
    ref, ref_obs = stl_cpu.fill_gaps(x)
    np.testing.assert_array_equal(backend.to_numpy(filled), ref)
    np.testing.assert_array_equal(backend.to_numpy(n_obs), ref_obs)
