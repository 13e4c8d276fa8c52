"""tsanomaly: GPU-accelerated anomaly detection for many short per-context time series.

Public names only; see the README for a quick start.
"""
from tsanomaly.backend import GPUUnavailableError, gpu_available, resolve_device
from tsanomaly.base import BaseDetector, NotFittedError, load
from tsanomaly.detectors import RollingZScoreDetector
from tsanomaly.panel import Panel

__version__ = "0.1.0"

__all__ = [
    "BaseDetector",
    "GPUUnavailableError",
    "NotFittedError",
    "Panel",
    "RollingZScoreDetector",
    "gpu_available",
    "load",
    "resolve_device",
]
