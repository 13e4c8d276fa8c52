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

A point alerts when its score is strictly **above** the threshold
(``score > threshold``). Equality must not alert: a context whose training
scores are all equal (always 0 events) calibrates a threshold equal to that
score, and seeing the same value again is no anomaly.

With ``per_context=True`` each context gets its own threshold from its own
training scores (contexts with fewer than :data:`MIN_SCORES_PER_CONTEXT`
finite scores, none at all included, fall back to the global threshold).
When no training score is finite at all, every threshold is ``inf`` and
nothing can alert; ``BaseDetector.fit`` then emits a
``tsanomaly.CalibrationWarning``.

:func:`suppress_repeats` turns a score stream into one alert per incident: a
score counts only where it rises above everything the same context scored in
the preceding ``refractory`` steps.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from tsanomaly import backend
from tsanomaly.panel import Panel
from tsanomaly.scaling import nanquantile
from tsanomaly.validation import check_flag, is_finite_real, is_int

__all__ = ["THRESHOLD_METHODS", "above_threshold", "calibrate", "suppress_repeats", "validate_threshold_params"]

THRESHOLD_METHODS = ("quantile", "pot")

def above_threshold(scores, threshold) -> np.ndarray:
    """The alert rule, written once: ``scores > threshold`` (NaN scores are False).

    Parameters
    ----------
    scores : ndarray of float
        Scores, any shape, NumPy or CuPy.
    threshold : float or ndarray of float
        A threshold broadcastable against ``scores`` (per context: shape (n_contexts, 1)); an
        array must be on the device of ``scores`` (CuPy refuses to compare with a NumPy array).

    Returns
    -------
    ndarray of bool
        Same shape as ``scores``.
    """
    with np.errstate(invalid="ignore"):
        return scores > threshold


# A context needs at least this many finite training scores for its own threshold.
MIN_SCORES_PER_CONTEXT = 50


def validate_threshold_params(threshold, contamination, per_context) -> None:
    """Raise ValueError for a threshold setting that cannot be calibrated.

    ``threshold`` must be one of :data:`THRESHOLD_METHODS` or a finite real number
    (Python or NumPy, not a bool); ``contamination`` a real number (not a bool) in
    (0, 0.5); ``per_context`` a bool. A string such as ``"0.01"`` or ``None`` is refused
    here rather than failing later with a TypeError.
    """
    if isinstance(threshold, str):
        if threshold not in THRESHOLD_METHODS:
            raise ValueError(
                f"threshold must be one of {THRESHOLD_METHODS} or a number, got {threshold!r}"
            )
    elif not is_finite_real(threshold):
        raise ValueError(f"threshold must be one of {THRESHOLD_METHODS} or a finite number, got {threshold!r}")
    if not is_finite_real(contamination) or not 0.0 < contamination < 0.5:
        raise ValueError(f"contamination must be a number in (0, 0.5), got {contamination!r}")
    check_flag(per_context, "per_context")


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
        One threshold per context instead of one for all. A context with fewer
        than :data:`MIN_SCORES_PER_CONTEXT` finite training scores (none at all
        included) gets the global threshold, and one RuntimeWarning says how
        many did.

    Returns
    -------
    thresholds : numpy.ndarray, shape (n_contexts,)
        The threshold of each context; a score alerts when it is strictly
        above its context's threshold.
    global_threshold : float
        The threshold learnt from all contexts together (used for contexts
        unseen at fit and as the per-context fallback). ``inf`` when no
        training score is finite (then every context's threshold is ``inf``,
        a fixed numeric threshold excepted).

    Raises
    ------
    ValueError
        For invalid settings, and for ``train_scores`` that are not 2-D (one
        context's scores are ``scores[None, :]``).
    """
    validate_threshold_params(threshold, contamination, per_context)
    # Read, never written: a copy of the scores (hundreds of MB for 100,000 contexts) only where
    # infinite scores must become NaN, which the quantile and POT rules ignore.
    scores = np.asarray(backend.to_numpy(train_scores), dtype=np.float64)
    if scores.ndim != 2:
        # A 1-D array read as one score per context gave one threshold per score.
        raise ValueError(
            f"calibrate expects train_scores of shape (n_contexts, n_times), got shape {scores.shape}; "
            "for the scores of one context pass scores[None, :]"
        )
    is_finite = np.isfinite(scores)
    if np.isinf(scores).any():
        scores = np.where(is_finite, scores, np.nan)
    n_contexts = scores.shape[0]
    if not isinstance(threshold, str):
        value = float(threshold)
        return np.full(n_contexts, value), value

    finite = scores[is_finite]
    if finite.size == 0:
        return np.full(n_contexts, np.inf), float(np.inf)
    if threshold == "quantile":
        global_value = float(np.quantile(finite, 1.0 - contamination))
    else:
        from tsanomaly.pot import pot_threshold

        global_value = float(pot_threshold(finite, risk=contamination, initial_quantile=_pot_initial_quantile(contamination)))
    thresholds = np.full(n_contexts, global_value)
    if per_context:
        n_finite = is_finite.sum(axis=1)
        enough = n_finite >= MIN_SCORES_PER_CONTEXT
        _warn_global_fallbacks(n_finite, enough, threshold)
        if enough.any():
            rows = scores if enough.all() else scores[enough]
            if threshold == "quantile":
                own = nanquantile(rows, 1.0 - contamination, axis=1)
            else:
                from tsanomaly.pot import pot_thresholds

                # Contexts with too few excesses fall back to their own quantile (pot_thresholds).
                initial_quantile = _pot_initial_quantile(contamination)
                own, fell_back = pot_thresholds(rows, risk=contamination, initial_quantile=initial_quantile)
                _warn_pot_fallbacks(fell_back, is_finite[enough].sum(axis=1), initial_quantile)
            thresholds[enough] = own
    return thresholds, global_value


def _warn_global_fallbacks(n_finite: np.ndarray, enough: np.ndarray, threshold: str) -> None:
    """RuntimeWarning when per-context calibration gave some contexts the global threshold.

    The per-context rule needs :data:`MIN_SCORES_PER_CONTEXT` finite training scores; the
    other contexts silently got the global threshold, under ``per_context=True``.
    """
    if enough.all():
        return
    short = ~enough
    none = int((n_finite[short] == 0).sum())
    warnings.warn(
        f"per_context=True (threshold={threshold!r}) gave {int(short.sum())} of {enough.size} contexts the "
        f"global threshold: they have fewer than {MIN_SCORES_PER_CONTEXT} finite training scores "
        f"({none} of them none), too few for a threshold of their own; fit on a longer history to give them one",
        RuntimeWarning, stacklevel=4,
    )


def _warn_pot_fallbacks(fell_back: np.ndarray, n_scores: np.ndarray, initial_quantile: float) -> None:
    """RuntimeWarning when per-context POT gave some contexts their quantile instead.

    Silent, a short history made ``threshold="pot"`` the quantile rule for every context (STL
    holds out 336 scores per context, fewer than the 500 that ten excesses over the 0.98
    quantile need), and nothing said so.
    """
    from tsanomaly.pot import DEFAULT_MIN_EXCESSES

    if not fell_back.any():
        return
    needed = int(np.ceil(DEFAULT_MIN_EXCESSES / (1.0 - initial_quantile)))
    warnings.warn(
        f"threshold='pot' fell back to the quantile rule for {int(fell_back.sum())} of {fell_back.size} "
        f"contexts with their own threshold (median {int(np.median(n_scores[fell_back]))} training scores "
        f"each): a context's GPD fit needs {DEFAULT_MIN_EXCESSES} excesses over its {initial_quantile:g} "
        f"quantile, about {needed} scores, and scores that do not repeat a few values (counts)",
        RuntimeWarning, stacklevel=4,
    )


def suppress_repeats(scores, refractory: int):
    """Scores of incident onsets: each score kept only where it exceeds every earlier score of its
    context within ``refractory`` steps; NaN elsewhere.

    A sustained incident (a credential-stuffing wave that lasts hours, a level shift) keeps a
    detector's score high for many steps, and each step over the threshold would be one more
    alert. This keeps a step only when its score is a new high for the last ``refractory``
    steps, so whatever threshold is applied afterwards, an incident raises one alert when it
    starts and again only if it grows worse. It looks back only, so it can run on a stream.
    NAB's scoring, which counts only the first detection in each window and charges every
    detection outside one, rewards exactly this.

    Parameters
    ----------
    scores : Panel or array_like, shape (n_times,) or (n_contexts, n_times)
        Scores in time order (higher = more anomalous); NaN for steps not scored: a detector's
        ``score(panel)``, or its values. NumPy or CuPy (computed on the host; the result is NumPy).
    refractory : int
        Look-back in steps, at least 1.

    Returns
    -------
    Panel, or numpy.ndarray of float64 the shape of ``scores``
        The score where it is an onset, NaN elsewhere: a Panel with the contexts and times of
        ``scores`` when ``scores`` is a Panel, else an array. The first scored step of a context
        is always an onset.

    Raises
    ------
    ValueError
        For ``refractory < 1`` or a non-integer, or scores of more than two dimensions.

    Examples
    --------
    >>> suppress_repeats([1.0, 5.0, 6.0, 5.5, 2.0, 7.0], refractory=3)
    array([ 1.,  5.,  6., nan, nan,  7.])
    """
    if not is_int(refractory) or refractory < 1:
        raise ValueError(f"refractory must be an integer >= 1, got {refractory!r}")
    if isinstance(scores, Panel):
        # det.score() gives a Panel (the README's use), which np.asarray cannot read (a TypeError):
        # its values are suppressed and the result keeps its contexts and times, as score() did.
        return scores.with_values(suppress_repeats(scores.to_numpy(), refractory))
    values = np.asarray(backend.to_numpy(scores), dtype=np.float64)
    if values.ndim not in (1, 2):
        raise ValueError(f"scores must be 1-D or 2-D (n_contexts, n_times), got shape {values.shape}")
    rows = np.atleast_2d(values)
    # Rolling max of the preceding `refractory` steps, per context (columns of the frame).
    earlier = pd.DataFrame(rows.T).shift(1).rolling(int(refractory), min_periods=1).max().to_numpy().T
    with np.errstate(invalid="ignore"):
        onset = np.isfinite(rows) & ~(rows <= earlier)  # NaN earlier (nothing scored yet) is an onset
    out = np.where(onset, rows, np.nan)
    return out if values.ndim == 2 else out[0]
