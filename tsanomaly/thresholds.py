"""Calibration of anomaly scores into alert thresholds.

A detector's scores are comparable across contexts (robust z-scores, tail
probabilities), so one threshold can serve every context.  It is learnt at
``fit`` time from the scores of the training data:

- ``"quantile"``: the ``1 - contamination`` quantile of the training scores;
- ``"pot"``: peaks over threshold (Siffer et al., KDD 2017), a generalised
  Pareto fit to the tail giving the threshold for the target risk
  ``contamination``, with a fallback to the quantile rule where a context has
  too few excesses;
- a number: that fixed threshold.

With ``per_context=True`` each context gets its own threshold from its own
training scores (contexts with too few finite scores fall back to the global
threshold).
"""
from __future__ import annotations

import numpy as np

from tsanomaly import backend

__all__ = ["THRESHOLD_METHODS", "calibrate", "validate_threshold_params"]

THRESHOLD_METHODS = ("quantile", "pot")

# A context needs at least this many finite training scores for its own threshold.
MIN_SCORES_PER_CONTEXT = 50


def validate_threshold_params(threshold, contamination, per_context) -> None:
    """Raise ValueError for a threshold setting that cannot be calibrated."""
    if isinstance(threshold, str):
        if threshold not in THRESHOLD_METHODS:
            raise ValueError(
                f"threshold must be one of {THRESHOLD_METHODS} or a number, got {threshold!r}"
            )
    elif not isinstance(threshold, (int, float)) or not np.isfinite(threshold):
        raise ValueError(f"threshold must be one of {THRESHOLD_METHODS} or a finite number, got {threshold!r}")
    if not 0.0 < float(contamination) < 0.5:
        raise ValueError(f"contamination must lie in (0, 0.5), got {contamination!r}")
    if not isinstance(per_context, (bool, np.bool_)):
        raise ValueError(f"per_context must be True or False, got {per_context!r}")


def _tail_threshold(scores: np.ndarray, method: str, contamination: float) -> float:
    """One threshold from a 1-D array of finite scores."""
    if method == "quantile":
        return float(np.quantile(scores, 1.0 - contamination))
    from tsanomaly.pot import pot_threshold

    return float(pot_threshold(scores, risk=contamination))


def calibrate(train_scores, threshold="quantile", contamination=0.001, per_context=False):
    """Thresholds for each context from the training scores.

    Parameters
    ----------
    train_scores : array, shape (n_contexts, n_times)
        Scores of the training data (higher = more anomalous); NaN is ignored.
    threshold : {"quantile", "pot"} or float
        Calibration rule, or a fixed threshold.
    contamination : float
        Expected share of anomalous points, in (0, 0.5): the quantile rule's
        ``1 - contamination`` quantile, POT's target risk.
    per_context : bool
        One threshold per context instead of one for all.

    Returns
    -------
    thresholds : numpy.ndarray, shape (n_contexts,)
        The threshold of each context.
    global_threshold : float
        The threshold learnt from all contexts together (used for contexts
        unseen at fit and as the per-context fallback). ``inf`` when no
        training score is finite.
    """
    validate_threshold_params(threshold, contamination, per_context)
    scores = backend.to_numpy(train_scores).astype(np.float64, copy=False)
    n_contexts = scores.shape[0]
    if not isinstance(threshold, str):
        value = float(threshold)
        return np.full(n_contexts, value), value

    finite = scores[np.isfinite(scores)]
    global_value = _tail_threshold(finite, threshold, contamination) if finite.size else np.inf
    thresholds = np.full(n_contexts, global_value)
    if per_context:
        for row in range(n_contexts):
            row_scores = scores[row][np.isfinite(scores[row])]
            if row_scores.size >= MIN_SCORES_PER_CONTEXT:
                thresholds[row] = _tail_threshold(row_scores, threshold, contamination)
    return thresholds, float(global_value)
