"""ASV time of calibrating one alert threshold per context from the training scores.

A fit with ``per_context=True`` ends here: one quantile, or one peaks-over-threshold fit
(``threshold="pot"``, a generalised Pareto fit per context), for every context. CPU only:
the scores are moved to the host for calibration.
"""
import numpy as np

from tsanomaly import thresholds


class PerContextThresholds:
    """``thresholds.calibrate(..., per_context=True)`` on 504 training scores (three weeks of
    hours) per context: standard normal, with 30 NaN columns (windows still filling)."""

    params = [["quantile", "pot"], [10_000, 100_000]]
    param_names = ["threshold", "n_contexts"]
    timeout = 600

    def setup(self, threshold, n_contexts):
        rng = np.random.default_rng(0)
        self.scores = rng.standard_normal((n_contexts, 504))
        self.scores[:, :30] = np.nan

    def time_calibrate(self, threshold, n_contexts):
        thresholds.calibrate(self.scores, threshold=threshold, contamination=0.001, per_context=True)
