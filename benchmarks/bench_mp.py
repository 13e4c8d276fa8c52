"""ASV throughput of the matrix profile, in window pairs per second.

Pairs of a self-join of ``w = n - m + 1`` windows with exclusion zone ``e = ceil(m/4)``:
``(w - e - 1)(w - e) / 2`` (the pairs both tsanomaly and STUMPY compute). GPU cases raise
NotImplementedError in ``setup`` where no GPU is visible, which ASV reports as skipped;
``benchmarks/compare.py mp`` puts the same cases side by side with STUMPY.
"""
import math

import numpy as np

from benchmarks.common import _DetectorFit, best_time, require_device
from tsanomaly.backend import to_device
from tsanomaly.datasets import make_security_panel
from tsanomaly.detectors.matrix_profile import MatrixProfileDetector, matrix_profile


def self_join_pairs(n: int, m: int) -> int:
    w, e = n - m + 1, math.ceil(m / 4)
    return (w - e - 1) * (w - e) // 2


class MatrixProfileSelfJoin:
    """One random walk, m = 100: n = 2**14 and 2**16 on the CPU, 2**20 and 2**22 on the GPU;
    z-normalised distances and plain ones (``normalize=False``, the same kernels)."""

    params = (["cpu", "cuda"], [2**14, 2**16, 2**20, 2**22], ["double", "single"], [True, False])
    param_names = ["device", "n", "precision", "normalize"]
    unit = "pairs/s"
    timeout = 1800
    m = 100

    def setup(self, device, n, precision, normalize):
        require_device(device)
        if (device == "cpu") != (n <= 2**16):
            # 2**20 on two CPU cores would take minutes; 2**14 barely fills a GPU.
            raise NotImplementedError("CPU cases are n <= 2**16, GPU cases n >= 2**20")
        x = np.cumsum(np.random.default_rng(0).standard_normal(n))
        self.x = to_device(x, device)  # results stay where the input is: no copies timed

    def track_pairs_per_second(self, device, n, precision, normalize):
        seconds = best_time(
            lambda: matrix_profile(self.x, self.m, device=device, precision=precision, normalize=normalize), device
        )
        return self_join_pairs(n, self.m) / seconds


class MatrixProfileBatch:
    """10,000 contexts x 2,016 points (twelve weeks hourly), m = 24, all in one call."""

    params = (["cpu", "cuda"], ["double", "single"])
    param_names = ["device", "precision"]
    unit = "pairs/s"
    timeout = 1800
    n_contexts, length, m = 10_000, 2_016, 24

    def setup(self, device, precision):
        require_device(device)
        rng = np.random.default_rng(0)
        batch = np.cumsum(rng.standard_normal((self.n_contexts, self.length)), axis=1)
        self.batch = to_device(batch, device)

    def track_pairs_per_second(self, device, precision):
        seconds = best_time(
            lambda: matrix_profile(self.batch, self.m, device=device, precision=precision), device, repeat=2
        )
        return self.n_contexts * self_join_pairs(self.length, self.m) / seconds


class MatrixProfileDetectorFit(_DetectorFit):
    """MatrixProfileDetector.fit with its defaults (window 24, history 672): 15 days of hourly
    counts (360 points) per context; peak memory too, which profiling blocks of contexts bounds."""

    params = (["cpu", "cuda"], [20_000])
    n_days = 15

    def make(self, device):
        return MatrixProfileDetector(device=device)


class MatrixProfileDetectorScore:
    """MatrixProfileDetector.score of one new day per context (the hourly or daily job), after a
    fit on 15 days with the defaults: the left profile of 24 new windows against the kept history."""

    params = (["cpu", "cuda"], [20_000])
    param_names = ["device", "n_contexts"]
    unit = "series/s"
    timeout = 900

    def setup(self, device, n_contexts):
        require_device(device)
        data = make_security_panel(n_contexts=n_contexts, n_days=16, seed=0)
        history, new = data.split(data.index[-24])
        self.new = new.panels["logins"].to(device)
        self.detector = MatrixProfileDetector(device=device).fit(history.panels["logins"].to(device))
        self.device = device

    def track_score_series_per_second(self, device, n_contexts):
        return n_contexts / best_time(lambda: self.detector.score(self.new), device)
