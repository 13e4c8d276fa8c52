"""STLDetector: scoring against the expectation carried from the fit (tsanomaly.detectors.stl).

The conformance suite (tests/test_conformance.py) checks the shared API; these tests check
what this detector promises: attacks are not absorbed by a re-decomposition, the
low-variance score finds a scripted, regular stretch, the level-shift score a sustained rise,
sparse contexts keep an expectation near their counts, the threshold is calibrated on
out-of-sample scores, gaps and short contexts are handled.
"""
from __future__ import annotations

import copy
import warnings

import numpy as np
import pandas as pd
import pytest

import tsanomaly
from tsanomaly import backend
from tsanomaly.datasets.synthetic import make_security_panel
from tsanomaly.detectors.stl import STLDetector, _rolling_stats, decompose

DAY = 24


def _panel(values, start="2024-03-01"):
    index = pd.date_range(start, periods=values.shape[1], freq="1h", name="ts")
    contexts = pd.Index([f"asn{k}" for k in range(values.shape[0])], name="asn")
    return tsanomaly.Panel(values, contexts, index)


def _counts(rng, n_ctx, n_days, level=200.0, amplitude=0.6):
    """Poisson counts with a daily cycle; levels differ by context."""
    t = np.arange(n_days * DAY)
    levels = level * rng.uniform(0.5, 2.0, size=(n_ctx, 1))
    rate = levels * (1 + amplitude * np.sin(2 * np.pi * t / DAY))
    return rng.poisson(rate).astype(float), rate


def _split(values, n_hist):
    full = _panel(values)
    return full.time_slice(end=full.index[n_hist - 1]), full.time_slice(start=full.index[n_hist])


def _redecomposed_z(history, new):
    """|robust z| of the remainder when history and new points are decomposed together (log1p)."""
    values = np.log1p(np.concatenate([history.to_numpy(), new.to_numpy()], axis=1))
    rem = decompose(values, periods=24, device="cpu").remainder
    n = history.n_times
    med = np.nanmedian(rem[:, :n], axis=1, keepdims=True)
    mad = 1.4826 * np.nanmedian(np.abs(rem[:, :n] - med), axis=1, keepdims=True)
    return np.abs(rem[:, n:] - med) / mad


def test_slow_rise_is_not_absorbed_into_the_trend():
    rng = np.random.default_rng(0)
    values, rate = _counts(rng, 4, 24)
    n_hist = 21 * DAY
    ramp = np.linspace(0, 1.0, 3 * DAY)  # +100% over three days
    values[:, n_hist:] = rng.poisson(rate[:, n_hist:] * (1 + ramp))
    history, new = _split(values, n_hist)
    det = STLDetector(periods=24, variance_window=0, device="cpu").fit(history)
    scores = det.score(new).to_numpy()
    last_day = slice(2 * DAY, 3 * DAY)
    # log1p(2) ~ 0.69 above the expectation, against a noise scale near 0.07: far out
    assert np.median(scores[:, last_day]) > 5
    # decomposing history and new together hides most of it in the trend
    assert np.median(_redecomposed_z(history, new)[:, last_day]) < 0.5 * np.median(scores[:, last_day])


def test_night_time_bot_is_not_absorbed_into_the_seasonal_shape():
    rng = np.random.default_rng(1)
    values, rate = _counts(rng, 3, 25)
    n_hist = 21 * DAY
    hour = np.arange(values.shape[1]) % DAY
    night = (hour >= 16) & (hour < 22) & (np.arange(values.shape[1]) >= n_hist)  # the quiet hours of this cycle
    values[:, night] = rng.poisson(rate.max(axis=1, keepdims=True) * np.ones((1, night.sum())))
    history, new = _split(values, n_hist)
    # the deviation score alone (a day with a filled-in night is also less variable: that is the other score)
    det = STLDetector(periods=24, variance_window=0, device="cpu").fit(history)
    scores = det.score(new).to_numpy()
    bot = night[n_hist:]
    assert np.min(np.median(scores[:, bot], axis=1)) > 5
    assert np.median(scores[:, ~bot]) < 2
    flags = det.predict(new).to_numpy()
    assert flags[:, bot].mean() > 0.8 and flags[:, ~bot].mean() < 0.05


def test_regular_stretch_fires_the_low_variance_score():
    """A farm posting a near-constant count near the usual level: small deviations, no noise."""
    rng = np.random.default_rng(2)
    values, rate = _counts(rng, 3, 24, level=100.0, amplitude=0.05)
    n_hist = 21 * DAY
    farm = slice(n_hist + DAY, n_hist + 3 * DAY)
    values[:, farm] = np.round(rate[:, farm].mean(axis=1, keepdims=True)) + rng.integers(0, 2, size=(3, 2 * DAY))
    history, new = _split(values, n_hist)
    det = STLDetector(periods=24, device="cpu").fit(history)
    parts = det._track(new.to_numpy(), new, det.context_rows(new))
    inside = slice(2 * DAY, 3 * DAY)  # windows fully inside the farm
    assert np.median(parts["deviation"][:, inside]) < 3
    assert np.min(parts["low_variance"][:, inside]) > 5
    assert np.max(parts["low_variance"][:, :DAY]) < 4  # normal data before it
    alerts = det.alerts(new)
    in_farm = (alerts["peak_time"] >= new.index[inside.start]) & (alerts["peak_time"] <= new.index[inside.stop - 1])
    assert in_farm.any() and (alerts.loc[in_farm, "fired"] == "low_variance").all()
    off = STLDetector(periods=24, variance_window=0, device="cpu").fit(history).score(new).to_numpy()
    assert np.median(off[:, inside]) < 3  # without it the farm would pass


def _one_burst():
    """Two contexts of hourly counts, 21 days of history and a day in which asn1 has a 5x burst at
    10:00: (values, rate, n_hist, history, new, fitted STL detector)."""
    rng = np.random.default_rng(3)
    values, rate = _counts(rng, 2, 22)
    n_hist = 21 * DAY
    values[1, n_hist + 10] = 5 * rate[1, n_hist + 10]
    history, new = _split(values, n_hist)
    return values, rate, n_hist, history, new, STLDetector(periods=24, device="cpu").fit(history)


def test_alert_explanations_describe_the_expectation():
    values, rate, n_hist, history, new, det = _one_burst()
    alerts = det.alerts(new)
    top = alerts.iloc[0]
    assert top["asn"] == "asn1" and top["peak_time"] == new.index[10] and top["fired"] == "deviation"
    assert top["observed"] == values[1, n_hist + 10]
    assert abs(top["expected"] - rate[1, n_hist + 10]) < 0.15 * rate[1, n_hist + 10]
    np.testing.assert_allclose(top["trend"] + top["seasonal"], top["expected"])


def test_alerts_with_given_scores_refuse_a_negative_count_in_a_context_that_did_not_alert():
    # Explaining only the alerting contexts checked only their counts: a panel with -1 elsewhere,
    # which scoring refuses under log1p, got an alerts table.
    _, _, _, _, new, det = _one_burst()
    scores = det.score(new)
    assert set(det.alerts(new, scores=scores)["asn"]) == {"asn1"}
    broken = new.to_numpy().copy()
    broken[0, 3] = -1.0
    with pytest.raises(ValueError, match=r"needs counts >= 0, got -1.0 for context 'asn0'"):
        det.alerts(tsanomaly.Panel(broken, new.contexts, new.index), scores=scores)


def test_direction_selects_rises_or_drops():
    rng = np.random.default_rng(4)
    values, rate = _counts(rng, 2, 22)
    n_hist = 21 * DAY
    values[0, n_hist + 5] = 0.1 * rate[0, n_hist + 5]  # a drop
    history, new = _split(values, n_hist)
    scores = {}
    for direction in ("up", "down", "both"):
        det = STLDetector(periods=24, direction=direction, variance_window=0, device="cpu").fit(history)
        scores[direction] = det.score(new).to_numpy()[0, 5]
    assert scores["down"] > 10 and scores["both"] == scores["down"] and scores["up"] < -10


def test_constant_series_score_zero_without_nan():
    values = np.vstack([np.full(22 * DAY, 50.0), np.zeros(22 * DAY)])
    history, new = _split(values, 21 * DAY)
    for transform in ("log1p", "sqrt", None):
        det = STLDetector(periods=24, transform=transform, device="cpu").fit(history)
        scores = det.score(new).to_numpy()
        assert np.isfinite(scores).all(), transform
        np.testing.assert_allclose(scores, 0.0, atol=1e-6, err_msg=str(transform))


def test_gaps_score_nan_and_short_contexts_are_skipped_with_one_warning():
    rng = np.random.default_rng(5)
    values, _ = _counts(rng, 4, 22)
    n_hist = 21 * DAY
    values[1, : n_hist - 30] = np.nan  # 30 observed hours < two days
    values[2] = np.nan
    values[3, 40:50] = np.nan  # a gap in the history: filled for the fit
    values[0, n_hist + 3] = np.nan  # a gap in the new data
    history, new = _split(values, n_hist)
    with pytest.warns(UserWarning, match="2 of 4 contexts have fewer than 48 observed points") as record:
        det = STLDetector(periods=24, device="cpu").fit(history)
    assert sum("contexts have fewer" in str(w.message) for w in record) == 1
    assert list(det.skipped_contexts_) == ["asn1", "asn2"]
    scores = det.score(new).to_numpy()
    assert np.isnan(scores[1]).all() and np.isnan(scores[2]).all()
    assert np.isnan(scores[0, 3]) and np.isfinite(np.delete(scores[0], 3)).all()
    assert np.isfinite(scores[3]).all()


@pytest.mark.parametrize("transform", [None, "log1p"])
def test_a_phase_never_observed_in_the_history_takes_the_contexts_scale(transform):
    """A context never observed at 03:00 in the history had a NaN scale there (its shrinkage
    towards the context's scale computed 0 x NaN): a burst at 03:00 scored NaN without a
    transform, and only by the count model with one. With no observation of its own, the phase's
    scale is the shrinkage target, the context's scale."""
    rng = np.random.default_rng(0)
    values, _ = _counts(rng, 2, 22)
    n_hist = 21 * DAY
    values[0, 3:n_hist:DAY] = np.nan
    values[:, n_hist + 3] *= 10  # a burst at 03:00 in both contexts
    history, new = _split(values, n_hist)
    det = STLDetector(periods=24, transform=transform, device="cpu").fit(history)
    assert bool(det.robust_fit_[0])
    z = history.to_numpy() if transform is None else np.log1p(history.to_numpy())
    remainder = decompose(z, periods=24, device="cpu").remainder[0]
    overall = 1.4826 * np.nanmedian(np.abs(remainder - np.nanmedian(remainder)))
    assert det.scale_[0, 3] == pytest.approx(overall * det.scale_inflation_[0], rel=1e-9)
    scores = det.score(new).to_numpy()
    assert np.isfinite(scores).all()
    assert (scores[:, 3] > 10).all()


def test_a_variance_window_longer_than_the_history_keeps_its_width_and_saves(tmp_path):
    """With variance_window more than one point longer than the history, the kept values
    ``z[:, n - (w - 1):]`` started at a negative column and wrapped: 99 columns for a window of 300
    on 200 points, and the saved model failed its own check at load ("damaged"). The values before
    the history are missing: NaN on the left, so the first windows of new data see the history
    where it was."""
    rng = np.random.default_rng(0)
    values = rng.poisson(20, size=(2, 10 * DAY)).astype(float)
    n_hist = 9 * DAY
    history, new = _split(values, n_hist)
    for w in (n_hist + 1, n_hist + 2, 300):
        det = STLDetector(periods=24, variance_window=w, device="cpu").fit(history)
        kept = det.recent_values_
        assert kept.shape == (2, w - 1)
        assert np.isnan(kept[:, : w - 1 - n_hist]).all()
        np.testing.assert_array_equal(kept[:, w - 1 - n_hist:], np.log1p(history.to_numpy()))
        path = tmp_path / f"w{w}.tsa"
        det.save(path)
        loaded = tsanomaly.load(path)
        np.testing.assert_array_equal(loaded.score(new).to_numpy(), det.score(new).to_numpy())


def test_skipped_contexts_are_per_context_state_and_old_model_files_still_load(tmp_path):
    # The skipped contexts' labels were a fitted attribute of their own, global state for
    # tsanomaly.spark, which then refused the fit when shards skipped different contexts. The
    # flags are now per-context state (skipped_), the labels read from them; files saved with
    # the labels still load, to the same flags.
    rng = np.random.default_rng(5)
    values, _ = _counts(rng, 3, 5)
    values[1, :-30] = np.nan  # 30 observed hours < two days
    with pytest.warns(UserWarning, match="1 of 3 contexts have fewer than 48 observed points"):
        det = STLDetector(periods=24, device="cpu").fit(_panel(values))
    assert det.skipped_.tolist() == [False, True, False] and list(det.skipped_contexts_) == ["asn1"]
    assert "skipped_contexts_" not in vars(det)
    det.save(tmp_path / "new.tsa")
    assert tsanomaly.load(tmp_path / "new.tsa").skipped_.tolist() == [False, True, False]
    # A file in the earlier layout: the labels in place of the flags.
    old = STLDetector(periods=24, device="cpu")
    vars(old).update({k: v for k, v in vars(det).items() if k != "skipped_"}, skipped_contexts_=det.skipped_contexts_)
    old.save(tmp_path / "old.tsa")
    loaded = tsanomaly.load(tmp_path / "old.tsa")
    assert loaded.skipped_.tolist() == [False, True, False] and list(loaded.skipped_contexts_) == ["asn1"]
    np.testing.assert_array_equal(loaded.fitted_without_data(), det.fitted_without_data())


@pytest.mark.parametrize("periods", [24, [24, 168]])
def test_fitting_in_blocks_of_contexts_changes_nothing(monkeypatch, periods):
    """On the CPU contexts are fitted in blocks (backend.CPU_BLOCK_POINTS); blocks of 3 give the same
    fitted state, thresholds and scores, bit for bit, as one block -- with skipped, sparse
    (non-robust) and dense contexts spread over the blocks."""
    from tsanomaly import backend

    data = make_security_panel(n_contexts=10, n_days=28, seed=7, clean_days=21)
    history, new = data.split(data.index[0] + pd.Timedelta(days=21))
    values = np.concatenate([history.panels["failed_logins"].to_numpy(), history.panels["logins"].to_numpy()])
    values[4, :-30] = np.nan  # too short: skipped
    history = _panel(values)
    new_values = np.concatenate([new.panels["failed_logins"].to_numpy(), new.panels["logins"].to_numpy()])
    new = _panel(new_values, start=history.index[-1] + pd.Timedelta(hours=1))

    def fit_and_score():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the skipped context
            det = STLDetector(periods=periods, device="cpu").fit(history)
        return det, det.score(new).to_numpy()

    whole, whole_scores = fit_and_score()
    monkeypatch.setattr(backend, "CPU_BLOCK_POINTS", 3 * history.n_times)
    blocks, block_scores = fit_and_score()
    assert list(blocks.skipped_contexts_) == ["asn4"] and not whole.robust_fit_.all() and whole.robust_fit_.any()
    np.testing.assert_array_equal(block_scores, whole_scores)
    np.testing.assert_array_equal(blocks.threshold_, whole.threshold_)
    for name in whole._fitted_state_kinds():
        a, b = getattr(whole, name), getattr(blocks, name)
        if isinstance(a, dict):
            assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a), name
        elif isinstance(a, np.ndarray):
            assert np.array_equal(a, b, equal_nan=True), name
        else:
            assert list(a) == list(b) if isinstance(a, pd.Index) else a == b, name


def test_tracking_in_blocks_of_contexts_changes_nothing(monkeypatch):
    """On the CPU, score and update track the contexts in blocks (backend.CPU_BLOCK_POINTS), and the
    update computes the end state only (not the rolling statistics of the scores): scores, alerts,
    explanations and the state after an update equal those of one block, bit for bit -- with
    missing points, a context without data, an unseen context and data that start after a gap."""
    from tsanomaly.detectors import stl

    rng = np.random.default_rng(3)
    values, _ = _counts(rng, 9, 24)
    values[1, 22 * DAY:] = np.nan  # no data after the fit
    values[2:, 21 * DAY:][rng.random((7, 3 * DAY)) < 0.2] = np.nan
    values[3, 22 * DAY + 5] = 20 * values[3, 22 * DAY + 5 - DAY]  # an alert
    history, _ = _split(values[:-1], 21 * DAY)  # the last context is unseen at fit
    full = _panel(values)
    batch = full.time_slice(start=full.index[21 * DAY + 3], end=full.index[22 * DAY + 11])
    later = full.time_slice(start=full.index[22 * DAY + 12])
    det = STLDetector(periods=24, device="cpu").fit(history)

    def track():
        updated = copy.deepcopy(det)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", tsanomaly.HistoryGapWarning)  # the batch starts 3 hours late
            out = [det.score(batch).to_numpy(), det.alerts(batch), updated.update(batch)]
        out += [updated.score(later).to_numpy(), updated.alerts(later)]
        return out

    whole = track()
    tracked = []

    def spy(self, z, *args, **kwargs):
        tracked.append((z.shape[0], kwargs.get("end_only", False)))
        return track_state(self, z, *args, **kwargs)

    track_state = STLDetector._track_state
    monkeypatch.setattr(STLDetector, "_track_state", spy)
    monkeypatch.setattr(backend, "CPU_BLOCK_POINTS", 2 * (batch.n_times + DAY))  # two contexts a block
    blocks = track()
    updates = [n for n, end_only in tracked if end_only]
    assert len(updates) > 1 and sum(updates) == history.n_contexts, tracked
    assert max(n for n, _ in tracked) <= 2, tracked

    np.testing.assert_array_equal(blocks[0], whole[0])
    np.testing.assert_array_equal(blocks[3], whole[3])
    assert len(whole[1]) and len(whole[4]), "no alert to compare"
    for i in (1, 4):
        pd.testing.assert_frame_equal(blocks[i], whole[i], check_exact=True)
    for name in ("level_", "slope_", "recent_values_"):
        assert np.array_equal(getattr(blocks[2], name), getattr(whole[2], name), equal_nan=True), name

    def no_rolling(*args):
        raise AssertionError("an update computed the rolling statistics of the scores")

    monkeypatch.setattr(stl, "_rolling_stats", no_rolling)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tsanomaly.HistoryGapWarning)
        det.update(batch)
    assert np.array_equal(det.recent_values_, whole[2].recent_values_, equal_nan=True)


def test_new_data_after_a_gap_keeps_the_phase():
    """Scoring may start hours after the fit ends: the seasonal shape stays aligned with the clock."""
    rng = np.random.default_rng(6)
    values, _ = _counts(rng, 3, 24)
    n_hist = 21 * DAY
    full = _panel(values)
    history = full.time_slice(end=full.index[n_hist - 1])
    later = full.time_slice(start=full.index[n_hist + 7])  # 7 hours missing in between
    det = STLDetector(periods=24, variance_window=0, device="cpu").fit(history)
    aligned = np.abs(det.score(later).to_numpy())
    shifted = np.abs(det.score(_panel(values[:, n_hist + 7 + 6:], start=str(later.index[0]))).to_numpy())
    assert np.median(aligned) < 1.5 < np.median(shifted)
    with pytest.raises(ValueError, match="must start after the fitted history"):
        det.score(full.time_slice(start=full.index[n_hist - 5]))


def _daily_poisson(n_ctx, n_times, seed=0):
    """The same hourly Poisson series (mean 25-125, a daily cycle) in every row."""
    t = np.arange(n_times)
    row = np.random.default_rng(seed).poisson(50 * (1.5 + np.sin(2 * np.pi * t / DAY))).astype(float)
    return np.tile(row, (n_ctx, 1))


def test_a_multi_day_gap_in_the_history_does_not_flatten_the_seasonal_shape():
    """The seasonal component where points were missing is a smooth of the fill (interpolated or
    held values), and beside a gap it is pulled towards it: read from fixed cycles, the last 8 of
    28 days missing gave a log amplitude of 0.004 (1.77 complete) and clean data scored up to 9.6
    over a threshold of 4.2; a 3-day gap on days 22-24 an amplitude of 0.41 and scores up to 7.5.
    Each phase's shape is now read where it was observed, and a context without any observation
    in the level's span takes its level from its last observed points, not the fill's trend."""
    n_hist = 28 * DAY
    values = _daily_poisson(4, n_hist + 2 * DAY)
    values[1, n_hist - 8 * DAY:n_hist] = np.nan  # the last 8 days: nothing observed in the level's 7
    values[2, n_hist - 6 * DAY:n_hist] = np.nan
    values[3, 22 * DAY:25 * DAY] = np.nan
    history, new = _split(values, n_hist)
    det = STLDetector(periods=24, device="cpu").fit(history)
    amplitude = np.ptp(det.seasonal_shape_["24"], axis=1)
    assert amplitude[0] == pytest.approx(1.77, abs=0.01)
    assert (amplitude[1:] > 0.85 * amplitude[0]).all(), amplitude
    assert np.abs(det.level_[1:] - det.level_[0]).max() < 0.1, det.level_
    scores = det.score(new).to_numpy()
    assert np.nanmax(scores) < 3.5 and np.nanmax(scores) < det.global_threshold_
    assert det.alerts(new).empty


def test_the_seasonal_shape_of_a_context_without_gaps_is_unchanged_bit_for_bit():
    """Contexts without missing points keep the shape from the fixed cycles ([hi - 3 cycles, hi),
    hi three cycles before the end: the seasonal smoother's half-window), exactly -- whatever
    the other contexts of the panel miss."""
    n_hist = 28 * DAY
    values = _daily_poisson(3, n_hist, seed=1)
    values[1] = _daily_poisson(1, n_hist, seed=2)[0]
    values[2, n_hist - 5 * DAY:] = np.nan
    history = _panel(values)
    det = STLDetector(periods=24, device="cpu").fit(history)
    seasonal = decompose(np.log1p(values[:2]), periods=24, device="cpu").seasonal[0]
    hi = n_hist - 3 * DAY
    expected = np.median(seasonal[:, hi - 3 * DAY:hi].reshape(2, 3, DAY), axis=1)
    np.testing.assert_array_equal(det.seasonal_shape_["24"][:2], expected)
    alone = STLDetector(periods=24, device="cpu").fit(_panel(values[:2]))
    np.testing.assert_array_equal(det.seasonal_shape_["24"][:2], alone.seasonal_shape_["24"])


def test_weekly_and_daily_periods():
    """With (24, 168) the fitted weekly shape expects the weekend; with 24 alone it is a drop."""
    rng = np.random.default_rng(7)
    n_days = 28
    t = np.arange(n_days * DAY)
    weekly = np.where((t // DAY) % 7 >= 5, 0.5, 1.0)  # days 5, 6, 12, 13, ... are quiet
    rate = 300 * (1 + 0.5 * np.sin(2 * np.pi * t / DAY)) * weekly
    values = rng.poisson(np.vstack([rate, 0.3 * rate])).astype(float)
    history, weekend = _split(values, 26 * DAY)  # fit up to a Friday, score the weekend
    det = STLDetector(periods=(24, 168), variance_window=0, device="cpu").fit(history)
    assert set(det.seasonal_shape_) == {"24", "168"} and det.seasonal_shape_["168"].shape == (2, 168)
    assert det.decomposition_["seasonal"] == [11, 15]
    daily = STLDetector(periods=24, variance_window=0, device="cpu").fit(history)
    both = np.median(np.abs(det.score(weekend).to_numpy()))
    one = np.median(np.abs(daily.score(weekend).to_numpy()))
    assert both < 3 and one > 3 * both


def _sparse_counts(rng, n_ctx, n_days, rate=0.12):
    """Counts of 0, 1, rarely 2 an hour with a daily cycle: failed logins of a small ASN."""
    t = np.arange(n_days * DAY)
    return rng.poisson(np.tile(rate * (1 + 0.8 * np.sin(2 * np.pi * t / DAY)), (n_ctx, 1))).astype(float)


def test_sparse_context_keeps_an_expectation_near_its_counts():
    """Regression: robust STL collapses on counts of 0-1 and its end runs away; the expectation must not.

    ``tsanomaly demo`` (seed 7): (US, AS2942) sees 0-1 failed logins an hour (rarely 2), yet the
    detector expected ~12 at 23:00 every day (growing) and raised the top false alerts
    (score ~50).  The bisquare weights of the robust fit collapse (6 x median |remainder|
    ~ 0, every non-zero count gets weight 0) and the seasonal component at the end of
    the series -- a one-sided LOESS fit -- climbs from cycle to cycle.
    """
    data = make_security_panel(n_contexts=200, n_days=28, seed=7, clean_days=21)
    history, new = data.split(data.index[0] + pd.Timedelta(days=21))
    row = history.panels["failed_logins"].contexts.get_loc(("US", "AS2942"))
    history, new = history.panels["failed_logins"].take([row]), new.panels["failed_logins"].take([row])
    assert np.nanmax(history.to_numpy()) <= 2 and np.nanmax(new.to_numpy()) <= 1
    # the cause: the robust decomposition's seasonal value at 23:00 climbs over the last days
    seasonal = decompose(np.log1p(history.to_numpy()), periods=24, device="cpu").seasonal[0, 0]
    assert seasonal[-1] > 2.0 and np.all(np.diff(seasonal[-5 * DAY + 23::DAY]) > 0.3)

    det = STLDetector(periods=24, device="cpu").fit(history)
    parts = det._track(new.to_numpy(), new, det.context_rows(new))
    expected = np.expm1(parts["expected"][0])
    assert expected.max() < 1.0 and expected.min() >= 0.0
    assert np.all(np.diff(expected[23::DAY]) <= 1e-9)  # 23:00 is not expected to grow from day to day
    assert np.nanmax(det.score(new).to_numpy()) < 3  # a count of 1 is no news here
    assert not det.robust_fit_[0]  # it was decomposed without robustness weights

    # the same on generic sparse counts, several contexts at once
    rng = np.random.default_rng(3)
    values = _sparse_counts(rng, 4, 22)
    n_hist = 21 * DAY
    values[2, n_hist + 10] = 30  # credential stuffing on a small ASN
    values[3, n_hist + 3:n_hist + 6] = [15, 20, 18]
    history, new = _split(values, n_hist)
    ends = np.abs(decompose(np.log1p(history.to_numpy()), periods=24, device="cpu").seasonal[0][:, -DAY:]).max(axis=1)
    assert ends.max() > 2.0  # at least one context's robust fit ran away
    det = STLDetector(periods=24, device="cpu").fit(history)
    assert not det.robust_fit_.any()
    parts = det._track(new.to_numpy(), new, det.context_rows(new))
    assert np.expm1(parts["expected"]).max() < 1.5
    scores = det.score(new).to_numpy()
    assert scores[2, 10] > 10 and scores[3, 3:6].min() > 6  # 15-30 events where 0-1 are usual
    assert np.nanmax(parts["deviation"][:2]) < 3 and np.nanmax(scores[:2]) < 3
    flags = det.predict(new).to_numpy()
    assert flags[2, 10] and flags[3, 3:6].all() and not flags[:2].any()
    # besides the bursts, only the day after them (the level-shift window still holds them)
    assert not flags[2, 10 + DAY:].any() and not flags[3, 5 + DAY:].any()


def test_dense_contexts_keep_the_robust_fit():
    rng = np.random.default_rng(11)
    values, _ = _counts(rng, 3, 22, level=30.0)
    history, _ = _split(values, 21 * DAY)
    assert STLDetector(periods=24, device="cpu").fit(history).robust_fit_.all()


def test_a_zero_where_six_are_expected_is_a_moderate_deviation():
    """Counts have Poisson noise: a zero where 6 are expected (p = 0.0025) is not a 38-sigma event."""
    rng = np.random.default_rng(12)
    values = rng.poisson(6.0, size=(3, 22 * DAY)).astype(float)
    n_hist = 21 * DAY
    values[0, n_hist + 5] = 0
    values[1, n_hist + 7] = 40
    history, new = _split(values, n_hist)
    det = STLDetector(periods=24, variance_window=0, device="cpu").fit(history)
    scores = det.score(new).to_numpy()
    assert 2.5 < scores[0, 5] < 5.5
    assert scores[1, 7] > scores[0, 5]  # 40 where 6 are expected: further out (Poisson p ~ 1e-17)
    assert det.predict(new).to_numpy()[1, 7]
    ordinary = np.ones_like(scores, dtype=bool)
    ordinary[0, 5] = ordinary[1, 7] = False
    assert np.nanmax(scores[ordinary]) < scores[0, 5]


def test_threshold_is_calibrated_on_out_of_sample_scores():
    """Training scores come from held-out blocks scored as score() scores new data."""
    rng = np.random.default_rng(14)
    n_ctx, n_days, n_hist = 80, 28, 21 * DAY
    t = np.arange(n_days * DAY)
    level = np.exp(rng.uniform(np.log(0.1), np.log(500), size=(n_ctx, 1)))  # sparse to busy
    rate = level * (1 + 0.7 * np.sin(2 * np.pi * t / DAY + rng.uniform(0, 2 * np.pi, size=(n_ctx, 1))))
    values = rng.negative_binomial(30.0, 30.0 / (30.0 + rate)).astype(float)
    history, new = _split(values, n_hist)
    det = STLDetector(periods=24, contamination=0.01, device="cpu")
    train = det.fit_score(history).to_numpy()
    assert det.holdout_ == 7 * DAY and det.holdout_folds_ == 2
    # two held-out weeks (rolling origins): the first week was only fitted, never scored
    assert np.isnan(train[:, : n_hist - 2 * det.holdout_]).all()
    assert np.isfinite(train[:, n_hist - 2 * det.holdout_:]).mean() > 0.99
    np.testing.assert_allclose(det.threshold_, np.nanquantile(train, 0.99))
    assert (det.scale_inflation_ >= 1).all()
    # new data from the same process cross the threshold about as often as the contamination says
    rate_new = np.nanmean(det.score(new).to_numpy() >= det.threshold_[0])
    assert 0.3 < rate_new / 0.01 < 3
    # calibration on the in-sample scores of the whole history, when asked for
    insample = STLDetector(periods=24, contamination=0.01, holdout_folds=0, device="cpu")
    assert np.isfinite(insample.fit_score(history).to_numpy()).mean() > 0.95 and insample.holdout_ == 0
    # short histories hold out less, at most half of them; too short ones are calibrated in sample
    five_days, _ = _split(values[:, : 5 * DAY + 1], 5 * DAY)
    assert STLDetector(periods=24, device="cpu").fit(five_days).holdout_ == 2 * DAY
    three_days, _ = _split(values[:, : 3 * DAY], 3 * DAY - 1)
    det = STLDetector(periods=24, device="cpu")
    with pytest.warns(tsanomaly.CalibrationWarning, match="too short to hold out"):
        assert np.isfinite(det.fit_score(three_days).to_numpy()).mean() > 0.95 and det.holdout_ == 0


@pytest.mark.parametrize("params, n_times, need", [
    (dict(periods=24), 2 * DAY, 3 * DAY),
    (dict(periods=24), 3 * DAY - 1, 3 * DAY),
    (dict(periods=24, holdout_seasons=1, holdout_folds=1), 2 * DAY, 3 * DAY),
    (dict(periods=(24, 168)), 2 * DAY + 1, 3 * DAY + 1),  # the weekly period dropped: MSTL's rule still holds
    (dict(periods=(24, 168)), 14 * DAY + 4, 15 * DAY + 1),  # both kept: one cycle after 2 weeks + 1 point
])
def test_a_history_too_short_to_hold_anything_out_warns_that_it_is_calibrated_in_sample(params, n_times, need):
    """The shortest histories min_fit_times accepts leave no room for a held-out fold, and the
    threshold was learnt on in-sample scores, silently: 2 days of 20 clean contexts calibrated
    1.36 and flagged 59% of the next clean week (from 3 days, with a held-out day: 7.06, none).
    It still fits (min_fit_times is unchanged), with a CalibrationWarning that says what a held-out
    fold needs; nothing is said where none is asked for, or where one fits."""
    values, _ = _counts(np.random.default_rng(4), 3, 16)
    history = _panel(values[:, :n_times])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # MSTL drops the weekly period, with a warning
        warnings.simplefilter("error", tsanomaly.CalibrationWarning)
        with pytest.raises(tsanomaly.CalibrationWarning) as caught:
            STLDetector(device="cpu", **params).fit(history)
        message = str(caught.value)
        assert f"history of {n_times} time steps is too short to hold out any data" in message
        assert f"fit on at least {need} time steps" in message and "holdout_folds=0" in message
        assert "learnt in sample" in message and "too low" in message
        det = STLDetector(device="cpu", **dict(params, holdout_folds=0)).fit(history)
        assert det.holdout_folds_ == 0
        STLDetector(device="cpu", **dict(params, threshold=6.0)).fit(history)
        longer = STLDetector(device="cpu", **params).fit(_panel(values[:, :need]))
        assert longer.holdout_folds_ >= 1


@pytest.mark.parametrize("n_times", [3 * DAY, 4 * DAY])
def test_mstl_whose_longer_period_is_dropped_keeps_room_for_the_shorter_one_in_each_fold(n_times):
    """periods=(24, 168) on 3 or 4 days: the weekly period is dropped, and the held-out block left
    48 points to its fit (two daily cycles, enough for STL), where MSTL keeps no period: the fit
    raised. A fold's fit keeps MSTL's rule, one point more than two cycles."""
    values, _ = _counts(np.random.default_rng(5), 2, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        det = STLDetector(periods=(24, 168), device="cpu").fit(_panel(values[:, :n_times]))
    assert det.periods_ == [24] and n_times - det.holdout_ >= 2 * DAY + 1


@pytest.mark.parametrize("params, need", [
    (dict(periods=24), 2 * DAY),
    (dict(periods=12, holdout_folds=0, variance_window=0), 24),
    (dict(periods=[24, 168]), 2 * DAY + 1),  # MSTL keeps a period below half the length
    (dict(periods=[168, 6, 24]), 13),
])
def test_min_fit_times_is_the_shortest_history_that_fits_and_scores(params, need):
    """Jobs refuse a history shorter than min_fit_times before fitting; STL's own fit raises on it."""
    det = STLDetector(device="cpu", **params)
    assert det.min_fit_times() == need
    values, _ = _counts(np.random.default_rng(3), 2, 15)
    with pytest.raises(ValueError, match="two full cycles"):
        STLDetector(device="cpu", **params).fit(_panel(values[:, : need - 1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # MSTL drops the longer periods, with a warning
        scores = det.fit_score(_panel(values[:, :need])).to_numpy()
    assert np.isfinite(scores).any()


def test_level_shift_finds_a_farm_on_a_sparse_context():
    """A farm posting 2-4 registrations every hour where 0-1 a few times a day is usual."""
    rng = np.random.default_rng(15)
    values = _sparse_counts(rng, 4, 24, rate=0.3)
    n_hist = 21 * DAY
    farm = slice(n_hist + 12, n_hist + 60)
    values[1, farm] = rng.integers(2, 5, size=farm.stop - farm.start)
    history, new = _split(values, n_hist)
    det = STLDetector(periods=24, device="cpu").fit(history)
    parts = det._track(new.to_numpy(), new, det.context_rows(new))
    assert np.median(parts["deviation"][1, 12:60]) < 3  # no single hour stands out much
    assert parts["level_shift"][1, 36:60].min() > 5  # a day of them does
    alerts = det.alerts(new)
    on_farm = alerts[(alerts["asn"] == "asn1") & (alerts["start"] <= new.index[59]) & (alerts["end"] >= new.index[12])]
    assert len(on_farm) and (on_farm["fired"] == "level_shift").any()
    assert (alerts["asn"] != "asn1").sum() <= 2


def test_rolling_stats_equal_direct_computation():
    rng = np.random.default_rng(16)
    x = rng.normal(5.0, 1.0, size=(7, 200))
    x[1, 20:40] = np.nan
    x[2, ::3] = np.nan  # 8 of every 24 missing: too few observed, never a window
    x[3] = 7.0
    x[4, 50:120] = 1e9  # a level far from the row's median: the running sums must not cancel
    x[5, 60:100] = 0.0
    x[6, ::8] = np.nan  # 3 of every 24 missing: enough observed (21 = 7/8 of 24)
    mean, sd = _rolling_stats(x, 24, np)
    assert np.isnan(mean[2]).all() and np.isfinite(mean[6, 23:]).all()
    for col in range(23, 200):
        block = x[:, col - 23:col + 1]
        enough = np.isfinite(block).sum(axis=1) >= 21
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            np.testing.assert_allclose(mean[:, col], np.where(enough, np.nanmean(block, axis=1), np.nan),
                                       rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(sd[:, col], np.where(enough, np.nanstd(block, axis=1), np.nan),
                                       rtol=1e-9, atol=1e-9)
    assert np.isnan(mean[:, :23]).all() and (sd[3, 23:] == 0).all()


def test_a_batch_scored_a_day_after_the_fit_does_not_alert_on_clean_contexts():
    """A daily job with a weekly fit scores batches that start days after the fitted history. The
    first windows of the batch reach back over the missing days; at half a window observed, the
    window of the batch's first 12 hours (half a daily cycle) was compared with whole-day windows
    and fired level-shift and low-variance alerts on all 20 clean contexts."""
    rng = np.random.default_rng(0)
    index = pd.date_range("2024-03-01", periods=24 * 18, freq="h")
    rate = 30 + 15 * np.sin(2 * np.pi * np.arange(len(index)) / 24)
    panel = tsanomaly.Panel(rng.poisson(rate, size=(20, len(index))).astype(float), [f"c{i}" for i in range(20)], index)
    det = STLDetector().fit(panel.loc[:"2024-03-14 23:00"])
    following = det.alerts(panel.loc["2024-03-15 00:00":"2024-03-15 23:00"])
    for day in ("2024-03-16", "2024-03-17"):
        later = det.alerts(panel.loc[f"{day} 00:00":f"{day} 23:00"])
        assert later["context"].nunique() <= max(2, following["context"].nunique()), later


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(transform="log"), "transform must be one of"),
        (dict(direction="sideways"), "direction must be"),
        (dict(variance_window=1), "variance_window must be"),
        (dict(trend_alpha=2.0), r"trend_alpha must be a number in \[0, 1\]"),
        (dict(trend_clip=0), "trend_clip must be a finite number > 0"),
        # NaN / inf / bools, silently accepted before: min_scale=NaN made every score NaN,
        # min_scale=inf every score about 1e-308 (and the threshold with them).
        (dict(min_scale=float("nan")), "min_scale must be None or a finite number > 0"),
        (dict(min_scale=float("inf")), "min_scale must be None or a finite number > 0"),
        (dict(min_scale=True), "min_scale must be None or a finite number > 0"),
        (dict(min_scale="0.1"), "min_scale must be None or a finite number > 0"),
        # a lower bound of 0 is none: a flat history's zero scale made scores infinite, and score,
        # predict and alerts failed (see test_min_scale_zero_is_refused)
        (dict(min_scale=0.0), "min_scale must be None or a finite number > 0"),
        (dict(min_scale=-0.1), "min_scale must be None or a finite number > 0"),
        (dict(trend_clip=float("inf")), "trend_clip must be a finite number > 0"),
        (dict(trend_clip=float("nan")), "trend_clip must be a finite number > 0"),
        (dict(trend_clip=True), "trend_clip must be a finite number > 0"),
        (dict(trend_alpha=float("nan")), r"trend_alpha must be a number in \[0, 1\]"),
        (dict(trend_alpha=True), r"trend_alpha must be a number in \[0, 1\]"),
        (dict(shape_seasons=0), "shape_seasons must be a positive integer"),
        (dict(level_seasons=0), "level_seasons must be a positive integer"),
        (dict(holdout_seasons=0), "holdout_seasons must be a positive integer"),
        (dict(holdout_folds=-1), "holdout_folds must be a non-negative integer"),
        (dict(periods=(24, 24)), "distinct"),
        (dict(seasonal=4), "odd integer"),
    ],
)
def test_bad_parameters_raise_at_fit(params, message):
    rng = np.random.default_rng(8)
    history, _ = _split(_counts(rng, 2, 10)[0], 9 * DAY)
    with pytest.raises(ValueError, match=message):
        STLDetector(**params, device="cpu").fit(history)


def test_min_scale_zero_is_refused():
    """min_scale=0 was accepted as a lower bound of the scale; a context whose history is flat then
    had a scale of 0, and a single event scored inf: score, predict and alerts raised (the Panel
    of scores refuses inf), and fit_score too."""
    history = tsanomaly.Panel.from_array(np.zeros((1, 21 * DAY)))
    with pytest.raises(ValueError, match="min_scale"):
        STLDetector(min_scale=0.0, device="cpu").fit(history)
    with pytest.raises(ValueError, match="min_scale"):
        STLDetector(min_scale=0, device="cpu").fit_score(history)
    # a positive bound keeps the scores finite
    new = tsanomaly.Panel.from_array([[0.0, 0.0, 3.0, 0.0]], index=pd.RangeIndex(21 * DAY, 21 * DAY + 4, name="time"))
    scores = STLDetector(min_scale=1e-3, device="cpu").fit(history).score(new).to_numpy()
    assert np.isfinite(scores).all() and scores[0, 2] > 100


@pytest.mark.parametrize("periods, seasonal", [
    (np.array([24, 168]), np.array([11, 15])),
    ([24, 168], [np.int64(11), 15]),
])
def test_list_like_periods_and_windows_round_trip_and_stay_as_given(tmp_path, periods, seasonal):
    """periods=np.array([24, 168]) fitted, but save raised TypeError (an ndarray is not JSON). The
    parameters stay as given (fit does not change them, as in scikit-learn); clone, save and load
    give the same scores (the model file holds lists)."""
    from sklearn.base import clone

    rng = np.random.default_rng(3)
    history, new = _split(_counts(rng, 2, 22)[0], 21 * DAY)
    det = STLDetector(periods=periods, seasonal=seasonal, device="cpu")
    assert det.min_fit_times() > 0 and det.fit(history).periods is periods and det.seasonal is seasonal
    copy = clone(det)
    det.save(tmp_path / "model.tsa")
    loaded = tsanomaly.load(tmp_path / "model.tsa")
    assert list(loaded.periods) == [24, 168] and list(loaded.seasonal) == [11, 15]
    np.testing.assert_array_equal(loaded.score(new).to_numpy(), det.score(new).to_numpy())
    np.testing.assert_array_equal(copy.fit(history).score(new).to_numpy(), det.score(new).to_numpy())


def test_finite_numeric_parameters_of_any_real_type_are_accepted():
    rng = np.random.default_rng(8)
    history, new = _split(_counts(rng, 2, 10)[0], 9 * DAY)
    det = STLDetector(min_scale=np.float32(0.05), trend_clip=2, trend_alpha=0, device="cpu").fit(history)
    assert np.isfinite(det.score(new).to_numpy()).all()


def test_negative_counts_need_transform_none():
    values = np.random.default_rng(9).normal(size=(2, 5 * DAY))
    history, new = _split(values, 4 * DAY)
    with pytest.raises(ValueError, match="needs counts >= 0"):
        STLDetector(device="cpu").fit(history)
    scores = STLDetector(transform=None, device="cpu").fit(history).score(new).to_numpy()
    assert np.isfinite(scores).all()


def test_a_negative_count_is_named_by_its_context_and_time():
    """The message gave "row 5, time position 0": positions in a block of the sorted panel, which a
    user of the command line cannot map back to the data."""
    values = np.abs(np.random.default_rng(9).normal(size=(3, 5 * DAY)))
    history, new = _split(values, 4 * DAY)
    history.values[2, 7] = -3.0
    with pytest.raises(ValueError, match=rf"got -3.0 for context {history.contexts[2]!r} at {history.index[7]}"):
        STLDetector(device="cpu").fit(history)
    fitted = STLDetector(device="cpu").fit(history.with_values(np.abs(history.values)))
    new.values[1, 3] = -1.0
    with pytest.raises(ValueError, match=rf"got -1.0 for context {new.contexts[1]!r} at {new.index[3]}"):
        fitted.score(new)


@pytest.mark.gpu
def test_gpu_scores_equal_cpu_scores():
    rng = np.random.default_rng(10)
    values, _ = _counts(rng, 200, 22)
    values[3, 50:60] = np.nan
    history, new = _split(values, 21 * DAY)
    cpu = STLDetector(periods=24, device="cpu").fit(history)
    gpu = STLDetector(periods=24, device="cuda").fit(history)
    np.testing.assert_allclose(backend.to_numpy(gpu.score(new).values), cpu.score(new).to_numpy(),
                               rtol=1e-9, atol=1e-9, equal_nan=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_allclose(gpu.threshold_, cpu.threshold_, rtol=1e-9)


def test_a_model_fitted_with_min_scale_zero_before_it_was_refused_still_scores(tmp_path):
    """min_scale=0 is refused at fit since 2026-12-07; a model file saved with it still scores."""
    rng = np.random.default_rng(4)
    history, new = _split(_counts(rng, 2, 22)[0], 21 * DAY)
    det = STLDetector(min_scale=0.05, device="cpu").fit(history)
    det.min_scale = 0.0  # as a model saved with 0 (set_params would drop the fitted state)
    expected = det.score(new).to_numpy()
    det.save(tmp_path / "model.tsa")
    loaded = tsanomaly.load(tmp_path / "model.tsa")
    assert loaded.min_scale == 0.0
    np.testing.assert_array_equal(loaded.score(new).to_numpy(), expected)
    with pytest.raises(ValueError, match="min_scale must be None or a finite number > 0"):
        loaded.fit(history)
