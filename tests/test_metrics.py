"""Metrics against hand-worked cases, a slow reference of VUS and NAB, and scikit-learn's AUCs."""
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from tsanomaly.metrics import (
    NABFile,
    auc_pr,
    auc_roc,
    nab_corpus_score,
    nab_file,
    nab_score,
    nab_sweep,
    point_adjusted_f1,
    point_adjusted_prf,
    range_f1,
    range_prf,
    ucr_accuracy,
    ucr_correct,
    vus,
    vus_pr,
    vus_roc,
)


# ------------------------------------------------------------------------------------------
# AUC-ROC / AUC-PR
# ------------------------------------------------------------------------------------------
def test_auc_roc_hand_worked():
    # positives score .35 and .8, negatives .1 and .4: of the 4 (pos, neg) pairs the positive
    # wins (.35,.1), (.8,.1), (.8,.4) and loses (.35,.4) -> 3/4
    assert auc_roc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)


def test_auc_roc_ties_count_one_half():
    # positives .5 and .9, negatives .5 and .2: (.5,.5) tie = 1/2, (.5,.2) = 1, (.9, both) = 2
    # -> 3.5 / 4
    assert auc_roc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == pytest.approx(0.875)


def test_auc_roc_nan_is_the_lowest_score():
    # NaN -> below everything. positives .2 and NaN, negatives NaN and .1:
    # (.2,NaN)=1, (.2,.1)=1, (NaN,NaN)=1/2, (NaN,.1)=0 -> 2.5 / 4
    assert auc_roc([0, 1, 1, 0], [np.nan, 0.2, np.nan, 0.1]) == pytest.approx(0.625)


def test_auc_pr_hand_worked():
    # sorted by score: .8 (pos), .4 (neg), .35 (pos), .1 (neg)
    # thresholds: .8 -> P=1, R=1/2; .4 -> P=1/2, R=1/2; .35 -> P=2/3, R=1; .1 -> P=1/2, R=1
    # AP = (1/2)(1) + 0 + (1/2)(2/3) + 0 = 5/6
    assert auc_pr([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(5 / 6)


def test_auc_pr_tied_scores_form_one_threshold():
    # .5 flags two points (one positive): P=1/2, R=1/2; .1 flags all: P=2/3, R=1
    # AP = (1/2)(1/2) + (1/2)(2/3) = 7/12
    assert auc_pr([1, 0, 1], [0.5, 0.5, 0.1]) == pytest.approx(7 / 12)


@pytest.mark.parametrize("seed", range(5))
def test_aucs_match_scikit_learn_on_random_data(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 2000))
    labels = rng.random(n) < rng.uniform(0.02, 0.5)
    labels[0], labels[1] = True, False
    scores = rng.normal(size=n) + labels * rng.uniform(0, 2)
    scores = np.round(scores, 1)  # plenty of ties
    assert auc_roc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert auc_pr(labels, scores) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)


def test_aucs_with_nan_match_scikit_learn_on_nan_replaced_by_a_minimum():
    rng = np.random.default_rng(7)
    labels = rng.random(500) < 0.1
    labels[:2] = (True, False)
    scores = rng.normal(size=500) + labels
    scores[rng.random(500) < 0.2] = np.nan
    filled = np.where(np.isnan(scores), np.nanmin(scores) - 1.0, scores)
    assert auc_roc(labels, scores) == pytest.approx(roc_auc_score(labels, filled), abs=1e-12)
    assert auc_pr(labels, scores) == pytest.approx(average_precision_score(labels, filled), abs=1e-12)


@pytest.mark.parametrize(
    "labels, scores, match",
    [
        ([0, 1, 1], [0.1, 0.2], "length"),
        ([0, 0, 0], [0.1, 0.2, 0.3], "no positive"),
        ([1, 1, 1], [0.1, 0.2, 0.3], "no negative"),
        ([0, 2, 1], [0.1, 0.2, 0.3], "0/1"),
    ],
)
def test_auc_roc_rejects_bad_input(labels, scores, match):
    with pytest.raises(ValueError, match=match):
        auc_roc(labels, scores)


def test_auc_pr_needs_a_positive():
    with pytest.raises(ValueError, match="no positive"):
        auc_pr([0, 0], [0.1, 0.2])


# ------------------------------------------------------------------------------------------
# VUS
# ------------------------------------------------------------------------------------------
VUS_LABELS = np.array([0, 0, 1, 1, 0, 0])
VUS_SCORES = np.array([0.1, 0.2, 0.9, 0.3, 0.8, 0.0])


def test_vus_without_buffer_hand_worked():
    # thresholds in score order flag points 2, 4, 3, 1, 0, 5. P = 2, one range [2, 3],
    # existence is 1 from the first threshold on; N = 4.
    #   k : TPR  FPR   precision
    #   1 : 1/2  0     1
    #   2 : 1/2  1/4   1/2
    #   3 : 1    1/4   2/3
    #   4 : 1    1/2   1/2
    #   5 : 1    3/4   2/5
    #   6 : 1    1     1/3
    # ROC from (0,0) to (1,1): (1/4)(1/2) + (3/4)(1) = 7/8 (= the point AUC here)
    # PR from (0,1): (1/2)(1+1)/2 + 0 + (1/2)(1/2+2/3)/2 = 1/2 + 7/24 = 19/24
    result = vus(VUS_LABELS, VUS_SCORES, max_buffer=0, n_thresholds=None)
    assert result.roc == pytest.approx(7 / 8)
    assert result.pr == pytest.approx(19 / 24)


def test_vus_with_buffer_hand_worked():
    # Buffers 0, 1, 2 are averaged. Buffer 1 extends ranges by 1 // 2 = 0 points: same as 0.
    # Buffer 2 extends [2, 3] by one point each side with the soft label c = sqrt(1 - 1/2):
    # soft = [0, c, 1, 1, c, 0]; P_new = (2 + 2 + 2c)/2 = 2 + c; N_new = 6 - P_new = 4 - c.
    c = math.sqrt(0.5)
    p_new, n_new = 2 + c, 4 - c
    #   k flags  TP      TPR                FPR               precision
    #   1 {2}    1       1/(2+c)            0                 1
    #   2 +4     1+c     (1+c)/(2+c)        (1-c)/(4-c)       (1+c)/2
    #   3 +3     2+c     1                  (1-c)/(4-c)       (2+c)/3
    #   4..6     2+2c    1 (recall capped)  rising to (4-2c)/(4-c), then the end point (1, 1)
    t1, t2 = 1 / p_new, (1 + c) / p_new
    f2 = (1 - c) / n_new
    p2, p3 = (1 + c) / 2, (2 + c) / 3
    roc2 = f2 * (t1 + t2) / 2 + (1 - f2) * 1.0  # the rest of the curve sits at TPR = 1
    pr2 = t1 * (1 + 1) / 2 + (t2 - t1) * (1 + p2) / 2 + (1 - t2) * (p2 + p3) / 2
    result = vus(VUS_LABELS, VUS_SCORES, max_buffer=2, n_thresholds=None)
    assert result.roc == pytest.approx((2 * 7 / 8 + roc2) / 3)
    assert result.pr == pytest.approx((2 * 19 / 24 + pr2) / 3)
    assert vus_roc(VUS_LABELS, VUS_SCORES, max_buffer=2, n_thresholds=None) == result.roc
    assert vus_pr(VUS_LABELS, VUS_SCORES, max_buffer=2, n_thresholds=None) == result.pr


def test_vus_perfect_scores_give_one():
    labels = np.zeros(300, dtype=bool)
    labels[100:120] = labels[200:203] = True
    result = vus(labels, labels.astype(float), max_buffer=0)
    assert result.roc == pytest.approx(1.0)
    assert result.pr == pytest.approx(1.0)


@pytest.mark.parametrize("value", [np.nan, -np.inf, 0.0, 4.2], ids=["all-nan", "-inf", "zero", "constant"])
def test_scores_without_information_get_the_no_skill_value_of_every_metric(value):
    # VUS followed the reference's curves, joined from (0, 1) for PR and to (1, 1) for ROC:
    # scores that rank nothing got VUS-PR 0.71 here (0.52 on the longer file below, where 1.5% of
    # the points are anomalous) and VUS-ROC 0.54, above chance.
    scores = np.full(VUS_LABELS.size, value)
    c = math.sqrt(0.5)
    # Buffers 0 and 1 keep the labels (mass 2 of 6 points); buffer 2 adds c on each side.
    result = vus(VUS_LABELS, scores, max_buffer=2, n_thresholds=None)
    assert result.roc == 0.5
    assert result.pr == pytest.approx((2 / 6 + 2 / 6 + (2 + 2 * c) / 6) / 3)
    assert vus(VUS_LABELS, scores, max_buffer=0) == (0.5, pytest.approx(2 / 6))
    # The point-wise AUCs agree, and with scikit-learn (which takes no NaN: any constant).
    assert auc_roc(VUS_LABELS, scores) == roc_auc_score(VUS_LABELS, np.zeros(6)) == 0.5
    assert auc_pr(VUS_LABELS, scores) == pytest.approx(average_precision_score(VUS_LABELS, np.zeros(6)))
    assert auc_pr(VUS_LABELS, scores) == pytest.approx(2 / 6)
    # On a realistic file, no better than random scores (VUS's buffers favour those a little).
    labels = np.zeros(2000, dtype=bool)
    labels[700:730] = True
    flat = vus(labels, np.full(labels.size, value))
    rng = np.random.default_rng(0)
    random = np.mean([vus(labels, rng.random(labels.size)) for _ in range(10)], axis=0)
    assert flat.roc == 0.5 < random[0] and flat.pr < random[1] < 0.1


def test_a_constant_after_a_warm_up_of_nan_gets_the_no_skill_values_too():
    """A detector's warm-up (NaN, the lowest score) before a constant ranked the constant above
    the warm-up: VUS-PR 0.53 and VUS-ROC 0.52 here, against 0.063 and 0.5 without the warm-up;
    and UCR's argmax of the tied scores was the first scored point, a hit when the anomaly lay
    within the tolerance of it."""
    labels = np.zeros(1000, dtype=bool)
    labels[520:541] = True
    warm_up = np.full(1000, 3.0)
    warm_up[:10] = np.nan
    assert vus(labels, warm_up) == vus(labels, np.full(1000, 3.0))
    assert vus(labels, warm_up).roc == 0.5
    tail = np.full(1000, 3.0)
    tail[500:510] = np.nan  # the scored part starts with a warm-up
    assert not ucr_correct(tail, 500, 520, 540)
    tail[530] = 4.0  # one point above the constant names it
    assert ucr_correct(tail, 500, 520, 540)
    only = np.full(1000, np.nan)
    only[530] = 1.0  # one scored point among NaN stands out too
    assert ucr_correct(only, 500, 520, 540)
    assert vus(labels, only).roc > 0.5


def _reference_range_auc(labels, score, window, n_thr):
    """Direct transcription of the definitions, one threshold and one point at a time."""
    n = len(labels)
    half = window // 2
    segs = []
    i = 0
    while i < n:
        if labels[i]:
            j = i
            while j + 1 < n and labels[j + 1]:
                j += 1
            segs.append((i, j))
            i = j + 1
        else:
            i += 1
    soft = labels.astype(float)
    for s, e in segs:
        for d in range(1, half + 1):
            if s - d >= 0:
                soft[s - d] += math.sqrt(1 - d / window)
            if e + d < n:
                soft[e + d] += math.sqrt(1 - d / window)
    soft = np.minimum(soft, 1)
    ranges = []
    for s, e in segs:
        a, b = max(s - half, 0), min(e + half, n - 1)
        if ranges and ranges[-1][1] >= s - half:
            ranges[-1] = (ranges[-1][0], b)
        else:
            ranges.append((a, b))
    p = labels.sum()
    p_new = (p + soft.sum()) / 2
    order = -np.sort(-score)
    tpr, fpr, prec = [0.0], [0.0], [1.0]
    for idx in np.linspace(0, n - 1, n_thr).astype(int):
        pred = score >= order[idx]
        tp = sum(soft[i] for i in range(n) if pred[i])
        exist = sum(any(pred[i] and soft[i] > 0 for i in range(a, b + 1)) for a, b in ranges)
        tpr.append(min(tp / p_new, 1) * exist / len(ranges))
        fpr.append((pred.sum() - tp) / (n - p_new))
        prec.append(tp / pred.sum())
    roc = sum((fpr[k + 1] - fpr[k]) * (tpr[k + 1] + tpr[k]) / 2 for k in range(len(fpr) - 1))
    roc += (1 - fpr[-1]) * (1 + tpr[-1]) / 2
    pr = sum((tpr[k + 1] - tpr[k]) * (prec[k + 1] + prec[k]) / 2 for k in range(len(tpr) - 1))
    return roc, pr


@pytest.mark.parametrize("seed", range(4))
def test_vus_matches_a_slow_reference_on_random_data(seed):
    rng = np.random.default_rng(seed)
    n = 160
    labels = np.zeros(n, dtype=bool)
    if seed == 0:
        # ranges whose buffers become adjacent (half-width 3: [17, 25] and [26, 34]), then
        # overlap (half-width 4), plus one at the series' end
        labels[20:23] = labels[29:32] = labels[155:] = True
    else:
        for start in rng.choice(n - 10, size=4, replace=False):
            labels[start : start + rng.integers(1, 8)] = True
    scores = rng.random(n) + 0.5 * labels
    scores[rng.random(n) < 0.05] = np.nan
    filled = np.where(np.isnan(scores), -np.inf, scores)
    max_buffer, n_thr = 9, 40
    refs = [_reference_range_auc(labels, filled, w, n_thr) for w in range(max_buffer + 1)]
    result = vus(labels, scores, max_buffer=max_buffer, n_thresholds=n_thr)
    assert result.roc == pytest.approx(np.mean([r[0] for r in refs]), abs=1e-12)
    assert result.pr == pytest.approx(np.mean([r[1] for r in refs]), abs=1e-12)


def test_vus_rejects_bad_parameters():
    with pytest.raises(ValueError, match="max_buffer"):
        vus(VUS_LABELS, VUS_SCORES, max_buffer=-1)
    with pytest.raises(ValueError, match="n_thresholds"):
        vus(VUS_LABELS, VUS_SCORES, n_thresholds=0)
    with pytest.raises(ValueError, match="no positive"):
        vus(np.zeros(6), VUS_SCORES)


# ------------------------------------------------------------------------------------------
# range-based and point-adjusted precision / recall
# ------------------------------------------------------------------------------------------
#          positions 0 1 2 3 4 5 6 7 8 9 10 11
RANGE_LABELS = [0, 1, 1, 1, 1, 0, 0, 0, 1, 1, 0, 0]  # R1 = [1, 4], R2 = [8, 9]
RANGE_PREDS = [0, 0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0]  # P1 = [2, 3], P2 = [6, 6]


def test_range_prf_flat_hand_worked():
    # recall: R1 covered 2 of 4 points -> 1/2, R2 missed -> 0; mean 1/4
    # precision: P1 inside R1 -> 1, P2 outside -> 0; mean 1/2;  F1 = 2(1/2)(1/4)/(3/4) = 1/3
    result = range_prf(RANGE_LABELS, RANGE_PREDS)
    assert result.precision == pytest.approx(0.5)
    assert result.recall == pytest.approx(0.25)
    assert result.f1 == pytest.approx(1 / 3)
    assert range_f1(RANGE_LABELS, RANGE_PREDS) == pytest.approx(1 / 3)


def test_range_prf_existence_reward():
    # alpha = 1/2: R1 -> 1/2 * 1 + 1/2 * 1/2 = 3/4, R2 -> 0; recall 3/8; precision unchanged 1/2
    # F1 = 2 (1/2)(3/8) / (7/8) = 3/7
    result = range_prf(RANGE_LABELS, RANGE_PREDS, alpha=0.5)
    assert result.recall == pytest.approx(3 / 8)
    assert result.precision == pytest.approx(0.5)
    assert result.f1 == pytest.approx(3 / 7)


@pytest.mark.parametrize(
    "bias, expected",
    [
        # one range [0, 3] (length 4); only its first point is predicted.
        ("flat", 1 / 4),  # weights 1 1 1 1
        ("front", 4 / 10),  # weights 4 3 2 1
        ("back", 1 / 10),  # weights 1 2 3 4
        ("middle", 1 / 6),  # weights 1 2 2 1
    ],
)
def test_range_recall_positional_bias(bias, expected):
    result = range_prf([1, 1, 1, 1, 0, 0], [1, 0, 0, 0, 0, 0], bias=bias)
    assert result.recall == pytest.approx(expected)
    assert result.precision == pytest.approx(1.0)  # the one predicted point is anomalous


def test_range_recall_cardinality():
    # range [0, 5] is hit by two predicted ranges [0, 1] and [3, 4]: 4 of 6 points covered.
    labels = [1, 1, 1, 1, 1, 1, 0]
    preds = [1, 1, 0, 1, 1, 0, 0]
    assert range_prf(labels, preds, cardinality="one").recall == pytest.approx(4 / 6)
    assert range_prf(labels, preds, cardinality="reciprocal").recall == pytest.approx(4 / 6 / 2)
    # each predicted range overlaps one real range and lies inside it
    assert range_prf(labels, preds, cardinality="reciprocal").precision == pytest.approx(1.0)


def test_range_prf_nothing_predicted_is_zero():
    assert tuple(range_prf([0, 1, 1], [0, 0, 0])) == (0.0, 0.0, 0.0)


def test_range_prf_rejects_bad_input():
    with pytest.raises(ValueError, match="no anomaly"):
        range_prf([0, 0, 0], [0, 1, 0])
    with pytest.raises(ValueError, match="length"):
        range_prf([0, 1, 0], [0, 1])
    with pytest.raises(ValueError, match="bias"):
        range_prf([0, 1, 0], [0, 1, 0], bias="sideways")
    with pytest.raises(ValueError, match="alpha"):
        range_prf([0, 1, 0], [0, 1, 0], alpha=2)


def test_point_adjusted_hand_worked():
    # labels    0 1 1 1 0 0 1 1 0   ranges [1, 3] and [6, 7]
    # preds     0 0 1 0 0 1 0 0 0   one hit in [1, 3] -> all of it counts; [6, 7] missed
    # adjusted  0 1 1 1 0 1 0 0 0   TP = 3, flagged = 4, positives = 5
    # precision 3/4, recall 3/5, F1 = 2(3/4)(3/5)/(27/20) = 2/3
    labels = [0, 1, 1, 1, 0, 0, 1, 1, 0]
    preds = [0, 0, 1, 0, 0, 1, 0, 0, 0]
    result = point_adjusted_prf(labels, preds)
    assert result.precision == pytest.approx(0.75)
    assert result.recall == pytest.approx(0.6)
    assert result.f1 == pytest.approx(2 / 3)
    assert point_adjusted_f1(labels, preds) == pytest.approx(2 / 3)


def test_point_adjusted_is_at_least_range_and_point_f1():
    # the documented optimism: one alert per long range earns the whole range
    labels = np.zeros(200, dtype=bool)
    labels[50:100] = labels[150:190] = True
    preds = np.zeros(200, dtype=bool)
    preds[[60, 170, 10]] = True
    # Point-adjusted: both ranges are hit, so all 50 + 40 = 90 labelled points count as flagged,
    # plus the false alarm at 10: precision 90/91, recall 90/90, F1 = 2*90 / (91 + 90) = 180/181.
    pa = point_adjusted_prf(labels, preds)
    assert pa.precision == pytest.approx(90 / 91, abs=1e-12)
    assert pa.recall == pytest.approx(1.0, abs=1e-12)
    assert pa.f1 == pytest.approx(180 / 181, abs=1e-12)
    assert point_adjusted_f1(labels, preds) == pytest.approx(180 / 181, abs=1e-12)
    # Range-based (alpha 0, flat bias, cardinality one): recall is the mean covered share of
    # each real range, (1/50 + 1/40) / 2 = 9/400; precision the mean share of each predicted
    # range (three single points) inside a real one, (0 + 1 + 1) / 3 = 2/3;
    # F1 = 2 * (2/3) * (9/400) / (2/3 + 9/400) = (3/100) / (827/1200) = 36/827.
    rng_prf = range_prf(labels, preds)
    assert rng_prf.recall == pytest.approx(9 / 400, abs=1e-12)
    assert rng_prf.precision == pytest.approx(2 / 3, abs=1e-12)
    assert range_f1(labels, preds) == pytest.approx(36 / 827, abs=1e-12)
    # Point-wise: 2 of 3 flags are right and 2 of 90 labelled points are found: F1 = 4/93.
    point = f1_score(labels, preds)
    assert point == pytest.approx(4 / 93, abs=1e-12)
    assert point_adjusted_f1(labels, preds) >= point
    assert point_adjusted_f1(labels, preds) >= range_f1(labels, preds)


# ------------------------------------------------------------------------------------------
# NAB
# ------------------------------------------------------------------------------------------
def _ss(x):
    """NAB's scaled sigmoid."""
    return -1.0 if x >= 3 else 2 / (1 + math.exp(5 * x)) - 1


def _detections(n, positions):
    d = np.zeros(n, dtype=bool)
    d[list(positions)] = True
    return d


def test_nab_score_hand_worked():
    # n = 40: probationary period floor(0.15 * 40) = 6 points (0..5). One window [10, 13], width 4.
    # detections:
    #   2  -> probationary: ignored
    #   7  -> before any window: -fp = -0.11
    #   11 -> in the window at relative position -(13 - 11 + 1)/4 = -0.75:
    #         tp * ss(-0.75) / ss(-1) = 0.954045 / 0.986614 = 0.966989
    #   12 -> second detection in the window: does not count
    #   16 -> after the window: x = (16 - 13)/(4 - 1) = 1: fp * ss(1) = 0.11 * -0.986614 = -0.108528
    #   30 -> x = 17/3 >= 3: -fp = -0.11
    # raw = 0.966989 - 0.11 - 0.108528 - 0.11 = 0.638461
    # null = -fn * 1 window = -1, perfect = tp * 1 = 1  -> score = 100 (raw + 1) / 2 = 81.92
    det = _detections(40, [2, 7, 11, 12, 16, 30])
    raw = _ss(-0.75) / _ss(-1) - 0.11 + 0.11 * _ss(1.0) - 0.11
    assert raw == pytest.approx(0.638461, abs=1e-6)
    assert nab_score(det, [(10, 13)]) == pytest.approx(100 * (raw + 1) / 2)
    assert nab_score(det, [(10, 13)]) == pytest.approx(81.923, abs=1e-3)


def test_nab_score_profiles():
    det = _detections(40, [7, 11, 16, 30])
    raw = _ss(-0.75) / _ss(-1) - 0.11 + 0.11 * _ss(1.0) - 0.11  # as above
    # reward_low_FP: fp weight 0.22 -> the three false positives cost twice as much
    raw_low_fp = _ss(-0.75) / _ss(-1) - 0.22 + 0.22 * _ss(1.0) - 0.22
    # reward_low_FN: fn weight 2 -> null = -2, perfect = 1
    assert nab_score(det, [(10, 13)], profile="standard") == pytest.approx(100 * (raw + 1) / 2)
    assert nab_score(det, [(10, 13)], profile="reward_low_FP") == pytest.approx(100 * (raw_low_fp + 1) / 2)
    assert nab_score(det, [(10, 13)], profile="reward_low_FN") == pytest.approx(100 * (raw + 2) / 3)
    assert nab_score(det, [(10, 13)], profile="reward_low_FN_rate") == pytest.approx(100 * (raw + 2) / 3)
    with pytest.raises(ValueError, match="profile"):
        nab_score(det, [(10, 13)], profile="lenient")


def test_nab_edge_detections_and_misses():
    windows = [(10, 13)]
    # left edge earns exactly tp: perfect
    assert nab_score(_detections(40, [10]), windows) == pytest.approx(100.0)
    # right edge: position -1/4 -> ss(-0.25)/ss(-1) = 0.554600/0.986614 = 0.562125
    assert nab_score(_detections(40, [13]), windows) == pytest.approx(100 * (0.562125 + 1) / 2, abs=1e-4)
    # just after: x = 1/3 -> 0.11 * ss(1/3) = -0.075049, and the window is missed (-1)
    assert nab_score(_detections(40, [14]), windows) == pytest.approx(100 * (-0.075049 - 1 + 1) / 2, abs=1e-4)
    # the null detector scores 0
    assert nab_score(np.zeros(40, dtype=bool), windows) == pytest.approx(0.0)


def test_nab_window_in_probationary_period_counts_only_in_perfect():
    # windows [1, 3] (inside the 6-point probationary period) and [10, 13]. NAB's normalisation:
    # null = -fn * (scored windows = 1) = -1, perfect = tp * (all windows = 2) = 2.
    # detecting 10 gives raw = 1 -> 100 (1 + 1) / (2 + 1) = 66.67
    f = nab_file(_detections(40, [10]).astype(float), [(1, 3), (10, 13)])
    assert (f.n_windows, f.n_scored_windows) == (2, 1)
    result = nab_corpus_score(f, threshold=1.0)
    assert (result.null, result.perfect, result.raw) == pytest.approx((-1.0, 2.0, 1.0))
    assert result.score == pytest.approx(200 / 3)


def test_nab_probationary_period_is_capped_at_750():
    f = nab_file(np.zeros(10_000), [(9000, 9100)])
    assert (f.window == -2).sum() == 750
    f = nab_file(np.zeros(1000), [(900, 910)])
    assert (f.window == -2).sum() == 150


def test_nab_timestamps_windows_match_positions():
    ts = pd.date_range("2024-01-01", periods=40, freq="5min")
    det = _detections(40, [7, 11, 16, 30])
    by_time = nab_score(det, [(ts[10], ts[13])], timestamps=ts)
    assert by_time == pytest.approx(nab_score(det, [(10, 13)]))


def test_nab_sweep_hand_worked():
    # scores: 0 everywhere except 7 -> 0.5, 11 -> 0.9, 30 -> 0.95 (window [10, 13], n = 40)
    #   threshold inf : nothing            raw = -1
    #   0.95          : 30 (FP, -0.11)     raw = -1.11
    #   0.9           : + 11 (0.966989)    raw = 0.966989 - 0.11 = 0.856989   <- best
    #   0.5           : + 7 (-0.11)        raw = 0.746989
    #   0             : everything: the window's left edge (1) and 31 more FPs -> far lower
    scores = np.zeros(40)
    scores[[7, 11, 30]] = [0.5, 0.9, 0.95]
    result = nab_sweep(scores, [(10, 13)])
    raw = _ss(-0.75) / _ss(-1) - 0.11
    assert result.threshold == 0.9
    assert result.raw == pytest.approx(raw)
    assert result.score == pytest.approx(100 * (raw + 1) / 2)


def test_nab_corpus_sums_files_before_normalising():
    # file A: window [10, 13] detected at its left edge: raw 1 (its null -1, perfect 1)
    # file B: no window; one detection at 20 (before any window): -0.11
    # corpus: raw 0.89, null -1, perfect 1 -> 100 (0.89 + 1) / 2 = 94.5
    a = nab_file(_detections(40, [10]).astype(float), [(10, 13)])
    b = nab_file(_detections(40, [20]).astype(float), [])
    assert nab_corpus_score([a, b], threshold=1.0).score == pytest.approx(94.5)
    with pytest.raises(ValueError, match="no anomaly window"):
        nab_corpus_score([b], threshold=1.0)


def _naive_nab(files_scores, files_windows, profile=(1.0, 0.11, 1.0)):
    """One point at a time, one threshold at a time, from NAB's written rules."""
    tp_w, fp_w, fn_w = profile
    thresholds = sorted({v for s in files_scores for v in s if not np.isnan(v)}, reverse=True)
    best = None
    for thr in [math.inf] + thresholds:
        raw = 0.0
        for s, windows in zip(files_scores, files_windows):
            n = len(s)
            prob = min(math.floor(0.15 * n), 750)
            for a, b in windows:
                if b >= prob:
                    hits = [i for i in range(max(a, prob), b + 1) if s[i] >= thr]
                    raw += tp_w * _ss(-(b - hits[0] + 1) / (b - a + 1)) / _ss(-1) if hits else -fn_w
            for i in range(prob, n):
                if not s[i] >= thr or any(a <= i <= b for a, b in windows):
                    continue
                before = [(a, b) for a, b in windows if b < i]
                if not before:
                    raw -= fp_w
                else:
                    a, b = before[-1]
                    raw += fp_w * _ss((i - b) / max(b - a, 1))
        if best is None or raw > best[0] + 1e-12:
            best = (raw, thr)
    return best


@pytest.mark.parametrize("seed", range(3))
def test_nab_sweep_matches_a_slow_reference(seed):
    rng = np.random.default_rng(seed)
    files_scores, files_windows, prepared = [], [], []
    for _ in range(3):
        n = int(rng.integers(60, 120))
        s = np.round(rng.random(n), 2)
        s[rng.random(n) < 0.05] = np.nan
        starts = np.sort(rng.choice(np.arange(5, n - 10, 12), size=2, replace=False))
        windows = [(int(a), int(a + rng.integers(0, 8))) for a in starts]
        for a, b in windows:
            s[a : b + 1] += rng.uniform(0, 0.5)
        files_scores.append(s)
        files_windows.append(windows)
        prepared.append(nab_file(s, windows))
    raw, thr = _naive_nab(files_scores, files_windows)
    result = nab_corpus_score(prepared)
    assert result.raw == pytest.approx(raw, abs=1e-9)
    assert result.threshold == thr


def test_nab_file_rejects_bad_windows():
    with pytest.raises(ValueError, match="sorted and disjoint"):
        nab_file(np.zeros(40), [(10, 13), (12, 20)])
    with pytest.raises(ValueError, match="inside"):
        nab_file(np.zeros(40), [(30, 45)])
    assert isinstance(nab_file(np.zeros(40), []), NABFile)


# ------------------------------------------------------------------------------------------
# UCR
# ------------------------------------------------------------------------------------------
def test_ucr_correct_tolerance_boundaries():
    # anomaly [500, 510], tolerance 100: locations 400..610 are correct
    for loc, expected in [(400, True), (399, False), (505, True), (610, True), (611, False)]:
        scores = np.zeros(1000)
        scores[loc] = 1.0
        assert ucr_correct(scores, 300, 500, 510) is expected, loc


def test_ucr_correct_refuses_positions_that_are_not_integers():
    """A float position failed in slicing with a TypeError; NumPy integers are positions too."""
    with pytest.raises(ValueError, match=r"train_end must be an integer \(a position in the series\), got 10.5"):
        ucr_correct(np.arange(100.0), 10.5, 50, 52)
    assert ucr_correct(np.arange(100.0), np.int64(10), 50, 99)


def test_ucr_correct_ignores_the_training_part_and_nan():
    scores = np.zeros(1000)
    scores[50] = 10.0  # in the training part: ignored
    scores[505] = 1.0
    scores[700:] = np.nan
    assert ucr_correct(scores, 300, 500, 510)
    scores[300:] = np.nan  # nothing named after train_end
    assert not ucr_correct(scores, 300, 500, 510)


@pytest.mark.parametrize("tail", [np.nan, 0.0, 7.5, -np.inf, np.inf], ids=["nan", "zero", "constant", "-inf", "inf"])
def test_ucr_correct_counts_scores_that_name_no_location_as_a_miss(tail):
    # The anomaly starts right after the training part: the first scored point lies within the
    # tolerance. All-NaN scores (read as -inf by the report) and constant scores used to put
    # the top-1 there and count as correct.
    scores = np.arange(1000.0)  # the training part may hold anything
    scores[300:] = tail
    assert not ucr_correct(scores, 300, 320, 330)
    assert not ucr_correct(np.where(np.isnan(scores), -np.inf, scores), 300, 320, 330)
    # One point above the others names it, even when they are all NaN (the lowest score).
    scores[325] = np.inf if tail == -np.inf or np.isnan(tail) else tail + 1
    if tail != np.inf:
        assert ucr_correct(scores, 300, 320, 330)


def test_ucr_correct_takes_the_first_of_tied_maxima():
    scores = np.zeros(1000)
    scores[[505, 900]] = 1.0  # first maximum at 505 -> correct
    assert ucr_correct(scores, 300, 500, 510)
    scores[[350]] = 1.0  # now 350 comes first -> outside [400, 610]
    assert not ucr_correct(scores, 300, 500, 510)


def test_ucr_accuracy_over_files():
    hit = np.zeros(1000)
    hit[505] = 1
    miss = np.zeros(1000)
    miss[900] = 1
    acc = ucr_accuracy([hit, miss, hit], [300] * 3, [500] * 3, [510] * 3)
    assert acc == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="train_ends"):
        ucr_accuracy([hit, miss], [300], [500, 500], [510, 510])
    with pytest.raises(ValueError, match="anomaly range"):
        ucr_correct(hit, 300, 510, 500)


def test_nab_sigmoid_far_after_a_short_window_raises_no_overflow_warning():
    # np.where evaluated exp(5 x) for x far past 3 too: "overflow encountered in exp" on valid input.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f = nab_file(np.zeros(3000), [(400, 401)])
    assert f.sigmoid[-1] == -1.0 and -1.0 < f.sigmoid[402] < -0.98  # one step after the window
