"""ASV throughput of the batched STL / MSTL decomposition (series decomposed per second), CPU and GPU.

Cases (the issue's): robust STL of 720 hourly points (30 days, period 24) for
1,000 and 10,000 contexts (and 100,000 on the GPU); MSTL with periods (24, 168)
of 2,016 points (12 weeks) for 1,000 contexts (and 10,000 on the GPU).  The
series are the negative-binomial counts of ``benchmarks/compare_stl.py``.
statsmodels' side of the comparison is in ``benchmarks/compare.py stl``.
"""
from benchmarks.common import _DetectorFit, best_time, require_device
from benchmarks.compare_stl import MSTL_POINTS, STL_POINTS, make_series
from tsanomaly import backend
from tsanomaly.detectors.stl import STLDetector, decompose


def _require(device, n_contexts, cpu_max):
    require_device(device)
    if device == "cpu" and n_contexts > cpu_max:
        raise NotImplementedError(f"{n_contexts} contexts is a GPU-only case")


class STLThroughput:
    """Robust STL, period 24, 720 points per context."""

    params = (["cpu", "cuda"], [1_000, 10_000, 100_000])
    param_names = ["device", "n_contexts"]
    unit = "series/s"
    timeout = 900

    def setup(self, device, n_contexts):
        _require(device, n_contexts, cpu_max=10_000)
        self.values = backend.to_device(make_series(n_contexts, STL_POINTS), device)

    def track_robust_stl_series_per_second(self, device, n_contexts):
        seconds = best_time(lambda: decompose(self.values, periods=24, robust=True, device=device), device)
        return n_contexts / seconds


class MSTLThroughput:
    """MSTL, periods (24, 168), robust, 2,016 points per context."""

    params = (["cpu", "cuda"], [1_000, 10_000])
    param_names = ["device", "n_contexts"]
    unit = "series/s"
    timeout = 900

    def setup(self, device, n_contexts):
        _require(device, n_contexts, cpu_max=1_000)
        self.values = backend.to_device(make_series(n_contexts, MSTL_POINTS), device)

    def track_mstl_series_per_second(self, device, n_contexts):
        seconds = best_time(lambda: decompose(self.values, periods=(24, 168), robust=True, device=device), device)
        return n_contexts / seconds


class STLDetectorFit(_DetectorFit):
    """STLDetector.fit (decomposition, held-out folds, per-context state): 21 days of hourly counts
    (504 points, period 24) per context; peak memory too, which fitting in blocks of contexts bounds."""

    def make(self, device):
        return STLDetector(periods=24, device=device)
