"""Model files whose detector-specific fitted state is damaged fail at load, naming the attribute.

Without the check at load (``BaseDetector._check_fitted_state``) such a file
loaded fine and failed later, at scoring, with a TypeError or IndexError far
from its cause (an STL model whose ``periods_`` is null), or not at all until
an unlucky context came along. Each detector is fitted tiny, saved, and its
``model.json`` / ``arrays.npz`` rewritten with one attribute set to null or
given one row too few.
"""
from __future__ import annotations

import io
import json
import warnings
import zipfile

import numpy as np
import pandas as pd
import pytest

import tsanomaly
from tsanomaly.detectors.baseline import RollingZScoreDetector
from tsanomaly.detectors.ensemble import EnsembleDetector
from tsanomaly.detectors.matrix_profile import MatrixProfileDetector
from tsanomaly.detectors.stl import STLDetector

N_HIST, N_NEW = 24 * 8, 24 * 2


def _detector(name):
    if name == "baseline":
        return RollingZScoreDetector(window=4, seasonal_period=None, level_window=8, device="cpu")
    if name == "stl":
        return STLDetector(periods=24, device="cpu")
    if name == "mp":
        return MatrixProfileDetector(window=6, history=48, normalize=False, device="cpu")
    if name == "lstm":
        pytest.importorskip("torch")
        from tsanomaly.detectors.lstm_ae import LSTMAutoencoderDetector

        return LSTMAutoencoderDetector(window=12, hidden=4, epochs=1, batch_size=64, device="cpu", seed=0)
    members = [RollingZScoreDetector(window=4, seasonal_period=None), MatrixProfileDetector(window=6, history=48)]
    return EnsembleDetector(detectors=members, device="cpu")


@pytest.fixture(scope="module")
def panels():
    rng = np.random.default_rng(5)
    t = np.arange(N_HIST + N_NEW)
    values = rng.poisson(30.0 * (1.0 + 0.5 * np.sin(2 * np.pi * t / 24)), size=(3, t.size)).astype(float)
    index = pd.date_range("2024-01-01", periods=t.size, freq="1h", name="ts")
    full = tsanomaly.Panel(values, pd.Index(["a", "b", "c"], name="ctx"), index)
    return full.time_slice(end=index[N_HIST - 1]), full.time_slice(start=index[N_HIST])


@pytest.fixture(scope="module")
def saved(panels, tmp_path_factory):
    """``saved(name)``: (fitted detector, path of its model file), fitted once per module."""
    history, _ = panels
    cache = {}

    def get(name):
        if name not in cache:
            det = _detector(name)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if name == "lstm":  # a tiny network: one thread is much faster than several
                    import torch

                    threads = torch.get_num_threads()
                    torch.set_num_threads(1)
                    try:
                        det.fit(history)
                    finally:
                        torch.set_num_threads(threads)
                else:
                    det.fit(history)
            path = tmp_path_factory.mktemp(name) / "model.tsa"
            det.save(path)
            cache[name] = det, path
        return cache[name]

    return get


def _model_json_and_arrays(path):
    with zipfile.ZipFile(path) as archive:
        meta = json.loads(archive.read("model.json"))
        with np.load(io.BytesIO(archive.read("arrays.npz"))) as npz:
            return meta, {key: npz[key] for key in npz.files}


def _rewrite(path, meta, arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model.json", json.dumps(meta))
        archive.writestr("arrays.npz", buffer.getvalue())
    return path


def _damaged(path, out, name, how, member=None):
    """A copy of the model file at ``path`` with fitted attribute ``name`` set to null
    (``how="null"``), its array one row or one column short (``"rows"``, ``"columns"``), its
    array's first value NaN (``"nan"``) or, for a dict of arrays by period, its period doubled
    (``"period"``); ``member``: in that ensemble member's state instead."""
    meta, arrays = _model_json_and_arrays(path)
    state = meta["state"] if member is None else meta["state"]["members_"]["items"][member]["state"]
    if how == "null":
        state[name] = {"kind": "json", "value": None}
    elif how == "period":  # a dict of arrays by period ("array_dict"): its period renamed
        state[name]["keys"] = {str(int(period) * 2): key for period, key in state[name]["keys"].items()}
    else:
        key = state[name]["key"]  # an "array" entry: {"kind": "array", "key": ...}
        if how == "nan":
            arrays[key] = arrays[key].astype(np.float64)
            arrays[key].flat[0] = np.nan
        else:
            arrays[key] = arrays[key][:-1] if how == "rows" else arrays[key][:, :-1]
    return _rewrite(out, meta, arrays)


DETECTORS = ["baseline", "stl", "mp", "lstm", "ensemble"]


@pytest.mark.parametrize("name", DETECTORS)
def test_an_intact_model_file_loads_and_scores_identically(saved, panels, name):
    det, path = saved(name)
    _, new = panels
    loaded = tsanomaly.load(path)
    assert type(loaded) is type(det)
    np.testing.assert_array_equal(loaded.score(new).to_numpy(), det.score(new).to_numpy())


def test_the_arrays_are_compressed_once_and_files_of_either_layout_load(saved, panels, tmp_path):
    """The arrays member is a plain .npz, deflated by the model file's zip: savez_compressed inside
    the deflated zip compressed twice (a baseline of 20,000 contexts saved in 1.51 s, now 0.33 s).
    A file written the old way (compressed members inside) loads and scores the same."""
    det, path = saved("baseline")
    with zipfile.ZipFile(path) as archive:
        assert archive.getinfo("arrays.npz").compress_type == zipfile.ZIP_DEFLATED
        with zipfile.ZipFile(io.BytesIO(archive.read("arrays.npz"))) as npz:
            assert {info.compress_type for info in npz.infolist()} == {zipfile.ZIP_STORED}
    meta, arrays = _model_json_and_arrays(path)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    old = tmp_path / "old.tsa"
    with zipfile.ZipFile(old, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model.json", json.dumps(meta, indent=1))
        archive.writestr("arrays.npz", buffer.getvalue())
    _, new = panels
    np.testing.assert_array_equal(tsanomaly.load(old).score(new).to_numpy(), det.score(new).to_numpy())


@pytest.mark.parametrize(
    "name, attribute, how",
    [
        ("baseline", "scale_floor_", "null"),
        ("baseline", "history_", "rows"),
        ("baseline", "component_units_", "null"),
        ("stl", "periods_", "null"),
        ("stl", "level_", "null"),
        ("stl", "scale_", "rows"),
        ("stl", "recent_values_", "null"),
        ("stl", "seasonal_shape_", "null"),
        ("stl", "seasonal_shape_", "period"),
        ("stl", "scale_", "columns"),
        ("stl", "level_center_", "columns"),
        ("stl", "recent_values_", "columns"),
        ("mp", "history_", "null"),
        ("mp", "past_points_", "rows"),
        ("mp", "scale_", "null"),
        ("lstm", "n_models_", "null"),
        ("lstm", "cluster_", "null"),
        ("lstm", "err_center_", "rows"),
        ("ensemble", "member_quantiles_", "null"),
        ("ensemble", "member_scale_", "rows"),
        ("baseline", "threshold_", "nan"),  # a context that could never alert, silently
        ("mp", "threshold_", "rows"),
    ],
)
def test_damaged_detector_state_is_a_value_error_at_load(saved, tmp_path, name, attribute, how):
    _, path = saved(name)
    damaged = _damaged(path, tmp_path / "damaged.tsa", attribute, how)
    with pytest.raises(ValueError) as info:
        tsanomaly.load(damaged)
    message = str(info.value)
    assert str(damaged) in message and attribute in message and "damaged" in message


def test_a_damaged_ensemble_member_is_a_value_error_at_load(saved, tmp_path):
    _, path = saved("ensemble")
    damaged = _damaged(path, tmp_path / "damaged.tsa", "history_", "null", member=0)
    with pytest.raises(ValueError, match=r"RollingZScoreDetector's fitted history_ is None.*damaged"):
        tsanomaly.load(damaged)


def test_an_lstm_file_saved_before_recent_summary_existed_scores_as_it_was_calibrated(panels, tmp_path):
    """The LSTM's second score component became the median of the recent errors (it was their
    mean); a model file saved before holds no recent_summary_ and keeps the mean, which its error
    statistics and threshold were calibrated on, so its scores do not change. (window 18: the
    median of 3 points; of 2 it would be their mean.)"""
    torch = pytest.importorskip("torch")
    from tsanomaly.detectors.lstm_ae import LSTMAutoencoderDetector

    history, new = panels
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        det = LSTMAutoencoderDetector(window=18, hidden=4, epochs=1, batch_size=64, device="cpu", seed=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            det.fit(history)
        assert det.recent_summary_ == "median"
        path = det.save(tmp_path / "model.tsa") or tmp_path / "model.tsa"
        meta, arrays = _model_json_and_arrays(path)
        del meta["state"]["recent_summary_"]  # what a file saved before holds
        old = tsanomaly.load(_rewrite(tmp_path / "old.tsa", meta, arrays))
        assert "recent_summary_" not in vars(old)
        del det.recent_summary_  # the earlier code: the mean of the recent errors
        np.testing.assert_array_equal(old.score(new).to_numpy(), det.score(new).to_numpy())
        det.recent_summary_ = "median"
        assert not np.array_equal(old.score(new).to_numpy(), det.score(new).to_numpy())
        meta["state"]["recent_summary_"] = {"kind": "json", "value": "mode"}
        with pytest.raises(ValueError, match="recent_summary_ is 'mode'.*damaged"):
            tsanomaly.load(_rewrite(tmp_path / "damaged.tsa", meta, arrays))
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------- context labels
# Labels of an object level used to be saved as their text, so after load the context 1 was "1"
# and NaN (a context of its own for Panel.from_frame) was "nan": both unseen, scores changed.
PARIS = pd.Timestamp("2024-01-01 00:00:00.000000001", tz="Europe/Paris")
LABELS = {
    "int-and-text": pd.Index([1, "b", np.int64(7)], dtype=object),
    "text-and-nan": pd.Index(["a", np.nan, "c"], dtype=object),
    "text-and-none": pd.Index(["a", None, "c"], dtype=object),
    "floats-and-ints": pd.Index([2.5, 3, float("inf")], dtype=object),
    "bool-and-text": pd.Index([True, False, "x"], dtype=object),
    "timestamps-and-text": pd.Index([PARIS, pd.Timestamp("2024-01-02"), "a"], dtype=object),
    "na-nat-and-text": pd.Index([pd.NA, pd.NaT, "a"], dtype=object),
    "all-ints-in-object": pd.Index([1, 2, 3], dtype=object),
    "zoned-datetimes": pd.DatetimeIndex(["2024-01-01", "2024-07-01", "2024-12-31"], tz="Europe/Paris", name="day"),
    "multi-mixed": pd.MultiIndex.from_arrays([[1, "b", 1], [np.nan, 2.5, "x"]], names=["asn", "shard"]),
    "unnamed-text": pd.Index(["a", "b", "c"]),
}


def _same_label(a, b) -> bool:
    """Equal and of the same type (NaN equal to NaN, singletons by identity)."""
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(map(_same_label, a, b))
    if isinstance(a, float) and np.isnan(a):
        return isinstance(b, float) and np.isnan(b)
    if a is None or a is pd.NA or a is pd.NaT:
        return b is a
    python_type = lambda v: type(v.item()) if isinstance(v, np.generic) else type(v)  # noqa: E731
    same = python_type(a) is python_type(b) and a == b
    return same and (not isinstance(a, pd.Timestamp) or (str(a.tz), a.unit) == (str(b.tz), b.unit))


@pytest.mark.parametrize("labels", LABELS.values(), ids=LABELS.keys())
def test_context_labels_load_back_as_they_were_fitted(panels, tmp_path, labels):
    history, new = (tsanomaly.Panel(p.values, labels, p.index) for p in panels)
    det = RollingZScoreDetector(window=4, seasonal_period=None, device="cpu").fit(history)
    det.save(tmp_path / "model.tsa")
    loaded = tsanomaly.load(tmp_path / "model.tsa")
    assert all(map(_same_label, list(det.contexts_), list(loaded.contexts_))), list(loaded.contexts_)
    assert loaded.contexts_.names == det.contexts_.names and loaded.contexts_.dtype == det.contexts_.dtype
    assert len(loaded.unseen_contexts(new)) == 0
    np.testing.assert_array_equal(loaded.score(new).to_numpy(), det.score(new).to_numpy())


@pytest.mark.parametrize(
    "label, why",
    [
        (pd.Timestamp("2024-01-01").date(), "of type date"),
        (("a", 1), "of type tuple"),
        ("a\x00", "ends with a NUL character"),
    ],
)
def test_a_label_a_model_file_cannot_hold_is_refused_at_save(panels, tmp_path, label, why):
    history, _ = panels
    history = tsanomaly.Panel(history.values, pd.Index([label, "b", "c"], dtype=object), history.index)
    det = RollingZScoreDetector(window=4, seasonal_period=None, device="cpu").fit(history)
    with pytest.raises(ValueError, match=f"cannot save fitted attribute contexts_: its label .* {why}"):
        det.save(tmp_path / "model.tsa")
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a partial file


def test_text_and_numeric_labels_keep_the_layout_of_earlier_files(saved):
    # Files written before labels carried their types: text levels as a text array, numeric ones
    # as their array, entries {"key", "name"} only. Those files still load the same way.
    _, path = saved("baseline")
    meta, arrays = _model_json_and_arrays(path)
    (level,) = meta["state"]["contexts_"]["levels"]
    assert level == {"key": "contexts_/level0", "name": "ctx"}
    assert arrays["contexts_/level0"].tolist() == ["a", "b", "c"]


def test_a_file_written_before_label_types_loads_its_text_labels(panels, tmp_path):
    # What earlier versions wrote for the labels [1, "b", 7]: their text, no "types" entry.
    history, _ = panels
    labels = pd.Index([1, "b", 7], dtype=object)
    det = RollingZScoreDetector(window=4, seasonal_period=None, device="cpu")
    det.fit(tsanomaly.Panel(history.values, labels, history.index)).save(tmp_path / "new.tsa")
    meta, arrays = _model_json_and_arrays(tmp_path / "new.tsa")
    level = meta["state"]["contexts_"]["levels"][0]
    del arrays[level.pop("types")["key"]]
    loaded = tsanomaly.load(_rewrite(tmp_path / "old.tsa", meta, arrays))
    assert list(loaded.contexts_) == ["1", "b", "7"]


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda level, arrays: level["types"].update(names=["str", "pickle"]), id="unknown-type"),
        pytest.param(lambda level, arrays: arrays.update({level["types"]["key"]: np.array([0, 1, 5], np.uint8)}),
                     id="code-out-of-range"),
        pytest.param(lambda level, arrays: arrays.update({level["types"]["key"]: np.array([0, 1], np.uint8)}),
                     id="codes-too-few"),
        pytest.param(lambda level, arrays: arrays.update({level["key"]: np.array(["x", "b", "7"])}),
                     id="int-text-not-a-number"),
        pytest.param(lambda level, arrays: level.update(types="int"), id="types-not-an-object"),
    ],
)
def test_damaged_label_types_are_a_value_error_at_load(panels, tmp_path, damage):
    history, _ = panels
    det = RollingZScoreDetector(window=4, seasonal_period=None, device="cpu")
    det.fit(tsanomaly.Panel(history.values, pd.Index([1, "b", 7], dtype=object), history.index))
    det.save(tmp_path / "model.tsa")
    meta, arrays = _model_json_and_arrays(tmp_path / "model.tsa")
    damage(meta["state"]["contexts_"]["levels"][0], arrays)
    damaged = _rewrite(tmp_path / "damaged.tsa", meta, arrays)
    with pytest.raises(ValueError, match="contexts_.*malformed index level.*damaged"):
        tsanomaly.load(damaged)


# ---------------------------------------------------------------------- writing model files
def test_save_keeps_permissions_and_links_like_every_output(saved, tmp_path):
    """save wrote ``<name>.partial`` and renamed it over the path: a model restricted to 0600 became
    0644, and a symbolic link became a file of its own while the model it named stayed stale."""
    det, _ = saved("baseline")
    model = tmp_path / "model.tsa"
    det.save(model)
    model.chmod(0o600)
    det.save(model)
    assert model.stat().st_mode & 0o777 == 0o600
    link = tmp_path / "latest.tsa"
    link.symlink_to(model)
    model.write_bytes(b"stale")
    det.save(link)
    assert link.is_symlink() and link.resolve() == model.resolve()
    assert tsanomaly.load(model).get_params() == det.get_params()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.tsa", "model.tsa"]  # no temporary file left


def test_two_saves_at_once_write_separate_temporary_files(saved, panels, tmp_path, monkeypatch):
    """Both saves wrote ``model.tsa.partial``: the second truncated the first's file, renamed it into
    place, and the first then wrote the rest of its zip into the model and failed to rename."""
    det, _ = saved("baseline")
    other = RollingZScoreDetector(window=5, seasonal_period=None, device="cpu").fit(panels[0])
    model = tmp_path / "model.tsa"
    real_writestr = zipfile.ZipFile.writestr
    nested = []

    def save_the_other_meanwhile(self, name, data, *args, **kwargs):
        real_writestr(self, name, data, *args, **kwargs)
        if not nested:  # once, between the first save's two members
            nested.append(name)
            other.save(model)

    monkeypatch.setattr(zipfile.ZipFile, "writestr", save_the_other_meanwhile)
    det.save(model)
    monkeypatch.undo()
    assert nested == ["model.json"]
    assert tsanomaly.load(model).window == det.window  # the last save to finish wins, whole
    assert [p.name for p in tmp_path.iterdir()] == ["model.tsa"]
