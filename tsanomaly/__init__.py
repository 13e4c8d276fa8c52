"""tsanomaly: GPU-accelerated anomaly detection for many short per-context time series.

Public names only; see the README for a quick start. Importing tsanomaly needs
neither CuPy nor PyTorch: they are imported when a GPU path or the LSTM
detector is used.
"""
from tsanomaly.backend import GPUUnavailableError, gpu_available, resolve_device
from tsanomaly.base import BaseDetector, CalibrationWarning, HistoryGapWarning, NotFittedError, load
from tsanomaly.datasets import make_security_panel
from tsanomaly.detectors import RollingZScoreDetector, make_detector
from tsanomaly.detectors.ensemble import EnsembleDetector
from tsanomaly.detectors.lstm_ae import LSTMAutoencoderDetector
from tsanomaly.detectors.matrix_profile import MatrixProfile, MatrixProfileDetector, matrix_profile
from tsanomaly.detectors.stl import Decomposition, STLDetector, decompose
from tsanomaly.panel import Panel

__version__ = "0.1.0"

__all__ = [
    "BaseDetector",
    "CalibrationWarning",
    "Decomposition",
    "EnsembleDetector",
    "GPUUnavailableError",
    "HistoryGapWarning",
    "LSTMAutoencoderDetector",
    "MatrixProfile",
    "MatrixProfileDetector",
    "NotFittedError",
    "Panel",
    "RollingZScoreDetector",
    "STLDetector",
    "decompose",
    "gpu_available",
    "load",
    "make_detector",
    "make_security_panel",
    "matrix_profile",
    "resolve_device",
]
