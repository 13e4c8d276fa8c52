"""The detectors: one module per algorithm, all on the API of :class:`tsanomaly.base.BaseDetector`."""
from tsanomaly.detectors.baseline import RollingZScoreDetector

__all__ = ["RollingZScoreDetector"]
