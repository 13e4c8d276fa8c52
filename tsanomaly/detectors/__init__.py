"""The detectors: one module per algorithm, all on the API of :class:`tsanomaly.base.BaseDetector`.

:func:`make_detector` builds one by its short name (as the CLI and the
evaluation report name them); modules whose dependencies are optional (the
LSTM needs PyTorch) are imported only when asked for.
"""
from __future__ import annotations

import importlib

from tsanomaly.detectors.baseline import RollingZScoreDetector

__all__ = ["RollingZScoreDetector", "DETECTOR_CLASSES", "make_detector"]

#: Short name -> (module, class name).
DETECTOR_CLASSES = {
    "baseline": ("tsanomaly.detectors.baseline", "RollingZScoreDetector"),
    "stl": ("tsanomaly.detectors.stl", "STLDetector"),
    "mp": ("tsanomaly.detectors.matrix_profile", "MatrixProfileDetector"),
    "lstm": ("tsanomaly.detectors.lstm_ae", "LSTMAutoencoderDetector"),
    "ensemble": ("tsanomaly.detectors.ensemble", "EnsembleDetector"),
}


def detector_class(name: str) -> type:
    """The detector class for a short name (``"baseline"``, ``"stl"``, ``"mp"``, ``"lstm"``, ``"ensemble"``)."""
    if name not in DETECTOR_CLASSES:
        raise ValueError(f"unknown detector {name!r}; choose one of {sorted(DETECTOR_CLASSES)}")
    module, cls = DETECTOR_CLASSES[name]
    return getattr(importlib.import_module(module), cls)


def make_detector(name: str, **params):
    """Build a detector by short name with the given constructor parameters."""
    return detector_class(name)(**params)
