"""LSTMAutoencoderDetector: windows, scaling, causality, clusters, persistence, devices.

Models are tiny (window 12, hidden 4-8, one or two epochs) so the file runs in
seconds on a CPU; what is checked is the data path and the contract, not how
well a large model detects (``benchmarks/lstm_quality.py`` measures that).
"""
from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from count_panels import busy_and_sparse_counts  # noqa: E402
import tsanomaly  # noqa: E402
from tsanomaly import backend  # noqa: E402
from tsanomaly.base import min_observed  # noqa: E402
from tsanomaly.detectors.lstm_ae import TOLERANCE, LSTMAutoencoderDetector  # noqa: E402

WINDOW = 12
N_HIST, N_NEW = 24 * 10, 24 * 3


def tiny(**params) -> LSTMAutoencoderDetector:
    settings = dict(window=WINDOW, hidden=6, epochs=2, batch_size=64, device="cpu", seed=0)
    settings.update(params)
    return LSTMAutoencoderDetector(**settings)


def daily_counts(rng, n_ctx, n_times, phase=None, level=None):
    """Poisson counts with a daily cycle; ``phase`` (hours) shifts each row's peak."""
    t = np.arange(n_times)
    phase = rng.uniform(0, 24, size=(n_ctx, 1)) if phase is None else np.asarray(phase, float).reshape(-1, 1)
    level = rng.uniform(20, 200, size=(n_ctx, 1)) if level is None else np.asarray(level, float).reshape(-1, 1)
    rate = level * (1.0 + 0.8 * np.sin(2 * np.pi * (t[None, :] - phase) / 24))
    return rng.poisson(rate).astype(float)


def make_panels(values, n_hist=N_HIST):
    index = pd.date_range("2024-05-01", periods=values.shape[1], freq="1h", name="ts")
    contexts = pd.Index([f"ctx{k}" for k in range(values.shape[0])], name="ctx")
    full = tsanomaly.Panel(values, contexts, index)
    return full.time_slice(end=index[n_hist - 1]), full.time_slice(start=index[n_hist])


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Run this module's tiny networks on one thread, then restore the setting.

    A batch of 64 windows of hidden size 6 is far too small to share between
    threads: on a busy CI machine, OpenMP's synchronisation at every op made
    these fits 20-50 times slower with two threads than with one.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def panels():
    rng = np.random.default_rng(7)
    values = daily_counts(rng, 5, N_HIST + N_NEW)
    values[2, N_HIST + 40 : N_HIST + 43] *= 8  # a burst in the new data
    values[4, 30] = np.nan  # a missing bucket in the history
    return make_panels(values)


@pytest.fixture(scope="module")
def fitted(panels):
    history, _ = panels
    return tiny().fit(history)


# ---------------------------------------------------------------------- shapes and causality
def test_scores_have_the_panel_shape_and_nan_only_where_a_window_is_too_incomplete(fitted, panels):
    history, new = panels
    scores = fitted.score(new).to_numpy()
    assert scores.shape == new.shape and scores.dtype == np.float64
    # The kept history tail gives the first new points full windows: all finite.
    assert np.isfinite(scores).all()
    train = fitted.fit_score(history).to_numpy()
    # The first window-1 points of the history have no full window; row 4's NaN at 30 has
    # no score of its own, and the windows after it, with 11 of 12 points observed
    # (min_observed(12) = 11), are scored.
    assert min_observed(WINDOW) == WINDOW - 1
    blank = np.zeros(train.shape, dtype=bool)
    blank[:, : WINDOW - 1] = True
    blank[4, 30] = True
    np.testing.assert_array_equal(np.isnan(train), blank)


def test_a_window_needs_seven_eighths_of_its_points_and_its_newest(panels):
    """Scored where at least min_observed(window) points are observed, the newest among them."""
    history, new = panels
    det = tiny(window=16).fit(history)
    assert min_observed(16) == 14
    values = new.to_numpy().copy()
    values[1, 30:32] = np.nan  # two missing: the windows over them keep 14 of 16 points
    values[3, 30:33] = np.nan  # three missing: the windows over all three keep 13
    scores = det.score(new.with_values(values)).to_numpy()
    assert np.isnan(scores[1, 30:32]).all() and np.isfinite(np.delete(scores[1], [30, 31])).all()
    # Row 3: windows ending at 32 .. 45 hold all three NaN (NaN); from 46 on, two or fewer.
    np.testing.assert_array_equal(np.isnan(scores[3]), np.isin(np.arange(N_NEW), np.arange(30, 46)))


def test_changing_a_future_point_never_changes_an_earlier_score(fitted, panels):
    _, new = panels
    base = fitted.score(new).to_numpy()
    rng = np.random.default_rng(0)
    for pos in rng.choice(np.arange(5, N_NEW), size=4, replace=False):
        values = new.to_numpy().copy()
        values[:, pos] = values[:, pos] * 3 + 50
        changed = fitted.score(new.with_values(values)).to_numpy()
        np.testing.assert_array_equal(changed[:, :pos], base[:, :pos])
        assert (changed[:, pos] != base[:, pos]).all()  # the window ending at pos did change


def test_missing_points_enter_as_the_median_and_leave_the_error_out(fitted):
    """The window's errors are measured on its observed points only: the newest point's error, and
    the mean over the observed ones among the newest window // 6; the network reads a missing
    point as the context's median (0 in scaled units)."""
    from tsanomaly.kernels import lstm_torch

    rng = np.random.default_rng(3)
    z = rng.normal(size=(1, WINDOW))
    z[0, -2] = np.nan  # in the recent part (the newest 2 points for window 12)
    errors = fitted._window_errors(torch.tensor(z), torch.zeros(1, dtype=torch.int64))
    inputs = torch.tensor(np.nan_to_num(z), dtype=torch.float32)
    recon = lstm_torch.reconstruct(fitted._models[0], inputs, batch_size=1024, pad_batches=True)
    diff = z[0] - recon.double().numpy()[0]
    assert fitted._recent() == 2
    np.testing.assert_allclose(errors[0, 0].numpy(), [diff[-1], diff[-1]], rtol=1e-12)  # the NaN is left out


def test_scoring_decodes_only_the_newest_points_and_scores_as_the_full_decoder(fitted, panels, monkeypatch):
    """The errors and the explanations read only the newest window // 6 points of each window, so
    the decoder (newest point first) runs only that many steps; on the CPU the scores, alerts and
    expected values equal bit for bit those computed from the whole window's reconstruction."""
    from tsanomaly.kernels import lstm_torch

    _, new = panels
    values = new.to_numpy().copy()
    values[1, 20:23] = np.nan  # gaps inside the newest points of some windows
    values[3, 50] = np.nan
    new = new.with_values(values)
    steps = []
    hook = fitted._models[0].decoder.register_forward_hook(lambda module, args, out: steps.append(args[0].shape[1]))
    try:
        scores = fitted.score(new)
        alerts = fitted.alerts(new, scores)
    finally:
        hook.remove()
    assert steps and set(steps) == {fitted._recent()}  # 2 of 12 decoder steps
    assert len(alerts) > 0 and alerts["expected"].notna().all()

    full_reconstruct = lstm_torch.reconstruct

    def full_then_newest(model, windows, *, newest=None, **kw):
        return full_reconstruct(model, windows, **kw)[:, windows.shape[1] - (newest or windows.shape[1]) :]

    monkeypatch.setattr(lstm_torch, "reconstruct", full_then_newest)
    full_scores = fitted.score(new)
    np.testing.assert_array_equal(scores.to_numpy(), full_scores.to_numpy())
    pd.testing.assert_frame_equal(alerts, fitted.alerts(new, full_scores))


def test_a_reconstruction_of_the_newest_points_is_the_tail_of_the_whole_one(fitted):
    """``reconstruct(..., newest=k)`` equals the newest k columns of the full reconstruction (bit
    for bit on the CPU), with padding or without; k outside 1..window is refused."""
    from tsanomaly.kernels import lstm_torch

    windows = torch.tensor(np.random.default_rng(5).normal(size=(37, WINDOW)), dtype=torch.float32)
    model = fitted._models[0]
    for pad in (False, True):
        full = lstm_torch.reconstruct(model, windows, batch_size=16, pad_batches=pad)
        for k in (1, 2, 5, WINDOW):
            part = lstm_torch.reconstruct(model, windows, batch_size=16, pad_batches=pad, newest=k)
            assert part.shape == (37, k)
            torch.testing.assert_close(part, full[:, WINDOW - k :], rtol=0, atol=0)
    for k in (0, WINDOW + 1):
        with pytest.raises(ValueError, match="outside"):
            lstm_torch.reconstruct(model, windows, batch_size=16, newest=k)


def test_a_point_only_reaches_the_window_after_it(fitted, panels):
    """A point at new position p changes exactly the scores p .. p + window - 1."""
    _, new = panels
    base = fitted.score(new).to_numpy()
    values = new.to_numpy().copy()
    values[1, 20] = np.nan
    scores = fitted.score(new.with_values(values)).to_numpy()
    assert np.isnan(scores[1, 20]) and np.isfinite(scores[1]).sum() == N_NEW - 1
    changed = ~np.isclose(scores, base, rtol=0, atol=0)
    np.testing.assert_array_equal(np.flatnonzero(changed[1]), np.arange(20, 20 + WINDOW))
    np.testing.assert_array_equal(scores[[0, 2, 3, 4]], base[[0, 2, 3, 4]])


def test_a_gap_after_the_fit_blanks_only_the_windows_that_reach_into_it(fitted, panels):
    _, new = panels
    whole = fitted.score(new).to_numpy()
    later = new.time_slice(start=new.index[30])  # 30 points missing between fit and new data
    part = fitted.score(later).to_numpy()
    # The window ending at the k-th new point holds k observed points: scored from
    # min_observed(window) on, equal to the scores without a gap once the gap is out of reach.
    first = min_observed(WINDOW) - 1
    assert np.isnan(part[:, :first]).all() and np.isfinite(part[:, first:]).all()
    np.testing.assert_array_equal(part[:, WINDOW - 1 :], whole[:, 30 + WINDOW - 1 :])


def test_read_only_input_is_copied_not_shared_with_torch(fitted, panels):
    # pandas' copy-on-write hands out read-only arrays; torch would wrap them as writable
    # tensors (and warn). The detector copies them instead, and scores them the same.
    _, new = panels
    read_only = np.array(new.to_numpy())
    read_only.setflags(write=False)
    tensor = fitted._tensor(read_only)
    tensor.add_(1.0)
    np.testing.assert_array_equal(read_only, new.to_numpy())
    frozen = tsanomaly.Panel(read_only, new.contexts, new.index)
    np.testing.assert_array_equal(fitted.score(frozen).to_numpy(), fitted.score(new).to_numpy())


def test_a_burst_scores_high_and_its_alert_carries_expected_value_and_cluster(fitted, panels):
    _, new = panels
    scores = fitted.score(new).to_numpy()
    burst = scores[2, 40:43]
    assert burst.min() > np.nanquantile(np.delete(scores, [2], axis=0), 0.99)
    alerts = fitted.alerts(new)
    top = alerts.iloc[0]
    assert top["ctx"] == "ctx2" and 40 <= new.index.get_loc(top["peak_time"]) <= 42
    observed = new.to_numpy()[2, new.index.get_loc(top["peak_time"])]
    assert top["observed"] == observed
    # Expected is in original units: positive and well below the 8x burst.
    assert 0 < top["expected"] < observed / 2
    assert top["cluster"] == 0


# ---------------------------------------------------------------------- scaling
def test_a_context_and_its_1000x_copy_score_alike():
    rng = np.random.default_rng(3)
    base = daily_counts(rng, 3, N_HIST + N_NEW)
    base[1, N_HIST + 10 : N_HIST + 12] *= 5
    values = np.vstack([base, 1000.0 * base])
    history, new = make_panels(values)
    det = tiny().fit(history)
    scores = det.score(new).to_numpy()
    np.testing.assert_allclose(scores[3:], scores[:3], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(det.scale_[3:], 1000.0 * det.scale_[:3], rtol=1e-12)


def test_flat_and_zero_contexts_get_finite_scores():
    rng = np.random.default_rng(4)
    values = daily_counts(rng, 3, N_HIST + N_NEW)
    values[1] = 7.0  # flat: MAD 0
    values[2] = 0.0  # all zero
    history, new = make_panels(values)
    det = tiny().fit(history)
    assert (det.scale_ > 0).all()
    assert np.isfinite(det.score(new).to_numpy()).all()


def test_one_spike_does_not_move_the_recent_error_but_a_sustained_shift_does(monkeypatch):
    """The second component is the median error of the newest window // 6 points: a one-point
    burst stays out of it (with the mean, it stayed in for window // 6 points at burst / (window
    // 6), and a one-hour burst alerted for window // 6 hours), a shift over most of them moves
    it. The network is replaced by one that reconstructs 0, so the errors are the values."""
    from tsanomaly.kernels import lstm_torch

    def zeros(model, windows, *, newest=None, **kw):
        return windows.new_zeros(windows.shape[0], windows.shape[1] if newest is None else newest)

    monkeypatch.setattr(lstm_torch, "reconstruct", zeros)
    window, recent = 24, 4
    det = tiny(window=window)
    det.device_, det.n_models_, det._models, det.recent_summary_ = "cpu", 1, [None], "median"
    z = torch.full((1, 120), 0.5, dtype=torch.float64)
    z[0, 40] = 20.0  # a spike
    z[0, 80:90] = 3.0  # a shift of 10 points
    errors = det._window_errors(z, torch.zeros(1, dtype=torch.int64))[0].numpy()
    end = np.arange(window - 1, 120)  # newest point of each window
    assert errors[end == 40, 0] == 20.0
    np.testing.assert_array_equal(errors[(end >= 40) & (end < 40 + recent), 1], 0.5)
    shifted = errors[(end >= 80 + recent // 2) & (end < 90), 1]
    np.testing.assert_array_equal(shifted, 3.0)
    missing = z.clone()
    missing[0, 60] = float("nan")  # the median of the observed recent points
    errors = det._window_errors(missing, torch.zeros(1, dtype=torch.int64))[0].numpy()
    np.testing.assert_array_equal(errors[(end > 60) & (end < 60 + recent), 1], 0.5)
    # A model file saved before recent_summary_ existed keeps the mean it was calibrated on.
    del det.recent_summary_
    errors = det._window_errors(z, torch.zeros(1, dtype=torch.int64))[0].numpy()
    np.testing.assert_allclose(errors[end == 41, 1], (3 * 0.5 + 20.0) / recent)


def test_contexts_with_few_held_out_windows_take_the_pooled_error_statistics():
    """Stride-1 held-out windows overlap: a 10-day hourly history with window 48 held out a single
    window, whose errors were each context's median (and a scale of 0, floored at 0.1 x the
    pool's: a threshold of 33 against 2 at 14 days). Each component needs MIN_HELD_OUT_ERRORS
    effectively independent errors: n newest-point errors count n, their recent medians 4/3 x
    (n + recent - 1) / recent; below, the context takes its cluster's pooled statistics."""
    from tsanomaly.detectors.lstm_ae import MIN_HELD_OUT_ERRORS

    assert MIN_HELD_OUT_ERRORS == 8
    values = daily_counts(np.random.default_rng(5), 5, 100)
    index = pd.date_range("2024-05-01", periods=100, freq="1h", name="ts")
    panel = tsanomaly.Panel(values, pd.Index([f"ctx{k}" for k in range(5)], name="ctx"), index)
    short = tiny().fit(panel.time_slice(end=index[69]))  # 14 held out: 3 windows, 3 and 2 independent
    np.testing.assert_array_equal(short.err_center_, short.pool_err_center_[short.cluster_])
    np.testing.assert_array_equal(short.err_scale_, short.pool_err_scale_[short.cluster_])
    longer = tiny().fit(panel)  # 20 held out: 9 windows; 9 newest-point errors, 4/3 x (9 + 1) / 2 = 6.7 recent
    own = longer.err_scale_[:, 0] != longer.pool_err_scale_[longer.cluster_, 0]
    assert own.all()
    np.testing.assert_array_equal(longer.err_scale_[:, 1], longer.pool_err_scale_[longer.cluster_, 1])
    np.testing.assert_array_equal(longer.err_center_[:, 1], longer.pool_err_center_[longer.cluster_, 1])
    # Window 48 (recent 8): the recent medians of 41 windows (6 stretches of 8, x 4/3) count 8.
    errs = np.zeros((3, 60, 2))
    errs[0, 41:], errs[1, 40:], errs[2, 7:] = np.nan, np.nan, np.nan
    count = tiny(window=48)._independent_errors(errs)
    np.testing.assert_allclose(count, [[41, 8], [40, 4 * 47 / 24], [7, 4 * 14 / 24]])
    assert (count[:, 1] >= MIN_HELD_OUT_ERRORS).tolist() == [True, False, False]


def test_sparse_count_contexts_get_the_mean_deviation_floor_on_their_error_scale():
    """The held-out errors of a mostly-zero context (Poisson 0.3 an hour) are nearly all alike
    but for its events: their MAD is about 0.001, so the error scale fell to the floor of 0.1 x
    the pooled scale, a single event scored 20 to 90, and the global threshold it set (82 here)
    hid real bursts elsewhere. The scale is floored at 1.2533 x the mean absolute deviation, as
    the input scaling is (tsanomaly.scaling.robust_sigma)."""
    from tsanomaly.scaling import nanmedian

    rng = np.random.default_rng(3)
    normal = daily_counts(rng, 6, N_HIST + N_NEW)
    # A quarter off whole counts, so that the count floor (the next tests) leaves this one to be seen.
    sparse = rng.poisson(0.3, (2, N_HIST + N_NEW)) + 0.25
    history, _ = make_panels(np.vstack([normal, sparse]))
    det = tiny().fit(history)
    z = det._scaled(history.to_numpy(), det.center_, det.scale_)
    n_val, n_train = det._split(history.n_times)
    errors = det._window_errors(z[:, det._first_held_out(n_val, n_train) :], det._tensor(det.cluster_)).numpy()
    dev = np.abs(errors - nanmedian(errors, axis=1)[:, None, :])
    assert (1.4826 * nanmedian(dev[6:], axis=1) < 0.01).all()  # the MAD alone: degenerate
    np.testing.assert_allclose(det.err_scale_[6:], 1.2533 * np.nanmean(dev[6:], axis=1))
    assert (det.err_scale_[6:] > 0.5 * det.pool_err_scale_).all()
    assert det.global_threshold_ < 20


def test_sparse_count_contexts_do_not_lift_the_global_threshold_above_the_others_anomalies():
    """A sparse count context (0.03 events an hour) rebuilds its zeros almost exactly, so each of
    its single events was many of its own error scales and set the one global threshold: with the
    defaults, 16 busy contexts alone had 2.0, beside 4 sparse ones 202, and a 6-hour outage and a
    tripled hour went unflagged. A count context's error scale is floored at half a count."""
    from tsanomaly.scaling import COUNT_SCALE_FLOOR

    n, n_fit = 24 * 16, 24 * 13
    x = busy_and_sparse_counts(n)
    dense, sparse = x[:16].copy(), x[16:].copy()
    x[1, n_fit + 30 : n_fit + 36] = 0  # an outage
    x[2, n_fit + 50] *= 3  # a burst
    alone = tiny(epochs=4, hidden=16).fit(dense[:, :n_fit])
    det = tiny(epochs=4, hidden=16).fit(x[:, :n_fit])
    assert det.global_threshold_ < 1.5 * alone.global_threshold_
    np.testing.assert_allclose(det.err_scale_[16:].min(axis=1), COUNT_SCALE_FLOOR / det.scale_[16:])
    flags = det.predict(x[:, n_fit:]).values
    assert flags[1, 30:36].any() and flags[2, 50] and not flags[16:].any()
    # Not counts (a tenth of a count off whole numbers): no floor, as before.
    shifted = tiny(epochs=4, hidden=16).fit(np.vstack([dense, sparse + 0.1])[:, :n_fit])
    assert (shifted.err_scale_[16:] < 0.5 * COUNT_SCALE_FLOOR / shifted.scale_[16:, None]).any()


def test_contexts_scored_cold_get_the_count_floor_on_their_pooled_error_scale():
    rng = np.random.default_rng(1)
    history, new = make_panels(daily_counts(rng, 4, N_HIST + N_NEW))
    det = tiny().fit(history)
    sparse = rng.poisson(0.03, (1, N_NEW)).astype(float)
    sparse[0, 10] = 2.0
    cold = tsanomaly.Panel(sparse, pd.Index(["new"], name="ctx"), new.index)
    rows = det.context_rows(cold)
    x, steps = det._with_past(cold.to_numpy(), cold, rows)
    _, scale, _, err_scale, cluster = det._row_state(x, rows, steps, N_NEW)
    np.testing.assert_allclose(err_scale[0], np.maximum(det.pool_err_scale_[cluster[0]], 0.5 / scale[0]))
    assert (err_scale[0] == 0.5 / scale[0]).all()  # the pooled scale of busy contexts is smaller


# ---------------------------------------------------------------------- persistence and reproducibility
@pytest.mark.parametrize("clusters", [None, 2])
def test_save_load_reproduces_scores_exactly(panels, tmp_path, clusters):
    history, new = panels
    det = tiny(clusters=clusters).fit(history)
    path = tmp_path / "lstm.tsa"
    det.save(path)
    loaded = tsanomaly.load(path)
    assert set(loaded.weights_) == set(det.weights_)
    np.testing.assert_array_equal(loaded.score(new).to_numpy(), det.score(new).to_numpy())
    pd.testing.assert_frame_equal(loaded.alerts(new), det.alerts(new))


def test_load_rejects_weights_of_the_wrong_shape(fitted, tmp_path):
    det = tsanomaly.load(_saved(fitted, tmp_path))
    det.weights_ = {name: value[..., :1] for name, value in det.weights_.items()}
    with pytest.raises(RuntimeError, match="size mismatch"):
        det._restore()


def _saved(det, tmp_path):
    path = tmp_path / "model.tsa"
    det.save(path)
    return path


def test_seeded_fits_are_reproducible_on_cpu(panels):
    history, new = panels
    a, b = tiny(seed=5).fit(history), tiny(seed=5).fit(history)
    for name in a.weights_:
        np.testing.assert_array_equal(a.weights_[name], b.weights_[name])
    np.testing.assert_array_equal(a.score(new).to_numpy(), b.score(new).to_numpy())
    c = tiny(seed=6).fit(history)
    assert any(not np.array_equal(a.weights_[n], c.weights_[n]) for n in a.weights_)


@pytest.mark.parametrize("params, need", [
    (dict(), 15),  # 15 - round(0.2 * 15) = 12 training points: one window
    (dict(validation_fraction=0.0), WINDOW),
    (dict(validation_fraction=0.5, window=5), 9),  # round(4.5) = 4 held out
    (dict(validation_fraction=0.75, window=4), 14),  # round(10.5) = 10 held out
])
def test_min_fit_times_is_the_shortest_history_that_fits_and_scores(panels, params, need):
    """The training part of the shortest history holds one window; one point less raises."""
    history, _ = panels
    det = tiny(epochs=1, **params)
    assert det.min_fit_times() == need
    with pytest.raises(ValueError, match="needs at least"):
        tiny(epochs=1, **params).fit(history.time_slice(end=history.index[need - 2]))
    scores = det.fit_score(history.time_slice(end=history.index[need - 1])).to_numpy()
    assert np.isfinite(scores).any()


def test_max_train_windows_trains_each_network_on_a_seeded_sample(panels):
    """A cap below the training set trains on that many windows, the same ones each time; a cap
    at or above it changes nothing, bit for bit."""
    history, new = panels
    full = tiny(epochs=1).fit(history)
    n = int(full.n_train_windows_[0])
    same = tiny(epochs=1, max_train_windows=n).fit(history)
    for name in full.weights_:
        np.testing.assert_array_equal(same.weights_[name], full.weights_[name])
    capped = tiny(epochs=1, max_train_windows=n // 3).fit(history)
    again = tiny(epochs=1, max_train_windows=n // 3).fit(history)
    assert capped.n_train_windows_.tolist() == [n // 3]
    assert any(not np.array_equal(capped.weights_[k], full.weights_[k]) for k in full.weights_)
    np.testing.assert_array_equal(capped.score(new).to_numpy(), again.score(new).to_numpy())
    # a network per cluster draws its own sample, each of at most the cap
    clustered = tiny(epochs=1, clusters=2, max_train_windows=n // 4).fit(history)
    assert (clustered.n_train_windows_ <= n // 4).all() and clustered.n_train_windows_.sum() > 0


def test_a_capped_fit_trains_on_the_seeded_sample_of_every_usable_window(two_shapes, monkeypatch):
    """The capped fit copies only its sample out of the history; the windows it trains on are
    exactly those the seeded draw picks from the full list of usable training windows (at least
    min_observed points observed: the list an uncapped fit trains on), in the same order, for
    each network."""
    from tsanomaly.kernels import lstm_torch

    history, _ = two_shapes
    values = history.values.copy()
    values[1, 30:33] = np.nan  # windows through this gap are left out (9 of 12 points observed)
    values[6, 100] = np.nan  # windows through this one train (11 of 12 observed)
    history = tsanomaly.Panel(values, history.contexts, history.index)
    trained = []  # the windows handed to each network's training, in fit order
    real_train = lstm_torch.train_model

    def recording_train(model, windows, **kwargs):
        trained.append(windows.clone())
        return real_train(model, windows, **kwargs)

    monkeypatch.setattr(lstm_torch, "train_model", recording_train)

    tiny(epochs=1, clusters=2, max_train_windows=None).fit(history)
    every = trained[:]
    trained.clear()
    cap = 50
    tiny(epochs=1, clusters=2, max_train_windows=cap).fit(history)
    assert len(trained) == len(every) == 2
    # the 4 windows through x[6, 100] (starting at 90, 93, 96, 99) train
    assert sum(int(torch.isnan(full).any(dim=1).sum()) for full in every) == 4
    for k, (sample, full) in enumerate(zip(trained, every)):
        assert ((~torch.isnan(full)).sum(dim=1) >= min_observed(WINDOW)).all()
        keep = torch.randperm(len(full), generator=torch.Generator().manual_seed(k))[:cap].sort().values
        torch.testing.assert_close(sample, full[keep], rtol=0, atol=0, equal_nan=True)


def test_a_cap_on_the_training_windows_keeps_the_two_step_fit_equal_to_one_fit(two_shapes):
    """The sample is drawn from the windows in canonical context order: a fit of the global step
    on the contexts in another order, then of the context step, equals one fit, bit for bit."""
    history, new = two_shapes
    one = tiny(epochs=1, max_train_windows=40).fit(history)
    shuffled = history.take(np.random.default_rng(0).permutation(history.n_contexts))
    other = tiny(epochs=1, max_train_windows=40).fit(shuffled)
    for name in one.weights_:
        np.testing.assert_array_equal(other.weights_[name], one.weights_[name])


def test_the_held_out_tail_is_never_trained_on(panels):
    """Shuffling the last validation_fraction of the history (which leaves every context's
    median and MAD, hence the scaling, unchanged) changes the error calibration, not the weights."""
    history, _ = panels
    values = history.to_numpy().copy()
    n_val = round(0.2 * history.n_times)
    rng = np.random.default_rng(1)
    values[:, -n_val:] = values[:, -n_val:][:, rng.permutation(n_val)]
    a = tiny(validation_fraction=0.2).fit(history)
    b = tiny(validation_fraction=0.2).fit(history.with_values(values))
    np.testing.assert_array_equal(a.scale_, b.scale_)
    for name in a.weights_:
        np.testing.assert_array_equal(a.weights_[name], b.weights_[name])
    assert not np.array_equal(a.err_scale_, b.err_scale_)


def test_fit_leaves_the_global_torch_rng_alone(panels):
    history, _ = panels
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny().fit(history)
    np.testing.assert_array_equal(torch.rand(3).numpy(), expected.numpy())


# ---------------------------------------------------------------------- two-step fit (tsanomaly.spark)
def test_fit_is_the_global_step_then_the_context_step_and_shards_agree(two_shapes):
    """What tsanomaly.spark does: the global state once, then per-context state shard by shard."""
    history, _ = two_shapes
    reference = tiny(clusters=2).fit(history)
    det = tiny(clusters=2)
    det.device_ = "cpu"
    det._fit_global(history.values, history)
    det._fit_contexts(history.values, history)  # the global step's own contexts (as in the sample task)
    global_before = {n: np.copy(getattr(det, n)) for n in ("cluster_centers_", "pool_err_center_", "pool_err_scale_")}
    for rows in ([0, 1, 2], [3, 4, 5, 6, 7]):  # two shards, fitted apart
        shard = history.take(rows)
        train = det._fit_contexts(shard.values, shard)
        np.testing.assert_array_equal(train, reference.fit_score(history).to_numpy()[rows])
        for name in tiny().per_context_attributes:
            np.testing.assert_array_equal(getattr(det, name), getattr(reference, name)[rows], err_msg=name)
    for name, value in global_before.items():  # the context step never changes the global state
        np.testing.assert_array_equal(getattr(det, name), value)


def test_errors_reconstructed_a_few_contexts_at_a_time_give_the_same_fit_and_scores(two_shapes, monkeypatch):
    """Fit and score reconstruct and standardise the windows a block of contexts at a time,
    so that the errors of a large panel's whole history are never held at once: the block
    size must change nothing, neither the fitted state nor a score."""
    from tsanomaly.detectors import lstm_ae

    history, new = two_shapes
    reference = tiny(clusters=2)
    reference_train = reference.fit_score(history).to_numpy()
    reference_new = reference.score(new).to_numpy()
    n_windows = history.n_times - WINDOW + 1
    monkeypatch.setattr(lstm_ae, "_MAX_SCORE_WINDOWS", 3 * n_windows)  # blocks of 3 contexts: 3 + 3 + 2
    blocked = tiny(clusters=2)
    assert len(blocked._row_blocks(history.n_contexts, n_windows)) == 3
    np.testing.assert_array_equal(blocked.fit_score(history).to_numpy(), reference_train)
    for name in (*reference.per_context_attributes, "pool_err_center_", "pool_err_scale_"):
        np.testing.assert_array_equal(getattr(blocked, name), getattr(reference, name), err_msg=name)
    np.testing.assert_array_equal(blocked.score(new).to_numpy(), reference_new)


def test_fit_does_not_depend_on_the_order_of_the_contexts(two_shapes):
    history, _ = two_shapes
    perm = np.random.default_rng(2).permutation(history.n_contexts)
    a, b = tiny(clusters=2).fit(history), tiny(clusters=2).fit(history.take(perm))
    for name in a.weights_:
        np.testing.assert_array_equal(a.weights_[name], b.weights_[name])
    for name in a.per_context_attributes:
        np.testing.assert_array_equal(getattr(a, name)[perm], getattr(b, name), err_msg=name)
    assert a.global_threshold_ == b.global_threshold_


def test_global_state_trained_on_a_sample_serves_every_context(two_shapes):
    """A sample of contexts trains the weights; every context then gets its own state."""
    history, new = two_shapes
    det = tiny(clusters=2)
    det.device_ = "cpu"
    sample = history.take([0, 1, 4, 5])
    det._fit_global(sample.values, sample)
    train = det._fit_contexts(history.values, history)
    assert train.shape == history.shape and np.isfinite(train[:, WINDOW - 1 :]).all()
    assert len(set(det.cluster_[:4])) == 1 and len(set(det.cluster_[4:])) == 1  # nearest centre


def test_split_state_keeps_cluster_centres_global():
    """With as many clusters as contexts, cluster_centers_ still is global state, not per-context."""
    from tsanomaly.spark import split_state

    rng = np.random.default_rng(5)
    history, _ = make_panels(daily_counts(rng, 2, N_HIST + N_NEW))
    det = tiny(clusters=2).fit(history)
    global_state, rows = split_state(det)
    per_context = {spec["attribute"] for spec in global_state["per_context"]}
    assert per_context == set(det.per_context_attributes) | {"threshold_"}
    assert {"cluster_centers_", "pool_err_center_", "n_train_windows_"} <= set(global_state["state"])


# ---------------------------------------------------------------------- clusters
@pytest.fixture(scope="module")
def two_shapes():
    """Contexts 0-3 peak at hour 3, contexts 4-7 at hour 15 (opposite daily shapes)."""
    rng = np.random.default_rng(11)
    phase = [3] * 4 + [15] * 4
    values = daily_counts(rng, 8, N_HIST + N_NEW, phase=phase, level=rng.uniform(50, 5000, 8))
    return make_panels(values)


def test_clustered_fit_puts_every_context_in_exactly_one_cluster(two_shapes):
    history, new = two_shapes
    det = tiny(clusters=2).fit(history)
    assert det.cluster_.shape == (history.n_contexts,)
    assert set(np.unique(det.cluster_)) == {0, 1}
    assert det.n_models_ == 2 and det.cluster_centers_.shape == (2, 24)
    # One network per cluster: each weight name appears under exactly one cluster prefix.
    prefixes = {name.split(".", 1)[0] for name in det.weights_}
    assert prefixes == {"c0", "c1"}
    # The daily shapes are opposite, so the clusters are exactly the two groups.
    assert len(set(det.cluster_[:4])) == 1 and len(set(det.cluster_[4:])) == 1
    assert det.cluster_[0] != det.cluster_[4]
    assert np.isfinite(det.score(new).to_numpy()).all()


def test_contexts_without_a_training_window_draw_no_cluster_of_their_own(two_shapes):
    """A context with no data in the history has a made-up (flat) profile: k-means gave it a
    centre of its own, whose network had no window to train on and scored unseen contexts
    near it with untrained weights. The centres come from the contexts that train."""
    history, _ = two_shapes
    values = history.to_numpy().copy()
    values[[0, 4]] = np.nan  # one context of each shape without data
    det = tiny(clusters=2).fit(history.with_values(values))
    assert det.n_models_ == 2 and (det.n_train_windows_ > 0).all()
    # The two centres are still the two daily shapes: each trainable context sits with its group.
    assert len(set(det.cluster_[1:4])) == 1 and len(set(det.cluster_[5:])) == 1
    assert det.cluster_[1] != det.cluster_[5]
    flat = det.cluster_centers_.std(axis=1)
    assert (flat > 0.5).all(), f"a centre is flat (std {flat}): drawn by the contexts without data"


def test_more_clusters_than_contexts_with_a_training_window_is_refused(two_shapes):
    history, _ = two_shapes
    values = history.to_numpy().copy()
    values[2:] = np.nan
    with pytest.raises(ValueError, match="clusters=3 exceeds the number of contexts with a training window"):
        tiny(clusters=3).fit(history.with_values(values))


def test_a_history_without_any_training_window_is_refused(panels):
    history, _ = panels
    values = history.to_numpy().copy()
    values[:, ::5] = np.nan  # 2 or 3 gaps in every stretch of WINDOW points: fewer than 11 observed
    with pytest.raises(ValueError, match="no context has a training window"):
        tiny().fit(history.with_values(values))


def test_windows_with_scattered_gaps_train_as_they_score(panels):
    """A training window needs min_observed(window) observed points, as a scored window does; it
    used to need all of them, so scattered gaps (a few percent of the points) silently left
    the networks a handful of windows, and at 15% the fit was refused."""
    history, _ = panels
    values = history.to_numpy().copy()
    rng = np.random.default_rng(3)
    values[rng.random(values.shape) < 0.04] = np.nan
    n_train = history.n_times - round(0.2 * history.n_times)
    observed = np.isfinite(values[:, :n_train])
    starts = range(0, n_train - WINDOW + 1, WINDOW // 4)
    counts = np.array([[observed[r, j : j + WINDOW].sum() for j in starts] for r in range(len(values))])
    assert (counts < WINDOW).mean() > 0.25  # a quarter of the windows hold a gap
    det = tiny().fit(history.with_values(values))
    assert det.n_train_windows_.tolist() == [int((counts >= min_observed(WINDOW)).sum())]
    assert all(np.isfinite(w).all() for w in det.weights_.values()) and np.isfinite(det.train_loss_).all()
    again = tiny().fit(history.with_values(values))  # seeded: the same weights, gaps or not
    for name in det.weights_:
        np.testing.assert_array_equal(again.weights_[name], det.weights_[name])


def test_a_history_with_few_usable_training_windows_fits_with_a_warning(panels):
    history, _ = panels
    values = history.to_numpy().copy()
    values[np.random.default_rng(4).random(values.shape) < 0.15] = np.nan  # 1 in 4 windows of 12 usable
    with pytest.warns(UserWarning, match=r"only \d+ of the \d+ training windows with data .* at least 11 of their 12"):
        det = tiny().fit(history.with_values(values))
    assert det.n_train_windows_[0] > 0


def test_missing_points_are_left_out_of_the_training_loss():
    """The loss of a batch is the mean squared error over its observed points; a missing point
    enters the network as 0. (lr so small that the weights do not move: the first epoch's loss
    is the initial model's.)"""
    from tsanomaly.kernels import lstm_torch

    rng = np.random.default_rng(0)
    windows = torch.tensor(rng.normal(size=(16, WINDOW)), dtype=torch.float32)
    windows[3, 5] = windows[7, 0] = windows[7, 11] = float("nan")
    model = lstm_torch.build_model(4, 1, 0, "cpu")
    with torch.no_grad():
        recon = model(torch.nan_to_num(windows))
    observed = ~torch.isnan(windows)
    expected = float(((recon - torch.nan_to_num(windows)) ** 2)[observed].mean())
    loss = lstm_torch.train_model(model, windows, epochs=1, batch_size=16, lr=1e-30, seed=0)
    assert np.isfinite(loss).all()
    np.testing.assert_allclose(loss[0], expected, rtol=1e-5)
    assert all(np.isfinite(v).all() for v in lstm_torch.model_arrays(model).values())


def test_unseen_context_joins_the_nearest_cluster(two_shapes):
    history, new = two_shapes
    det = tiny(clusters=2).fit(history.take([0, 1, 2, 4, 5, 6]))
    values = new.to_numpy().copy()
    values[[3, 7], 50:53] *= 10  # bursts in the two unseen contexts, one of each shape
    alerts = det.alerts(new.with_values(values))
    clusters = alerts.groupby("ctx")["cluster"].first()
    assert clusters["ctx3"] == det.cluster_[0]  # shape of contexts 0-3
    assert clusters["ctx7"] == det.cluster_[3]  # shape of contexts 4-7 (row 3 of the fit is ctx4)
    assert np.isfinite(det.score(new).to_numpy()[:, WINDOW - 1 :]).all()


# ---------------------------------------------------------------------- optional torch, errors
def test_without_torch_construction_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(ImportError, match=r'pip install "tsanomaly\[torch\]"'):
        LSTMAutoencoderDetector()


def test_importing_tsanomaly_does_not_import_torch():
    code = (
        "import sys, tsanomaly, tsanomaly.detectors.lstm_ae; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cuda_without_a_torch_gpu_raises_a_clear_error(monkeypatch):
    """CuPy may see a GPU that a CPU-only PyTorch cannot use: "cuda" raises, "auto" falls back."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    det = tiny(device="cuda")
    det.device_ = "cuda"  # what the base sets when CuPy sees a GPU
    with pytest.raises(backend.GPUUnavailableError, match="PyTorch cannot use it"):
        det._resolve_torch_device()
    det = tiny(device="auto")
    det.device_ = "cuda"
    assert det._resolve_torch_device() == "cpu"


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(window=1), "window"),
        (dict(hidden=0), "hidden"),
        (dict(stride=0), "stride"),
        (dict(validation_fraction=1.0), "validation_fraction"),
        (dict(precision="half"), "precision"),
        (dict(clusters=9), "clusters"),
        (dict(window=500), "window=500"),
        # An infinite learning rate (1e400 read from JSON is inf) was accepted and made every
        # weight and every score NaN.
        (dict(lr=float("inf")), "lr must be a finite number > 0, got inf"),
        (dict(lr=float("1e400")), "lr must be a finite number > 0, got inf"),
        (dict(lr=float("nan")), "lr must be a finite number > 0"),
        (dict(lr=True), "lr must be a finite number > 0"),
        (dict(lr="0.01"), "lr must be a finite number > 0"),
        (dict(validation_fraction=float("nan")), r"validation_fraction must be a number in \[0, 1\)"),
        (dict(validation_fraction=True), r"validation_fraction must be a number in \[0, 1\)"),
        (dict(epochs=True), "epochs must be an integer >= 0"),
        (dict(seed=np.True_), "seed must be a non-negative integer"),
        (dict(max_train_windows=0), "max_train_windows must be an integer >= 1, got 0"),
        (dict(max_train_windows=2.5), "max_train_windows must be an integer >= 1, got 2.5"),
        # Seeds of 2**32 and more failed inside tslearn's k-means (with clusters), 2**64 in PyTorch.
        (dict(seed=2**32), r"seed must be at most 2\*\*32 - 1 = 4294967295, got 4294967296"),
        (dict(seed=2**32, clusters=2), r"seed must be at most 2\*\*32 - 1"),
        (dict(seed=2**64), r"seed must be at most 2\*\*32 - 1"),
        # Above float32's largest value / 10 PyTorch's optimiser raised a RuntimeError (its first step is 10 x lr).
        (dict(lr=3.5e38), r"lr must be at most 3.402823e\+37 \(Adam's first step, 10 x lr, must be a float32\), "
                          r"got 3.5e\+38"),
        (dict(lr=1e38), r"lr must be at most 3.402823e\+37"),
        # A finite rate that diverges: every weight NaN, and a CalibrationWarning blaming the history.
        (dict(lr=1e20), r"the training of network 0 diverged \(its loss or weights are not finite\) with lr=1e\+20"),
    ],
)
def test_bad_parameters_are_rejected_at_fit(panels, params, message):
    history, _ = panels
    with pytest.raises(ValueError, match=message):
        tiny(**params).fit(history)


def test_numeric_parameters_of_numpy_types_are_accepted():
    # NumPy scalars (read from an array or a config) are numbers like any other.
    tiny(lr=np.float32(3e-3), validation_fraction=np.float64(0.25), seed=np.int64(3), epochs=np.int32(1))._validate()


def test_the_largest_seed_fits_with_clusters(two_shapes):
    history, _ = two_shapes
    det = tiny(epochs=1, seed=2**32 - 1, clusters=2).fit(history)
    assert det.n_models_ == 2


# ---------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.torch_cuda
@pytest.mark.parametrize("precision", ["float32", "mixed"])
def test_gpu_scores_agree_with_cpu_within_the_stated_tolerance(panels, tmp_path, precision):
    history, new = panels
    cpu = tiny(hidden=16).fit(history)
    gpu = tsanomaly.load(_saved(cpu, tmp_path), device="cuda")
    gpu.set_params(precision=precision)
    assert gpu.device_ == "cuda"
    rtol, atol = TOLERANCE[precision]
    np.testing.assert_allclose(
        gpu.score(new).to_numpy(), cpu.score(new).to_numpy(), rtol=rtol, atol=atol, equal_nan=True
    )


@pytest.mark.gpu
@pytest.mark.torch_cuda
def test_gpu_fit_runs_on_the_device_and_scores_like_its_cpu_copy(panels, tmp_path):
    history, new = panels
    gpu = tiny(hidden=16, device="cuda", precision="float32").fit(history)
    assert gpu.device_ == "cuda"
    assert next(gpu._models[0].parameters()).device.type == "cuda"
    cpu = tsanomaly.load(_saved(gpu, tmp_path), device="cpu")
    rtol, atol = TOLERANCE["float32"]
    np.testing.assert_allclose(
        backend.to_numpy(gpu.score(new).values), cpu.score(new).to_numpy(), rtol=rtol, atol=atol, equal_nan=True
    )


def test_the_memory_benchmark_reaches_the_first_training(tmp_path):
    """benchmarks/lstm_memory.py stops a fit where the first network would train; it relies on
    the fit calling ``lstm_torch.train_model``, which this keeps in view."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "lstm_memory.py"
    done = subprocess.run(
        [sys.executable, str(script), "--contexts", "300", "--max-train-windows", "100"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert "up to the first network's training, on windows of shape (100, 48)" in done.stdout


def test_a_context_without_data_at_fit_is_scored_like_an_unseen_one(panels):
    """A context in the history with no observation got scaling 0 and 1: its raw counts were read
    as scaled units and alerted far above every threshold. It starts cold now, as under a label
    the model never saw."""
    history, new = panels
    values = history.values.copy()
    values[1] = np.nan
    blank = tsanomaly.Panel(values, history.contexts, history.index)
    det = tiny(epochs=1).fit(blank)
    assert np.isnan(det.center_[1]) and np.isfinite(np.delete(det.center_, 1)).all()
    assert det.fitted_without_data().tolist() == [k == 1 for k in range(history.n_contexts)]
    scores = det.score(new).to_numpy()
    renamed = tsanomaly.Panel(new.values[[1]], pd.Index(["never seen"], name=new.contexts.name), new.index)
    np.testing.assert_array_equal(scores[1], det.score(renamed).to_numpy()[0])
    assert np.isfinite(scores[1]).any()


def test_the_precision_of_a_fitted_model_may_change_without_a_new_fit(panels):
    # set_params drops the fitted state when a parameter changes; the precision is how scores are
    # computed (a float32 fit scored in mixed precision on a GPU), not what was fitted.
    history, new = panels
    det = tiny().fit(history)
    expected = det.score(new).to_numpy()
    np.testing.assert_array_equal(det.set_params(precision="float32").score(new).to_numpy(), expected)
    with pytest.raises(tsanomaly.NotFittedError):
        det.set_params(hidden=det.hidden + 1).score(new)


def test_update_after_each_scored_batch_scores_as_one_call_and_survives_save_and_load(tmp_path):
    # update(batch) moves the kept window tail on: the next batch follows it at once, as in one call.
    rng = np.random.default_rng(5)
    values = daily_counts(rng, 4, N_HIST + N_NEW)
    values[1, N_HIST + 3:N_HIST + 5] = np.nan
    index = pd.date_range("2024-01-01", periods=N_HIST + N_NEW, freq="h")
    panel = tsanomaly.Panel(values, pd.Index(list("abcd"), name="asn"), index)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det = tiny().fit(panel.loc[: index[N_HIST - 1]])
    once = det.score(panel.loc[index[N_HIST]:]).to_numpy()
    cuts = [N_HIST, N_HIST + 5, N_HIST + 17, N_HIST + N_NEW]
    got = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", tsanomaly.HistoryGapWarning)
        for a, b in zip(cuts[:-2], cuts[1:-1]):
            batch = panel.loc[index[a]:index[b - 1]]
            got.append(det.score(batch).to_numpy())
            det.update(batch)
    det.save(tmp_path / "lstm.tsa")
    loaded = tsanomaly.load(tmp_path / "lstm.tsa")
    assert (loaded.fit_end_, loaded.n_fit_times_) == (det.fit_end_, det.n_fit_times_ ) == (
        index[cuts[2] - 1].isoformat(), cuts[2])
    last = panel.loc[index[cuts[2]]:]
    got.append(loaded.score(last).to_numpy())
    np.testing.assert_array_equal(got[-1], det.score(last).to_numpy())
    got = np.concatenate(got, axis=1)
    assert np.isfinite(once).sum() > 0.8 * once.size
    # The same windows in other batches: bit for bit or within rounding (see LSTMAutoencoderDetector._update).
    np.testing.assert_allclose(got, once, rtol=1e-12, atol=1e-12)


def test_a_damaged_recent_summary_is_refused_when_scoring(panels):
    # A Spark model's global state is not checked like a model file: "bogus" scored with the median.
    history, new = panels
    det = tiny().fit(history)
    det.recent_summary_ = "bogus"
    with pytest.raises(ValueError, match="recent_summary_ is 'bogus'"):
        det.score(new)
