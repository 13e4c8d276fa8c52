"""API conformance suite: every detector obeys the contract of tsanomaly.base.BaseDetector.

A new detector joins by one line in DETECTORS (a factory building a small,
fast configuration of it).
"""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pandas as pd
import pytest

import tsanomaly
from tsanomaly import backend
from tsanomaly.base import NotFittedError
from tsanomaly.detectors import RollingZScoreDetector


def _lstm():
    pytest.importorskip("torch")
    from tsanomaly.detectors.lstm_ae import LSTMAutoencoderDetector

    return LSTMAutoencoderDetector(window=12, hidden=8, epochs=2, batch_size=64, device="cpu")


def _stl():
    from tsanomaly.detectors.stl import STLDetector

    return STLDetector(periods=24, device="cpu")


def _mp():
    from tsanomaly.detectors.matrix_profile import MatrixProfileDetector

    return MatrixProfileDetector(window=12, device="cpu")


def _ensemble():
    from tsanomaly.detectors.ensemble import EnsembleDetector

    members = [RollingZScoreDetector(window=5), RollingZScoreDetector(window=8, seasonal_period=None)]
    return EnsembleDetector(detectors=members, combine="rank")


DETECTORS = [
    pytest.param(lambda: RollingZScoreDetector(window=5, seasonal_period=24, device="cpu"), id="baseline"),
    pytest.param(lambda: RollingZScoreDetector(window=8, seasonal_period=None, direction="up"), id="baseline-plain"),
    pytest.param(lambda: RollingZScoreDetector(window=5, seasonal_period=24, level_window=24 * 7), id="baseline-level"),
    pytest.param(_stl, id="stl"),
    pytest.param(_mp, id="matrix_profile"),
    pytest.param(lambda: _mp().set_params(normalize=False), id="matrix_profile-plain"),
    pytest.param(_lstm, id="lstm_ae"),
    pytest.param(_ensemble, id="ensemble"),
]


@pytest.fixture(scope="module")
def panels():
    """Six hourly contexts with a daily cycle: 14 days of history, 4 new days with one burst."""
    rng = np.random.default_rng(42)
    n_ctx, n_hist, n_new = 6, 24 * 14, 24 * 4
    t = np.arange(n_hist + n_new)
    level = rng.uniform(5, 500, size=(n_ctx, 1))
    daily = 1 + 0.5 * np.sin(2 * np.pi * (t % 24) / 24)
    values = rng.poisson(level * daily).astype(float)
    values[3, n_hist + 40 : n_hist + 44] *= 6  # a burst in the new data
    values[1, 17] = np.nan  # a missing bucket in the history
    index = pd.date_range("2024-03-01", periods=n_hist + n_new, freq="1h", name="ts")
    contexts = pd.Index([f"asn{k}" for k in range(n_ctx)], name="asn")
    full = tsanomaly.Panel(values, contexts, index)
    return full.time_slice(end=index[n_hist - 1]), full.time_slice(start=index[n_hist])


@pytest.fixture(params=DETECTORS)
def detector(request):
    return request.param()


def test_clone_keeps_parameters(detector):
    from sklearn.base import clone

    copy = clone(detector)
    assert type(copy) is type(detector)
    assert repr(copy) == repr(detector)
    assert copy.get_params().keys() == detector.get_params().keys()
    assert copy is not detector


def test_set_params_rejects_unknown_names(detector):
    with pytest.raises(ValueError, match="no parameter"):
        detector.set_params(no_such_parameter=1)


def test_constructor_only_stores_parameters(detector):
    fitted = [name for name in vars(detector) if name.endswith("_") and not name.startswith("_")]
    assert fitted == []


def test_score_before_fit_raises(detector, panels):
    _, new = panels
    with pytest.raises(NotFittedError, match="call fit"):
        detector.score(new)


def test_fit_returns_self_and_score_keeps_axes(detector, panels):
    history, new = panels
    assert detector.fit(history) is detector
    scores = detector.score(new)
    assert scores.shape == new.shape
    assert scores.contexts.equals(new.contexts)
    assert scores.index.equals(new.index)
    assert scores.values.dtype == np.float64
    assert np.isfinite(scores.to_numpy()).any()


def test_fit_score_scores_the_history(detector, panels):
    history, _ = panels
    scores = detector.fit_score(history)
    assert scores.shape == history.shape
    assert scores.index.equals(history.index)
    values = np.asarray(backend.to_numpy(scores.values), dtype=np.float64)
    assert np.isfinite(values).any()
    # The threshold is calibrated on these very scores: with the default rule ("quantile",
    # one threshold for all contexts) it is the 1 - contamination quantile of every finite
    # training score, all contexts pooled.
    assert detector.threshold == "quantile" and not detector.per_context
    finite = values[np.isfinite(values)]
    expected = np.quantile(finite, 1.0 - detector.contamination)
    assert detector.global_threshold_ == pytest.approx(expected, rel=1e-12, abs=1e-12)
    np.testing.assert_array_equal(detector.threshold_, np.full(history.n_contexts, detector.global_threshold_))


def test_min_fit_times_is_the_shortest_history_with_a_finite_score(detector, panels):
    """Where a detector states min_fit_times (jobs refuse shorter histories before fitting), a
    history one step shorter gives no finite training score (or, where the detector says its fit
    raises on a short history, a ValueError) and that long gives one."""
    import warnings

    from sklearn.base import clone

    from tsanomaly.base import CalibrationWarning

    need = detector.min_fit_times()
    if need is None:
        pytest.skip(f"{type(detector).__name__} does not state its shortest history")
    history, _ = panels
    assert 2 <= need <= history.n_times

    def finite_scores(n_times):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CalibrationWarning)
            scores = clone(detector).fit_score(history.time_slice(end=history.index[n_times - 1]))
        return np.isfinite(scores.to_numpy()).any()

    if detector._fit_raises_when_short:
        with pytest.raises(ValueError):
            finite_scores(need - 1)
    else:
        assert not finite_scores(need - 1)
    assert finite_scores(need)


def test_an_ensemble_needs_the_history_of_each_member_whose_fit_raises(panels):
    """The ensemble scores what any member scores, but fits every member: a member whose fit
    raises on a short history (STL) sets the ensemble's need, not the smallest member's."""
    import warnings

    from tsanomaly.base import CalibrationWarning
    from tsanomaly.detectors.ensemble import EnsembleDetector
    from tsanomaly.detectors.stl import STLDetector

    history, _ = panels
    plain = RollingZScoreDetector(window=8, seasonal_period=None)
    stl = STLDetector(periods=24, device="cpu")
    assert plain.min_fit_times() < stl.min_fit_times() < RollingZScoreDetector().min_fit_times()
    both = EnsembleDetector(detectors=[plain, stl])
    assert both.min_fit_times() == stl.min_fit_times() and both._fit_raises_when_short
    with pytest.raises(ValueError, match="two full cycles"):
        both.fit(history.time_slice(end=history.index[stl.min_fit_times() - 2]))
    # STL scores where the default baseline (a week of the same hour) cannot yet
    late = EnsembleDetector(detectors=[RollingZScoreDetector(), stl])
    assert late.min_fit_times() == stl.min_fit_times()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        scores = late.fit_score(history.time_slice(end=history.index[stl.min_fit_times() - 1]))
    assert np.isfinite(scores.to_numpy()).any()
    # without such a member, the smallest member's need (checked on _ensemble() above)
    assert not EnsembleDetector(detectors=[plain, RollingZScoreDetector()])._fit_raises_when_short


def test_scores_do_not_depend_on_other_contexts(detector, panels):
    """Scoring a subset of contexts, in another order, gives the same rows (contexts can be sharded)."""
    history, new = panels
    detector.fit(history)
    full = detector.score(new).to_numpy()
    subset = detector.score(new.take([4, 1])).to_numpy()
    np.testing.assert_allclose(subset, full[[4, 1]], rtol=1e-12, atol=1e-12, equal_nan=True)


def test_a_boolean_panel_scores_as_its_float_copy(detector, panels):
    """Panel keeps boolean values (predict's flags); given to fit and score (0/1 events), they
    reach every detector as float64, as the contract promises: STL's log1p of booleans was
    float16, so its scores differed from those of the same values as floats."""
    from sklearn.base import clone

    history, new = panels
    flags = np.random.default_rng(7).random((history.n_contexts, history.n_times + new.n_times)) < 0.3
    as_bool = history.with_values(flags[:, : history.n_times]), new.with_values(flags[:, history.n_times :])
    assert as_bool[0].values.dtype == np.bool_
    as_float = [panel.with_values(panel.values.astype(np.float64)) for panel in as_bool]

    def train_and_new_scores(pair):
        fitted = clone(detector)
        train = fitted.fit_score(pair[0]).to_numpy()
        return train, fitted.score(pair[1]).to_numpy()

    for from_bool, from_float in zip(train_and_new_scores(as_bool), train_and_new_scores(as_float)):
        assert from_bool.dtype == np.float64
        np.testing.assert_array_equal(from_bool, from_float)
    assert np.isfinite(from_float).any()


def test_a_panel_without_time_steps_or_contexts_scores_empty(detector, panels):
    """An empty batch (no new bucket yet, or no context in it) scores as an empty result of its
    shape without an alert, as the baseline did; the matrix profile failed on 0 time steps
    (argmax of an empty sequence)."""
    history, new = panels
    detector.fit(history)
    for empty in (new.time_slice(end=history.index[-1]), new.take([])):
        assert 0 in empty.shape
        scores = detector.score(empty)
        assert scores.shape == empty.shape and scores.values.dtype == np.float64
        assert scores.contexts.equals(empty.contexts) and scores.index.equals(empty.index)
        assert len(detector.alerts(empty)) == 0


def test_predict_is_boolean_and_alerts_have_the_columns(detector, panels):
    history, new = panels
    detector.fit(history)
    flags = detector.predict(new)
    assert flags.values.dtype == np.bool_
    assert flags.shape == new.shape
    alerts = detector.alerts(new)
    # Exactly the listed columns: alert_columns() is what alerts() and the jobs refuse as context names,
    # so an explanation column missing from explanation_columns could duplicate a user's column.
    assert list(alerts.columns) == ["asn", "start", "end", "peak_time", "peak_score", "n_points", "threshold",
                                    "detector", *detector.explanation_columns]
    assert list(alerts.columns) == ["asn", *detector.alert_columns()]
    assert int(flags.to_numpy().sum()) == int(alerts["n_points"].sum())
    if len(alerts):
        assert (alerts["peak_score"] > alerts["threshold"]).all()  # flagged = strictly above
        assert alerts["peak_score"].is_monotonic_decreasing


def test_explanation_types_declare_the_spark_type_of_every_explanation_column(detector, panels):
    # tsanomaly.spark builds the alert schema from these before any shard runs; a column read off a
    # probe's alerts instead came out "double" for the matrix profile's timestamps (no alert raised).
    from tsanomaly.spark import _explanation_kind

    history, new = panels
    alerts = detector.fit(history).alerts(new)
    assert set(detector.explanation_types) == set(detector.explanation_columns)
    assert len(alerts)  # the burst is flagged, so the column types can be read
    assert {name: _explanation_kind(alerts[name]) for name in detector.explanation_columns} == \
        detector.explanation_types
    # A quiet day's table has the same column types (daily Parquet partitions keep one schema).
    quiet = detector.alerts(new.take([0]), scores=new.take([0]).with_values(np.zeros((1, new.n_times))))
    assert len(quiet) == 0
    assert quiet[list(detector.explanation_columns)].dtypes.to_dict() == \
        alerts[list(detector.explanation_columns)].dtypes.to_dict()


@pytest.mark.parametrize("constant", [0.0, 7.0])
def test_a_constant_history_does_not_alert_on_the_same_constant(detector, constant):
    """A context that never changes (a country with always 0 events) calibrates a threshold equal
    to its training scores; the same value again must not alert (the flag rule is score > threshold)."""
    index = pd.date_range("2024-03-01", periods=24 * 16, freq="1h", name="ts")
    full = tsanomaly.Panel(np.full((3, index.size), constant), pd.Index(["a", "b", "c"], name="asn"), index)
    history, new = full.time_slice(end=index[24 * 14 - 1]), full.time_slice(start=index[24 * 14])
    detector.fit(history)
    assert not detector.predict(new).to_numpy().any()
    assert len(detector.alerts(new)) == 0


def test_unseen_context_does_not_crash(detector, panels):
    history, new = panels
    detector.fit(history.take([0, 1, 2]))
    scores = detector.score(new)
    assert scores.shape == new.shape
    assert list(detector.unseen_contexts(new)) == ["asn3", "asn4", "asn5"]


def test_save_load_gives_identical_scores_and_no_pickle(detector, panels, tmp_path):
    history, new = panels
    detector.fit(history)
    path = tmp_path / "model.tsa"
    detector.save(path)
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == ["arrays.npz", "model.json"]
        meta = json.loads(archive.read("model.json"))
        assert meta["format"] == "tsanomaly-model"
        archive.extract("arrays.npz", tmp_path)
    # allow_pickle=False raises on any object array: nothing in the file needs unpickling.
    with np.load(tmp_path / "arrays.npz", allow_pickle=False) as arrays:
        for key in arrays.files:
            assert arrays[key].dtype != object
    loaded = tsanomaly.load(path)
    assert type(loaded) is type(detector)
    np.testing.assert_array_equal(loaded.score(new).to_numpy(), detector.score(new).to_numpy())
    np.testing.assert_array_equal(loaded.threshold_, detector.threshold_)


def test_load_refuses_unknown_classes(tmp_path, panels):
    history, _ = panels
    det = RollingZScoreDetector(window=5).fit(history)
    path = tmp_path / "model.tsa"
    det.save(path)
    with zipfile.ZipFile(path) as archive:
        meta = json.loads(archive.read("model.json"))
        arrays = archive.read("arrays.npz")
    meta["class"] = "os.system"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model.json", json.dumps(meta))
        archive.writestr("arrays.npz", arrays)
    with pytest.raises(ValueError, match="unknown detector class"):
        tsanomaly.load(path)


@pytest.mark.gpu
@pytest.mark.parametrize("make", [
    lambda: RollingZScoreDetector(window=5, seasonal_period=24, device="cuda"),
    lambda: _mp().set_params(device="cuda"),
    lambda: _stl().set_params(device="cuda"),
    lambda: _ensemble().set_params(device="cuda"),
    pytest.param(lambda: _lstm().set_params(device="cuda"), marks=pytest.mark.torch_cuda),
], ids=["baseline", "matrix_profile", "stl", "ensemble", "lstm_ae"])
def test_a_detector_fitted_on_the_gpu_lists_its_alerts_like_one_fitted_on_the_cpu(make, panels):
    """alerts() explains on the host; a GPU fit keeps its state on the GPU (CuPy refuses implicit
    copies to NumPy), and the ensemble hands each member arrays on the member's own device."""
    history, new = panels
    gpu, cpu = make().fit(history), make().set_params(device="cpu").fit(history)
    got, expected = gpu.alerts(new), cpu.alerts(new)
    assert list(got.columns) == list(expected.columns)
    # Scores agree within each detector's device tolerance, so the alerts near a threshold may not:
    # the burst (asn3) is what both must flag.
    assert "asn3" in set(expected["asn"]) and "asn3" in set(got["asn"])
