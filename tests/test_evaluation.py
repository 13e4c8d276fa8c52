"""Period estimation, the ensemble detector, and a short accuracy run on the real labelled data."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from tsanomaly import Panel, RollingZScoreDetector, STLDetector
from tsanomaly.base import BaseDetector
from tsanomaly.cli import main
from tsanomaly.detectors.ensemble import EnsembleDetector
from tsanomaly.evaluation import evaluate, format_markdown, score_series
from tsanomaly.periods import estimate_period
from tsanomaly.scaling import MEAN_ABS_TO_SIGMA


@pytest.mark.parametrize("period", [7, 24, 50, 113])
def test_estimate_period_finds_the_cycle(period):
    rng = np.random.default_rng(period)
    t = np.arange(40 * period)
    x = np.sin(2 * np.pi * t / period) + 0.5 * np.sin(4 * np.pi * t / period) + 0.2 * rng.normal(size=t.size)
    x[rng.choice(t.size, 20)] = np.nan
    assert abs(estimate_period(x) - period) <= max(1, period // 50)


def test_estimate_period_needs_only_two_cycles():
    """NAB's probationary period: 604 five-minute points, barely more than two days."""
    rng = np.random.default_rng(7)
    t = np.arange(604)
    x = 50 + 30 * np.sin(2 * np.pi * t / 288) + rng.normal(size=t.size)
    assert abs(estimate_period(x) - 288) <= 3


def test_estimate_period_can_return_either_end_of_its_range():
    """The shortest and the longest period considered are candidates too (a cycle of
    exactly ``min_period`` or ``max_period`` points once came out as twice its length)."""
    t = np.arange(2000)
    assert estimate_period(np.sin(2 * np.pi * t / 4)) == 4
    assert estimate_period(np.sin(2 * np.pi * t / 24), min_period=24) == 24
    assert estimate_period(np.sin(2 * np.pi * t / 24), max_period=24) == 24
    assert estimate_period(np.sin(2 * np.pi * t[:100] / 50)) == 50  # max_period = n // 2


def test_estimate_period_of_noise_is_the_default():
    x = np.random.default_rng(0).normal(size=3000)
    assert estimate_period(x, default=17) == 17


def test_rank_ensemble_of_identical_members_is_the_members_cdf():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 600))
    member = RollingZScoreDetector(window=10, seasonal_period=None)
    single = EnsembleDetector(detectors=[member], combine="rank").fit(x[:, :400])
    double = EnsembleDetector(detectors=[member, member], combine="rank").fit(x[:, :400])
    np.testing.assert_allclose(single.score(x[:, 400:]).values, double.score(x[:, 400:]).values)
    scores = single.score(x[:, 400:]).values
    assert np.nanmin(scores) >= 0.0 and np.nanmax(scores) <= 1.0
    raw = member.fit(x[:, :400]).score(x[:, 400:]).values
    finite = np.isfinite(raw)
    # A monotone map of the member's score: the order of points is kept.
    order = np.argsort(raw[finite], kind="stable")
    assert np.all(np.diff(scores[finite][order]) >= -1e-12)
    # And that map is the member's empirical CDF over its own training scores (all contexts
    # pooled): the share of training scores below each new score. The ensemble reads it off
    # 1001 training-score quantiles (np.quantile's linear interpolation, then np.interp), which
    # is within one grid step (0.001) of (rank + fraction) / (n - 1); that differs from
    # rank / n by at most 2 / n (n = 1185 here). 0.004 covers both.
    train_raw = member.fit_score(x[:, :400]).values
    train_raw = np.sort(train_raw[np.isfinite(train_raw)])
    assert train_raw.size == 3 * (400 - 5)  # min_periods = 5 for window 10: 5 unscored steps per context
    cdf = np.searchsorted(train_raw, raw[finite]) / train_raw.size
    assert cdf.min() < 0.2 and cdf.max() > 0.8  # the new scores span the CDF, not just its ends
    np.testing.assert_allclose(scores[finite], cdf, rtol=0, atol=0.004)
    assert np.isnan(scores[~finite]).all()


def test_zmean_ensemble_and_bad_combine():
    x = np.random.default_rng(2).normal(size=(2, 300))
    new = np.random.default_rng(3).normal(size=(2, 50))
    member = RollingZScoreDetector(window=6, seasonal_period=None)
    det = EnsembleDetector(detectors=[member], combine="zmean").fit(x)
    scores = det.score(new).values
    assert np.isfinite(scores).all()
    # One member: its raw score as a robust z-score against its own training scores (both
    # contexts pooled, NaN left out): (raw - median) / (1.4826 * MAD), worked out here with
    # np.median on the raw training scores. The ensemble takes the median and MAD from 1001
    # training-score quantiles; the median is exact (the 0.5 quantile) and the MAD of the grid
    # is within a fraction of a percent of the data's, so 0.5% of the score covers it, while
    # the raw (uncentred, unscaled) scores differ from the expected ones by far more.
    alone = RollingZScoreDetector(**member.get_params())
    train_raw = alone.fit_score(x).values
    train_raw = train_raw[np.isfinite(train_raw)]
    assert train_raw.size == 2 * (300 - 3)  # min_periods = 3 for window 6
    median = np.median(train_raw)
    mad = np.median(np.abs(train_raw - median))
    raw = alone.score(new).values
    expected = (raw - median) / (1.4826 * mad)
    assert (expected < 0).any() and (expected > 1).any()
    np.testing.assert_allclose(scores, expected, rtol=5e-3, atol=1e-9)
    with pytest.raises(ValueError, match="combine"):
        EnsembleDetector(combine="median").fit(x)


def test_max_ensemble_is_the_largest_ratio_to_each_members_training_maximum():
    rng = np.random.default_rng(4)
    train, new = rng.normal(size=(1, 400)), rng.normal(size=(1, 60))
    members = [RollingZScoreDetector(window=6, seasonal_period=None), RollingZScoreDetector(window=24, seasonal_period=None)]
    det = EnsembleDetector(detectors=members, combine="max").fit(train)
    expected = []
    for member in members:
        alone = RollingZScoreDetector(**member.get_params())
        peak = np.nanmax(alone.fit_score(train).values)
        expected.append(alone.score(new).values / peak)
    np.testing.assert_allclose(det.score(new).values, np.fmax(*expected), rtol=1e-12)


def test_short_accuracy_run_on_real_data(shared_data):
    from tsanomaly.datasets import read_nab, read_ucr

    ucr = read_ucr(shared_data / "ucr", limit=2)
    nab = [r for r in read_nab(shared_data / "nab") if r.windows][:2]
    for records, dataset, metric in ((ucr, "ucr", "top1_accuracy"), (nab, "nab", "nab_standard")):
        result = evaluate(records, dataset, detectors=["baseline"], progress=False)
        assert list(result.summary["detector"]) == ["baseline"]
        assert result.summary["files"].iloc[0] == 2
        assert 0.0 <= result.summary["auc_roc"].iloc[0] <= 1.0
        assert np.isfinite(result.summary[metric].iloc[0])
        assert "| baseline | 2 |" in format_markdown([result], "cmd")
    scored = score_series(ucr[0], "baseline")
    assert np.isnan(scored.scores[: ucr[0].train_end]).all()
    assert np.isfinite(scored.scores[ucr[0].train_end :]).any()


def test_evaluate_cli_reports_a_missing_folder(tmp_path, capsys):
    assert main(["evaluate", "--data", str(tmp_path), "--detectors", "baseline"]) == 2
    assert "data folder" in capsys.readouterr().err


def _synthetic_record(n=1200, period=25, train_end=500, anomaly=(900, 910)):
    from tsanomaly.datasets import LabelledSeries
    from tsanomaly.panel import Panel

    rng = np.random.default_rng(5)
    x = np.sin(2 * np.pi * np.arange(n) / period) + 0.05 * rng.normal(size=n)
    x[anomaly[0] : anomaly[1] + 1] = 0.3  # a flattened stretch: a shape never seen before
    labels = np.zeros(n, dtype=bool)
    labels[anomaly[0] : anomaly[1] + 1] = True
    return LabelledSeries("synthetic", Panel.from_array(x[None, :], contexts=["synthetic"]), labels, [anomaly], train_end, np.arange(n), [anomaly])


def test_second_peak_is_the_highest_score_outside_the_top_ones_neighbourhood():
    from tsanomaly.detectors.ensemble import _second_peak

    scores = np.array([[0.0, 1.0, 5.0, 4.0, 0.5, 3.0, np.nan], [1.0, 2.0, 1.5, np.nan, np.nan, np.nan, np.nan]])
    # Row 0: the top (5 at 2) hides 4 and 1 within 2 points; the second peak is 3.
    # Row 1: nothing lies more than 2 points from the top: the top itself (ratio 1).
    np.testing.assert_array_equal(_second_peak(scores, 2), [[3.0], [2.0]])
    np.testing.assert_array_equal(_second_peak(scores[0], 0), [4.0])  # only the top itself is left out


def test_peak_ensemble_divides_each_member_by_its_second_peak_and_takes_the_largest():
    from tsanomaly.detectors.ensemble import _second_peak

    rng = np.random.default_rng(8)
    x = rng.normal(size=(3, 700))
    x[1, 600] += 9.0  # one member sees a lone spike, the other a level shift
    x[2, 500:] += 4.0
    members = [RollingZScoreDetector(window=8, seasonal_period=None), RollingZScoreDetector(window=40, seasonal_period=None)]
    det = EnsembleDetector(detectors=members, combine="peak").fit(x[:, :400])
    scores = det.score(x[:, 400:]).values
    ratios = []
    for member in members:
        own = member.fit(x[:, :400]).score(x[:, 400:]).values
        ratios.append(own / _second_peak(own, member.window))
    np.testing.assert_allclose(scores, np.fmax(*ratios), equal_nan=True)
    assert int(np.nanargmax(scores[1])) == 200
    with pytest.raises(ValueError, match="peak_separation"):
        EnsembleDetector(detectors=[STLDetector(periods=24)], combine="peak").fit(x[:, :400])
    fixed = EnsembleDetector(detectors=[STLDetector(periods=24)], combine="peak", peak_separation=24)
    assert fixed.fit(np.abs(x[:, :400])).score(np.abs(x[:, 400:])).values.shape == (3, 300)


def test_peak_measures_a_quiet_context_by_the_training_maximum_not_a_floored_second_peak():
    """Quiet contexts (0 outside one blip: a second peak of 0) used to be divided by a floor of
    1e-12: their blips scored about 1e14, and so did the threshold, so that a real burst of
    ratio 26 on a busy context did not alert. Without a second peak, a member's scores of the
    context are measured against its training maximum, the unit of combine="max"."""
    from tsanomaly.detectors.ensemble import _second_peak

    rng = np.random.default_rng(0)
    n, m = 24 * 14, 24 * 7
    busy = rng.poisson(50 + 20 * np.sin(np.arange(n + m) * 2 * np.pi / 24), size=(4, n + m)).astype(float)
    busy[0, n + 80] += 500.0  # the attack to find
    quiet = np.zeros((3, n + m))
    quiet[:, 200] = 2.0  # one blip in the history and one in the new week, each context
    quiet[:, n + 50] = 1.0
    x = np.vstack([busy, quiet])
    det = EnsembleDetector(combine="peak", peak_separation=24).fit(x[:, :n])
    assert det.global_threshold_ < 10  # was 1.8e14
    scores = det.score(x[:, n:]).values
    assert np.nanmax(scores[0]) > 20 * np.nanmax(scores[4:])  # the quiet blips do not dominate
    flags = det.predict(x[:, n:]).values
    assert flags[0, 80] and not flags[1:].any()
    # The quiet contexts' scores: each member's own over its second peak where that is above 0
    # (STL spreads a blip over its neighbours), else over its training maximum (the baseline).
    ratios, without_second = [], []
    for k, member in enumerate(det.members_):
        own = member.score(x[:, n:]).values[4:]
        second = _second_peak(own, 24)
        without_second.append((second == 0).all())
        ratios.append(own / np.where(second > 0, second, det.member_quantiles_[k][-1]))
    assert without_second == [True, False]
    np.testing.assert_allclose(scores[4:], np.fmax(*ratios), rtol=1e-12)


@pytest.mark.parametrize("combine", ["rank", "zmean", "max", "peak"])
@pytest.mark.parametrize("bad", [-1, 0, "abc", 2.5, True, float("nan")])
def test_peak_separation_is_checked_whatever_the_combine_rule(combine, bad):
    # Used to be read (and refused) only with combine="peak": -1 or "abc" passed silently otherwise.
    x = np.random.default_rng(2).normal(size=(2, 100))
    with pytest.raises(ValueError, match="peak_separation must be None or a positive integer, got "):
        EnsembleDetector(detectors=[RollingZScoreDetector(window=6, seasonal_period=None)], combine=combine,
                         peak_separation=bad).fit(x)


def test_members_can_be_named_as_the_command_line_and_a_model_file_give_them(tmp_path):
    """A short name, or a dict of a short name and parameters, builds the same member as the
    detector itself: the same scores, saved and loaded with the names kept."""
    import tsanomaly

    x = np.random.default_rng(2).poisson(20.0, size=(3, 24 * 9)).astype(float)
    objects = EnsembleDetector(detectors=[RollingZScoreDetector(), STLDetector(periods=12)]).fit(x[:, :168 + 24])
    named = EnsembleDetector(detectors=["baseline", {"name": "stl", "periods": 12}]).fit(x[:, :168 + 24])
    np.testing.assert_array_equal(named.score(x[:, 168 + 24:]).to_numpy(), objects.score(x[:, 168 + 24:]).to_numpy())
    assert [type(m).__name__ for m in named.members_] == ["RollingZScoreDetector", "STLDetector"]
    assert named.min_fit_times() == STLDetector(periods=12).min_fit_times()
    named.save(tmp_path / "e.tsa")
    loaded = tsanomaly.load(tmp_path / "e.tsa")
    assert loaded.detectors == ["baseline", {"name": "stl", "periods": 12}]
    np.testing.assert_array_equal(loaded.score(x[:, 168 + 24:]).to_numpy(), named.score(x[:, 168 + 24:]).to_numpy())


def test_the_default_ensemble_is_the_most_surprised_of_the_baseline_and_stl():
    """Without detectors, the members are the baseline and STL with their defaults, and a point's
    score is the larger of their scores over their training maxima; the ensemble needs the
    history STL needs, since STL's fit raises on less."""
    x = np.random.default_rng(3).poisson(30.0, size=(4, 24 * 10)).astype(float)
    x[1, 24 * 9 + 5] = 120.0  # a burst in the new data
    default = EnsembleDetector().fit(x[:, : 24 * 9])
    assert [type(m).__name__ for m in default.members_] == ["RollingZScoreDetector", "STLDetector"]
    assert default.min_fit_times() == STLDetector().min_fit_times() == 48
    spelt_out = EnsembleDetector(detectors=[RollingZScoreDetector(), STLDetector()], combine="max").fit(x[:, : 24 * 9])
    np.testing.assert_array_equal(default.score(x[:, 24 * 9 :]).to_numpy(), spelt_out.score(x[:, 24 * 9 :]).to_numpy())
    ratios = []
    for member in (RollingZScoreDetector(), STLDetector()):
        train_max = np.nanmax(member.fit_score(x[:, : 24 * 9]).to_numpy())
        ratios.append(member.score(x[:, 24 * 9 :]).to_numpy() / train_max)
    np.testing.assert_allclose(default.score(x[:, 24 * 9 :]).to_numpy(), np.fmax(*ratios), rtol=1e-12)


def test_explanations_tell_members_of_one_class_apart():
    """member_scores named each member by its class alone: two matrix profiles at windows 12 and
    24 read "MatrixProfileDetector=0.353, MatrixProfileDetector=0.616". Members of one class add
    the parameters they differ in, identical ones their place; a class met once keeps its name."""
    import re

    x = np.random.default_rng(4).poisson(20.0, size=(2, 260)).astype(float)
    x[1, 240] = 90.0
    members = [RollingZScoreDetector(window=6, seasonal_period=None), RollingZScoreDetector(window=24, seasonal_period=None),
               STLDetector(periods=12)]
    det = EnsembleDetector(detectors=members).fit(x[:, :200])
    text = det.alerts(x[:, 200:])["member_scores"].iloc[0]
    assert re.fullmatch(r"RollingZScoreDetector\(window=6\)=\S+, RollingZScoreDetector\(window=24\)=\S+, STLDetector=\S+", text)
    # Unchanged where every class is met once; identical members by their place in the list.
    from tsanomaly.detectors.ensemble import _member_labels

    assert _member_labels([RollingZScoreDetector(), STLDetector()]) == ["RollingZScoreDetector", "STLDetector"]
    twice = [RollingZScoreDetector(window=6), RollingZScoreDetector(window=6), RollingZScoreDetector(window=8)]
    assert _member_labels(twice) == ["RollingZScoreDetector(window=6)#1", "RollingZScoreDetector(window=6)#2",
                                     "RollingZScoreDetector(window=8)"]
    assert _member_labels([STLDetector(), STLDetector()]) == ["STLDetector#1", "STLDetector#2"]

@pytest.mark.parametrize("combine", ["rank", "zmean", "max", "peak"])
def test_explanations_score_only_the_alerting_contexts_and_equal_the_whole_panels(combine):
    """Explaining a few alerts scored every context of the panel again with every member (1.40 s of
    score's 3.72 s on 50,000 contexts). The members now score only the contexts that alerted, whose
    calibrated scores are those of the whole panel under every rule ("peak"'s second peak is the
    context's own): the text is that of the whole panel's scores, on a panel with gaps, fitted
    contexts in another order and an unseen one."""
    from tsanomaly.detectors.matrix_profile import MatrixProfileDetector

    rng = np.random.default_rng(6)
    x = rng.poisson(20.0, size=(12, 300)).astype(float)
    x[rng.random(x.shape) < 0.03] = np.nan
    x[2, 250], x[9, 270] = 120.0, 90.0
    members = [RollingZScoreDetector(window=24, seasonal_period=None), MatrixProfileDetector(window=12)]
    det = EnsembleDetector(detectors=members, combine=combine, peak_separation=12).fit(x[:, :200])
    new_x = np.vstack([x[::-1, 200:], rng.poisson(20.0, size=(1, 100)).astype(float)])
    new_x[-1, 60] = 150.0
    panel = Panel.from_array(new_x, contexts=list(range(11, -1, -1)) + ["unseen"], index=pd.RangeIndex(200, 300))
    scores = det.score(panel)
    scored = []
    for member in det.members_:
        def spy(values, panel, rows, _score=member._score):
            scored.append(values.shape[0])
            return _score(values, panel, rows)

        member._score = spy
    alerts = det.alerts(panel, scores)
    assert 0 < alerts["context"].nunique() < panel.n_contexts and "unseen" in set(alerts["context"])
    assert scored == [alerts["context"].nunique()] * len(members)
    # The whole panel's calibrated member scores at each alert's peak.
    whole = [det._calibrated(k, s) for k, s in enumerate(det._member_scores(panel.values, panel, det.context_rows(panel)))]
    rows = panel.contexts.get_indexer(alerts["context"])
    peaks = np.asarray(alerts["peak_time"], dtype=np.int64) - 200
    expected = [f"RollingZScoreDetector={whole[0][r, t]:.3g}, MatrixProfileDetector={whole[1][r, t]:.3g}"
                for r, t in zip(rows, peaks)]
    assert list(alerts["member_scores"]) == expected



@pytest.mark.parametrize("spec, message", [
    (3, "ensemble members must be tsanomaly detectors, short names such as 'stl', or dicts"),
    ({"periods": 24}, "ensemble members must be tsanomaly detectors, short names such as 'stl', or dicts"),
    ("arima", "unknown detector 'arima'"),
    ({"name": "stl", "perods": 24}, "STLDetector has no parameter 'perods'; valid: "),
])
def test_a_member_spec_that_names_no_detector_is_refused(spec, message):
    with pytest.raises(ValueError, match=message):
        EnsembleDetector(detectors=["baseline", spec]).fit(np.random.default_rng(2).normal(size=(2, 100)))


def test_detectors_must_be_a_list():
    x = np.random.default_rng(2).normal(size=(2, 100))
    with pytest.raises(ValueError, match=r"detectors is an empty list; .* default members \['baseline', 'stl'\]"):
        EnsembleDetector(detectors=[]).fit(x)
    with pytest.raises(ValueError, match="detectors must be a list of tsanomaly detectors, got RollingZScoreDetector"):
        EnsembleDetector(detectors=RollingZScoreDetector(window=6, seasonal_period=None)).fit(x)
    pair = (RollingZScoreDetector(window=6, seasonal_period=None), RollingZScoreDetector(window=8, seasonal_period=None))
    assert len(EnsembleDetector(detectors=pair).fit(x).members_) == 2


class _FixedScores(BaseDetector):
    """A stand-in member: ``fit_level`` at fit and ``score_level`` at scoring everywhere, plus
    ``bump`` at every tenth point."""

    def __init__(self, fit_level=0.0, score_level=0.0, bump=0.0, threshold="quantile", contamination=0.001,
                 per_context=False, device="auto"):
        self.fit_level = fit_level
        self.score_level = score_level
        self.bump = bump
        self.threshold = threshold
        self.contamination = contamination
        self.per_context = per_context
        self.device = device

    def _scores(self, shape, level):
        out = np.full(shape, float(level))
        out[:, ::10] += self.bump
        return out

    def _fit(self, values, panel):
        return self._scores(values.shape, self.fit_level)

    def _score(self, values, panel, rows):
        return self._scores(values.shape, self.score_level)


def _beside_a_baseline(member, combine, **params):
    """(ensemble of a baseline and ``member``, the baseline's ensemble alone, new data), fitted;
    ``params`` go to both ensembles."""
    x = np.random.default_rng(2).normal(size=(2, 300))
    new = np.random.default_rng(3).normal(size=(2, 50))
    base = RollingZScoreDetector(window=6, seasonal_period=None)
    alone = EnsembleDetector(detectors=[base], combine=combine, **params).fit(x)
    det = EnsembleDetector(detectors=[base, member], combine=combine, **params).fit(x)
    np.testing.assert_allclose(det.score(new).values, alone.score(new).values, rtol=1e-12)
    assert det.global_threshold_ == pytest.approx(alone.global_threshold_, rel=1e-12)
    return det, x, new


# Where no training score is finite, fit may warn that nothing can alert: that is the point here.
@pytest.mark.filterwarnings("ignore:.*no training score was finite")
@pytest.mark.parametrize("fit_level, score_level", [(5.0, 5.0 + 1e-6), (0.0, 0.5), (np.nan, 3.0)])
def test_zmean_leaves_out_a_member_whose_training_scores_are_constant(fit_level, score_level):
    # Its training scores say nothing about what spread is normal. The old scale floor of 1e-12
    # made a change of 1e-6 a z-score of 1e6 (an alert at every point); a member with no finite
    # training score was measured against a single 0 with the same floor.
    det, x, new = _beside_a_baseline(_FixedScores(fit_level, score_level), "zmean")
    assert np.isnan(det.member_scale_[1])
    # Alone, no member has a unit: the member's own units are kept, and the ensemble alerts
    # where the member alone does (everywhere after a constant history, nowhere without a
    # finite training score).
    lone = EnsembleDetector(detectors=[_FixedScores(fit_level, score_level)], combine="zmean").fit(x)
    member = _FixedScores(fit_level, score_level).fit(x)
    np.testing.assert_array_equal(lone.predict(new).values, member.predict(new).values)


@pytest.mark.filterwarnings("ignore:.*no training score was finite")
@pytest.mark.parametrize("fit_level, score_level", [(0.0, 0.5), (np.nan, 3.0)])
def test_max_leaves_out_a_member_whose_training_maximum_is_not_positive(fit_level, score_level):
    # Nothing to divide by: the old floor of 1e-12 turned a later 0.5 into a ratio of 5e11.
    _beside_a_baseline(_FixedScores(fit_level, score_level), "max")


class _LoneBump(_FixedScores):
    """A stand-in member that scores 0 at fit, and at scoring 0 but for ``bump`` at one point:
    no training maximum above 0 and, in the new data, no second peak above 0."""

    def _fit(self, values, panel):
        return np.zeros(values.shape)

    def _score(self, values, panel, rows):
        out = np.zeros(values.shape)
        out[:, 3] = self.bump
        return out


def test_peak_leaves_out_a_member_without_a_second_peak_or_a_training_maximum():
    # Neither gives a unit: the old floor of 1e-12 made the bump a ratio of 5e12. Beside a
    # member with a unit it is left out; alone, it keeps its own units (a history without
    # events), and alerts on its bump as the member alone does.
    _beside_a_baseline(_LoneBump(bump=5.0), "peak", peak_separation=6)
    x, new = np.zeros((2, 300)), np.zeros((2, 50))
    lone = EnsembleDetector(detectors=[_LoneBump(bump=5.0)], combine="peak", peak_separation=6).fit(x)
    np.testing.assert_array_equal(lone.predict(new).values, _LoneBump(bump=5.0).fit(x).predict(new).values)
    assert lone.predict(new).values[:, 3].all()


def test_peak_leaves_out_a_member_without_any_finite_training_score():
    # Its NaN training maximum gave no unit, yet the batch's second peak stood in: scores moved and
    # alerts came from a member the threshold was calibrated without.
    rng = np.random.default_rng(0)
    t = np.arange(24 * 5)
    x = 100 + 30 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 3, size=(3, t.size))
    x[1, 100] += 60
    short = {"name": "mp", "window": 6, "history": 24, "min_history": 7}
    too_long = {"name": "mp", "window": 24, "history": 48}  # no finite score in 30 points
    both = EnsembleDetector(detectors=[short, too_long], combine="peak", device="cpu").fit(x[:, :30])
    only = EnsembleDetector(detectors=[short], combine="peak", device="cpu").fit(x[:, :30])
    assert np.isnan(both.member_quantiles_[1]).all()
    np.testing.assert_array_equal(both.score(x[:, 30:]).values, only.score(x[:, 30:]).values)


@pytest.mark.parametrize("combine", ["max", "zmean", "rank", "peak"])
def test_an_ensemble_fitted_on_a_history_without_events_alerts_on_the_first_as_its_members_do(combine):
    """All-zero history (a context that never saw a failed login): the baseline and STL score 0
    everywhere and calibrate a threshold of 0, so a later burst alerts. No member has a unit
    there ("max": no training maximum above 0; "zmean": no spread), and leaving them all out left
    the ensemble with an infinite threshold; "rank" mapped the burst to 1, the rank of the zeros
    themselves."""
    history = np.zeros((3, 24 * 9))
    new = np.zeros((3, 24))
    new[1, 5] = 40.0
    members = [RollingZScoreDetector(), STLDetector()]
    for member in members:
        assert member.fit(history).predict(new).values[1, 5]
    det = EnsembleDetector(combine=combine, peak_separation=24).fit(history)  # STL has no window for "peak"
    assert np.isfinite(det.global_threshold_)
    flags = det.predict(new).values
    assert flags[1, 5] and not flags[[0, 2]].any()
    # and nothing alerts on more of the same
    assert not det.predict(np.zeros((3, 24))).values.any()


def test_zmean_scales_a_mostly_constant_member_by_its_mean_absolute_deviation():
    # 0 at nine points in ten and 1 at the tenth: a MAD of 0. With the old floor of 1e-12 the ones
    # became z-scores of 1e12, and so did the threshold; tsanomaly.scaling's floor,
    # 1.2533 x the mean absolute deviation from the median (0.1), makes them about 8.
    x = np.random.default_rng(2).normal(size=(2, 300))
    new = np.random.default_rng(3).normal(size=(2, 50))
    base = RollingZScoreDetector(window=6, seasonal_period=None)
    sparse = _FixedScores(bump=1.0)
    det = EnsembleDetector(detectors=[base, sparse], combine="zmean").fit(x)
    scale = MEAN_ABS_TO_SIGMA * 0.1
    assert det.member_scale_[1] == pytest.approx(scale, rel=1e-12)
    alone = EnsembleDetector(detectors=[base], combine="zmean").fit(x)
    member = sparse.fit(x).score(new).values
    np.testing.assert_allclose(det.score(new).values, (alone.score(new).values + member / scale) / 2, rtol=1e-12)
    assert det.global_threshold_ < 10


def test_shift_earlier_moves_scores_and_pads_with_nan():
    from tsanomaly.evaluation import _shift_earlier

    np.testing.assert_array_equal(_shift_earlier(np.arange(5.0), 2), [2.0, 3.0, 4.0, np.nan, np.nan])
    np.testing.assert_array_equal(_shift_earlier(np.arange(3.0), 0), [0.0, 1.0, 2.0])


def test_mp_and_mp_multi_are_peak_ensembles_of_shape_and_plain_profiles():
    from tsanomaly.evaluation import make_benchmark_detector

    def layout(det):
        return [(m.window, m.smoothing, m.difference, m.normalize, m.neighbours) for m in det.detectors]

    # mp: values and first differences at the period, each z-normalised and plain.
    four = make_benchmark_detector("mp", period=20, n_train=300, n_total=1000)
    assert four.combine == "peak"
    at_period = [(20, 20, False, True, "all"), (20, 20, True, True, "all"),
                 (20, 20, False, False, "all"), (20, 20, True, False, "all")]
    assert layout(four) == at_period
    # mp-multi: the z-normalised views at half, once and twice the period, and the plain ones at the period.
    det = make_benchmark_detector("mp-multi", period=20, n_train=300, n_total=1000)
    assert det.combine == "peak"
    assert layout(det) == [(w, w, d, True, "all") for w in (10, 20, 40) for d in (False, True)] + at_period[2:]
    capped = make_benchmark_detector("mp", period=200, n_train=300, n_total=1000)
    assert [(m.window, m.smoothing) for m in capped.detectors] == [(150, 150)] * 4  # capped at half the training part
    # In the point-wise rank ensemble the profile stays unsmoothed, aligned with its partners.
    ensemble = make_benchmark_detector("ensemble", period=20, n_train=300, n_total=1000)
    assert [type(m).__name__ for m in ensemble.detectors][-1] == "MatrixProfileDetector"
    assert ensemble.detectors[-1].smoothing == 1 and ensemble.combine == "rank"
    with pytest.raises(ValueError, match="unknown detector"):
        make_benchmark_detector("nope", period=20, n_train=300, n_total=1000)


@pytest.mark.parametrize("name", ["mp", "mp-multi"])
def test_matrix_profile_location_scores_are_centred_and_scores_match_the_detector(name):
    from tsanomaly.evaluation import _mp_scores, make_benchmark_detector
    from tsanomaly.panel import Panel

    record = _synthetic_record()
    result = score_series(record, name, locate=True)
    assert result.factor == 1 and abs(result.period - 25) <= 1
    # The scores and flags are the detector's own (computed once here, not through predict).
    det = make_benchmark_detector(name, result.period, record.train_end, record.values.size)
    x = record.values
    det.fit(Panel.from_array(x[None, : record.train_end], contexts=["synthetic"]))
    new = Panel(x[None, record.train_end :], ["synthetic"], pd.RangeIndex(record.train_end, x.size))
    np.testing.assert_allclose(result.scores[record.train_end :], det.score(new).to_numpy()[0], equal_nan=True)
    np.testing.assert_array_equal(result.flags[record.train_end :], det.predict(new).to_numpy()[0])
    if name == "mp":
        # Each view is centred before the two are combined: the values' view alone, centred,
        # is its end-stamped scores moved back by (window - 1 + smoothing - 1) // 2.
        values_view = det.members_[0]  # fitted with the ensemble
        shift = (values_view.window - 1 + values_view.smoothing - 1) // 2
        own = values_view.score(new).to_numpy()[0]
        ends, centred = _mp_scores(values_view, new, record.train_end)
        np.testing.assert_allclose(ends, own, equal_nan=True)
        np.testing.assert_allclose(centred[record.train_end : -shift], own[shift:], equal_nan=True)
    # Centred, the peak lies on the anomaly; end-stamped it may trail it by up to a window.
    loc = record.train_end + int(np.nanargmax(result.location_scores[record.train_end :]))
    assert 900 - 12 <= loc <= 910 + 12
    assert np.isnan(result.location_scores[: record.train_end]).all()
    # Without locate (NAB), the location scores are the scores.
    plain = score_series(record, name)
    assert plain.location_scores is plain.scores


def test_evaluate_uses_centred_scores_for_ucr_top1():
    record = _synthetic_record()
    result = evaluate([record], "ucr", detectors=["mp", "mp-multi"], progress=False)
    assert list(result.summary["top1_accuracy"]) == [1.0, 1.0]


def test_nab_alert_scores_are_threshold_units_kept_at_incident_onsets():
    from tsanomaly.evaluation import NAB_REFRACTORY_PERIODS, SeriesScores, nab_alert_scores

    scores = np.full(200, 1.0)
    scores[:20] = np.nan  # the training part is not scored
    scores[100:130] = 8.0  # one incident lasting 30 steps
    # After it the score creeps up, a new high at every step: only the incident's peak, while it
    # lies within the refractory span, keeps these steps from counting as onsets.
    scores[130:] = 1.0 + 0.01 * np.arange(1, 71)
    result = SeriesScores(scores, scores >= 4.0, period=5, factor=2, seconds=0.0, threshold=4.0)
    alert = nab_alert_scores(result)
    assert np.isnan(alert[:20]).all()
    assert alert[20] == 0.25  # the first scored step is an onset, in threshold units
    assert np.isnan(alert[21:100]).all()  # ties with the steps before: no onset
    assert np.flatnonzero(alert >= 1.0).tolist() == [100]  # one alert for the whole incident
    assert alert[100] == 2.0 and np.isnan(alert[101:130]).all()
    # The refractory span in full-resolution points: 4 periods of 5 at factor 2 = 40 steps.
    quiet = NAB_REFRACTORY_PERIODS * 5 * 2
    assert quiet == 40
    # Step t looks back at t - 40 .. t - 1: up to t = 169 that holds the incident's last step
    # (129, score 8), so the rising steps 130..169 stay quiet; from 170 on only the rising
    # steps are in view and each one beats them all: an onset at every step.
    assert np.isnan(alert[130:170]).all()
    np.testing.assert_array_equal(alert[170:], scores[170:] / 4.0)
    # Without a usable threshold the raw scores are used.
    raw = nab_alert_scores(SeriesScores(scores, scores >= 4.0, period=5, factor=1, seconds=0.0))
    assert raw[100] == 8.0


def _benchmark_script(name: str):
    """Import ``benchmarks/<name>.py`` (a script folder, not a package) as a module."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_nab_folder(root, values, window_rows, label_row):
    """A one-file NAB folder: 5-minute ``values``, one window over ``window_rows`` (first, last), one labelled row."""
    import json

    (root / "data" / "cat").mkdir(parents=True)
    (root / "labels").mkdir()
    stamps = pd.date_range("2024-01-01", periods=len(values), freq="5min")
    pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%d %H:%M:%S"), "value": values}).to_csv(
        root / "data" / "cat" / "one.csv", index=False
    )
    window = [stamps[row].strftime("%Y-%m-%d %H:%M:%S.%f") for row in window_rows]
    (root / "labels" / "combined_windows.json").write_text(json.dumps({"cat/one.csv": [window]}))
    (root / "labels" / "combined_labels.json").write_text(json.dumps({"cat/one.csv": [str(stamps[label_row])]}))


def test_nab_auc_bound_references_on_a_hand_worked_file(tmp_path):
    # benchmarks/nab_auc_bound.py: 40 rows (probationary 6), one window on rows 20..29 with its
    # labelled point at row 25. Scored rows 6..39: 10 positives, 24 negatives.
    # hold marks rows 25..29: half the positives beat every negative, half tie -> 0.5 + 0.5 * 0.5.
    # point marks row 25: one positive in ten beats the negatives -> 0.1 + 0.9 * 0.5.
    module = _benchmark_script("nab_auc_bound")
    _write_nab_folder(tmp_path, np.arange(40.0), window_rows=(20, 29), label_row=25)
    result = module.reference_aucs(tmp_path)
    assert result == {"point": pytest.approx(0.55), "hold": pytest.approx(0.75), "files": 1}


def test_nab_isolation_forest_stamps_window_scores_at_ends_and_centres():
    module = _benchmark_script("nab_isolation_forest")
    window_scores = np.array([1.0, 2.0, 6.0])  # windows of 3 starting at points 0, 1, 2 of 5
    # Point t is covered by windows max(0, t - 2) .. min(t, 2).
    np.testing.assert_allclose(module.covering_mean(window_scores, 5, 3), [1.0, 1.5, 3.0, 4.0, 6.0])
    np.testing.assert_array_equal(module.end_stamped(window_scores, 3), [np.nan, np.nan, 1.0, 2.0, 6.0])


def test_nab_isolation_forest_finds_a_broken_cycle(tmp_path):
    # A clean 5-minute daily-like cycle of 24 points; rows 300..311 (half a cycle) are flattened.
    # The anomalous windows are isolated first, so every variant ranks the window above chance.
    t = np.arange(480)
    values = 10.0 + 5.0 * np.sin(2 * np.pi * t / 24)
    values[300:312] = 10.0
    module = _benchmark_script("nab_isolation_forest")
    _write_nab_folder(tmp_path, values, window_rows=(290, 330), label_row=305)
    result = module.isolation_forest_aucs(tmp_path)
    assert result["files"] == 1
    for fit in ("history", "all"):
        for stamp in ("end", "centre"):
            assert result[(fit, stamp)] > 0.8


@pytest.mark.parametrize("form", ["separate", "joined"])
def test_accuracy_script_takes_options_as_opt_value_and_opt_equals_value(form, monkeypatch):
    # benchmarks/accuracy.py looked for "--data" in argv: "--data=PATH" was missed, the
    # default was appended after it and won (argparse keeps the last), so the report ran on
    # ../shared/data and overwrote benchmarks/results/accuracy.md whatever --out said.
    from tsanomaly.cli import _build_parser

    module = _benchmark_script("accuracy")
    seen = []
    monkeypatch.setattr(module, "cli_main", lambda argv: seen.append(argv) or 0)
    given = {"--data": "/elsewhere/data", "--detectors": "mp", "--out": "/elsewhere/report.md"}
    argv = [part for opt, value in given.items() for part in ((opt, value) if form == "separate" else (f"{opt}={value}",))]
    assert module.main([*argv, "--limit", "2"]) == 0
    (called,) = seen
    assert called[0] == "evaluate" and called[-2:] == ["--limit", "2"]  # the rest passed on as given
    # What `tsanomaly evaluate` will read: each option once, with the user's value.
    args = _build_parser().parse_args(called)
    assert (args.data, args.detectors, args.out, args.limit) == ("/elsewhere/data", "mp", "/elsewhere/report.md", 2)
    for opt in given:
        assert sum(part == opt or part.startswith(opt + "=") for part in called) == 1, called
    # Without them, the defaults: the shared data, every benchmark detector, the results file.
    seen.clear()
    module.main([])
    args = _build_parser().parse_args(seen[0])
    assert args.detectors == "baseline,stl,mp,mp-multi,lstm,ensemble"
    assert args.out.endswith("benchmarks/results/accuracy.md") and args.data.endswith("shared/data")


def _fixed_scores(monkeypatch, make):
    """Make evaluate() see the scores ``make(record, name)`` instead of running a detector."""
    import tsanomaly.evaluation as evaluation
    from tsanomaly.evaluation import SeriesScores

    def fake(record, name, **kwargs):
        scores = np.asarray(make(record, name), dtype=np.float64).copy()
        scores[: record.train_end] = np.nan
        return SeriesScores(scores, np.zeros(scores.size, dtype=bool), period=25, factor=1, seconds=0.0,
                            location_scores=scores, threshold=1.0)

    monkeypatch.setattr(evaluation, "score_series", fake)


@pytest.mark.parametrize("value", [np.nan, 3.0], ids=["all-nan", "constant"])
def test_ucr_top1_counts_all_nan_or_constant_scores_as_a_miss(value, monkeypatch):
    # The anomaly right after the training part: evaluate() read NaN as -inf, and the argmax of
    # scores that are all -inf (or all equal) is the first scored point, within the tolerance.
    record = _synthetic_record(train_end=500, anomaly=(520, 530))
    _fixed_scores(monkeypatch, lambda record, name: np.full(record.labels.size, value))
    result = evaluate([record], "ucr", detectors=["baseline"], progress=False)
    assert result.per_file["ucr_correct"].tolist() == [False]
    assert result.summary["top1_accuracy"].tolist() == [0.0]


@pytest.mark.parametrize("value", [np.nan, 3.0], ids=["all-nan", "constant"])
def test_scores_without_information_get_the_no_skill_metrics_in_the_report(value, monkeypatch):
    from tsanomaly import metrics

    record = _synthetic_record()
    _fixed_scores(monkeypatch, lambda record, name: np.full(record.labels.size, value))
    row = evaluate([record], "ucr", detectors=["baseline"], progress=False).per_file.iloc[0]
    labels = record.labels[record.train_end :]
    share = labels.mean()  # 11 of 700 scored points
    assert row["auc_roc"] == 0.5 and row["auc_pr"] == pytest.approx(share)
    # VUS-PR: the share of each buffer's soft label mass, about that of random scores (it was 0.54).
    random = metrics.vus_pr(labels, np.random.default_rng(0).random(labels.size))
    assert share < row["vus_pr"] < 0.1 and row["vus_pr"] == pytest.approx(random, abs=0.02)
    assert row["range_f1"] == 0.0  # nothing flagged


def test_evaluate_refuses_no_record_and_a_detector_named_twice():
    record = _synthetic_record()
    with pytest.raises(ValueError, match="no labelled series to evaluate in the ucr data set"):
        evaluate([], "ucr", detectors=["baseline"], progress=False)
    with pytest.raises(ValueError, match=r"2 file\(s\) could not be read, first a.txt: bad"):
        evaluate([], "ucr", detectors=["baseline"], progress=False, unreadable=[("a.txt", "bad"), ("b.txt", "bad")])
    with pytest.raises(ValueError, match="'stl' named more than once"):
        evaluate([record], "ucr", detectors=["stl", "baseline", "stl"], progress=False)
    with pytest.raises(ValueError, match="no detector to run"):
        evaluate([record], "ucr", detectors=[], progress=False)
    # Raised inside the per-file loop before, a typo gave a report of files that all "failed".
    with pytest.raises(ValueError, match=r"unknown detector\(s\) 'basline'; choose from baseline, stl"):
        evaluate([record], "ucr", detectors=["baseline", "basline"], progress=False)


def test_nab_reads_points_without_a_score_as_no_detection(monkeypatch):
    # A window from the end of the probationary part to the file's end: read as -inf, the NaN of a
    # failed detector (or a warm-up) all became detections at the sweep's lowest threshold, and a
    # detector that gave no score at all scored a perfect 100.
    record = _synthetic_record(n=1200, train_end=180, anomaly=(180, 1199))
    _fixed_scores(monkeypatch, lambda record, name: np.full(record.labels.size, np.nan))
    (row,) = evaluate([record], "nab", detectors=["baseline"], progress=False).summary.to_dict("records")
    assert row["nab_standard"] == 0.0


def test_a_detector_failing_on_a_file_is_scored_as_giving_no_score(monkeypatch):
    import tsanomaly.evaluation as evaluation

    first, second = _synthetic_record(), _synthetic_record(anomaly=(1000, 1010))
    second = type(second)("other", *[getattr(second, f) for f in ("panel", "labels", "windows", "train_end", "rows", "row_windows")])
    good = evaluation.score_series

    def flaky(record, name, **kwargs):
        if record.name == "synthetic":
            raise RuntimeError("out of luck\nsecond line")
        return good(record, name, **kwargs)

    monkeypatch.setattr(evaluation, "score_series", flaky)
    result = evaluate([first, second], "ucr", detectors=["mp"], progress=False)
    failed, ok = result.per_file.iloc[0], result.per_file.iloc[1]
    assert failed["error"] == "RuntimeError: out of luck" and ok["error"] == ""
    assert not failed["ucr_correct"] and ok["ucr_correct"]  # a miss: no location named
    assert failed["auc_roc"] == 0.5 and failed["range_f1"] == 0.0
    (row,) = result.summary.to_dict("records")
    assert (row["files"], row["failed"], row["top1_accuracy"]) == (2, 1, 0.5)
    assert result.notes == ["mp failed on synthetic (RuntimeError: out of luck): scored as giving no score"]
    assert "## UCR (2 files)" in format_markdown([result], "cmd")


def test_the_report_counts_the_files_of_the_data_set_and_those_the_aucs_cover(monkeypatch):
    with_anomaly = _synthetic_record()
    quiet = _synthetic_record()
    quiet = type(quiet)("quiet", quiet.panel, np.zeros_like(quiet.labels), [], quiet.train_end, quiet.rows, [])
    _fixed_scores(monkeypatch, lambda record, name: np.random.default_rng(0).random(record.labels.size))
    result = evaluate([with_anomaly, quiet], "nab", detectors=["baseline", "stl"], progress=False,
                      unreadable=[("cat/bad.csv", "cat/bad.csv: value at row 3 is not a number: 'x'")])
    assert (result.n_files, result.n_ranked) == (3, 1)
    assert result.summary["files"].tolist() == [2, 2] and result.summary["failed"].tolist() == [0, 0]
    text = format_markdown([result], "cmd")
    assert "## NAB (3 files, 1 of them unreadable; AUC, VUS and range F1 over the 1 with anomalous and normal points to score)" in text
    assert "- cat/bad.csv: not read, in no detector's figures (value at row 3 is not a number: 'x')" in text


def test_rank_leaves_out_a_member_without_a_finite_training_score():
    """Five days of history: enough for STL, none for the baseline's week. Its quantiles were the
    placeholder 0, so "rank" mapped every later positive baseline score to 1: a member absent from
    the training means that set the threshold counted in every later one (76 alerts for STL's 53)."""
    rng = np.random.default_rng(1)
    index = pd.date_range("2024-01-01", periods=24 * 30, freq="h")
    x = rng.poisson(20 + 10 * np.sin(np.arange(len(index)) * 2 * np.pi / 24), size=(8, len(index))).astype(float)
    panel = Panel(x, pd.Index(list("abcdefgh"), name="ctx"), index)
    history, new = panel.time_slice(end=index[24 * 5 - 1]), panel.time_slice(start=index[24 * 5])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        both = EnsembleDetector(combine="rank").fit(history)
        stl_only = EnsembleDetector(detectors=["stl"], combine="rank").fit(history)
    assert not np.isfinite(both.members_[0].fit_score(history).to_numpy()).any()
    assert np.isnan(both.member_quantiles_[0]).all()
    np.testing.assert_array_equal(both.score(new).to_numpy(), stl_only.score(new).to_numpy())


def test_peak_takes_a_second_peak_of_rounding_noise_for_none():
    """Quiet contexts (zeros and a dozen isolated 1-3s): z-normalised distances between spikes of
    different heights are 1e-16, not 0, and as second peaks they made ratios (and the calibrated
    threshold) near 1e15, so no real event could alert. The training maximum stands in, as for 0."""
    rng = np.random.default_rng(0)
    index = pd.date_range("2024-01-01", periods=24 * 21, freq="h")
    x = rng.poisson(30 + 10 * np.sin(np.arange(len(index)) * 2 * np.pi / 24), size=(10, len(index))).astype(float)
    for row in range(6):
        x[row] = 0
        x[row, rng.choice(len(index), 12, replace=False)] = rng.integers(1, 4, size=12)
    panel = Panel(x, pd.Index([f"c{k}" for k in range(10)], name="ctx"), index)
    history, new = panel.time_slice(end=index[24 * 14 - 1]), panel.time_slice(start=index[24 * 14])
    members = [{"name": "mp", "window": 12}, {"name": "mp", "window": 24}]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det = EnsembleDetector(detectors=members, combine="peak", peak_separation=12).fit(history)
    assert det.global_threshold_ < 10
    assert np.nanmax(det.score(new).to_numpy()) < 10


def test_blocks_longer_than_the_training_part_are_refused_not_fitted_on_test_points():
    """max_points=2 averaged 600-point blocks for a 500-point training part: the one training block
    rounded up reached into the test part (the anomaly with it) and the rest went unscored."""
    record = _synthetic_record()
    with pytest.raises(ValueError, match="longer than the training part"):
        score_series(record, "baseline", max_points=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one training block: the baseline cannot calibrate (it says so)
        assert score_series(record, "baseline", max_points=3).factor == 400  # 400 <= 500: one training block


def test_nab_windows_and_timestamps_with_and_without_a_zone_are_a_value_error():
    from tsanomaly import metrics

    stamps = pd.date_range("2020-01-01", periods=20, freq="h", tz="UTC")
    with pytest.raises(ValueError, match="both have a time zone or both have none"):
        metrics.nab_file(np.zeros(20), [("2020-01-01 10:00", "2020-01-01 13:00")], timestamps=stamps)
