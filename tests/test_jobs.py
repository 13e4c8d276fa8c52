"""Scoring jobs on files: `tsanomaly fit` / `tsanomaly score`, formats, errors, atomic output."""
from __future__ import annotations

import io as _io
import json
import logging
import math
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tsanomaly
from tsanomaly import io as tsio
from tsanomaly import jobs
from tsanomaly.cli import main
from tsanomaly.detectors import RollingZScoreDetector

# Small and fast: 5 past days at the same hour, 12 days of hourly history, 2 new days.
PARAMS = ["--param", "window=5"]
FIT_END = "2024-03-12 23:00"


def _frame(seed=0, n_ctx=8, days=14):
    """Long table: failed logins per (country, asn) per hour, with two bursts in the last two days."""
    rng = np.random.default_rng(seed)
    index = pd.date_range("2024-03-01", periods=24 * days, freq="1h")
    hours = np.arange(len(index)) % 24
    level = rng.uniform(5, 80, size=(n_ctx, 1))
    values = rng.poisson(level * (1 + 0.5 * np.sin(2 * np.pi * hours / 24))).astype(float)
    values[2, -30:-27] += 400  # a burst on the first new day
    values[5, -8] += 300  # and a single hour on the second
    countries = np.array(["US", "BR", "DE", "IN"])[np.arange(n_ctx) % 4]
    asns = [f"AS{1000 + k}" for k in range(n_ctx)]
    frame = pd.DataFrame(
        {
            "country": np.repeat(countries, len(index)),
            "asn": np.repeat(asns, len(index)),
            "ts": np.tile(index, n_ctx),
            "failed_logins": values.reshape(-1),
        }
    )
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # order must not matter


@pytest.fixture(scope="module")
def tables():
    frame = _frame()
    cut = pd.Timestamp(FIT_END)
    return frame[frame["ts"] <= cut].reset_index(drop=True), frame[frame["ts"] > cut].reset_index(drop=True)


def _write(frame, path):
    tsio.write_table(frame, path)
    return str(path)


def _fit_args(history, model, *extra):
    return ["fit", "--input", history, "--context", "country,asn", "--time", "ts", "--value", "failed_logins",
            "--detector", "baseline", "--save", str(model), *PARAMS, *extra]


def _reference_alerts(history, today):
    """The same job done with the library API, independently of the CLI and jobs module."""
    hist = tsanomaly.Panel.from_frame(history, ["country", "asn"], "ts", "failed_logins", fill="zero")
    new = tsanomaly.Panel.from_frame(today, ["country", "asn"], "ts", "failed_logins", fill="zero")
    det = RollingZScoreDetector(window=5).fit(hist)
    return det.alerts(new)


@pytest.mark.parametrize("ext", ["csv", "parquet", "jsonl"])
def test_fit_then_score_round_trip_for_each_format(tables, tmp_path, ext, capsys):
    history, today = tables
    hist_path = _write(history, tmp_path / f"history.{ext}")
    today_path = _write(today, tmp_path / f"today.{ext}")
    model = tmp_path / "model.tsa"
    assert main(_fit_args(hist_path, model)) == 0
    out = tmp_path / f"alerts.{ext}"
    assert main(["score", "--model", str(model), "--input", today_path, "--output", str(out)]) == 0
    stdout = capsys.readouterr().out
    alerts = tsio.read_table(out)
    expected = _reference_alerts(history, today)
    assert len(expected) >= 2  # the two injected bursts at least
    assert len(alerts) == len(expected)
    np.testing.assert_allclose(alerts["peak_score"].to_numpy(), expected["peak_score"].to_numpy(), rtol=1e-9)
    assert list(alerts["asn"].astype(str)) == list(expected["asn"])
    assert pd.to_datetime(alerts["start"]).tolist() == pd.to_datetime(expected["start"]).tolist()
    assert set(alerts["metric"]) == {"failed_logins"}
    assert not alerts["cold_start"].astype(bool).any()
    assert f"{len(expected)} alerts" in stdout and "0 contexts unseen at fit" in stdout


@pytest.mark.parametrize("ext", ["jsonl", "jsonl.gz"])
def test_json_lines_values_are_read_exactly_as_from_csv_and_parquet(tmp_path, ext):
    """pandas' fast JSON number parser read 96.6538079735436 one unit in the last place off, so a
    value from JSON lines differed from the same value from CSV or Parquet (scores, alerts too)."""
    values = [96.6538079735436, 112.8088422732691, 0.1, 1e-300, 13335.0]
    frame = pd.DataFrame({"asn": ["a"] * len(values), "n": values})
    text = "".join(json.dumps(row) + "\n" for row in frame.to_dict("records"))  # Python's shortest repr
    path = tmp_path / f"v.{ext}"
    if ext.endswith(".gz"):
        import gzip

        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    for other in (_write(frame, tmp_path / "v.csv"), _write(frame, tmp_path / "v.parquet"), path):
        read = tsio.read_table(other, columns=["asn", "n"], text_columns=["asn"])["n"].to_numpy()
        assert read.tolist() == values, other


def test_the_summary_counts_in_words_that_fit_the_number(tables, tmp_path, capsys, caplog):
    """One context, one time, one unseen context: no "1 contexts"."""
    history, today = tables
    model = tmp_path / "m.tsa"
    one = history[history["asn"] == "AS1001"]
    assert main(_fit_args(_write(one, tmp_path / "h.csv"), model, "--param", "seasonal_period=null")) == 0
    assert "on 1 context x " in capsys.readouterr().out
    first = today[today["ts"] == today["ts"].min()]
    new = first[first["asn"].isin(["AS1001", "AS1002"])]
    with caplog.at_level(logging.WARNING, logger="tsanomaly"):
        assert main(["score", "--model", str(model), "--input", _write(new, tmp_path / "t.csv"),
                     "--output", str(tmp_path / "a.csv")]) == 0
    out = capsys.readouterr().out
    assert "scored 2 contexts x 1 time (" in out and "; 1 context unseen at fit (" in out
    assert "0 fitted contexts got no finite score" in out and "0 fitted contexts absent" in out
    assert any(r.getMessage().startswith("1 context was not in the fitted history") for r in caplog.records)
    assert [jobs._count(n, "alert") for n in (0, 1, 2)] == ["0 alerts", "1 alert", "2 alerts"]


def test_model_remembers_columns_so_score_needs_only_three_paths(tables, tmp_path):
    history, _ = tables
    model = tmp_path / "m.tsa"
    assert main(_fit_args(_write(history, tmp_path / "h.parquet"), model, "--fill", "nan")) == 0
    with zipfile.ZipFile(model) as archive:
        state = json.loads(archive.read("model.json"))["state"]
    saved = state["job_columns_"]["value"]
    assert saved == {"context": ["country", "asn"], "time": "ts", "value": "failed_logins", "fill": "nan",
                     "freq": "h", "detector": "baseline", "tz": None}
    det, columns = jobs.load_model(model)
    assert isinstance(det, RollingZScoreDetector) and det.window == 5
    assert columns.context == ["country", "asn"] and columns.fill == "nan"


def test_scores_file_has_every_point_and_flags_match_alerts(tables, tmp_path):
    history, today = tables
    model = tmp_path / "m.tsa"
    main(_fit_args(_write(history, tmp_path / "h.csv"), model))
    scores_path, alerts_path = tmp_path / "scores.parquet", tmp_path / "alerts.csv"
    assert main(["score", "--model", str(model), "--input", _write(today, tmp_path / "t.csv"),
                 "--output", str(alerts_path), "--scores", str(scores_path)]) == 0
    scores = pd.read_parquet(scores_path)
    alerts = pd.read_csv(alerts_path)
    assert len(scores) == len(today)
    assert list(scores.columns) == ["country", "asn", "ts", "failed_logins", "score", "threshold", "flag"]
    assert int(scores["flag"].sum()) == int(alerts["n_points"].sum())
    merged = scores.merge(today.assign(asn=today["asn"].astype(str)), on=["country", "asn", "ts"], suffixes=("", "_in"))
    np.testing.assert_array_equal(merged["failed_logins"], merged["failed_logins_in"])


def test_new_contexts_are_scored_cold_and_listed(tables, tmp_path, capsys, caplog):
    history, today = tables
    model = tmp_path / "m.tsa"
    known = history[~history["asn"].isin(["AS1002", "AS1007"])]
    # Compare with the 5 preceding hours, so that a new context has a past within the new day.
    main(_fit_args(_write(known, tmp_path / "h.parquet"), model, "--param", "seasonal_period=null"))
    unseen_path = tmp_path / "unseen.jsonl"
    alerts_path = tmp_path / "alerts.parquet"
    with caplog.at_level(logging.WARNING, logger="tsanomaly"):
        status = main(["score", "--model", str(model), "--input", _write(today, tmp_path / "t.parquet"),
                       "--output", str(alerts_path), "--unseen", str(unseen_path)])
    assert status == 0
    unseen = tsio.read_table(unseen_path)
    assert sorted(unseen["asn"]) == ["AS1002", "AS1007"]
    # The baseline scores a new context from a cold start: it has finite scores, so it is not skipped.
    assert set(unseen["status"]) == {"cold_start"}
    assert (unseen["n_points"] == len(today) // 8).all()
    assert "2 contexts unseen at fit (2 scored from a cold start, 0 skipped)" in capsys.readouterr().out
    assert any("not in the fitted history" in r.getMessage() for r in caplog.records)
    alerts = pd.read_parquet(alerts_path)
    assert (alerts["cold_start"] == alerts["asn"].isin(["AS1002", "AS1007"])).all()


def test_contexts_without_any_score_are_reported_as_skipped(tables):
    history, today = tables
    det = jobs.fit_frame(history, "country,asn", "ts", "failed_logins", detector="baseline", params={"window": 5})
    # A new context needs 3 days of the same hour (min_periods) before the baseline can score
    # it; two new days give it no score at all, even from a cold start.
    lone = pd.DataFrame({"country": ["FR"], "asn": ["AS9"], "ts": [today["ts"].min()], "failed_logins": [3.0]})
    result = jobs.score_frame(det, pd.concat([today, lone], ignore_index=True), chunk_size=3)
    row = result.unseen.set_index("asn").loc["AS9"]
    assert row["status"] == "skipped"
    assert row["n_points"] == 48  # fill="zero": its other hours count as zero events
    assert np.isnan(result.scores.to_numpy()[result.panel.contexts.get_loc(("FR", "AS9"))]).all()
    assert "1 skipped" in result.summary()


def test_fitted_contexts_absent_from_the_input_are_counted(tables):
    history, today = tables
    det = jobs.fit_frame(history, ["country", "asn"], "ts", "failed_logins", detector="baseline", params={"window": 5})
    result = jobs.score_frame(det, today[today["asn"] != "AS1003"])
    assert result.n_absent == 1 and result.panel.n_contexts == 7
    assert "1 fitted context absent from the input" in result.summary()


def test_a_single_new_hour_is_scored_on_the_fitted_grid(tables, tmp_path):
    history, today = tables
    model = tmp_path / "m.tsa"
    main(_fit_args(_write(history, tmp_path / "h.parquet"), model))
    first_hour = today[today["ts"] == today["ts"].min()]
    result = jobs.score_file(model, _write(first_hour, tmp_path / "hour.csv"), tmp_path / "a.csv")
    assert result.panel.shape == (8, 1)
    assert np.isfinite(result.scores.to_numpy()).all()


def test_chunked_scoring_equals_one_call(tables):
    history, today = tables
    det = jobs.fit_frame(history, "country,asn", "ts", "failed_logins", detector="baseline", params={"window": 5})
    panel = jobs.frame_to_panel(today, jobs.JobColumns.from_json(det.job_columns_), freq=det.freq_)
    scores, alerts = jobs.score_panel(det, panel, chunk_size=3)
    np.testing.assert_array_equal(scores.to_numpy(), det.score(panel).to_numpy())
    reference = det.alerts(panel)
    assert len(alerts) == len(reference)
    np.testing.assert_array_equal(alerts["peak_score"].to_numpy(), reference["peak_score"].to_numpy())


def test_context_labels_match_across_formats(tables, tmp_path):
    """Numeric labels read as integers from Parquet and as text from JSON lines are one context."""
    history, today = tables
    numeric = lambda f: f.assign(asn=f["asn"].str[2:].astype(int))  # noqa: E731
    model = tmp_path / "m.tsa"
    main(_fit_args(_write(numeric(history), tmp_path / "h.parquet"), model))
    text = numeric(today).assign(asn=lambda f: f["asn"].astype(str))
    result = jobs.score_file(model, _write(text, tmp_path / "t.jsonl"), tmp_path / "a.jsonl")
    assert len(result.unseen) == 0 and result.n_absent == 0


@pytest.mark.parametrize("score_ext", ["csv", "jsonl", "parquet"])
def test_whole_floats_are_the_same_context_as_the_integer(tables, tmp_path, score_ext):
    """An integer ASN column that held a null is float64 in Parquet (13335.0): fitted from it, a
    model must match the ASNs read as integers or text, and the injected bursts must alert.
    Before, the fitted labels were "1000.0" and every new context was unseen (exit 0, no alert)."""
    history, today = tables
    as_int = lambda f: f.assign(asn=f["asn"].str[2:].astype(int))  # noqa: E731
    model = tmp_path / "m.tsa"
    floats = as_int(history).assign(asn=lambda f: f["asn"].astype(np.float64))
    assert main(_fit_args(_write(floats, tmp_path / "h.parquet"), model)) == 0
    assert pd.read_parquet(tmp_path / "h.parquet")["asn"].dtype == np.float64
    assert sorted({asn for _, asn in tsanomaly.load(model).contexts_}) == [str(1000 + k) for k in range(8)]
    new = as_int(today) if score_ext != "jsonl" else as_int(today).assign(asn=lambda f: f["asn"].astype(str))
    result = jobs.score_file(model, _write(new, tmp_path / f"t.{score_ext}"), tmp_path / "a.csv")
    assert len(result.unseen) == 0 and result.n_absent == 0
    assert len(result.alerts) == len(_reference_alerts(history, today)) >= 2


@pytest.mark.parametrize("keys", [["ts"], ["country", "asn", "ts"]], ids=["ts", "all-keys"])
def test_parquet_key_columns_stored_as_the_index_are_read_as_columns(tables, tmp_path, keys):
    """df.set_index("ts").to_parquet(...) (or a groupby().sum() result) keeps its keys in the pandas index,
    which read_parquet(columns=...) returns as the index: "column 'ts' is missing" though the file holds it."""
    history, today = tables
    plain = {name: _write(frame, tmp_path / f"{name}.parquet") for name, frame in (("h", history), ("t", today))}
    indexed = {}
    for name, frame in (("h", history), ("t", today)):
        indexed[name] = str(tmp_path / f"{name}_indexed.parquet")
        frame.set_index(keys).to_parquet(indexed[name])
    assert "ts" not in pd.read_parquet(indexed["h"], columns=["country", "asn", "ts", "failed_logins"]).columns
    results = []
    for files in (plain, indexed):
        model = tmp_path / "m.tsa"
        assert main(_fit_args(files["h"], model)) == 0
        results.append(jobs.score_file(model, files["t"], tmp_path / "a.csv", scores=tmp_path / "s.csv"))
    pd.testing.assert_frame_equal(results[1].alerts, results[0].alerts)
    np.testing.assert_array_equal(results[1].scores.to_numpy(), results[0].scores.to_numpy())
    assert len(results[0].alerts) >= 2
    frame = tsio.read_table(indexed["t"])  # without columns: the index's columns come first, as in the file
    assert list(frame.columns) == [*keys, *(c for c in today.columns if c not in keys)]


def test_a_job_model_scores_a_python_panel_of_the_same_integer_labels(tables, tmp_path):
    """The README's quick start on a model from `tsanomaly fit`: the job stores its labels as text
    ("1000"), Panel.from_frame keeps the Parquet file's integers (1000), and "1000" != 1000 left every
    context unseen: every score NaN, no alert, and no warning."""
    history, today = tables
    as_int = lambda f: f.assign(asn=f["asn"].str[2:].astype(np.int64))  # noqa: E731
    model = tmp_path / "m.tsa"
    assert main(_fit_args(_write(as_int(history), tmp_path / "h.parquet"), model)) == 0
    det = tsanomaly.load(model)
    assert ("US", "1000") in det.contexts_
    new = pd.read_parquet(_write(as_int(today), tmp_path / "t.parquet"))
    panel = tsanomaly.Panel.from_frame(new, ["country", "asn"], "ts", "failed_logins", fill="zero")
    assert ("US", 1000) in panel.contexts
    assert len(det.unseen_contexts(panel)) == 0
    alerts = det.alerts(panel)
    job = jobs.score_frame(det, new)
    np.testing.assert_array_equal(det.score(panel).to_numpy(), job.scores.to_numpy())  # same order: "1000".."1007"
    assert len(alerts) == len(job.alerts) >= 2
    np.testing.assert_array_equal(alerts["peak_score"].to_numpy(), job.alerts["peak_score"].to_numpy())


def test_labels_as_text_turns_whole_floats_into_the_integers_text():
    floats = pd.Series([13335.0, 2.5, np.nan, -0.0, 1e20, 13335.0])
    assert tsio.labels_as_text(floats).tolist() == ["13335", "2.5", np.nan, "0", "1" + "0" * 20, "13335"]
    # Per value, not per column: 13335.0 has one text whatever its neighbours.
    assert tsio.labels_as_text(pd.Series([13335.0])).tolist() == ["13335"]
    mixed = pd.Series([13335, "13335", 13335.0, 0.5, True, None, "0123"], dtype=object)
    assert tsio.labels_as_text(mixed).tolist() == ["13335", "13335", "13335", "0.5", "True", np.nan, "0123"]
    for dtype in ("float32", "Float64", "category"):
        column = pd.Series([13335.0, 2.5, None], dtype=dtype)
        assert tsio.labels_as_text(column).tolist() == ["13335", "2.5", np.nan], dtype
    text = pd.Series(["13335.0", "0123", "NA"])  # text is kept verbatim, numbers or not
    assert tsio.labels_as_text(text).tolist() == ["13335.0", "0123", "NA"]


def test_frame_to_panel_and_read_table_give_whole_floats_one_text(tmp_path):
    frame = pd.DataFrame({"asn": [13335.0, 13335.0, 15169.0], "ts": ["2024-01-01 00:00", "2024-01-01 01:00",
                          "2024-01-01 00:00"], "logins": [1.0, 2.0, 3.0]})
    panel = jobs.frame_to_panel(frame, jobs.JobColumns.parse("asn", "ts", "logins", "zero"))
    assert list(panel.contexts) == ["13335", "15169"]
    for ext in ("parquet", "jsonl"):  # JSON lines written from a float column hold 13335.0 too
        back = tsio.read_table(tsio.write_table(frame, tmp_path / f"f.{ext}"), text_columns=["asn"])
        assert back["asn"].tolist() == ["13335", "13335", "15169"], ext


def _labelled(frame):
    """``frame`` with labels that CSV readers mangle: ASNs with a leading zero, and Namibia's code "NA"."""
    asns = {f"AS{1000 + k}": f"0{123 + k}" for k in range(8)}
    return frame.assign(asn=frame["asn"].map(asns), country=frame["country"].replace({"BR": "NA"}))


@pytest.mark.parametrize("fit_ext, score_ext", [("jsonl", "csv"), ("csv", "jsonl"), ("csv", "csv")])
def test_context_labels_are_read_as_text(tables, tmp_path, fit_ext, score_ext):
    """A CSV's "0123" keeps its zero and its "NA" is a label, so a model fits and scores across formats."""
    history, today = (_labelled(f) for f in tables)
    model = tmp_path / "m.tsa"
    assert main(_fit_args(_write(history, tmp_path / f"h.{fit_ext}"), model)) == 0
    det = tsanomaly.load(model)
    expected = sorted(set(zip(history["country"], history["asn"])))
    assert list(det.contexts_) == expected and ("NA", "0124") in expected
    result = jobs.score_file(model, _write(today, tmp_path / f"t.{score_ext}"), tmp_path / "a.parquet")
    assert len(result.unseen) == 0 and result.n_absent == 0
    assert list(result.panel.contexts) == expected


def test_the_report_reads_context_labels_as_text_too(tables, tmp_path):
    history, today = (_labelled(f) for f in tables)
    model = tmp_path / "m.tsa"
    assert main(_fit_args(_write(history, tmp_path / "h.jsonl"), model)) == 0
    results = jobs.report_file([model], _write(today, tmp_path / "t.csv"), tmp_path / "r.html", top=1,
                               history=_write(history, tmp_path / "h.csv"))
    assert len(results[0].unseen) == 0 and results[0].n_absent == 0


def test_read_table_keeps_label_columns_verbatim(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("asn,ts,n\n0123,2024-01-01,NA\nNA,2024-01-01,1\n,2024-01-01,2\n")
    frame = tsio.read_table(path, columns=["asn", "ts", "n"], text_columns=["asn"])
    assert frame["asn"].iloc[:2].tolist() == ["0123", "NA"]
    assert frame["asn"].isna().tolist() == [False, False, True]  # an empty cell is still missing
    assert frame["n"].isna().tolist() == [True, False, False]  # other columns keep pandas' NA strings
    # JSON numbers and typed Parquet columns become the same text as a CSV's digits.
    numbers = pd.DataFrame({"asn": [123, 456], "n": [1.0, 2.0]})
    for ext in ("jsonl", "parquet"):
        back = tsio.read_table(tsio.write_table(numbers, tmp_path / f"n.{ext}"), text_columns=["asn"])
        assert back["asn"].tolist() == ["123", "456"]


def test_an_empty_context_cell_is_still_a_missing_label(tables, tmp_path, capsys):
    history, _ = tables
    path = tmp_path / "h.csv"
    tsio.write_table(history, path)
    lines = path.read_text().splitlines()
    country, asn, rest = lines[5].split(",", 2)
    lines[5] = f"{country},,{rest}"  # row 4 has no ASN
    path.write_text("\n".join(lines) + "\n")
    assert main(_fit_args(str(path), tmp_path / "m.tsa")) == 2
    assert "column 'asn' has 1 rows without a context label (first at row 4)" in _one_line_error(capsys)


def test_fitted_contexts_without_any_score_are_counted_and_warned(tables, caplog):
    history, today = tables
    det = jobs.fit_frame(history, "country,asn", "ts", "failed_logins", detector="baseline", params={"window": 5})
    # Ten days after the history: a longer gap than the 5-day baseline can bridge, so no score at all.
    late = today.assign(ts=today["ts"] + pd.Timedelta("10D"))
    with caplog.at_level(logging.WARNING, logger="tsanomaly"):
        result = jobs.score_frame(det, late)
    assert not np.isfinite(result.scores.to_numpy()).any()
    assert result.n_unscored == 8 and len(result.unseen) == 0
    assert "8 fitted contexts got no finite score (they could not alert)" in result.summary()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # the gap itself (see the next test), then what it cost
    assert "8 of 8 fitted contexts got no finite score" in warnings[1]
    assert "starts 240 grid steps after the end of the fitted history" in warnings[1]
    caplog.clear()
    assert jobs.score_frame(det, today).n_unscored == 0
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize("fill", ["zero", "nan"])
def test_new_data_that_starts_after_a_gap_is_warned_about(tables, caplog, fill):
    """A batch whose first hours have no row (an outage on every context) starts the grid at its
    first row: the hours before are not scored, even with fill="zero", where absent rows inside the
    table count as zero events. That went without a word."""
    history, today = tables
    det = jobs.fit_frame(history, "country,asn", "ts", "failed_logins", detector="baseline", params={"window": 5},
                         fill=fill)
    late = today[today["ts"] >= today["ts"].min() + pd.Timedelta("8h")]
    with caplog.at_level(logging.WARNING, logger="tsanomaly"):
        result = jobs.score_frame(det, late, source="today.csv")
    assert result.panel.index[0] == pd.Timestamp(FIT_END) + pd.Timedelta("9h")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith("today.csv starts 8 points (8 hours on the 'h' grid) after the fitted history ends")
    assert ("not those before its first row" in warnings[0]) == (fill == "zero")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tsanomaly"):
        jobs.score_frame(det, today)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_a_fitted_context_with_only_missing_values_is_counted(tables, caplog):
    history, today = tables
    det = jobs.fit_frame(history, "country,asn", "ts", "failed_logins", detector="baseline",
                         params={"window": 5}, fill="nan")
    blank = today.assign(failed_logins=today["failed_logins"].where(today["asn"] != "AS1003"))
    with caplog.at_level(logging.WARNING, logger="tsanomaly"):
        result = jobs.score_frame(det, blank)
    assert result.n_unscored == 1
    assert "1 fitted context got no finite score" in result.summary()
    assert any("1 of them have only missing values" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("detector, params", [
    ("baseline", {"window": 5}), ("mp", {"window": 6}), ("stl", {"periods": 24}), ("ensemble", {}),
])
def test_a_context_unobserved_in_the_fitted_history_is_named_as_the_cause(tables, caplog, detector, params):
    """A context whose history is all missing gets no score on full new data; the warning said
    "the new data is too short or too sparse for the detector's window", which it is not."""
    history, today = tables
    blank = history.assign(failed_logins=history["failed_logins"].where(history["asn"] != "AS1003"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # STL warns at fit that it skips the context
        det = jobs.fit_frame(blank, "country,asn", "ts", "failed_logins", detector=detector, params=params, fill="nan")
    assert det.fitted_without_data().tolist() == [asn == "AS1003" for asn in det.contexts_.get_level_values("asn")]
    with caplog.at_level(logging.WARNING, logger="tsanomaly"):
        result = jobs.score_frame(det, today)
    assert result.n_unscored == 1
    message = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING][0]
    assert "likely cause: 1 of them had no observed value in the fitted history" in message
    assert "too short or too sparse" not in message


def test_a_context_first_seen_shortly_before_the_fits_end_is_not_blamed_on_the_new_data(tables, caplog):
    """Ten observed hours of history, a full new day: the cause named covers the short history too."""
    history, today = tables
    late = history["ts"] > history["ts"].max() - pd.Timedelta(hours=10)
    short = history.assign(failed_logins=history["failed_logins"].where((history["asn"] != "AS1003") | late))
    det = jobs.fit_frame(short, "country,asn", "ts", "failed_logins", detector="baseline", params={"window": 5},
                         fill="nan")
    with caplog.at_level(logging.WARNING, logger="tsanomaly"):
        result = jobs.score_frame(det, today)
    assert result.n_unscored == 1
    message = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING][0]
    assert "in the new data or in the part of the fitted history the model keeps" in message


# ---------------------------------------------------------------------- user errors: exit 2, one line
def _one_line_error(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def test_missing_column_is_named(tables, tmp_path, capsys):
    history, _ = tables
    path = _write(history.drop(columns=["asn"]), tmp_path / "h.csv")
    assert main(_fit_args(path, tmp_path / "m.tsa")) == 2
    err = _one_line_error(capsys)
    assert err.startswith("tsanomaly fit: error:") and "column 'asn' is missing" in err


def test_missing_column_at_score_time(tables, tmp_path, capsys):
    history, today = tables
    model = tmp_path / "m.tsa"
    main(_fit_args(_write(history, tmp_path / "h.parquet"), model))
    capsys.readouterr()
    path = _write(today.rename(columns={"failed_logins": "fails"}), tmp_path / "t.parquet")
    assert main(["score", "--model", str(model), "--input", path, "--output", str(tmp_path / "a.csv")]) == 2
    assert "column 'failed_logins' is missing" in _one_line_error(capsys)
    assert not (tmp_path / "a.csv").exists()


def test_epoch_numbers_in_the_time_column_are_refused(tables, tmp_path, capsys):
    history, _ = tables
    epochs = history.assign(ts=history["ts"].astype("int64") // 10**9)
    path = _write(epochs, tmp_path / "h.csv")
    assert main(_fit_args(path, tmp_path / "m.tsa")) == 2
    err = _one_line_error(capsys)
    assert f"{path}: column 'ts' holds numbers, not timestamps; write ISO 8601 text" in err
    assert not (tmp_path / "m.tsa").exists()


def test_iso_8601_forms_mix_in_one_file_and_other_text_is_named(tables, tmp_path, capsys):
    history, _ = tables
    text = history["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    # Every other row with milliseconds: pandas took the first row's layout for all and refused these.
    text = text.where(np.arange(len(text)) % 2 == 0, history["ts"].dt.strftime("%Y-%m-%dT%H:%M:%S.000Z"))
    mixed = _write(history.assign(ts=text), tmp_path / "mixed.csv")
    assert main(_fit_args(mixed, tmp_path / "m.tsa")) == 0
    reference = tsanomaly.load(tmp_path / "m.tsa")
    assert main(_fit_args(_write(history, tmp_path / "h.csv"), tmp_path / "plain.tsa")) == 0
    assert reference.fit_end_ == tsanomaly.load(tmp_path / "plain.tsa").fit_end_
    capsys.readouterr()
    bad = _write(history.assign(ts=text.where(np.arange(len(text)) != 3, "03/01/2024 10:00")), tmp_path / "bad.csv")
    assert main(_fit_args(bad, tmp_path / "bad.tsa")) == 2
    err = _one_line_error(capsys)
    assert f"{bad}: column 'ts' holds '03/01/2024 10:00' for context (" in err
    assert "which is not an ISO 8601 timestamp" in err and "You might want to try" not in err


def test_unknown_detector(tables, tmp_path, capsys):
    history, _ = tables
    args = _fit_args(_write(history, tmp_path / "h.csv"), tmp_path / "m.tsa")
    args[args.index("baseline")] = "prophet"
    assert main(args) == 2
    assert "unknown detector 'prophet'" in _one_line_error(capsys)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("h.parquet", b"this is not parquet", "cannot read"),
        ("h.jsonl", b'{"country": "US", "asn": ', "cannot read"),
        ("h.csv", b"", "cannot read"),
        ("h.xlsx", b"whatever", "unsupported file extension"),
    ],
)
def test_unreadable_input(tmp_path, capsys, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    assert main(_fit_args(str(path), tmp_path / "m.tsa")) == 2
    assert message in _one_line_error(capsys)


def test_missing_input_file(tmp_path, capsys):
    assert main(_fit_args(str(tmp_path / "nope.parquet"), tmp_path / "m.tsa")) == 2
    assert "not found" in _one_line_error(capsys)


def test_model_that_is_not_a_model(tables, tmp_path, capsys):
    _, today = tables
    fake = tmp_path / "m.tsa"
    fake.write_text("hello")
    args = ["score", "--model", str(fake), "--input", _write(today, tmp_path / "t.csv"),
            "--output", str(tmp_path / "a.csv")]
    assert main(args) == 2
    assert "not a tsanomaly model file" in _one_line_error(capsys)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--param", "window"], "expects key=value"),
        (["--param", "windows=3"], "has no parameter 'windows'"),
        (["--param", "seasonal_period=0"], "seasonal_period must be a positive integer or None"),
        (["--context", "country,ts"], "both as a context column and as --time"),
        (["--param", "contamination=null"], "contamination must be a number in (0, 0.5), got None"),
        (["--param", 'contamination="0.01"'], "contamination must be a number in (0, 0.5), got '0.01'"),
        (["--param", "threshold=true"], "threshold must be one of"),
    ],
)
def test_bad_parameters(tables, tmp_path, capsys, extra, message):
    history, _ = tables
    args = _fit_args(_write(history, tmp_path / "h.csv"), tmp_path / "m.tsa")
    if extra[0] == "--context":
        args[args.index("--context") + 1] = extra[1]
    else:
        args += extra
    assert main(args) == 2
    assert message in _one_line_error(capsys)


@pytest.mark.parametrize("freq", ["0h", "-1h"])
def test_a_step_that_is_not_positive_is_a_user_error(tables, tmp_path, capsys, freq):
    history, _ = tables
    assert main(_fit_args(_write(history, tmp_path / "h.csv"), tmp_path / "m.tsa", f"--freq={freq}")) == 2
    assert f"freq '{freq}' must be a positive step" in _one_line_error(capsys)


def test_a_freq_the_data_does_not_follow_is_not_asked_for_again(tables, tmp_path, capsys):
    history, _ = tables
    assert main(_fit_args(_write(history, tmp_path / "h.csv"), tmp_path / "m.tsa", "--freq=2h")) == 2
    err = _one_line_error(capsys)
    assert "is off the grid of step 0 days 02:00:00 (freq='2h')" in err and "resample" in err
    assert "pass freq" not in err


@pytest.mark.parametrize(
    "detector, params, days, needs, has, knob",
    [
        # min_periods = 3 days of the same hour, then one point: 3 x 24 + 1
        ("baseline", ["--param", "window=5"], 2, 73, "48 points (2 days on the 'h' grid)", "window=5"),
        # min_history = 672 // 4 points of past, then one window of 200
        ("mp", ["--param", "window=200"], 8, 368, "192 points (8 days on the 'h' grid)", "window=200"),
        # two full daily cycles (STL's own fit would raise, with a message that names no parameter)
        ("stl", [], 1, 48, "24 points (1 day on the 'h' grid)", "periods=24"),
        # a window of 48 in the 80% of the history it trains on
        ("lstm", [], 2, 60, "48 points (2 days on the 'h' grid)", "window=48, period=24, validation_fraction=0.2"),
    ],
)
def test_a_history_too_short_to_ever_alert_is_refused_before_the_fit(tables, tmp_path, capsys, monkeypatch,
                                                                     detector, params, days, needs, has, knob):
    from tsanomaly.detectors.matrix_profile import MatrixProfileDetector
    from tsanomaly.detectors.stl import STLDetector

    def never(self, values, panel):
        raise AssertionError("the fit ran")

    for cls in (RollingZScoreDetector, MatrixProfileDetector, STLDetector):
        monkeypatch.setattr(cls, "_fit", never)
    if detector == "lstm":
        pytest.importorskip("torch")
        from tsanomaly.detectors.lstm_ae import LSTMAutoencoderDetector

        monkeypatch.setattr(LSTMAutoencoderDetector, "_fit", never)
    history, _ = tables
    short = history[history["ts"] < history["ts"].min() + pd.Timedelta(days=days)]
    model = tmp_path / "m.tsa"
    args = ["fit", "--input", _write(short, tmp_path / "h.csv"), "--context", "country,asn", "--time", "ts",
            "--value", "failed_logins", "--detector", detector, "--save", str(model), *params]
    assert main(args) == 2
    err = _one_line_error(capsys)
    assert f"needs a history of at least {needs} points to score anything, and this one has {has}" in err
    assert "could never alert; fit on a longer history or use a shorter window" in err
    assert f"(now {knob}" in err and knob in err
    assert not model.exists()


def test_an_ensemble_of_named_members_is_fitted_from_the_command_line(tables, tmp_path, capsys):
    """--param detectors=[...] names the members (without it, the baseline and STL with their defaults)."""
    history, today = tables
    model = tmp_path / "e.tsa"
    args = ["fit", "--input", _write(history, tmp_path / "h.csv"), "--context", "country,asn", "--time", "ts",
            "--value", "failed_logins", "--detector", "ensemble", "--save", str(model),
            "--param", 'detectors=[{"name": "baseline", "window": 5}, {"name": "stl", "periods": 24}]']
    assert main(args) == 0
    det = tsanomaly.load(model)
    assert [type(m).__name__ for m in det.members_] == ["RollingZScoreDetector", "STLDetector"]
    assert main(["score", "--model", str(model), "--input", _write(today, tmp_path / "t.csv"),
                 "--output", str(tmp_path / "a.csv")]) == 0
    assert "with EnsembleDetector: " in capsys.readouterr().out


def test_a_fixed_threshold_lets_a_short_history_fit(tables, tmp_path, capsys):
    """A numeric threshold needs no training score: the fit runs (it did before the early check,
    which refused it) and new data that extends the history can be scored against it; STL's fit
    still needs two cycles."""
    history, _ = tables
    short = history[history["ts"] < history["ts"].min() + pd.Timedelta(days=2)]
    path = _write(short, tmp_path / "h.csv")
    assert main(_fit_args(path, tmp_path / "m.tsa", "--param", "threshold=8")) == 0
    assert "fitted RollingZScoreDetector(threshold=8" in capsys.readouterr().out
    one_day = _write(short[short["ts"] < short["ts"].min() + pd.Timedelta(days=1)], tmp_path / "d.csv")
    args = ["fit", "--input", one_day, "--context", "country,asn", "--time", "ts", "--value", "failed_logins",
            "--detector", "stl", "--param", "threshold=8", "--save", str(tmp_path / "s.tsa")]
    assert main(args) == 2
    assert "needs a history of at least 48 points" in _one_line_error(capsys)


def test_a_fit_calibrated_in_sample_says_so_also_in_a_job(tables):
    """The jobs silence the library's infinite-threshold warning (they raise instead), not the
    CalibrationWarning of an STL history too short to hold anything out of its fit."""
    history, _ = tables
    short = history[history["ts"] < history["ts"].min() + pd.Timedelta(days=2)]
    with pytest.warns(tsanomaly.CalibrationWarning, match="too short to hold out any data"):
        jobs.fit_frame(short, "country,asn", "ts", "failed_logins", detector="stl", params={"device": "cpu"},
                       require_alerts=True)


@pytest.mark.parametrize("n_times, freq, text", [
    (48, "h", "48 points (2 days on the 'h' grid)"),
    (10, "15min", "10 points (2 hours 30 minutes on the '15min' grid)"),
    (24, "h", "24 points (1 day on the 'h' grid)"),
    (26, "h", "26 points (1 day 2 hours on the 'h' grid)"),
    (1, "h", "1 point (1 hour on the 'h' grid)"),
    (3, "MS", "3 points"),  # months: no fixed duration
    (10, "W-SUN", "10 points (70 days on the 'W-SUN' grid)"),  # a week anchored on a weekday is 7 days
    (10, None, "10 points"),  # a grid of positions
    (90, "1s", "90 points (1 minute 30 seconds on the '1s' grid)"),
])
def test_a_history_is_described_by_its_points_and_span(n_times, freq, text):
    assert jobs._history_description(n_times, freq) == text


def test_a_history_without_a_finite_score_is_refused_after_the_fit(tables, tmp_path, capsys):
    """Long enough, but no value observed: the fit runs and its infinite threshold is refused."""
    history, _ = tables
    empty = history.assign(failed_logins=np.nan)
    model = tmp_path / "m.tsa"
    args = ["fit", "--input", _write(empty, tmp_path / "h.csv"), "--context", "country,asn", "--time", "ts",
            "--value", "failed_logins", "--detector", "baseline", "--param", "window=5", "--fill", "nan",
            "--save", str(model)]
    assert main(args) == 2
    err = _one_line_error(capsys)
    assert "gets no finite score from a history of" in err and "its alert threshold is inf" in err
    assert not model.exists()


@pytest.mark.parametrize("save, message", [("", "--save needs a model file name"), (".", "--save . is a folder")])
def test_save_must_name_a_file(tables, tmp_path, capsys, monkeypatch, save, message):
    history, _ = tables
    path = _write(history, tmp_path / "h.csv")
    monkeypatch.chdir(tmp_path)
    assert main(_fit_args(path, save)) == 2
    assert message in _one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.csv"]


def test_save_to_an_existing_folder_names_the_option(tables, tmp_path, capsys):
    history, _ = tables
    folder = tmp_path / "models"
    folder.mkdir()
    assert main(_fit_args(_write(history, tmp_path / "h.csv"), folder)) == 2
    err = _one_line_error(capsys)
    assert f"--save {folder} is a folder; name a model file, e.g. --save {folder / 'model.tsa'}" in err
    assert ".partial" not in err and list(folder.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.csv", "models"]


def test_new_data_overlapping_the_history_is_refused(tables, tmp_path, capsys):
    history, _ = tables
    model = tmp_path / "m.tsa"
    main(_fit_args(_write(history, tmp_path / "h.csv"), model))
    capsys.readouterr()
    args = ["score", "--model", str(model), "--input", str(tmp_path / "h.csv"), "--output", str(tmp_path / "a.csv")]
    assert main(args) == 2
    assert "must start after the fitted history" in _one_line_error(capsys)


def test_cuda_on_a_machine_without_gpu_is_a_user_error(tables, tmp_path, capsys, gpu_visible):
    if gpu_visible:
        pytest.skip("a GPU is present")
    history, _ = tables
    assert main(_fit_args(_write(history, tmp_path / "h.csv"), tmp_path / "m.tsa", "--device", "cuda")) == 2
    assert "cuda" in _one_line_error(capsys)


def test_bad_arguments_exit_2():
    with pytest.raises(SystemExit) as exc:
        main(["score", "--model", "m.tsa"])
    assert exc.value.code == 2


# ---------------------------------------------------------------------- user columns named like output columns
_ROLES = {"context": "country", "time": "ts", "value": "failed_logins"}


def _named(frame, role, name):
    """``frame`` with the context column "country", the time or the value column renamed ``name``."""
    return frame.rename(columns={_ROLES[role]: name})


def _fit_named(path, model, role, name, *extra):
    columns = dict(_ROLES, **{role: name})
    return ["fit", "--input", path, "--context", f"{columns['context']},asn", "--time", columns["time"], "--value",
            columns["value"], "--detector", "baseline", "--save", str(model), *PARAMS, *extra]


@pytest.mark.parametrize("role, name, table", [
    ("context", "cold_start", "the alerts"),  # score replaced the labels by the job's False
    ("context", "metric", "the alerts"),  # score failed: "cannot insert metric, already exists"
    ("context", "start", "the alerts"),  # two 'start' columns: Parquet refused them, the report crashed
    ("context", "expected", "the alerts"),  # an explanation column of the baseline
    ("context", "status", "the table of unseen contexts of --unseen"),
    ("value", "score", "the scores table of --scores"),  # --scores overwrote the values with the scores
    ("value", "flag", "the scores table of --scores"),
    ("time", "threshold", "the scores table of --scores"),
])
def test_fit_refuses_a_column_named_like_an_output_column_before_reading(tables, tmp_path, capsys, monkeypatch,
                                                                         role, name, table):
    history, _ = tables
    path = _write(_named(history, role, name), tmp_path / "h.csv")

    def unread(*args, **kwargs):
        raise AssertionError("the history was read")

    monkeypatch.setattr(tsio, "read_table", unread)  # refused before the (long) read and fit
    model = tmp_path / "m.tsa"
    assert main(_fit_named(path, model, role, name)) == 2
    err = _one_line_error(capsys)
    assert err.startswith(f"tsanomaly fit: error: {path}: {role} column {name!r} has the name of a column that "
                          f"tsanomaly writes in {table}")
    assert "rename the column in the data" in err
    assert not model.exists()


def test_fit_frame_refuses_a_colliding_column_of_a_detector_instance(tables):
    history, _ = tables
    with pytest.raises(ValueError, match="context column 'observed' has the name of a column"):
        jobs.fit_frame(_named(history, "context", "observed"), "observed,asn", "ts", "failed_logins",
                       detector=RollingZScoreDetector(window=5))


def _fit_before_the_check(history, tmp_path, monkeypatch, role, name):
    """A model whose ``role`` column ("context", "value") is named ``name``, fitted as tsanomaly fit
    did before it refused such names."""
    model = tmp_path / "old.tsa"
    with monkeypatch.context() as patch:
        patch.setattr(jobs.JobColumns, "check_names", lambda *args, **kwargs: None)
        assert main(_fit_named(_write(_named(history, role, name), tmp_path / "h.csv"), model, role, name)) == 0
    return model


@pytest.fixture
def model_fitted_before_the_check(tables, tmp_path, monkeypatch):
    """A model whose context column is named "start", and new data with that column."""
    history, today = tables
    model = _fit_before_the_check(history, tmp_path, monkeypatch, "context", "start")
    return model, _write(_named(today, "context", "start"), tmp_path / "t.parquet")


def test_score_refuses_a_model_whose_context_column_collides(model_fitted_before_the_check, tmp_path, capsys):
    model, today = model_fitted_before_the_check
    capsys.readouterr()
    out = tmp_path / "alerts.parquet"  # Parquet used to fail late: "Duplicate column names found"
    assert main(["score", "--model", str(model), "--input", today, "--output", str(out)]) == 2
    err = _one_line_error(capsys)
    assert err.startswith(f"tsanomaly score: error: {model}: context column 'start' has the name of a column")
    assert "rename the column in the history and the new data, and fit the model again" in err
    assert not out.exists()


def test_report_refuses_a_model_whose_context_column_collides(model_fitted_before_the_check, tmp_path, capsys):
    model, today = model_fitted_before_the_check
    capsys.readouterr()
    out = tmp_path / "r.html"  # the report used to exit with a traceback from plot_alert
    assert main(["report", "--model", str(model), "--input", today, "--out", str(out)]) == 2
    assert f"tsanomaly report: error: {model}: context column 'start'" in _one_line_error(capsys)
    assert not out.exists()


def test_an_older_model_is_refused_only_for_the_tables_it_would_break(tables, tmp_path, capsys, monkeypatch):
    # A value column named "score" broke only the --scores table: a daily job that never asked for it
    # keeps working after the upgrade, and asking for it is refused before the input is read.
    history, today = tables
    model = _fit_before_the_check(history, tmp_path, monkeypatch, "value", "score")
    new = _write(_named(today, "value", "score"), tmp_path / "t.csv")
    assert main(["score", "--model", str(model), "--input", new, "--output", str(tmp_path / "a.csv")]) == 0
    capsys.readouterr()
    monkeypatch.setattr(tsio, "read_table", lambda *args, **kwargs: pytest.fail("the input was read"))
    assert main(["score", "--model", str(model), "--input", new, "--output", str(tmp_path / "b.csv"),
                 "--scores", str(tmp_path / "s.csv")]) == 2
    assert f"{model}: value column 'score' has the name of a column that tsanomaly writes in the scores table" in (
        _one_line_error(capsys))
    assert not (tmp_path / "b.csv").exists() and not (tmp_path / "s.csv").exists()


def test_score_frame_and_scores_frame_refuse_columns_given_by_hand_that_collide(tables):
    # Columns given from Python (not checked by fit): each function refuses the names of the table it builds.
    history, today = tables
    det = jobs.fit_frame(history, "country,asn", "ts", "failed_logins", detector="baseline", params={"window": 5})
    columns = jobs.JobColumns(["metric", "asn"], "ts", "failed_logins", freq=det.freq_)
    with pytest.raises(ValueError, match="the input: context column 'metric' has the name of a column that "
                                         "tsanomaly writes in the alerts"):
        jobs.score_frame(det, today.rename(columns={"country": "metric"}), columns)
    columns = jobs.JobColumns(["country", "asn"], "ts", "score", freq=det.freq_)
    result = jobs.score_frame(det, today.rename(columns={"failed_logins": "score"}), columns)
    with pytest.raises(ValueError, match="value column 'score' has the name of a column that tsanomaly writes in "
                                         "the scores table"):
        jobs.scores_frame(result)


def test_a_time_column_named_like_an_alert_column_is_fine(tables, tmp_path):
    # Only the scores table holds the time column, so "start" (the bucket's start) is not refused.
    history, today = tables
    model = tmp_path / "m.tsa"
    assert main(_fit_named(_write(_named(history, "time", "start"), tmp_path / "h.csv"), model, "time", "start")) == 0
    result = jobs.score_file(model, _write(_named(today, "time", "start"), tmp_path / "t.csv"), tmp_path / "a.csv",
                             scores=tmp_path / "s.csv")
    assert len(result.alerts) and result.alerts.columns.is_unique
    scores = tsio.read_table(tmp_path / "s.csv")
    assert list(scores.columns) == ["country", "asn", "start", "failed_logins", "score", "threshold", "flag"]


def test_output_columns_list_every_column_a_job_writes(tables):
    # The reserved names are the names the job writes: a column added to an output and not to
    # output_columns would slip past the check.
    history, today = tables
    known = history[history["asn"] != "AS1002"]
    det = jobs.fit_frame(known, "country,asn", "ts", "failed_logins", detector="baseline",
                         params={"window": 5, "seasonal_period": None})
    result = jobs.score_frame(det, today)
    reserved = jobs.output_columns(det)
    assert len(result.alerts) and len(result.unseen) == 1
    assert list(result.alerts.columns) == ["country", "asn", "metric", *det.alert_columns(), "cold_start"]
    assert set(reserved["alerts"]) == set(det.alert_columns()) | set(jobs.JOB_ALERT_COLUMNS)
    assert list(result.unseen.columns) == ["country", "asn", *reserved["unseen"]]
    assert list(jobs.scores_frame(result).columns) == ["country", "asn", "ts", "failed_logins", *reserved["scores"]]


# ---------------------------------------------------------------------- atomic output
def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("ext", ["csv", "parquet", "jsonl", "csv.gz"])
def test_a_failure_mid_write_leaves_no_file(tables, tmp_path, monkeypatch, ext):
    history, today = tables
    model = tmp_path / "m.tsa"
    main(_fit_args(_write(history, tmp_path / "h.parquet"), model))
    today_path = _write(today, tmp_path / "t.parquet")
    fmt = tsio.table_format(f"x.{ext}")
    real = tsio._WRITERS[fmt]

    def half_then_fail(frame, handle):
        real(frame.head(len(frame) // 2), handle)  # bytes are on their way...
        raise RuntimeError("disk pulled out")  # ...and the job dies

    monkeypatch.setattr(tsio, "_WRITERS", {**tsio._WRITERS, fmt: half_then_fail})
    out = tmp_path / f"alerts.{ext}"
    with pytest.raises(RuntimeError, match="disk pulled out"):
        jobs.score_file(model, today_path, out)
    assert not out.exists()
    assert _leftovers(tmp_path) == []


def test_a_failed_write_keeps_the_previous_output(tmp_path, monkeypatch):
    out = tmp_path / "alerts.parquet"
    previous = pd.DataFrame({"asn": ["AS1"], "peak_score": [9.0]})
    tsio.write_table(previous, out)

    def fail(frame, handle):
        handle.write(b"PAR1 half a file")
        raise KeyboardInterrupt  # even an interrupt must not leave a torn file

    monkeypatch.setitem(tsio._WRITERS, "parquet", fail)
    with pytest.raises(KeyboardInterrupt):
        tsio.write_table(pd.DataFrame({"asn": ["AS2"], "peak_score": [1.0]}), out)
    pd.testing.assert_frame_equal(pd.read_parquet(out), previous)
    assert _leftovers(tmp_path) == []


def test_replacing_an_output_keeps_its_permissions_and_its_link(tmp_path):
    """The temporary file got the umask's mode (0644), so an alerts file restricted to 0600 became
    readable by all at the next run; a symbolic link was replaced by a file, its target left stale."""
    out = tmp_path / "alerts.csv"
    first, second = pd.DataFrame({"asn": ["AS1"], "n": [1]}), pd.DataFrame({"asn": ["AS2"], "n": [2]})
    tsio.write_table(first, out)
    os.chmod(out, 0o600)
    tsio.write_table(second, out)
    assert out.stat().st_mode & 0o777 == 0o600
    link = tmp_path / "latest.csv"
    link.symlink_to(out)
    tsio.write_table(first, link)
    assert link.is_symlink() and tsio.read_table(out, text_columns=["asn"])["asn"].tolist() == ["AS1"]
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("job", ["fit", "score"])
def test_jobs_drop_the_table_before_the_detector_runs(tables, tmp_path, monkeypatch, job):
    # The table read takes more memory than the panel built from it, and was held through the
    # fit and the save (4.8 GB at 200,000 contexts x 14 days hourly), or the scoring and update.
    import gc
    import weakref

    history, today = tables
    history_path = _write(history, tmp_path / "h.parquet")
    model = tmp_path / "m.tsa"
    if job == "score":
        jobs.fit_file(history_path, model, "country,asn", "ts", "failed_logins", detector="baseline",
                      params={"window": 5})
    read = jobs._read
    tables_read = []

    def remembered_read(path, columns):
        frame = read(path, columns)
        tables_read.append(weakref.ref(frame))
        return frame

    alive_then = []

    def checked(real):
        def run(self, panel, *args, **kwargs):
            gc.collect()
            alive_then.append(tables_read[0]() is not None)
            return real(self, panel, *args, **kwargs)
        return run

    monkeypatch.setattr(jobs, "_read", remembered_read)
    for method in ("fit", "score", "update"):
        monkeypatch.setattr(RollingZScoreDetector, method, checked(getattr(RollingZScoreDetector, method)))
    if job == "fit":
        jobs.fit_file(history_path, model, "country,asn", "ts", "failed_logins", detector="baseline",
                      params={"window": 5})
    else:
        jobs.score_file(model, _write(today, tmp_path / "t.parquet"), tmp_path / "a.parquet",
                        update=tmp_path / "m2.tsa")
    assert alive_then and not any(alive_then)


def test_model_save_is_atomic_too(tables, tmp_path, monkeypatch):
    history, _ = tables
    model = tmp_path / "m.tsa"
    history_path = _write(history, tmp_path / "h.csv")
    # A model saved earlier, which a failed save must leave as it was.
    jobs.fit_file(history_path, model, "country,asn", "ts", "failed_logins", detector="baseline", params={"window": 5})
    before = model.read_bytes()
    assert tsanomaly.load(model).window == 5

    real_writestr = zipfile.ZipFile.writestr
    written = []

    def fail_after_writing(self, name, data, *args, **kwargs):
        real_writestr(self, name, data, *args, **kwargs)  # the bytes reach the file being written...
        self.fp.flush()
        # The zip is written through a handle; the files beside the model say which one it is.
        others = sorted(p.name for p in tmp_path.iterdir() if p.name not in ("h.csv", "m.tsa"))
        written.append((name, others, os.fstat(self.fp.fileno()).st_size))
        if name == "arrays.npz":
            raise OSError("no space left on device")  # ...and then the disk fills up

    monkeypatch.setattr(zipfile.ZipFile, "writestr", fail_after_writing)
    with pytest.raises(OSError, match="no space left on device"):
        jobs.fit_file(history_path, model, "country,asn", "ts", "failed_logins", detector="baseline",
                      params={"window": 6})
    monkeypatch.undo()
    assert model.read_bytes() == before
    assert tsanomaly.load(model).window == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.csv", "m.tsa"]  # no temporary file left
    # The failure came after both members had reached a hidden file beside the model (not the model itself).
    assert [name for name, _, _ in written] == ["model.json", "arrays.npz"]
    assert all(len(others) == 1 and others[0].startswith(".m.tsa.") and size > 0 for _, others, size in written)


@pytest.mark.parametrize("ext", ["csv", "parquet", "jsonl", "jsonl.gz"])
def test_write_then_read_round_trips(tmp_path, ext):
    stamps = pd.to_datetime(["2024-01-01 00:00", "2024-01-01 01:00"])
    frame = pd.DataFrame({"asn": ["a", "b"], "ts": stamps, "n": [1.0, 2.5]})
    back = tsio.read_table(tsio.write_table(frame, tmp_path / f"x.{ext}"))
    assert list(back.columns) == ["asn", "ts", "n"]
    assert pd.to_datetime(back["ts"]).tolist() == frame["ts"].tolist()
    np.testing.assert_array_equal(back["n"], frame["n"])


@pytest.mark.parametrize("ext", ["csv", "parquet", "jsonl", "jsonl.gz"])
def test_sub_second_timestamps_round_trip(tmp_path, ext):
    # Quarter-second buckets: a writer that drops the fraction would merge them into one time.
    stamps = pd.date_range("2024-01-01", periods=4, freq="250ms")
    frame = pd.DataFrame({"asn": ["a"] * 4, "ts": stamps, "n": [1.0, 2.0, 3.0, 4.0]})
    back = tsio.read_table(tsio.write_table(frame, tmp_path / f"x.{ext}"))
    assert pd.to_datetime(back["ts"]).tolist() == stamps.tolist()
    panel = tsanomaly.Panel.from_frame(back, context="asn", time="ts", value="n")
    assert panel.n_times == 4 and panel.freq == pd.tseries.frequencies.to_offset("250ms")
    np.testing.assert_array_equal(panel.values, [[1.0, 2.0, 3.0, 4.0]])


# ---------------------------------------------------------------------- helpers
def test_parse_params_reads_json_values_and_text():
    assert jobs.parse_params(["window=24", "direction=up", "seasonal_period=null", "periods=[24, 168]",
                              "per_context=true", "min_periods=None"]) == {
        "window": 24, "direction": "up", "seasonal_period": None, "periods": [24, 168],
        "per_context": True, "min_periods": None,
    }
    with pytest.raises(ValueError, match="given twice"):
        jobs.parse_params(["a=1", "a=2"])


def test_parse_params_reads_pythons_booleans():
    # `--param per_context=True` stayed the text 'True' and was refused: "per_context must be True or
    # False, got 'True'", asking for what the user had typed.
    assert jobs.parse_params(["per_context=True", "normalize=FALSE", "a=False"]) == {
        "per_context": True, "normalize": False, "a": False}


def test_progress_bar_draws_only_on_a_terminal():
    quiet = _io.StringIO()  # not a TTY, like a cron log
    with jobs.Progress(3, "scoring", stream=quiet) as bar:
        for _ in range(3):
            bar.update()
    assert quiet.getvalue() == ""

    class Terminal(_io.StringIO):
        def isatty(self):
            return True

    tty = Terminal()
    with jobs.Progress(4, "scoring", stream=tty) as bar:
        for _ in range(4):
            bar.update()
    drawn = tty.getvalue()
    assert drawn.startswith("\rscoring [") and "4/4 (100%)" in drawn and drawn.endswith("\n")


def test_verbose_after_the_sub_command_logs(tables, tmp_path, caplog):
    history, _ = tables
    with caplog.at_level(logging.INFO, logger="tsanomaly"):
        assert main(_fit_args(_write(history, tmp_path / "h.csv"), tmp_path / "m.tsa", "--verbose")) == 0
    assert any("saved the model" in r.getMessage() for r in caplog.records)


def test_frame_to_panel_leaves_the_callers_frame_as_it_was():
    # The job turns context labels into text on its own selection of the columns, not on the
    # caller's frame (an integer ASN column stays integer for the caller).
    frame = pd.DataFrame({
        "asn": [13335, 13335, 15169],
        "ts": ["2024-01-01 00:00", "2024-01-01 01:00", "2024-01-01 00:00"],
        "logins": [1.0, 2.0, 3.0],
        "other": ["a", "b", "c"],
    })
    before = frame.copy()
    panel = jobs.frame_to_panel(frame, jobs.JobColumns.parse("asn", "ts", "logins", "zero"))
    assert list(panel.contexts) == ["13335", "15169"]
    pd.testing.assert_frame_equal(frame, before)


# ---------------------------------------------------------------------- an output over an input or another output
def _files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_fit_refuses_to_save_the_model_over_its_history(tables, tmp_path, capsys, monkeypatch):
    # The history was replaced by the model, with exit status 0.
    history, _ = tables
    path = _write(history, tmp_path / "h.csv")
    monkeypatch.chdir(tmp_path)
    before = _files(tmp_path)
    for save in (path, "h.csv", "./sub/../h.csv"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        assert main(_fit_args(path, save)) == 2
        err = _one_line_error(capsys)
        assert f"--save {Path(save)} is the same file as --input {path}: writing it would replace that input" in err
    assert _files(tmp_path) == before


@pytest.mark.parametrize("second", ["--scores", "--unseen"])
def test_score_refuses_two_outputs_in_one_file_or_an_output_over_an_input(tables, tmp_path, capsys, second):
    history, today = tables
    model = tmp_path / "m.tsa"
    assert main(_fit_args(_write(history, tmp_path / "h.csv"), model)) == 0
    today_path = _write(today, tmp_path / "t.csv")
    capsys.readouterr()
    before = _files(tmp_path)
    alerts = tmp_path / "a.csv"
    # Two tables in one file: the second won, and the summary said the alerts were written there.
    args = ["score", "--model", str(model), "--input", today_path, "--output", str(alerts), second, str(alerts)]
    assert main(args) == 2
    assert f"{second} {alerts} is the same file as --output {alerts}: writing it would replace the other output" in (
        _one_line_error(capsys))
    for inp, out in (("--input", today_path), ("--model", str(model))):
        args = ["score", "--model", str(model), "--input", today_path, "--output", str(alerts), second, out]
        assert main(args) == 2
        assert f"{second} {out} is the same file as {inp} {out}: writing it would replace that input" in (
            _one_line_error(capsys))
    assert _files(tmp_path) == before
    # Distinct files still work.
    args = ["score", "--model", str(model), "--input", today_path, "--output", str(alerts), second, str(tmp_path / "b.csv")]
    assert main(args) == 0


def test_report_refuses_to_write_over_its_input(tables, tmp_path, capsys):
    history, today = tables
    model = tmp_path / "m.tsa"
    hist_path = _write(history, tmp_path / "h.parquet")
    assert main(_fit_args(hist_path, model)) == 0
    today_path = _write(today, tmp_path / "n.parquet")
    capsys.readouterr()
    before = _files(tmp_path)
    for option, out in (("--input", today_path), ("--history", hist_path), ("--model", str(model))):
        args = ["report", "--model", str(model), "--input", today_path, "--history", hist_path, "--out", out]
        assert main(args) == 2
        assert f"--out {out} is the same file as {option} {out}: writing it would replace that input" in (
            _one_line_error(capsys))
    assert _files(tmp_path) == before


def test_an_output_that_is_a_loop_of_links_or_ends_in_a_separator_is_refused_clearly(tmp_path):
    # A loop of symbolic links raised resolve()'s RuntimeError (a traceback from the CLI), and
    # "new/" (a folder to be) was taken for a file named "new".
    loop = tmp_path / "loop.csv"
    loop.symlink_to(loop)
    with pytest.raises(ValueError, match=r"--scores .*loop\.csv is a loop of symbolic links"):
        tsio.check_output_path(loop, "--scores")
    with pytest.raises(ValueError, match=r"--out .*new/ is a folder; name a file"):
        tsio.check_output_path(f"{tmp_path}/new/", "--out")
    assert tsio.check_output_path(tmp_path / "fine.csv") == tmp_path / "fine.csv"


@pytest.mark.parametrize("option", ["--output", "--scores", "--unseen"])
def test_score_refuses_an_output_that_cannot_be_written_before_writing_any(tables, tmp_path, capsys, option):
    """`--output a.csv --scores dir.csv`, dir.csv a folder: exit 2, but a.csv was already replaced. The
    outputs are written one after another, and the folder was found only when its turn came."""
    history, today = tables
    model = tmp_path / "m.tsa"
    assert main(_fit_args(_write(history, tmp_path / "h.parquet"), model)) == 0
    today_path = _write(today, tmp_path / "n.parquet")
    example = {"--output": "alerts.csv", "--scores": "scores.csv", "--unseen": "unseen.csv"}[option]
    folder, missing = tmp_path / "dir.csv", tmp_path / "no" / "x.csv"
    folder.mkdir()
    for bad, message in ((folder, f"{option} {folder} is a folder; name a file, e.g. {option} {folder / example}"),
                         (missing, f"{option} {missing}: its folder {missing.parent} does not exist")):
        outputs = {"--output": tmp_path / "a.csv", "--scores": tmp_path / "s.csv", "--unseen": tmp_path / "u.csv"}
        for path in outputs.values():
            path.write_text("previous\n")
        outputs[option] = bad
        before = _files(tmp_path)
        capsys.readouterr()
        args = ["score", "--model", str(model), "--input", today_path, *(a for o, p in outputs.items() for a in (o, str(p)))]
        assert main(args) == 2
        assert message in _one_line_error(capsys)
        assert _files(tmp_path) == before  # no output replaced
        # Refused before any work: a model that does not exist is not even looked for.
        args[args.index("--model") + 1] = str(tmp_path / "absent.tsa")
        assert main(args) == 2
        assert message in _one_line_error(capsys)


@pytest.mark.parametrize("size", ["0", "-3"])
def test_score_refuses_a_chunk_size_below_one_before_any_work(tmp_path, capsys, size):
    """--chunk-size 0 was refused only once the model was loaded and the input read."""
    args = ["score", "--model", str(tmp_path / "absent.tsa"), "--input", str(tmp_path / "absent.csv"),
            "--output", str(tmp_path / "a.csv"), "--chunk-size", size]
    assert main(args) == 2
    assert f"--chunk-size must be a positive number of contexts, got {size}" in _one_line_error(capsys)


def test_fit_and_report_refuse_a_folder_or_a_missing_folder_before_any_work(tables, tmp_path, capsys):
    history, _ = tables
    path = _write(history, tmp_path / "h.csv")
    folder, missing = tmp_path / "out", tmp_path / "no" / "x"
    folder.mkdir()
    before = _files(tmp_path)
    absent = str(tmp_path / "absent.csv")  # fit refuses its output before it reads the input
    assert main(_fit_args(absent, missing / "m.tsa")) == 2
    assert f"--save {missing / 'm.tsa'}: its folder {missing} does not exist" in _one_line_error(capsys)
    report = ["report", "--model", str(tmp_path / "absent.tsa"), "--input", path, "--out"]
    assert main([*report, str(folder)]) == 2
    assert f"--out {folder} is a folder; name an HTML file, e.g. --out {folder / 'report.html'}" in _one_line_error(capsys)
    assert main([*report, str(missing / "r.html")]) == 2
    assert f"--out {missing / 'r.html'}: its folder {missing} does not exist" in _one_line_error(capsys)
    assert main([*report, ""]) == 2
    assert "--out needs a file name, e.g. --out report.html" in _one_line_error(capsys)
    assert main([*report, str(Path(path) / "r.html")]) == 2  # "inside" a file: not a missing folder
    assert f"--out {Path(path) / 'r.html'}: {path} is a file, not a folder" in _one_line_error(capsys)
    assert _files(tmp_path) == before and list(folder.iterdir()) == []


def test_a_hard_link_to_the_input_is_the_same_file(tables, tmp_path, capsys):
    history, _ = tables
    path = _write(history, tmp_path / "h.csv")
    link = tmp_path / "link.csv"
    link.hardlink_to(path)
    assert main(_fit_args(path, link)) == 2
    assert f"--save {link} is the same file as --input {path}" in _one_line_error(capsys)
    assert link.read_bytes() == Path(path).read_bytes()


def test_unseen_labels_spelled_as_floats_of_fitted_ones_are_named_as_the_likely_cause(tables, tmp_path, caplog):
    """A CSV keeps labels as written: 13335.0 is a new context for a model fitted on 13335, and the warning says why."""
    history, today = tables
    history, today = history.copy(), today.copy()
    history["asn"] = history["asn"].str[2:].astype(int)
    model = tmp_path / "m.tsa"
    assert main(_fit_args(_write(history, tmp_path / "h.parquet"), model)) == 0
    today["asn"] = today["asn"].str[2:].astype(float)  # 1000.0: an integer column that once held a null
    with caplog.at_level(logging.WARNING, logger="tsanomaly"):
        assert main(["score", "--model", str(model), "--input", _write(today, tmp_path / "t.csv"),
                     "--output", str(tmp_path / "a.csv")]) == 0
    warning = next(r.getMessage() for r in caplog.records if "not in the fitted history" in r.getMessage())
    assert "8 of them match a fitted context once a trailing '.0' is dropped" in warning
    assert jobs._float_spelling_hint(pd.Index(["AS7", "12.5"]), pd.Index(["AS7.0", "12"])) == ""
    assert "1 of them" in jobs._float_spelling_hint(pd.MultiIndex.from_tuples([("US", "-3.00")]),
                                                   pd.MultiIndex.from_tuples([("US", "-3")]))


def _local_days(tz="Europe/Berlin"):
    index = pd.date_range("2024-01-01", periods=100, freq="D", tz=tz, unit="ns")
    counts = np.random.default_rng(0).poisson(50, 100).astype(float)
    return index, pd.DataFrame({"asn": "AS1", "ts": index, "n": counts})


def test_daily_counts_in_a_time_zone_fit_in_winter_and_score_in_summer(tmp_path):
    """Read as UTC, local midnights were 23:00 before the switch to summer time and 22:00 after:
    the new week was "not on the fitted grid". A column with a zone keeps it on a daily grid."""
    index, frame = _local_days()
    winter, summer = index < "2024-03-31", (index >= "2024-04-01") & (index < "2024-04-08")
    det = jobs.fit_frame(frame[winter], "asn", "ts", "n", detector="baseline", params={"window": 7})
    assert det.freq_ == "D" and pd.Timestamp(det.fit_end_) == index[winter][-1]
    det.save(tmp_path / "model.tsa")
    # The reference: the same data as Panels on the zoned grid, which Panel(...) always accepted.
    reference = RollingZScoreDetector(window=7).fit(tsanomaly.Panel(frame.n[winter].to_numpy()[None], ["AS1"], index[winter]))
    expected = reference.score(tsanomaly.Panel(frame.n[summer].to_numpy()[None], ["AS1"], index[summer])).to_numpy()
    for model in (det, tsanomaly.load(tmp_path / "model.tsa")):
        result = jobs.score_frame(model, frame[summer])
        pd.testing.assert_index_equal(result.panel.index, index[summer], check_names=False)
        assert np.isfinite(expected).all()
        np.testing.assert_array_equal(result.scores.to_numpy(), expected)


def test_a_model_fitted_on_naive_utc_days_still_scores_a_zoned_column(tmp_path):
    """Models saved before zoned day grids existed (the column read as naive UTC instants) score
    the same column as they did: the job reads it in UTC for them, not on the zone's wall clock."""
    index, frame = _local_days()
    winter = frame[index < "2024-03-20"]
    later = frame[(index >= "2024-03-20") & (index < "2024-03-28")]  # before the switch: one UTC grid
    as_before = winter.assign(ts=winter["ts"].dt.tz_convert(None))
    old = jobs.fit_frame(as_before, "asn", "ts", "n", detector="baseline", params={"window": 7}, freq="D")
    assert pd.Timestamp(old.fit_end_).tz is None and jobs.fitted_in_utc(old)
    old.save(tmp_path / "old.tsa")
    expected = jobs.score_frame(old, later.assign(ts=later["ts"].dt.tz_convert(None))).scores.to_numpy()
    for model in (old, tsanomaly.load(tmp_path / "old.tsa")):
        np.testing.assert_array_equal(jobs.score_frame(model, later).scores.to_numpy(), expected)


def test_daily_counts_with_utc_offsets_scored_across_daylight_saving_say_to_give_the_zone():
    """The same days as ISO text with offsets: each side of the switch loads (in UTC), but the
    summer days are an hour off the winter grid; the error says why and how to fix it."""
    index, frame = _local_days()
    frame["ts"] = [t.isoformat() for t in index]
    det = jobs.fit_frame(frame[frame.ts < "2024-03-31"], "asn", "ts", "n", detector="baseline", params={"window": 7})
    with pytest.raises(ValueError, match=r"(?s)not on the fitted grid.*daylight-saving.*time zone"):
        jobs.score_frame(det, frame[(frame.ts >= "2024-04-01") & (frame.ts < "2024-04-08")])


def test_a_parameter_too_large_for_a_float_is_a_one_line_error(tables, tmp_path, capsys):
    # is_finite_real(10**400) raised OverflowError: a traceback instead of the parameter's error.
    history, _ = tables
    args = _fit_args(_write(history, tmp_path / "h.csv"), tmp_path / "m.tsa", "--param", "contamination=" + "9" * 400)
    assert main(args) == 2
    assert "contamination must be a number in (0, 0.5)" in _one_line_error(capsys)


def test_json_lines_keep_every_float_exactly(tmp_path):
    """pandas' to_json kept 10 decimal places: 3e-11 was written as 0.0 and 1.234567890123e-07 as 1.235e-07."""
    values = [1.234567890123e-7, 3e-11, 0.1 + 0.2, 13.294095225512603, np.nan]
    frame = pd.DataFrame({"asn": ["a"] * len(values), "ts": pd.date_range("2024-01-01", periods=5, freq="h"),
                          "rate": values, "n": np.arange(5), "flag": [True, False, True, False, True]})
    for name in ("out.jsonl", "out.jsonl.gz"):
        tsio.write_table(frame, tmp_path / name)
        back = tsio.read_table(tmp_path / name)
        np.testing.assert_array_equal(back["rate"].to_numpy(), np.asarray(values))
        assert back["n"].tolist() == list(range(5)) and back["flag"].tolist() == frame["flag"].tolist()
        assert pd.to_datetime(back["ts"]).tolist() == frame["ts"].tolist()


def test_json_lines_with_a_byte_order_mark_are_read_like_csv(tmp_path):
    row = '{"asn":"AS1","ts":"2024-01-11T00:00:00","n":1}\n'
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + row.encode())
    assert tsio.read_table(tmp_path / "bom.jsonl")["asn"].tolist() == ["AS1"]


def test_an_output_folder_that_cannot_be_written_is_refused_before_any_work(tables, tmp_path, capsys):
    """--scores in a folder that cannot be written was found after the alerts file had been written."""
    history, today = tables
    model = tmp_path / "m.tsa"
    assert main(_fit_args(_write(history, tmp_path / "h.csv"), model)) == 0
    alerts = tmp_path / "alerts.csv"
    status = main(["score", "--model", str(model), "--input", _write(today, tmp_path / "t.csv"),
                   "--output", str(alerts), "--scores", "/proc/scores.csv"])
    assert status == 2 and "cannot write in /proc" in capsys.readouterr().err
    assert not alerts.exists()


def test_an_output_name_of_255_bytes_can_be_written(tmp_path):
    name = "a" * 251 + ".csv"  # the temporary file's name added 14 bytes to it: "File name too long"
    tsio.write_table(pd.DataFrame({"x": [1]}), tmp_path / name)
    assert (tmp_path / name).exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_an_empty_time_column_is_said_to_hold_no_timestamp_not_numbers(tables, tmp_path, capsys):
    history, today = tables
    model = tmp_path / "m.tsa"
    assert main(_fit_args(_write(history, tmp_path / "h.csv"), model)) == 0
    (tmp_path / "t.csv").write_text(today.assign(ts=None).to_csv(index=False))
    assert main(["score", "--model", str(model), "--input", str(tmp_path / "t.csv"),
                 "--output", str(tmp_path / "a.csv")]) == 2
    err = capsys.readouterr().err
    assert "holds numbers" not in err and "missing or unparseable timestamp" in err


@pytest.mark.parametrize("entry", [
    {"context": "country", "time": "ts", "value": "n"},  # a string: read as the columns c, o, u...
    {"context": [1, 2], "time": "ts", "value": "n"},
    {"context": ["country"], "time": ["ts"], "value": "n"},
    {"context": ["country"], "time": "ts", "value": "n", "fill": "bogus"},
])
def test_a_damaged_job_columns_entry_is_blamed_on_the_model_not_the_input(entry):
    with pytest.raises(ValueError, match="the model has a malformed"):
        jobs.JobColumns.from_json(entry)
    good = jobs.JobColumns.from_json({"context": ["country"], "time": "ts", "value": "n", "fill": "nan"})
    assert good.context == ["country"] and good.fill == "nan"


def test_json_lines_write_what_json_and_pandas_read_back(tmp_path):
    """No Infinity (not JSON) from nullable or object columns, times in object columns as ISO text,
    a subnormal float as 0.0 (pandas' reader refuses to decode one), and unique column names."""
    frame = pd.DataFrame({"f": pd.array([1.5, None, np.inf], dtype="Float64"),
                          "o": pd.Series([np.inf, "x", pd.Timestamp("2024-01-01 05:00")], dtype=object),
                          "tiny": [1e-310, 5e-324, 2.5]})
    tsio.write_table(frame, tmp_path / "x.jsonl")
    lines = [json.loads(line) for line in (tmp_path / "x.jsonl").read_text().splitlines()]
    assert [row["f"] for row in lines] == [1.5, None, None] and lines[0]["o"] is None
    assert lines[2]["o"] == "2024-01-01T05:00:00" and "Infinity" not in (tmp_path / "x.jsonl").read_text()
    assert tsio.read_table(tmp_path / "x.jsonl")["tiny"].tolist() == [0.0, 0.0, 2.5]
    with pytest.raises(ValueError, match="unique column names"):
        tsio.write_table(pd.DataFrame([[1, 2]], columns=["a", "a"]), tmp_path / "d.jsonl")


def test_a_probe_that_cannot_be_removed_still_means_the_folder_takes_files(tmp_path, monkeypatch):
    def refuse(path):
        raise PermissionError("append-only folder")

    monkeypatch.setattr(tsio.os, "unlink", refuse)
    assert tsio.check_output_path(tmp_path / "out.csv") == tmp_path / "out.csv"


# ---------------------------------------------------------------------- weeks anchored on a weekday
@pytest.mark.parametrize("freq, start", [("W", "2023-01-01"), ("W-MON", "2023-01-02")])
def test_a_model_fitted_with_an_anchored_week_is_saved_and_scores_later_data(tmp_path, capsys, freq, start):
    """--freq W (pandas' weekly, W-SUN) was refused as "not a fixed step". The model records the
    anchored week, and score reads later weeks on it (the model's freq, not --freq again)."""
    index = pd.date_range(start, periods=60, freq=freq)
    values = np.random.default_rng(5).poisson(30, (4, 60)).astype(float)
    values[2, 55] += 300
    frame = pd.DataFrame({"asn": np.repeat([f"AS{k}" for k in range(4)], 60), "ts": np.tile(index, 4),
                          "n": values.ravel()})
    history, new = frame[frame["ts"] <= index[47]], frame[frame["ts"] > index[47]]
    model, alerts = tmp_path / "weekly.tsa", tmp_path / "alerts.csv"
    fit = ["fit", "--input", _write(history, tmp_path / "h.csv"), "--context", "asn", "--time", "ts", "--value", "n",
           "--detector", "baseline", "--param", "window=6", "--param", "seasonal_period=null", "--save", str(model),
           "--freq", freq]
    assert main(fit) == 0, capsys.readouterr().err
    det = tsanomaly.load(model)
    assert det.freq_ == pd.tseries.frequencies.to_offset(freq).freqstr  # W-SUN, W-MON
    assert main(["score", "--model", str(model), "--input", _write(new, tmp_path / "n.csv"),
                 "--output", str(alerts)]) == 0, capsys.readouterr().err
    got = pd.read_csv(alerts)
    # The same job through the library API.
    reference = RollingZScoreDetector(window=6, seasonal_period=None).fit(
        tsanomaly.Panel.from_frame(history, "asn", "ts", "n", freq=freq, fill="zero"))
    expected = reference.alerts(tsanomaly.Panel.from_frame(new, "asn", "ts", "n", freq=freq, fill="zero"))
    assert len(got) == len(expected) > 0 and "AS2" in set(got["asn"])
    assert pd.to_datetime(got["start"]).tolist() == expected["start"].tolist()
    # Later rows off the model's weekday are refused, naming the first one.
    shifted = new.assign(ts=new["ts"] + pd.Timedelta(days=1))
    assert main(["score", "--model", str(model), "--input", _write(shifted, tmp_path / "s.csv"),
                 "--output", str(alerts)]) == 2
    assert "is a week anchored on" in _one_line_error(capsys)


def _reference_json_lines(frame: pd.DataFrame) -> bytes:
    """JSON lines by the documented rules, a value at a time: the writer's fast paths must agree byte for byte.

    Text as json.dumps writes it (ASCII, \\u escapes); floats as repr (the shortest text that reads
    back), null for NaN and infinities, 0.0 for a subnormal; datetime columns as ISO text with nine
    fractional digits, zone-aware ones with their UTC offset; times in object columns by isoformat().
    """
    def value_text(value, kind):
        if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and np.isnan(value)):
            return "null"
        if kind == "M":
            return json.dumps(value.isoformat(timespec="nanoseconds"))
        if isinstance(value, (bool, np.bool_)):
            return "true" if value else "false"
        if isinstance(value, (int, np.integer)):
            return str(int(value))
        if isinstance(value, (float, np.floating)):
            value = float(value)
            if not np.isfinite(value):
                return "null"
            subnormal = value != 0 and abs(value) < 2.2250738585072014e-308
            return repr(math.copysign(0.0, value) if subnormal else value)
        if isinstance(value, pd.Timestamp):
            return json.dumps(value.isoformat())
        assert isinstance(value, str), value
        return json.dumps(value)

    columns = [(json.dumps(name), frame[name].dtype.kind, frame[name].astype(object).tolist())
               for name in frame.columns]
    lines = []
    for row in range(len(frame)):
        lines.append("{" + ",".join(f"{key}:{value_text(values[row], kind)}" for key, kind, values in columns) + "}\n")
    return "".join(lines).encode("utf-8")


@pytest.mark.parametrize("chunk", [7, None])
def test_json_lines_match_a_value_at_a_time_reference_byte_for_byte(tmp_path, monkeypatch, chunk):
    """The writer formats columns in bulk (each distinct value once, floats by repr over a list, text by
    json's own escaping): every column kind and tricky value gives the bytes json.dumps would."""
    if chunk is not None:
        monkeypatch.setattr(tsio, "_JSONL_CHUNK", chunk)
    n = 3000  # above the 1024 values the writer judges repeats on, so both of its ways are taken
    texts = ["plain", 'quote"', "back\\slash", "new\nline", "tab\t", "cr\r", "ctl\x00\x1f\x7f", "\u2028\u2029",
             "Côte d'Ivoire", "中文", "😀 emoji", "", "/<>&%s{}", None]
    floats = [np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-320, -5e-324, 2.2250738585072014e-308, 3e-11, 1e300, 1e16,
              1e-5, 0.1 + 0.2, 13335.0, 1.7976931348623157e308, -123.456]
    berlin = pd.date_range("2026-03-29 00:00", periods=5, freq="h", tz="Europe/Berlin")  # across the switch
    rng = np.random.default_rng(7)
    frame = pd.DataFrame({
        "country": np.resize(np.array(texts, dtype=object), n),
        "asn": pd.Series(np.resize(np.array(texts, dtype=object), n), dtype="str"),
        "label": pd.Categorical(np.resize(np.array(texts, dtype=object), n)),
        "ts": np.resize(pd.DatetimeIndex(["2024-01-01", "2024-01-01 00:00:00.000000001", pd.NaT]).to_numpy(), n),
        "ts_s": pd.Series(np.resize(pd.date_range("1900-01-01", periods=4, freq="D"), n)).astype("datetime64[s]"),
        "zoned": np.resize(berlin.append(pd.DatetimeIndex([pd.NaT], tz="Europe/Berlin")), n),
        "st_johns": pd.Series(pd.date_range("2026-03-07 12:00:00.5", periods=n, freq="37min", tz="America/St_Johns")),
        "lmt": pd.Series(np.resize(pd.DatetimeIndex(["1900-01-01", "2024-06-01 12:00"]).tz_localize("Europe/Amsterdam"),
                                   n)).dt.as_unit("s"),
        "utc": np.resize(pd.DatetimeIndex(["2024-01-01 00:00:00.000001", pd.NaT], tz="UTC"), n),
        "repeated": np.resize(floats, n),
        "score": np.concatenate([floats, rng.integers(-2**63, 2**63 - 1, n - len(floats)).view(np.float64)]),
        "f32": np.resize(np.array([0.1, 1e-40, np.inf, 3.4e38], dtype=np.float32), n),
        "n": np.resize(np.array([0, -1, 2**62, -2**63]), n),
        "u": np.resize(np.array([2**64 - 1, 0], dtype=np.uint64), n),
        "flag": np.resize([True, False, False], n),
        "count": pd.array(np.resize(np.array([1, None, -2**63, 2**63 - 1], dtype=object), n), dtype="Int64"),
        "maybe": pd.array(np.resize(np.array([True, None, False], dtype=object), n), dtype="boolean"),
        "ratio": pd.array(np.resize(np.array([1.5, None, np.inf, 3e-11, -0.0], dtype=object), n), dtype="Float64"),
        "mixed": pd.Series(np.resize(np.array(
            [1, 2.5, 'say "hi"\n', True, None, pd.NA, np.inf, 1e-320, pd.Timestamp("2024-01-01 05:00"),
             pd.Timestamp("2026-03-29 03:00", tz="Europe/Berlin"), np.float32(0.1), np.int64(7), "é"],
            dtype=object), n),
            dtype=object),
        'odd "name"\t中': 1.0,
    })
    tsio.write_table(frame, tmp_path / "x.jsonl")
    written = (tmp_path / "x.jsonl").read_bytes()
    expected = _reference_json_lines(frame)
    assert written.decode().splitlines()[:40] == expected.decode().splitlines()[:40]
    assert written == expected
    assert [json.loads(line)["country"] for line in written.decode().splitlines()[:len(texts)]] == texts


def test_json_lines_keep_the_utc_offset_of_zoned_times_as_csv_does(tmp_path):
    """JSON lines wrote zone-aware times in UTC ("...T01:00:00.000000000Z") where CSV keeps the local
    clock and its offset ("2026-03-29 03:00:00+02:00"); both keep it now, and name the same instants
    for tsanomaly's readers and for pandas'."""
    starts = pd.date_range("2026-03-29 00:00", periods=4, freq="h", tz="Europe/Berlin")  # across the switch
    alerts = pd.DataFrame({"asn": ["AS1", "AS2", "AS3", "AS4"], "start": starts,
                           "peak_time": starts + pd.Timedelta("30min"), "peak_score": [5.0, 6.5, 7.25, 8.0]})
    csv = tsio.write_table(alerts, tmp_path / "a.csv")
    jsonl = tsio.write_table(alerts, tmp_path / "a.jsonl")
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [row["start"] for row in rows] == [
        "2026-03-29T00:00:00.000000000+01:00", "2026-03-29T01:00:00.000000000+01:00",
        "2026-03-29T03:00:00.000000000+02:00", "2026-03-29T04:00:00.000000000+02:00",
    ]
    assert tsio.read_table(csv)["start"].tolist()[2] == "2026-03-29 03:00:00+02:00"  # the same clock and offset
    for path in (csv, jsonl):
        for name in ("start", "peak_time"):
            text = tsio.read_table(path)[name]
            assert pd.to_datetime(text, utc=True, format="ISO8601").tolist() == alerts[name].tolist(), (path, name)
            # pandas' own reader (default options: a column named *_time is read as dates, where it can)
            back = pd.read_json(path, lines=True)[name] if path == jsonl else text
            assert pd.to_datetime(back, utc=True).tolist() == alerts[name].tolist(), (path, name)
    # A job reads them as the same instants: a Panel from either file has the UTC grid of the original.
    panels = [tsanomaly.Panel.from_frame(tsio.read_table(path), "asn", "start", "peak_score") for path in (csv, jsonl)]
    assert panels[0].index.equals(panels[1].index)
    assert panels[0].index.equals(pd.DatetimeIndex(starts.tz_convert(None), name="start", freq="h"))


def test_json_lines_write_a_zoned_column_past_pandas_last_local_time_in_utc():
    # pd.Timestamp.max as a "valid until" in Tokyo has a local clock pandas cannot hold: writing
    # the local time with its offset raised OutOfBoundsDatetime (before offsets were kept: UTC).
    until = pd.Series(pd.DatetimeIndex([pd.Timestamp.max.tz_localize("UTC"), pd.Timestamp("2024-01-01", tz="UTC")])
                      .tz_convert("Asia/Tokyo"))
    buffer = _io.BytesIO()
    tsio._write_jsonl(pd.DataFrame({"until": until}), buffer)
    assert buffer.getvalue() == (b'{"until":"2262-04-11T23:47:16.854775807Z"}\n'
                                 b'{"until":"2024-01-01T00:00:00.000000000Z"}\n')


# ---------------------------------------------------------------------- score --update
def _score_args(model, today_path, out, *extra):
    return ["score", "--model", str(model), "--input", str(today_path), "--output", str(out), *extra]


def test_an_hourly_loop_with_update_scores_as_one_call_over_the_span(tables, tmp_path, capsys):
    """Fit once, then each hour `score --update` over the model itself: the hours' scores and
    alerts are those of one score of the whole span with the fitted model (the baseline: exactly)."""
    history, today = tables
    model = tmp_path / "m.tsa"
    assert main(_fit_args(_write(history, tmp_path / "h.csv"), model)) == 0
    hours = sorted(today["ts"].unique())[:24]  # the burst on the first new day included
    span = today[today["ts"].isin(hours)]
    assert main(_score_args(model, _write(span, tmp_path / "span.csv"), tmp_path / "span-alerts.csv",
                            "--scores", str(tmp_path / "span-scores.csv"))) == 0
    original = model.read_bytes()
    hourly_scores, hourly_alerts = [], []
    for k, hour in enumerate(hours):
        path = _write(today[today["ts"] == hour], tmp_path / f"hour-{k:02d}.csv")
        out, scores = tmp_path / f"alerts-{k:02d}.csv", tmp_path / f"scores-{k:02d}.csv"
        assert main(_score_args(model, path, out, "--scores", str(scores), "--update", str(model))) == 0
        assert f"model updated through {pd.Timestamp(hour)}" in capsys.readouterr().out.replace("T", " ")
        hourly_scores.append(tsio.read_table(scores, text_columns=["country", "asn"]))
        if out.stat().st_size:
            hourly_alerts.append(tsio.read_table(out, text_columns=["country", "asn"]))
    assert model.read_bytes() != original
    det = tsanomaly.load(model)
    assert getattr(det, jobs.JOB_ATTRIBUTE)["context"] == ["country", "asn"]  # still a job's model
    assert pd.Timestamp(det.fit_end_) == pd.Timestamp(hours[-1])

    key = ["country", "asn", "ts"]
    whole = tsio.read_table(tmp_path / "span-scores.csv", text_columns=["country", "asn"]).sort_values(key)
    looped = pd.concat(hourly_scores, ignore_index=True).sort_values(key)
    assert len(looped) == len(whole) == len(span)
    for column in ("score", "threshold"):
        np.testing.assert_array_equal(looped[column].to_numpy(), whole[column].to_numpy())
    np.testing.assert_array_equal(looped["flag"].to_numpy(), whole["flag"].to_numpy())
    assert whole["flag"].any()
    # An hour's alert is one flagged point; one call's alerts are runs of them: the same points and peaks.
    alerts = pd.concat(hourly_alerts, ignore_index=True)
    span_alerts = tsio.read_table(tmp_path / "span-alerts.csv", text_columns=["country", "asn"])
    assert (alerts["n_points"] == 1).all()
    assert int(alerts["n_points"].sum()) == int(span_alerts["n_points"].sum()) == int(whole["flag"].sum())
    flagged = whole[whole["flag"].astype(bool)]
    assert sorted(zip(alerts["asn"], pd.to_datetime(alerts["start"]))) == sorted(
        zip(flagged["asn"], pd.to_datetime(flagged["ts"])))
    merged = span_alerts.merge(alerts, on=["country", "asn", "peak_time"], suffixes=("", "_hour"))
    assert len(merged) == len(span_alerts)
    np.testing.assert_array_equal(merged["peak_score"].to_numpy(), merged["peak_score_hour"].to_numpy())


def test_update_to_another_path_leaves_the_model_as_it_was(tables, tmp_path, capsys):
    history, today = tables
    model, updated = tmp_path / "m.tsa", tmp_path / "next.tsa"
    assert main(_fit_args(_write(history, tmp_path / "h.csv"), model)) == 0
    original = model.read_bytes()
    first, second = today[today["ts"] < "2024-03-14"], today[today["ts"] >= "2024-03-14"]
    assert main(_score_args(model, _write(first, tmp_path / "d1.csv"), tmp_path / "a1.csv",
                            "--update", str(updated))) == 0
    assert model.read_bytes() == original
    assert f"saved to {updated}" in capsys.readouterr().out
    assert _leftovers(tmp_path) == []
    # The updated model scores the next day as the fitted one scores both days at once.
    assert main(_score_args(updated, _write(second, tmp_path / "d2.csv"), tmp_path / "a2.csv",
                            "--scores", str(tmp_path / "s2.csv"))) == 0
    assert main(_score_args(model, _write(today, tmp_path / "both.csv"), tmp_path / "ab.csv",
                            "--scores", str(tmp_path / "sb.csv"))) == 0
    key = ["country", "asn", "ts"]
    s2 = pd.read_csv(tmp_path / "s2.csv").sort_values(key)
    sb = pd.read_csv(tmp_path / "sb.csv")
    sb = sb[pd.to_datetime(sb["ts"]) >= pd.Timestamp("2024-03-14")].sort_values(key)
    np.testing.assert_array_equal(s2["score"].to_numpy(), sb["score"].to_numpy())
    # Scoring the same day again with the updated model is refused: it does not follow its history.
    assert main(_score_args(updated, tmp_path / "d1.csv", tmp_path / "again.csv", "--update", str(updated))) == 2
    assert "must start after the fitted history" in _one_line_error(capsys)
    assert not (tmp_path / "again.csv").exists()


@pytest.mark.parametrize("where, message", [
    ("missing/m.tsa", "its folder"),
    ("folder", "is a folder"),
    ("t.csv", "same file as --input"),
    ("a.csv", "same file as --output"),
])
def test_an_unwritable_update_path_fails_before_any_work(tables, tmp_path, capsys, monkeypatch, where, message):
    history, today = tables
    model = tmp_path / "m.tsa"
    assert main(_fit_args(_write(history, tmp_path / "h.csv"), model)) == 0
    (tmp_path / "folder").mkdir()
    today_path = _write(today, tmp_path / "t.csv")
    original = model.read_bytes()
    monkeypatch.setattr(jobs, "_read", lambda *a, **k: pytest.fail("the input was read"))
    out = tmp_path / "a.csv"
    assert main(_score_args(model, today_path, out, "--update", str(tmp_path / where))) == 2
    err = _one_line_error(capsys)
    assert "--update" in err and message in err, err
    assert not out.exists() and model.read_bytes() == original


def test_a_model_that_cannot_update_is_refused_before_any_output(tables, tmp_path, capsys, monkeypatch):
    history, today = tables
    today_path = _write(today, tmp_path / "t.csv")
    # An ensemble combining by peak (an offline rule) has no update.
    model = tmp_path / "e.tsa"
    assert main(["fit", "--input", _write(history, tmp_path / "h.csv"), "--context", "country,asn", "--time", "ts",
                 "--value", "failed_logins", "--detector", "ensemble", "--save", str(model),
                 "--param", 'detectors=[{"name": "baseline", "window": 5}, {"name": "baseline", "window": 3}]',
                 "--param", "combine=peak"]) == 0
    original = model.read_bytes()
    out = tmp_path / "a.csv"
    assert main(_score_args(model, today_path, out, "--update", str(model))) == 2
    err = _one_line_error(capsys)
    assert "cannot be updated" in err and "combine='peak'" in err, err
    assert not out.exists() and model.read_bytes() == original
    # Without --update it scores as before.
    assert main(_score_args(model, today_path, out)) == 0
    # A detector class without the _update hook.
    from tsanomaly.base import BaseDetector

    plain = tmp_path / "m.tsa"
    assert main(_fit_args(str(tmp_path / "h.csv"), plain)) == 0
    monkeypatch.setattr(RollingZScoreDetector, "_update", BaseDetector._update)
    out.unlink()
    assert main(_score_args(plain, today_path, out, "--update", str(tmp_path / "next.tsa"))) == 2
    err = _one_line_error(capsys)
    assert "RollingZScoreDetector does not implement update()" in err, err
    assert not out.exists() and not (tmp_path / "next.tsa").exists()


def test_an_update_that_fails_after_the_outputs_says_so_and_keeps_the_model(tables, tmp_path, capsys, monkeypatch):
    """One not found up front: the outputs stay written, the model file is untouched, one line says so."""
    history, today = tables
    model = tmp_path / "m.tsa"
    assert main(_fit_args(_write(history, tmp_path / "h.csv"), model)) == 0
    original = model.read_bytes()

    def broken(self, *args):
        raise ValueError("no update today")

    monkeypatch.setattr(RollingZScoreDetector, "_update", broken)
    out = tmp_path / "a.csv"
    assert main(_score_args(model, _write(today, tmp_path / "t.csv"), out, "--update", str(model))) == 2
    err = _one_line_error(capsys)
    assert "outputs were written" in err and f"{model} was not written" in err and "no update today" in err, err
    assert out.exists() and model.read_bytes() == original and _leftovers(tmp_path) == []


def test_check_distinct_paths_lets_update_replace_only_the_model(tmp_path):
    jobs.check_distinct_paths([("--model", "m.tsa"), ("--input", "t.csv")], [("--update", "m.tsa")],
                              may_replace=[("--update", "--model")])
    with pytest.raises(ValueError, match="--update m.tsa is the same file as --model"):
        jobs.check_distinct_paths([("--model", "m.tsa")], [("--update", "m.tsa")])


# ---------------------------------------------------------------------- score --absent
def _hour_files_without_zero_rows(today, tmp_path, outage):
    """The first new day with ``outage`` ((asn, first hour, last hour)) at zero events, as one file with
    its zero rows and as hour files that omit them (an hourly counts file has no row for no event)."""
    hours = sorted(today["ts"].unique())[:24]
    day = today[today["ts"].isin(hours)].copy()
    for asn, first, last in outage:
        day.loc[(day["asn"] == asn) & day["ts"].between(hours[first], hours[last]), "failed_logins"] = 0.0
    day_path = _write(day, tmp_path / "day.csv")
    paths = [_write(day[(day["ts"] == hour) & (day["failed_logins"] != 0)], tmp_path / f"hour-{k:02d}.csv")
             for k, hour in enumerate(hours)]
    return day, day_path, paths


def _hourly_loop(model, paths, tmp_path, capsys, *extra):
    """``score --update`` over each hour file in turn: the scores read back, and each run's summary line."""
    scores, summaries = [], []
    for k, path in enumerate(paths):
        out = tmp_path / f"scores-{k:02d}-{len(extra)}.csv"
        assert main(_score_args(model, path, tmp_path / f"alerts-{k:02d}.csv", "--scores", str(out),
                                "--update", str(model), *extra)) == 0
        summaries.append(capsys.readouterr().out)
        scores.append(tsio.read_table(out, text_columns=["country", "asn"]))
    return pd.concat(scores, ignore_index=True), summaries


def test_absent_zero_scores_an_hourly_loop_as_one_score_of_the_day_with_its_zero_rows(tables, tmp_path, capsys):
    """Hour files omit the contexts with no event: with --absent zero an hour-by-hour --update loop
    scores (and alerts) as one score of the day's file holding those zero rows, exactly for the
    baseline; by default those contexts are not scored (an input may hold only some contexts)."""
    history, today = tables
    fitted = tmp_path / "m0.tsa"
    assert main(_fit_args(_write(history, tmp_path / "h.csv"), fitted)) == 0
    # AS1007 goes silent for two hours, AS1006 in the first hour (before any of its rows that day).
    day, day_path, paths = _hour_files_without_zero_rows(today, tmp_path, [("AS1007", 5, 6), ("AS1006", 0, 0)])
    assert main(_score_args(fitted, day_path, tmp_path / "day-alerts.csv",
                            "--scores", str(tmp_path / "day-scores.csv"))) == 0
    key = ["country", "asn", "ts"]
    whole = tsio.read_table(tmp_path / "day-scores.csv", text_columns=["country", "asn"]).sort_values(key)
    outage = whole[(whole["failed_logins"] == 0)]
    assert len(outage) == 3 and np.isfinite(outage["score"]).all()
    assert outage.loc[outage["asn"] == "AS1007", "flag"].astype(bool).all()  # the outage alerts

    model = tmp_path / "m.tsa"
    model.write_bytes(fitted.read_bytes())
    capsys.readouterr()
    looped, summaries = _hourly_loop(model, paths, tmp_path, capsys, "--absent", "zero")
    looped = looped.sort_values(key)
    assert len(looped) == len(whole) == len(day)
    assert looped[key].astype(str).values.tolist() == whole[key].astype(str).values.tolist()
    for column in ("failed_logins", "score", "threshold", "flag"):
        np.testing.assert_array_equal(looped[column].to_numpy(), whole[column].to_numpy())
    assert "1 fitted context absent from the input (1 scored as zero events, --absent zero)" in summaries[0]
    assert "1 fitted context absent from the input (1 scored as zero events" in summaries[5]
    hour_alerts = tsio.read_table(tmp_path / "alerts-05.csv", text_columns=["country", "asn"])
    assert "AS1007" in set(hour_alerts["asn"]) and not hour_alerts["cold_start"].astype(bool).any()
    assert "0 fitted contexts absent from the input;" in summaries[1]
    assert np.isfinite(tsanomaly.load(model).history_).all()  # the silent hours are kept as zeros, not missing

    # The default skips them: no score for the silent hours, counted as absent.
    model.write_bytes(fitted.read_bytes())
    skipped, summaries = _hourly_loop(model, paths, tmp_path, capsys)
    assert len(skipped) == len(whole) - 3
    assert not (skipped["failed_logins"] == 0).any()
    assert "1 fitted context absent from the input;" in summaries[5]
    assert "scored as zero events" not in "".join(summaries)
    assert not np.isfinite(tsanomaly.load(model).history_).all()  # the silent hours are kept as missing


def test_absent_zero_says_how_to_score_an_hour_without_any_event(tables, tmp_path, capsys):
    """An hour in which no context had an event makes an hourly counts file without rows, which
    names no hour: refused with what to write instead, one row of 0, which then scores (and moves
    the model on over) every fitted context as zero events, as the day's file with its zero rows."""
    history, today = tables
    model = tmp_path / "m.tsa"
    assert main(_fit_args(_write(history, tmp_path / "h.csv"), model)) == 0
    first_hour = today[today["ts"] == today["ts"].min()]
    empty = _write(first_hour.iloc[:0], tmp_path / "empty.csv")
    capsys.readouterr()
    assert main(_score_args(model, empty, tmp_path / "a.csv", "--absent", "zero", "--update", str(model))) == 2
    err = capsys.readouterr().err
    assert "has no rows" in err and "write a row of 0 for any fitted context" in err, err
    one_row = _write(first_hour.iloc[:1].assign(failed_logins=0.0), tmp_path / "one.csv")
    zeros = _write(first_hour.assign(failed_logins=0.0), tmp_path / "zeros.csv")
    for path, scores in ((one_row, "s1.csv"), (zeros, "s2.csv")):
        assert main(_score_args(model, path, tmp_path / "a.csv", "--absent", "zero",
                                "--scores", str(tmp_path / scores))) == 0
    key = ["country", "asn", "ts"]
    got, want = (tsio.read_table(tmp_path / name, text_columns=["country", "asn"]).sort_values(key)
                 for name in ("s1.csv", "s2.csv"))
    assert len(got) == len(first_hour) and (got["failed_logins"] == 0).all()
    np.testing.assert_array_equal(got["score"].to_numpy(), want["score"].to_numpy())


def test_report_with_absent_zero_shows_the_alerts_that_score_with_absent_zero_gives(tables, tmp_path, capsys):
    # report had no --absent: the page of an hour showed none of the outage alerts its score gave.
    history, today = tables
    model = tmp_path / "m.tsa"
    assert main(_fit_args(_write(history, tmp_path / "h.csv"), model)) == 0
    _, day_path, _ = _hour_files_without_zero_rows(today, tmp_path, [("AS1007", 5, 23)])
    day = tsio.read_table(day_path, text_columns=["country", "asn"])
    silent = _write(day[day["asn"] != "AS1007"], tmp_path / "silent.csv")  # AS1007 has no row at all
    assert main(_score_args(model, silent, tmp_path / "alerts.csv", "--absent", "zero")) == 0
    scored = tsio.read_table(tmp_path / "alerts.csv", text_columns=["country", "asn"])
    assert "AS1007" in set(scored["asn"])
    capsys.readouterr()
    results = jobs.report_file([model], silent, tmp_path / "page.html", absent="zero")
    assert "AS1007" in set(results[0].alerts["asn"]) and len(results[0].alerts) == len(scored)
    assert main(["report", "--model", str(model), "--input", str(silent), "--out", str(tmp_path / "p.html"),
                 "--absent", "zero"]) == 0
    skipped = jobs.report_file([model], silent, tmp_path / "skip.html")
    assert "AS1007" not in set(skipped[0].alerts["asn"])


def test_absent_zero_adds_fitted_labels_as_the_panel_spells_them(tables):
    """A model fitted in Python on integer labels (one context column) scores a job's panel of text
    labels: the contexts added as zeros are text like the input's, sorted among them, and all seen."""
    history, today = tables
    numeric = lambda f: f.assign(asn=f["asn"].str[2:].astype(int)).drop(columns="country")  # noqa: E731
    det = RollingZScoreDetector(window=5).fit(
        tsanomaly.Panel.from_frame(numeric(history), "asn", "ts", "failed_logins", fill="zero"))
    columns = jobs.JobColumns(context=["asn"], time="ts", value="failed_logins", fill="zero")
    part = numeric(today)
    part = part[~part["asn"].isin([1000, 1005])]
    result = jobs.score_frame(det, part, columns, absent="zero")
    contexts = list(result.panel.contexts)
    assert contexts == [str(k) for k in range(1000, 1008)]
    assert result.n_absent == 0 and result.n_zero_filled == 2 and len(result.unseen) == 0
    rows = [contexts.index("1000"), contexts.index("1005")]
    assert (result.panel.to_numpy()[rows] == 0).all() and np.isfinite(result.scores.to_numpy()[rows]).all()
    skipped = jobs.score_frame(det, part, columns)
    assert skipped.n_absent == 2 and skipped.panel.n_contexts == 6 and skipped.n_zero_filled == 0


def test_absent_zero_is_refused_for_a_model_whose_absent_rows_are_missing(tables, tmp_path, capsys, monkeypatch):
    history, today = tables
    model = tmp_path / "m.tsa"
    assert main(_fit_args(_write(history, tmp_path / "h.csv"), model, "--fill", "nan")) == 0
    today_path = _write(today, tmp_path / "t.csv")
    monkeypatch.setattr(jobs, "_read", lambda *a, **k: pytest.fail("the input was read"))
    assert main(_score_args(model, today_path, tmp_path / "a.csv", "--absent", "zero")) == 2
    err = _one_line_error(capsys)
    assert "--absent zero" in err and "--fill nan" in err and "missing observation" in err, err
    assert not (tmp_path / "a.csv").exists()
    det, columns = jobs.load_model(model)
    with pytest.raises(ValueError, match="--fill nan"):
        jobs.score_frame(det, today, columns, absent="zero")
    with pytest.raises(ValueError, match="--absent must be one of skip, zero"):
        jobs.score_frame(det, today, columns, absent="zeros")


# ---------------------------------------------------------------------- CSV times, empty inputs
def test_csv_writes_the_time_of_day_of_a_column_whose_times_are_all_midnight(tmp_path):
    """pandas writes such a column as bare dates (2024-03-15): the 00:00 file of an hourly job
    differed from every other hour's (2024-03-15 01:00:00) and from JSON lines."""
    midnight = pd.to_datetime(["2024-03-15", None, "2024-03-16"])
    frame = pd.DataFrame({
        "midnight": midnight,
        "mixed": pd.to_datetime(["2024-03-15 00:00", "2024-03-15 01:00", None]),
        "sub_second": pd.to_datetime(["2024-03-15 00:00:00", "2024-03-15 00:00:00.5", "2024-03-16 00:00:00"],
                                 format="ISO8601"),
        "zoned": midnight.tz_localize("Europe/Paris"),
        "category": pd.Series(midnight).astype("category"),
        "seconds": pd.Series(np.array(["2024-03-15", "NaT", "10000-01-01"], dtype="datetime64[s]")),
        "n": [1, 2, 3],
    })
    before = frame.copy()
    path = tmp_path / "t.csv"
    tsio.write_table(frame, path)
    assert path.read_text().splitlines() == [
        "midnight,mixed,sub_second,zoned,category,seconds,n",
        "2024-03-15 00:00:00,2024-03-15 00:00:00,2024-03-15 00:00:00.000,2024-03-15 00:00:00+01:00,"
        "2024-03-15 00:00:00,2024-03-15 00:00:00,1",
        ",2024-03-15 01:00:00,2024-03-15 00:00:00.500,,,,2",
        "2024-03-16 00:00:00,,2024-03-16 00:00:00.000,2024-03-16 00:00:00+01:00,2024-03-16 00:00:00,"
        "10000-01-01 00:00:00,3",
    ]
    pd.testing.assert_frame_equal(frame, before)  # the caller's frame is left as it was
    back = tsio.read_table(path)
    assert pd.to_datetime(back["midnight"]).tolist() == list(midnight)  # read back as the times they were
    # A column without any time has no time of day to lose: written empty, as before.
    all_nat = pd.DataFrame({"t": pd.to_datetime([None, None])})
    tsio.write_table(all_nat, path)
    assert path.read_text().splitlines() == ["t", '""', '""']


def test_csv_writes_zone_aware_times_as_local_text_with_their_offset(tmp_path):
    """Zone-aware columns are written as the text pandas writes (local clock, the column's digits,
    the offset), across a switch, with a half-hour offset, a missing time and as categories; but as
    text made by the writer once per distinct time: pandas formats them one Python object at a time
    (1,008,000 scores of an hourly --tz job: 20 s for the time column, against 0.8 s naive)."""
    paris = pd.Series(pd.to_datetime(["2026-03-29 00:00", "2026-03-29 01:00", None, "2026-03-29 01:00"]))
    frame = pd.DataFrame({
        "paris": paris.dt.tz_localize("UTC").dt.tz_convert("Europe/Paris"),
        "kolkata": pd.Series(pd.to_datetime(["2026-03-29 00:00:00.5", "2026-03-29 01:00", "2026-03-29 02:00", None],
                                            format="ISO8601")).dt.tz_localize("UTC").dt.tz_convert("Asia/Kolkata"),
        "category": paris.dt.tz_localize("UTC").dt.tz_convert("America/St_Johns").astype("category"),
        "n": [1, 2, 3, 4],
    })
    before = frame.copy()
    expected = {
        "paris": ["2026-03-29 01:00:00+01:00", "2026-03-29 03:00:00+02:00", "", "2026-03-29 03:00:00+02:00"],
        "kolkata": ["2026-03-29 05:30:00.500+05:30", "2026-03-29 06:30:00.000+05:30", "2026-03-29 07:30:00.000+05:30",
                    ""],
        "category": ["2026-03-28 21:30:00-02:30", "2026-03-28 22:30:00-02:30", "", "2026-03-28 22:30:00-02:30"],
    }  # missing: empty
    texts = tsio._with_times_of_day(frame)
    for col, values in expected.items():  # made by the writer, not left to pandas
        assert texts[col].dtype == object and texts[col].fillna("").tolist() == values, col
    path = tmp_path / "t.csv"
    tsio.write_table(frame, path)
    assert path.read_text().splitlines() == ["paris,kolkata,category,n"] + [
        ",".join(expected[col][k] for col in expected) + f",{k + 1}"
        for k in range(4)
    ]
    pd.testing.assert_frame_equal(frame, before)
    back = tsio.read_table(path)
    for col in ("paris", "kolkata"):  # the same instants, read back as UTC
        assert pd.to_datetime(back[col], utc=True, format="ISO8601").equals(frame[col].dt.tz_convert("UTC"))


def test_the_scores_of_a_midnight_hour_carry_its_time_in_csv(tables, tmp_path):
    history, today = tables
    model = tmp_path / "m.tsa"
    assert main(_fit_args(_write(history, tmp_path / "h.csv"), model)) == 0
    hours = sorted(today["ts"].unique())
    assert pd.Timestamp(hours[0]) == pd.Timestamp("2024-03-13 00:00")
    for k, hour in enumerate(hours[:2]):
        scores = tmp_path / f"s{k}.csv"
        assert main(_score_args(model, _write(today[today["ts"] == hour], tmp_path / f"h{k}.csv"),
                                tmp_path / f"a{k}.csv", "--scores", str(scores))) == 0
        stamp = f"{pd.Timestamp(hour):%Y-%m-%d %H:%M:%S}"
        assert all(line.split(",")[2] == stamp for line in scores.read_text().splitlines()[1:])


@pytest.mark.parametrize("ext, content", [("csv", None), ("parquet", None), ("jsonl", ""), ("jsonl", "\n\n"),
                                          ("ndjson", "\r\n")])
def test_an_input_without_rows_says_so_in_every_format(tables, tmp_path, capsys, ext, content):
    """An empty JSON lines file has no line to name its keys: it said that every column was missing."""
    history, today = tables
    model = tmp_path / "m.tsa"
    assert main(_fit_args(_write(history, tmp_path / "h.csv"), model)) == 0
    path = tmp_path / f"empty.{ext}"
    if content is None:
        tsio.write_table(today.iloc[:0], path)
    else:
        path.write_text(content)
    assert main(_score_args(model, path, tmp_path / "a.csv")) == 2
    assert _one_line_error(capsys) == f"tsanomaly score: error: {path} has no rows\n"
    assert main(_fit_args(str(path), tmp_path / "m2.tsa")) == 2
    assert _one_line_error(capsys) == f"tsanomaly fit: error: {path} has no rows\n"


# ---------------------------------------------------------------------- --tz: local times without an offset
PARIS = "Europe/Paris"


def _paris_counts(start, end, freq, n_ctx=3, seed=0):
    """Counts per ASN on Paris's wall clock (zone-aware times from pandas' date_range in the zone),
    with a burst on the last day, as a long table."""
    index = pd.date_range(start, end, freq=freq, tz=PARIS, unit="ns")
    values = np.random.default_rng(seed).poisson(30, size=(n_ctx, len(index))).astype(float)
    values[1, -3] += 300
    frame = pd.concat([pd.DataFrame({"asn": f"AS{k}", "ts": index, "n": values[k]}) for k in range(n_ctx)],
                      ignore_index=True)
    return index, frame


def _naive_text(frame):
    """The table as a server logging on Paris's wall clock writes it: local times without an offset."""
    return frame.assign(ts=frame["ts"].dt.strftime("%Y-%m-%d %H:%M:%S"))


def _offset_text(frame):
    """The table with each time as ISO text with its UTC offset, which changes at a switch."""
    return frame.assign(ts=[t.isoformat() for t in frame["ts"]])


def _reference_scores(frame, cut, **params):
    """Scores of the zone-aware table by the library alone: Panel.from_frame and the detector
    (``params``: the baseline's, ``window=5`` by default)."""
    before, after = frame[frame["ts"] < cut], frame[frame["ts"] >= cut]
    hist = tsanomaly.Panel.from_frame(before, "asn", "ts", "n", fill="zero")
    new = tsanomaly.Panel.from_frame(after, "asn", "ts", "n", fill="zero")
    scores = RollingZScoreDetector(**{"window": 5, **params}).fit(hist).score(new)
    assert np.isfinite(scores.to_numpy()).all()  # a comparison of NaNs would prove nothing
    return new, scores


def _fit_tz(history, model, *extra):
    return ["fit", "--input", history, "--context", "asn", "--time", "ts", "--value", "n", "--detector", "baseline",
            "--save", str(model), "--param", "window=5", *extra]


def test_tz_reads_local_hourly_text_across_the_spring_switch(tmp_path, capsys):
    """Paris's clocks skip 02:00 on 2026-03-29, so its logs go from 01:00 to 03:00. Read as UTC, that
    text put a phantom 02:00 hour on the grid (a zero count with --fill zero) and every hour after the
    switch an hour away from the history; read in Europe/Paris it is the hours that were."""
    index, frame = _paris_counts("2026-03-19", "2026-03-30 23:00", "h")
    cut = pd.Timestamp("2026-03-29", tz=PARIS)
    text = _naive_text(frame)
    assert not text["ts"].str.startswith("2026-03-29 02:").any()
    history = _write(text[frame["ts"] < cut], tmp_path / "history.csv")
    today = _write(text[frame["ts"] >= cut], tmp_path / "today.csv")
    model = tmp_path / "model.tsa"
    assert main(_fit_tz(history, model, "--tz", PARIS)) == 0
    assert "(up to 2026-03-28 23:00:00+01:00)" in capsys.readouterr().out
    assert tsanomaly.load(model).job_columns_["tz"] == PARIS

    # score without --tz: the model reads its input in its own zone.
    result = jobs.score_file(model, today, tmp_path / "alerts.csv", scores=tmp_path / "scores.csv",
                             update=tmp_path / "updated.tsa")
    new, expected = _reference_scores(frame, cut)
    assert result.panel.n_times == 47  # 48 local hours but one skipped
    pd.testing.assert_index_equal(result.panel.index, new.index, check_names=False)
    np.testing.assert_array_equal(result.scores.to_numpy(), expected.to_numpy())
    assert len(result.alerts) and "2026-03-29 00:00:00+01:00 .. 2026-03-30 23:00:00+02:00" in result.summary()
    assert tsanomaly.load(tmp_path / "updated.tsa").job_columns_["tz"] == PARIS  # --update keeps the zone

    # The outputs are on Paris's clock, with the offset that names the instant.
    scores = pd.read_csv(tmp_path / "scores.csv", dtype={"ts": str})
    assert set(scores["ts"].str[19:]) == {"+01:00", "+02:00"}
    assert sorted(set(scores["ts"].str[:19])) == sorted(set(text["ts"][frame["ts"] >= cut]))
    alerts = pd.read_csv(tmp_path / "alerts.csv", dtype=str)
    expected_alerts = RollingZScoreDetector(window=5).fit(
        tsanomaly.Panel.from_frame(frame[frame["ts"] < cut], "asn", "ts", "n", fill="zero")).alerts(new)
    assert list(pd.to_datetime(alerts["start"], utc=True)) == list(expected_alerts["start"].dt.tz_localize("UTC"))
    assert alerts["start"].str.endswith("+02:00").all()

    # Without the zone, the same text read as UTC has the phantom hour.
    naive = jobs.frame_to_panel(pd.read_csv(today, dtype={"asn": str}), jobs.JobColumns(["asn"], "ts", "n"))
    assert naive.n_times == 48


def test_tz_refuses_a_repeated_local_hour_and_reads_text_with_offsets_across_the_autumn_switch(tmp_path, capsys):
    """On 2026-10-25 Paris's clocks show 02:00 twice: naive text cannot say which hour a row is, and
    the rows' order is no proof (a sort on the text puts them side by side, in any order), so it is
    refused, naming the row and the text to write instead. With offsets the 25-hour day is read exactly."""
    index, frame = _paris_counts("2026-10-15", "2026-10-26 23:00", "h")
    cut = pd.Timestamp("2026-10-25", tz=PARIS)
    history = _write(_naive_text(frame[frame["ts"] < cut]), tmp_path / "history.csv")
    model = tmp_path / "model.tsa"
    assert main(_fit_tz(history, model, "--tz", PARIS)) == 0
    capsys.readouterr()

    naive_today = _write(_naive_text(frame[frame["ts"] >= cut]), tmp_path / "naive.csv")
    assert main(["score", "--model", str(model), "--input", naive_today, "--output", str(tmp_path / "a.csv")]) == 2
    err = capsys.readouterr().err
    assert "holds '2026-10-25 02:00:00' at row 2 (context 'AS0')" in err
    assert "repeats at a daylight-saving switch" in err
    assert "(2026-10-25T02:00:00+02:00 for the first, 2026-10-25T02:00:00+01:00 for the second)" in err
    assert not (tmp_path / "a.csv").exists()

    # The same hours as tsanomaly writes zoned times (offsets in CSV), and as ISO text in JSON lines.
    for path in (_write(frame[frame["ts"] >= cut], tmp_path / "today.csv"),
                 _write(_offset_text(frame[frame["ts"] >= cut]), tmp_path / "today.jsonl")):
        result = jobs.score_file(model, path, tmp_path / "alerts.csv")
        new, expected = _reference_scores(frame, cut)
        assert result.panel.n_times == 49  # 25 + 24 hours
        pd.testing.assert_index_equal(result.panel.index, new.index, check_names=False)
        np.testing.assert_array_equal(result.scores.to_numpy(), expected.to_numpy())


@pytest.mark.parametrize("switch", ["2026-03-29", "2026-10-25"])
@pytest.mark.parametrize("written", ["naive", "offsets"])
def test_tz_scores_local_days_across_each_switch(tmp_path, switch, written):
    """Days written as local dates, or as local midnights with their offset (which change at the
    switch, so read as UTC they fit no grid of days): read in the zone, both are days on its
    wall clock, scored as the zone-aware table is, and written back as Paris midnights."""
    end = pd.Timestamp(switch) + pd.Timedelta(days=6)
    index, frame = _paris_counts(pd.Timestamp(switch) - pd.Timedelta(days=40), end, "D")
    cut = pd.Timestamp(switch, tz=PARIS) - pd.Timedelta(days=2)  # the new week starts before the switch
    history = frame[frame["ts"] < cut].assign(ts=lambda f: f["ts"].dt.strftime("%Y-%m-%d"))
    det = jobs.fit_frame(history, "asn", "ts", "n", detector="baseline", params={"window": 5, "seasonal_period": 1},
                         tz=PARIS)
    assert det.freq_ == "D"
    det.save(tmp_path / "model.tsa")
    later = frame[frame["ts"] >= cut]
    later = later.assign(ts=later["ts"].dt.strftime("%Y-%m-%d")) if written == "naive" else _offset_text(later)
    path = _write(later, tmp_path / ("today.csv" if written == "naive" else "today.jsonl"))
    result = jobs.score_file(tmp_path / "model.tsa", path, tmp_path / "alerts.csv", scores=tmp_path / "scores.csv")
    new, expected = _reference_scores(frame, cut, seasonal_period=1)
    pd.testing.assert_index_equal(result.panel.index, new.index, check_names=False)
    assert str(result.panel.index.tz) == PARIS
    np.testing.assert_array_equal(result.scores.to_numpy(), expected.to_numpy())
    scores = pd.read_csv(tmp_path / "scores.csv", dtype={"ts": str})
    assert scores["ts"].str[10:19].eq(" 00:00:00").all()
    assert set(scores["ts"].str[19:]) == {"+01:00", "+02:00"}


def test_tz_localises_a_naive_parquet_column_and_converts_a_zoned_one(tmp_path):
    """A Parquet timestamp column without a zone is Paris's wall clock; one with a zone (UTC here)
    names instants, converted to Paris."""
    index, frame = _paris_counts("2026-03-19", "2026-03-30 23:00", "h")
    cut = pd.Timestamp("2026-03-29", tz=PARIS)
    before, after = frame[frame["ts"] < cut], frame[frame["ts"] >= cut]
    history = _write(before.assign(ts=before["ts"].dt.tz_localize(None)), tmp_path / "history.parquet")
    today = _write(after.assign(ts=after["ts"].dt.tz_convert("UTC")), tmp_path / "today.parquet")
    assert pd.read_parquet(history)["ts"].dt.tz is None and str(pd.read_parquet(today)["ts"].dt.tz) == "UTC"
    jobs.fit_file(history, tmp_path / "model.tsa", "asn", "ts", "n", detector="baseline", params={"window": 5},
                  tz=PARIS)
    result = jobs.score_file(tmp_path / "model.tsa", today, tmp_path / "alerts.csv", tz=PARIS)
    new, expected = _reference_scores(frame, cut)
    pd.testing.assert_index_equal(result.panel.index, new.index, check_names=False)
    np.testing.assert_array_equal(result.scores.to_numpy(), expected.to_numpy())


def test_tz_tells_a_naive_parquet_column_with_the_repeated_hour_to_hold_its_zone(tmp_path, capsys):
    """A naive timestamp column has no offset to write: the advice given to text ("write the times
    with their UTC offset") did not fit it; it is told to hold its zone, or UTC."""
    index, frame = _paris_counts("2026-10-20", "2026-10-25 23:00", "h")
    path = _write(frame.assign(ts=frame["ts"].dt.tz_localize(None)), tmp_path / "history.parquet")
    assert main(_fit_tz(path, tmp_path / "model.tsa", "--tz", PARIS)) == 2
    err = _one_line_error(capsys)
    assert "holds Timestamp('2026-10-25 02:00:00')" in err and "repeats at a daylight-saving switch" in err
    assert ("store the times as timestamps with their zone, zone-aware (2026-10-25 02:00:00+02:00 for the first, "
            "2026-10-25 02:00:00+01:00 for the second), or in UTC") in err
    assert "UTC offset (" not in err
    # Stored zone-aware, the 25-hour day is read.
    assert main(_fit_tz(_write(frame, tmp_path / "zoned.parquet"), tmp_path / "model.tsa", "--tz", PARIS)) == 0


def test_tz_refuses_a_local_time_that_the_spring_switch_skips(tmp_path, capsys):
    """02:00 on 2026-03-29 never shows on a Paris clock: rows at that time were not written in that
    zone (or are wrong), and shifting them an hour would hide it."""
    index, frame = _paris_counts("2026-03-19", "2026-03-28 23:00", "h")
    text = _naive_text(frame)
    text.loc[len(text)] = {"asn": "AS2", "ts": "2026-03-29 02:00:00", "n": 5.0}
    path = _write(text, tmp_path / "history.csv")
    assert main(_fit_tz(path, tmp_path / "model.tsa", "--tz", PARIS)) == 2
    err = _one_line_error(capsys)
    assert f"holds '2026-03-29 02:00:00' at row {len(text) - 1} (context 'AS2')" in err
    assert "skips at a daylight-saving switch" in err and "UTC offset" in err
    assert not (tmp_path / "model.tsa").exists()


@pytest.mark.parametrize("zone", ["Europe/Pari", "utc", "", "../etc/passwd", "+02:00"])
def test_tz_that_names_no_zone_is_refused_before_any_work(tmp_path, capsys, zone):
    missing = str(tmp_path / "missing.csv")  # never read: the zone is checked first
    assert main(_fit_tz(missing, tmp_path / "m.tsa", "--tz", zone)) == 2
    err = _one_line_error(capsys)
    assert f"--tz {zone!r} is not a time zone" in err and "Europe/Paris" in err
    assert main(["score", "--model", str(tmp_path / "m.tsa"), "--input", missing, "--output",
                 str(tmp_path / "a.csv"), "--tz", zone]) == 2
    assert f"--tz {zone!r} is not a time zone" in _one_line_error(capsys)
    assert main(["report", "--model", str(tmp_path / "m.tsa"), "--input", missing, "--out",
                 str(tmp_path / "r.html"), "--tz", zone]) == 2
    assert f"--tz {zone!r} is not a time zone" in _one_line_error(capsys)
    if zone == "Europe/Pari":
        assert "did you mean Europe/Paris" in err
    if zone == "utc":  # names are compared in any case: UTC was not suggested
        assert "did you mean UTC" in err


def test_tz_without_a_time_zone_database_says_to_install_tzdata(monkeypatch):
    """Slim images and Windows may have no zone files, and tzdata is then the database zoneinfo reads:
    without either, every name was "not a time zone; give an IANA name such as Europe/Paris"."""
    import zoneinfo

    def no_zone(name):
        raise zoneinfo.ZoneInfoNotFoundError(f"No time zone found with key {name}")

    monkeypatch.setattr(zoneinfo, "ZoneInfo", no_zone)
    monkeypatch.setattr(zoneinfo, "available_timezones", lambda: set())
    with pytest.raises(ValueError, match=r"--tz 'Europe/Paris': this machine has no time-zone database .* "
                                         r"install it: pip install tzdata$"):
        jobs.check_time_zone("Europe/Paris")


def test_fit_tz_refuses_a_zone_fixed_all_year_named_like_a_regions_standard_time(tmp_path, capsys):
    """EST is UTC-05:00 all year: a New York log read in it is an hour off from March to November,
    without a word. The places' zones are named, and the Etc zone for a clock that is fixed."""
    index, frame = _paris_counts("2026-03-19", "2026-03-28 23:00", "h")
    history = _write(_naive_text(frame), tmp_path / "history.csv")
    assert main(_fit_tz(history, tmp_path / "m.tsa", "--tz", "EST")) == 2
    err = _one_line_error(capsys)
    assert "--tz EST is UTC-05:00 all year, without daylight saving" in err
    assert "America/New_York" in err and "Etc/GMT+5 for a clock that stays at UTC-05:00" in err
    assert not (tmp_path / "m.tsa").exists()
    assert main(_fit_tz(history, tmp_path / "m.tsa", "--tz", "Etc/GMT+5")) == 0  # a fixed clock, said so
    assert main(_fit_tz(history, tmp_path / "m.tsa", "--tz", "America/New_York")) == 0


def test_score_tz_utc_is_accepted_by_a_model_fitted_without_a_zone(tmp_path, capsys):
    """A model fitted without --tz reads naive times as UTC, as --tz UTC does: refusing it told the
    user to fit again to get the same reading."""
    index, frame = _paris_counts("2026-03-19", "2026-03-30 23:00", "h")
    cut = pd.Timestamp("2026-03-29", tz=PARIS)
    history = _write(_naive_text(frame[frame["ts"] < cut]), tmp_path / "history.csv")
    today = _write(_naive_text(frame[frame["ts"] >= cut]), tmp_path / "today.csv")
    plain, utc = tmp_path / "plain.tsa", tmp_path / "utc.tsa"
    assert main(_fit_tz(history, plain)) == 0 and main(_fit_tz(history, utc, "--tz", "UTC")) == 0
    expected = jobs.score_file(plain, today, tmp_path / "a.csv")
    for model, zone in ((plain, "UTC"), (plain, "Etc/UTC"), (utc, "Etc/UTC")):
        result = jobs.score_file(model, today, tmp_path / "b.csv", tz=zone)
        np.testing.assert_array_equal(result.scores.to_numpy(), expected.scores.to_numpy())
    capsys.readouterr()
    assert main(["score", "--model", str(plain), "--input", today, "--output", str(tmp_path / "c.csv"),
                 "--tz", "UTC"]) == 0
    with pytest.raises(ValueError, match="was fitted without --tz"):  # another zone still is refused
        jobs.score_file(plain, today, tmp_path / "d.csv", tz=PARIS)


def test_tz_names_are_kept_as_the_database_spells_them(monkeypatch):
    """On a file system that ignores case (macOS, Windows) ZoneInfo reads "europe/paris" too: the
    model kept that spelling, which Linux then could not read, and "est" passed the EST refusal."""
    import zoneinfo

    real = zoneinfo.ZoneInfo
    by_lower = {name.lower(): name for name in zoneinfo.available_timezones()}
    monkeypatch.setattr(zoneinfo, "ZoneInfo", lambda name: real(by_lower.get(name.lower(), name)))
    assert jobs.check_time_zone("europe/paris") == "Europe/Paris"
    assert jobs.JobColumns.parse("asn", "ts", "v", tz="europe/paris").tz == "Europe/Paris"
    with pytest.raises(ValueError, match="EST"):
        jobs.JobColumns.parse("asn", "ts", "v", tz="est")
    monkeypatch.setattr(zoneinfo, "ZoneInfo", real)  # a file system that keeps case: one suggestion
    with pytest.raises(ValueError, match=r"did you mean Europe/Paris\? zone names are case-sensitive\)"):
        jobs.check_time_zone("europe/paris")


def test_a_model_fitted_with_tz_is_a_file_version_that_code_without_tz_refuses(tmp_path):
    """Code from before --tz ignored the zone of a model file and read local times as UTC without a
    word (a phantom spring hour, other alerts): a model with a zone is written as version 2, which
    that code refuses; one without stays version 1, readable by both."""
    index, frame = _paris_counts("2026-03-19", "2026-03-28 23:00", "h")
    history = _write(_naive_text(frame), tmp_path / "history.csv")
    plain, zoned = tmp_path / "plain.tsa", tmp_path / "zoned.tsa"
    assert main(_fit_tz(history, plain)) == 0 and main(_fit_tz(history, zoned, "--tz", PARIS)) == 0
    versions = {}
    for path in (plain, zoned):
        with zipfile.ZipFile(path) as archive:
            versions[path.name] = json.loads(archive.read("model.json"))["version"]
        tsanomaly.load(path)  # both load here
    assert versions == {"plain.tsa": 1, "zoned.tsa": 2}


def test_score_tz_must_be_the_models_zone(tmp_path, capsys):
    """The zone is the model's, like its columns: score and report read in it without --tz, accept
    the same zone, and refuse another (or any, for a model fitted without a zone, whose history's
    naive times were read as UTC)."""
    index, frame = _paris_counts("2026-03-19", "2026-03-30 23:00", "h")
    cut = pd.Timestamp("2026-03-29", tz=PARIS)
    history = _write(_naive_text(frame[frame["ts"] < cut]), tmp_path / "history.csv")
    today = _write(_naive_text(frame[frame["ts"] >= cut]), tmp_path / "today.csv")
    zoned, plain = tmp_path / "zoned.tsa", tmp_path / "plain.tsa"
    assert main(_fit_tz(history, zoned, "--tz", PARIS)) == 0
    assert main(_fit_tz(history, plain)) == 0
    assert tsanomaly.load(plain).job_columns_["tz"] is None
    capsys.readouterr()
    score = ["score", "--input", today, "--output", str(tmp_path / "a.csv")]
    assert main([*score, "--model", str(zoned), "--tz", PARIS]) == 0
    capsys.readouterr()
    assert main([*score, "--model", str(zoned), "--tz", "Europe/Berlin"]) == 2
    err = _one_line_error(capsys)
    assert f"--tz Europe/Berlin: the model {zoned} was fitted with --tz Europe/Paris" in err and "drop --tz" in err
    assert main([*score, "--model", str(plain), "--tz", PARIS]) == 2
    err = _one_line_error(capsys)
    assert f"the model {plain} was fitted without --tz" in err and f"fit it again with --tz {PARIS}" in err
    assert main(["report", "--model", str(zoned), "--model", str(plain), "--input", today, "--out",
                 str(tmp_path / "r.html"), "--tz", PARIS]) == 2
    assert f"the model {plain} was fitted without --tz" in _one_line_error(capsys)
    det = tsanomaly.load(zoned)
    with pytest.raises(ValueError, match="fitted with --tz Europe/Paris"):
        jobs.score_frame(det, pd.read_csv(today), tz="Asia/Tokyo")
    # A model saved before --tz existed has no "tz" entry: read as written, as before.
    old = dict(tsanomaly.load(plain).job_columns_)
    del old["tz"]
    assert jobs.JobColumns.from_json(old).tz is None


def test_messages_of_a_local_hourly_model_show_its_times_on_the_zones_clock(tmp_path, capsys, caplog):
    """An hourly grid is naive UTC inside: a gap warning or a refusal that printed it showed
    "2026-03-28 22:00:00" for Paris's 23:00, an hour off (two in summer) and unlabelled."""
    index, frame = _paris_counts("2026-03-19", "2026-03-30 23:00", "h")
    cut = pd.Timestamp("2026-03-29", tz=PARIS)
    text = _naive_text(frame)
    history = _write(text[frame["ts"] < cut], tmp_path / "history.csv")
    model = tmp_path / "model.tsa"
    assert main(_fit_tz(history, model, "--tz", PARIS)) == 0
    capsys.readouterr()
    end, first = "2026-03-28 23:00:00+01:00", "2026-03-29 05:00:00+02:00"  # 22:00 and 03:00 UTC

    # A gap: the input starts at 05:00, five hours after the history (04:00 is the 4th local hour after it).
    later = _write(text[frame["ts"] >= pd.Timestamp("2026-03-29 05:00", tz=PARIS)], tmp_path / "later.csv")
    with caplog.at_level(logging.WARNING, logger="tsanomaly"):
        jobs.score_file(model, later, tmp_path / "a.csv")
    message = [r.getMessage() for r in caplog.records if "after the fitted history ends" in r.getMessage()][0]
    assert f"after the fitted history ends ({end}; its first row is at {first})" in message

    # --update over hours the model has seen: refused, the times on Paris's clock too.
    old = _write(text[(frame["ts"] >= pd.Timestamp("2026-03-28 20:00", tz=PARIS)) & (frame["ts"] < cut)],
                 tmp_path / "old.csv")
    assert main(["score", "--model", str(model), "--input", old, "--output", str(tmp_path / "b.csv"),
                 "--update", str(tmp_path / "next.tsa")]) == 2
    err = _one_line_error(capsys)
    assert f"on the clock of {PARIS} the fitted history ends at {end} and {old} starts at " \
           "2026-03-28 20:00:00+01:00" in err

    # A row between two hours: named as written, on Paris's clock, not as 08:30 UTC.
    odd = pd.concat([text[frame["ts"] >= cut], pd.DataFrame({"asn": ["AS0"], "ts": ["2026-03-29 10:30:00"],
                                                                "n": [1.0]})])
    assert main(["score", "--model", str(model), "--input", _write(odd, tmp_path / "odd.csv"), "--output",
                 str(tmp_path / "c.csv")]) == 2
    err = _one_line_error(capsys)
    assert "timestamp 2026-03-29 10:30:00+02:00 for context 'AS0' is off the grid" in err
    assert "starting at 2026-03-29 00:00:00+01:00" in err


def test_a_model_zone_unknown_to_this_machine_is_refused_clearly():
    entry = {"context": ["asn"], "time": "ts", "value": "n", "tz": "Mars/Olympus_Mons"}
    with pytest.raises(ValueError, match=r"model.tsa was fitted with --tz Mars/Olympus_Mons, which is no time zone"):
        jobs.JobColumns.from_json(entry, source="model.tsa")
    with pytest.raises(ValueError, match="malformed"):
        jobs.JobColumns.from_json({**entry, "tz": 2}, source="model.tsa")


def test_the_report_of_a_local_hourly_model_shows_its_times_on_the_zones_clock(tmp_path):
    """Hours read in Paris are on a grid in UTC inside. The report drew that grid in UTC (an alert at
    Paris 19:00 on the page at 17:00, while score's file said 19:00+02:00) and said the input's
    column had a zone or offsets, which naive text has not: it is drawn and written on Paris's clock."""
    index, frame = _paris_counts("2026-03-19", "2026-03-30 23:00", "h")
    cut = pd.Timestamp("2026-03-29", tz=PARIS)
    history = _write(_naive_text(frame[frame["ts"] < cut]), tmp_path / "history.csv")
    today = _write(_naive_text(frame[frame["ts"] >= cut]), tmp_path / "today.csv")
    model = tmp_path / "m.tsa"
    assert main(_fit_tz(history, model, "--tz", PARIS)) == 0
    jobs.score_file(model, today, tmp_path / "alerts.csv")
    alerts = pd.read_csv(tmp_path / "alerts.csv", dtype=str)
    assert len(alerts) and alerts["peak_time"].str.endswith(("+01:00", "+02:00")).all()
    jobs.report_file([model], today, tmp_path / "r.html", history=history)
    page = (tmp_path / "r.html").read_text()
    assert 'id="times-zone">Times on this page are in Europe/Paris.</p>' in page
    assert "2026-03-29 00:00:00+01:00 – 2026-03-30 23:00:00+02:00" in page  # the span scored
    assert "in Europe/Paris (axis, facts and notes)" in page
    for peak in alerts["peak_time"]:  # each alert's peak as the alerts file writes it, never in UTC
        assert peak in page
        assert str(pd.Timestamp(peak).tz_convert("UTC").tz_localize(None)) not in page


def test_times_in_zone_reads_each_form_of_text_and_names_what_it_cannot():
    times = pd.Series(["2026-03-29 01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T02:00:00Z", None,
                       "2026-03-29", " 2026-03-29 01:30:00.5 +01:00"], name="ts")
    local = jobs.times_in_zone(times, PARIS)
    expected = pd.DatetimeIndex(["2026-03-29 00:00", "2026-03-29 01:00", "2026-03-29 02:00", None,
                                 "2026-03-28 23:00", "2026-03-29 00:30:00.5"]).tz_localize("UTC")
    assert str(local.dt.tz) == PARIS and local.name == "ts"
    pd.testing.assert_index_equal(pd.DatetimeIndex(local).tz_convert("UTC"), expected.as_unit("ns"), check_names=False)
    # The same times as a categorical column, as naive datetimes, and as Python datetimes.
    pd.testing.assert_series_equal(jobs.times_in_zone(times.astype("category"), PARIS), local)
    naive = pd.Series(pd.to_datetime(["2026-03-29 01:00", "2026-10-25 03:00"]))
    assert jobs.times_in_zone(naive, PARIS).dt.strftime("%H:%M%z").tolist() == ["01:00+0100", "03:00+0100"]
    assert jobs.times_in_zone(pd.Series(list(naive), dtype=object), PARIS).equals(jobs.times_in_zone(naive, PARIS))
    with pytest.raises(ValueError, match=r"holds 'yesterday' for context 'US', which is not an ISO 8601 timestamp"):
        jobs.times_in_zone(pd.Series(["2026-03-29 01:00", "yesterday"]), PARIS, "ts", lambda pos: "US")


@pytest.mark.parametrize("dtype", ["int64", "uint64", "int8", "Int64", "bool", "boolean", "float64", "Float64",
                                   "category"])
def test_labels_as_text_of_typed_columns_is_the_text_of_each_value(dtype):
    """Typed columns (Parquet, JSON lines) are converted once per distinct value, then taken by code:
    each row must still get its own value's text, missing values stay missing, and the result is
    pandas' text type, as ``astype(str)`` row by row gave."""
    rng = np.random.default_rng(11)
    if dtype in ("bool", "boolean"):
        values = rng.integers(0, 2, 500).astype(bool).astype(object)
    else:
        values = rng.choice(np.array([0, 7, 13335, 127, 2**40 + 1] if dtype != "int8" else [0, 7, 127, -128]),
                            500).astype(object)
    if dtype in ("float64", "category"):
        values = values.astype(float).astype(object)
        values[::7] = 2.5  # not whole: pandas' text
    nullable = dtype in ("Int64", "boolean", "Float64", "float64", "category")
    if nullable:
        values[::13] = None
    column = pd.Series(values, index=np.arange(500) * 3, name="asn").astype(dtype)

    def expected(value):
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)

    text = tsio.labels_as_text(column)
    assert text.dtype == pd.Series(["x"]).astype(str).dtype
    assert text.index.equals(column.index) and text.name == "asn"
    assert [None if pd.isna(t) else t for t in text.tolist()] == [expected(v) for v in values]
