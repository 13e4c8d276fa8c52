"""tsanomaly.spark: fit and score on Spark give the single-machine results, context by context.

The Spark tests run in local mode (``local[2]``, one session for the module) and
are skipped when PySpark or Java is missing, except under ``CI=true`` where that
is a failure. The tests of the state split/merge and of the quantile arithmetic
need no Spark.
"""
from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import warnings
import zoneinfo
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tsanomaly
from tsanomaly import BaseDetector, RollingZScoreDetector, backend
from tsanomaly import spark as tss
from tsanomaly.datasets import make_security_panel

CONTEXT = ["country", "asn"]
VALUE = "failed_logins"
# PySpark 4.3 warns that it "does not yet fully support pandas >= 3.0.0" and passes pandas 3 a
# deprecated copy= keyword; the conversions used here work (the tests below check their results).
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*pandas >= 3.0.0.*:FutureWarning"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]


# ---------------------------------------------------------------------- detectors the workers import
class FussyDetector(RollingZScoreDetector):
    """The baseline, except that fitting or updating a context whose data holds the value 4242 raises."""

    fit_is_per_context = True

    def _fit(self, values, panel):
        if (np.nan_to_num(values) == 4242).any():
            raise ValueError("4242 is not a count this detector accepts")
        return super()._fit(values, panel)

    def _update(self, values, panel, rows, steps):
        if (np.nan_to_num(values) == 4242).any():
            raise ValueError("4242 is not a count this detector accepts")
        super()._update(values, panel, rows, steps)


class GlobalScaleDetector(BaseDetector):
    """Distance to the context's median in units of one scale learnt from all contexts.

    Exercises the two-step hooks that detectors with a cross-context model
    (the LSTM autoencoder) use on Spark.
    """

    def __init__(self, threshold="quantile", contamination=0.01, per_context=False, device="cpu"):
        self.threshold = threshold
        self.contamination = contamination
        self.per_context = per_context
        self.device = device

    def _fit(self, values, panel):
        self._fit_global(values, panel)
        return self._fit_contexts(values, panel)

    def _fit_global(self, values, panel):
        self.scale_ = float(np.nanstd(values)) + 1e-9

    def _fit_contexts(self, values, panel):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            self.median_ = np.nanmedian(values, axis=1)
        return np.abs(values - self.median_[:, None]) / self.scale_

    def _score(self, values, panel, rows):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            own = np.nanmedian(values, axis=1)
        median = np.where(rows >= 0, self.median_[np.maximum(rows, 0)], own)
        return np.abs(values - median[:, None]) / self.scale_


class EchoDetector(BaseDetector):
    """Scores each value as itself: the training scores are the history, as the test writes it."""

    fit_is_per_context = True

    def __init__(self, threshold="pot", contamination=0.01, per_context=False, device="cpu"):
        self.threshold = threshold
        self.contamination = contamination
        self.per_context = per_context
        self.device = device

    def _fit(self, values, panel):
        self.last_ = values[:, -1].copy()
        return values.copy()

    def _score(self, values, panel, rows):
        return values.copy()


# ---------------------------------------------------------------------- data and references
def _frames(n_contexts=36, seed=7):
    """(history, new) long frames: 14 days of hourly failed logins, then 5 days, with missing buckets."""
    data = make_security_panel(n_contexts=n_contexts, n_days=19, seed=seed, clean_days=14, attack_rate=0.3)
    history, new = data.split("2024-01-15")
    return (history.panels[VALUE].to_frame(value=VALUE, time="ts"),
            new.panels[VALUE].to_frame(value=VALUE, time="ts"))


def _panel(frame):
    return tsanomaly.Panel.from_frame(frame, CONTEXT, "ts", VALUE)


def _in_paris(frame):
    """The panel of ``frame`` (naive UTC times) at the same instants, on a grid in a zone with daylight saving."""
    panel = _panel(frame)
    index = panel.index.tz_localize("UTC").tz_convert("Europe/Paris")
    return tsanomaly.Panel(panel.to_numpy(), panel.contexts, index)


def _assert_scores_equal_at_the_same_instants(result, expected_scores):
    """Spark's scores (naive UTC times) equal ``expected_scores`` (a Panel on a zoned grid) point for point."""
    got = _scores_of(result)
    expected = expected_scores.to_frame(value="score", time="ts", dropna=False)
    expected["ts"] = expected["ts"].dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[ns]")
    merged = expected.merge(got, on=CONTEXT + ["ts"], how="outer", suffixes=("_ref", "_spark"), indicator=True)
    assert (merged["_merge"] == "both").all() and merged["reason"].isna().all()
    assert merged["score_ref"].notna().any()
    np.testing.assert_array_equal(merged["score_spark"], merged["score_ref"])


def _spark_frame(spark, frame):
    return spark.createDataFrame(frame[CONTEXT + ["ts", VALUE]])


def _assert_fitted_equal(model, reference, rtol=0.0):
    """Per-context state and thresholds of the Spark model equal the single-machine detector's."""
    detector = model.to_detector()
    rows = detector.contexts_.get_indexer(reference.contexts_)
    assert (rows >= 0).all() and len(detector.contexts_) == len(reference.contexts_)
    assert detector.global_threshold_ == pytest.approx(reference.global_threshold_, rel=rtol, abs=0)
    for spec in model.global_state["per_context"]:
        got, expected = getattr(detector, spec["attribute"]), getattr(reference, spec["attribute"])
        if spec["key"] is not None:  # a dict of per-context arrays
            got, expected = got[spec["key"]], expected[spec["key"]]
        np.testing.assert_allclose(np.asarray(got)[rows], backend.to_numpy(expected), rtol=rtol, atol=0,
                                   equal_nan=True, err_msg=spec["column"])


def _assert_scored_equal(result, reference, new_frame, rtol=0.0):
    """Spark scores and alerts equal ``reference.score`` / ``reference.alerts`` on the same data."""
    panel = _panel(new_frame)
    expected = reference.score(panel).to_frame(value="score", time="ts", dropna=False)
    got = result.scores.toPandas()
    assert list(got.columns) == CONTEXT + ["ts", "score", "reason"]
    assert got["reason"].isna().all(), got.dropna(subset=["reason"]).head()
    got["ts"] = got["ts"].astype("datetime64[ns]")
    merged = expected.merge(got, on=CONTEXT + ["ts"], how="outer", suffixes=("_ref", "_spark"), indicator=True)
    assert (merged["_merge"] == "both").all(), merged["_merge"].value_counts()
    np.testing.assert_allclose(merged["score_spark"], merged["score_ref"], rtol=rtol, atol=0, equal_nan=True)

    expected_alerts = reference.alerts(panel)
    got_alerts = result.alerts.toPandas()
    assert list(got_alerts.columns) == list(expected_alerts.columns)
    assert len(expected_alerts) > 0, "the data should raise some alerts"
    key = CONTEXT + ["start"]
    for table in (expected_alerts, got_alerts):
        for column in table.columns:
            if table[column].dtype.kind == "M":  # Spark returns microseconds, pandas nanoseconds
                table[column] = table[column].astype("datetime64[ns]")
    expected_alerts = expected_alerts.sort_values(key, ignore_index=True)
    got_alerts = got_alerts.sort_values(key, ignore_index=True)
    pd.testing.assert_frame_equal(got_alerts, expected_alerts, check_dtype=False, rtol=max(rtol, 1e-15))


# ---------------------------------------------------------------------- no Spark needed
def test_split_merge_round_trip_scores_like_the_original():
    history, new = _frames(n_contexts=12)
    reference = RollingZScoreDetector(window=5, contamination=0.01, device="cpu").fit(_panel(history))
    global_state, rows = tss.split_state(reference)
    assert sorted(s["attribute"] for s in global_state["per_context"]) == ["history_", "scale_floor_", "threshold_"]
    assert {"freq_", "fit_end_", "global_threshold_"} <= set(global_state["state"])
    # Rows in another order and a subset: the merged detector follows its rows.
    shuffled = rows.iloc[np.random.default_rng(0).permutation(len(rows))[:9]].reset_index(drop=True)
    merged = tss.merge_state(global_state, shuffled)
    panel = _panel(new)
    expected = reference.score(panel).to_numpy()
    got = merged.score(panel).to_numpy()
    seen = merged.context_rows(panel) >= 0
    np.testing.assert_array_equal(got[seen], expected[seen])
    assert (~seen).sum() == 3


@pytest.mark.parametrize("name", ["baseline", "mp", "lstm"])
def test_merge_state_without_rows_scores_every_context_as_unseen(name):
    """No per-context row (none of the contexts to score was fitted): the merged detector scores
    them from a cold start, as the original detector scores contexts it never saw."""
    if name == "lstm":
        pytest.importorskip("torch")
    history, new = _frames(n_contexts=4)
    # short enough for a cold start within the 5 new days
    params = {"baseline": {"window": 3}, "mp": {"window": 12, "history": 48},
              "lstm": {"window": 12, "hidden": 8, "epochs": 1}}[name]
    reference = tsanomaly.make_detector(name, device="cpu", **params).fit(_panel(history))
    global_state, rows = tss.split_state(reference)
    merged = tss.merge_state(global_state, rows.iloc[:0])
    panel = _panel(new)
    assert (merged.context_rows(panel) < 0).all()
    got = merged.score(panel).to_numpy()
    # the same contexts under labels the reference never saw (with the same levels: another
    # structure is refused)
    labels = [f"new{k}" for k in range(panel.n_contexts)]
    fresh = tsanomaly.Panel(panel.to_numpy(), pd.MultiIndex.from_arrays([labels, labels], names=CONTEXT), panel.index)
    np.testing.assert_array_equal(got, reference.score(fresh).to_numpy())
    assert np.isfinite(got).any()


@pytest.mark.parametrize("n_levels", [1, 2])
def test_a_model_merged_without_rows_still_matches_no_context_after_save_and_load(tmp_path, n_levels):
    """The placeholder's label is saved as a mark, not as its text: after load, a context named
    "<no context>" is unseen at fit like any other, and scores from a cold start."""
    history, new = _frames(n_contexts=4)
    reference = tsanomaly.make_detector("baseline", device="cpu", window=3).fit(_panel(history))
    global_state, rows = tss.split_state(reference)
    if n_levels == 1:
        global_state = dict(global_state, context=["asn"])
    merged = tss.merge_state(global_state, rows.iloc[:0])
    assert merged.contexts_.nlevels == n_levels
    merged.save(tmp_path / "m.tsa")
    loaded = tsanomaly.load(tmp_path / "m.tsa")
    panel = _panel(new)
    if n_levels == 1:  # the new data's contexts with the model's one level
        panel = tsanomaly.Panel(panel.to_numpy(), pd.Index([f"AS{k}" for k in range(panel.n_contexts)], name="asn"),
                                panel.index)
    labels = ["<no context>"] + [f"new{k}" for k in range(1, panel.n_contexts)]
    text = pd.Index(labels) if n_levels == 1 else pd.MultiIndex.from_arrays([labels, labels])
    named = tsanomaly.Panel(panel.to_numpy(), text, panel.index)
    assert (loaded.context_rows(named) < 0).all() and (loaded.context_rows(panel) < 0).all()
    np.testing.assert_array_equal(loaded.score(named).to_numpy(), merged.score(panel).to_numpy())
    assert repr(loaded.contexts_[0]) == repr(merged.contexts_[0])


def test_split_state_keeps_dtypes_and_shapes():
    detector = RollingZScoreDetector(window=3, seasonal_period=None).fit(np.arange(60.0).reshape(5, 12))
    detector.extra_ = np.arange(5 * 2 * 3, dtype=np.float32).reshape(5, 2, 3)  # per-context, 3-D, float32
    detector.counts_ = np.arange(5, dtype=np.int32)
    detector.weights_ = np.ones((4, 4))  # global: first axis is not the number of contexts
    global_state, rows = tss.split_state(detector)
    merged = tss.merge_state(global_state, rows)
    assert merged.extra_.dtype == np.float32 and merged.extra_.shape == (5, 2, 3)
    np.testing.assert_array_equal(merged.extra_, detector.extra_)
    assert merged.counts_.dtype == np.int32
    np.testing.assert_array_equal(merged.weights_, detector.weights_)
    assert "weights_" in global_state["arrays"]


def test_import_tsanomaly_does_not_import_pyspark():
    code = "import sys, tsanomaly, tsanomaly.spark; assert 'pyspark' not in sys.modules, 'pyspark imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("where", ["argument", "model"])
def test_score_rejects_an_unknown_fill_before_using_spark(where):
    # A typo such as "zeros" used to act as "nan"; the check comes before any Spark call, so no
    # DataFrame or session is needed (sdf=None would fail on first use).
    data = {"time": "ts", "value": VALUE, "fill": "zeros" if where == "model" else "zero"}
    model = tss.SparkModel({"context": CONTEXT, "data": data}, state=None)
    with pytest.raises(ValueError, match="fill must be 'nan' or 'zero', got 'zeros'"):
        tss.score(None, model, fill="zeros" if where == "argument" else None)


def test_missing_pyspark_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyspark", None)
    monkeypatch.setitem(sys.modules, "pyspark.sql", None)
    with pytest.raises(ImportError, match=r'pip install "tsanomaly\[spark\]"'):
        tss._require_pyspark()


# ---------------------------------------------------------------------- Spark, local mode
@pytest.fixture(scope="module")
def spark():
    """A local[2] SparkSession; skipped without PySpark or Java, a failure under CI=true."""
    ci = os.environ.get("CI", "").lower() == "true"

    def unavailable(message):
        if ci:
            pytest.fail(f"{message} (CI=true: .ci/run installs Java and pyspark)")
        pytest.skip(message)

    try:
        from pyspark.sql import SparkSession
    except ImportError:
        unavailable('pyspark is not installed: pip install "tsanomaly[spark]"')
    java = shutil.which("java") or (os.path.join(os.environ["JAVA_HOME"], "bin", "java")
                                    if os.environ.get("JAVA_HOME") else None)
    if java is None:
        unavailable("no Java runtime (Spark 4 needs Java 17+)")
    version = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    major = re.search(r'version "(\d+)', version)
    if major is None or int(major.group(1)) < 17:
        unavailable(f"Spark 4 needs Java 17+, found: {version.splitlines()[0] if version else java}")
    # The Python workers import this module to build the test detectors above.
    tests_dir = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [tests_dir, os.environ.get("PYTHONPATH")]))
    try:
        session = (
            SparkSession.builder.master("local[2]")
            .appName("tsanomaly-tests")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", "2")
            .config("spark.default.parallelism", "2")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .config("spark.pyspark.python", sys.executable)
            .config("spark.pyspark.driver.python", sys.executable)
            .getOrCreate()
        )
    except Exception as exc:  # noqa: BLE001 - e.g. a Java older than Spark needs
        unavailable(f"Spark could not start: {exc}")
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def frames():
    return _frames()


@pytest.fixture(scope="module")
def baseline_fit(spark, frames):
    """The baseline fitted on Spark (tiny tails: contexts get re-fitted for the exact threshold) and on one machine."""
    history, _ = frames
    params = dict(window=7, contamination=0.005, device="cpu")
    model = tss.fit(_spark_frame(spark, history), RollingZScoreDetector(**params), context=CONTEXT, time="ts",
                    value=VALUE, n_shards=3, tail_size=2)
    reference = RollingZScoreDetector(**params).fit(_panel(history))
    yield model, reference
    model.unpersist()


def test_baseline_fit_and_score_equal_single_machine(spark, frames, baseline_fit):
    _, new = frames
    model, reference = baseline_fit
    assert model.global_state["fit"]["n_contexts"] == reference.contexts_.size
    assert model.global_state["fit"]["n_refitted_for_threshold"] > 0  # the exactness path ran
    _assert_fitted_equal(model, reference)
    result = tss.score(_spark_frame(spark, new), model)
    _assert_scored_equal(result, reference, new)
    result.unpersist()


def test_contexts_unseen_at_fit_are_scored_from_a_cold_start(spark, frames, baseline_fit):
    history, new = frames
    model, reference = baseline_fit
    unseen = pd.DataFrame({"country": ["ZZ", "ZZ"], "asn": ["AS1", "AS2"]})
    extra = new.drop_duplicates("ts")[["ts"]].merge(unseen, how="cross")
    extra[VALUE] = np.random.default_rng(1).poisson(30, len(extra)).astype(float)
    extra.loc[extra.index[-3:], VALUE] = 400.0  # a burst: the cold start must still see it
    new_with_unseen = pd.concat([new, extra], ignore_index=True)
    result = tss.score(_spark_frame(spark, new_with_unseen), model)
    _assert_scored_equal(result, reference, new_with_unseen)
    scores = result.scores.toPandas()
    assert scores.loc[scores["country"] == "ZZ", "score"].notna().any()
    result.unpersist()


def test_rows_in_another_order_other_shards_and_ntz_times_give_the_same_output(spark, frames, baseline_fit):
    from pyspark.sql import functions as F

    _, new = frames
    model, reference = baseline_fit
    # What a retried task sees: the same rows arriving in another order, in other partitions;
    # and the time as TIMESTAMP_NTZ (as Spark reads pandas-written Parquet), not TIMESTAMP.
    shuffled = (_spark_frame(spark, new).withColumn("ts", F.col("ts").cast("timestamp_ntz"))
                .orderBy(F.rand(2)).repartition(3))
    result = tss.score(shuffled, model, n_shards=5)
    assert dict(result.scores.dtypes)["ts"] == "timestamp_ntz"
    _assert_scored_equal(result, reference, new)
    result.unpersist()


def _other_detector(name):
    if name == "baseline-level":
        # The level window's component units are shared by all contexts: learnt once through the
        # two-step hooks (sample = every context here), per-context state in the shards.
        return lambda: RollingZScoreDetector(window=4, seasonal_period=24, level_window=24 * 7, contamination=0.01), 0.0
    if name == "stl":
        module = pytest.importorskip("tsanomaly.detectors.stl")
        return lambda: module.STLDetector(periods=24, contamination=0.01, device="cpu"), 1e-9
    if name == "mp":
        module = pytest.importorskip("tsanomaly.detectors.matrix_profile")
        return lambda: module.MatrixProfileDetector(window=12, contamination=0.1, device="cpu"), 1e-9
    pytest.importorskip("torch")
    module = pytest.importorskip("tsanomaly.detectors.lstm_ae")
    cls = module.LSTMAutoencoderDetector
    # Weights trained once (_fit_global on a sample holding all 12 contexts), per-context
    # state in the shards (_fit_contexts): bit for bit the single-machine fit (rtol 0), as
    # training runs on one thread and the CPU scoring passes are padded to one shape.
    return lambda: cls(window=12, hidden=8, epochs=2, batch_size=64, contamination=0.01, device="cpu"), 0.0


@pytest.mark.parametrize("name", ["baseline-level", "stl", "mp", "lstm"])
def test_other_detectors_fit_and_score_equal_single_machine(spark, name):
    make, rtol = _other_detector(name)
    history, new = _frames(n_contexts=12, seed=3)
    model = tss.fit(_spark_frame(spark, history), make(), context=CONTEXT, time="ts", value=VALUE)
    if name == "baseline-level":
        assert model.global_state["fit"]["mode"] == "global"
    reference = make().fit(_panel(history))
    _assert_fitted_equal(model, reference, rtol)
    result = tss.score(_spark_frame(spark, new), model)
    _assert_scored_equal(result, reference, new, rtol)
    result.unpersist()
    model.unpersist()


def test_lstm_fitted_on_one_machine_scores_on_spark_like_on_one_machine(spark):
    """The LSTM's weights travel in the global state, rebuilt once per worker by _restore."""
    pytest.importorskip("torch")
    module = pytest.importorskip("tsanomaly.detectors.lstm_ae")
    history, new = _frames(n_contexts=12, seed=3)
    reference = module.LSTMAutoencoderDetector(window=12, hidden=8, epochs=2, batch_size=64, contamination=0.05,
                                               device="cpu").fit(_panel(history))
    model = tss.from_detector(spark, reference, time="ts", value=VALUE)
    assert "weights_" in model.global_state["state"]
    assert {"center_", "scale_", "history_"} <= {s["attribute"] for s in model.global_state["per_context"]}
    result = tss.score(_spark_frame(spark, new), model)
    _assert_scored_equal(result, reference, new, rtol=1e-6)
    result.unpersist()


def test_a_global_model_is_fitted_once_through_the_hooks_and_pot_matches(spark):
    """The two-step hooks, with the POT rule: its global threshold is exact too (small tails force re-fits)."""
    history, new = _frames(n_contexts=10, seed=5)
    params = dict(threshold="pot", contamination=0.001)
    model = tss.fit(_spark_frame(spark, history), GlobalScaleDetector(**params), context=CONTEXT, time="ts",
                    value=VALUE, n_shards=3, tail_size=8)
    assert model.global_state["fit"]["mode"] == "global"
    assert model.global_state["fit"]["n_refitted_for_threshold"] > 0  # a context has 24 excesses, tails hold 8
    reference = GlobalScaleDetector(**params).fit(_panel(history))
    _assert_fitted_equal(model, reference)
    result = tss.score(_spark_frame(spark, new), model)
    _assert_scored_equal(result, reference, new)
    result.unpersist()
    model.unpersist()


def test_bad_contexts_get_a_reason_and_nan_scores_without_failing_the_job(spark):
    """Bad data and a detector that raises are isolated per context; per-context thresholds match."""
    history, new = _frames(n_contexts=14, seed=11)
    contexts = history[CONTEXT].drop_duplicates().sort_values(CONTEXT).to_numpy().tolist()
    all_nan, duplicated, infinite, short, raises, bad_at_score = (tuple(c) for c in contexts[:6])

    def rows_of(frame, context):
        return (frame["country"] == context[0]) & (frame["asn"] == context[1])

    history = history.copy()
    history.loc[rows_of(history, all_nan), VALUE] = np.nan
    history = pd.concat([history, history[rows_of(history, duplicated)].head(1)], ignore_index=True)
    history.loc[history.index[rows_of(history, infinite)][5], VALUE] = np.inf
    history = history[~rows_of(history, short) | (history["ts"] >= history["ts"].max() - pd.Timedelta("9h"))]
    history.loc[history.index[rows_of(history, raises)][7], VALUE] = 4242.0
    new = pd.concat([new, new[rows_of(new, bad_at_score)].head(1)], ignore_index=True)  # duplicate at score time

    # Per-context thresholds too: the shards calibrate them, the driver fills in the global fallback.
    params = dict(window=7, per_context=True, contamination=0.02, device="cpu")
    model = tss.fit(_spark_frame(spark, history), FussyDetector(**params), context=CONTEXT,
                    time="ts", value=VALUE, min_observations=24, n_shards=2)
    failed = model.failed().toPandas().set_index(CONTEXT)["reason"]
    assert set(failed.index) == {all_nan, duplicated, infinite, short, raises}
    assert "no finite observation" in failed[all_nan]
    assert "duplicate rows" in failed[duplicated]
    assert "infinite value" in failed[infinite]
    assert "fewer than min_observations=24" in failed[short]
    assert failed[raises].startswith("ValueError: 4242")

    # The other contexts are fitted as if the bad ones had never been there.
    good = history[~history.set_index(CONTEXT).index.isin(failed.index)]
    reference = RollingZScoreDetector(**params).fit(_panel(good))
    _assert_fitted_equal(model, reference)
    assert np.unique(reference.threshold_).size > 1  # each context has its own threshold

    result = tss.score(_spark_frame(spark, new), model)
    scores = result.scores.toPandas()
    reasons = scores.groupby(CONTEXT)["reason"].first()
    bad = set(failed.index) | {bad_at_score}
    for context in bad:
        assert scores.loc[rows_of(scores, context), "score"].isna().all(), context
        assert isinstance(reasons[context], str), context
    assert reasons[all_nan].startswith("not fitted: no finite observation")
    assert "duplicate rows" in reasons[bad_at_score]
    good_new = new[~new.set_index(CONTEXT).index.isin(bad)]
    good_scores = scores[~scores.set_index(CONTEXT).index.isin(bad)]
    expected = reference.score(_panel(good_new)).to_frame(value="score", time="ts", dropna=False)
    good_scores = good_scores.assign(ts=good_scores["ts"].astype("datetime64[ns]"))
    merged = expected.merge(good_scores, on=CONTEXT + ["ts"], suffixes=("_ref", "_spark"))
    assert len(merged) == len(expected) and merged["reason"].isna().all()
    np.testing.assert_array_equal(merged["score_spark"], merged["score_ref"])
    assert result.alerts.where(result.alerts["asn"].isin([c[1] for c in bad])).isEmpty()
    result.unpersist()
    model.unpersist()


def test_model_round_trips_through_parquet(spark, baseline_fit, tmp_path):
    model, reference = baseline_fit
    model.save(str(tmp_path / "model"))
    assert list((tmp_path / "model" / "state").glob("*.parquet"))
    loaded = tss.load_model(spark, str(tmp_path / "model"))
    assert loaded.global_state == model.global_state
    original = model.state.toPandas().sort_values(CONTEXT, ignore_index=True)
    read_back = loaded.state.toPandas().sort_values(CONTEXT, ignore_index=True)
    assert list(read_back.columns) == list(original.columns)
    for column in original.columns:
        if isinstance(original[column].iloc[0], np.ndarray):  # array<double> columns
            np.testing.assert_array_equal(np.stack(read_back[column]), np.stack(original[column]))
        else:
            pd.testing.assert_series_equal(read_back[column], original[column], check_dtype=False)
    _assert_fitted_equal(loaded, reference)  # score() reads the same rows through merge_state


def test_detector_fitted_on_one_machine_scores_on_spark(spark, frames, baseline_fit):
    _, new = frames
    _, reference = baseline_fit
    model = tss.from_detector(spark, reference, time="ts", value=VALUE)
    result = tss.score(_spark_frame(spark, new), model)
    _assert_scored_equal(result, reference, new)
    result.unpersist()


def test_detector_fitted_on_a_time_zone_aware_grid_scores_on_spark_like_on_one_machine(spark):
    # The fitted end kept its zone while the shards build their grids in UTC without one: every
    # detector refused its panel, and every score was null with a reason about a "panel".
    history, new = _frames(n_contexts=3, seed=1)
    reference = RollingZScoreDetector(window=5, seasonal_period=None, device="cpu").fit(_in_paris(history))
    assert pd.Timestamp(reference.fit_end_).tz is not None
    model = tss.from_detector(spark, reference, time="ts", value=VALUE)
    assert model.global_state["state"]["fit_end_"]["value"] == "2024-01-14T23:00:00"  # midnight in Paris
    result = tss.score(_spark_frame(spark, new), model)
    _assert_scores_equal_at_the_same_instants(result, reference.score(_in_paris(new)))
    result.unpersist()


def test_from_detector_warns_of_a_zoned_grid_of_days_shipped_without_its_zone(spark):
    # One machine steps a daily grid in Europe/Paris by the wall clock (a 23-hour day at the March
    # switch); shipped without tz=, Spark steps it in UTC, so every point after the switch is off its grid.
    index = pd.date_range("2024-01-01", periods=60, freq="D", tz="Europe/Paris", name="ts")
    values = np.random.default_rng(0).poisson(30, (2, 60)).astype(float)
    contexts = pd.MultiIndex.from_tuples([("US", "a"), ("DE", "b")], names=CONTEXT)
    daily = RollingZScoreDetector(window=5, seasonal_period=None, device="cpu").fit(
        tsanomaly.Panel(values, contexts, index))
    with pytest.warns(UserWarning, match=r"without tz= its grid steps in UTC.*Pass tz="):
        tss.from_detector(spark, daily, time="ts", value=VALUE)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*steps in UTC")  # the zone given: nothing to warn of
        model = tss.from_detector(spark, daily, time="ts", value=VALUE, tz="Europe/Paris")
    assert model.global_state["data"]["tz"] == "Europe/Paris"
    assert model.global_state["state"]["fit_end_"]["value"] == daily.fit_end_ == "2024-02-29T00:00:00+01:00"
    # London's offset is 0 in winter, as UTC's: the warning came only for a non-zero offset.
    london = RollingZScoreDetector(window=5, seasonal_period=None, device="cpu").fit(
        tsanomaly.Panel(values, contexts, index.tz_convert("UTC").tz_convert("Europe/London").normalize()))
    with pytest.warns(UserWarning, match="steps in UTC"):
        tss.from_detector(spark, london, time="ts", value=VALUE)
    hourly_index = pd.date_range("2024-01-01", periods=60, freq="h", tz="Europe/Paris", name="ts")
    hourly = RollingZScoreDetector(window=5, seasonal_period=None, device="cpu").fit(
        tsanomaly.Panel(values, contexts, hourly_index))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*steps in UTC")  # hours: fixed durations everywhere
        model = tss.from_detector(spark, hourly, time="ts", value=VALUE)
        assert "tz" not in model.global_state["data"]
        # An hourly grid is of instants whatever its zone: tz= is checked, and changes nothing.
        model = tss.from_detector(spark, hourly, time="ts", value=VALUE, tz="Europe/Paris")
        assert "tz" not in model.global_state["data"]
    # A zone that is not the grid's (New York is at -05:00 at the end of the grid, not +01:00), one
    # for a grid without a zone, and a name that is no zone are refused.
    with pytest.raises(ValueError, match=r"tz='America/New_York'.*offset 1:00:00.*-1 day, 19:00:00"):
        tss.from_detector(spark, daily, time="ts", value=VALUE, tz="America/New_York")
    naive = RollingZScoreDetector(window=5, seasonal_period=None, device="cpu").fit(
        tsanomaly.Panel(values, contexts, index.tz_localize(None)))
    with pytest.raises(ValueError, match="fitted on a grid without a time zone"):
        tss.from_detector(spark, naive, time="ts", value=VALUE, tz="Europe/Paris")
    with pytest.raises(ValueError, match=r"from_detector: tz='Europe/Pariss' is not a time zone \(did you mean "
                                         r"Europe/Paris"):
        tss.from_detector(spark, daily, time="ts", value=VALUE, tz="Europe/Pariss")


def test_a_model_whose_times_were_read_in_a_zone_keeps_it_on_spark(spark):
    """A model from `tsanomaly fit --tz Europe/Paris` keeps its zone in job_columns_: shipped without tz=,
    its daily grid took the UTC steps (every point after a switch lost), and its hourly grid, of instants,
    read a TIMESTAMP_NTZ of Paris wall-clock times as UTC (hours shifted, a phantom hour at the switch,
    false alerts, no warning)."""
    index = pd.date_range("2024-01-01", periods=60, freq="D", tz="Europe/Paris", name="ts")
    values = np.random.default_rng(0).poisson(30, (2, 60)).astype(float)
    contexts = pd.MultiIndex.from_tuples([("US", "a"), ("DE", "b")], names=CONTEXT)
    job = {"context": CONTEXT, "time": "ts", "value": VALUE, "fill": "zero", "freq": None, "detector": "baseline",
           "tz": "Europe/Paris"}
    daily = RollingZScoreDetector(window=5, seasonal_period=None, device="cpu").fit(
        tsanomaly.Panel(values, contexts, index))
    daily.job_columns_ = job
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*steps in UTC")
        model = tss.from_detector(spark, daily, time="ts", value=VALUE)
    assert model.global_state["data"]["tz"] == "Europe/Paris"
    hourly = RollingZScoreDetector(window=5, seasonal_period=None, device="cpu").fit(
        tsanomaly.Panel(values, contexts, pd.date_range("2024-03-29", periods=60, freq="h", name="ts")))
    hourly.job_columns_ = job
    model = tss.from_detector(spark, hourly, time="ts", value=VALUE)
    assert "tz" not in model.global_state["data"] and model.global_state["data"]["read_tz"] == "Europe/Paris"
    new = pd.DataFrame({"country": "US", "asn": "a", "ts": pd.date_range("2024-03-31 14:00", periods=3, freq="h"),
                        VALUE: 30.0})
    functions = pyspark_functions()
    wall_clock = spark.createDataFrame(new).withColumn("ts", functions.col("ts").cast("timestamp_ntz"))
    with pytest.raises(ValueError, match=r"TIMESTAMP_NTZ.*read in Europe/Paris.*to_utc_timestamp"):
        tss.score(wall_clock, model)
    instants = wall_clock.withColumn("ts", functions.to_utc_timestamp(functions.col("ts"), "Europe/Paris"))
    result = tss.score(instants, model)  # 12:00 UTC, the step after the fitted hours
    scored = _scores_of(result)
    assert len(scored) == 3 and scored["reason"].isna().all() and scored["score"].notna().all()
    result.unpersist()
    # The same for tz= at fit on hourly instants, and given to from_detector for an hourly zoned grid:
    # those models kept no zone, and a later TIMESTAMP_NTZ of the wall clock was read as UTC.
    history = pd.DataFrame({"country": "US", "asn": "a", VALUE: 30.0 + np.arange(60) % 3,
                            "ts": pd.date_range("2024-03-29", periods=60, freq="h")})
    fitted = tss.fit(spark.createDataFrame(history), RollingZScoreDetector(window=5, seasonal_period=None),
                     context=CONTEXT, time="ts", value=VALUE, tz="Europe/Paris")
    assert fitted.global_state["data"]["read_tz"] == "Europe/Paris"
    with pytest.raises(ValueError, match=r"TIMESTAMP_NTZ.*read in Europe/Paris"):
        tss.score(wall_clock, fitted)
    zoned_hourly = RollingZScoreDetector(window=5, seasonal_period=None, device="cpu").fit(tsanomaly.Panel(
        values, contexts, pd.date_range("2024-03-29", periods=60, freq="h", tz="Europe/Paris", name="ts")))
    shipped = tss.from_detector(spark, zoned_hourly, time="ts", value=VALUE, tz="Europe/Paris")
    assert shipped.global_state["data"]["read_tz"] == "Europe/Paris"
    # tz="UTC" names UTC's steps: nothing to warn of, nor any wall clock to refuse.
    in_utc = RollingZScoreDetector(window=5, seasonal_period=None, device="cpu").fit(
        tsanomaly.Panel(values, contexts, index.tz_convert("UTC").normalize().rename("ts")))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*steps in UTC")
        model = tss.from_detector(spark, in_utc, time="ts", value=VALUE, tz="UTC")
    assert "tz" not in model.global_state["data"] and "read_tz" not in model.global_state["data"]
    with pytest.raises(ValueError, match=r"tz='UTC'.*offset 0:00:00.*give the zone the detector was fitted in"):
        tss.from_detector(spark, daily, time="ts", value=VALUE, tz="UTC")  # a Paris grid


def _paris_days(n_contexts=5, seed=11):
    """(history, b1, b2) panels of daily counts at local midnights in Europe/Paris: 120 days across the
    autumn switch (2024-10-27), then 67 days across the spring one (2025-03-30), then 15, with bursts."""
    index = pd.date_range("2024-10-01", "2025-04-20", freq="D", tz="Europe/Paris", name="ts")
    rng = np.random.default_rng(seed)
    values = rng.poisson(50, (n_contexts, len(index))) + 10 * np.sin(2 * np.pi * np.arange(len(index)) / 7)
    values[1, 150] += 200  # 2025-02-28
    values[2, 181] += 150  # 2025-03-31, the first day after the switch
    values[3, 195] += 150  # in b2
    contexts = pd.MultiIndex.from_tuples([("FR", f"AS{k}") for k in range(n_contexts)], names=CONTEXT)
    panel = tsanomaly.Panel(values, contexts, index)
    return panel.loc[:"2025-01-28"], panel.loc["2025-01-29":"2025-04-05"], panel.loc["2025-04-06":]


def _instants(panel):
    """Long frame of a zoned panel, its times as naive UTC instants (a TIMESTAMP in a UTC session)."""
    frame = panel.to_frame(value=VALUE, time="ts")
    return frame.assign(ts=frame["ts"].dt.tz_convert("UTC").dt.tz_localize(None))


def _assert_zoned_scores_equal(result, reference, panel):
    """Spark's scores and alerts (instants in UTC) equal ``reference``'s on the zoned ``panel``."""
    expected = reference.score(panel).to_frame(value="score", time="ts", dropna=False)
    expected["ts"] = expected["ts"].dt.tz_convert("UTC").dt.tz_localize(None)
    got = _scores_of(result)
    merged = expected.merge(got, on=CONTEXT + ["ts"], how="outer", suffixes=("_ref", "_spark"), indicator=True)
    assert (merged["_merge"] == "both").all(), merged["_merge"].value_counts()
    assert merged["reason"].isna().all(), merged.dropna(subset=["reason"]).head()
    assert merged["score_ref"].notna().all()
    np.testing.assert_array_equal(merged["score_spark"], merged["score_ref"])
    got_alerts = result.alerts.toPandas()
    expected_alerts = reference.alerts(panel)
    assert len(expected_alerts) > 0
    for column in ("start", "end", "peak_time"):
        expected_alerts[column] = expected_alerts[column].dt.tz_convert("UTC").dt.tz_localize(None)
        got_alerts[column] = got_alerts[column].astype("datetime64[ns]")
    key = CONTEXT + ["start"]
    pd.testing.assert_frame_equal(got_alerts.sort_values(key, ignore_index=True),
                                  expected_alerts.sort_values(key, ignore_index=True), check_dtype=False)


@pytest.mark.parametrize("name", ["baseline", "stl"])
def test_a_zoned_daily_model_scores_and_updates_on_spark_as_on_one_machine_across_both_switches(spark, name,
                                                                                                 tmp_path):
    # Shipped with its zone, a model fitted on local midnights in Paris (across the autumn switch) scores
    # and updates a batch across the spring switch as one machine does: without the zone Spark stepped
    # in UTC, so every context with a row after the switch got "not on the grid" and null scores (402 of
    # 402 points), update moved fit_end_ to 2025-04-03T23:00 UTC (a day short, every context as missing,
    # without a word), and the next batch was refused as off the grid.
    history, b1, b2 = _paris_days()
    make = {"baseline": lambda: RollingZScoreDetector(window=7, seasonal_period=7, device="cpu"),
            "stl": lambda: tsanomaly.STLDetector(periods=7, device="cpu")}[name]
    reference = make().fit(history)
    model = tss.from_detector(spark, reference, time="ts", value=VALUE, tz="Europe/Paris")
    batch = _spark_frame(spark, _instants(b1))
    result = tss.score(batch, model)
    _assert_zoned_scores_equal(result, reference, b1)
    result.unpersist()
    updated = tss.update(batch, model, n_shards=2)
    det = copy.deepcopy(reference).update(b1)
    assert updated.global_state["state"]["fit_end_"]["value"] == det.fit_end_ == "2025-04-05T00:00:00+02:00"
    assert updated.global_state["state"]["n_fit_times_"]["value"] == det.n_fit_times_
    result = tss.score(_spark_frame(spark, _instants(b2)), updated)
    _assert_zoned_scores_equal(result, det, b2)
    result.unpersist()
    # The zone is saved with the model.
    updated.save(str(tmp_path / "zoned"))
    loaded = tss.load_model(spark, str(tmp_path / "zoned"))
    assert loaded.global_state["data"]["tz"] == "Europe/Paris"
    result = tss.score(_spark_frame(spark, _instants(b2)), loaded)
    _assert_zoned_scores_equal(result, det, b2)
    result.unpersist()
    updated.unpersist()


def test_a_zoned_grid_of_weeks_fits_and_scores_on_the_wall_clock_as_on_one_machine(spark):
    # Sundays at midnight in Paris over two years (four switches), fitted on Spark with tz= and scored.
    index = pd.date_range("2023-10-01", periods=100, freq="W-SUN", tz="Europe/Paris", name="ts")
    values = np.random.default_rng(5).poisson(50, (3, 100)).astype(float)
    values[1, 80] += 300  # 2025-04-13
    contexts = pd.MultiIndex.from_tuples([("FR", f"AS{k}") for k in range(3)], names=CONTEXT)
    panel = tsanomaly.Panel(values, contexts, index)
    history, new = panel.loc[:index[69]], panel.loc[index[70]:]
    params = dict(window=6, seasonal_period=None, device="cpu")
    reference = RollingZScoreDetector(**params).fit(history)
    model = tss.fit(_spark_frame(spark, _instants(history)), RollingZScoreDetector(**params), context=CONTEXT,
                    time="ts", value=VALUE, freq="W-SUN", tz="Europe/Paris", n_shards=2)
    assert model.global_state["state"]["fit_end_"]["value"] == reference.fit_end_
    _assert_fitted_equal(model, reference)
    result = tss.score(_spark_frame(spark, _instants(new)), model)
    _assert_zoned_scores_equal(result, reference, new)
    result.unpersist()
    model.unpersist()


def test_timestamp_explanations_on_a_zoned_grid_are_instants_or_the_wall_clock_as_the_time_column(spark):
    # The matrix profile's neighbour times: instants for a TIMESTAMP column, the zone's wall clock for a
    # TIMESTAMP_NTZ one (as the grid's times in the same output).
    history, b1, _ = _paris_days()
    reference = tsanomaly.MatrixProfileDetector(window=7, history=60, min_history=20, threshold=0.45,
                                                device="cpu").fit(history)
    model = tss.from_detector(spark, reference, time="ts", value=VALUE, tz="Europe/Paris")
    expected = reference.alerts(b1)
    assert len(expected) > 0 and (expected["neighbour_time"] < pd.Timestamp("2025-03-30", tz="Europe/Paris")).any()
    functions = pyspark_functions()
    local = b1.to_frame(value=VALUE, time="ts").assign(ts=lambda f: f["ts"].dt.tz_localize(None))
    sdfs = {"utc": _spark_frame(spark, _instants(b1)),
            "wall": _spark_frame(spark, local).withColumn("ts", functions.col("ts").cast("timestamp_ntz"))}
    for clock, sdf in sdfs.items():
        result = tss.score(sdf, model)
        got = result.alerts.toPandas()
        result.unpersist()
        want = expected.copy()
        for column in ("start", "end", "peak_time", "neighbour_start", "neighbour_time"):
            stamps = want[column].dt.tz_convert("UTC") if clock == "utc" else want[column]
            want[column] = stamps.dt.tz_localize(None)
            got[column] = got[column].astype("datetime64[ns]")
        key = CONTEXT + ["start"]
        pd.testing.assert_frame_equal(got.sort_values(key, ignore_index=True), want.sort_values(key, ignore_index=True),
                                      check_dtype=False)


def test_days_shifted_off_a_grid_stepped_in_utc_are_warned_of_at_score_and_update(spark):
    # A daily model shipped without its zone steps in UTC: after the spring switch every local midnight is
    # an hour off its grid. score gave those contexts a reason, but update moved them on as missing
    # without a word (fit_end_ a day short); both now say why on the driver, and what to give.
    history, b1, _ = _paris_days()
    reference = RollingZScoreDetector(window=7, seasonal_period=7, device="cpu").fit(history)
    with pytest.warns(UserWarning, match="without tz="):
        model = tss.from_detector(spark, reference, time="ts", value=VALUE)
    batch = _spark_frame(spark, _instants(b1))
    after_switch = 5 * len(b1.loc["2025-03-31":].index)
    with pytest.warns(UserWarning, match=rf"{after_switch} row\(s\) of the new data, the earliest at 2025-03-30 "
                                         r"22:00:00, lie an hour or two off .*tz=.*score NaN"):
        tss.score(batch, model).unpersist()
    with pytest.warns(UserWarning, match=r"lie an hour or two off .*tz=.*move on as missing"):
        tss.update(batch, model).unpersist()
    # A model with its zone has nothing to warn of; nor has one row off a grid in UTC.
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*an hour or two off")
        tss.update(batch, tss.from_detector(spark, reference, time="ts", value=VALUE, tz="Europe/Paris")).unpersist()
        utc_days = history.to_frame(value=VALUE, time="ts").assign(ts=lambda f: f["ts"].dt.tz_localize(None))
        naive = RollingZScoreDetector(window=7, seasonal_period=7, device="cpu").fit(_panel(utc_days))
        new = b1.to_frame(value=VALUE, time="ts").assign(ts=lambda f: f["ts"].dt.tz_localize(None))
        new.loc[0, "ts"] += pd.Timedelta("1h")
        tss.score(_spark_frame(spark, new), tss.from_detector(spark, naive, time="ts", value=VALUE)).unpersist()


def test_a_saved_zone_is_checked_when_loaded():
    state = {"class": "c", "params": {}, "state": {}, "arrays": {}, "per_context": [], "context": ["country"],
             "data": {"tz": "Europe/Paris"}}
    tss._check_global_state(state)
    # EST is refused where a zone is first given (fit, from_detector), not in a saved model, which keeps working.
    state["data"]["tz"] = "EST"
    tss._check_global_state(state)
    # UTC under any of its names is no zone (a model never holds one), and a name is the database's.
    for bad in ("Mars/Olympus", 1, "UTC", "GMT", "Etc/Zulu", "europe/paris", "UTC+05:00"):
        state["data"]["tz"] = bad
        with pytest.raises(ValueError, match="time zone"):
            tss._check_global_state(state)


def test_a_timestamp_ntz_column_in_a_zone_is_its_wall_clock_and_refuses_a_time_a_switch_skips_or_repeats():
    """The wall-clock rule of `fit --tz` (tsanomaly.timezones.localize_wall_clock), on the driver's distinct times."""
    def context_of(pos):
        return f"AS{pos}"

    stamps = pd.Series(pd.to_datetime(["2026-03-28 12:00", "2026-03-30 12:00"]))
    instants = tss._zoned_instants(stamps, "ntz", "Europe/Paris", "ts", context_of)
    assert instants.tolist() == [pd.Timestamp("2026-03-28 11:00", tz="UTC"), pd.Timestamp("2026-03-30 10:00", tz="UTC")]
    for wall in ("2026-03-29 02:30", "2026-10-25 02:30"):  # skipped in spring, repeated in autumn
        stamps = pd.Series(pd.to_datetime(["2026-03-28 12:00", wall]))
        with pytest.raises(ValueError, match=rf"column 'ts': wall-clock time {wall}:00 for context 'AS1' is skipped "
                                             r"or repeated in Europe/Paris .* \(a TIMESTAMP\)$"):
            tss._zoned_instants(stamps, "ntz", "Europe/Paris", "ts", context_of)


def test_a_zoned_daily_grid_places_rows_by_their_wall_clock_and_marks_those_off_it(spark):
    # A TIMESTAMP_NTZ column is the zone's wall clock (times as written), scored on the same grid: the
    # output's times are that wall clock. A row at UTC midnight (01:00 or 02:00 in Paris: on the grid
    # Spark stepped in UTC before) is off the zoned grid: only its context gets the reason, named on
    # the wall clock of the zone.
    history, b1, _ = _paris_days()
    reference = RollingZScoreDetector(window=7, seasonal_period=7, device="cpu").fit(history)
    model = tss.from_detector(spark, reference, time="ts", value=VALUE, tz="Europe/Paris")
    local = b1.to_frame(value=VALUE, time="ts")
    local["ts"] = local["ts"].dt.tz_localize(None)
    stray = local[_rows_of(local, ("FR", "AS4"))].iloc[[-1]].assign(ts=lambda f: f["ts"] + pd.Timedelta("2h"))
    functions = pyspark_functions()
    sdf = _spark_frame(spark, pd.concat([local, stray], ignore_index=True)).withColumn(
        "ts", functions.col("ts").cast("timestamp_ntz"))
    result = tss.score(sdf, model)
    got = _scores_of(result)
    result.unpersist()
    marked = got[_rows_of(got, ("FR", "AS4"))]
    assert marked["score"].isna().all()
    assert (marked["reason"] == "timestamp 2025-04-05 02:00:00 (Europe/Paris) is not on the grid (step 1 days "
                                "00:00:00 from 2025-01-29 00:00:00 (Europe/Paris))").all()
    others = got[~_rows_of(got, ("FR", "AS4"))]
    expected = reference.score(b1).to_frame(value="score", time="ts", dropna=False)
    expected["ts"] = expected["ts"].dt.tz_localize(None)  # the wall clock, as the column holds it
    merged = expected.merge(others, on=CONTEXT + ["ts"], how="inner", suffixes=("_ref", "_spark"))
    assert len(merged) == len(others) == 4 * len(b1.index) and merged["reason"].isna().all()
    np.testing.assert_array_equal(merged["score_spark"], merged["score_ref"])


def test_fit_with_tz_lays_local_midnights_on_the_zones_wall_clock_as_one_machine_does(spark):
    # tss.fit had no zone: local midnights in a TIMESTAMP column fit no grid in UTC (an error that told
    # to convert them to naive wall-clock times, whose model then knew no zone).
    history, b1, _ = _paris_days()
    params = dict(window=7, seasonal_period=7, contamination=0.01, device="cpu")
    reference = RollingZScoreDetector(**params).fit(history)
    model = tss.fit(_spark_frame(spark, _instants(history)), RollingZScoreDetector(**params), context=CONTEXT,
                    time="ts", value=VALUE, tz="Europe/Paris", n_shards=2)
    assert model.global_state["data"]["tz"] == "Europe/Paris"
    assert model.global_state["state"]["fit_end_"]["value"] == reference.fit_end_
    assert model.global_state["fit"]["grid"]["n_times"] == len(history.index) == 120
    _assert_fitted_equal(model, reference)
    result = tss.score(_spark_frame(spark, _instants(b1)), model)
    _assert_zoned_scores_equal(result, reference, b1)
    result.unpersist()
    model.unpersist()
    # A TIMESTAMP_NTZ column holds the zone's wall clock: the same grid.
    functions = pyspark_functions()
    local = history.to_frame(value=VALUE, time="ts").assign(ts=lambda f: f["ts"].dt.tz_localize(None))
    ntz = _spark_frame(spark, local).withColumn("ts", functions.col("ts").cast("timestamp_ntz"))
    model = tss.fit(ntz, RollingZScoreDetector(**params), context=CONTEXT, time="ts", value=VALUE,
                    tz="Europe/Paris", n_shards=2)
    assert model.global_state["fit"]["grid"] == {"start": int(pd.Timestamp("2024-10-01").value), "step": 86400 * 10**9,
                                                 "n_times": 120, "freq": "D", "name": "ts", "tz": "Europe/Paris"}
    _assert_fitted_equal(model, reference)
    model.unpersist()
    # Hours are fixed durations in UTC: a wall clock cannot be laid on them, and an unknown zone is refused.
    hourly = local.assign(ts=pd.Timestamp("2024-10-01") + pd.to_timedelta(local.groupby(CONTEXT).cumcount(),
                                                                            unit="h"))
    with pytest.raises(ValueError, match="TIMESTAMP_NTZ.*tz='Europe/Paris'.*days and weeks only"):
        tss.fit(_spark_frame(spark, hourly).withColumn("ts", functions.col("ts").cast("timestamp_ntz")),
                RollingZScoreDetector(**params), context=CONTEXT, time="ts", value=VALUE, tz="Europe/Paris")
    with pytest.raises(ValueError, match="fit: tz='Paris' is not a time zone"):
        tss.fit(ntz, RollingZScoreDetector(**params), context=CONTEXT, time="ts", value=VALUE, tz="Paris")


def _utc_days(n_days=60, seed=5):
    """Long frame of daily counts at UTC midnights (naive), three contexts."""
    index = pd.date_range("2024-01-01", periods=n_days, freq="D", name="ts")
    values = np.random.default_rng(seed).poisson(30, (3, n_days)).astype(float)
    contexts = pd.MultiIndex.from_tuples([("US", "a"), ("US", "b"), ("DE", "c")], names=CONTEXT)
    return tsanomaly.Panel(values, contexts, index).to_frame(value=VALUE, time="ts")


def test_spark_fit_checks_tz_as_fit_tz_does(spark):
    """tss.fit took any zone pandas reads, kept as given: "utc" became a zone 'utc' in the model (the jobs
    refuse it: did you mean UTC?), "UTC+05:00" a fixed offset, and only "UTC" and "Etc/UTC" were UTC, so
    tz="GMT" laid a daily grid in a zone 'GMT'; and EST, which `fit --tz` refuses, was kept."""
    params = dict(window=7, seasonal_period=None, contamination=0.01, device="cpu")
    frame = _utc_days()
    sdf = _spark_frame(spark, frame)
    reference = RollingZScoreDetector(**params).fit(_panel(frame))
    # UTC under any of its names is no zone: the same model as without tz=.
    models = {tz: tss.fit(sdf, RollingZScoreDetector(**params), context=CONTEXT, time="ts", value=VALUE, tz=tz,
                          n_shards=2) for tz in (None, "UTC", "GMT", "Etc/Zulu", zoneinfo.ZoneInfo("Etc/UTC"))}
    for tz, model in models.items():
        assert "tz" not in model.global_state["data"] and "read_tz" not in model.global_state["data"], tz
        assert model.global_state["fit"]["grid"] == models[None].global_state["fit"]["grid"], tz
        assert "tz" not in model.global_state["fit"]["grid"], tz
        assert model.global_state["state"]["fit_end_"]["value"] == reference.fit_end_, tz
        _assert_fitted_equal(model, reference)
        model.unpersist()
    # Refused before any Spark work, with the jobs' message.
    for tz, message in [("utc", r"fit: tz='utc' is not a time zone \(did you mean UTC\? zone names are case-sensitive"),
                        ("UTC+05:00", r"fit: tz='UTC\+05:00' is not a time zone; give an IANA name"),
                        ("europe/paris", r"fit: tz='europe/paris' is not a time zone \(did you mean Europe/Paris\?"),
                        ("EST", r"fit: tz='EST' is UTC-05:00 all year.*America/New_York.*Etc/GMT\+5"),
                        (zoneinfo.ZoneInfo("HST"), r"fit: tz='HST' is UTC-10:00 all year")]:
        with pytest.raises(ValueError, match=message):
            tss.fit(sdf, RollingZScoreDetector(**params), context=CONTEXT, time="ts", value=VALUE, tz=tz)
    # A zone object is read by its key.
    history, _, _ = _paris_days()
    model = tss.fit(_spark_frame(spark, _instants(history)), RollingZScoreDetector(**params), context=CONTEXT,
                    time="ts", value=VALUE, tz=zoneinfo.ZoneInfo("Europe/Paris"), n_shards=2)
    assert model.global_state["data"]["tz"] == model.global_state["fit"]["grid"]["tz"] == "Europe/Paris"
    _assert_fitted_equal(model, RollingZScoreDetector(**params).fit(history))
    model.unpersist()


def test_spark_from_detector_checks_tz_as_fit_tz_does(spark):
    """from_detector(tz="GMT") of a daily UTC detector was refused ("fitted on a grid without a time zone"),
    as GMT was a zone and only "UTC" and "Etc/UTC" UTC; "utc" and EST were taken."""
    params = dict(window=7, seasonal_period=None, contamination=0.01, device="cpu")
    naive = RollingZScoreDetector(**params).fit(_panel(_utc_days()))
    for tz in (None, "UTC", "GMT", "Etc/Zulu"):
        model = tss.from_detector(spark, naive, time="ts", value=VALUE, tz=tz)
        assert "tz" not in model.global_state["data"] and "read_tz" not in model.global_state["data"], tz
        assert model.global_state["state"]["fit_end_"]["value"] == naive.fit_end_ == "2024-02-29T00:00:00", tz
    with pytest.raises(ValueError, match=r"from_detector: tz='utc' is not a time zone \(did you mean UTC\?"):
        tss.from_detector(spark, naive, time="ts", value=VALUE, tz="utc")
    # New York's midnights ending in winter: EST has their offset then, and would step every day of the
    # summer an hour off (refused, as at fit); the place's zone ships.
    index = pd.date_range("2024-10-01", periods=60, freq="D", tz="America/New_York", name="ts")
    values = np.random.default_rng(0).poisson(30, (2, 60)).astype(float)
    contexts = pd.MultiIndex.from_tuples([("US", "a"), ("US", "b")], names=CONTEXT)
    new_york = RollingZScoreDetector(**params).fit(tsanomaly.Panel(values, contexts, index))
    with pytest.raises(ValueError, match=r"from_detector: tz='EST' is UTC-05:00 all year.*America/New_York"):
        tss.from_detector(spark, new_york, time="ts", value=VALUE, tz="EST")
    model = tss.from_detector(spark, new_york, time="ts", value=VALUE, tz=zoneinfo.ZoneInfo("America/New_York"))
    assert model.global_state["data"]["tz"] == "America/New_York"
    # A model from `tsanomaly fit --tz EST` (saved before that was refused) still ships, with its zone.
    new_york.job_columns_ = {"context": CONTEXT, "time": "ts", "value": VALUE, "fill": "nan", "freq": "D",
                             "detector": "baseline", "tz": "EST"}
    model = tss.from_detector(spark, new_york, time="ts", value=VALUE)
    assert model.global_state["data"]["tz"] == "EST"


def test_a_grid_of_anchored_weeks_fits_and_scores_as_on_one_machine(spark):
    """freq="W-MON" was refused ("not a fixed step"), and a weekly model's step had no duration
    (pd.Timedelta of a Week) when Spark laid out the grid: a week anchored on a weekday is 7 days."""
    index = pd.date_range("2024-01-01", periods=40, freq="W-MON")
    values = np.random.default_rng(7).poisson(30, (3, 40)).astype(float)
    values[1, 35] += 300
    frame = pd.DataFrame({"country": "US", "asn": np.repeat(["a", "b", "c"], 40), "ts": np.tile(index, 3),
                          VALUE: values.ravel()})
    history, new = frame[frame["ts"] <= index[29]], frame[frame["ts"] > index[29]]
    params = dict(window=6, seasonal_period=None, device="cpu")
    model = tss.fit(_spark_frame(spark, history), RollingZScoreDetector(**params), context=CONTEXT, time="ts",
                    value=VALUE, freq="W-MON", n_shards=2)
    reference = RollingZScoreDetector(**params).fit(tsanomaly.Panel.from_frame(history, CONTEXT, "ts", VALUE,
                                                                               freq="W-MON"))
    assert model.global_state["state"]["freq_"]["value"] == reference.freq_ == "W-MON"
    scored = tss.score(_spark_frame(spark, new), model)
    got = scored.alerts.toPandas()
    scored.unpersist()
    model.unpersist()
    expected = reference.alerts(tsanomaly.Panel.from_frame(new, CONTEXT, "ts", VALUE, freq="W-MON"))
    assert len(got) == len(expected) > 0
    assert sorted(zip(got["asn"], pd.to_datetime(got["start"]))) == sorted(zip(expected["asn"], expected["start"]))
    with pytest.raises(ValueError, match="is a Monday, but freq='W' is a week anchored on Sunday"):
        tss.fit(_spark_frame(spark, history), RollingZScoreDetector(**params), context=CONTEXT, time="ts",
                value=VALUE, freq="W")


def test_deep_order_statistics_are_bracketed_exactly(spark, monkeypatch):
    rng = np.random.default_rng(3)
    tails = [np.sort(rng.standard_normal(rng.integers(0, 40)))[::-1] for _ in range(60)]
    raw = spark.createDataFrame(pd.DataFrame({"_tail": [t.tolist() for t in tails]}), "_tail array<double>")
    ordered = np.sort(np.concatenate(tails))[::-1]
    monkeypatch.setattr(tss, "_COLLECT_LIMIT", 50)  # force the approxQuantile bracket
    ranks = [len(ordered) // 2, len(ordered) // 2 + 1]
    assert tss._desc_order_statistics(raw, len(ordered), ranks) == {r: float(ordered[r]) for r in ranks}


# ---------------------------------------------------------------------- edge cases found by an audit
def test_split_state_refuses_a_detector_holding_fitted_detectors():
    # The ensemble's members keep per-context state that split_state would take as global:
    # merged rows in another order (or a shard's subset) scored wrongly, silently.
    history, _ = _frames(n_contexts=3, seed=1)
    ensemble = tsanomaly.EnsembleDetector(detectors=[RollingZScoreDetector(window=5, seasonal_period=None)],
                                          device="cpu").fit(_panel(history))
    with pytest.raises(NotImplementedError, match="EnsembleDetector holds fitted detectors"):
        tss.split_state(ensemble)
    with pytest.raises(NotImplementedError, match="EnsembleDetector holds fitted detectors"):
        tss.from_detector(None, ensemble, time="ts", value=VALUE)  # refused before Spark is used


def test_a_state_row_of_the_wrong_length_says_the_state_is_damaged():
    # A damaged Parquet row of one value was broadcast silently over the whole array.
    spec = {"column": "history_", "spark_type": "array<double>", "dtype": "<f8", "shape": [4]}
    with pytest.raises(ValueError, match="holds 1 values in a row where the model needs 4.*damaged"):
        tss._decode_column([np.zeros(4), np.zeros(1)], spec)


def _rows_of(frame, context):
    return (frame["country"] == context[0]) & (frame["asn"] == context[1])


def _scores_of(result):
    got = result.scores.toPandas()
    return got.assign(ts=got["ts"].astype("datetime64[ns]"))


def _assert_scores_equal(got, reference, new_frame, rtol=0.0):
    """Scores of every context of ``new_frame`` equal the single-machine ones (no reason, no other row)."""
    expected = reference.score(_panel(new_frame)).to_frame(value="score", time="ts", dropna=False)
    merged = expected.merge(got, on=CONTEXT + ["ts"], how="outer", suffixes=("_ref", "_spark"), indicator=True)
    assert (merged["_merge"] == "both").all(), merged["_merge"].value_counts()
    assert merged["reason"].isna().all(), merged.dropna(subset=["reason"]).head()
    np.testing.assert_allclose(merged["score_spark"], merged["score_ref"], rtol=rtol, atol=0, equal_nan=True)


def test_fitted_contexts_without_new_rows_are_left_out_in_any_shard(spark, frames, baseline_fit):
    # Shards holding fitted contexts but no new row returned untyped empty columns (Arrow refused them).
    _, new = frames
    model, reference = baseline_fit
    one = tuple(new[CONTEXT].iloc[0])
    subset = new[_rows_of(new, one)]
    result = tss.score(_spark_frame(spark, subset), model, n_shards=8)
    got = _scores_of(result)
    assert set(map(tuple, got[CONTEXT].to_numpy())) == {one}
    _assert_scores_equal(got, reference, subset)
    result.unpersist()


def test_absent_zero_scores_fitted_contexts_without_rows_as_zero_events(spark, frames, baseline_fit):
    # As tsanomaly score --absent zero: an hourly counts table omits the contexts without an event,
    # and those were not scored at all (an outage to zero never alerted).
    _, new = frames
    model, reference = baseline_fit
    silent = [tuple(c) for c in new[CONTEXT].drop_duplicates().to_numpy()[:2]]
    quiet = _rows_of(new, silent[0]) | _rows_of(new, silent[1])
    with_zeros = new.assign(**{VALUE: new[VALUE].where(~quiet, 0.0)})
    result = tss.score(_spark_frame(spark, new[~quiet]), model, fill="zero", absent="zero", n_shards=5)
    got = _scores_of(result)
    expected = reference.score(tsanomaly.Panel.from_frame(with_zeros, CONTEXT, "ts", VALUE, fill="zero"))
    expected = expected.to_frame(value="score", time="ts", dropna=False)
    merged = expected.merge(got, on=CONTEXT + ["ts"], how="outer", suffixes=("_ref", "_spark"), indicator=True)
    assert (merged["_merge"] == "both").all() and merged["reason"].isna().all()
    assert {tuple(c) for c in merged[CONTEXT].to_numpy()} == {tuple(c) for c in reference.contexts_}
    np.testing.assert_array_equal(merged["score_spark"], merged["score_ref"])
    result.unpersist()
    with pytest.raises(ValueError, match="absent='zero' reads a missing row as zero events, which needs fill='zero'"):
        tss.score(_spark_frame(spark, new), model, fill="nan", absent="zero")


@pytest.mark.parametrize("name", ["baseline", "stl", "mp"])
def test_unseen_contexts_in_a_shard_without_fitted_contexts_start_cold(spark, name):
    # The shard's detector had no per-context row, and reading row max(rows, 0) of it raised: the
    # contexts got an IndexError as their reason. Now they score as on one machine (STL gives an
    # unseen context no score there either, the baseline and the matrix profile a cold start).
    make, rtol = {
        "baseline": (lambda: RollingZScoreDetector(window=5, seasonal_period=None, device="cpu"), 0.0),
        "stl": (lambda: pytest.importorskip("tsanomaly.detectors.stl").STLDetector(periods=24, device="cpu"), 1e-9),
        "mp": (lambda: pytest.importorskip("tsanomaly.detectors.matrix_profile").MatrixProfileDetector(
            window=12, history=96, contamination=0.05, device="cpu"), 1e-9),
    }[name]
    history, new = _frames(n_contexts=4, seed=1)
    reference = make().fit(_panel(history))
    unseen = pd.DataFrame({"country": ["Z0", "Z4"], "asn": ["U0", "U4"]})
    extra = new.drop_duplicates("ts")[["ts"]].merge(unseen, how="cross")
    extra[VALUE] = np.random.default_rng(1).poisson(30, len(extra)).astype(float)
    extra.loc[extra.index[-6:], VALUE] = 400.0
    new = pd.concat([new, extra], ignore_index=True)
    n_shards = 40
    sdf = _spark_frame(spark, new)
    shard = {tuple(r[:2]): r[2] for r in sdf.select(*CONTEXT, tss._shard_key(CONTEXT, n_shards)).distinct().collect()}
    fitted_shards = {shard[tuple(c)] for c in reference.contexts_}
    assert any(shard[tuple(c)] not in fitted_shards for c in unseen.to_numpy()), "the case needs such a shard"
    result = tss.score(sdf, tss.from_detector(spark, reference, time="ts", value=VALUE), n_shards=n_shards)
    got = _scores_of(result)
    if name != "stl":
        assert got.loc[got["country"].isin(["Z0", "Z4"]), "score"].notna().any()
    _assert_scores_equal(got, reference, new, rtol)
    result.unpersist()


def test_a_shard_of_unusable_contexts_lists_them_as_failed(spark):
    # A shard whose every context is unusable returned float NaN for its array columns.
    history, _ = _frames(n_contexts=4, seed=1)
    contexts = [tuple(c) for c in history[CONTEXT].drop_duplicates().sort_values(CONTEXT).to_numpy()]
    all_null, short = contexts[0], contexts[1]
    history = history.copy()
    history.loc[_rows_of(history, all_null), VALUE] = np.nan
    history = history[~_rows_of(history, short) | (history["ts"] >= history["ts"].max() - pd.Timedelta("3h"))]
    sdf = _spark_frame(spark, history)
    n_shards = 16
    shard = {tuple(r[:2]): r[2] for r in sdf.select(*CONTEXT, tss._shard_key(CONTEXT, n_shards)).distinct().collect()}
    assert sorted(shard.values()).count(shard[all_null]) == 1, "the case needs the context alone in its shard"
    model = tss.fit(sdf, RollingZScoreDetector(window=5, seasonal_period=None, device="cpu"), context=CONTEXT,
                    time="ts", value=VALUE, min_observations=24, n_shards=n_shards)
    failed = model.failed().toPandas().set_index(CONTEXT)["reason"]
    assert set(failed.index) == {all_null, short}
    assert failed[all_null] == "no finite observation in the history"
    assert failed[short].endswith("finite observations, fewer than min_observations=24")
    assert model.global_state["fit"]["n_failed"] == 2
    good = history[~_rows_of(history, all_null) & ~_rows_of(history, short)]
    reference = RollingZScoreDetector(window=5, seasonal_period=None, device="cpu").fit(_panel(good))
    _assert_fitted_equal(model, reference)
    model.unpersist()


def test_stl_fit_with_a_context_too_short_to_decompose_matches_single_machine(spark):
    # STL kept the labels of the contexts it skips (under two cycles observed) as global state:
    # the shard holding the short context disagreed with the others, and the fit was refused as
    # "not separable by context". The skip is per-context state now; the context scores NaN.
    stl = pytest.importorskip("tsanomaly.detectors.stl")
    history, new = _frames(n_contexts=4, seed=1)
    short = tuple(history[CONTEXT].drop_duplicates().sort_values(CONTEXT).iloc[0])
    history = history[~_rows_of(history, short) | (history["ts"] >= history["ts"].max() - pd.Timedelta("9h"))]
    sdf = _spark_frame(spark, history)
    n_shards = 3
    assert sdf.select(tss._shard_key(CONTEXT, n_shards)).distinct().count() > 1, "the case needs several shards"
    with pytest.warns(UserWarning, match="1 of 4 contexts have fewer than 48 observed points"):
        reference = stl.STLDetector(periods=24, device="cpu").fit(_panel(history))
    model = tss.fit(sdf, stl.STLDetector(periods=24, device="cpu"), context=CONTEXT, time="ts", value=VALUE,
                    n_shards=n_shards)
    assert model.failed().count() == 0
    assert list(model.to_detector().skipped_contexts_) == [short] == list(reference.skipped_contexts_)
    _assert_fitted_equal(model, reference, rtol=1e-9)
    result = tss.score(_spark_frame(spark, new), model)
    got = _scores_of(result)
    assert got.loc[_rows_of(got, short), "score"].isna().all()
    _assert_scores_equal(got, reference, new, rtol=1e-9)
    result.unpersist()
    model.unpersist()


@pytest.mark.parametrize("contamination", [0.015, 0.03])
def test_pot_global_threshold_uses_calibrates_initial_quantile(spark, contamination):
    # The driver took pot_threshold's default 0.98 where calibrate lowers it to 1 - 2 x contamination:
    # another threshold at 0.015, a refusal from 0.02 on.
    history, _ = _frames(n_contexts=4, seed=1)  # 0.98 and 0.97 give other thresholds here
    params = dict(window=5, seasonal_period=None, threshold="pot", contamination=contamination, device="cpu")
    model = tss.fit(_spark_frame(spark, history), RollingZScoreDetector(**params), context=CONTEXT, time="ts",
                    value=VALUE)
    reference = RollingZScoreDetector(**params).fit(_panel(history))
    assert model.to_detector().global_threshold_ == reference.global_threshold_
    model.unpersist()


@pytest.mark.parametrize("case", ["few excesses", "ties at the initial quantile"])
def test_pot_global_threshold_counts_excesses_as_pot_does(spark, case):
    # The driver counted every score strictly above the initial quantile as an excess (pot leaves out
    # those within its tie tolerance of it) and fitted the GPD from 10 excesses on (pot needs more
    # than risk x n too): a GPD fit where pot falls back to the quantile, a threshold of -8 for
    # scores >= 0 instead of 0. 3000 scores, risk 0.01: 30 excesses at least, the 60th largest is
    # the initial quantile.
    rng = np.random.default_rng(0)
    n_contexts, n_times = 10, 300
    values = np.zeros(n_contexts * n_times)
    cells = rng.permutation(values.size)
    if case == "few excesses":  # 20 excesses: enough for min_excesses, not for the risk
        values[cells[:20]] = rng.exponential(5.0, 20) + 1
    else:  # 40 excesses, then 15 scores barely above 100 others (ties with the initial quantile)
        values[cells[:40]] = rng.exponential(5.0, 40) + 1
        values[cells[40:55]] = 2e-12
        values[cells[55:155]] = 1e-12
    frame = pd.DataFrame({"c": np.repeat([f"c{k}" for k in range(n_contexts)], n_times),
                          "ts": np.tile(pd.date_range("2024-01-01", periods=n_times, freq="h"), n_contexts),
                          "v": values})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        reference = EchoDetector().fit(tsanomaly.Panel.from_frame(frame, "c", "ts", "v"))
        model = tss.fit(spark.createDataFrame(frame), EchoDetector(), context="c", time="ts", value="v",
                        n_shards=2, tail_size=4)
    fell_back = [str(w.message) for w in caught if "POT fell back" in str(w.message)]
    assert model.to_detector().global_threshold_ == reference.global_threshold_
    if case == "few excesses":  # as on one machine, with the same warning
        assert reference.global_threshold_ == 0.0
        assert len(fell_back) == 2 and fell_back[0] == fell_back[1], fell_back
    else:
        assert reference.global_threshold_ > 1 and not fell_back
    model.unpersist()


@pytest.fixture(scope="module")
def small_history(spark):
    history, _ = _frames(n_contexts=3, seed=1)
    return _spark_frame(spark, history)


@pytest.mark.parametrize("case, match", [
    ("no value column", "column 'failed_logins' is missing"),
    ("time named score", "time column 'score' clashes with the output columns"),
    ("time named reason", "time column 'reason' clashes with the output columns"),
    ("time named Score", "time column 'Score' clashes with the output columns"),
    ({"context": []}, "context must name at least one column"),
    ({"sample_contexts": 0}, "sample_contexts must be an integer >= 1, got 0"),
    ({"min_observations": "x"}, "min_observations must be an integer >= 0, got 'x'"),
    ({"min_observations": 2.5}, "min_observations must be an integer >= 0, got 2.5"),
    ({"tail_size": -1}, "tail_size must be None or an integer >= 1, got -1"),
])
def test_fit_refuses_bad_columns_and_arguments_with_a_value_error(small_history, case, match):
    # Each used to raise a PySpark or Python error from deep inside (a key error, a TypeError on None),
    # to run with a nonsensical value (tail_size=-1, sample_contexts=0), or to give duplicate output columns.
    sdf, kwargs = small_history, dict(context=CONTEXT, time="ts", value=VALUE)
    if case == "no value column":
        sdf = sdf.drop(VALUE)
    elif isinstance(case, str):  # a time column named like an output column
        kwargs["time"] = case.split()[-1]
        sdf = sdf.withColumnRenamed("ts", kwargs["time"])
    else:
        kwargs.update(case)
    with pytest.raises(ValueError, match=re.escape(match)):
        tss.fit(sdf, RollingZScoreDetector(device="cpu"), **kwargs)


@pytest.mark.parametrize("name, need", [("baseline", 169), ("stl", 48), ("mp", 192)])
def test_fit_refuses_a_history_too_short_to_alert_before_any_shard_runs(small_history, monkeypatch, name, need):
    """Fourteen days are enough; a day and a half is not: one ValueError naming the need and the parameters,
    before the cluster fits a model that could never alert (or STL fails in every shard)."""
    from tsanomaly.detectors import make_detector

    def never(*args, **kwargs):
        raise AssertionError("a shard ran")

    monkeypatch.setattr(tss, "_fit_shard", never)
    monkeypatch.setattr(tss, "_probe_specs", never)
    functions, _ = tss._require_pyspark()
    short = small_history.where(functions.col("ts") < pd.Timestamp("2024-01-02 12:00"))
    with pytest.raises(ValueError) as info:
        tss.fit(short, make_detector(name, device="cpu"), context=CONTEXT, time="ts", value=VALUE)
    message = str(info.value)
    assert f"needs a history of at least {need} points to score anything, and this one has 36 points" in message
    assert "could never alert" in message and "(now " in message and "--param" not in message


def test_score_and_from_detector_refuse_a_time_column_named_like_an_output(spark, frames, baseline_fit):
    _, new = frames
    model, reference = baseline_fit
    renamed = _spark_frame(spark, new.head(4)).withColumnRenamed("ts", "score")
    with pytest.raises(ValueError, match="time column 'score' clashes"):
        tss.score(renamed, model, time="score")
    with pytest.raises(ValueError, match="column 'failed_logins' is missing"):
        tss.score(renamed.drop(VALUE), model, time="score")
    with pytest.raises(ValueError, match="time column 'reason' clashes"):
        tss.from_detector(spark, reference, time="reason", value=VALUE)


def test_a_context_column_named_like_an_explanation_column_is_refused(small_history, frames, baseline_fit):
    # The baseline explains its alerts with "expected" and "observed": a context column of that name
    # gave the alerts two columns of one name, and writing them failed at the end of the job.
    with pytest.raises(ValueError, match=r"context column\(s\) \['expected'\] clash .*'observed'"):
        tss.fit(small_history.withColumnRenamed("asn", "expected"), RollingZScoreDetector(device="cpu"),
                context=["country", "expected"], time="ts", value=VALUE)
    _, new = frames
    model, _ = baseline_fit
    renamed = _spark_frame(small_history.sparkSession, new.head(4)).withColumnRenamed("asn", "observed")
    with pytest.raises(ValueError, match=r"context column\(s\) \['observed'\] clash"):
        tss.score(renamed, model, context=["country", "observed"])


@pytest.mark.parametrize("asn, match", [
    ("Reason", r"context column\(s\) \['Reason'\] clash with the time column, with output columns"),
    ("Start", r"context column\(s\) \['Start'\] clash"),
    ("History_", r"context column\(s\) \['History_'\] clash with the detector's per-context state columns"),
])
def test_names_that_differ_from_the_added_columns_only_in_letter_case_are_refused(spark, small_history, frames,
                                                                                  baseline_fit, asn, match):
    # Spark takes Reason for reason unless spark.sql.caseSensitive is true: such a context column passed
    # the check and the state or the outputs failed later with AMBIGUOUS_REFERENCE (at score, save,
    # failed()). The check compares names as the session does.
    context = ["country", asn]
    with pytest.raises(ValueError, match=match) as info:
        tss.fit(small_history.withColumnRenamed("asn", asn), RollingZScoreDetector(device="cpu"), context=context,
                time="ts", value=VALUE)
    assert "regardless of letter case unless spark.sql.caseSensitive is true" in str(info.value)
    _, new = frames
    model, reference = baseline_fit
    with pytest.raises(ValueError, match=match):
        tss.from_detector(spark, reference, context=context, time="ts", value=VALUE)
    if asn != "History_":  # the state is not an output of score
        with pytest.raises(ValueError, match=match):
            tss.score(_spark_frame(spark, new.head(4)).withColumnRenamed("asn", asn), model, context=context)
    with pytest.raises(ValueError, match=r"value column 'TS' is also the time column"):
        tss.fit(small_history.withColumnRenamed(VALUE, "TS"), RollingZScoreDetector(device="cpu"), context=CONTEXT,
                time="ts", value="TS")


def test_a_case_sensitive_session_takes_names_that_differ_in_letter_case(spark):
    history, new = _frames(n_contexts=3, seed=1)
    history, new = (frame.rename(columns={"asn": "Reason"}) for frame in (history, new))
    spark.conf.set("spark.sql.caseSensitive", "true")
    try:
        model = tss.fit(spark.createDataFrame(history), RollingZScoreDetector(window=5, device="cpu"),
                        context=["country", "Reason"], time="ts", value=VALUE)
        assert model.failed().count() == 0
        result = tss.score(spark.createDataFrame(new), model)
        assert result.scores.columns == ["country", "Reason", "ts", "score", "reason"]
        assert result.scores.where(result.scores["reason"].isNotNull()).count() == 0
        result.unpersist()
        model.unpersist()
    finally:
        spark.conf.unset("spark.sql.caseSensitive")


def test_rows_without_a_context_are_counted_and_reported(spark):
    from pyspark.sql import functions as F

    # They were dropped without a word, at fit and at score.
    history, new = _frames(n_contexts=3, seed=1)
    asn = history["asn"].iloc[0]
    n_fit = int(((history["asn"] == asn) & (history["ts"].dt.hour == 3)).sum())
    n_score = int((new["asn"] == asn).sum())
    with_nulls = _spark_frame(spark, history).withColumn(
        "asn", F.when((F.col("asn") == asn) & (F.hour("ts") == 3), F.lit(None)).otherwise(F.col("asn")))
    with pytest.warns(UserWarning, match=rf"{n_fit} row\(s\) have a null context column \(null 'asn' in {n_fit}\) "
                                         r"and were left out of the fit"):
        model = tss.fit(with_nulls, RollingZScoreDetector(window=5, seasonal_period=None, device="cpu"),
                        context=CONTEXT, time="ts", value=VALUE)
    assert model.global_state["fit"]["n_rows_without_context"] == n_fit > 0
    new_nulls = _spark_frame(spark, new).withColumn(
        "country", F.when(F.col("asn") == asn, F.lit(None)).otherwise(F.col("country")))
    with pytest.warns(UserWarning, match=rf"{n_score} row\(s\) have a null context column \(null 'country' in "
                                         rf"{n_score}\) and were left out of the scoring"):
        result = tss.score(new_nulls, model)
    assert set(result.scores.toPandas()["asn"]) == set(new["asn"]) - {asn}
    result.unpersist()
    model.unpersist()


def test_context_columns_of_another_type_than_at_fit_are_refused_unless_a_wider_integer(spark, baseline_fit):
    # score cast the new labels to the fitted type silently: asn fitted as the string "13335" and scored
    # as the double 13335.0 became "13335.0", and every context was unseen (a cold start, no warning);
    # "AS13335" cast to bigint became null, and the rows were left out as without a context.
    from pyspark.sql import functions as F

    history, new = _frames(n_contexts=3, seed=1)
    codes = {asn: 13335 + k for k, asn in enumerate(sorted(set(history["asn"])))}
    history, new = (frame.assign(asn=frame["asn"].map(codes)) for frame in (history, new))
    reference = RollingZScoreDetector(window=5, seasonal_period=None, device="cpu").fit(_panel(history))
    model = tss.from_detector(spark, reference, time="ts", value=VALUE)  # asn: bigint
    sdf = _spark_frame(spark, new)
    with pytest.raises(ValueError, match=r"context column 'asn' is string in the new data but was bigint at fit.*"
                                         r"convert the column to bigint first"):
        tss.score(sdf.withColumn("asn", F.concat(F.lit("AS"), F.col("asn").cast("string"))), model)
    string_model, _ = baseline_fit  # asn: string
    with pytest.raises(ValueError, match=r"context column 'asn' is double in the new data but was string at fit"):
        tss.score(sdf.withColumn("asn", F.col("asn").cast("double")), string_model)
    # A narrower integer type keeps every label: scored as on one machine.
    result = tss.score(sdf.withColumn("asn", F.col("asn").cast("int")), model)
    _assert_scores_equal(_scores_of(result), reference, new)
    result.unpersist()
    # So do integers against text labels (a model from `tsanomaly fit` holds "13335"), as on one machine.
    text_history, text_new = (frame.assign(asn=frame["asn"].astype(str)) for frame in (history, new))
    text_reference = RollingZScoreDetector(window=5, seasonal_period=None, device="cpu").fit(_panel(text_history))
    result = tss.score(sdf, tss.from_detector(spark, text_reference, time="ts", value=VALUE))  # asn: bigint
    got = _scores_of(result)
    _assert_scores_equal(got.assign(asn=got["asn"].astype(str)), text_reference, text_new)
    result.unpersist()


def test_context_columns_with_dots_in_their_names(spark):
    history, new = _frames(n_contexts=3, seed=1)
    dotted = ["country", "as.n"]

    def renamed(frame):
        return _spark_frame(spark, frame).withColumnRenamed("asn", "as.n")

    params = dict(window=5, seasonal_period=None, device="cpu")
    model = tss.fit(renamed(history), RollingZScoreDetector(**params), context=dotted, time="ts", value=VALUE)
    assert model.failed().count() == 0
    result = tss.score(renamed(new), model)
    got = _scores_of(result).rename(columns={"as.n": "asn"})
    assert list(got.columns) == CONTEXT + ["ts", "score", "reason"]
    _assert_scores_equal(got, RollingZScoreDetector(**params).fit(_panel(history)), new)
    result.unpersist()
    model.unpersist()


def test_load_model_says_which_model_is_damaged(spark, baseline_fit, tmp_path):
    import json

    model, _ = baseline_fit
    good = tmp_path / "good"
    model.save(str(good))
    line = next((good / "global").glob("part-*")).read_text()
    state = json.loads(line)

    def damaged(name, global_text=None, edit_state=None):
        path = tmp_path / name
        shutil.copytree(good, path)
        if global_text is not None:
            next((path / "global").glob("part-*")).write_text(global_text)
            for crc in (path / "global").glob(".*.crc"):
                crc.unlink()
        if edit_state is not None:
            edit_state(path / "state")
        return str(path)

    def drop_history(folder):
        rows = pd.concat([pd.read_parquet(f) for f in folder.glob("*.parquet")])
        shutil.rmtree(folder)
        folder.mkdir()
        rows.drop(columns=["history_"]).to_parquet(folder / "part-0.parquet")

    def garble(folder):
        for f in folder.glob("*.parquet"):
            f.write_bytes(b"garbage" * 10)
        for crc in folder.glob(".*.crc"):
            crc.unlink()

    cases = {
        "missing": (str(tmp_path / "nothing-here"), "cannot read"),
        "truncated JSON": (damaged("trunc", line[: len(line) // 2]), "is not valid JSON"),
        "JSON list": (damaged("list", "[1, 2]\n"), "global state"),
        "no context": (damaged("noctx", json.dumps({k: v for k, v in state.items() if k != "context"})),
                       "lacks 'context'"),
        "bad freq": (damaged("freq", json.dumps({**state, "state": {**state["state"],
                                                                    "freq_": {"kind": "json", "value": "banana"}}})),
                     "freq_ is 'banana'"),
        "bad params": (damaged("params", json.dumps({**state, "params": {**state["params"], "window": "x"}})),
                       "window must be an integer"),
        "unknown parameter": (damaged("unknown", json.dumps({**state, "params": {**state["params"], "wndow": 3}})),
                              "unknown parameter 'wndow'"),
        "no state": (damaged("nostate", edit_state=shutil.rmtree), "cannot read"),
        "garbage state": (damaged("garble", edit_state=garble), "cannot read"),
        "state lacks a column": (damaged("dropcol", edit_state=drop_history), "lacks column(s) ['history_']"),
    }
    for case, (path, match) in cases.items():
        with pytest.raises(ValueError, match=re.escape(path) + " is not a tsanomaly Spark model or is damaged") as info:
            tss.load_model(spark, path)
        assert match in str(info.value), (case, str(info.value))


@pytest.mark.parametrize("option", [{"n_shards": 2.5}, {"n_shards": True}, {"contexts_per_shard": "100"},
                                    {"n_shards": 2, "contexts_per_shard": 0}])
def test_shard_counts_are_whole_numbers_checked_before_any_spark_work(spark, option):
    # 2.5 was taken as 2, True as 1, "100" raised TypeError after a pass over the data.
    history, new = _frames(n_contexts=3, seed=1)
    with pytest.raises(ValueError, match="n_shards|contexts_per_shard"):
        tss.fit(_spark_frame(spark, history), RollingZScoreDetector(window=5), context=CONTEXT, time="ts",
                value=VALUE, **option)


def test_a_backtick_in_a_context_name_goes_through_from_detector(spark):
    history, new = _frames(n_contexts=3, seed=1)
    renamed = {"country": "coun`try"}
    history, new = history.rename(columns=renamed), new.rename(columns=renamed)
    names = ["coun`try", "asn"]
    det = RollingZScoreDetector(window=5, contamination=0.05, device="cpu").fit(
        tsanomaly.Panel.from_frame(history, names, "ts", VALUE))
    model = tss.from_detector(spark, det, time="ts", value=VALUE)  # ParseException: the name's backtick
    scores = tss.score(spark.createDataFrame(new[names + ["ts", VALUE]]), model).scores.toPandas()
    assert list(scores.columns[:2]) == names and scores["score"].notna().any()


def test_a_model_saved_with_probed_explanation_types_scores_with_the_declared_ones(spark):
    """Models saved before the built-in detectors declared explanation_types hold what a probe read:
    the matrix profile's neighbour times as doubles (of nanoseconds) when the probe raised no alert."""
    mp = pytest.importorskip("tsanomaly.detectors.matrix_profile")
    history, new = _frames(n_contexts=4, seed=3)
    det = mp.MatrixProfileDetector(window=12, contamination=0.1, device="cpu").fit(_panel(history))
    model = tss.from_detector(spark, det, time="ts", value=VALUE)
    model.global_state["explanations"] = [["neighbour_start", "double"], ["neighbour_time", "double"]]
    alerts = tss.score(_spark_frame(spark, new), model).alerts
    assert dict(alerts.dtypes)["neighbour_start"] == "timestamp"
    assert dict(alerts.dtypes)["neighbour_time"] == "timestamp"


def test_the_global_fit_samples_contexts_with_observed_values(spark):
    """The sample for _fit_global was drawn among all contexts: an all-null one drawn into it
    shrank it, and drawn alone failed the fit inside a task (a Py4J PythonException)."""
    history, _ = _frames(n_contexts=4, seed=3)
    contexts = history[CONTEXT].drop_duplicates().sort_values(CONTEXT).to_numpy().tolist()
    blank = history.copy()
    keep = (blank["country"] == contexts[0][0]) & (blank["asn"] == contexts[0][1])
    blank.loc[~keep, VALUE] = np.nan  # one context with data, three without
    level = dict(window=4, seasonal_period=24, level_window=24 * 7, contamination=0.01)
    model = tss.fit(_spark_frame(spark, blank), RollingZScoreDetector(**level), context=CONTEXT, time="ts",
                    value=VALUE, sample_contexts=1)
    assert model.global_state["fit"]["mode"] == "global"
    model.unpersist()
    blank[VALUE] = np.nan
    with pytest.raises(ValueError, match="observed values to fit the global model on"):
        tss.fit(_spark_frame(spark, blank), RollingZScoreDetector(**level), context=CONTEXT, time="ts",
                value=VALUE, sample_contexts=1)


def test_a_global_fit_on_a_sample_without_usable_contexts_says_why_on_the_driver(spark):
    """Every context of the sample had duplicate rows: the fit raised inside a task, and the user
    read a Py4J PythonException instead of the reason."""
    history, _ = _frames(n_contexts=2, seed=3)
    doubled = pd.concat([history, history], ignore_index=True)
    level = dict(window=4, seasonal_period=24, level_window=24 * 7, contamination=0.01)
    with pytest.raises(ValueError, match=r"sample .* has usable data \(2 contexts, 2 x duplicate rows at"):
        tss.fit(_spark_frame(spark, doubled), RollingZScoreDetector(**level), context=CONTEXT, time="ts",
                value=VALUE, sample_contexts=2)


def test_a_date_column_is_told_to_become_a_timestamp_ntz(spark):
    """The hint said to_timestamp, which reads a date at midnight in the session's time zone: a
    daylight-saving switch then moves the days by an hour in UTC and the fit fails on the grid."""
    history, _ = _frames(n_contexts=2, seed=1)
    daily = history.assign(day=history["ts"].dt.normalize()).groupby(CONTEXT + ["day"], as_index=False)[VALUE].sum()
    sdf = spark.createDataFrame(daily).withColumn("day", pyspark_functions().to_date("day"))
    with pytest.raises(TypeError, match=r"cast\('timestamp_ntz'\)"):
        tss.fit(sdf, RollingZScoreDetector(window=3, seasonal_period=None), context=CONTEXT, time="day", value=VALUE)


def pyspark_functions():
    from pyspark.sql import functions

    return functions


def test_a_model_is_not_appended_to_another(spark, baseline_fit, tmp_path):
    # Spark's "append" wrote a second global line and a second row per context: load_model
    # then refused the folder as damaged, after the first model had been spoiled.
    model, _ = baseline_fit
    path = str(tmp_path / "model")
    model.save(path)
    with pytest.raises(ValueError, match="appending a model"):
        model.save(path, mode="append")
    with pytest.raises(ValueError, match="mode must be one of"):
        model.save(str(tmp_path / "other"), mode="overwite")
    assert not (tmp_path / "other").exists()
    model.save(path, mode="Overwrite")  # Spark's modes are read in any case
    assert tss.load_model(spark, path).global_state == model.global_state


def test_scoring_data_that_does_not_follow_the_fit_warns_on_the_driver(spark, frames, baseline_fit):
    # The detectors' HistoryGapWarning was raised inside the tasks, where only executor logs saw it.
    _, new = frames
    model, _ = baseline_fit
    later = new[new["ts"] >= new["ts"].min() + pd.Timedelta(hours=24)]
    with pytest.warns(tsanomaly.HistoryGapWarning, match=r"24 step\(s\) after the step that follows"):
        result = tss.score(_spark_frame(spark, later), model)
    assert result.scores.count() > 0
    result.unpersist()


@pytest.mark.parametrize("per_context", [True, False])
def test_pot_past_the_collect_limit_says_what_would_help(spark, monkeypatch, per_context):
    # With per_context=True the refusal said "use threshold='quantile' or per_context=True": the global
    # fallback threshold still needs the top of all training scores on the driver.
    history, _ = _frames(n_contexts=4, seed=1)
    monkeypatch.setattr(tss, "_COLLECT_LIMIT", 20)
    detector = RollingZScoreDetector(window=7, threshold="pot", per_context=per_context, device="cpu")
    expected = (r"per_context=True still calibrates one global threshold, the fallback .* unseen at fit.*"
                r"needs the top \d+ of all \d+ training scores on the driver, more than 20; use threshold='quantile'"
                if per_context else
                r"needs the top \d+ of all \d+ training scores .* use threshold='quantile' \(per_context=True "
                r"would not help")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # POT's fallbacks on a short history
        with pytest.raises(ValueError, match=expected):
            tss.fit(_spark_frame(spark, history), detector, context=CONTEXT, time="ts", value=VALUE, n_shards=2)


def test_local_midnights_in_a_timestamp_column_are_told_to_become_local_timestamp_ntz(spark):
    # Berlin midnights read as UTC instants lie 23 or 25 h apart across a switch: the error said
    # "pass freq=", which cannot help (the zone is missing); the hint's conversion fits.
    days = pd.date_range("2024-03-10", "2024-04-10", freq="D", tz="Europe/Berlin")
    frame = pd.DataFrame({"country": "DE", "asn": "AS1", "day": days.tz_convert("UTC").tz_localize(None),
                          VALUE: np.arange(len(days), dtype=float) % 5})
    sdf = spark.createDataFrame(frame)
    functions = pyspark_functions()
    detector = RollingZScoreDetector(window=3, seasonal_period=None, device="cpu")
    for freq in (None, "D"):
        with pytest.raises(ValueError, match=r"timestamp 2024-03-31 22:00:00 \(UTC\) for context \('DE', 'AS1'\) "
                                             r"is 0 days 01:00:00 off .* looks like midnights of a local time zone.*"
                                             r"freq= cannot help.*from_utc_timestamp"):
            tss.fit(sdf, detector, context=CONTEXT, time="day", value=VALUE, freq=freq)
    local = sdf.withColumn("day", functions.from_utc_timestamp(functions.col("day"), "Europe/Berlin")
                           .cast("timestamp_ntz"))
    model = tss.fit(local, detector, context=CONTEXT, time="day", value=VALUE)
    assert model.global_state["fit"]["grid"]["n_times"] == len(days)
    model.unpersist()
    # one mis-stamped row among UTC midnights is not a time zone: the grid's own error
    utc = frame.assign(day=pd.date_range("2024-01-01", periods=len(frame), freq="D"))
    utc.loc[5, "day"] += pd.Timedelta(minutes=20)
    with pytest.raises(ValueError) as error:
        tss.fit(spark.createDataFrame(utc), detector, context=CONTEXT, time="day", value=VALUE)
    assert "looks like midnights" not in str(error.value) and "00:20" in str(error.value)


def test_a_row_off_the_grid_or_from_the_history_marks_only_its_context(spark, frames, baseline_fit):
    # The grid started at the batch's earliest row: one row of the history (a late duplicate) or one
    # off the grid before the others failed the whole batch with a ValueError.
    history, new = frames
    model, _ = baseline_fit
    last = history[history["ts"] == history["ts"].max()]
    early, off = last.iloc[[0]], last.iloc[[1]].assign(ts=last["ts"].iloc[1] + pd.Timedelta(minutes=30))
    with pytest.warns(UserWarning, match=r"1 row\(s\) of the new data, the earliest at 2024-01-14 23:00:00, are "
                                         r"not after the fitted history"):
        result = tss.score(_spark_frame(spark, pd.concat([early, off, new])), model)
    clean = tss.score(_spark_frame(spark, new), model)
    got, expected = (r.scores.toPandas().sort_values(CONTEXT + ["ts"], ignore_index=True) for r in (result, clean))
    reasons = got.dropna(subset=["reason"]).drop_duplicates(CONTEXT).set_index(CONTEXT)["reason"]
    assert len(reasons) == 2
    assert reasons[tuple(early[CONTEXT].iloc[0])].startswith(
        "timestamp 2024-01-14 23:00:00 is not after the fitted history, which ends at 2024-01-14 23:00:00")
    assert reasons[tuple(off[CONTEXT].iloc[0])].startswith("timestamp 2024-01-14 23:30:00 is not on the grid")
    marked = got.set_index(CONTEXT).index.isin(reasons.index)
    assert got["ts"].min() == new["ts"].min() and got.loc[marked, "score"].isna().all()
    pd.testing.assert_frame_equal(got[~marked].reset_index(drop=True),
                                  expected[~expected.set_index(CONTEXT).index.isin(reasons.index)]
                                  .reset_index(drop=True))
    for r in (result, clean):
        r.unpersist()


def test_a_row_with_a_wrong_clock_does_not_stretch_every_context(spark, frames, baseline_fit):
    # One row in 2034 made every context's panel 87,000 hourly steps long, in every shard.
    _, new = frames
    model, _ = baseline_fit
    far = new.copy()
    far.loc[far.index[5], "ts"] = pd.Timestamp("2034-01-01")
    context = tuple(far.loc[far.index[5], CONTEXT])
    with pytest.raises(ValueError, match=rf"spans \d+ steps of h .* only about \d+ distinct timestamps.*latest row, "
                                         rf"at 2034-01-01 00:00:00 for context {re.escape(repr(context))}, may have "
                                         r"a wrong clock"):
        tss.score(_spark_frame(spark, far), model)


# ---------------------------------------------------------------------- update: batch after batch
def _batches(new, hours=48):
    """(b1, b2): the first ``hours`` of the new data, then the rest."""
    cut = new["ts"].min() + pd.Timedelta(hours=hours)
    return new[new["ts"] < cut], new[new["ts"] >= cut]


def test_update_then_score_equals_single_machine_update(spark, frames, baseline_fit, tmp_path):
    # score(b1), update(b1), score(b2) on Spark gives det.update(b1); det.score(b2), context by context:
    # a fitted context without a row in b1 and one with a row off the grid move on as missing, an
    # unseen context stays unseen (scored cold in b2 on both).
    _, new = frames
    model, reference = baseline_fit
    b1, b2 = _batches(new)
    contexts = [tuple(c) for c in new[CONTEXT].drop_duplicates().sort_values(CONTEXT).to_numpy()]
    absent, off_grid = contexts[0], contexts[1]
    unseen = pd.DataFrame({"country": ["ZZ"], "asn": ["AS1"]})
    b1_unseen = unseen.merge(b1[_rows_of(b1, contexts[2])][["ts", VALUE]], how="cross")
    b2_unseen = unseen.merge(b2[_rows_of(b2, contexts[2])][["ts", VALUE]], how="cross")
    stray = b1[_rows_of(b1, off_grid)].head(1).assign(ts=lambda f: f["ts"] + pd.Timedelta("30min"))
    spark_b1 = pd.concat([b1[~_rows_of(b1, absent)], stray, b1_unseen], ignore_index=True)
    b2 = pd.concat([b2, b2_unseen], ignore_index=True)

    scored = tss.score(_spark_frame(spark, spark_b1), model)
    scored.scores.count()
    model2 = tss.update(_spark_frame(spark, spark_b1), model, n_shards=5)
    scored.unpersist()
    det = copy.deepcopy(reference)
    det.update(_panel(pd.concat([b1[~_rows_of(b1, absent) & ~_rows_of(b1, off_grid)], b1_unseen])))
    assert pd.Timestamp(model2.global_state["state"]["fit_end_"]["value"]) == pd.Timestamp(det.fit_end_)
    assert model2.global_state["state"]["n_fit_times_"]["value"] == det.n_fit_times_
    assert model.global_state["state"]["fit_end_"] != model2.global_state["state"]["fit_end_"]  # old one kept
    assert model2.state.columns == model.state.columns and model2.state.dtypes == model.state.dtypes
    assert model2.state.count() == model.state.count()  # the unseen context got no state
    result = tss.score(_spark_frame(spark, b2), model2)
    _assert_scores_equal(_scores_of(result), det, b2)
    result.unpersist()

    # The updated model saves and loads as a fitted one, and scores the same after it.
    model2.save(str(tmp_path / "updated"))
    loaded = tss.load_model(spark, str(tmp_path / "updated"))
    result = tss.score(_spark_frame(spark, b2), loaded)
    _assert_scores_equal(_scores_of(result), det, b2)
    result.unpersist()
    model2.unpersist()


def test_update_with_absent_zero_moves_silent_contexts_on_as_zero_events(spark, frames, baseline_fit):
    _, new = frames
    model, reference = baseline_fit
    b1, b2 = _batches(new)
    silent = [tuple(c) for c in b1[CONTEXT].drop_duplicates().to_numpy()[:2]]
    quiet = _rows_of(b1, silent[0]) | _rows_of(b1, silent[1])
    model2 = tss.update(_spark_frame(spark, b1[~quiet]), model, fill="zero", absent="zero", n_shards=5)
    det = copy.deepcopy(reference)
    det.update(tsanomaly.Panel.from_frame(b1.assign(**{VALUE: b1[VALUE].where(~quiet, 0.0)}), CONTEXT, "ts", VALUE,
                                          fill="zero"))
    result = tss.score(_spark_frame(spark, b2), model2)
    _assert_scores_equal(_scores_of(result), det, b2)
    result.unpersist()
    model2.unpersist()


@pytest.mark.parametrize("name", ["stl", "mp", "baseline-level", "lstm"])
def test_other_detectors_update_as_on_one_machine(spark, name):
    make, rtol = _other_detector(name)
    history, new = _frames(n_contexts=12, seed=3)
    b1, b2 = _batches(new)
    model = tss.fit(_spark_frame(spark, history), make(), context=CONTEXT, time="ts", value=VALUE)
    det = make().fit(_panel(history)).update(_panel(b1))
    model2 = tss.update(_spark_frame(spark, b1), model)
    result = tss.score(_spark_frame(spark, b2), model2)
    _assert_scores_equal(_scores_of(result), det, b2, rtol)
    result.unpersist()
    model2.unpersist()
    model.unpersist()


def test_update_passes_contexts_that_failed_at_fit_through_unchanged(spark):
    history, new = _frames(n_contexts=8, seed=5)
    b1, b2 = _batches(new)
    raises = tuple(history[CONTEXT].drop_duplicates().sort_values(CONTEXT).to_numpy()[0])
    history = history.copy()
    history.loc[history.index[_rows_of(history, raises)][7], VALUE] = 4242.0
    params = dict(window=7, contamination=0.02, device="cpu")
    model = tss.fit(_spark_frame(spark, history), FussyDetector(**params), context=CONTEXT, time="ts",
                    value=VALUE, n_shards=2)
    model2 = tss.update(_spark_frame(spark, b1), model, n_shards=2)
    before, after = model.failed().toPandas(), model2.failed().toPandas()
    assert set(map(tuple, after[CONTEXT].to_numpy())) == {raises}
    pd.testing.assert_frame_equal(after, before)
    rows = [frame[_rows_of(frame, raises)].reset_index(drop=True) for frame in (model.state.toPandas(),
                                                                                 model2.state.toPandas())]
    assert len(rows[1]) == 1 and rows[1]["history_"].isna().all()  # no state to move
    pd.testing.assert_frame_equal(rows[1], rows[0])
    good = history[~_rows_of(history, raises)]
    det = RollingZScoreDetector(**params).fit(_panel(good)).update(_panel(b1[~_rows_of(b1, raises)]))
    result = tss.score(_spark_frame(spark, b2[~_rows_of(b2, raises)]), model2)
    _assert_scores_equal(_scores_of(result), det, b2[~_rows_of(b2, raises)])
    result.unpersist()
    model2.unpersist()
    model.unpersist()


def test_update_refuses_a_detector_that_cannot_update_before_any_spark_work():
    detector = EchoDetector(threshold="quantile").fit(np.arange(40.0).reshape(4, 10))
    global_state, _ = tss.split_state(detector)
    model = tss.SparkModel(global_state, state=None)  # no Spark at all: the refusal comes first
    with pytest.raises(NotImplementedError, match="EchoDetector does not implement update.*fit again"):
        tss.update(None, model)


def test_update_after_a_gap_warns_on_the_driver_and_counts_the_skipped_steps(spark, frames, baseline_fit):
    # As BaseDetector.update: the skipped steps are missing, warned about once, and n_fit_times_ counts them.
    _, new = frames
    model, reference = baseline_fit
    b1, b2 = _batches(new)
    with pytest.warns(tsanomaly.HistoryGapWarning):
        model2 = tss.update(_spark_frame(spark, b2), model, n_shards=3)
    det = copy.deepcopy(reference)
    with pytest.warns(tsanomaly.HistoryGapWarning):
        det.update(_panel(b2))
    assert pd.Timestamp(model2.global_state["state"]["fit_end_"]["value"]) == pd.Timestamp(det.fit_end_)
    assert model2.global_state["state"]["n_fit_times_"]["value"] == det.n_fit_times_
    later = b2[b2["ts"] >= b2["ts"].min() + pd.Timedelta(hours=24)]
    b2_first = b2[b2["ts"] < later["ts"].min()]
    with pytest.warns(tsanomaly.HistoryGapWarning):
        model3 = tss.update(_spark_frame(spark, b2_first), model)
    det3 = copy.deepcopy(reference)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tsanomaly.HistoryGapWarning)
        det3.update(_panel(b2_first))
    result = tss.score(_spark_frame(spark, later), model3)
    _assert_scores_equal(_scores_of(result), det3, later)
    result.unpersist()
    for m in (model2, model3):
        m.unpersist()


def test_update_moves_fitted_contexts_on_in_shards_without_new_rows(spark, frames, baseline_fit):
    # Shards holding state but no new row still move their contexts on (as missing) over the batch.
    _, new = frames
    model, reference = baseline_fit
    b1, b2 = _batches(new)
    one = tuple(b1[CONTEXT].iloc[0])
    subset = b1[_rows_of(b1, one)]
    model2 = tss.update(_spark_frame(spark, subset), model, n_shards=8)
    assert model2.state.count() == model.state.count()
    det = copy.deepcopy(reference).update(_panel(subset))
    result = tss.score(_spark_frame(spark, b2), model2)
    _assert_scores_equal(_scores_of(result), det, b2)
    result.unpersist()
    model2.unpersist()


def test_update_of_a_model_fitted_on_a_zoned_grid_equals_single_machine_across_a_switch(spark):
    # A detector fitted on one machine on an hourly grid in Europe/Paris (from_detector keeps the instants,
    # in UTC): update over a batch that holds the switch to summer time (2024-03-31 01:00 UTC), then
    # score, as det.update(b1); det.score(b2) on the zoned grid, whose hours are fixed durations too.
    data = make_security_panel(n_contexts=4, n_days=18, seed=2, start="2024-03-15", clean_days=14,
                               attack_rate=0.5)
    history, new = data.split("2024-03-29")
    history, new = (part.panels[VALUE].to_frame(value=VALUE, time="ts") for part in (history, new))
    b1, b2 = _batches(new, hours=72)
    assert b1["ts"].min() < pd.Timestamp("2024-03-31 01:00") < b1["ts"].max()

    params = dict(window=5, seasonal_period=24, contamination=0.01, device="cpu")
    reference = RollingZScoreDetector(**params).fit(_in_paris(history))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*steps in UTC")  # hours: no warning to give
        model = tss.from_detector(spark, reference, time="ts", value=VALUE)
    model2 = tss.update(_spark_frame(spark, b1), model, n_shards=2)
    det = copy.deepcopy(reference).update(_in_paris(b1))
    # The same instant, in UTC without a zone as the shards' grids hold it.
    assert model2.global_state["state"]["fit_end_"]["value"] == "2024-03-31T23:00:00"
    assert pd.Timestamp(det.fit_end_) == pd.Timestamp("2024-04-01 01:00", tz="Europe/Paris")
    assert model2.global_state["state"]["n_fit_times_"]["value"] == det.n_fit_times_
    result = tss.score(_spark_frame(spark, b2), model2)
    _assert_scores_equal_at_the_same_instants(result, det.score(_in_paris(b2)))
    result.unpersist()
    model2.unpersist()


def test_a_context_the_detector_raises_on_in_update_keeps_its_state_and_is_reported(spark):
    # As score: a detector that raises on one context's batch in a shard marks that context and the
    # job goes on (it failed the whole update). The shard's other contexts roll forward; the failed
    # one keeps its state from before the batch, now with a reason (its kept history no longer ends
    # where the model's does, so it must not be scored as if it did), and the driver warns naming it.
    history, new = _frames(n_contexts=8, seed=5)
    b1, b2 = _batches(new)
    contexts = [tuple(c) for c in history[CONTEXT].drop_duplicates().sort_values(CONTEXT).to_numpy()]
    raises = contexts[3]
    b1 = b1.copy()
    b1.loc[b1.index[_rows_of(b1, raises)][5], VALUE] = 4242.0
    params = dict(window=7, contamination=0.02, device="cpu")
    model = tss.fit(_spark_frame(spark, history), FussyDetector(**params), context=CONTEXT, time="ts",
                    value=VALUE, n_shards=2)
    assert model.failed().count() == 0
    from pyspark.sql import functions as F

    shard = F.pmod(F.xxhash64(*CONTEXT), F.lit(2))  # update's shard key, for n_shards=2
    shards = spark.createDataFrame(pd.DataFrame(contexts, columns=CONTEXT)).select(*CONTEXT, shard.alias("s"))
    shards = shards.toPandas()
    assert (shards["s"] == shards.loc[_rows_of(shards, raises), "s"].iloc[0]).sum() > 1  # it has shard-mates
    with pytest.warns(UserWarning, match=re.escape(repr(raises)) + ".*4242 is not a count"):
        model2 = tss.update(_spark_frame(spark, b1), model, n_shards=2)
    failed = model2.failed().toPandas()
    assert [tuple(c) for c in failed[CONTEXT].to_numpy()] == [raises]
    assert (model.global_state["fit"]["n_failed"], model2.global_state["fit"]["n_failed"]) == (0, 1)
    assert re.match(r"update over .* failed: ValueError: 4242 is not a count", failed["reason"].iloc[0])
    before, after = (m.state.toPandas() for m in (model, model2))
    before, after = (frame[_rows_of(frame, raises)].drop(columns="reason").reset_index(drop=True)
                     for frame in (before, after))
    pd.testing.assert_frame_equal(after, before)  # the state from before the batch
    # Every other context, the failed one's shard-mates included, rolled forward as on one machine.
    others = ~_rows_of(b2, raises)
    det = FussyDetector(**params).fit(_panel(history)).update(_panel(b1[~_rows_of(b1, raises)]))
    result = tss.score(_spark_frame(spark, b2), model2)
    got = _scores_of(result)
    mine = _rows_of(got, raises)
    assert got.loc[mine, "reason"].str.startswith("not fitted: update over").all()
    assert got.loc[mine, "score"].isna().all()
    _assert_scores_equal(got[~mine], det, b2[others])
    result.unpersist()
    # The failed context passes through later updates as it is, and is warned about no more.
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*raised on")
        model3 = tss.update(_spark_frame(spark, b2), model2, n_shards=3)
    pd.testing.assert_frame_equal(model3.failed().toPandas(), failed)
    for m in (model3, model2, model):
        m.unpersist()
