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


def _pot_initial_quantile(contamination: float) -> float:
    """POT's initial (high) quantile: 0.98, lowered so the tail still holds twice the target risk."""
    return min(0.98, 1.0 - 2.0 * contamination)


def calibrate(train_scores, threshold="quantile", contamination=0.001, per_context=False):
    """Thresholds for each context from the training scores.

    Parameters
    ----------
    train_scores : array, shape (n_contexts, n_times)
        Scores of the training data (higher = more anomalous); NaN and
        infinite scores are ignored.
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
    scores = backend.to_numpy(train_scores).astype(np.float64, copy=True)
    scores[~np.isfinite(scores)] = np.nan
    n_contexts = scores.shape[0]
    if not isinstance(threshold, str):
        value = float(threshold)
        return np.full(n_contexts, value), value

    finite = scores[np.isfinite(scores)]
    if finite.size == 0:
        return np.full(n_contexts, np.inf), float(np.inf)
    if threshold == "quantile":
        global_value = float(np.quantile(finite, 1.0 - contamination))
    else:
        from tsanomaly.pot import pot_threshold

        global_value = float(pot_threshold(finite, risk=contamination, initial_quantile=_pot_initial_quantile(contamination)))
    thresholds = np.full(n_contexts, global_value)
    if per_context:
        enough = np.isfinite(scores).sum(axis=1) >= MIN_SCORES_PER_CONTEXT
        if enough.any():
            if threshold == "quantile":
                own = np.nanquantile(scores[enough], 1.0 - contamination, axis=1)
            else:
                from tsanomaly.pot import pot_thresholds

                # Contexts with too few excesses fall back to their own quantile (pot_thresholds).
                own = pot_thresholds(
                    scores[enough], risk=contamination, initial_quantile=_pot_initial_quantile(contamination)
                ).thresholds
            thresholds[enough] = own
    return thresholds, global_value
