"""Timing helpers shared by the ASV benchmarks and compare.py (speed is measured here, never in tests)."""
from __future__ import annotations

import time

from tsanomaly.backend import gpu_available


def require_device(device: str) -> None:
    """Skip a benchmark case (ASV skips on NotImplementedError in setup) when its device is absent."""
    if device == "cuda" and not gpu_available():
        raise NotImplementedError("no CUDA device visible")


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
