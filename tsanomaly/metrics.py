"""Accuracy metrics for time-series anomaly detection.

Conventions used by every function here:

- Score direction: **higher = more anomalous**. A threshold ``t`` flags the points with
  ``score >= t``.
- Labels and predictions are 1-D boolean arrays (or 0/1 integers) of shape ``(n_times,)``,
  aligned with the scores. An *anomaly range* (a *segment*) is a maximal run of ``True``.
- **NaN scores are treated as the lowest possible score**: below every finite score and tied
  with each other, so a NaN never raises an alert before a finite score does (a detector that
  cannot score a point is not rewarded for it). Scores are never dropped, so every metric sees
  the same number of points as the labels.
- **Scores that carry no information -- all NaN, or one value wherever they are not NaN (a
  constant after a warm-up) -- get the no-skill value** (AUC-ROC and AUC-PR: all NaN or all
  equal; NaN among equal scores ranks those points lowest there): AUC-ROC
  and VUS-ROC 0.5; AUC-PR the share of anomalous points (scikit-learn's average precision of a
  constant score); VUS-PR that share with each buffer's soft labels; UCR top-1 a miss. A
  detector that cannot score a file is not rewarded for it, and never beats chance.
- Bad input (length mismatch, no positive label, non-boolean labels, unknown options) raises a
  ``ValueError`` that says what was received and what is allowed.

Metrics
-------
``auc_roc``, ``auc_pr``
    Point-wise area under the ROC curve and average precision (scikit-learn's definitions).
``vus_roc``, ``vus_pr``, ``vus``
    Volume under the range-ROC / range-PR surface (Paparrizos et al., VLDB 2022).
``range_prf``, ``range_f1``
    Range-based precision, recall and F1 (Tatbul et al., NeurIPS 2018).
``point_adjusted_prf``, ``point_adjusted_f1``
    Point-adjusted precision, recall, F1 (Xu et al., WWW 2018) -- optimistic, see its docstring.
``nab_file``, ``nab_score``, ``nab_sweep``, ``nab_corpus_score``
    The Numenta Anomaly Benchmark score (Lavin & Ahmad, ICMLA 2015) with its three profiles.
``ucr_correct``, ``ucr_accuracy``
    Top-1 accuracy of the UCR anomaly archive (Wu & Keogh, TKDE 2021).

This module depends on NumPy and SciPy, plus pandas (a dependency of the package) only when
``nab_file`` is given ``timestamps=``, to place timestamp windows on the points.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
from scipy.stats import rankdata

from tsanomaly.validation import is_int

__all__ = [
    "auc_roc",
    "auc_pr",
    "vus",
    "vus_roc",
    "vus_pr",
    "VUS",
    "PRF",
    "range_prf",
    "range_f1",
    "point_adjusted_prf",
    "point_adjusted_f1",
    "NAB_PROFILES",
    "NABFile",
    "NABResult",
    "nab_file",
    "nab_score",
    "nab_sweep",
    "nab_corpus_score",
    "ucr_correct",
    "ucr_accuracy",
]


# --------------------------------------------------------------------------------------------
# input checking
# --------------------------------------------------------------------------------------------
def _as_bool(x, name: str) -> np.ndarray:
    """A 1-D boolean array from booleans or 0/1 numbers; ValueError otherwise."""
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if a.dtype == bool:
        return a
    if a.size and not (np.issubdtype(a.dtype, np.number)):
        raise ValueError(f"{name} must be boolean or 0/1 numbers, got dtype {a.dtype}")
    if a.size and not np.isin(a, (0, 1)).all():
        bad = a[~np.isin(a, (0, 1))][0]
        raise ValueError(f"{name} must be boolean or 0/1 numbers, got the value {bad!r}")
    return a.astype(bool)


def _as_scores(x, n: int, name: str = "scores") -> np.ndarray:
    """A 1-D float64 array of length ``n`` with NaN replaced by ``-inf`` (lowest score)."""
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if a.size and not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
    if a.shape[0] != n:
        raise ValueError(f"{name} has length {a.shape[0]} but labels have length {n}")
    a = a.astype(np.float64)
    return np.where(np.isnan(a), -np.inf, a)


def _labels_scores(labels, scores, *, need_negative: bool):
    y = _as_bool(labels, "labels")
    s = _as_scores(scores, y.shape[0])
    n_pos = int(y.sum())
    if n_pos == 0:
        raise ValueError("labels have no positive point: the metric is undefined without anomalies")
    if need_negative and n_pos == y.shape[0]:
        raise ValueError("labels have no negative point: the metric is undefined without normal points")
    return y, s


def _segments(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (inclusive) positions of the runs of True in a 1-D boolean array."""
    d = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    starts = np.flatnonzero(d == 1)
    ends = np.flatnonzero(d == -1) - 1
    return starts, ends


# --------------------------------------------------------------------------------------------
# point-wise AUCs
# --------------------------------------------------------------------------------------------
def auc_roc(labels, scores) -> float:
    """Area under the ROC curve of point scores.

    Equal to the probability that a random anomalous point scores higher than a random normal
    point, ties counting one half (the Mann-Whitney U statistic); identical to
    ``sklearn.metrics.roc_auc_score``.

    Parameters
    ----------
    labels : array-like of bool, shape (n_times,)
        True at anomalous points.
    scores : array-like of float, shape (n_times,)
        Higher = more anomalous. NaN is treated as the lowest score.

    Returns
    -------
    float in [0, 1]

    Raises
    ------
    ValueError
        On a length mismatch, or when ``labels`` has no positive or no negative point.

    Examples
    --------
    >>> auc_roc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    y, s = _labels_scores(labels, scores, need_negative=True)
    ranks = rankdata(s)  # average ranks for ties
    n_pos = int(y.sum())
    n_neg = y.shape[0] - n_pos
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def auc_pr(labels, scores) -> float:
    """Area under the precision-recall curve as average precision (AP).

    ``AP = sum_k (R_k - R_{k-1}) P_k`` over the distinct score values taken as thresholds in
    decreasing order (no interpolation) -- scikit-learn's ``average_precision_score``.

    Parameters
    ----------
    labels : array-like of bool, shape (n_times,)
    scores : array-like of float, shape (n_times,)
        Higher = more anomalous. NaN is treated as the lowest score.

    Returns
    -------
    float in [0, 1]

    Raises
    ------
    ValueError
        On a length mismatch or when ``labels`` has no positive point.

    Examples
    --------
    >>> round(auc_pr([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 4)
    0.8333
    """
    y, s = _labels_scores(labels, scores, need_negative=False)
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    y_sorted = y[order]
    # last index of each run of equal scores = one threshold
    last = np.flatnonzero(np.concatenate((s_sorted[1:] != s_sorted[:-1], [True])))
    tps = np.cumsum(y_sorted)[last]
    n_flagged = last + 1
    precision = tps / n_flagged
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.concatenate(([0.0], recall))) * precision))


# --------------------------------------------------------------------------------------------
# VUS (Paparrizos et al. 2022)
# --------------------------------------------------------------------------------------------
class VUS(NamedTuple):
    """Volume under the range-ROC and range-PR surfaces."""

    roc: float
    pr: float


def vus(labels, scores, max_buffer: int = 100, n_thresholds: int | None = 250) -> VUS:
    """Volume under the range-ROC and range-PR surfaces (VUS-ROC, VUS-PR).

    Paparrizos, Boniol, Palpanas, Tsay, Elmore, Franklin, "Volume Under the Surface: a new
    accuracy evaluation measure for time-series anomaly detection", PVLDB 15(11), 2022.
    For every buffer length ``w`` in ``0..max_buffer`` the labels are softened: each anomaly
    range is extended by ``w // 2`` points on both sides, a point at distance ``d`` from the
    range getting the label ``sqrt(1 - d / w)`` (ranges are clipped at 1 where buffers
    overlap). At each threshold, with ``TP`` the label mass of the flagged points,
    ``P`` the number of anomalous points and ``P_w`` the total soft label mass,

    - recall ``= min(1, TP / ((P + P_w) / 2))``, TPR ``= recall * existence`` where existence
      is the share of buffered ranges that hold a flagged point (ranges merged where they
      overlap; adjacent ones stay apart, as in the reference),
    - FPR ``= (n_flagged - TP) / (n - (P + P_w) / 2)``, precision ``= TP / n_flagged``.

    The range-AUC-ROC is the trapezoidal area under (FPR, TPR) from (0, 0) to (1, 1); the
    range-AUC-PR the trapezoidal area under (TPR, precision) starting at (0, 1). VUS is the
    mean of each over the ``max_buffer + 1`` buffer lengths. This follows the reference code of
    the authors (TheDatumOrg/VUS, ``RangeAUC_volume``), including its threshold grid.

    Scores that are all NaN, or equal wherever they are not NaN (no information: a constant
    after a detector's warm-up of NaN too), are the one departure from the reference: they get the no-skill values, ``roc = 0.5`` and ``pr`` the mean over buffers of
    ``(soft label mass) / n`` -- the precision of their only operating point, flagging every
    point at recall 1 (with ``max_buffer=0``, the share of anomalous points, as :func:`auc_pr`
    and scikit-learn give). The reference's curves join that one point to (0, 1) and (1, 1)
    with straight lines, which rated a constant score 0.5 or more on VUS-PR whatever the share
    of anomalies, and above 0.5 on VUS-ROC (buffered labels lower the FPR of flagging all).

    Parameters
    ----------
    labels : array-like of bool, shape (n_times,)
    scores : array-like of float, shape (n_times,)
        Higher = more anomalous. NaN is treated as the lowest score.
    max_buffer : int, default 100
        Largest buffer length (TSB-UAD passes twice the detector's sliding window; 100 is the
        default of the TSB-AD benchmark). ``0`` gives the buffer-free range-AUC.
    n_thresholds : int or None, default 250
        Thresholds are the scores at ``n_thresholds`` evenly spaced ranks of the scores sorted
        in decreasing order, as in the reference code (250 there). ``None`` uses every rank
        (exact, slower on long series).

    Returns
    -------
    VUS
        ``(roc, pr)``, each in [0, 1]; the no-skill values for all-NaN or constant scores.

    Raises
    ------
    ValueError
        On a length mismatch, labels without positive or without negative points, a negative
        ``max_buffer`` or ``n_thresholds < 1``.
    """
    y, s = _labels_scores(labels, scores, need_negative=True)
    if int(max_buffer) != max_buffer or max_buffer < 0:
        raise ValueError(f"max_buffer must be an integer >= 0, got {max_buffer!r}")
    max_buffer = int(max_buffer)
    n = y.shape[0]
    if n_thresholds is None:
        rank_idx = np.arange(n)
    else:
        if int(n_thresholds) != n_thresholds or n_thresholds < 1:
            raise ValueError(f"n_thresholds must be an integer >= 1 or None, got {n_thresholds!r}")
        rank_idx = np.linspace(0, n - 1, int(n_thresholds)).astype(int)
    thr = -np.sort(-s)[rank_idx]  # non-increasing
    n_thr = thr.shape[0]
    # k_first[i]: index of the first threshold that flags point i (n_thr: never)
    k_first = np.searchsorted(-thr, -s, side="left")
    n_flagged = np.cumsum(np.bincount(k_first, minlength=n_thr + 1)[:n_thr]).astype(np.float64)
    k_pad = np.concatenate((k_first, [n_thr]))  # sentinel for reduceat

    no_information = _ranks_nothing(s)
    seg_s, seg_e = _segments(y)
    n_pos = float(y.sum())
    rocs = np.empty(max_buffer + 1)
    prs = np.empty(max_buffer + 1)
    for w in range(max_buffer + 1):
        half = w // 2
        soft = y.astype(np.float64)
        for d in range(1, half + 1):
            c = math.sqrt(1.0 - d / w)
            before = seg_s - d
            soft[before[before >= 0]] += c
            after = seg_e + d
            soft[after[after < n]] += c
        np.minimum(soft, 1.0, out=soft)
        if no_information:
            # The only operating point: recall 1 at precision soft mass / n. No ranking, no
            # curve to interpolate (see the docstring): the no-skill values.
            rocs[w], prs[w] = 0.5, soft.sum() / n
            continue
        idx = np.flatnonzero(soft > 0)
        tp = np.cumsum(np.bincount(k_first[idx], weights=soft[idx], minlength=n_thr + 1)[:n_thr])
        # buffered ranges, merged when they touch (the reference's new_sequence)
        ext_s = seg_s - half
        ext_e = seg_e + half
        split = np.flatnonzero(ext_e[:-1] < ext_s[1:])
        r_s = np.clip(np.concatenate(([ext_s[0]], ext_s[split + 1])), 0, n - 1)
        r_e = np.clip(np.concatenate((ext_e[split], [ext_e[-1]])), 0, n - 1)
        bounds = np.empty(2 * r_s.shape[0], dtype=np.int64)
        bounds[0::2] = r_s
        bounds[1::2] = r_e + 1
        first_hit = np.minimum.reduceat(k_pad, bounds)[0::2]
        existence = np.cumsum(np.bincount(first_hit, minlength=n_thr + 1)[:n_thr]) / r_s.shape[0]
        p_new = (n_pos + soft.sum()) / 2.0
        tpr = np.minimum(tp / p_new, 1.0) * existence
        fpr = (n_flagged - tp) / (n - p_new)
        precision = tp / n_flagged
        tpr_c = np.concatenate(([0.0], tpr, [1.0]))
        fpr_c = np.concatenate(([0.0], fpr, [1.0]))
        rocs[w] = np.sum(np.diff(fpr_c) * (tpr_c[1:] + tpr_c[:-1]) / 2.0)
        prec_c = np.concatenate(([1.0], precision))
        prs[w] = np.sum(np.diff(tpr_c[:-1]) * (prec_c[1:] + prec_c[:-1]) / 2.0)
    return VUS(float(rocs.mean()), float(prs.mean()))


def vus_roc(labels, scores, max_buffer: int = 100, n_thresholds: int | None = 250) -> float:
    """Volume under the range-ROC surface (Paparrizos et al., VLDB 2022); see :func:`vus`."""
    return vus(labels, scores, max_buffer=max_buffer, n_thresholds=n_thresholds).roc


def vus_pr(labels, scores, max_buffer: int = 100, n_thresholds: int | None = 250) -> float:
    """Volume under the range-PR surface (Paparrizos et al., VLDB 2022); see :func:`vus`."""
    return vus(labels, scores, max_buffer=max_buffer, n_thresholds=n_thresholds).pr


# --------------------------------------------------------------------------------------------
# range-based precision / recall (Tatbul et al. 2018)
# --------------------------------------------------------------------------------------------
class PRF(NamedTuple):
    """Precision, recall and F1."""

    precision: float
    recall: float
    f1: float


_BIASES = ("flat", "front", "back", "middle")
_CARDINALITIES = ("one", "reciprocal")


def _positional_weights(length: int, bias: str) -> np.ndarray:
    """delta(i, length) of Tatbul et al. for i = 1..length."""
    i = np.arange(1, length + 1, dtype=np.float64)
    if bias == "flat":
        return np.ones(length)
    if bias == "front":
        return length - i + 1
    if bias == "back":
        return i
    return np.where(i <= length / 2.0, i, length - i + 1)  # middle


def _range_side(a_s, a_e, b_mask, b_s, b_e, alpha, bias, cardinality):
    """Mean over ranges A of  alpha*existence + (1-alpha)*cardinality*omega(A, A & B)."""
    total = 0.0
    for s, e in zip(a_s, a_e):
        hit = b_mask[s : e + 1]
        delta = _positional_weights(e - s + 1, bias)
        overlap = float(delta[hit].sum() / delta.sum())
        # number of B ranges that intersect [s, e]: B ranges are sorted and disjoint
        x = int(np.searchsorted(b_s, e, side="right") - np.searchsorted(b_e, s, side="left"))
        factor = 1.0 if (x <= 1 or cardinality == "one") else 1.0 / x
        total += alpha * float(x > 0) + (1.0 - alpha) * factor * overlap
    return total / len(a_s)


def range_prf(
    labels,
    predictions,
    *,
    alpha: float = 0.0,
    bias: str = "flat",
    cardinality: str = "one",
) -> PRF:
    """Range-based precision, recall and F1 (Tatbul et al., NeurIPS 2018).

    Tatbul, Lee, Zdonik, Alam, Gottschlich, "Precision and Recall for Time Series", NeurIPS
    2018. With real ranges ``R_1..R_Nr`` (runs of ``labels``) and predicted ranges
    ``P_1..P_Np`` (runs of ``predictions``)::

        recall    = mean_i [ alpha * Existence(R_i) + (1 - alpha) * CF(R_i) * omega(R_i, R_i & P) ]
        precision = mean_j [ CF(P_j) * omega(P_j, P_j & R) ]

    ``Existence(R_i)`` is 1 when some prediction overlaps ``R_i``; ``omega(A, O)`` is the
    share of the positional weights ``delta(k, |A|)`` of ``A`` that fall in ``O``; the
    cardinality factor ``CF(A)`` is 1 when ``A`` overlaps at most one range of the other side,
    else 1 (``cardinality="one"``) or ``1 / x`` for ``x`` overlapping ranges
    (``"reciprocal"``). ``F1 = 2 P R / (P + R)``. Precision uses no existence reward, as in
    the paper; the same positional bias is used for recall and precision.

    Parameters
    ----------
    labels : array-like of bool, shape (n_times,)
        Ground truth, True inside anomaly ranges.
    predictions : array-like of bool, shape (n_times,)
        Flagged points (e.g. ``scores >= threshold``).
    alpha : float in [0, 1], default 0
        Weight of the existence reward in recall.
    bias : {"flat", "front", "back", "middle"}, default "flat"
        Positional bias ``delta``: flat 1; front ``L - k + 1`` (early detection counts more);
        back ``k``; middle ``k`` up to the middle, then ``L - k + 1``.
    cardinality : {"one", "reciprocal"}, default "one"
        Cardinality factor for a range overlapped by several ranges of the other side.

    Returns
    -------
    PRF
        ``(precision, recall, f1)``. Precision is 0 when nothing is predicted; F1 is 0 when
        precision + recall is 0.

    Raises
    ------
    ValueError
        On a length mismatch, labels without any anomaly, or an unknown option.
    """
    y = _as_bool(labels, "labels")
    p = _as_bool(predictions, "predictions")
    if p.shape[0] != y.shape[0]:
        raise ValueError(f"predictions has length {p.shape[0]} but labels have length {y.shape[0]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha!r}")
    if bias not in _BIASES:
        raise ValueError(f"bias must be one of {_BIASES}, got {bias!r}")
    if cardinality not in _CARDINALITIES:
        raise ValueError(f"cardinality must be one of {_CARDINALITIES}, got {cardinality!r}")
    r_s, r_e = _segments(y)
    if r_s.shape[0] == 0:
        raise ValueError("labels have no anomaly range: range recall is undefined")
    p_s, p_e = _segments(p)
    recall = _range_side(r_s, r_e, p, p_s, p_e, alpha, bias, cardinality)
    precision = 0.0 if p_s.shape[0] == 0 else _range_side(p_s, p_e, y, r_s, r_e, 0.0, bias, cardinality)
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return PRF(float(precision), float(recall), float(f1))


def range_f1(labels, predictions, *, alpha: float = 0.0, bias: str = "flat", cardinality: str = "one") -> float:
    """Range-based F1 (Tatbul et al., NeurIPS 2018); see :func:`range_prf`."""
    return range_prf(labels, predictions, alpha=alpha, bias=bias, cardinality=cardinality).f1


def point_adjusted_prf(labels, predictions) -> PRF:
    """Point-adjusted precision, recall and F1 (Xu et al., WWW 2018).

    When any point of an anomaly range is flagged, every point of that range counts as flagged;
    precision, recall and F1 are then computed point-wise.

    **Optimistic**: one lucky alert inside a long range earns the whole range, so even random
    scores reach a high point-adjusted F1 on data with long anomalies (Kim et al., "Towards a
    Rigorous Evaluation of Time-Series Anomaly Detection", AAAI 2022). Report it only beside
    stricter metrics (range F1, VUS, AUC-PR).

    Parameters
    ----------
    labels, predictions : array-like of bool, shape (n_times,)

    Returns
    -------
    PRF
        ``(precision, recall, f1)``; precision is 0 when nothing is flagged.

    Raises
    ------
    ValueError
        On a length mismatch or labels without any anomaly.
    """
    y = _as_bool(labels, "labels")
    p = _as_bool(predictions, "predictions")
    if p.shape[0] != y.shape[0]:
        raise ValueError(f"predictions has length {p.shape[0]} but labels have length {y.shape[0]}")
    if not y.any():
        raise ValueError("labels have no anomaly: point-adjusted recall is undefined")
    adjusted = p.copy()
    for s, e in zip(*_segments(y)):
        if p[s : e + 1].any():
            adjusted[s : e + 1] = True
    tp = float(np.sum(adjusted & y))
    n_flagged = float(adjusted.sum())
    precision = tp / n_flagged if n_flagged else 0.0
    recall = tp / float(y.sum())
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return PRF(precision, recall, f1)


def point_adjusted_f1(labels, predictions) -> float:
    """Point-adjusted F1 -- optimistic, see :func:`point_adjusted_prf`."""
    return point_adjusted_prf(labels, predictions).f1


# --------------------------------------------------------------------------------------------
# NAB score (Lavin & Ahmad 2015)
# --------------------------------------------------------------------------------------------
NAB_PROFILES: dict[str, dict[str, float]] = {
    "standard": {"tp": 1.0, "fp": 0.11, "fn": 1.0},
    "reward_low_FP": {"tp": 1.0, "fp": 0.22, "fn": 1.0},
    "reward_low_FN": {"tp": 1.0, "fp": 0.11, "fn": 2.0},
}
"""NAB's application profiles (``config/profiles.json``): weights of a true positive, a false
positive and a false negative. NAB's own names ``reward_low_FP_rate`` and
``reward_low_FN_rate`` are accepted too."""


def _profile_weights(profile) -> tuple[float, float, float]:
    if isinstance(profile, dict):
        try:
            return float(profile["tp"]), float(profile["fp"]), float(profile["fn"])
        except KeyError as exc:
            raise ValueError(f"a profile dict needs the keys 'tp', 'fp', 'fn'; got {sorted(profile)}") from exc
    name = profile[: -len("_rate")] if isinstance(profile, str) and profile.endswith("_rate") else profile
    if name not in NAB_PROFILES:
        raise ValueError(f"profile must be one of {sorted(NAB_PROFILES)} or a dict, got {profile!r}")
    w = NAB_PROFILES[name]
    return w["tp"], w["fp"], w["fn"]


def _scaled_sigmoid(x: np.ndarray) -> np.ndarray:
    """NAB's scaledSigmoid: 2 * sigmoid(-5 x) - 1, and -1 for x >= 3."""
    x = np.asarray(x, dtype=np.float64)
    # Clipped inside exp: np.where evaluates both branches, and exp(5 x) overflows (with a
    # RuntimeWarning) from x ~ 142 on, far after a short window, where the result is -1 anyway.
    return np.where(x >= 3.0, -1.0, 2.0 / (1.0 + np.exp(5.0 * np.minimum(x, 3.0))) - 1.0)


_MAX_TP = float(_scaled_sigmoid(-1.0))


@dataclass(frozen=True)
class NABFile:
    """One file prepared for NAB scoring (made by :func:`nab_file`).

    Attributes
    ----------
    scores : ndarray of float, shape (n,)
        Detector scores (higher = more anomalous); NaN never detects.
    window : ndarray of int, shape (n,)
        Window number (0-based, in time order) of each point inside a window, ``-1`` outside
        every window, ``-2`` in the probationary period (not scored).
    sigmoid : ndarray of float, shape (n,)
        NAB's unweighted scaled sigmoid of a detection at each point: inside a window
        ``scaledSigmoid(-(end - i + 1) / width)`` (about 0.987 at the left edge, near 0 at the
        right edge); outside, ``scaledSigmoid((i - prev_end) / (prev_width - 1))`` after a
        window, and ``-1`` before the first window.
    n_windows : int
        Number of labelled windows (all of them count towards the perfect score).
    n_scored_windows : int
        Windows with at least one point after the probationary period (each costs the FN
        weight when missed).
    """

    scores: np.ndarray
    window: np.ndarray
    sigmoid: np.ndarray
    n_windows: int
    n_scored_windows: int


class NABResult(NamedTuple):
    """A NAB score: normalised ``score`` (null detector 0, perfect 100), the ``raw`` sum of
    weighted detections, the raw scores of the ``null`` and ``perfect`` detectors, and the
    ``threshold`` used (points with ``score >= threshold`` detect; ``inf`` when nothing is
    detected, or when only scores of ``+inf`` are: ``raw == null`` tells the first case)."""

    score: float
    raw: float
    null: float
    perfect: float
    threshold: float


def nab_file(scores, windows, *, timestamps=None, probationary_percent: float = 0.15) -> NABFile:
    """Prepare one data file for NAB scoring.

    Implements the scoring rules of the Numenta Anomaly Benchmark (Lavin & Ahmad, "Evaluating
    Real-time Anomaly Detection Algorithms -- the Numenta Anomaly Benchmark", ICMLA 2015):

    - the first ``min(floor(probationary_percent * n), probationary_percent * 5000)`` points
      (15%, at most 750) are a probationary period and are not scored;
    - a detection inside a window of width ``W`` ending at ``e``, at position ``i``, is worth
      ``tp * scaledSigmoid(-(e - i + 1) / W) / scaledSigmoid(-1)`` with
      ``scaledSigmoid(x) = 2 * sigmoid(-5 x) - 1`` -- ``tp`` at the window's left edge, less
      later; only the first (best) detection of a window counts;
    - a detection outside any window costs ``fp * scaledSigmoid((i - e) / (W - 1))`` relative
      to the preceding window (small right after it, ``-fp`` three widths later), and ``-fp``
      before the first window; ``W - 1`` is taken as at least 1 (NAB divides by zero for a
      one-point window);
    - each missed window costs ``-fn``.

    Parameters
    ----------
    scores : array-like of float or bool, shape (n,)
        Anomaly scores of the file's points in time order (higher = more anomalous; NaN never
        detects), or boolean detections.
    windows : sequence of (start, end)
        Anomaly windows, inclusive, sorted and disjoint: integer positions, or timestamps when
        ``timestamps`` is given (a window then covers the points with
        ``start <= timestamp <= end``).
    timestamps : array-like of datetime, shape (n,), optional
        Increasing timestamps of the points.
    probationary_percent : float, default 0.15

    Returns
    -------
    NABFile

    Raises
    ------
    ValueError
        On unsorted or overlapping windows, a window outside the data or covering no point,
        or a timestamps length mismatch.
    """
    s = np.asarray(scores)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {s.shape}")
    s = s.astype(np.float64)
    n = s.shape[0]
    if not 0.0 <= probationary_percent < 1.0:
        raise ValueError(f"probationary_percent must lie in [0, 1), got {probationary_percent!r}")
    starts, ends = _window_positions(windows, n, timestamps)
    window = np.full(n, -1, dtype=np.int64)
    sig = np.empty(n, dtype=np.float64)
    for k, (a, b) in enumerate(zip(starts, ends)):
        width = b - a + 1
        i = np.arange(a, b + 1)
        window[a : b + 1] = k
        sig[a : b + 1] = _scaled_sigmoid(-(b - i + 1) / width)
    outside = np.flatnonzero(window == -1)
    prev = np.searchsorted(ends, outside, side="left") - 1  # last window ending before i
    x = np.full(outside.shape[0], 3.0)
    has_prev = prev >= 0
    if has_prev.any():
        pe = ends[prev[has_prev]]
        pw = (ends - starts + 1)[prev[has_prev]]
        x[has_prev] = (outside[has_prev] - pe) / np.maximum(pw - 1, 1)
    sig[outside] = _scaled_sigmoid(x)
    probation = min(math.floor(probationary_percent * n), probationary_percent * 5000)
    in_probation = np.arange(n) < probation
    n_scored = int(np.unique(window[~in_probation & (window >= 0)]).shape[0])
    window[in_probation] = -2
    return NABFile(s, window, sig, int(starts.shape[0]), n_scored)


def _window_positions(windows, n, timestamps):
    pairs = list(windows)
    if timestamps is not None:
        import pandas as pd  # runtime dependency of the package; only needed for timestamps

        ts = pd.DatetimeIndex(timestamps)
        if ts.shape[0] != n:
            raise ValueError(f"timestamps has length {ts.shape[0]} but scores have length {n}")
        if not ts.is_monotonic_increasing:
            raise ValueError("timestamps must be increasing")
        out = []
        for a, b in pairs:
            if (pd.Timestamp(a).tz is None) != (ts.tz is None) or (pd.Timestamp(b).tz is None) != (ts.tz is None):
                raise ValueError(
                    f"window ({a}, {b}) and timestamps must both have a time zone or both have none "
                    f"(timestamps: {ts.tz or 'none'})"
                )
            i = int(ts.searchsorted(pd.Timestamp(a), side="left"))
            j = int(ts.searchsorted(pd.Timestamp(b), side="right")) - 1
            if j < i:
                raise ValueError(f"window ({a}, {b}) covers no timestamp")
            out.append((i, j))
        pairs = out
    if not pairs:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    arr = np.asarray(pairs)
    if arr.ndim != 2 or arr.shape[1] != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError("windows must be (start, end) pairs of integer positions (or pass timestamps=)")
    starts, ends = arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64)
    if (starts < 0).any() or (ends >= n).any() or (ends < starts).any():
        k = int(np.flatnonzero((starts < 0) | (ends >= n) | (ends < starts))[0])
        raise ValueError(f"window {tuple(arr[k])} is not a valid inclusive range inside [0, {n - 1}]")
    if (starts[1:] <= ends[:-1]).any():
        raise ValueError("windows must be sorted and disjoint")
    return starts, ends


def nab_corpus_score(
    files: NABFile | Sequence[NABFile], *, threshold: float | None = None, profile="standard"
) -> NABResult:
    """NAB score of a corpus: one threshold for all files, raw scores summed, then normalised.

    As NAB does, the raw score ``sum over files (weighted detections - fn * missed windows)``
    is computed with one common threshold, and normalised as
    ``100 * (raw - null) / (perfect - null)``, where ``null = -fn * (windows after the
    probationary period)`` is the score of a detector that never fires and
    ``perfect = tp * (all windows)`` (NAB's normalisation).

    Parameters
    ----------
    files : NABFile or sequence of NABFile
        Per-file results of :func:`nab_file`.
    threshold : float, optional
        Points with ``score >= threshold`` are detections. When omitted, the threshold is swept
        over every distinct score (and "no detection") and the best total is returned -- NAB's
        threshold optimisation; ties go to the highest threshold.
    profile : {"standard", "reward_low_FP", "reward_low_FN"} or dict, default "standard"
        Weights ``tp``, ``fp``, ``fn`` (see :data:`NAB_PROFILES`).

    Returns
    -------
    NABResult

    Raises
    ------
    ValueError
        When the corpus has no window (the normalisation is undefined), or on a bad profile.
    """
    if isinstance(files, NABFile):
        files = [files]
    files = list(files)
    if not files or not all(isinstance(f, NABFile) for f in files):
        raise ValueError("files must be a non-empty sequence of NABFile (see nab_file)")
    tp_w, fp_w, fn_w = _profile_weights(profile)
    null = -fn_w * sum(f.n_scored_windows for f in files)
    perfect = tp_w * sum(f.n_windows for f in files)
    if perfect == null:
        raise ValueError("the files hold no anomaly window: the NAB normalisation is undefined")

    s_parts, w_parts, c_parts = [], [], []
    offset = 0
    for f in files:
        keep = (f.window != -2) & ~np.isnan(f.scores)
        w = f.window[keep]
        sig = f.sigmoid[keep]
        s_parts.append(f.scores[keep])
        w_parts.append(np.where(w >= 0, w + offset, -1))
        c_parts.append(np.where(w >= 0, tp_w * sig / _MAX_TP, fp_w * sig))
        offset += f.n_windows
    s = np.concatenate(s_parts)
    win = np.concatenate(w_parts)
    contrib = np.concatenate(c_parts)

    def normalise(raw: float, thr: float) -> NABResult:
        return NABResult(100.0 * (raw - null) / (perfect - null), raw, null, perfect, thr)

    if threshold is not None:
        det = s >= threshold
        raw = null + float(contrib[det & (win == -1)].sum())
        best = np.full(offset, -np.inf)
        inw = det & (win >= 0)
        np.maximum.at(best, win[inw], contrib[inw])
        hit = np.isfinite(best)
        raw += float(np.sum(best[hit] + fn_w))
        return normalise(raw, float(threshold))

    if s.shape[0] == 0:
        return normalise(null, math.inf)
    order = np.argsort(-s, kind="stable")
    s_o, win_o, c_o = s[order], win[order], contrib[order]
    inc = np.where(win_o == -1, c_o, 0.0)
    in_win = np.flatnonzero(win_o >= 0)
    by_window = in_win[np.argsort(win_o[in_win], kind="stable")]  # grouped, time-of-threshold order
    bounds = np.flatnonzero(np.diff(win_o[by_window])) + 1
    for grp in np.split(by_window, bounds):
        if grp.shape[0] == 0:
            continue
        running = np.maximum.accumulate(c_o[grp])
        inc[grp] = running - np.concatenate(([-fn_w], running[:-1]))
    totals = null + np.cumsum(inc)
    last = np.flatnonzero(np.concatenate((s_o[1:] != s_o[:-1], [True])))
    cand_raw = np.concatenate(([null], totals[last]))
    cand_thr = np.concatenate(([math.inf], s_o[last]))
    k = int(np.argmax(cand_raw))
    return normalise(float(cand_raw[k]), float(cand_thr[k]))


def nab_score(
    detections, windows, *, timestamps=None, profile="standard", probationary_percent: float = 0.15
) -> float:
    """Normalised NAB score of boolean detections on one file.

    See :func:`nab_file` for the rules and :func:`nab_corpus_score` for the normalisation
    (null detector 0, perfect detector 100; the score can be negative).

    Parameters
    ----------
    detections : array-like of bool, shape (n,)
        True where the detector raises an alert.
    windows : sequence of (start, end)
        Inclusive anomaly windows (positions, or timestamps with ``timestamps=``).
    timestamps : array-like of datetime, shape (n,), optional
    profile : {"standard", "reward_low_FP", "reward_low_FN"} or dict, default "standard"
    probationary_percent : float, default 0.15

    Returns
    -------
    float

    Raises
    ------
    ValueError
        When the file has no window (use :func:`nab_corpus_score` over several files).
    """
    det = _as_bool(detections, "detections")
    f = nab_file(det.astype(np.float64), windows, timestamps=timestamps, probationary_percent=probationary_percent)
    return nab_corpus_score([f], threshold=1.0, profile=profile).score


def nab_sweep(
    scores, windows, *, timestamps=None, profile="standard", probationary_percent: float = 0.15
) -> NABResult:
    """Best NAB score of one file's scores over all thresholds, and that threshold.

    Shorthand for ``nab_corpus_score([nab_file(scores, windows, ...)], profile=profile)``;
    for a corpus (one threshold for all files, NAB's way) build one :class:`NABFile` per file
    and call :func:`nab_corpus_score`.
    """
    f = nab_file(scores, windows, timestamps=timestamps, probationary_percent=probationary_percent)
    return nab_corpus_score([f], profile=profile)


# --------------------------------------------------------------------------------------------
# UCR anomaly archive top-1 accuracy (Wu & Keogh 2021)
# --------------------------------------------------------------------------------------------
def _ranks_nothing(scores: np.ndarray) -> bool:
    """Whether ``scores`` (NaN already read as ``-inf``) rank no scored point above another.

    True when nothing is scored, or when every scored point has the same score -- also
    after a detector's warm-up of NaN, a constant that the NaN-lowest convention would
    otherwise rank above the warm-up. One scored point among NaN does stand out.
    """
    scored = scores[scores > -np.inf]
    return bool(scored.size == 0 or (scored.size > 1 and scored.max() == scored.min()))


def ucr_correct(scores, train_end: int, anomaly_start: int, anomaly_end: int, tolerance: int = 100) -> bool:
    """Whether the top-scored point after the training part hits the labelled anomaly.

    The UCR anomaly archive's rule (Wu & Keogh, TKDE 2021; KDD Cup 2021): a detector names one
    location per file -- here the argmax of ``scores[train_end:]`` (first one on ties, NaN
    the lowest score) -- and is correct when ``anomaly_start - tolerance <= location <=
    anomaly_end + tolerance``. All positions are 0-based, ``anomaly_end`` inclusive.

    Scores that are all NaN, or equal wherever they are not NaN, after ``train_end`` name no
    location and count as a **miss**: every scored point ties for the top, and taking the first
    one would credit a detector that knows nothing whenever the anomaly lies within
    ``tolerance`` of its first scored point.

    Parameters
    ----------
    scores : array-like of float, shape (n,)
        Higher = more anomalous.
    train_end : int
        Points ``0..train_end-1`` are the training part (the archive's 1-based ``trainEnd``).
    anomaly_start, anomaly_end : int
        The labelled range, 0-based inclusive.
    tolerance : int, default 100

    Returns
    -------
    bool
        False when every score after ``train_end`` is NaN or all of them are equal (no
        location named).

    Raises
    ------
    ValueError
        On positions outside the series or an empty scored part.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {s.shape}")
    n = s.shape[0]
    for label, position in (("train_end", train_end), ("anomaly_start", anomaly_start), ("anomaly_end", anomaly_end),
                            ("tolerance", tolerance)):
        if not is_int(position):  # a float index would fail later in slicing, with pandas' TypeError
            raise ValueError(f"{label} must be an integer (a position in the series), got {position!r}")
    if not 0 <= train_end < n:
        raise ValueError(f"train_end must lie in [0, {n - 1}] for {n} scores, got {train_end}")
    if not 0 <= anomaly_start <= anomaly_end < n:
        raise ValueError(f"anomaly range ({anomaly_start}, {anomaly_end}) is not inside [0, {n - 1}]")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    tail = np.where(np.isnan(s[train_end:]), -np.inf, s[train_end:])  # NaN: the lowest score
    if _ranks_nothing(tail):  # the argmax of tied scores would be the first scored point
        return False
    loc = train_end + int(np.argmax(tail))
    return bool(anomaly_start - tolerance <= loc <= anomaly_end + tolerance)


def ucr_accuracy(scores, train_ends, anomaly_starts, anomaly_ends, tolerance: int = 100) -> float:
    """UCR top-1 accuracy: the share of files where :func:`ucr_correct` holds.

    Parameters
    ----------
    scores : sequence of array-like, one 1-D score array per file
    train_ends, anomaly_starts, anomaly_ends : sequence of int, one per file (0-based)
    tolerance : int, default 100

    Returns
    -------
    float in [0, 1]

    Raises
    ------
    ValueError
        When the sequences differ in length or are empty.
    """
    scores = list(scores)
    train_ends, anomaly_starts, anomaly_ends = list(train_ends), list(anomaly_starts), list(anomaly_ends)
    n = len(scores)
    if n == 0:
        raise ValueError("ucr_accuracy needs at least one file")
    if not len(train_ends) == len(anomaly_starts) == len(anomaly_ends) == n:
        raise ValueError(
            f"got {n} score arrays but {len(train_ends)} train_ends, {len(anomaly_starts)} "
            f"anomaly_starts and {len(anomaly_ends)} anomaly_ends"
        )
    hits = [
        ucr_correct(s, t, a, b, tolerance=tolerance)
        for s, t, a, b in zip(scores, train_ends, anomaly_starts, anomaly_ends)
    ]
    return float(np.mean(hits))
