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


def _damaged(path, out, name, how, member=None):
    """A copy of the model file at ``path`` with fitted attribute ``name`` set to null
    (``how="null"``), its array one row or one column short (``"rows"``, ``"columns"``), its
    array's first value NaN (``"nan"``) or, for a dict of arrays by period, its period doubled
    (``"period"``); ``member``: in that ensemble member's state instead."""
    with zipfile.ZipFile(path) as archive:
        meta = json.loads(archive.read("model.json"))
        with np.load(io.BytesIO(archive.read("arrays.npz"))) as npz:
            arrays = {key: npz[key] for key in npz.files}
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
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("model.json", json.dumps(meta))
        archive.writestr("arrays.npz", buffer.getvalue())
    return out


DETECTORS = ["baseline", "stl", "mp", "lstm", "ensemble"]


@pytest.mark.parametrize("name", DETECTORS)
def test_an_intact_model_file_loads_and_scores_identically(saved, panels, name):
    det, path = saved(name)
    _, new = panels
    loaded = tsanomaly.load(path)
    assert type(loaded) is type(det)
    np.testing.assert_array_equal(loaded.score(new).to_numpy(), det.score(new).to_numpy())


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
