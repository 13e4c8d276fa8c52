"""Timing helpers shared by the ASV benchmarks and compare.py (speed is measured here, never in tests)."""
from __future__ import annotations

import time

from tsanomaly.backend import gpu_available


def require_device(device: str) -> None:
    """Skip a benchmark case (ASV skips on NotImplementedError in setup) when its device is absent."""
    if device == "cuda" and not gpu_available():
        raise NotImplementedError("no CUDA device visible")


def compare_devices(requested: str, torch: bool = False) -> list[str]:
    """The devices a ``compare.py`` sub-command runs on for its ``--device`` option.

    ``"auto"``: the CPU, and the GPU too when one is visible (to CuPy, and to PyTorch as well
    when ``torch`` is true: the LSTM needs both); ``"cpu"`` or ``"cuda"``: that device alone.
    """
    if requested != "auto":
        return [requested]
    visible = gpu_available()
    if visible and torch:
        try:
            import torch as torch_module
        except ImportError:
            visible = False
        else:
            visible = torch_module.cuda.is_available()
    return ["cpu"] + (["cuda"] if visible else [])


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so a timer sees the kernel's end, not its launch."""
    if device == "cuda":
        import cupy

        cupy.cuda.Device().synchronize()


def best_time(fn, device: str = "cpu", repeat: int = 3, warmup: int = 1) -> float:
    """Smallest wall time of ``repeat`` calls of ``fn()`` in seconds, after ``warmup`` untimed calls.

    The warm-up absorbs JIT compilation (Numba, NVRTC) and allocator growth, which a
    scoring job pays once per process, not per batch.
    """
    for _ in range(warmup):
        fn()
        synchronize(device)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


class _DetectorFit:
    """Base of the ASV cases that time a detector's fit on hourly logins per context
    (``make_security_panel``) and record the fit's peak memory. A subclass sets ``n_days`` and
    ``make(device)``, the detector. Named with an underscore: ASV, which collects every public
    class of the benchmark folder, must not run this base itself."""

    params = (["cpu", "cuda"], [10_000])
    param_names = ["device", "n_contexts"]
    unit = "series/s"
    timeout = 900
    n_days = 21

    def make(self, device):
        raise NotImplementedError

    def setup(self, device, n_contexts):
        from tsanomaly.datasets import make_security_panel

        require_device(device)
        data = make_security_panel(n_contexts=n_contexts, n_days=self.n_days, seed=0)
        self.history = data.panels["logins"].to(device)
        self.device = device

    def _fit(self):
        return self.make(self.device).fit(self.history)

    def track_fit_series_per_second(self, device, n_contexts):
        return n_contexts / best_time(self._fit, device, repeat=1)

    def peakmem_fit(self, device, n_contexts):
        self._fit()
