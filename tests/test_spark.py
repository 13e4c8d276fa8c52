"""tsanomaly.spark: fit and score on Spark give the single-machine results, context by context.

The Spark tests run in local mode (``local[2]``, one session for the module) and
are skipped when PySpark or Java is missing, except under ``CI=true`` where that
is a failure. The tests of the state split/merge and of the quantile arithmetic
need no Spark.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import warnings
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
    """The baseline, except that fitting a context whose history holds the value 4242 raises."""

    fit_is_per_context = True

    def _fit(self, values, panel):
        if (np.nan_to_num(values) == 4242).any():
            raise ValueError("4242 is not a count this detector accepts")
        return super()._fit(values, panel)


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


# ---------------------------------------------------------------------- data and references
def _frames(n_contexts=36, seed=7):
    """(history, new) long frames: 14 days of hourly failed logins, then 5 days, with missing buckets."""
    data = make_security_panel(n_contexts=n_contexts, n_days=19, seed=seed, clean_days=14, attack_rate=0.3)
    history, new = data.split("2024-01-15")
    return (history.panels[VALUE].to_frame(value=VALUE, time="ts"),
            new.panels[VALUE].to_frame(value=VALUE, time="ts"))


def _panel(frame):
    return tsanomaly.Panel.from_frame(frame, CONTEXT, "ts", VALUE)


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


@pytest.mark.parametrize("n", [1, 2, 3, 10, 997, 1000, 12345])
@pytest.mark.parametrize("q", [0.0, 0.001, 0.5, 0.98, 0.999, 0.9999, 1.0])
def test_quantile_from_order_statistics_is_numpys(n, q):
    x = np.random.default_rng(n).standard_normal(n) * 10
    ordered = np.sort(x)
    lower, upper, gamma = tss._linear_quantile_positions(n, q)
    assert tss._lerp(ordered[lower], ordered[upper], gamma) == float(np.quantile(x, q))


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


def test_deep_order_statistics_are_bracketed_exactly(spark, monkeypatch):
    rng = np.random.default_rng(3)
    tails = [np.sort(rng.standard_normal(rng.integers(0, 40)))[::-1] for _ in range(60)]
    raw = spark.createDataFrame(pd.DataFrame({"_tail": [t.tolist() for t in tails]}), "_tail array<double>")
    ordered = np.sort(np.concatenate(tails))[::-1]
    monkeypatch.setattr(tss, "_COLLECT_LIMIT", 50)  # force the approxQuantile bracket
    ranks = [len(ordered) // 2, len(ordered) // 2 + 1]
    assert tss._desc_order_statistics(raw, len(ordered), ranks) == {r: float(ordered[r]) for r in ranks}
