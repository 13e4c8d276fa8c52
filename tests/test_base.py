"""BaseDetector's shared machinery: the flag rule, the too-short-history warning, loading damaged
model files, and the ``scores`` argument of ``alerts``.

Detector-independent behaviour is checked with ``_Echo``, a detector whose score is the value
itself, so every threshold comparison is visible by hand.
"""
from __future__ import annotations

import io
import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tsanomaly
from tsanomaly import CalibrationWarning, Panel, RollingZScoreDetector
from tsanomaly.base import BaseDetector
from tsanomaly.detectors.matrix_profile import MatrixProfileDetector


class _Echo(BaseDetector):
    """Scores each point by its value: the threshold comparison is the only logic left."""

    def __init__(self, threshold="quantile", contamination=0.001, per_context=False, device="cpu"):
        self.threshold = threshold
        self.contamination = contamination
        self.per_context = per_context
        self.device = device

    def _fit(self, values, panel):
        return np.array(values, dtype=np.float64)

    def _score(self, values, panel, rows):
        return np.array(values, dtype=np.float64)


def _hourly(values, start="2024-03-01", contexts=None) -> Panel:
    values = np.asarray(values, dtype=np.float64)
    contexts = contexts if contexts is not None else [f"c{k}" for k in range(values.shape[0])]
    index = pd.date_range(start, periods=values.shape[1], freq="1h", name="ts")
    return Panel(values, pd.Index(contexts, name="country"), index)


def _no_calibration_warning(record) -> bool:
    return not [w for w in record if issubclass(w.category, CalibrationWarning)]


# ---------------------------------------------------------------------- the flag rule: score > threshold
@pytest.mark.parametrize("constant", [0.0, 7.0])
def test_a_constant_history_does_not_alert_on_the_same_constant(constant):
    # A country that always has 0 events calibrates a threshold of 0 (all its training scores
    # are 0); another 0 is no anomaly.
    det = RollingZScoreDetector(window=5, seasonal_period=24).fit(_hourly(np.full((3, 24 * 14), constant)))
    assert det.global_threshold_ == 0.0
    new = _hourly(np.full((3, 48), constant), start="2024-03-15")
    assert not det.predict(new).to_numpy().any()
    assert len(det.alerts(new)) == 0
    # A real burst on top of the constant still alerts.
    burst = np.full((3, 48), constant)
    burst[1, 30] = constant + 50
    table = det.alerts(_hourly(burst, start="2024-03-15"))
    assert table["country"].tolist() == ["c1"]
    assert (table["peak_score"] > table["threshold"]).all()


def test_a_score_equal_to_a_fixed_threshold_does_not_alert_and_one_above_does():
    det = _Echo(threshold=2.0).fit(np.zeros((2, 10)))
    new = np.array([[1.0, 2.0, 2.0, 1.0], [2.0, 2.5, 2.0, np.nan]])
    flags = det.predict(new).to_numpy()
    np.testing.assert_array_equal(flags, [[False, False, False, False], [False, True, False, False]])
    table = det.alerts(new)
    assert len(table) == 1
    assert table.loc[0, ["context", "n_points", "peak_score", "threshold"]].tolist() == [1, 1, 2.5, 2.0]


def test_a_per_context_fallback_threshold_follows_the_same_rule():
    # per_context=True: context "b" has no finite training score, so it gets the global
    # threshold (the quantile of every context's scores), and equality there does not alert.
    history = np.vstack([np.arange(100.0), np.full(100, np.nan)])
    with pytest.warns(RuntimeWarning, match=r"gave 1 of 2 contexts the global threshold"):
        det = _Echo(per_context=True, contamination=0.01).fit(history)
    assert det.threshold_[1] == det.global_threshold_
    assert det.threshold_[0] == pytest.approx(np.quantile(np.arange(100.0), 0.99))
    g = det.global_threshold_
    flags = det.predict(np.array([[0.0, 0.0], [g, g + 1.0]])).to_numpy()
    np.testing.assert_array_equal(flags, [[False, False], [False, True]])


def test_the_evaluation_flags_follow_the_same_rule():
    # score_series flags "the same as predict": a constant count series never alerts.
    from tsanomaly.datasets import LabelledSeries
    from tsanomaly.evaluation import score_series

    n, train_end = 1200, 600
    labels = np.zeros(n, dtype=bool)
    record = LabelledSeries(
        "flat", Panel.from_array(np.zeros((1, n)), contexts=["flat"]), labels, [], train_end, np.arange(n), []
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a flat series has no period to estimate
        result = score_series(record, "baseline")
    assert result.threshold == 0.0
    assert not result.flags.any()


# ---------------------------------------------------------------------- too little history
def test_matrix_profile_on_too_short_a_history_warns_that_nothing_can_alert():
    history = _hourly(np.random.default_rng(0).poisson(20, (2, 144)))
    det = MatrixProfileDetector()
    with pytest.warns(CalibrationWarning, match=r"MatrixProfileDetector.*no training score was finite") as record:
        det.fit(history)
    assert det.global_threshold_ == np.inf
    message = str(record[0].message)
    assert "144 time steps" in message and "longer history" in message and "shorter window" in message
    assert record[0].filename == __file__  # points at the caller's fit, not inside tsanomaly


def test_baseline_defaults_on_six_days_warn_and_fit_score_warns_too():
    history = _hourly(np.random.default_rng(1).poisson(20, (2, 24 * 6)))
    with pytest.warns(CalibrationWarning, match="RollingZScoreDetector"):
        RollingZScoreDetector().fit(history)
    with pytest.warns(CalibrationWarning, match="nothing can alert"):
        RollingZScoreDetector().fit_score(history)


def test_the_warning_comes_only_when_nothing_can_alert():
    rng = np.random.default_rng(2)
    with pytest.warns(CalibrationWarning, match="RollingZScoreDetector"):
        RollingZScoreDetector().fit(_hourly(rng.poisson(20, (2, 24 * 6))))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        RollingZScoreDetector().fit(_hourly(rng.poisson(20, (2, 24 * 14))))
        MatrixProfileDetector(window=12).fit(_hourly(rng.poisson(20, (2, 24 * 14))))
        # One context without a single finite score is no reason to warn: it falls back to
        # the global threshold, which is finite.
        _Echo(per_context=True).fit(np.vstack([np.arange(100.0), np.full(100, np.nan)]))
        # Nor a fixed threshold: it needs no training score.
        _Echo(threshold=3.0).fit(np.full((1, 5), np.nan))
    assert _no_calibration_warning(record)


def test_calibration_warning_is_public():
    assert "CalibrationWarning" in tsanomaly.__all__
    assert issubclass(CalibrationWarning, UserWarning)


# ---------------------------------------------------------------------- damaged model files
@pytest.fixture
def saved(tmp_path):
    """(path, model.json as a dict, arrays.npz bytes) of a saved, fitted baseline."""
    det = RollingZScoreDetector(window=5, seasonal_period=None).fit(np.random.default_rng(3).normal(size=(3, 60)))
    path = tmp_path / "model.tsa"
    det.save(path)
    with zipfile.ZipFile(path) as archive:
        return path, json.loads(archive.read("model.json")), archive.read("arrays.npz")


def _write(path, meta=None, arrays=None, raw_meta=None):
    with zipfile.ZipFile(path, "w") as archive:
        if meta is not None or raw_meta is not None:
            archive.writestr("model.json", raw_meta if raw_meta is not None else json.dumps(meta))
        if arrays is not None:
            archive.writestr("arrays.npz", arrays)
    return path


def _load_error(path) -> str:
    with pytest.raises(ValueError) as info:
        tsanomaly.load(path)
    message = str(info.value)
    assert str(path) in message
    return message


def test_loading_a_file_that_is_no_zip_is_a_value_error(tmp_path):
    path = tmp_path / "junk.tsa"
    path.write_bytes(b"this is not a model")
    assert "not a tsanomaly model file" in _load_error(path)


def test_loading_a_zip_without_the_model_members_is_a_value_error(tmp_path, saved):
    _, meta, _ = saved
    message = _load_error(_write(tmp_path / "no_arrays.tsa", meta=meta))
    assert "not a tsanomaly model file" in message and "arrays.npz" in message


@pytest.mark.parametrize(
    "raw, expected",
    [("[1, 2, 3]", "holds a JSON list, not an object"), ("{not json", "not valid JSON"), ('"text"', "JSON str")],
)
def test_model_json_that_is_no_object_is_a_value_error(tmp_path, saved, raw, expected):
    _, _, arrays = saved
    message = _load_error(_write(tmp_path / "bad.tsa", raw_meta=raw, arrays=arrays))
    assert "not a tsanomaly model file" in message and expected in message


def test_an_unknown_parameter_is_a_value_error_that_suggests_another_version(tmp_path, saved):
    path, meta, arrays = saved
    assert isinstance(tsanomaly.load(path), RollingZScoreDetector)  # the intact file loads
    meta["params"]["bogus"] = 1
    message = _load_error(_write(tmp_path / "newer.tsa", meta=meta, arrays=arrays))
    assert "unknown parameter 'bogus' for RollingZScoreDetector (saved by another version?)" in message


@pytest.mark.parametrize(
    "payload",
    [b"garbage", b"", pytest.param("object", id="object-array"), pytest.param("npy", id="bare-npy")],
)
def test_damaged_arrays_are_a_value_error_without_pickle_advice(tmp_path, saved, payload):
    _, meta, _ = saved
    buffer = io.BytesIO()
    if payload == "object":
        np.savez(buffer, threshold_=np.array([{"a": 1}], dtype=object))  # needs pickle to read
        payload = buffer.getvalue()
    elif payload == "npy":
        np.save(buffer, np.arange(3.0))
        payload = buffer.getvalue()
    message = _load_error(_write(tmp_path / "arrays.tsa", meta=meta, arrays=payload))
    assert "arrays.npz is damaged or not a NumPy .npz archive" in message
    assert "never hold pickled data" in message


def test_a_state_entry_pointing_at_a_missing_array_is_a_value_error(tmp_path, saved):
    _, meta, arrays = saved
    meta["state"]["threshold_"]["key"] = "nowhere"
    message = _load_error(_write(tmp_path / "missing.tsa", meta=meta, arrays=arrays))
    assert "'threshold_'" in message and "'nowhere'" in message and "arrays.npz lacks" in message


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda m: m.update(params=[1, 2]), id="params-list"),
        pytest.param(lambda m: m.update(state="x"), id="state-string"),
        pytest.param(lambda m: m["state"].update(threshold_={"kind": "pickle"}), id="unknown-kind"),
        pytest.param(lambda m: m["state"].update(threshold_=[1]), id="entry-list"),
        pytest.param(lambda m: m["state"].pop("threshold_"), id="state-missing"),
        pytest.param(lambda m: m["state"]["contexts_"].update(levels=[{"key": 3}]), id="index-level"),
        pytest.param(lambda m: m.update({"class": ["a"]}), id="class-list"),
        pytest.param(lambda m: m["state"]["n_fit_times_"].update(value=None), id="n_fit_times-null"),
        pytest.param(lambda m: m["state"]["fit_end_"].update(value="yesterday"), id="fit_end-text"),
        pytest.param(lambda m: m["state"]["global_threshold_"].update(value="high"), id="global-threshold-text"),
    ],
)
def test_a_malformed_model_json_is_a_value_error(tmp_path, saved, damage):
    _, meta, arrays = saved
    damage(meta)
    message = _load_error(_write(tmp_path / "malformed.tsa", meta=meta, arrays=arrays))
    assert "damaged" in message or "unknown detector class" in message



# ---------------------------------------------------------------------- alerts(panel, scores=...)
@pytest.fixture
def fitted():
    rng = np.random.default_rng(4)
    history = _hourly(rng.normal(size=(3, 24 * 10)))
    new_values = rng.normal(size=(3, 48))
    new_values[2, 10] = 40.0
    det = RollingZScoreDetector(window=5, seasonal_period=None).fit(history)
    return det, _hourly(new_values, start="2024-03-11")


def test_alerts_accept_a_scores_array_of_the_panels_shape(fitted):
    det, new = fitted
    expected = det.alerts(new)
    assert len(expected)
    pd.testing.assert_frame_equal(det.alerts(new, scores=det.score(new).to_numpy()), expected)
    pd.testing.assert_frame_equal(det.alerts(new, scores=det.score(new)), expected)


def test_alerts_refuse_scores_with_fewer_contexts(fitted):
    det, new = fitted
    with pytest.raises(ValueError, match="scores has 2 contexts, the panel 3"):
        det.alerts(new, scores=det.score(new.take([0, 1])))


def test_alerts_refuse_scores_of_contexts_in_another_order(fitted):
    det, new = fitted
    with pytest.raises(ValueError, match="context 'c2' at row 0 where the panel has 'c0'"):
        det.alerts(new, scores=det.score(new.take([2, 1, 0])))


def test_alerts_refuse_scores_of_other_times(fitted):
    det, new = fitted
    later = _hourly(new.to_numpy(), start="2024-03-12")
    with pytest.raises(ValueError, match="the panel's times"):
        det.alerts(new, scores=det.score(later))


@pytest.mark.parametrize(
    "scores, match",
    [
        (np.zeros((2, 48)), r"shape \(2, 48\), but the panel has shape \(3, 48\)"),
        (np.zeros(48), "shape"),
        (np.full((3, 48), "x"), "must be numbers"),
        ([[0.0] * 48] * 3, "Panel or an array"),
    ],
)
def test_alerts_refuse_scores_that_are_no_matching_array(fitted, scores, match):
    det, new = fitted
    with pytest.raises(ValueError, match=match):
        det.alerts(new, scores=scores)


# ---------------------------------------------------------------------- context columns named like alert columns
def _renamed(panel: Panel, names) -> Panel:
    """``panel`` with its context column(s) named ``names`` (a second column "asn" when two names)."""
    labels = list(panel.contexts)
    contexts = (pd.Index(labels, name=names[0]) if len(names) == 1
                else pd.MultiIndex.from_arrays([labels, [f"AS{k}" for k in range(len(labels))]], names=names))
    return Panel(panel.values, contexts, panel.index)


@pytest.mark.parametrize("names", [["start"], ["peak_score"], ["country", "detector"], ["expected"]])
def test_alerts_refuse_a_context_column_named_like_an_alert_column_before_scoring(fitted, names):
    # 'start' gave two 'start' columns; 'peak_score' raised "The column label 'peak_score' is not unique"
    # from the sort; 'expected' (an explanation of this detector) was overwritten by the explanation.
    det, new = fitted
    history = _renamed(_hourly(np.random.default_rng(4).normal(size=(3, 24 * 10))), names)
    det = RollingZScoreDetector(window=5, seasonal_period=None).fit(history)
    det.score = lambda *args, **kwargs: pytest.fail("scored before the names were checked")
    with pytest.raises(ValueError) as info:
        det.alerts(_renamed(new, names))
    message = str(info.value)
    clash = names[-1] if len(names) > 1 else names[0]
    assert f"context column {clash!r} has the name of a column that tsanomaly writes in the alerts" in message
    assert "rename it before building the Panel" in message


def test_alerts_of_a_frame_with_a_context_column_named_start_are_refused():
    # The reported case, through Panel.from_frame.
    index = pd.date_range("2024-03-01", periods=24 * 10, freq="1h")
    frame = pd.DataFrame({"start": np.repeat(["a", "b"], len(index)), "ts": np.tile(index, 2),
                          "n": np.random.default_rng(0).poisson(10, 2 * len(index)).astype(float)})
    panel = Panel.from_frame(frame, context="start", time="ts", value="n")
    det = RollingZScoreDetector(window=5, seasonal_period=None).fit(panel.loc[:"2024-03-08 23:00"])
    with pytest.raises(ValueError, match="context column 'start'"):
        det.alerts(panel.loc["2024-03-09 00:00":])
    renamed = Panel.from_frame(frame.rename(columns={"start": "account"}), context="account", time="ts", value="n")
    assert list(det.fit(renamed.loc[:"2024-03-08 23:00"]).alerts(renamed.loc["2024-03-09 00:00":]).columns[:2]) == [
        "account", "start"]


@pytest.mark.parametrize("make", [lambda: RollingZScoreDetector(window=5, seasonal_period=None),
                                  lambda: MatrixProfileDetector(window=6), lambda: _Echo()])
def test_alert_columns_list_every_column_alerts_write_after_the_contexts(make):
    # The names the check reserves are the names alerts() writes: a column added to alerts() and not to
    # ALERT_COLUMNS or a detector's explanation_columns would slip past the check.
    rng = np.random.default_rng(5)
    det = make().fit(_hourly(rng.normal(size=(3, 24 * 10))))
    new = _hourly(rng.normal(size=(3, 48)), start="2024-03-11")
    scores = np.full((3, 48), -1e9)  # given scores: alerts where the test wants them, whatever the detector
    scores[1, 20:23] = 1e9
    alerts = det.alerts(new, scores=scores)
    assert len(alerts) == 1
    assert list(alerts.columns) == ["country", *det.alert_columns()]
    no_alert = det.alerts(new, scores=np.full((3, 48), -1e9))  # the columns of an empty table, too
    assert len(no_alert) == 0 and list(no_alert.columns) == ["country", *det.alert_columns()]


@pytest.mark.parametrize("freq", ["W", "MS", "ME"])
def test_a_calendar_grid_of_weeks_or_months_scores_after_the_fit(freq):
    """A weekly (W-SUN) or monthly index fitted and saved fine, then every score failed inside
    pandas ("Value must be Timedelta ..., not Week"): a calendar step has no fixed duration."""
    index = pd.date_range("2019-01-01", periods=60, freq=freq)
    panel = tsanomaly.Panel(np.random.default_rng(0).poisson(100, (2, 60)).astype(float), ["a", "b"], index)
    det = tsanomaly.RollingZScoreDetector(seasonal_period=4, window=4).fit(panel.loc[: index[51]])
    assert det.steps_after_fit(panel.loc[index[52]:]) == 1 and det.steps_after_fit(panel.loc[index[55]:]) == 4
    assert np.isfinite(det.score(panel.loc[index[52]:]).values).all()
    with pytest.raises(ValueError, match="new data must start after the fitted history"):
        det.score(panel.loc[index[40]:])


@pytest.mark.parametrize("freq, start, k", [("W-SUN", "2024-01-07", 12), ("D", "2024-02-09", 50)])
def test_a_grid_of_days_or_weeks_in_a_time_zone_scores_across_daylight_saving(tmp_path, freq, start, k):
    """fit_end_ is ISO text with a fixed UTC offset (+01:00): a weekly grid in Europe/Berlin failed in
    pandas ("Start and end cannot both be tz-aware with different timezones"), and a daily one that
    crossed the switch to summer time (a 23 h day) was "not on the fitted grid"."""
    index = pd.date_range(start, periods=k + 10, freq=freq, tz="Europe/Berlin")
    assert index[k - 1].utcoffset() == pd.Timedelta("1h") and index[k + 2].utcoffset() == pd.Timedelta("2h")
    panel = tsanomaly.Panel(np.random.default_rng(0).poisson(20, (2, len(index))).astype(float), ["a", "b"], index)
    make = lambda: tsanomaly.RollingZScoreDetector(seasonal_period=1, window=4)  # noqa: E731
    det = make().fit(panel.loc[: index[k - 1]])
    det.save(tmp_path / "model.tsa")
    for model in (det, tsanomaly.load(tmp_path / "model.tsa")):
        assert [model.steps_after_fit(panel.loc[index[k + s]:]) for s in range(4)] == [1, 2, 3, 4]
        # Right after the fit: the scores of the whole series, fitted at once.
        np.testing.assert_allclose(model.score(panel.loc[index[k]:]).to_numpy(),
                                   make().fit_score(panel).to_numpy()[:, k:])
        # Two steps later, past the switch: as if those two steps had been missing.
        missing = panel.to_numpy()[:, k:].copy()
        missing[:, :2] = np.nan
        np.testing.assert_array_equal(model.score(panel.loc[index[k + 2]:]).to_numpy(),
                                      model.score(tsanomaly.Panel(missing, ["a", "b"], index[k:])).to_numpy()[:, 2:])
    off_grid = pd.date_range(index[k] + pd.Timedelta("1h"), periods=2, freq=freq)  # 01:00, not midnight
    with pytest.raises(ValueError, match="not on the fitted grid"):
        det.score(tsanomaly.Panel(np.ones((2, 2)), ["a", "b"], off_grid))


def test_a_panel_with_a_time_zone_scored_by_a_naive_fit_is_a_clear_error():
    index = pd.date_range("2024-03-01", periods=240, freq="h")
    det = tsanomaly.RollingZScoreDetector().fit(
        tsanomaly.Panel(np.random.default_rng(0).poisson(20, (2, 240)).astype(float), ["a", "b"], index))
    aware = pd.date_range(index[-1] + pd.Timedelta("1h"), periods=3, freq="h", tz="UTC")
    with pytest.raises(ValueError, match="the panel's time grid has a time zone and the fitted has none"):
        det.score(tsanomaly.Panel(np.ones((2, 3)), ["a", "b"], aware))


def test_a_boolean_panel_reaches_the_detector_as_float64():
    """Panel keeps booleans (predict's flags); fit, fit_score, score and the fit hook that
    tsanomaly.spark calls (prepare_fit) hand the detector float64, as docs/CONTRACT.md promises."""
    seen = []

    class Recorder(_Echo):
        def _fit(self, values, panel):
            seen.append(values.dtype)
            return super()._fit(values, panel)

        def _score(self, values, panel, rows):
            seen.append(values.dtype)
            return super()._score(values, panel, rows)

    index = pd.date_range("2024-03-01", periods=6, freq="1h", name="ts")
    flags = Panel(np.arange(12).reshape(2, 6) % 3 == 0, pd.Index(["a", "b"], name="country"), index)
    history, new = flags.time_slice(end=flags.index[3]), flags.time_slice(start=flags.index[4])
    assert history.values.dtype == np.bool_
    det = Recorder()
    assert det.prepare_fit(history).values.dtype == np.float64
    det.fit_score(history)
    scores = det.fit(history).score(new)
    assert seen == [np.float64] * 3
    np.testing.assert_array_equal(scores.values, new.values.astype(np.float64))


def test_text_labels_of_a_fit_match_the_same_labels_given_as_numbers():
    """A model fitted on text labels (as a job stores them: "13335") and a panel of the same labels as
    numbers (13335, or 13335.0 from a float column) compare by the jobs' rule, level by level."""
    index = pd.date_range("2024-03-01", periods=24 * 9, freq="h")
    values = np.random.default_rng(0).poisson(30, (3, len(index))).astype(float)
    text = pd.MultiIndex.from_arrays([["US", "US", "DE"], ["13335", "7", "3320"]], names=["country", "asn"])
    det = tsanomaly.RollingZScoreDetector().fit(tsanomaly.Panel(values[:, :-24], text, index[:-24]))
    same = tsanomaly.Panel(values[:, -24:], text, index[-24:])
    rows, reference = det.context_rows(same), det.score(same).to_numpy()
    for asn in ([13335, 7, 3320], [13335.0, 7.0, 3320.0], pd.Categorical([13335, 7, 3320])):
        labels = pd.MultiIndex.from_arrays([["US", "US", "DE"], asn], names=["country", "asn"])
        panel = tsanomaly.Panel(values[:, -24:], labels, index[-24:])
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            np.testing.assert_array_equal(det.context_rows(panel), rows)
            np.testing.assert_array_equal(det.score(panel).to_numpy(), reference)
    # Numbers that are not the fitted text stay unseen.
    other = tsanomaly.Panel(values[:, -24:], pd.MultiIndex.from_arrays(
        [["US", "US", "DE"], [13335.5, 8, 1]], names=["country", "asn"]), index[-24:])
    assert (det.context_rows(other) == -1).all()


def test_contexts_with_other_levels_than_the_fit_are_refused_not_all_unseen():
    """Context columns swapped (or one level for two) matched no fitted context: every score NaN,
    no alert and no warning, so an attack went unseen."""
    index = pd.date_range("2024-03-01", periods=24 * 9, freq="h")
    values = np.random.default_rng(0).poisson(30, (4, len(index))).astype(float)
    pairs = pd.MultiIndex.from_product([["US", "DE"], ["1", "2"]], names=["country", "asn"])
    det = tsanomaly.RollingZScoreDetector().fit(tsanomaly.Panel(values[:, :-24], pairs, index[:-24]))
    new = values[:, -24:]
    swapped = pairs.swaplevel()
    with pytest.raises(ValueError, match=r"levels \['asn', 'country'\] but the detector was fitted on contexts with "
                                         r"levels \['country', 'asn'\]"):
        det.score(tsanomaly.Panel(new, swapped, index[-24:]))
    with pytest.raises(ValueError, match="levels"):
        det.score(tsanomaly.Panel(new, pd.Index(["US", "DE", "x", "y"], name="country"), index[-24:]))
    unnamed = pairs.set_names([None, None])  # names unknown on one side: matched on the labels
    assert np.isfinite(det.score(tsanomaly.Panel(new, unnamed, index[-24:])).values).any()


@pytest.mark.parametrize("zone", [None, "Europe/Paris"])
def test_alerts_of_a_quiet_day_have_the_column_types_of_a_busy_one(zone):
    """Daily outputs keep one schema: times stay (zoned) timestamps when no alert is raised."""
    rng = np.random.default_rng(0)
    index = pd.date_range("2024-03-01", periods=24 * 28, freq="h", tz=zone, name="ts")
    values = rng.poisson(50, size=(2, len(index))).astype(float)
    values[1, -10] = 900
    panel = Panel(values, pd.Index(["a", "b"], name="asn"), index)
    history, new = panel.time_slice(end=index[24 * 21 - 1]), panel.time_slice(start=index[24 * 21])
    detector = RollingZScoreDetector(window=8, device="cpu").fit(history)
    busy = detector.alerts(new)
    quiet = detector.alerts(new, scores=new.with_values(np.zeros(new.shape)))
    assert len(busy) and not len(quiet)
    assert quiet.dtypes.to_dict() == busy.dtypes.to_dict()
    assert str(quiet["start"].dtype) == ("datetime64[us]" if zone is None else f"datetime64[us, {zone}]")


def _daily_detector(index, values):
    return RollingZScoreDetector(window=7, seasonal_period=None, device="cpu").fit(Panel(values, ["a"], index))


@pytest.mark.parametrize("freq", ["D", "W-SUN"])
def test_one_grid_built_two_ways_is_one_grid_for_the_detector(tmp_path, freq):
    """The same grid got another frequency string depending on how it was built: 'D' or 'W-SUN'
    (pd.infer_freq, three or more points), '24h' or '168h' (two points, and from_frame's inferred
    step), '7D'. The detector compared the strings and refused new data on the fitted grid."""
    days = pd.date_range("2024-01-07", periods=40, freq=freq, unit="ns")
    values = np.random.default_rng(0).poisson(50, (1, 40)).astype(float)
    det = _daily_detector(list(days[:38]), values[:, :38])
    expected = det.score(Panel(values[:, 38:], ["a"], days[38:])).to_numpy()  # the grid with freq set
    assert np.isfinite(expected).all()
    two_points = Panel(values[:, 38:], ["a"], list(days[38:]))
    frame = pd.DataFrame({"c": "a", "ts": days, "v": values[0]})
    from_frame = Panel.from_frame(frame.iloc[38:], "c", "ts", "v")
    assert {two_points.freq.freqstr, from_frame.freq.freqstr} != {det.freq_}  # other strings, one grid
    for new in (two_points, from_frame):
        np.testing.assert_array_equal(det.score(new).to_numpy(), expected)
    # The reverse: fitted on from_frame's step ('24h', '168h'), scored on the pandas frequency,
    # also by a model saved that way (the strings of older files).
    fitted = _daily_detector(Panel.from_frame(frame.iloc[:38], "c", "ts", "v").index, values[:, :38])
    fitted.save(tmp_path / "model.tsa")
    for model in (fitted, tsanomaly.load(tmp_path / "model.tsa")):
        np.testing.assert_array_equal(model.score(Panel(values[:, 38:], ["a"], days[38:])).to_numpy(), expected)
    # Another step is still refused.
    with pytest.raises(ValueError, match="the panel's time grid has frequency '12h'"):
        det.score(Panel(values[:, 38:], ["a"], pd.date_range(days[38], periods=2, freq="12h")))


def test_in_a_time_zone_days_are_not_a_fixed_duration_for_the_detector():
    """In a zone a day is one step of the wall clock; 24 h (or 23 h, two points across the switch to
    summer time read as a duration) is another grid: equal durations must not make them one."""
    index = pd.date_range("2024-03-01", periods=40, freq="D", tz="Europe/Berlin", unit="ns")
    values = np.random.default_rng(0).poisson(50, (1, 40)).astype(float)
    det = _daily_detector(index[:30], values[:, :30])  # up to 2024-03-30
    # Two local midnights across the switch, 23 h apart: the daily grid, one step after the fit.
    across = Panel(values[:, 30:32], ["a"], list(index[30:32]))
    assert index[31] - index[30] == pd.Timedelta("23h")
    assert across.freq == pd.offsets.Day(1) and det.steps_after_fit(across) == 1
    np.testing.assert_array_equal(det.score(across).to_numpy(), det.score(Panel(values[:, 30:32], ["a"], index[30:32])).to_numpy())
    for fixed in ("24h", "23h"):
        grid = pd.date_range(index[30], periods=2, freq=fixed)
        with pytest.raises(ValueError, match=f"the panel's time grid has frequency '{fixed}' but the detector was fitted on frequency 'D'"):
            det.score(Panel(values[:, 30:32], ["a"], grid))


# ---------------------------------------------------------------------- a detector's lifecycle in a job
def _hourly_panel(days=21, seed=0):
    rng = np.random.default_rng(seed)
    index = pd.date_range("2024-01-01", periods=24 * days, freq="h")
    shape = 1 + 0.5 * np.sin(2 * np.pi * np.arange(len(index)) / 24)
    values = rng.poisson(np.array([5, 50, 500, 5000])[:, None] * shape).astype(float)
    return Panel(values, pd.Index(["small", "mid", "big", "huge"], name="asn"), index)


def _fitted_and_next_day(make):
    """``make()`` fitted (warnings silenced) on two weeks of the hourly panel: the detector, the
    panel, the next day and the detector's scores of that day."""
    panel = _hourly_panel()
    history, day = panel.loc[:"2024-01-14 23:00"], panel.loc["2024-01-15 00:00":"2024-01-15 23:00"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det = make().fit(history)
    return det, panel, day, det.score(day).to_numpy()


@pytest.mark.parametrize("make", [
    lambda: tsanomaly.STLDetector(periods=24, device="cpu"),
    lambda: tsanomaly.EnsembleDetector(device="cpu"),
])
def test_a_failed_refit_leaves_the_detector_as_it_was(make):
    # prepare_fit set the new contexts and grid before _fit raised: the old per-context state was
    # then looked up under the new contexts' rows (17 STL alerts where the model gave 2), and an
    # ensemble kept one member of two and scored everything NaN.
    det, panel, day, expected = _fitted_and_next_day(make)
    state = dict(vars(det))
    too_short = panel.loc["2024-01-14 00:00":"2024-01-14 05:00"].take([3, 2, 1, 0])
    with pytest.raises(ValueError):
        det.fit(too_short)
    assert vars(det).keys() == state.keys() and all(vars(det)[k] is v for k, v in state.items())
    np.testing.assert_array_equal(det.score(day).to_numpy(), expected)


def test_changing_a_parameter_of_a_fitted_detector_asks_for_a_new_fit():
    # The detectors read their parameters when scoring: window=20 set after a fit with window=14
    # scored a history kept for 14 (and save() wrote the mix as a valid model).
    panel = _hourly_panel()
    history, day = panel.loc[:"2024-01-14 23:00"], panel.loc["2024-01-15 00:00":"2024-01-15 23:00"]
    det = RollingZScoreDetector(device="cpu").fit(history)
    det.set_params(window=14, device="cpu")  # the same window, and the device: the fit stands
    det.score(day)
    det.set_params(window=20)
    assert det.window == 20 and not [name for name in vars(det) if name.endswith("_")]
    with pytest.raises(tsanomaly.NotFittedError):
        det.score(day)
    np.testing.assert_array_equal(det.fit(history).score(day).to_numpy(),
                                  RollingZScoreDetector(window=20, device="cpu").fit(history).score(day).to_numpy())


@pytest.mark.parametrize("make", [
    pytest.param(lambda: RollingZScoreDetector(device="auto"), id="baseline"),
    pytest.param(lambda: tsanomaly.LSTMAutoencoderDetector(window=12, hidden=4, epochs=1, seed=0, device="auto"),
                 id="lstm"),
])
def test_a_device_set_on_a_fitted_detector_is_where_it_scores(make, gpu_visible):
    # device_ (where scoring runs) was only set by fit and load: set_params(device="cuda") on a
    # fitted detector was kept, and scoring went on on the CPU without a word.
    det, _, day, expected = _fitted_and_next_day(make)
    det.set_params(device="cpu")
    assert det.device == det.device_ == "cpu"
    np.testing.assert_array_equal(det.score(day).to_numpy(), expected)
    if not gpu_visible:
        with pytest.raises(tsanomaly.backend.GPUUnavailableError):
            det.set_params(device="cuda")
        assert det.device == det.device_ == "cpu"  # refused: left as it was


@pytest.mark.gpu
@pytest.mark.parametrize("make", [
    pytest.param(lambda: RollingZScoreDetector(device="cuda"), id="baseline"),
    pytest.param(lambda: tsanomaly.STLDetector(periods=24, device="cuda"), id="stl"),
])
def test_a_detector_fitted_on_the_gpu_scores_on_the_device_set_after(make):
    # The GPU half of the test above, which runs on the CPU (device="auto" is the CPU outside gpu
    # tests): moved to the CPU and back, the fitted state goes along and the scores stay.
    det, _, day, on_gpu = _fitted_and_next_day(make)
    det.set_params(device="cpu")
    assert det.device == det.device_ == "cpu"
    np.testing.assert_allclose(det.score(day).to_numpy(), on_gpu, rtol=1e-9, atol=1e-9, equal_nan=True)
    det.set_params(device="cuda")
    assert det.device == det.device_ == "cuda"
    np.testing.assert_allclose(det.score(day).to_numpy(), on_gpu, rtol=1e-9, atol=1e-9, equal_nan=True)


def test_a_model_fitted_on_integer_labels_scores_the_same_labels_as_text():
    # Fitted on integer ASNs (Parquet), scored with "13335" (JSON lines): every context was unseen,
    # no point scored, no alert, no warning.
    panel = _hourly_panel()
    as_ints = Panel(panel.values, pd.Index([13335, 15169, 7922, 3320], name="asn"), panel.index)
    as_text = Panel(panel.values, pd.Index(["13335", "15169", "7922", "3320"], name="asn"), panel.index)
    det = RollingZScoreDetector(device="cpu").fit(as_ints.loc[:"2024-01-14 23:00"])
    day = as_text.loc["2024-01-15 00:00":"2024-01-15 23:00"].take([2, 0])
    assert det.context_rows(day).tolist() == [2, 0]
    assert len(det.unseen_contexts(day)) == 0
    np.testing.assert_array_equal(det.score(day).to_numpy(),
                                  det.score(as_ints.loc["2024-01-15 00:00":"2024-01-15 23:00"].take([2, 0])).to_numpy())


def test_scoring_a_panel_that_does_not_follow_the_fit_warns_of_the_gap():
    # Fitted once and scored batch after batch, a job lost its scores without a word: each batch
    # after the first is preceded by steps the detector never saw (an hourly matrix profile
    # scored nothing after its first hour).
    panel = _hourly_panel()
    det = RollingZScoreDetector(device="cpu").fit(panel.loc[:"2024-01-14 23:00"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        det.score(panel.loc["2024-01-15 00:00":"2024-01-15 23:00"])  # follows the fit at once: no warning
    with pytest.warns(tsanomaly.HistoryGapWarning, match=r"starts 24 step\(s\) after .* ends at 2024-01-14T23:00"):
        det.score(panel.loc["2024-01-16 00:00":"2024-01-16 23:00"])


def test_steps_after_fit_before_fit_and_a_range_index_after_timestamps_say_what_is_wrong():
    panel = _hourly_panel()
    with pytest.raises(tsanomaly.NotFittedError):
        RollingZScoreDetector().steps_after_fit(panel)
    det = RollingZScoreDetector(device="cpu").fit(panel.loc[:"2024-01-14 23:00"])
    with pytest.raises(ValueError, match=r"has a RangeIndex \(integer positions, no timestamps\) but the detector "
                                         r"was fitted on frequency 'h'"):
        det.score(Panel(np.ones((4, 24)), panel.contexts, pd.RangeIndex(24)))


# ---------------------------------------------------------------------- update: rolling the kept state forward
def _update_panel(seed=0):
    """Five contexts of hourly counts over 16 days, one with a few missing hours after the fit."""
    rng = np.random.default_rng(seed)
    index = pd.date_range("2024-01-01", periods=24 * 16, freq="h")
    shape = 1 + 0.5 * np.sin(2 * np.pi * np.arange(len(index)) / 24)
    values = rng.poisson(np.array([5, 50, 500, 5000, 20])[:, None] * shape).astype(float)
    values[1, 24 * 14 + 10:24 * 14 + 13] = np.nan
    values[2, 24 * 14 + 30] = 3 * values[2, 24 * 14 + 30]  # a spike in the updated stretch
    return Panel(values, pd.Index(["small", "mid", "big", "huge", "few"], name="asn"), index)


N_UPDATE_FIT = 24 * 14
UPDATE_CUTS = [N_UPDATE_FIT, N_UPDATE_FIT + 7, N_UPDATE_FIT + 20, N_UPDATE_FIT + 45]

#: (detector, exact): exact means bit for bit, else within UPDATE_RTOL (see each detector's ``_update``).
UPDATE_DETECTORS = [
    pytest.param(lambda: RollingZScoreDetector(window=5, device="cpu"), True, id="baseline"),
    pytest.param(lambda: RollingZScoreDetector(window=6, seasonal_period=None, device="cpu"), True, id="baseline-plain"),
    pytest.param(lambda: RollingZScoreDetector(window=5, level_window=24 * 7, device="cpu"), True, id="baseline-level"),
    pytest.param(lambda: tsanomaly.STLDetector(periods=24, variance_window=0, device="cpu"), True, id="stl-no-windows"),
    pytest.param(lambda: tsanomaly.STLDetector(periods=24, device="cpu"), False, id="stl"),
    pytest.param(lambda: MatrixProfileDetector(window=12, history=100, device="cpu"), False, id="matrix_profile"),
    pytest.param(lambda: MatrixProfileDetector(window=12, history=100, normalize=False, difference=True, smoothing=3,
                                               device="cpu"), False, id="matrix_profile-plain"),
    pytest.param(lambda: tsanomaly.EnsembleDetector(
        detectors=[RollingZScoreDetector(window=5), tsanomaly.STLDetector(periods=24)], device="cpu"), False,
        id="ensemble"),
]
UPDATE_RTOL = 1e-12


def _fitted_for_update(make, panel):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make().fit(panel.loc[:panel.index[N_UPDATE_FIT - 1]])


def _span_of(panel, a, b):
    return panel.loc[panel.index[a]:panel.index[b - 1]]


def _fitted_on_first(make, panel, n_fit):
    """``make()`` fitted on the panel's first ``n_fit`` steps, its warnings (short histories) silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make().fit(_span_of(panel, 0, n_fit))


def _scored_then_updated(det, panel, start, stop, step=1):
    """Scores of steps ``start`` to ``stop``, each batch of ``step`` scored then passed to update (n_contexts, n)."""
    got = []
    for a in range(start, stop, step):
        batch = _span_of(panel, a, min(a + step, stop))
        got.append(det.score(batch).to_numpy())
        det.update(batch)
    return np.concatenate(got, axis=1)


def _assert_update_scores(got, expected, exact):
    assert np.isfinite(expected).sum() > 0.5 * expected.size  # the comparison is not of NaN
    if exact:
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=UPDATE_RTOL, atol=1e-12)


@pytest.mark.parametrize("make, exact", UPDATE_DETECTORS)
def test_update_after_each_scored_batch_scores_as_one_call(make, exact):
    # Fitted once and scored hour by hour, a job lost its scores (a matrix profile scored nothing
    # after its first hour): update(batch) moves the kept state on, so the next batch follows it.
    panel = _update_panel()
    det = _fitted_for_update(make, panel)
    fitted_end, fitted_times = det.fit_end_, det.n_fit_times_
    once = det.score(_span_of(panel, UPDATE_CUTS[0], UPDATE_CUTS[-1])).to_numpy()
    assert det.fit_end_ == fitted_end  # score does not move the state on
    got = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", tsanomaly.HistoryGapWarning)
        for k, (a, b) in enumerate(zip(UPDATE_CUTS[:-1], UPDATE_CUTS[1:])):
            batch = _span_of(panel, a, b)
            if k == 1:
                batch = batch.take([2, 0, 4, 1, 3])  # another order of the contexts is the same data
            got.append(det.score(batch).to_numpy()[np.argsort(det.context_rows(batch))])
            assert det.update(batch) is det
    np.testing.assert_array_equal(det.n_fit_times_, fitted_times + UPDATE_CUTS[-1] - UPDATE_CUTS[0])
    assert det.fit_end_ == panel.index[UPDATE_CUTS[-1] - 1].isoformat()
    _assert_update_scores(np.concatenate(got, axis=1), once, exact)


@pytest.mark.parametrize("make, exact", UPDATE_DETECTORS)
def test_an_update_after_a_skipped_batch_sees_the_gap_as_missing(make, exact):
    panel = _update_panel()
    a, b, c, d = UPDATE_CUTS
    det = _fitted_for_update(make, panel)
    with_gap = panel.with_values(panel.values.copy())
    with_gap.values[:, b:c] = np.nan  # the skipped batch, as score(concat) sees it
    expected = det.score(_span_of(with_gap, a, d)).to_numpy()[:, c - a:]
    det.update(_span_of(panel, a, b))
    with pytest.warns(tsanomaly.HistoryGapWarning, match="update"):
        det.update(_span_of(panel, c, c + 5))
    _assert_update_scores(det.score(_span_of(panel, c + 5, d)).to_numpy(), expected[:, 5:], exact)


@pytest.mark.parametrize("make, exact", UPDATE_DETECTORS)
def test_an_update_round_trips_through_save_and_load(tmp_path, make, exact):
    panel = _update_panel()
    a, b, c, d = UPDATE_CUTS
    det = _fitted_for_update(make, panel).update(_span_of(panel, a, b)).update(_span_of(panel, b, c))
    det.save(tmp_path / "model.tsa")
    loaded = tsanomaly.load(tmp_path / "model.tsa")
    assert (loaded.fit_end_, loaded.n_fit_times_) == (det.fit_end_, det.n_fit_times_)
    np.testing.assert_array_equal(loaded.score(_span_of(panel, c, d)).to_numpy(),
                                  det.score(_span_of(panel, c, d)).to_numpy())
    # and the loaded model goes on being updated as the saved one does
    loaded.update(_span_of(panel, c, c + 10))
    det.update(_span_of(panel, c, c + 10))
    np.testing.assert_array_equal(loaded.score(_span_of(panel, c + 10, d)).to_numpy(),
                                  det.score(_span_of(panel, c + 10, d)).to_numpy())


def test_an_update_without_some_contexts_sees_them_as_missing_and_ignores_unseen_ones():
    panel = _update_panel()
    a, b, c, _ = UPDATE_CUTS
    make = UPDATE_DETECTORS[0].values[0]
    det = _fitted_for_update(make, panel)
    missing = panel.with_values(panel.values.copy())
    missing.values[[1, 3], a:b] = np.nan
    expected = det.score(_span_of(missing, a, c)).to_numpy()[:, b - a:]
    batch = _span_of(panel, a, b).take([0, 2, 4])
    newcomer = Panel(np.ones((1, b - a)), pd.Index(["new"], name="asn"), batch.index)
    det.update(Panel(np.vstack([batch.values, newcomer.values]),
                     batch.contexts.append(newcomer.contexts), batch.index))
    np.testing.assert_array_equal(det.score(_span_of(panel, b, c)).to_numpy(), expected)
    assert list(det.contexts_) == list(panel.contexts)  # the unseen context stays unseen
    later = Panel(np.ones((1, c - b)), pd.Index(["new"], name="asn"), _span_of(panel, b, c).index)
    assert list(det.unseen_contexts(later)) == ["new"]


def test_update_refuses_an_unfitted_detector_data_before_the_fit_end_and_a_detector_without_the_hook():
    panel = _update_panel()
    a, b, _, _ = UPDATE_CUTS
    with pytest.raises(tsanomaly.NotFittedError):
        RollingZScoreDetector().update(_span_of(panel, a, b))
    det = _fitted_for_update(UPDATE_DETECTORS[0].values[0], panel)
    with pytest.raises(ValueError, match="must start after the fitted history"):
        det.update(_span_of(panel, a - 1, b))  # overlaps the fit's last hour
    det.update(_span_of(panel, a, b))
    with pytest.raises(ValueError, match="must start after the fitted history"):
        det.update(_span_of(panel, a, b))  # the same batch twice
    echo = _Echo().fit(_hourly(np.ones((2, 10))))
    with pytest.raises(NotImplementedError, match="_Echo"):
        echo.update(_hourly(np.ones((2, 3)), start="2024-03-01 10:00"))


def test_a_failed_update_leaves_the_detector_as_it_was():
    panel = _update_panel()
    a, b, c, _ = UPDATE_CUTS
    det = _fitted_for_update(lambda: tsanomaly.EnsembleDetector(
        detectors=[RollingZScoreDetector(window=5), tsanomaly.STLDetector(periods=24)], device="cpu"), panel)
    expected = det.score(_span_of(panel, a, c)).to_numpy()
    negative = _span_of(panel, a, b)
    negative = negative.with_values(-negative.values)  # STL's log transform refuses negative counts
    with pytest.raises(ValueError, match="counts"):
        det.update(negative)
    np.testing.assert_array_equal(det.score(_span_of(panel, a, c)).to_numpy(), expected)
    assert [m.fit_end_ for m in det.members_] == [det.fit_end_] * 2


def test_update_of_plain_arrays_continues_the_fitted_positions():
    rng = np.random.default_rng(3)
    x = rng.poisson(30, size=(3, 24 * 12)).astype(float)
    det = RollingZScoreDetector(window=5, device="cpu").fit(x[:, :240])
    expected = det.score(x[:, 240:]).to_numpy()
    det.update(x[:, 240:250])
    assert det.fit_end_ == 249 and det.n_fit_times_ == 250
    np.testing.assert_array_equal(det.score(x[:, 250:]).to_numpy(), expected[:, 10:])


def test_an_update_keeps_the_fitted_floor_of_a_context_back_from_a_long_silence():
    # A context silent for longer than the kept history looked like one without data at fit, and
    # the update replaced its fitted scale floor with that of a single new point, for good: later
    # scores of 5,000 where one call gave 8.
    panel = _update_panel()
    values = panel.to_numpy().copy()
    values[0, N_UPDATE_FIT:N_UPDATE_FIT + 24 * 15 // 10] = np.nan  # longer than the 5 x 24 points kept
    quiet = Panel(values, panel.contexts, panel.index)
    det = _fitted_for_update(lambda: RollingZScoreDetector(window=5, device="cpu"), quiet)
    floor = det.scale_floor_.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tsanomaly.HistoryGapWarning)
        for hour in range(N_UPDATE_FIT, len(panel.index)):
            batch = _span_of(quiet, hour, hour + 1)
            det.score(batch)
            det.update(batch)
    np.testing.assert_array_equal(det.scale_floor_, floor)


@pytest.mark.parametrize("make, n_fit, exact", [
    pytest.param(lambda: RollingZScoreDetector(window=5, device="cpu"), 80, True, id="baseline"),
    pytest.param(lambda: MatrixProfileDetector(window=12, history=100, device="cpu"), 40, False, id="matrix_profile"),
    pytest.param(lambda: MatrixProfileDetector(window=12, history=100, device="cpu"), 8, False, id="mp-shorter-than-window"),
])
def test_updates_after_a_short_fit_grow_the_history_to_the_full_look_back(make, n_fit, exact):
    # The kept history stayed at its fitted width: a model fitted on fewer points than its look-back
    # looked back only that far for good (matrix profile: 106 of 384 scores off by up to 0.06), and
    # one fitted on fewer points than its window never scored again.
    panel = _update_panel()
    det = _fitted_on_first(make, panel, n_fit)
    once = det.score(_span_of(panel, n_fit, 24 * 16)).to_numpy()
    got = _scored_then_updated(det, panel, n_fit, 24 * 16, step=10)
    assert det.history_.shape[1] == det.kept_width() > n_fit
    _assert_update_scores(got, once, exact)


@pytest.mark.parametrize("make, n_fit, exact", [
    pytest.param(lambda: RollingZScoreDetector(window=4, min_periods=2, device="cpu"), 50, True, id="baseline"),
    pytest.param(lambda: MatrixProfileDetector(window=12, history=100, device="cpu"), 40, False, id="matrix_profile"),
])
def test_a_gap_after_a_short_fit_keeps_the_history_at_its_place(make, n_fit, exact):
    # The gap before new data was capped at the kept history's width, which after a fit on fewer
    # points than the look-back is narrower: the history came nearer the new data than it is, at
    # the wrong phase (baseline: scores of 14-20 where the gap as NaN gives 0.2-0.5).
    panel = _update_panel()
    det = _fitted_on_first(make, panel, n_fit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the gap's HistoryGapWarning
        skipped = n_fit + 60
        gap_as_nan = panel.with_values(panel.values.copy())
        gap_as_nan.values[:, n_fit:skipped] = np.nan
        expected = det.score(_span_of(gap_as_nan, n_fit, 24 * 16)).to_numpy()[:, skipped - n_fit:]
        got = det.score(_span_of(panel, skipped, 24 * 16)).to_numpy()
        _assert_update_scores(got, expected, exact)
        det.update(_span_of(panel, skipped, skipped + 10))
    _assert_update_scores(det.score(_span_of(panel, skipped + 10, 24 * 16)).to_numpy(), expected[:, 10:], exact)


@pytest.mark.parametrize("difference", [False, True], ids=["values", "differences"])
def test_plain_matrix_profile_measures_a_context_fitted_without_data_in_its_own_units_after_updates(difference):
    # Its fitted unit was the placeholder 1 of a row without data: once updates gave it a past, its
    # plain distances of counts in the hundreds were read as units (median score 12 against 0.06).
    # One observed point at fit gave a unit of 1e-3 x its level (or 1 with differences): 116 hours
    # of 168 alerted.
    rng = np.random.default_rng(4)
    index = pd.date_range("2024-01-01", periods=24 * 28, freq="h")
    values = rng.poisson(200 * (1 + 0.5 * np.sin(2 * np.pi * np.arange(len(index)) / 24)), size=(4, len(index)))
    values = values.astype(float)
    values[2, : 24 * 14] = np.nan  # no data at fit
    values[3, : 24 * 14 - 1] = np.nan  # one point at fit
    panel = Panel(values, pd.Index(["a", "b", "new", "one"]), index)
    det = _fitted_on_first(lambda: MatrixProfileDetector(window=24, normalize=False, difference=difference,
                                                         device="cpu"), panel, 24 * 14)
    assert np.isnan(det.scale_[2:]).all() and np.isfinite(det.scale_[:2]).all()
    late = _scored_then_updated(det, panel, 24 * 14, 24 * 28)[:, 24 * 7:]  # once the new ones have a week of past
    seen = np.nanmedian(late[:2])
    for row in (2, 3):
        assert 0.5 * seen < np.nanmedian(late[row]) < 2 * seen


@pytest.mark.parametrize("make", [
    pytest.param(lambda: RollingZScoreDetector(window=5, device="cpu"), id="baseline"),
    pytest.param(lambda: tsanomaly.LSTMAutoencoderDetector(window=12, hidden=4, epochs=2, seed=3, device="cpu"),
                 id="lstm"),
])
def test_a_context_fitted_without_data_is_scaled_on_what_updates_bring(make):
    # Without an observation at fit, its floor stayed the placeholder of one event (baseline) or it
    # was scaled on each batch alone (LSTM): counts around 200 alerted nearly every hour of an
    # hour-by-hour loop (22 and 81 flags) where one call over the same hours flagged 1 and 0.
    rng = np.random.default_rng(1)
    n, n_fit = 24 * 14, 24 * 8
    t = np.arange(n)
    values = np.vstack([rng.poisson(200 + 150 * np.sin(2 * np.pi * t / 24)) for _ in range(4)]).astype(float)
    values[3, : n_fit + 5] = np.nan
    panel = Panel(values, pd.Index(["FR", "DE", "US", "late"]), pd.date_range("2024-01-01", periods=n, freq="h"))
    det = _fitted_on_first(make, panel, n_fit)
    once = det.score(_span_of(panel, n_fit, n)).to_numpy()
    loop = _scored_then_updated(det, panel, n_fit, n)
    np.testing.assert_allclose(loop[:3], once[:3], rtol=1e-6)  # the contexts seen at fit: as one call
    assert np.isfinite(loop[3]).sum() > 0.4 * (n - n_fit)  # scored (the baseline once 3 days of its past are kept)
    threshold = det.global_threshold_
    assert (loop[3] > threshold).sum() <= (once[3] > threshold).sum() + 2
    assert np.nanmax(loop[3]) < 1.5 * np.nanmax(once[3])


def test_a_peak_ensemble_has_no_update():
    # combine="peak" compares peaks within a scored batch: no state carried between batches makes
    # the next batch score as in one call (0.4 apart).
    panel = _update_panel()
    det = _fitted_for_update(lambda: tsanomaly.EnsembleDetector(combine="peak", peak_separation=24, device="cpu"), panel)
    with pytest.raises(ValueError, match="combine='peak' compares peaks within each scored batch and has no update"):
        det.update(_span_of(panel, N_UPDATE_FIT, N_UPDATE_FIT + 5))


# ---------------------------------------------------------------------- what the methods take as data
def _frames_and_paths(panel: Panel) -> dict:
    """The inputs NumPy would read wrongly: a wide frame lost its axes (contexts 0, 1, 2 and alerts at
    positions), a long frame of numbers became one context per row, one with text labels failed inside
    pandas, and a path reached the backend as a device name."""
    long = panel.to_frame(time="ts", value="n")
    return {
        "wide frame": long.pivot(index="country", columns="ts", values="n"),
        "long frame": long,
        "long frame of numbers": long.select_dtypes("number"),
        "series": long["n"],
        "path text": "history.parquet",
        "path bytes": b"history.parquet",
        "path": Path("history.parquet"),
    }


def test_every_method_that_takes_data_refuses_frames_and_paths_saying_what_to_pass():
    history = _hourly(np.random.default_rng(0).poisson(20, (3, 24 * 14)))
    new = _hourly(np.random.default_rng(1).poisson(20, (3, 24)), start="2024-03-15")
    fitted = RollingZScoreDetector().fit(history)
    for what, data in _frames_and_paths(history).items():
        if "path" in what:
            expected = r"not a path .*tsanomaly\.jobs\.fit_file"
        else:
            expected = r"Panel\.from_frame\(df, context=\.\.\., time=\.\.\., value=\.\.\.\)"
        for method in (RollingZScoreDetector().fit, RollingZScoreDetector().fit_score, fitted.score, fitted.update,
                       fitted.predict, fitted.alerts, fitted.unseen_contexts):
            with pytest.raises(TypeError, match=r"a tsanomaly Panel or a NumPy/CuPy array of shape "
                                                r"\(n_contexts, n_times\).*" + expected):
                method(data)
    # The wide frame's own way back to a Panel keeps both axes.
    wide = _frames_and_paths(new)["wide frame"]
    np.testing.assert_array_equal(fitted.score(Panel(wide.to_numpy(), wide.index, wide.columns)).to_numpy(),
                                  fitted.score(new).to_numpy())
    assert fitted.alerts(new)["start"].dtype.kind == "M"


@pytest.mark.parametrize("method", ["score", "update", "predict", "alerts", "unseen_contexts", "save",
                                    "fitted_without_data"])
def test_not_fitted_error_names_the_method_called(method, tmp_path):
    det = RollingZScoreDetector()
    new = _hourly(np.ones((2, 24)))
    args = {"save": (tmp_path / "m.tsa",), "fitted_without_data": ()}.get(method, (new,))
    expected = rf"This RollingZScoreDetector is not fitted yet: call fit\(history\) before {method}\(\)\.$"
    with pytest.raises(tsanomaly.NotFittedError, match=expected):
        getattr(det, method)(*args)


def test_an_ensemble_warns_that_it_ignores_its_members_threshold_settings():
    # The ensemble calibrates one threshold on its combined scores: the members' own threshold,
    # contamination and per_context were accepted and changed nothing, without a word.
    panel = _hourly_panel(days=15)
    plain = tsanomaly.EnsembleDetector(device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        reference = plain.fit_score(panel).to_numpy()
    members = [RollingZScoreDetector(threshold=99.0, per_context=True),
               tsanomaly.STLDetector(threshold="pot", contamination=0.2)]
    ensemble = tsanomaly.EnsembleDetector(detectors=members, device="cpu")
    with pytest.warns(UserWarning, match=r"ignores its members' threshold settings: RollingZScoreDetector "
                                         r"\(threshold=99\.0, per_context=True\); STLDetector \(threshold='pot', "
                                         r"contamination=0\.2\)\. .*set those on the EnsembleDetector") as record:
        scores = ensemble.fit_score(panel).to_numpy()
    assert len([w for w in record if "ignores its members" in str(w.message)]) == 1
    np.testing.assert_array_equal(scores, reference)  # the warning is all that changes
    # The baseline's contamination sets its scores' unit when it has a level window: not ignored, not named.
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        tsanomaly.EnsembleDetector(detectors=[RollingZScoreDetector(level_window=48, contamination=0.01)],
                                   device="cpu").fit(panel)
