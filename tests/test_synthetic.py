"""make_security_panel: reproducible, realistic in shape, with labels where the attacks are."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tsanomaly.datasets import ATTACK_KINDS, METRICS, make_security_panel


@pytest.fixture(scope="module")
def data():
    return make_security_panel(n_contexts=60, n_days=28, seed=3, attack_rate=0.25)


def test_same_seed_same_data(data):
    again = make_security_panel(n_contexts=60, n_days=28, seed=3, attack_rate=0.25)
    for m in METRICS:
        assert again.panels[m].equals(data.panels[m])
        assert again.labels[m].equals(data.labels[m])
    pd.testing.assert_frame_equal(again.attacks, data.attacks)
    other = make_security_panel(n_contexts=60, n_days=28, seed=4, attack_rate=0.25)
    assert not other.panels["logins"].equals(data.panels["logins"])


def test_shapes_counts_and_missing_buckets(data):
    logins = data.panels["logins"]
    assert logins.shape == (60, 28 * 24)
    assert logins.index.freq == pd.tseries.frequencies.to_offset("1h")
    values = logins.values
    finite = values[np.isfinite(values)]
    assert (finite >= 0).all() and np.array_equal(finite, np.round(finite))
    assert 0 < np.isnan(values).mean() < 0.01
    sizes = np.nanmean(values, axis=1)
    assert sizes.max() / sizes.min() > 100  # sizes span orders of magnitude


def test_counts_are_overdispersed_and_seasonal(data):
    values = data.panels["logins"].values
    big = int(np.nanargmax(np.nanmean(values, axis=1)))
    by_hour = np.nanmean(values[big, : 21 * 24].reshape(21, 24), axis=0)
    assert by_hour.max() > 2 * by_hour.min()  # a clear daily cycle


def test_every_attack_kind_is_injected_after_the_clean_days(data):
    assert set(data.attacks["kind"]) == set(ATTACK_KINDS)
    assert (data.attacks["start"] >= pd.Timestamp("2024-01-22")).all()


def test_labels_match_the_attack_table(data):
    index = data.index
    for m in METRICS:
        expected = np.zeros(data.labels[m].shape, dtype=bool)
        for row in data.attacks.itertuples():
            if m not in row.metrics.split(","):
                continue
            ctx = data.labels[m].contexts.get_loc((row.country, row.asn))
            span = (index >= row.start) & (index <= row.end)
            expected[ctx] |= span & data.labels[m].values[ctx]
            assert data.labels[m].values[ctx, index.get_loc(row.start)]
            assert data.labels[m].values[ctx, index.get_loc(row.end)]
        # No label outside an attack of that metric.
        np.testing.assert_array_equal(data.labels[m].values, expected)


def test_attacks_change_the_metric_they_label(data):
    for row in data.attacks.itertuples():
        ctx = data.panels["logins"].contexts.get_loc((row.country, row.asn))
        metric = row.metrics.split(",")[0]
        values = data.panels[metric].values[ctx]
        labelled = data.labels[metric].values[ctx]
        same_hours = np.isin(np.arange(values.size) % 24, np.flatnonzero(labelled) % 24) & ~labelled
        attacked_mean, normal_mean = np.nanmean(values[labelled]), np.nanmean(values[same_hours])
        if row.kind == "outage":
            assert attacked_mean < 0.5 * normal_mean
        elif row.kind != "slow_drip":  # a drip can be small against noise hour by hour
            assert attacked_mean > normal_mean


def test_registration_farms_have_low_variance(data):
    farms = data.attacks[data.attacks["kind"] == "registration_farm"]
    for row in farms.itertuples():
        ctx = data.panels["registrations"].contexts.get_loc((row.country, row.asn))
        values = data.panels["registrations"].values[ctx]
        labelled = data.labels["registrations"].values[ctx]
        assert np.nanstd(values[labelled]) <= 1.0


def test_split_and_frequency_checks(data):
    history, new = data.split("2024-01-22")
    assert history.panels["logins"].index[-1] == pd.Timestamp("2024-01-21 23:00")
    assert new.panels["logins"].index[0] == pd.Timestamp("2024-01-22 00:00")
    assert len(history.attacks) == 0 and len(new.attacks) == len(data.attacks)
    quarter = make_security_panel(n_contexts=5, n_days=3, freq="15min", seed=0)
    assert quarter.panels["logins"].n_times == 3 * 96
    with pytest.raises(ValueError, match="divide a day"):
        make_security_panel(n_contexts=5, n_days=3, freq="7h")
