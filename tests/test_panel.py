"""Panel: construction from long frames, alignment, round trips, selection, and every bad-input error."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

import tsanomaly
from tsanomaly import Panel, RollingZScoreDetector


def _frame():
    return pd.DataFrame(
        {
            "country": ["US", "US", "US", "BR", "BR"],
            "asn": ["AS1", "AS1", "AS1", "AS2", "AS2"],
            "ts": ["2024-01-01 00:00", "2024-01-01 01:00", "2024-01-01 03:00", "2024-01-01 02:00", "2024-01-01 03:00"],
            "logins": [10, 11, 13, 5, 6],
        }
    )


def test_from_frame_aligns_contexts_on_one_grid():
    panel = Panel.from_frame(_frame(), context=["country", "asn"], time="ts", value="logins")
    assert panel.shape == (2, 4)
    assert list(panel.contexts) == [("BR", "AS2"), ("US", "AS1")]
    assert panel.index.freq == pd.tseries.frequencies.to_offset("1h")
    np.testing.assert_array_equal(panel.values[0], [np.nan, np.nan, 5, 6])  # starts late
    np.testing.assert_array_equal(panel.values[1], [10, 11, np.nan, 13])  # has a gap


def test_every_row_lands_in_its_cell_whatever_the_row_order():
    # Two context columns whose order of first appearance is not their sorted order, one
    # of them an integer whose sorted order differs from its text's (9 < 10), and a
    # (country, asn) pair whose parts each occur in other pairs.
    rng = np.random.default_rng(3)
    rows = [
        (country, asn, ts, float(rng.integers(100)))
        for country, asn in [("US", 10), ("BR", 9), ("US", 9), ("DE", 10), ("BR", 10)]
        for ts in pd.date_range("2024-01-01", periods=6, freq="h")
        if rng.random() > 0.3
    ]
    frame = pd.DataFrame(rows, columns=["country", "asn", "ts", "logins"]).sample(frac=1, random_state=0)
    panel = Panel.from_frame(frame, context=["country", "asn"], time="ts", value="logins")
    assert list(panel.contexts) == [("BR", 9), ("BR", 10), ("DE", 10), ("US", 9), ("US", 10)]
    assert panel.contexts.names == ["country", "asn"]
    for country, asn, ts, logins in rows:
        assert panel.values[panel.contexts.get_loc((country, asn)), panel.index.get_loc(ts)] == logins
    assert np.isfinite(panel.values).sum() == len(rows)  # no other cell filled


@pytest.mark.parametrize("n_labels", [3, 200])
def test_contexts_of_several_columns_are_sorted_pairs_whatever_their_number(n_labels):
    # Few labels per column combine through a table of every possible pair, many (200 x 200 x 3
    # possible triples for 300 rows) through hashing: both give the sorted distinct triples.
    rng = np.random.default_rng(5)
    n_rows = 300
    frame = pd.DataFrame({
        "user": rng.integers(0, n_labels, n_rows),
        "device": np.asarray([f"d{k}" for k in rng.integers(0, n_labels, n_rows)]),
        "app": rng.choice(["x", "y", "z"], n_rows),
        "ts": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 24, n_rows), unit="h"),
        "n": rng.random(n_rows),
    }).drop_duplicates(["user", "device", "app", "ts"])
    panel = Panel.from_frame(frame, context=["user", "device", "app"], time="ts", value="n")
    expected = sorted(set(zip(frame["user"], frame["device"], frame["app"])))
    assert list(panel.contexts) == expected
    for user, device, app, ts, n in frame.itertuples(index=False):
        assert panel.values[panel.contexts.get_loc((user, device, app)), panel.index.get_loc(ts)] == n
    assert np.isfinite(panel.values).sum() == len(frame)


def test_contexts_of_several_columns_whose_pairs_number_more_than_int32_holds():
    # 50,000 users x 50,000 devices: 2.5e9 possible pairs, past int32 (2**31 - 1), so their keys
    # need int64 (int32 would wrap, mixing up contexts); the 50,000 pairs x 2 apps that follow
    # fit int32 again.
    rng = np.random.default_rng(6)
    n_rows = 50_000
    frame = pd.DataFrame({
        "user": rng.choice(10**6, n_rows, replace=False),
        "device": np.asarray([f"d{k}" for k in rng.choice(10**6, n_rows, replace=False)]),
        "app": rng.choice(["x", "y"], n_rows),
        "ts": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 2, n_rows), unit="h"),
        "n": rng.random(n_rows),
    })
    panel = Panel.from_frame(frame, context=["user", "device", "app"], time="ts", value="n")
    assert list(panel.contexts) == sorted(zip(frame["user"], frame["device"], frame["app"]))
    rows = panel.contexts.get_indexer(pd.MultiIndex.from_frame(frame[["user", "device", "app"]]))
    np.testing.assert_array_equal(panel.values[rows, panel.index.get_indexer(frame["ts"])], frame["n"])
    assert np.isfinite(panel.values).sum() == n_rows


def test_duplicate_rows_of_a_zoned_column_are_named_on_its_clock():
    # Hours of a zoned column sit on a grid of UTC instants: the duplicate's time was named in
    # naive UTC (05:00 for a Paris file's 06:00+01:00), unlike every other message about times.
    stamps = pd.date_range("2026-03-21", periods=12, freq="h", tz="Europe/Paris")
    frame = pd.DataFrame({"asn": "AS1", "ts": stamps, "n": 1.0})
    with pytest.raises(ValueError, match=r"duplicate rows for context 'AS1' at 2026-03-21 06:00:00\+01:00 "):
        Panel.from_frame(pd.concat([frame, frame.iloc[[6]]]), context="asn", time="ts", value="n")


def test_fill_zero_for_counts():
    panel = Panel.from_frame(_frame(), context="asn", time="ts", value="logins", fill="zero")
    np.testing.assert_array_equal(panel.values, [[10, 11, 0, 13], [0, 0, 5, 6]])  # AS1, AS2


def test_explicit_freq_and_finer_grid():
    panel = Panel.from_frame(_frame(), context="asn", time="ts", value="logins", freq="30min")
    assert panel.n_times == 7


def test_round_trip_through_frame():
    panel = Panel.from_frame(_frame(), context=["country", "asn"], time="ts", value="logins")
    frame = panel.to_frame(value="logins", time="ts")
    assert len(frame) == 5
    again = Panel.from_frame(frame, context=["country", "asn"], time="ts", value="logins")
    assert again.equals(panel)


def test_to_frame_round_trips_as_its_docstring_says():
    """The docstring promised from_frame(to_frame()) round trips any DatetimeIndex panel; it does so
    only where nothing from_frame needs was dropped or reordered, which it now says."""
    index = pd.date_range("2024-01-01", periods=4, freq="h", unit="ns", name="ts")
    values = np.array([[np.nan, 1.0, 2.0, np.nan], [np.nan] * 4, [3.0, np.nan, 4.0, 5.0]])
    panel = Panel(values, pd.Index(["c", "b", "a"], name="asn"), index)  # contexts not sorted
    rebuilt = lambda frame: Panel.from_frame(frame, "asn", "ts", "n")  # noqa: E731
    dropped = rebuilt(panel.to_frame(value="n", time="ts"))
    assert dropped.contexts.tolist() == ["a", "c"] and dropped.n_times == 4  # "b" (all NaN) left out
    assert rebuilt(panel.to_frame(value="n", time="ts", dropna=False)).equals(panel.select(["a", "b", "c"]))
    full = panel.select(["a", "c"]).with_values(np.array([[3.0, np.nan, 4.0, np.nan], [0.0, 1.0, 2.0, np.nan]]))
    trimmed = rebuilt(full.to_frame(value="n", time="ts"))
    assert trimmed.n_times == 3 and trimmed.index[-1] == index[2]  # the last time held no value
    assert rebuilt(full.to_frame(value="n", time="ts", dropna=False)).equals(full)


def test_nullable_values_are_read_as_nan_and_text_is_a_value_error():
    """A pivot of an Int64 column holds pd.NA where a bucket is absent: Panel raised a bare
    TypeError ("float() argument must be ... not 'NAType'")."""
    ts = pd.date_range("2024-01-01", periods=3, freq="h")
    df = pd.DataFrame({"asn": ["a", "a", "a", "b", "b"], "ts": [ts[0], ts[1], ts[2], ts[0], ts[2]],
                       "n": pd.array([1, 2, 3, 4, 5], dtype="Int64")})
    wide = df.pivot(index="asn", columns="ts", values="n")
    panel = Panel(wide, wide.index, wide.columns)
    assert panel.values.dtype == np.float64
    np.testing.assert_array_equal(panel.values, [[1.0, 2.0, 3.0], [4.0, np.nan, 5.0]])
    mixed = np.array([[1.0, None, pd.NA], [np.nan, 2, "x"]], dtype=object)
    with pytest.raises(ValueError, match=r"Panel values hold a non-numeric value 'x' for context 'b' at 2024-01-01 02:00:00"):
        Panel(mixed, ["a", "b"], ts)
    np.testing.assert_array_equal(Panel(mixed[:, :2], ["a", "b"], ts[:2]).values, [[1.0, np.nan], [np.nan, 2.0]])


@pytest.mark.parametrize("index", [pd.DatetimeIndex(["2024-01-01", None]), ["2024-01-01", None],
                                   pd.DatetimeIndex(["2024-01-01", "NaT", "2024-01-01 02:00"])])
def test_a_missing_timestamp_in_the_index_is_a_value_error_naming_it(index):
    # NaT reached the step's inference: TypeError "Argument 'freq' has incorrect type (expected str, got NaTType)".
    with pytest.raises(ValueError, match=r"Panel index: time point 1 of \d is missing \(NaT\)"):
        Panel(np.ones((1, len(index))), ["a"], index)


def test_from_array_and_selection():
    x = np.arange(12.0).reshape(3, 4)
    panel = Panel.from_array(x, contexts=["a", "b", "c"])
    assert panel.select(["c", "a"]).values.tolist() == [[8, 9, 10, 11], [0, 1, 2, 3]]
    assert panel.take([1]).contexts.tolist() == ["b"]
    assert panel.loc[1:2].values.tolist() == [[1, 2], [5, 6], [9, 10]]
    assert Panel.from_array(np.arange(5.0)).shape == (1, 5)
    with pytest.raises(KeyError, match="'z'"):
        panel.select(["z"])


@pytest.mark.parametrize("multi", [False, True])
def test_select_takes_any_sequence_of_labels_and_refuses_one_twice(multi):
    """A Series of labels raised NotImplementedError ("fillna is not defined for MultiIndex"), and a
    label given twice the constructor's "contexts must be unique", which select never mentioned."""
    labels = [("US", "a"), ("BR", "b"), ("DE", "c")] if multi else ["a", "b", "c"]
    contexts = pd.MultiIndex.from_tuples(labels) if multi else pd.Index(labels)
    panel = Panel(np.arange(6.0).reshape(3, 2), contexts, pd.date_range("2024-01-01", periods=2, freq="h"))
    wanted = [labels[2], labels[0]]
    expected = [[4.0, 5.0], [0.0, 1.0]]
    array = np.empty(2, dtype=object)
    array[:] = wanted  # one object per label, tuples included
    for given in (wanted, pd.Series(wanted), pd.Index(wanted), tuple(wanted), iter(wanted), array):
        if multi and isinstance(given, tuple):
            continue  # a tuple is one label of a MultiIndex
        selected = panel.select(given)
        assert selected.contexts.tolist() == wanted and selected.values.tolist() == expected
    assert panel.select(labels[1]).contexts.tolist() == [labels[1]]  # one label, a tuple for a MultiIndex
    with pytest.raises(ValueError, match=f"select: the label {re.escape(repr(labels[0]))} is given 2 times"):
        panel.select([labels[0], labels[0], labels[2]])
    with pytest.raises(KeyError, match="contexts not in this panel"):
        panel.select(pd.Series([labels[0], ("XX", "z") if multi else "z"]))


def test_time_slice_by_timestamps():
    panel = Panel.from_frame(_frame(), context="asn", time="ts", value="logins")
    part = panel.loc["2024-01-01 01:00":"2024-01-01 02:00"]
    assert part.n_times == 2
    assert part.index[0] == pd.Timestamp("2024-01-01 01:00")


def test_to_cpu_is_identity_and_repr():
    panel = Panel.from_array(np.ones((2, 3)))
    assert panel.to("cpu") is panel
    assert panel.device == "cpu"
    assert "2 contexts x 3 times" in repr(panel)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda df: df.iloc[0:0], "empty"),
        (lambda df: df.drop(columns=["logins"]), "column 'logins' is missing"),
        (lambda df: pd.concat([df, df.iloc[[1]]]), r"duplicate rows for context \('US', 'AS1'\) at 2024-01-01 01:00"),
        (lambda df: df.assign(logins=["10", "x", 13, 5, 6]), r"non-numeric value 'x' for context \('US', 'AS1'\)"),
        (lambda df: df.assign(logins=[10, 11, np.inf, 5, 6]), r"infinite value inf for context \('US', 'AS1'\)"),
        (lambda df: df.assign(ts=["2024-01-01 00:00", "2024-01-01 01:00", "2024-01-01 01:20", "2024-01-01 02:00", "2024-01-01 03:00"]),
         r"column 'ts': timestamp 2024-01-01 01:20:00 for context \('US', 'AS1'\) fits no regular grid"),
        (lambda df: df.assign(ts=["2024-01-01", "not a date", "2024-01-02", "2024-01-03", "2024-01-04"]), "column 'ts'"),
    ],
)
def test_bad_input_names_column_context_and_value(mutate, message):
    with pytest.raises(ValueError, match=message):
        Panel.from_frame(mutate(_frame()), context=["country", "asn"], time="ts", value="logins")


@pytest.mark.parametrize("dtype", [object, "str"])
@pytest.mark.parametrize(
    "stamps",
    [
        ["2024-01-01T00:00:00Z", "2024-01-01T01:00:00.000Z", "2024-01-01T02:00:00Z"],  # with and without fraction
        ["2024-01-01", "2024-01-01T01:00:00", "2024-01-01 02:00"],  # a date alone beside datetimes
        ["2024-01-01T01:00:00+01:00", "2024-01-01T01:00:00", "2024-01-01T02:00:00.000000+00:00"],
    ],
)
def test_iso_8601_text_may_mix_its_forms(stamps, dtype):
    # pandas inferred one layout from the first value and refused the others.
    df = pd.DataFrame({"asn": ["a", "a", "b"], "ts": pd.Series(stamps, dtype=dtype), "n": [1.0, 2.0, 3.0]})
    panel = Panel.from_frame(df, context="asn", time="ts", value="n")
    expected = pd.date_range("2024-01-01", periods=3, freq="h", name="ts")
    assert panel.index.equals(expected) and panel.freq == expected.freq
    np.testing.assert_array_equal(panel.values, [[1, 2, np.nan], [np.nan, np.nan, 3]])


@pytest.mark.parametrize("bad", ["01/02/2024 01:00", "yesterday"])
def test_text_that_is_not_iso_8601_is_named_with_its_context(bad):
    df = _frame().assign(ts=["2024-01-01 00:00", "2024-01-01 01:00", "2024-01-01 03:00", bad, "2024-01-01 03:00"])
    with pytest.raises(ValueError) as info:
        Panel.from_frame(df, context=["country", "asn"], time="ts", value="logins")
    message = str(info.value)
    assert message.startswith(f"column 'ts' holds {bad!r} for context ('BR', 'AS2'), which is not an ISO 8601 timestamp")
    assert "You might want to try" not in message


@pytest.mark.parametrize("categories", [[1710806400, 1710810000, 1710813600], [1710806400.0, 1710810000.0, 1710813600.0],
                                        pd.Index([1710806400, 1710810000, 1710813600], dtype=object)])
def test_epoch_numbers_in_a_categorical_column_are_refused_too(categories):
    # The check looked at numeric and object dtypes only: categories of numbers became 1970 stamps.
    df = pd.DataFrame({"asn": ["AS1"] * 3, "ts": pd.Categorical(categories), "n": [5, 7, 6]})
    with pytest.raises(ValueError, match=r"column 'ts' holds numbers, not timestamps; convert it first"):
        Panel.from_frame(df, "asn", "ts", "n")
    # Categories of text are timestamps as ever.
    text = df.assign(ts=pd.Categorical(["2024-03-19 00:00", "2024-03-19 01:00", "2024-03-19 02:00"]))
    assert Panel.from_frame(text, "asn", "ts", "n").index[0] == pd.Timestamp("2024-03-19")


@pytest.mark.parametrize("dtype", ["int64", "float64", "Int64", object])
def test_epoch_numbers_are_refused_not_read_as_nanoseconds(dtype):
    # They gave a 1970 grid with a step of 3600 ns; the CLI already refused them.
    df = pd.DataFrame({"asn": ["AS1"] * 3, "ts": [1710806400, 1710810000, 1710813600], "n": [5, 7, 6]})
    df["ts"] = df["ts"].astype(dtype)
    with pytest.raises(ValueError, match=r"column 'ts' holds numbers, not timestamps; convert it first, "
                                         r"e.g. df\['ts'\] = pd.to_datetime\(df\['ts'\], unit=\"s\"\)"):
        Panel.from_frame(df, context="asn", time="ts", value="n")
    converted = df.assign(ts=pd.to_datetime(df["ts"].astype("int64"), unit="s"))
    panel = Panel.from_frame(converted, context="asn", time="ts", value="n")
    assert panel.index[0] == pd.Timestamp("2024-03-19") and panel.freq == pd.tseries.frequencies.to_offset("h")


@pytest.mark.parametrize("freq", ["0h", "-1h", "-15min"])
def test_a_step_that_is_not_positive_is_refused(freq):
    with pytest.raises(ValueError, match=f"freq '{freq}' must be a positive step"):
        Panel.from_frame(_frame(), context="asn", time="ts", value="logins", freq=freq)


def test_grid_errors_speak_to_api_and_command_line_users():
    one = _frame().iloc[[0]]
    with pytest.raises(ValueError, match=r"single distinct timestamp .*; pass freq= \(--freq on the command line\)"):
        Panel.from_frame(one, context="asn", time="ts", value="logins")
    shifted = _frame().assign(ts=["2024-01-01 00:00", "2024-01-01 01:00", "2024-01-01 01:20",
                                  "2024-01-01 02:00", "2024-01-01 03:00"])
    with pytest.raises(ValueError, match=r"fits no regular grid .*; pass freq= \(--freq on the command line\)"):
        Panel.from_frame(shifted, context="asn", time="ts", value="logins")
    # The step was given and the data is off it: saying "pass freq=" again would not help.
    with pytest.raises(ValueError) as info:
        Panel.from_frame(_frame(), context="asn", time="ts", value="logins", freq="2h")
    message = str(info.value)
    assert "timestamp 2024-01-01 01:00:00 for context 'AS1' is off the grid of step 0 days 02:00:00" in message
    assert "(freq='2h')" in message
    assert "the data's timestamps do not follow that step; resample the data to it first" in message
    assert "pass freq" not in message


def test_constructor_rejects_bad_shapes_and_duplicates():
    with pytest.raises(ValueError, match="2-D"):
        Panel(np.ones(3), ["a"], pd.RangeIndex(3))
    with pytest.raises(ValueError, match="shape"):
        Panel(np.ones((2, 3)), ["a"], pd.RangeIndex(3))
    with pytest.raises(ValueError, match="context 'a' appears more than once"):
        Panel(np.ones((2, 3)), ["a", "a"], pd.RangeIndex(3))
    with pytest.raises(ValueError, match="infinite value inf for context 'b'"):
        Panel(np.array([[1.0, 2.0], [np.inf, 1.0]]), ["a", "b"], pd.RangeIndex(2))
    with pytest.raises(ValueError, match="fill"):
        Panel.from_frame(_frame(), context="asn", time="ts", value="logins", fill="ffill")


# ---------------------------------------------------------------------- the time grid
def test_consecutive_integers_become_a_range_index():
    for index in ([5, 6, 7], pd.Index([5, 6, 7]), np.arange(5, 8)):
        panel = Panel(np.ones((1, 3)), ["a"], index)
        assert isinstance(panel.index, pd.RangeIndex)  # not nanoseconds since 1970
        assert list(panel.index) == [5, 6, 7]
        assert panel.freq == 1


@pytest.mark.parametrize(
    "index, message",
    [
        ([0, 2, 4], r"consecutive integers .* got \[0, 2, 4\]"),
        (pd.Index([0, 2, 4]), r"consecutive integers .* got \[0, 2, 4\]"),
        ([0.0, 1.0, 2.0], r"consecutive integers .* got \[0.0, 1.0, 2.0\] \(float64\)"),
        (pd.RangeIndex(0, 6, 2), r"RangeIndex must have step 1.*step=2"),
    ],
)
def test_integer_grids_without_a_unit_step_are_refused(index, message):
    with pytest.raises(ValueError, match=message):
        Panel(np.ones((1, 3)), ["a"], index)


def test_two_timestamps_give_the_grids_step():
    index = pd.DatetimeIndex(["2024-01-01 00:00", "2024-01-01 00:15"])
    assert index.freq is None
    panel = Panel(np.ones((1, 2)), ["a"], index)
    assert panel.freq == pd.tseries.frequencies.to_offset("15min")
    with pytest.raises(ValueError, match="must increase"):
        Panel(np.ones((1, 2)), ["a"], index[::-1])


@pytest.mark.parametrize("n", [2, 3, 48])
@pytest.mark.parametrize("keep_freq", [False, True])
def test_decreasing_timestamps_are_refused_whatever_their_number(n, keep_freq):
    # Three or more were taken as a grid of negative step ("-1h", inferred or kept by the
    # reversal), two were refused: the same error for every length.
    index = pd.date_range("2024-01-01", periods=n, freq="h")[::-1]
    if not keep_freq:
        index = pd.DatetimeIndex(index, freq=None)
    with pytest.raises(ValueError, match="the timestamps must increase, got 2024-01-0. ..:00:00 then"):
        Panel(np.zeros((1, n)), ["a"], index)


def test_timestamps_out_of_order_are_named():
    index = pd.DatetimeIndex(["2024-01-01 00:00", "2024-01-01 02:00", "2024-01-01 01:00", "2024-01-01 03:00"])
    with pytest.raises(ValueError, match="must increase, got 2024-01-01 02:00:00 then 2024-01-01 01:00:00"):
        Panel(np.zeros((1, 4)), ["a"], index)


def test_one_timestamp_needs_freq():
    with pytest.raises(ValueError, match=r"one timestamp \(2024-01-01 00:00:00\) does not give the grid's step"):
        Panel(np.ones((1, 1)), ["a"], pd.DatetimeIndex(["2024-01-01"]))
    panel = Panel(np.ones((1, 1)), ["a"], pd.date_range("2024-01-01", periods=1, freq="h"))
    assert panel.freq == pd.tseries.frequencies.to_offset("h")


def _hourly_history():
    index = pd.date_range("2024-01-01", periods=24 * 10, freq="h")
    rng = np.random.default_rng(0)
    return Panel(rng.poisson(20.0, size=(2, len(index))).astype(float), ["a", "b"], index)


def test_two_new_timestamps_are_scored_on_the_fitted_grid():
    history = _hourly_history()
    det = RollingZScoreDetector(window=3).fit(history)
    after = history.index[-1] + pd.Timedelta("1h")
    new = Panel(np.full((2, 2), 20.0), ["a", "b"], pd.DatetimeIndex([after, after + pd.Timedelta("1h")]))
    assert det.steps_after_fit(new) == 1
    assert det.score(new).shape == (2, 2)


def test_a_grid_without_a_step_is_refused_not_counted_as_integers():
    det = RollingZScoreDetector(window=3, seasonal_period=None).fit(np.arange(40.0))
    new = Panel.from_array(np.ones(2))
    new.index = pd.DatetimeIndex(["2024-01-01 00:00", "2024-01-01 01:00"])  # past the constructor's checks
    with pytest.raises(ValueError, match="without a frequency"):
        det.steps_after_fit(new)


def test_a_one_hour_slice_keeps_its_freq_and_is_scored():
    # The constructor refuses one timestamp without freq; a slice of a Panel's grid keeps its freq.
    history = _hourly_history()
    det = RollingZScoreDetector(window=3).fit(history.loc[: history.index[-2]])
    last_hour = history.loc[history.index[-1] :]
    assert last_hour.n_times == 1 and last_hour.freq == history.freq
    assert det.steps_after_fit(last_hour) == 1
    assert det.score(last_hour).shape == (2, 1)


def test_timestamps_with_offsets_are_read_as_utc_instants_across_a_daylight_saving_switch():
    """Local time written with its offset (+01:00, then +02:00 after the switch on 2024-03-31):
    the text failed to parse ("Mixed timezones detected"); the same instants as a time-zone-aware
    column worked. Both give the UTC grid now, and naive text is kept as written."""
    local = pd.date_range("2024-03-30 00:00", periods=72, freq="h", tz="Europe/Berlin")
    values = np.arange(72.0)
    aware = pd.DataFrame({"ctx": "DE", "ts": local, "n": values})
    text = aware.assign(ts=[t.isoformat() for t in local])
    assert text["ts"].str.endswith("+01:00").any() and text["ts"].str.endswith("+02:00").any()
    expected = pd.date_range(local[0].tz_convert("UTC").tz_localize(None), periods=72, freq="h", unit="ns")
    for frame in (aware, text):
        panel = Panel.from_frame(frame, "ctx", "ts", "n")
        pd.testing.assert_index_equal(panel.index, expected, check_names=False)
        np.testing.assert_array_equal(panel.values[0], values)
    naive = Panel.from_frame(_frame(), ["country", "asn"], "ts", "logins")
    assert naive.index[0] == pd.Timestamp("2024-01-01 00:00") and naive.index.tz is None


@pytest.mark.parametrize(
    "names, message",
    [
        (dict(value="asn"), r"to_frame: value='asn' is also the name of a context column \(context columns: \['asn'\]\)"),
        (dict(time="asn"), r"to_frame: time='asn' is also the name of a context column"),
        (dict(value="t", time="t"), "to_frame: value and time are both named 't'"),
    ],
)
def test_to_frame_refuses_a_name_that_would_overwrite_another_column(names, message):
    # The context labels (or the times) were silently replaced by the other column.
    panel = Panel(np.array([[1.0, 2.0], [3.0, 4.0]]), pd.Index(["AS1", "AS2"], name="asn"),
                  pd.date_range("2024-01-01", periods=2, freq="h"))
    with pytest.raises(ValueError, match=message):
        panel.to_frame(**names)
    unnamed = Panel.from_array(np.ones((2, 3)), contexts=pd.Index(["a", "b"]))
    with pytest.raises(ValueError, match="value='context' is also the name of a context column"):
        unnamed.to_frame(value="context")
    assert panel.to_frame(value="n", time="ts").columns.tolist() == ["asn", "ts", "n"]


def test_a_time_zone_aware_bound_on_a_naive_grid_is_a_value_error():
    panel = Panel(np.zeros((1, 24)), ["a"], pd.date_range("2024-01-01", periods=24, freq="h"))
    with pytest.raises(ValueError, match=r"time_slice\(Timestamp\('2024-01-01 05:00:00\+0000', tz='UTC'\), None\) on a "
                                         r"time grid from 2024-01-01 00:00:00 \(without a time zone\)"):
        panel.time_slice(pd.Timestamp("2024-01-01 05:00", tz="UTC"))
    assert panel.time_slice(pd.Timestamp("2024-01-01 05:00")).n_times == 19


@pytest.mark.parametrize("freq, start", [("D", "2024-03-25"), ("7D", "2024-03-04")])
def test_days_or_weeks_in_a_time_zone_load_across_daylight_saving_on_the_wall_clock(freq, start):
    """Daily data in local time: midnight in Europe/Berlin is 23:00 UTC in winter and 22:00 in
    summer, so read as UTC the step across the switch was 23 h and from_frame refused the column
    ("fits no regular grid of step 1 days"), while Panel(values, contexts, index) took the same
    index. A column with a zone keeps it for a step of days or weeks, which follows the wall clock."""
    index = pd.date_range(start, periods=14, freq=freq, tz="Europe/Berlin", unit="ns")
    assert index[0].utcoffset() != index[-1].utcoffset()  # the series crosses the switch
    values = np.arange(14.0)
    frame = pd.DataFrame({"c": "a", "ts": index, "v": values}).drop(index=5)  # a gap too
    panel = Panel.from_frame(frame, "c", "ts", "v")
    pd.testing.assert_index_equal(panel.index, index, check_names=False)
    assert panel.freq == pd.tseries.frequencies.to_offset(freq)
    np.testing.assert_array_equal(panel.values[0], np.where(np.arange(14) == 5, np.nan, values))
    # freq given: the same grid.
    pd.testing.assert_index_equal(Panel.from_frame(frame, "c", "ts", "v", freq=freq).index, panel.index)
    # A fixed duration of 24 h is another grid, read in UTC as before (it fits the data nowhere).
    with pytest.raises(ValueError, match="is off the grid of step 1 days"):
        Panel.from_frame(frame, "c", "ts", "v", freq="24h")


def test_days_written_with_utc_offsets_across_daylight_saving_say_to_give_the_zone():
    """Text with offsets names instants but not the zone: read as UTC, local midnights move by an
    hour at the switch. The error said to pass freq=, which cannot help; it says why, and what can."""
    index = pd.date_range("2024-03-25", periods=14, freq="D", tz="Europe/Berlin", unit="ns")
    frame = pd.DataFrame({"c": "a", "ts": [t.isoformat() for t in index], "v": 1.0})
    with pytest.raises(ValueError, match=r"(?s)UTC offset.*23 or 25 h.*daylight-saving.*tz_convert\('Europe/Berlin'\)") as info:
        Panel.from_frame(frame, "c", "ts", "v")
    assert "pass freq=" not in str(info.value)
    # With the zone given, it loads on the wall clock.
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True).dt.tz_convert("Europe/Berlin")
    pd.testing.assert_index_equal(Panel.from_frame(frame, "c", "ts", "v").index, index, check_names=False)


@pytest.mark.parametrize("freq", [None, "D"])
def test_days_of_utc_in_a_zoned_column_say_that_they_are_midnights_in_utc(freq):
    """A Parquet column of UTC midnights read in Europe/Berlin (tsanomaly fit --tz): 01:00 on its clock,
    02:00 after the switch, so no grid of its days. The error said to pass freq= (or that the data
    do not follow the step given), not that the times are days of UTC's clock."""
    days = pd.date_range("2024-03-25", periods=14, freq="D", tz="UTC", unit="ns").tz_convert("Europe/Berlin")
    frame = pd.DataFrame({"c": "a", "ts": days, "v": 1.0})
    with pytest.raises(ValueError, match=r"every time is 00:00:00 in UTC, so these are steps of UTC's clock, not "
                                         r"of Europe/Berlin's.*Read them in UTC") as info:
        Panel.from_frame(frame, "c", "ts", "v", freq=freq)
    assert "pass freq=" not in str(info.value) and "resample" not in str(info.value)
    frame["ts"] = frame["ts"].dt.tz_convert("UTC")  # read in UTC: its days
    assert Panel.from_frame(frame, "c", "ts", "v", freq=freq).n_times == 14


@pytest.mark.parametrize("zone, freq, start", [("Europe/Paris", "6h", "2026-03-25"),
                                               ("Australia/Lord_Howe", "h", "2026-04-03")])
def test_steps_of_a_local_clock_under_a_day_say_that_the_grid_is_in_utc(zone, freq, start):
    """Buckets of 6 hours counted in Paris (00:00, 06:00... local), or Lord Howe's hours (its clocks
    move by 30 minutes), leave a grid of fixed durations in UTC at a switch. The error said to pass
    freq= or to resample, which cannot help: it says the grid is in UTC and the clock is the zone's."""
    naive = pd.date_range(start, periods=80, freq=freq, unit="ns")
    times = naive.tz_localize(zone, ambiguous="NaT", nonexistent="NaT").dropna()
    frame = pd.DataFrame({"c": "a", "ts": times, "v": 1.0})
    for given in (None, freq):
        with pytest.raises(ValueError, match=rf"a step under a day is a fixed duration, counted in UTC, and these "
                                             rf"times are steps of {zone}'s clock") as info:
            Panel.from_frame(frame, "c", "ts", "v", freq=given)
        assert "pass freq=" not in str(info.value) and "resample" not in str(info.value)
    frame["ts"] = pd.date_range(times[0], periods=len(times), freq=freq).tz_convert("UTC")  # UTC's clock: read
    assert Panel.from_frame(frame, "c", "ts", "v").n_times == len(times)


def test_days_at_a_wall_clock_time_that_a_switch_skips_are_a_value_error_naming_the_column():
    # 02:30 does not exist in Europe/Berlin on 2024-03-31: the grid has no instant for that day.
    days = pd.DatetimeIndex(["2024-03-29 02:30", "2024-03-30 02:30", "2024-04-01 02:30"]).tz_localize("Europe/Berlin")
    with pytest.raises(ValueError, match=r"column 'ts': the grid of step D .* has no single instant for every point"):
        Panel.from_frame(pd.DataFrame({"c": "a", "ts": days, "v": 1.0}), "c", "ts", "v")


def test_rows_of_a_2d_array_select_contexts_of_a_multiindex():
    contexts = pd.MultiIndex.from_tuples([("US", "a"), ("DE", "b"), ("FR", "c")])
    panel = Panel(np.arange(9.0).reshape(3, 3), contexts, pd.date_range("2024-01-01", periods=3, freq="h"))
    chosen = panel.select(np.array([["US", "a"], ["FR", "c"]]))  # e.g. df[["country", "asn"]].to_numpy()
    assert chosen.contexts.tolist() == [("US", "a"), ("FR", "c")]
    assert panel.select([["DE", "b"]]).values.tolist() == [[3.0, 4.0, 5.0]]


@pytest.mark.parametrize("utc_hours", [["2024-03-31 00:00Z", "2024-03-31 01:00Z"], ["2024-10-27 00:00Z", "2024-10-27 01:00Z"]])
def test_zoned_hours_either_side_of_a_switch_are_one_hour_apart(utc_hours):
    """An hourly step is a duration, inferred in UTC as the grid is built (on the wall clock the two
    hours were 2 h apart in spring and one time in autumn: refused)."""
    stamps = pd.to_datetime(utc_hours).tz_convert("Europe/Berlin")
    panel = Panel.from_frame(pd.DataFrame({"c": "a", "n": 1.0, "ts": stamps}), "c", "ts", "n")
    assert panel.index.tz is None and panel.freq == pd.tseries.frequencies.to_offset("h")
    assert list(panel.index) == list(pd.to_datetime(utc_hours).tz_convert(None))


# ---------------------------------------------------------------------- weeks anchored on a weekday
@pytest.mark.parametrize("freq, start", [("W", "2024-01-07"), ("W-SUN", "2024-01-07"), ("W-MON", "2024-01-01"),
                                         ("2W-MON", "2024-01-01")])
def test_an_anchored_week_is_a_step_of_seven_days_on_its_weekday(freq, start):
    """freq="W" (pandas' name for weekly data, W-SUN) was refused as "not a fixed step", like a month."""
    index = pd.date_range(start, periods=10, freq=freq, unit="ns")
    frame = pd.DataFrame({"c": "a", "ts": index, "v": np.arange(10.0)}).drop(index=4)  # a gap too
    panel = Panel.from_frame(frame, "c", "ts", "v", freq=freq)
    pd.testing.assert_index_equal(panel.index, index, check_names=False)
    assert panel.freq == pd.tseries.frequencies.to_offset(freq)  # W-SUN for "W": what a saved model records
    np.testing.assert_array_equal(panel.values[0], np.where(np.arange(10) == 4, np.nan, np.arange(10.0)))


def test_an_anchored_week_keeps_the_first_points_time_of_day_as_date_range_does():
    """pandas' date_range(freq="W-SUN") does not require midnight: from 10:00 it gives Sundays at 10:00."""
    index = pd.date_range("2024-01-07 10:00", periods=6, freq="W", unit="ns")
    frame = pd.DataFrame({"c": "a", "ts": index, "v": 1.0})
    pd.testing.assert_index_equal(Panel.from_frame(frame, "c", "ts", "v", freq="W").index, index, check_names=False)
    # A Sunday at another time of day is on the weekday, but off the grid.
    frame.loc[3, "ts"] = pd.Timestamp("2024-01-28 00:00")
    with pytest.raises(ValueError, match=r"timestamp 2024-01-28 00:00:00 for context 'a' is off the grid of step 7 days"
                                         r".*keeps the first point's time of day"):
        Panel.from_frame(frame, "c", "ts", "v", freq="W")


def test_a_week_off_its_anchor_weekday_is_refused_naming_the_first_such_timestamp():
    sundays = pd.date_range("2024-01-07", periods=6, freq="W-SUN", unit="ns")
    frame = pd.DataFrame({"c": ["a"] * 6 + ["b", "b"], "v": 1.0,
                          "ts": [*sundays, pd.Timestamp("2024-01-22"), pd.Timestamp("2024-01-15")]})
    with pytest.raises(ValueError, match=r"column 'ts': timestamp 2024-01-22 00:00:00 for context 'b' is a Monday, but "
                                         r"freq='W' is a week anchored on Sunday \(SUN\).*pass freq='W-MON'"):
        Panel.from_frame(frame, "c", "ts", "v", freq="W")
    with pytest.raises(ValueError, match=r"timestamp 2024-01-07 00:00:00 for context 'a' is a Sunday, but freq='W-MON' "
                                         r"is a week anchored on Monday.*pass freq='W-SUN'.*or '7D'"):
        Panel.from_frame(frame.iloc[:6], "c", "ts", "v", freq="W-MON")
    # Not anchored, the same Sundays are 7-day steps (inferred or given), as before.
    assert Panel.from_frame(frame.iloc[:6], "c", "ts", "v", freq="7D").n_times == 6


@pytest.mark.parametrize("freq, start", [("W", "2024-03-03"), ("W-MON", "2024-03-04")])
def test_anchored_weeks_in_a_time_zone_follow_the_wall_clock_as_7d_does(freq, start):
    """A zoned column keeps its zone for a grid of weeks: its weekdays and midnights are those of
    the wall clock, across the switch to summer time (2024-03-31), as date_range in that zone."""
    index = pd.date_range(start, periods=8, freq=freq, tz="Europe/Berlin", unit="ns")
    assert index[0].utcoffset() != index[-1].utcoffset()
    frame = pd.DataFrame({"c": "a", "ts": index, "v": np.arange(8.0)}).drop(index=2)
    panel = Panel.from_frame(frame, "c", "ts", "v", freq=freq)
    pd.testing.assert_index_equal(panel.index, index, check_names=False)
    assert panel.freq == pd.tseries.frequencies.to_offset(freq) and str(panel.index.tz) == "Europe/Berlin"
    assert Panel.from_frame(frame, "c", "ts", "v", freq="7D").index.equals(panel.index)  # the same points
    # Local midnight is 23:00 or 22:00 the day before in UTC: on a naive UTC grid it is off the weekday.
    in_utc = frame.assign(ts=frame["ts"].dt.tz_convert("UTC"))
    before = index[0].tz_convert("UTC").tz_localize(None)
    with pytest.raises(ValueError, match=rf"timestamp {before} for context 'a' is a \w+day in UTC, but freq='{freq}'"):
        Panel.from_frame(in_utc, "c", "ts", "v", freq=freq)
    other = "W-MON" if freq == "W" else "W-SUN"
    with pytest.raises(ValueError, match=rf"timestamp {index[0].tz_localize(None)} .* on the wall clock of "
                                         rf"Europe/Berlin, but freq='{other}'"):
        Panel.from_frame(frame, "c", "ts", "v", freq=other)


def test_weeks_written_with_utc_offsets_say_the_weekday_is_that_of_utc():
    index = pd.date_range("2024-01-07", periods=5, freq="W", tz="Europe/Berlin")
    frame = pd.DataFrame({"c": "a", "ts": [t.isoformat() for t in index], "v": 1.0})
    with pytest.raises(ValueError, match=r"is a Saturday, but freq='W'.*written '2024-01-07T00:00:00\+01:00'.*"
                                         r"UTC instant.*tz_convert\('Europe/Berlin'\)"):
        Panel.from_frame(frame, "c", "ts", "v", freq="W")


@pytest.mark.parametrize("freq, offset, step", [
    ("W", pd.offsets.Week(weekday=6), "7D"),
    ("W-MON", pd.offsets.Week(weekday=0), "7D"),
    ("2W-SAT", pd.offsets.Week(2, weekday=5), "14D"),
    (pd.offsets.Week(), pd.offsets.Day(7), "7D"),  # no weekday: its text "W" would read back as W-SUN
    ("7D", pd.offsets.Day(7), "7D"),
    ("15min", pd.offsets.Minute(15), "15min"),
])
def test_grid_step_reads_fixed_steps_and_anchored_weeks(freq, offset, step):
    from tsanomaly.panel import grid_step

    assert grid_step(freq) == (offset, pd.Timedelta(step))


@pytest.mark.parametrize("freq, step", [("D", "1D"), ("7D", "7D"), ("W-MON", "7D"), ("1h", "1h")])
def test_step_duration_reads_days_where_timedelta_refuses_them(monkeypatch, freq, step):
    """pandas 3.0 made Day a calendar day and pd.Timedelta(Day()) raises there (3.1 accepts it again):
    step_duration("D") was None, so fit(freq="D") was refused as a calendar step and a daily model
    could not be scored on Spark. pandas 3.0's refusal is imitated, whichever pandas runs the test."""
    from tsanomaly.panel import grid_step, step_duration

    timedelta = pd.Timedelta

    def timedelta_of_pandas_3_0(*args, **kwargs):
        if args and isinstance(args[0], pd.offsets.Day):
            raise ValueError("Value must be Timedelta, string, integer, float, timedelta or convertible, not Day")
        return timedelta(*args, **kwargs)

    with monkeypatch.context() as patch:  # only around the calls: pd.Timedelta is also a type
        patch.setattr(pd, "Timedelta", timedelta_of_pandas_3_0)
        duration, (_, grid) = step_duration(freq), grid_step(freq)
    assert duration == grid == pd.Timedelta(step)


@pytest.mark.parametrize("freq, message", [
    ("MS", "freq 'MS' is not a fixed step .*'W' or 'W-MON'"),
    ("B", "freq 'B' is not a fixed step"),
    ("-1W", "freq '-1W' must be a positive step"),
])
def test_calendar_steps_and_negative_weeks_are_still_refused(freq, message):
    index = pd.date_range("2024-01-07", periods=5, freq="W")
    with pytest.raises(ValueError, match=message):
        Panel.from_frame(pd.DataFrame({"c": "a", "ts": index, "v": 1.0}), "c", "ts", "v", freq=freq)


@pytest.mark.parametrize("tz", [None, "Europe/Berlin"])
@pytest.mark.parametrize("freq, start", [("W", "2023-01-01"), ("W-MON", "2023-01-02")])
def test_a_model_fitted_on_anchored_weeks_is_saved_loaded_and_scores_later_data(tmp_path, tz, freq, start):
    """freq_ is the anchored week (W-SUN, W-MON); the loaded model places later weeks after its
    history whether they are read with that freq or inferred (168 h naive, 7 D zoned)."""
    from tsanomaly.detectors.stl import STLDetector

    index = pd.date_range(start, periods=70, freq=freq, tz=tz, unit="ns")
    values = np.random.default_rng(3).poisson(40, (3, 70)).astype(float)
    values[1, 62] += 400
    frame = pd.DataFrame({"c": np.repeat(["x", "y", "z"], 70), "ts": np.tile(index, 3), "v": values.ravel()})
    history, new = frame[frame["ts"] <= index[55]], frame[frame["ts"] > index[55]]
    later = new[new["ts"] >= index[60]]  # four weeks after the history: a gap
    for det in (RollingZScoreDetector(window=6, seasonal_period=None), STLDetector(periods=4)):
        det.fit(Panel.from_frame(history, "c", "ts", "v", freq=freq))
        assert det.freq_ == pd.tseries.frequencies.to_offset(freq).freqstr
        det.save(tmp_path / "weekly.tsa")
        loaded = tsanomaly.load(tmp_path / "weekly.tsa")
        assert loaded.freq_ == det.freq_
        for given in (freq, None):
            panel = Panel.from_frame(new, "c", "ts", "v", freq=given)
            assert loaded.steps_after_fit(panel) == 1
            np.testing.assert_array_equal(loaded.score(panel).to_numpy(), det.score(panel).to_numpy())
            assert loaded.steps_after_fit(Panel.from_frame(later, "c", "ts", "v", freq=given)) == 5
        alerts = loaded.alerts(Panel.from_frame(new, "c", "ts", "v", freq=freq))
        assert (alerts["c"] == "y").any()


def test_a_grid_of_positions_is_sliced_by_integer_positions_only():
    # A RangeIndex compared text bounds as text: time_slice("5", "7") gave positions 50-69, and
    # dates an empty slice, without an error.
    panel = Panel.from_array(np.arange(100.0)[None])
    assert panel.time_slice(5, 7).n_times == 3
    for bounds in (("5", "7"), ("2024-03-01", "2024-03-07"), (pd.Timestamp("2024-03-01"), None)):
        with pytest.raises(ValueError, match="sliced by integer positions"):
            panel.time_slice(*bounds)
    with pytest.raises(ValueError, match="sliced by integer positions"):
        panel.loc["2024-03-01":"2024-03-07"]


@pytest.mark.parametrize("stamps", [
    ["2024-03-31 01:00+01:00", "2024-03-31 03:00+02:00"],  # spring forward: one hour apart
    ["2024-10-27 02:00+02:00", "2024-10-27 02:00+01:00"],  # fall back: one hour apart
])
def test_two_zoned_timestamps_across_a_switch_are_one_step_of_their_instants(stamps):
    # Measured on the wall clock (2 h, then 0 h), the step made pandas refuse the index's freq.
    index = pd.DatetimeIndex(pd.to_datetime(stamps, utc=True)).tz_convert("Europe/Berlin")
    assert Panel(np.zeros((1, 2)), ["a"], index).index.freq == pd.offsets.Hour(1)
    # whole days stay days on the wall clock (23 h apart across the switch)
    days = pd.DatetimeIndex(list(pd.date_range("2024-03-30", periods=2, freq="D", tz="Europe/Berlin")))
    assert Panel(np.zeros((1, 2)), ["a"], days).index.freq == pd.offsets.Day(1)


def test_to_frame_of_a_zoned_grid_keeps_its_times():
    index = pd.date_range("2024-03-30", periods=3, freq="D", tz="Europe/Berlin")
    panel = Panel(np.arange(6.0).reshape(2, 3), pd.Index(["a", "b"], name="ctx"), index)
    frame = panel.to_frame()
    assert str(frame["time"].dtype).endswith("Europe/Berlin]")
    assert list(frame["time"]) == list(index) * 2
    assert Panel.from_frame(frame, "ctx", "time", "value").equals(panel)


@pytest.mark.parametrize("twice", ["ts", "v", "ctx"])
def test_from_frame_refuses_a_column_named_twice(twice):
    frame = pd.DataFrame({"ctx": ["a", "b"], "ts": pd.to_datetime(["2024-01-01", "2024-01-01"]), "v": [1.0, 2.0]})
    doubled = pd.concat([frame, frame[[twice]]], axis=1)
    with pytest.raises(ValueError, match=f"2 columns named '{twice}'"):
        Panel.from_frame(doubled, "ctx", "ts", "v")



def _hourly_frame(days=21):
    """Three contexts with a count every hour for ``days`` days, in long format."""
    index = pd.date_range("2024-01-01", periods=days * 24, freq="h")
    values = np.random.default_rng(0).poisson(20, (3, len(index))).astype(float)
    return Panel(values, pd.Index(["AS1", "AS2", "AS3"], name="asn"), index).to_frame(time="ts", value="n")


def test_a_row_with_a_wrong_clock_is_refused_before_the_grid_is_built(monkeypatch):
    # A null written as epoch 0 by a logger: the grid reached back to 1970, 473,856 hours for 505
    # timestamps (38 GB at 10,000 contexts), and the process ran out of memory without a word.
    df = _hourly_frame()
    stray = pd.DataFrame({"asn": ["AS2"], "ts": [pd.Timestamp(0)], "n": [1.0]})

    def no_grid(*args, **kwargs):
        raise AssertionError("the grid was built")

    monkeypatch.setattr(pd, "date_range", no_grid)
    with pytest.raises(ValueError) as info:
        Panel.from_frame(pd.concat([df, stray]), context="asn", time="ts", value="n")
    message = str(info.value)
    assert message.startswith(
        "column 'ts': the grid of freq 'h' from 1970-01-01 00:00:00 (context 'AS2') to 2024-01-21 23:00:00 "
        "(context 'AS1') would hold 473,856 time points for 505 distinct timestamps"
    )
    assert "drop or mend the rows with a wrong clock" in message and "a coarser freq=" in message


def test_a_sparse_grid_is_refused_only_when_long_and_nearly_empty():
    # One reading a day for 3 years on an hourly grid: 26,257 points for 1,095 timestamps (24 each)
    # passes the guard, one a week (156 timestamps: 168 points each) does not, unless given as weeks.
    days = pd.date_range("2021-01-01", periods=3 * 365, freq="D")
    daily = pd.DataFrame({"asn": "AS1", "ts": days, "n": 1.0})
    assert Panel.from_frame(daily, "asn", "ts", "n", freq="h").shape == (1, 26_257)
    weekly = daily.iloc[::7]
    with pytest.raises(ValueError, match=r"would hold 26,209 time points for 157 distinct timestamps"):
        Panel.from_frame(weekly, "asn", "ts", "n", freq="h")
    assert Panel.from_frame(weekly, "asn", "ts", "n", freq="7D").shape == (1, 157)
    # Short grids pass however sparse: 10,000 hours for two timestamps.
    two = pd.DataFrame({"asn": "AS1", "ts": pd.Timestamp("2024-01-01") + pd.to_timedelta([0, 9_999], "h"), "n": 1.0})
    assert Panel.from_frame(two, "asn", "ts", "n", freq="h").shape == (1, 10_000)


def test_the_jobs_command_line_refuses_a_row_with_a_wrong_clock_in_one_line(tmp_path, capsys):
    from tsanomaly.cli import main

    df = _hourly_frame()
    stray = pd.DataFrame({"asn": ["AS2"], "ts": [pd.Timestamp(0)], "n": [1.0]})
    path = tmp_path / "history.csv"
    pd.concat([df, stray]).to_csv(path, index=False)
    status = main(["fit", "--input", str(path), "--context", "asn", "--time", "ts", "--value", "n",
                   "--detector", "baseline", "--save", str(tmp_path / "model.zip")])
    err = capsys.readouterr().err
    assert status == 2
    assert "473,856 time points for 505 distinct timestamps" in err and "Traceback" not in err


@pytest.mark.parametrize("context", [["asn"], ["asn", "country"]])
@pytest.mark.parametrize("missing", [None, np.nan])
def test_rows_without_a_context_label_are_refused_not_merged_into_a_nan_context(context, missing):
    df = _hourly_frame().assign(country="FR")
    df.loc[df["asn"] == "AS3", context[-1]] = missing
    with pytest.raises(ValueError, match=rf"column '{context[-1]}' has 504 rows without a context label \(null\); "
                                         rf"drop them \(df.dropna\(subset=\['{context[-1]}'\]\)\) or give them a label"):
        Panel.from_frame(df, context=context, time="ts", value="n")


@pytest.mark.parametrize(
    "convert, kind",
    [
        (lambda df: df["ts"], r"timestamps \(datetime64"),
        (lambda df: df["ts"].dt.tz_localize("Europe/Paris"), r"timestamps \(datetime64\[\w+, Europe/Paris\]\)"),
        (lambda df: df["ts"] - df["ts"].min(), r"durations \(timedelta64"),
        (lambda df: df["n"] + 1j, r"complex numbers \(complex128\)"),
        (lambda df: (df["n"] + 1j).astype(object), r"complex numbers \(complex128\)"),
        (lambda df: df["ts"].dt.to_period("h"), r"periods \(period\[h\]\)"),
        (lambda df: pd.Series(pd.IntervalIndex.from_breaks(np.arange(len(df) + 1.0)), index=df.index),
         r"intervals \(interval"),
    ],
)
def test_a_value_column_of_times_durations_or_complex_numbers_is_refused(convert, kind):
    # A datetime64 column became nanoseconds since 1970 (1.7e18), complex numbers lost their imaginary part.
    df = _hourly_frame()
    with pytest.raises(ValueError, match=rf"^column 'n' holds {kind}.*, not numbers"):
        Panel.from_frame(df.assign(n=convert(df)), context="asn", time="ts", value="n")


def test_panel_values_of_times_or_complex_numbers_are_refused_and_numeric_text_is_still_read():
    for values, kind in ((np.zeros((1, 2), dtype="datetime64[ns]"), "timestamps"),
                         (np.zeros((1, 2), dtype="timedelta64[s]"), "durations"),
                         (np.zeros((1, 2), dtype=complex), "complex numbers")):
        with pytest.raises(ValueError, match=f"^Panel values hold {kind}"):
            Panel(values, ["a"], pd.RangeIndex(2))
    df = _hourly_frame()
    text = Panel.from_frame(df.assign(n=df["n"].astype(str).astype(object)), context="asn", time="ts", value="n")
    assert text.equals(Panel.from_frame(df, context="asn", time="ts", value="n"))


@pytest.mark.parametrize("freq, message", [(3600, "freq=3600 is a number, whose unit is not guessed"),
                                           (1.5, "freq=1.5 is a number"),
                                           ("bogus", "freq='bogus' is not a frequency pandas reads")])
def test_a_freq_that_is_no_frequency_is_named_with_examples(freq, message):
    with pytest.raises(ValueError, match=re.escape(message) + ".*such as 'h', '15min', '1D' .*pd.Timedelta"):
        Panel.from_frame(_frame(), context="asn", time="ts", value="logins", freq=freq)
    assert Panel.from_frame(_frame(), context="asn", time="ts", value="logins", freq=pd.Timedelta(hours=1)).n_times == 4


@pytest.mark.parametrize("context, time, value, message", [
    ("ts", "ts", "logins", "context='ts' and time='ts' name one column, 'ts'"),
    (["country", "asn"], "ts", "ts", "time='ts' and value='ts' name one column, 'ts'"),
    (["country", "asn"], "ts", "asn", r"context=\['country', 'asn'\] and value='asn' name one column, 'asn'"),
    (["asn", "asn"], "ts", "logins", r"context=\['asn', 'asn'\] names a column more than once"),
])
def test_one_column_for_two_roles_is_refused_up_front(context, time, value, message):
    # context="ts", time="ts" said "duplicate rows for context Timestamp(...)".
    with pytest.raises(ValueError, match=message):
        Panel.from_frame(_frame(), context=context, time=time, value=value)
